"""One MPI job across two test hosts with real network stacks (tools/netns_hosts.py): network
namespaces joined by veth pairs and a bridge, an sshd on each, Hydra's ssh launcher, UCX over
TCP on the hosts' ``eth0``. Ranks 0-1 run on host dl-h0, ranks 2-3 on dl-h1.

Needs root, iproute2 and openssh (server and client); without them the tests skip, saying
which is missing. Nothing leaves the namespaces: their addresses exist only on their links.
The rank-side checks are in tests/mpi/multihost_checks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from netns_hosts import TestHosts, sshd_unavailable, unavailable  # noqa: E402

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
HOSTS = ["dl-h0", "dl-h0", "dl-h1", "dl-h1"]


@pytest.fixture(scope="module")
def hosts():
    reason = unavailable() or sshd_unavailable()
    if reason:
        pytest.skip(reason)
    with TestHosts(2) as th:
        th.start_sshd()
        yield th


def _job(hosts: TestHosts, mode: str, out: Path) -> subprocess.Popen:
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    env = dict(os.environ, UCX_TLS="self,tcp", UCX_NET_DEVICES="eth0",
               PYTHONFAULTHANDLER="1")
    argv = [mpiexec, *hosts.mpiexec_args(2), sys.executable,
            str(ROOT / "tests" / "mpi" / "multihost_checks.py"), mode, str(out), ",".join(HOSTS)]
    return subprocess.Popen(hosts.command(0, argv), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _end(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
    out, _ = proc.communicate(timeout=30)
    return out


def _findings(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(len(HOSTS))
            if (out / f"rank{r}.json").exists()]


def test_one_job_across_hosts_equals_the_simulator_and_its_bytes_cross_the_wire(hosts,
                                                                                 tmp_path):
    proc = _job(hosts, "exchange", tmp_path)
    try:
        proc.wait(timeout=180)
    finally:
        output = _end(proc)
    found = _findings(tmp_path)
    assert proc.returncode == 0 and len(found) == 4, output
    assert all("failure" not in f for f in found), found
    assert [f["host"] for f in found] == HOSTS, found
    links = [f["interface"] for f in found if "interface" in f]
    assert len(links) == 2, found  # one measurement per host
    for link in links:  # 8 calls x 8 MiB x 2 ring edges leaving each host (0->3, 1->2)
        assert link["cross_host_payload"] == 8 * (8 << 20) * 2
        print(f"eth0 sent {link['tx_bytes']} bytes for {link['cross_host_payload']} of payload")


def test_an_unplugged_host_gives_a_deadline_error_naming_its_ranks(hosts, tmp_path):
    proc = _job(hosts, "unplug", tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "running").exists():
            assert proc.poll() is None, _end(proc)
            assert time.monotonic() < deadline, "the exchange never got under way"
            time.sleep(0.1)
        hosts.set_link(1, up=False)
        t_unplug = time.monotonic()
        while len(_findings(tmp_path)) < 4 and time.monotonic() < t_unplug + 30:
            time.sleep(0.2)
        elapsed = time.monotonic() - t_unplug
    finally:
        hosts.set_link(1, up=True)
        output = _end(proc)
    found = _findings(tmp_path)
    assert len(found) == 4, (found, output)
    for f in found:
        error = f.get("error")
        assert error is not None, f"rank {f['rank']} never noticed the unplugged host: {f}"
        other = {r for r, h in enumerate(HOSTS) if h != f["host"]}
        assert error["missing"] and set(error["missing"]) <= other, (f["rank"], error)
        assert all(f"rank {r}" in error["message"] for r in error["missing"]), error
    assert elapsed < 20, f"the ranks took {elapsed:.1f} s to notice (timeout 3 s)"
