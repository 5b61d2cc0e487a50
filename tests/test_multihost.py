"""One MPI job across two test hosts with real network stacks (tools/netns_hosts.py): network
namespaces joined by veth pairs and a bridge, an sshd on each, Hydra's ssh launcher, UCX over
TCP on the hosts' ``eth0``. Ranks 0-1 run on host 0, ranks 2-3 on host 1 (their names carry
this process's id, so that two test runs at once do not share hosts).

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

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from netns_hosts import (  # noqa: E402
    TestHosts,
    netem_unavailable,
    sshd_unavailable,
    unavailable,
)

pytestmark = [pytest.mark.mpi, pytest.mark.slow]
sys.path.insert(0, str(ROOT / "tests"))
PREFIX = f"dl{os.getpid() % 100000}"  # names of this run's namespaces (interfaces: <= 15 chars)
HOSTS = [f"{PREFIX}-h0", f"{PREFIX}-h0", f"{PREFIX}-h1", f"{PREFIX}-h1"]  # by rank


@pytest.fixture(scope="module")
def hosts():
    reason = unavailable() or sshd_unavailable()
    if reason:
        pytest.skip(reason)
    with TestHosts(2, prefix=PREFIX) as th:
        th.start_sshd()
        yield th


def _job(hosts: TestHosts, mode: str, out: Path, *args: str) -> subprocess.Popen:
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    env = dict(os.environ, UCX_TLS="self,tcp", UCX_NET_DEVICES="eth0",
               PYTHONFAULTHANDLER="1")
    argv = [mpiexec, *hosts.mpiexec_args(2), sys.executable,
            str(ROOT / "tests" / "mpi" / "multihost_checks.py"), mode, str(out), ",".join(HOSTS),
            *args]
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
        partner = (f["rank"] + 2) % 4  # on the other host
        assert error["missing"] == [partner], (f["rank"], error)
        assert f"rank {partner} did not arrive" in error["message"], error
    assert elapsed < 20, f"the ranks took {elapsed:.1f} s to notice (timeout 3 s)"


def _run(hosts: TestHosts, mode: str, out: Path, *args: str, timeout: float = 180) -> list:
    proc = _job(hosts, mode, out, *args)
    try:
        proc.wait(timeout=timeout)
    finally:
        output = _end(proc)
    found = _findings(out)
    assert proc.returncode == 0 and len(found) == 4, output
    assert all("failure" not in f for f in found), found
    return found


# How the links are slowed: added latency (tc netem, where the kernel has sch_netem), or a
# bandwidth cap (tc tbf) with messages large enough to take about as long.
SHAPINGS = {"latency": {"delay_ms": 40}, "bandwidth": {"rate_mbit": 20}}


def _shaping(name: str) -> dict:
    if name == "latency":
        reason = netem_unavailable()
        if reason:
            pytest.skip(reason)
    return SHAPINGS[name]


@pytest.mark.parametrize("shaping", list(SHAPINGS))
def test_a_slowed_network_is_hidden_by_overlap_local_sgd_as_chapter_08_models_it(
        hosts, tmp_path, shaping):
    """Chapter 08's model with real packets: a round of Local SGD takes tau s + delta, one of
    Overlap-Local-SGD max(tau s, delta), delta the allreduce time over the slowed links;
    provided MPI is called during the compute (``comm.progress()``): MPI moves a nonblocking
    collective's data only inside MPI calls. Without those calls, Overlap-Local-SGD still hides
    part of delta (the optimizer polls once per local step), not all of it."""
    how = _shaping(shaping)
    width = 10 if shaping == "latency" else 100  # 0.4 MB of float32 parameters at 20 Mbit/s
    for i in range(2):
        hosts.shape(i, **how)
    try:
        found = _run(hosts, "overlap", tmp_path, str(width))
    finally:
        for i in range(2):
            hosts.shape(i)
    delta = max(f["allreduce_s"] for f in found)
    rounds = {k: max(f[k]["round_s"] for f in found)
              for k in ("local", "overlap", "overlap_polled")}
    compute = {k: np.mean([f[k]["compute_s"] for f in found]) for k in rounds}
    print(f"{how}: allreduce {delta * 1e3:.0f} ms; per round (compute, wall): " + ", ".join(
        f"{k} {compute[k] * 1e3:.0f}, {rounds[k] * 1e3:.0f} ms" for k in rounds))
    assert delta >= 0.08, "the links were not slowed"
    assert min(compute.values()) > 1.2 * delta, "the overlap must be able to hide delta"
    tol = 0.3 * delta + 0.03
    assert abs(rounds["local"] - (compute["local"] + delta)) <= tol, (rounds, compute, delta)
    assert abs(rounds["overlap_polled"] - max(compute["overlap_polled"], delta)) <= tol, \
        (rounds, compute, delta)
    assert rounds["overlap"] <= rounds["local"] - 0.3 * delta, (rounds, delta)


@pytest.mark.parametrize("shaping", list(SHAPINGS))
def test_a_slow_link_slows_each_rank_one_hop_later_as_chapter_09_shows(hosts, tmp_path,
                                                                       shaping):
    """Host 1's outgoing link is slowed by about 0.3 s per message; on a chain 0-1-2-3 only
    the message 2 -> 1 crosses it. Its receiver, rank 1, is slow from step 1; its sender, rank
    2, may be too (a message that leaves slowly can hold the sender's step, depending on how
    the transport buffers it). From there the delay travels one hop per step, as chapter 09's
    straggler does: rank i is first slow at a step between 1 + its distance to the nearer end
    of the link and 1 + its distance to rank 1; afterwards every step waits for the link."""
    how = {"latency": {"delay_ms": 300}, "bandwidth": {"rate_mbit": 10}}[shaping]
    _shaping(shaping)
    numel = 100 if shaping == "latency" else 46_875  # 375 kB: 0.3 s at 10 Mbit/s
    delay = 0.3  # well above a step's time on a loaded machine
    hosts.shape(1, **how)
    try:
        found = _run(hosts, "straggler", tmp_path, str(numel))
    finally:
        hosts.shape(1)
    took = np.diff(np.array([f["ends"] for f in found]), axis=1, prepend=0.0)
    first_slow = ((took > delay / 2).argmax(1) + 1).tolist()
    print(f"{how}: first slow steps {first_slow}")
    to_receiver = [abs(r - 1) for r in range(4)]  # graph distances on the chain
    to_link = [min(abs(r - 1), abs(r - 2)) for r in range(4)]
    assert first_slow[1] == 1, (first_slow, took.round(3).tolist())
    for r in range(4):
        assert 1 + to_link[r] <= first_slow[r] <= 1 + to_receiver[r], (r, first_slow)
    assert (took[:, 4:] > 0.7 * delay).all(), took.round(3).tolist()


# ---------------------------------------------------------------- clusters across the hosts
def _on_host(hosts: TestHosts, i: int, *args: str, timeout: float = 240):
    env = dict(os.environ, UCX_TLS="self,tcp")  # see _job
    out = hosts.run(i, [sys.executable, str(ROOT / "tests" / "multihost_cluster.py"), *args],
                    env=env, timeout=timeout, cwd=ROOT)
    return out.returncode, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else \
        out.stderr[-3000:]


@pytest.mark.cluster
def test_engines_on_two_hosts_attached_from_the_second(hosts, tmp_path):
    """declearn.cluster.start(hosts=..., interface=..., ip=<host 0's link address>) on host 0;
    a notebook (a real kernel) on host 1 connects with the profile's connection files (their
    key), runs the collectives on the engines and detaches; `declearn cluster stop` on host 1
    ends the cluster through its controller (its pids are host 0's)."""
    from cluster_helpers import processes_mentioning

    h0, h1 = (h.address for h in hosts.hosts)
    pdir = str(tmp_path / "profile_hosts")
    options = dict(n=4, hosts=[f"{h0}:2", f"{h1}:2"], interface="eth0", ip=h0,
                   open_network=True, mpi_args=["-launcher-exec", hosts.ssh_wrapper],
                   check_resources=False, timeout=120)
    try:
        rc, line = _on_host(hosts, 0, "start", pdir, json.dumps(options))
        assert rc == 0, line
        assert json.loads(line) == HOSTS
        client = json.loads(next((tmp_path / "profile_hosts" / "security").glob(
            "ipcontroller-*-client.json")).read_text())
        assert client["interface"] == f"tcp://{h0}" and client["key"], client
        rc, line = _on_host(hosts, 1, "connect", pdir)
        assert rc == 0, line
        found = json.loads(line)
        assert found["attached_from"] == HOSTS[2] and found["owned"] is False
        assert [r["host"] for r in found["ranks"]] == HOSTS
        assert all(r["mix_error"] < 1e-12 and r["sum_error"] < 1e-11 for r in found["ranks"])
        assert processes_mentioning(pdir), "detaching from host 1 must leave the cluster running"
        stop = hosts.run(1, [str(Path(sys.executable).with_name("declearn")), "cluster", "stop",
                             "--profile-dir", pdir], timeout=120, cwd=ROOT)
        assert stop.returncode == 0 and "stopped" in stop.stdout.lower(), stop
        deadline = time.monotonic() + 30
        while processes_mentioning(pdir) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not list((tmp_path / "profile_hosts" / "security").glob("*.json"))
        left = [" ".join(p.cmdline())[:150] for p in processes_mentioning(pdir)]
        assert not left, left
    finally:
        subprocess.run([sys.executable, "-m", "declearn.cli", "cluster", "stop", "--all",
                        "--profile-dir", pdir], capture_output=True, timeout=60, check=False)
        for p in processes_mentioning(pdir):
            p.kill()


@pytest.mark.cluster
def test_an_unreachable_host_is_named_with_its_port(hosts, tmp_path):
    h0 = hosts.hosts[0].address
    options = dict(n=4, hosts=[f"{h0}:2", "10.231.0.99:2"], ip=h0, open_network=True,
                   check_resources=False)
    t0 = time.monotonic()
    rc, line = _on_host(hosts, 0, "start", str(tmp_path / "profile_x"), json.dumps(options))
    assert rc == 1 and "ClusterRequestError" in line, line
    assert "Host 10.231.0.99 cannot be reached on port 22" in line, line
    assert time.monotonic() - t0 < 60


@pytest.mark.cluster
def test_a_controller_address_on_no_interface_is_refused_before_anything_starts(tmp_path):
    import declearn.cluster as dc
    from declearn.cluster.checks import ClusterRequestError

    pdir = tmp_path / "profile_ip"
    with pytest.raises(ClusterRequestError, match=r"cannot listen on ip='10\.231\.0\.77'.*"
                       r"not an address of any interface.*127\.0\.0\.1"):
        dc.start(2, ip="10.231.0.77", open_network=True, profile_dir=str(pdir))
    assert not (pdir / "security").exists() or not list((pdir / "security").iterdir())
    with pytest.raises(ClusterRequestError, match="need open_network=True"):
        dc.start(2, hosts=["10.231.0.1:2"], profile_dir=str(pdir))
    with pytest.raises(ClusterRequestError, match="'host' or 'host:slots'"):
        dc.start(2, hosts=["10.231.0.1:x"], open_network=True, profile_dir=str(pdir))
    with pytest.raises(ClusterRequestError, match="not a network interface of this machine"):
        dc.start(2, interface="nosuch0", open_network=True, profile_dir=str(pdir))
    from declearn.cluster.hosts import host_launch
    from declearn.cluster.mpiexec import MPIRuntime

    open_mpi = MPIRuntime("/usr/bin/mpirun", "openmpi", "mpirun (Open MPI) 5.0")
    with pytest.raises(ClusterRequestError, match="pass its own options through mpi_args"):
        host_launch(["10.0.0.1:2"], None, [], runtime=open_mpi)
