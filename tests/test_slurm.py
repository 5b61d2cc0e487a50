"""The README's Slurm recipe against a real single-node Slurm (tests/slurm_fixture.py): the
engines as one Slurm job (sbatch, then srun --mpi=pmi2) started by ``declearn cluster start
--slurm``, attached from a notebook (a real kernel, as a chapter's first cell), a collective
run on them with ``%%px``, the job cancelled by ``declearn
cluster stop``, nothing left in the queue or among the processes; a job that cannot start in
time is cancelled, and the error says what Slurm said it waits for."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import processes_mentioning
from slurm_fixture import CPUS, TestSlurm, unavailable

import declearn.cluster as dc
from declearn.cluster.checks import ClusterRequestError
from declearn.errors import ClusterError

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DECLEARN = str(Path(sys.executable).with_name("declearn"))


@pytest.fixture(scope="module")
def slurm():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with TestSlurm() as s:
        yield s


def _run_notebook(tmp_path, sources) -> list[str]:
    """Execute a notebook of these cells in a real kernel (nbclient); each cell's text output."""
    import nbformat
    from nbclient import NotebookClient

    from browser_lab import notebook

    nb = nbformat.from_dict(notebook(*sources))
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in nb.cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, errors
        texts.append("".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                             for o in cell.outputs))
    return texts


def _wait_gone(slurm, pdir: str, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [j for j in slurm.jobs() if "ipengine" in j] + processes_mentioning(pdir)
        if not left:
            return []
        time.sleep(0.5)
    return left


def test_the_readme_recipe_runs_engines_as_one_slurm_job(slurm, tmp_path):
    pdir = str(tmp_path / "profile_slurm")
    start = subprocess.run([DECLEARN, "cluster", "start", "-n", "4", "--slurm",
                            "time=00:10:00", "--profile-dir", pdir], capture_output=True,
                           text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        running = [j for j in slurm.jobs() if "ipengine" in j]
        assert len(running) == 1 and running[0].endswith("RUNNING"), slurm.jobs()
        outputs = _run_notebook(tmp_path, (
            f"import declearn.cluster as dc\ncluster = dc.connect(4, profile_dir={pdir!r})",
            "%%px\nimport numpy as np, torch\nimport declearn.topology as T\n"
            "from declearn.comm.mpi import MPIComm\ncomm = MPIComm(timeout=30)\n"
            "X = np.random.default_rng(1).standard_normal((comm.size, 100))\n"
            "ring = T.make('ring', comm.size)\n"
            "y = comm.neighbor_allreduce(torch.as_tensor(X[comm.rank]), ring)\n"
            "print('rank', comm.rank, 'of', comm.size, 'error',\n"
            "      float(np.abs(y.numpy() - ring.W[comm.rank] @ X).max()))",
            "cluster.stop()  # detach: the cluster belongs to the command that started it",
        ))
        assert "Attached to the running cluster" in outputs[0], outputs
        ranks = re.findall(r"rank (\d) of 4 error ([0-9.e+-]+)", outputs[1])
        assert [int(r) for r, _ in ranks] == [0, 1, 2, 3], outputs[1]
        assert max(float(e) for _, e in ranks) < 1e-12
    finally:
        stop = subprocess.run([DECLEARN, "cluster", "stop", "--profile-dir", pdir],
                              capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert _wait_gone(slurm, pdir) == [], "the Slurm job or its processes were left behind"
    assert not list(Path.cwd().glob("*.sbatch")), "a batch script was left in the current folder"


def test_a_job_still_pending_at_the_timeout_is_cancelled_and_says_why(slurm, tmp_path):
    pdir = str(tmp_path / "profile_pending")
    blocker = slurm.submit_blocker(CPUS - 1)  # one CPU left: two engines must wait
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterError) as info:
            dc.start(2, slurm={"time": "00:05:00"}, profile_dir=pdir, timeout=15)
        elapsed = time.monotonic() - t0
        text = str(info.value)
        assert "still PENDING after 15 s" in text and "reason: Resources" in text, text
        assert "has been cancelled (scancel" in text, text
        assert elapsed < 60
        assert _wait_gone(slurm, pdir) == [], slurm.jobs()
        assert any(j.startswith(f"{blocker} ") for j in slurm.jobs())  # not ours to cancel
    finally:
        subprocess.run(["scancel", blocker], capture_output=True, timeout=30, check=False)


def test_bad_slurm_options_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(ClusterRequestError, match="True or a dict of sbatch options"):
        dc.start(2, slurm="yes", profile_dir=str(tmp_path / "p"))
    if unavailable() is None:
        with pytest.raises(ClusterRequestError, match=r"\['ntasks'\] are set by declearn"):
            dc.start(2, slurm={"ntasks": 8}, profile_dir=str(tmp_path / "p"))
