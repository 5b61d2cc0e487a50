"""The ``declearn`` command: a persistent cluster started by the CLI, attached to from Python,
listed, stopped; and ``declearn doctor``. Commands run as real subprocesses with a tmp
IPYTHONDIR, so nothing touches ~/.ipython."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import declearn.cluster as dc
from declearn.errors import ClusterError

CLI = [sys.executable, "-m", "declearn.cli"]


def _run(args, env, timeout=180):
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, timeout=timeout)


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _cluster_pids(profile_dir: Path) -> list[int]:
    """Pids of the controller and mpiexec trees, read from ipyparallel's own cluster file."""
    (path,) = (profile_dir / "security").glob("cluster-*.json")
    data = json.loads(path.read_text())
    roots = [data["controller"]["state"]["pid"]]
    roots += [s["pid"] for s in data["engines"]["sets"].values()]
    pids = []
    for pid in roots:
        proc = psutil.Process(pid)
        pids += [pid] + [c.pid for c in proc.children(recursive=True)]
    return pids


def _mentioning(text: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or ())
            if not any(k in cmd for k in ("ipyparallel", "mpiexec", "hydra_pmi_proxy")):
                continue
            if p.status() != psutil.STATUS_ZOMBIE and (
                    text in cmd or text in " ".join(p.environ().values())):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch):
    path = tmp_path / "ipython"
    path.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(path))
    env = dict(os.environ, IPYTHONDIR=str(path))
    yield path, env
    # whatever happens, leave nothing running
    if list(path.glob("profile_*/security/cluster-*.json")):
        _run(["cluster", "stop", "--all"], env, timeout=60)


@pytest.mark.cluster
def test_cli_cluster_start_attach_status_stop(ipython_dir):
    path, env = ipython_dir
    profile_dir = path / "profile_declearn"

    t0 = time.monotonic()
    started = _run(["cluster", "start", "-n", "2"], env)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "declearn.cluster.attach()" in started.stdout
    seconds = time.monotonic() - t0
    pids = _cluster_pids(profile_dir)
    # the command has exited; its cluster runs on: controller(s), mpiexec, proxy, 2 engines...
    assert len(_alive(pids)) >= 6, (seconds, pids)

    status = _run(["cluster", "status"], env)
    assert status.returncode == 0, status.stderr
    assert "2 of 2 engines" in status.stdout and "0->0, 1->1" in status.stdout

    # attach from here: a handle that does not own the cluster
    with dc.attach() as cluster:
        assert not cluster.owned
        assert cluster.view.pull("rank") == [0, 1]
        assert cluster.view.pull("size") == [2, 2]
        assert "attached" in repr(cluster)
    assert "detached" in repr(cluster)
    assert len(_alive(pids)) == len(pids), "leaving an attached cluster must not stop it"
    assert _run(["cluster", "status"], env).returncode == 0

    # a second cluster id "" in the same profile is refused, with the way out
    with pytest.raises(ClusterError, match="already runs"):
        dc.start(2, cluster_id="")

    # a cluster this (live) process owns, in the same profile: `cluster stop` leaves it alone
    mine = dc.start(1, activate=False)
    mine_pids = [p.pid for p in mine.processes()]
    stopped = _run(["cluster", "stop"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert "Stopped cluster(s) ''" in stopped.stdout
    assert f"Skipping cluster {mine.cluster_id!r}" in stopped.stdout
    assert mine.view.pull("rank") == [0]
    mine.stop()
    assert not _alive(mine_pids)
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids)
    assert not _mentioning(str(path))

    status = _run(["cluster", "status"], env)
    assert status.returncode == 1 and "No cluster" in status.stdout
    with pytest.raises(ClusterError, match="No running cluster"):
        dc.attach()
    # the controller's engine table goes with its cluster (ipyparallel leaves it behind)
    assert not (profile_dir / "log" / "engines.json").exists()


def test_cli_cleans_up_stale_files(ipython_dir):
    """A cluster file whose controller is gone is reported as not running and removed by
    `declearn cluster stop`, with declearn's record of it."""
    from declearn.cluster.launch import resolve_profile_dir
    from declearn.cluster.record import ClusterRecord

    _, env = ipython_dir
    pdir = resolve_profile_dir()
    security = Path(pdir) / "security"
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (security / "cluster-old.json").write_text(json.dumps({
        "cluster": {"cluster_id": "old", "profile_dir": pdir},
        "controller": {"class": "local", "state": {"pid": dead.pid, "state": "running"}},
        "engines": {"class": "mpi", "sets": {}},
    }))
    ClusterRecord(profile_dir=pdir, cluster_id="old", n=2, mpiexec="mpiexec").save()
    status = _run(["cluster", "status"], env)
    assert "'old': NOT running" in status.stdout and status.returncode == 1, status.stdout
    stop = _run(["cluster", "stop"], env)
    assert stop.returncode == 0 and "No cluster running" in stop.stdout, stop.stdout
    assert not (security / "cluster-old.json").exists()
    assert not Path(ClusterRecord.path_for(pdir, "old")).exists()


@pytest.mark.cluster
def test_cli_stop_of_a_dead_cluster_removes_its_files_and_only_its(ipython_dir):
    """A cluster whose processes all died (kill -9) leaves connection files, the cluster file,
    declearn's record, the controller's engine table and the launchers' logs; `declearn
    cluster stop` removes them all, and no file of another cluster."""
    path, env = ipython_dir
    profile_dir = path / "profile_declearn"
    started = _run(["cluster", "start", "-n", "1", "--cluster-id", "dead", "--gpus", "no"], env)
    assert started.returncode == 0, started.stderr + started.stdout
    pids = _cluster_pids(profile_dir)
    # another cluster's files, and names that only start like this cluster's
    others = [profile_dir / "security" / "ipcontroller-other-client.json",
              profile_dir / "security" / "ipcontroller-deadbeef-engine.json",
              profile_dir / "log" / "enginesother.json",
              profile_dir / "log" / "enginesdeadbeef.json",
              profile_dir / "log" / "engines.json",
              profile_dir / "log" / "ipcontroller-other-1.log",
              profile_dir / "log" / "ipengine-deadbeef-1-2.log"]
    for other in others:
        other.write_text("{}")
    before = {p for p in profile_dir.rglob("*") if p.is_file()}
    mine = before - set(others) - {profile_dir / "startup" / "README",
                                   profile_dir / "ipcluster_config.py"}  # the profile's
    assert {"cluster-dead.json", "declearn-cluster-dead.json", "ipcontroller-dead-client.json",
            "ipcontroller-dead-engine.json", "enginesdead.json"} <= {p.name for p in mine}
    for pid in pids:  # all started by this test
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids)
    status = _run(["cluster", "status"], env)
    assert "'dead': NOT running" in status.stdout, status.stdout

    stop = _run(["cluster", "stop"], env)
    assert stop.returncode == 0, stop.stderr
    left = {p for p in profile_dir.rglob("*") if p.is_file()}
    assert not left & mine, sorted(str(p) for p in left & mine)
    assert set(others) <= left


def test_cli_bad_input(ipython_dir, monkeypatch, capsys):
    from declearn.cli import main

    assert main(["cluster", "start", "-n", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["cluster", "start", "--gpus", "maybe"])
    assert info.value.code == 2 and "--gpus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    monkeypatch.setenv("DECLEARN_MPIEXEC", "/nonexistent/x")
    assert main(["cluster", "start", "-n", "2"]) == 1
    assert "DECLEARN_MPIEXEC" in capsys.readouterr().err


def test_console_script_and_version():
    script = Path(sys.executable).parent / "declearn"
    if not script.exists():
        pytest.skip("console script not installed next to this Python (pip install -e .)")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("declearn ")


@pytest.mark.mpi
def test_doctor_quick_passes_here(ipython_dir):
    _, env = ipython_dir
    out = _run(["doctor", "--quick"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ OK ] MPI round trip over 2 ranks" in out.stdout
    assert "[SKIP] ipyparallel engines start" in out.stdout
    assert "All required checks passed." in out.stdout


def test_doctor_fails_with_the_fix_when_mpiexec_is_missing(monkeypatch):
    import io

    from declearn.doctor import run_doctor

    monkeypatch.setenv("DECLEARN_MPIEXEC", "/nonexistent/mpiexec")
    out = io.StringIO()
    assert run_doctor(quick=True, out=out) == 1
    text = out.getvalue()
    assert "[FAIL] mpiexec" in text and "pip install mpich" in text
    assert "[SKIP] MPI round trip" in text
