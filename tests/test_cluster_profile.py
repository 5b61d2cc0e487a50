"""declearn's profile config, and clusters started from a profile alone.

The ``ipcluster_config.py`` written into a fresh profile is read back with traitlets' own loader;
JupyterLab's IPython Parallel sidebar is driven through the REST endpoint its START button
calls, on a real ``jupyter lab`` server, and the engines it starts are asked their MPI rank;
engines that are not one MPI job (as the sidebar started before) get an error that says how to
stop them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from cluster_helpers import kill_processes_mentioning
from ipyparallel import interactive

import declearn.cluster as dc
from declearn.cluster.profile import CONFIG_NAME, SIDEBAR_ENGINES, profile_config_state
from declearn.errors import ClusterError

from browser_lab import JupyterLab


def _load_config(path):
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader(os.path.basename(path), os.path.dirname(path)).load_config()


def test_a_fresh_profile_gets_a_config_that_starts_mpi_engines(tmp_path):
    pdir = dc.resolve_profile_dir(profile_dir=str(tmp_path / "p"))
    path = os.path.join(pdir, CONFIG_NAME)
    cfg = _load_config(path)
    launcher = cfg.Cluster.engine_launcher_class
    assert launcher in ("mpi", "declearn.cluster.launchers.QuietMPIEngineSetLauncher")
    assert cfg.Cluster.n == SIDEBAR_ENGINES
    assert cfg.Cluster.controller_ip == "127.0.0.1"
    mpiexec = cfg.MPILauncher.mpi_cmd[0]
    assert os.path.isfile(mpiexec) and os.access(mpiexec, os.X_OK), mpiexec
    assert os.path.basename(mpiexec) == "mpiexec.gforker"  # the loopback-only launcher
    engine = cfg.MPIEngineSetLauncher.engine_cmd
    assert engine[1:] == ["-m", "ipyparallel.engine"]
    probe = subprocess.run([engine[0], "-c", "import mpi4py, declearn"], timeout=60)
    assert probe.returncode == 0  # the engines' Python has what they need
    assert cfg.MPIEngineSetLauncher.environment["UCX_NET_DEVICES"]


def test_the_users_own_config_is_left_alone(tmp_path):
    pdir = dc.resolve_profile_dir(profile_dir=str(tmp_path / "p"))
    path = os.path.join(pdir, CONFIG_NAME)
    with open(path) as f:
        written = f.read()
    assert profile_config_state(pdir) == "declearn"

    edited = written.replace("c.Cluster.n = 4", "c.Cluster.n = 6")
    with open(path, "w") as f:
        f.write(edited)
    dc.resolve_profile_dir(profile_dir=pdir)
    with open(path) as f:
        assert f.read() == edited
    assert profile_config_state(pdir) == "user"

    own = 'c = get_config()\nc.Cluster.engine_launcher_class = "slurm"\n'
    with open(path, "w") as f:
        f.write(own)
    dc.resolve_profile_dir(profile_dir=pdir)
    with open(path) as f:
        assert f.read() == own


def test_an_outdated_declearn_config_is_refreshed(tmp_path):
    pdir = dc.resolve_profile_dir(profile_dir=str(tmp_path / "p"))
    path = os.path.join(pdir, CONFIG_NAME)
    with open(path) as f:
        written = f.read()
    # what declearn would have written from another virtual environment: header and digest
    from declearn.cluster.profile import _HEADER, _digest, _split

    _, body = _split(written)
    old_body = body.replace(sys.executable, "/elsewhere/bin/python")
    with open(path, "w") as f:
        f.write(_HEADER.format(digest=_digest(old_body)) + old_body)
    dc.resolve_profile_dir(profile_dir=pdir)
    with open(path) as f:
        assert f.read() == written


@interactive
def _world():
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def _kill_leftovers(tmp_path) -> None:
    kill_processes_mentioning(str(tmp_path))


@pytest.mark.cluster
@pytest.mark.slow
def test_the_sidebar_start_gives_mpi_ranks_that_connect_accepts(tmp_path, monkeypatch):
    ipython_dir = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    pdir = dc.resolve_profile_dir()  # what any declearn command does first
    root = tmp_path / "root"
    root.mkdir()

    def api(lab, method, path):
        url = f"http://127.0.0.1:{lab.port}{path}?token={lab.token}"
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST"
                                         else None)
        with urllib.request.urlopen(request, timeout=180) as reply:
            return json.load(reply)

    cluster = None
    try:
        with JupyterLab(root) as lab:
            listed = {c["id"]: c for c in api(lab, "GET", "/ipyparallel/clusters")}
            assert "declearn:" in listed, listed  # the entry the sidebar offers to START
            started = api(lab, "POST", "/ipyparallel/clusters/declearn:")  # START, no body
            assert started["engines"]["n"] == SIDEBAR_ENGINES, started
            cluster = dc.connect(2, timeout=120)  # attaches, whatever its size
            assert cluster.n == SIDEBAR_ENGINES and not cluster.owned
            worlds = cluster.view.apply_sync(_world)
            assert worlds == [(r, SIDEBAR_ENGINES) for r in range(SIDEBAR_ENGINES)]
            cluster.stop()
            assert dc.stop_clusters(profile_dir=pdir) == [""]
    finally:
        if cluster is not None:
            cluster.stop(shutdown=True)
        _kill_leftovers(tmp_path)


@pytest.mark.cluster
@pytest.mark.slow
def test_engines_that_are_not_one_mpi_job_are_refused_saying_how_to_stop_them(tmp_path):
    import ipyparallel as ipp

    pdir = dc.resolve_profile_dir(profile_dir=str(tmp_path / "p"))
    # what the sidebar started before: separate engine processes, the profile config ignored
    plain = ipp.Cluster(profile_dir=pdir, cluster_id="", n=2, engines="local",
                        load_profile=False, shutdown_atexit=False)
    try:
        plain.start_cluster_sync()
        with pytest.raises(ClusterError) as err:
            dc.connect(2, profile_dir=pdir, timeout=60)
        message = str(err.value)
        assert "found ranks [0, 0]" in message
        assert f"declearn cluster stop --profile-dir {pdir}" in message
        assert "declearn.cluster.connect(2) again" in message
        # and the advice works: the command stops them, then connect() starts MPI engines
        stop = subprocess.run([os.path.join(os.path.dirname(sys.executable), "declearn"),
                               "cluster", "stop", "--profile-dir", pdir],
                              capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0 and "Stopped" in stop.stdout, stop
        with dc.connect(2, profile_dir=pdir, timeout=120) as cluster:
            assert cluster.view.apply_sync(_world) == [(0, 2), (1, 2)]
    finally:
        try:
            plain.stop_cluster_sync()
        except Exception:  # noqa: BLE001  (already stopped by the test)
            pass
        _kill_leftovers(tmp_path)
