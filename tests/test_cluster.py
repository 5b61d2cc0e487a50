"""Real clusters of MPI engines started from Python, and the checks made before any starts.

One 4-engine cluster (module fixture) serves the rank order, MPIComm-vs-dense-oracle,
interrupt, restart and stop tests, in that order. Every cluster lives in a tmp profile dir.
Processes are tracked independently of declearn's own scan: from the pids ipyparallel's
launchers report and their psutil descendants.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest
from cluster_helpers import processes_mentioning
from ipyparallel import interactive

import declearn.cluster as dc
from declearn.cluster.checks import ENGINE_MEMORY_BYTES, check_capacity
from declearn.cluster.mpiexec import MPIRuntime, launch_args
from declearn.errors import ClusterError

pytestmark = pytest.mark.cluster

GiB = 2**30


# ---------------------------------------------------------------- helpers
def _tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _launched_processes(cluster) -> list[psutil.Process]:
    """Controller and mpiexec trees, from the pids ipyparallel's launchers hold."""
    procs = _tree(cluster.ipp.controller.pid)
    for engine_set in cluster.ipp.engines.values():
        procs += _tree(engine_set.pid)
    return procs


def _alive(procs) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out



def _wait_until(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pred()


@interactive
def _whoami():
    import os

    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size(), os.getpid()


@interactive
def _gossip(X, topo):
    # Runs on an engine: `rank` comes from the cluster's engine set-up.
    from declearn.comm import MPIComm

    comm = MPIComm(timeout=60)
    return comm.neighbor_allreduce(X[rank].clone(), topo).numpy()  # noqa: F821


@interactive
def _epoch():
    return resync_probe.epoch  # noqa: F821 (engine namespace)


@interactive
def _torch_imported():
    import sys

    return "torch" in sys.modules


# ---------------------------------------------------------------- the shared 4-engine cluster
@pytest.fixture(scope="module")
def cluster4(tmp_path_factory):
    profile_dir = str(tmp_path_factory.mktemp("ipython") / "profile_test")
    cluster = dc.start(4, profile_dir=profile_dir, timeout=120)
    yield cluster
    cluster.stop()


def test_view_is_ordered_by_mpi_rank(cluster4):
    assert cluster4.n == 4 and list(cluster4.ranks) == [0, 1, 2, 3]
    answers = cluster4.view.apply_sync(_whoami)
    assert [a[0] for a in answers] == [0, 1, 2, 3]
    assert {a[1] for a in answers} == {4}
    assert len({a[2] for a in answers}) == 4  # four distinct processes
    # engine_id(rank) agrees with asking each engine id directly
    by_id = dict(zip(cluster4.client.ids, cluster4.client[:].apply_sync(_whoami), strict=True))
    for rank in range(4):
        assert by_id[cluster4.engine_id(rank)][0] == rank
    # the set-up put rank/size/device into every namespace
    assert cluster4.view.pull("rank") == [0, 1, 2, 3]
    assert cluster4.view.pull("size") == [4] * 4
    assert cluster4.view.block is True
    text = repr(cluster4)
    assert "4 engines" in text and cluster4.cluster_id in text and "rank 3:" in text


def test_devices_are_cpu_without_gpus(cluster4):
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU machine: see test_devices_follow_local_rank_on_gpus")
    assert cluster4.devices == ["cpu"] * 4
    assert cluster4.view.pull("device") == ["cpu"] * 4
    # no GPU driver on this host: the set-up kept torch out of the engines (start-up speed)
    if not os.path.exists("/dev/nvidiactl") and not os.path.exists("/dev/kfd"):
        assert cluster4.view.apply_sync(_torch_imported) == [False] * 4


@interactive
def _torch_threads():
    import torch

    return torch.get_num_threads()


def test_engines_share_the_cores_instead_of_each_taking_all(cluster4):
    if os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("OMP_NUM_THREADS is set here: the engines keep it")
    cores = len(os.sched_getaffinity(0))
    # the four engines run on this machine; bound to fewer cores than it has, they keep them
    share = cores if cores < (os.cpu_count() or 1) else max(1, cores // 4)
    assert [d["threads"] for d in cluster4.info] == [share] * 4
    assert cluster4.view.apply_sync(_torch_threads) == [share] * 4


def test_devices_follow_local_rank_on_gpus(cluster4):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no GPU here")
    count = torch.cuda.device_count()
    expected = [f"cuda:{d['local_rank'] % count}" for d in cluster4.info]
    assert cluster4.devices == expected


def test_mpicomm_neighbor_allreduce_on_engines_equals_dense_oracle(cluster4):
    import torch

    from declearn.topology import Topology

    n, d = 4, 3
    rng = np.random.default_rng(7)
    # A directed, irregular pattern: ring edges j -> j+1, plus 0 -> 2 and 3 -> 1, self loops.
    mask = np.eye(n, dtype=bool)
    for j in range(n):
        mask[(j + 1) % n, j] = True
    mask[2, 0] = mask[1, 3] = True
    W = np.where(mask, rng.uniform(0.1, 1.0, size=(n, n)), 0.0)
    W /= W.sum(axis=1, keepdims=True)  # row-stochastic: receiver weights
    X = rng.standard_normal((n, d))
    topo = Topology.from_matrix(W, name="test-directed")
    got = np.stack(cluster4.view.apply_sync(_gossip, torch.from_numpy(X), topo))
    np.testing.assert_allclose(got, W @ X, rtol=0, atol=1e-12)


def test_resync_calls_resync_all_on_every_engine(cluster4):
    cluster4.view.execute("from declearn.comm import MPIComm\nresync_probe = MPIComm(timeout=60)")
    epochs = cluster4.view.apply_sync(_epoch)
    counts = cluster4.resync()
    if counts is None:
        pytest.skip("this declearn.comm.mpi has no resync_all")
    assert len(counts) == 4 and len(set(counts)) == 1 and counts[0] >= 1
    assert [e + 1 for e in epochs] == cluster4.view.apply_sync(_epoch)  # each comm resynced


def test_interrupt_frees_a_python_loop(cluster4):
    pids = [a[2] for a in cluster4.view.apply_sync(_whoami)]
    ar = cluster4.view.execute("import time\nwhile True:\n    time.sleep(0.05)", block=False)
    time.sleep(1.0)
    assert not ar.ready(), "the loop should still be running"
    cluster4.interrupt()
    with pytest.raises(Exception) as info:
        ar.get(timeout=20)
    assert "KeyboardInterrupt" in str(info.value)
    # same engines, usable again
    assert [a[2] for a in cluster4.view.apply_sync(_whoami)] == pids


def test_restart_after_killing_one_engine(cluster4):
    before = cluster4.view.apply_sync(_whoami)
    old_pids = [a[2] for a in before]
    os.kill(old_pids[2], signal.SIGKILL)
    # one dead rank takes the whole MPI job down
    assert _wait_until(lambda: not _alive([psutil.Process(p) for p in old_pids
                                           if psutil.pid_exists(p)]), 20)
    cluster4.restart()
    after = cluster4.view.apply_sync(_whoami)
    assert [a[0] for a in after] == [0, 1, 2, 3]
    assert not set(a[2] for a in after) & set(old_pids)
    assert cluster4.view.pull("rank") == [0, 1, 2, 3]  # set-up ran again


def test_stop_leaves_no_process(cluster4):
    procs = _launched_processes(cluster4)
    # controller (+ schedulers), mpiexec, hydra proxy, 4 engines, 4 nannies
    assert len(procs) >= 11, [p.cmdline() for p in procs]
    cluster4.stop()
    assert _wait_until(lambda: not _alive(procs), 10), [p.cmdline() for p in _alive(procs)]
    assert not processes_mentioning(cluster4.profile_dir)
    assert not os.path.exists(cluster4.ipp.cluster_file)
    with pytest.raises(ClusterError, match="start a new one"):
        _ = cluster4.view
    cluster4.stop()  # idempotent


# ---------------------------------------------------------------- other real starts
def test_context_manager_stops_on_exit(tmp_path):
    with dc.start(2, profile_dir=str(tmp_path / "profile_ctx"), activate=False) as cluster:
        assert cluster.view.pull("rank") == [0, 1]
        procs = _launched_processes(cluster)
    assert _wait_until(lambda: not _alive(procs), 10)
    assert not processes_mentioning(str(tmp_path))


def test_connect_starts_when_none_runs_and_attaches_when_one_does(tmp_path):
    pdir = str(tmp_path / "profile_connect")
    first = dc.connect(2, profile_dir=pdir, activate=False)
    try:
        assert first.owned and first.n == 2
        second = dc.connect(4, profile_dir=pdir, activate=False)  # the running size wins
        assert not second.owned and second.n == 2
        assert second.cluster_id == first.cluster_id
        assert second.view.pull("rank") == [0, 1]
        second.stop()
        assert first.running, "a notebook that attached must not stop the cluster"
    finally:
        first.stop()
    assert _wait_until(lambda: not processes_mentioning(str(tmp_path)), 10)


def test_failed_start_reports_mpiexec_output_and_cleans_up(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        dc.start(2, profile_dir=str(tmp_path / "profile_bad"), timeout=60,
                 mpi_args=["--no-such-hydra-option"])
    message = str(info.value)
    assert "mpiexec" in message and "no-such-hydra-option" in message
    assert time.monotonic() - t0 < 30, "a dead mpiexec must fail fast, not at the timeout"
    assert _wait_until(lambda: not processes_mentioning(str(tmp_path)), 10)


# ---------------------------------------------------------------- bad input, nothing starts
@pytest.mark.parametrize("n", [0, -1, "4", 2.0, True, None])
def test_bad_engine_count(n):
    with pytest.raises(ClusterError, match=r"declearn\.cluster\.start\(4\)") as info:
        dc.start(n)
    assert isinstance(info.value, ValueError)


def test_too_many_engines_needs_oversubscribe(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ClusterError, match="oversubscribe=True"):
        dc.start(5, profile_dir=str(tmp_path / "p"))
    assert not processes_mentioning(str(tmp_path))


def test_capacity_rule():
    big = 1000 * GiB
    # up to max(4, cores) without flags, oversubscription needed beyond the cores
    assert check_capacity(4, cpu_count=2, available_bytes=big) is True
    assert check_capacity(2, cpu_count=2, available_bytes=big) is False
    assert check_capacity(8, cpu_count=8, available_bytes=big) is False
    with pytest.raises(ClusterError, match="at most 4 engines"):
        check_capacity(5, cpu_count=2, available_bytes=big)
    with pytest.raises(ClusterError, match="at most 16 engines"):
        check_capacity(17, cpu_count=16, available_bytes=big)
    assert check_capacity(64, oversubscribe=True, cpu_count=2, available_bytes=big) is True
    with pytest.raises(ClusterError, match="oversubscribe=False"):
        check_capacity(3, oversubscribe=False, cpu_count=2, available_bytes=big)
    # memory: about 300 MB per engine, even with oversubscribe=True
    fits = 10 * ENGINE_MEMORY_BYTES
    assert check_capacity(10, oversubscribe=True, cpu_count=2, available_bytes=fits)
    with pytest.raises(ClusterError, match="300 MB per engine") as info:
        check_capacity(11, oversubscribe=True, cpu_count=2, available_bytes=fits)
    assert "at most 10 engines" in str(info.value)


def test_bad_gpus_and_timeout():
    with pytest.raises(ClusterError, match="gpus must be"):
        dc.start(2, gpus="yes")
    with pytest.raises(ClusterError, match="timeout"):
        dc.start(2, timeout=0)


def test_missing_mpiexec_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DECLEARN_MPIEXEC", str(tmp_path / "no" / "mpiexec"))
    with pytest.raises(ClusterError) as info:
        dc.start(2, profile_dir=str(tmp_path / "p"))
    message = str(info.value)
    assert "DECLEARN_MPIEXEC" in message and "pip install mpich" in message


def test_launch_args_per_mpi_flavor(monkeypatch):
    mpich = MPIRuntime("/x/mpiexec", "mpich", "Version: 5")
    openmpi = MPIRuntime("/x/mpiexec", "openmpi", "mpiexec (Open MPI) 5.0")
    assert launch_args(mpich, ["-ppn", "2"], oversubscribe=True) == ["-ppn", "2"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert launch_args(openmpi, [], oversubscribe=True) == [
        "--oversubscribe", "--bind-to", "none"]
    assert launch_args(openmpi, ["--bind-to", "core"], oversubscribe=False) == [
        "--bind-to", "core"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert launch_args(openmpi, [], oversubscribe=False) == [
        "--allow-run-as-root", "--bind-to", "none"]


def test_attach_without_cluster_says_how_to_start_one(tmp_path):
    with pytest.raises(ClusterError, match="declearn cluster start"):
        dc.attach(profile_dir=str(tmp_path / "profile_empty"))


# ---------------------------------------------------------------- from a real Jupyter kernel
def test_start_from_a_kernel_without_venv_on_path(tmp_path, monkeypatch):
    """The chapters' first cell, in a real IPython kernel whose PATH lacks the venv (as when
    JupyterLab was started from elsewhere): %px must run on a blocking view and print."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import shutil; assert shutil.which('mpiexec') is None",
        "import declearn\ncluster = declearn.cluster.start(2)",
        "%px print('rank', rank, 'of', size)",
        "cluster.stop()",
    )]
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    text = " ".join("".join(o.get("text", "") for o in nb.cells[2].outputs).split())
    assert "[stdout:0] rank 0 of 2" in text and "[stdout:1] rank 1 of 2" in text, text
    assert _wait_until(lambda: not processes_mentioning(str(tmp_path)), 10)


def test_gpus_true_without_gpu_fails_clearly_and_cleans_up(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ClusterError, match="gpus=True but torch sees no GPU") as info:
        dc.start(1, profile_dir=str(tmp_path / "profile_gpu"), gpus=True, timeout=120)
    assert "gpus=False" in str(info.value)
    assert _wait_until(lambda: not processes_mentioning(str(tmp_path)), 10)
