"""Engines of two MPI jobs registered with one controller (a second ``mpiexec`` pointed at a
running cluster's connection file by mistake): attaching must refuse, saying why and how to
stop them, rather than hand the notebook a view whose ranks repeat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from cluster_helpers import kill_processes_mentioning, processes_mentioning

import declearn.cluster as dc
from declearn.cluster.mpiexec import local_job
from declearn.errors import ClusterError

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_engines_of_a_second_job_on_one_controller_are_refused(tmp_path):
    pdir = str(tmp_path / "profile_jobs")
    cluster = dc.start(2, profile_dir=pdir, persistent=True, timeout=120)
    cmd, env = local_job(2, [sys.executable, "-m", "ipyparallel.engine", f"--profile-dir={pdir}",
                             f"--cluster-id={cluster.cluster_id}", "--mpi"])
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(cluster.client.ids) < 4:
            assert time.monotonic() < deadline, "the second job's engines never registered"
            time.sleep(0.2)
        cluster.stop(shutdown=False)
        with pytest.raises(ClusterError) as info:
            dc.attach(profile_dir=pdir, timeout=30)
        text = str(info.value)
        assert "engines of another MPI job" in text and "ranks [0, 0, 1, 1]" in text, text
        assert f"declearn cluster stop --profile-dir {pdir}" in text, text
    finally:
        try:
            dc.stop_clusters(profile_dir=pdir)
        finally:  # whatever happened above: no engine of either job outlives the test
            kill_processes_mentioning(pdir)
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=30)
    time.sleep(1)
    assert not processes_mentioning(pdir)
