"""Faults on a real cluster of 4 MPI engines: an engine that dies, a busy engine during
cluster.resync(), and use after cluster.stop().

Oracles are independent of declearn's own bookkeeping: the rank killed is the one this test
chose (its pid comes from mpi4py on the engine), the signal is the one this test sent, and a
resync counts as working when an allreduce across the engines equals numpy's mean.
One module cluster serves the tests in file order; the notebook test starts its own inside a
real IPython kernel. Every cluster lives in a tmp profile dir and is stopped, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from cluster_helpers import processes_mentioning
from ipyparallel import interactive

import declearn.cluster as dc
from declearn.errors import ClusterError

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N = 4
LONG_CELL = "import time\nfor _ in range(400):\n    time.sleep(0.05)\n"  # 20 s, interruptible


# ---------------------------------------------------------------- helpers
@interactive
def _whoami():
    import os

    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), os.getpid()


@interactive
def _allreduce_rows(X):
    from declearn.comm import MPIComm

    comm = MPIComm(timeout=30)
    return comm.allreduce(X[rank].clone()).numpy()  # noqa: F821 (rank: engine set-up)


def _end(procs) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster4(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cluster = dc.start(N, profile_dir=str(root / "profile_faults"), timeout=120,
                       activate=False)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            _end(processes_mentioning(str(root)))


# ---------------------------------------------------------------- resync against a busy rank
@pytest.mark.timeout(240)
def test_resync_with_a_busy_rank_fails_fast_naming_it_then_recovers(cluster4):
    c = cluster4
    busy = c.client[c.engine_id(2)].execute(LONG_CELL, block=False)  # rank 2 only
    time.sleep(1.0)
    assert not busy.ready()
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        c.resync(timeout=4)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert elapsed < 10, f"resync took {elapsed:.1f} s: its deadline is 4 s"
    assert "rank 2" in message and "ranks 0" not in message, message
    assert "cluster.interrupt()" in message and "cluster.resync()" in message, message
    assert isinstance(info.value, TimeoutError)
    # what the message says to do works: interrupt, then resync again
    c.interrupt()
    with pytest.raises(Exception, match="KeyboardInterrupt"):
        busy.get(timeout=20)
    counts = c.resync(timeout=20)
    assert counts is None or (len(counts) == N and len(set(counts)) == 1)
    import torch

    X = np.random.default_rng(3).standard_normal((N, 3))
    got = np.stack(c.view.apply_sync(_allreduce_rows, torch.from_numpy(X)))
    np.testing.assert_allclose(got, np.tile(X.mean(axis=0), (N, 1)), rtol=0, atol=1e-12)


@pytest.mark.timeout(60)
def test_resync_rejects_a_bad_timeout(cluster4):
    for bad in (0, -1, "5", True):
        with pytest.raises(ValueError, match="timeout"):
            cluster4.resync(timeout=bad)


# ---------------------------------------------------------------- an engine that dies
def _die_during_execute(c, kill, *, code: str = LONG_CELL) -> tuple[ClusterError, float]:
    """Run ``code`` on every engine (blocking, as %px does) while ``kill()`` runs 1.5 s in;
    return the error the call raised and how long it took."""
    timer = threading.Timer(1.5, kill)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ClusterError) as info:
            c.view.execute(code)
    finally:
        timer.cancel()
    return info.value, time.monotonic() - t0


@pytest.mark.timeout(300)
def test_sigkilled_engine_is_named_then_next_use_says_restart(cluster4):
    c = cluster4
    pids = dict(c.view.apply_sync(_whoami))  # rank -> pid, from mpi4py on each engine
    error, elapsed = _die_during_execute(c, lambda: os.kill(pids[2], signal.SIGKILL))
    message = str(error)
    assert elapsed < 15, f"the death was reported after {elapsed:.1f} s"
    assert "rank 2" in message and "SIGKILL" in message and "signal 9" in message, message
    for other in (0, 1, 3):
        assert f"rank {other} died" not in message, message
    assert "cluster.restart()" in message, message
    # the next use of the cluster says the job ended and what to do, rather than
    # "NoEnginesRegistered ... wait_for_engines(n)"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        c.view.apply_sync(_whoami)
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert "MPI job" in message and "ended" in message and "cluster.restart()" in message
    assert "rank 2" in message and "checkpoint" in message, message
    # and restart() brings a new job up
    c.restart()
    after = dict(c.view.apply_sync(_whoami))
    assert sorted(after) == [0, 1, 2, 3] and not set(after.values()) & set(pids.values())
    assert c.view.pull("rank") == [0, 1, 2, 3]


@pytest.mark.timeout(300)
def test_engine_exit_code_is_reported(cluster4):
    c = cluster4
    code = "import os, time\nif rank == 1:\n    time.sleep(1.0)\n    os._exit(3)\n" + LONG_CELL
    error, elapsed = _die_during_execute(c, lambda: None, code=code)
    message = str(error)
    assert elapsed < 15
    assert "rank 1" in message and "exit code 3" in message, message
    c.restart()
    assert c.view.pull("rank") == [0, 1, 2, 3]


# ---------------------------------------------------------------- use after stop
@pytest.mark.timeout(120)
def test_use_after_stop_says_the_cluster_was_stopped(cluster4):
    c = cluster4
    view = c.view  # what %px holds on to
    c.stop()
    for use in (lambda: view.apply_sync(_whoami), lambda: view.execute("x = 1"),
                lambda: c.resync(), lambda: c.interrupt()):
        with pytest.raises(ClusterError) as info:
            use()
        message = str(info.value)
        assert "stopped" in message and "declearn.cluster.connect(" in message, message


# ---------------------------------------------------------------- the same, in a real kernel
@pytest.mark.timeout(420)
def test_px_cell_in_a_kernel_names_the_dead_rank(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pid_file = tmp_path / "pids.json"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        ("import json, os, declearn\ncluster = declearn.cluster.start(4)\n"
         f"json.dump({{d['rank']: d['pid'] for d in cluster.info}}, open({str(pid_file)!r}, 'w'))"),
        "%%px\n" + LONG_CELL,
        "%px x = 1",
        "cluster.restart();",
        "%px print('alive', rank)",
        "cluster.stop()",
        "%px print(rank)",
    )]
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))

    def kill_rank_2():
        deadline = time.monotonic() + 180
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_file.exists():
            time.sleep(2.5)  # the %%px cell is running by then
            os.kill(json.loads(pid_file.read_text())["2"], signal.SIGKILL)

    killer = threading.Thread(target=kill_rank_2, daemon=True)
    killer.start()
    try:
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                allow_errors=True).execute()
    finally:
        killer.join(5)
        _end(processes_mentioning(str(tmp_path)))

    def text(cell):
        parts = []
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.append(out.get("evalue", ""))
            parts.extend(out.get("traceback", []))
        return "\n".join(parts)

    died, next_use, restarted, stopped = (text(nb.cells[i]) for i in (1, 2, 4, 6))
    assert "rank 2" in died and "SIGKILL" in died and "cluster.restart()" in died, died
    assert "4 errors" not in died, died
    assert "MPI job" in next_use and "cluster.restart()" in next_use, next_use
    assert "wait_for_engines" not in next_use, next_use
    assert all(f"alive {r}" in restarted for r in range(4)), restarted
    assert "stopped" in stopped and "sockets have been closed" not in stopped, stopped
