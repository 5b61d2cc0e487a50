"""Exposure: a cluster or an mpiexec job on one machine listens on loopback only, opening it is
an explicit option; and ``gpus=True`` without a visible GPU says so before anything starts.

Oracle: the kernel's socket table (``/proc/net/{tcp,tcp6,udp,udp6}``), mapped to processes
through their ``/proc/<pid>/fd`` links. The processes are the trees under the pids that
ipyparallel's launchers report (controller, mpiexec) or under the mpiexec this test started,
not declearn's own scan.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ipyparallel import interactive

import declearn.cluster as dc
from declearn.cluster.mpiexec import launcher_failure
from declearn.errors import ClusterError

from mpi_helpers import mpi_command, needs_mpi

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"),
                                reason="reads Linux's /proc/net socket table")

_LISTEN, _UNCONNECTED = "0A", "07"  # TCP LISTEN; a bound, unconnected UDP socket


# ---------------------------------------------------------------- the kernel's socket table
def _address(hex_ip: str) -> str:
    """``/proc/net`` writes addresses as 32-bit words in host order (little-endian here)."""
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _socket_table() -> dict[int, tuple[str, str, int, str]]:
    """inode -> (protocol, local address, local port, state) for every inet socket."""
    table = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            ip, port = fields[1].split(":")
            table[int(fields[9])] = (proto, _address(ip), int(port, 16), fields[3])
    return table


def _open_ports(pids) -> list[tuple[int, str, str, int]]:
    """(pid, protocol, address, port) of every socket the processes listen on (TCP) or
    receive on (bound UDP)."""
    table = _socket_table()
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if not link.startswith("socket:["):
                continue
            entry = table.get(int(link[len("socket:["):-1]))
            if entry is None:
                continue
            proto, ip, port, state = entry
            if (proto.startswith("tcp") and state == _LISTEN) or (
                    proto.startswith("udp") and state == _UNCONNECTED and port):
                found.append((pid, proto, ip, port))
    return sorted(set(found))


def _beyond_loopback(ports) -> list[str]:
    out = []
    for pid, proto, ip, port in ports:
        if not ipaddress.ip_address(ip).is_loopback:
            try:
                name = " ".join(psutil.Process(pid).cmdline())[:100]
            except psutil.NoSuchProcess:
                name = "?"
            out.append(f"{proto} {ip}:{port} by pid {pid} ({name})")
    return out


def _tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


@interactive
def _allreduce_once():
    from mpi4py import MPI

    return MPI.COMM_WORLD.allreduce(1)


# ---------------------------------------------------------------- a real local cluster
@pytest.mark.cluster
def test_local_cluster_listens_on_loopback_only(tmp_path):
    cluster = dc.start(2, profile_dir=str(tmp_path / "profile_lo"), activate=False, timeout=120)
    try:
        assert cluster.view.apply_sync(_allreduce_once) == [2, 2]  # the ranks have talked
        controller = _tree(cluster.ipp.controller.pid)
        job = [pid for es in cluster.ipp.engines.values() for pid in _tree(es.pid)]
        assert len(job) >= 3, "mpiexec and two engines expected"
        ports = _open_ports(controller + job)
        # the controller does listen (clients and engines connect to it), on loopback
        assert [p for p in ports if p[0] in controller], ports
        assert not _beyond_loopback(ports), "\n".join(_beyond_loopback(ports))
    finally:
        cluster.stop()


# ---------------------------------------------------------------- the tests' own mpiexec jobs
_HOLD = """
import os, sys, time
from mpi4py import MPI
world = MPI.COMM_WORLD
assert world.allreduce(1) == world.Get_size()
folder = sys.argv[1]
open(os.path.join(folder, f"ready{world.Get_rank()}"), "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
    time.sleep(0.05)
world.Barrier()
"""


@needs_mpi
def test_mpiexec_job_of_the_tests_listens_on_loopback_only(tmp_path):
    script = tmp_path / "hold.py"
    script.write_text(_HOLD)
    cmd, env = mpi_command(str(script), 4, str(tmp_path))  # what run_mpi launches
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while (len(list(tmp_path.glob("ready*"))) < 4 and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
        assert len(list(tmp_path.glob("ready*"))) == 4, proc.poll()
        job = _tree(proc.pid)
        ports = _open_ports(job)
        beyond = _beyond_loopback(ports)
        (tmp_path / "go").touch()
        output, _ = proc.communicate(timeout=60)
        assert launcher_failure(proc.returncode, output) is None, output
        assert not beyond, "\n".join(beyond)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- opening it is explicit
def test_opening_the_controller_needs_open_network(tmp_path):
    with pytest.raises(ClusterError, match="open_network=True") as info:
        dc.start(2, profile_dir=str(tmp_path / "p"), ip="*")
    assert isinstance(info.value, ValueError)
    assert not list((tmp_path / "p").glob("security/cluster-*.json"))


def test_hydra_options_need_open_network(tmp_path):
    with pytest.raises(ClusterError, match="open_network=True") as info:
        dc.start(2, profile_dir=str(tmp_path / "p"), mpi_args=["-ppn", "2"])
    assert "'-ppn'" in str(info.value) and "every network interface" in str(info.value)
    with pytest.raises(ClusterError, match="open_network must be True or False"):
        dc.start(2, profile_dir=str(tmp_path / "p"), open_network="yes")


@pytest.mark.cluster
def test_open_network_launches_hydra_and_reports_its_errors(tmp_path):
    """open_network=True passes Hydra's own options through to Hydra's mpiexec."""
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        dc.start(2, profile_dir=str(tmp_path / "profile_open"), timeout=60, open_network=True,
                 mpi_args=["--no-such-hydra-option"])
    message = str(info.value)
    assert "mpiexec output" in message and "no-such-hydra-option" in message, message
    assert time.monotonic() - t0 < 30


# ---------------------------------------------------------------- gpus=True without a GPU
def test_gpus_true_without_a_visible_gpu_says_so_before_starting(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    pdir = tmp_path / "profile_gpu"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        dc.start(2, profile_dir=str(pdir), gpus=True, timeout=120)
    message = str(info.value)
    assert "sees no GPU" in message and "cannot help" in message, message
    assert "gpus=False" in message and "gpus='auto'" in message, message
    assert "machine with GPUs" in message, message
    assert "cluster.restart()" not in message, message
    assert isinstance(info.value, ValueError)
    assert time.monotonic() - t0 < 20, "no engine needs to start to know this"
    assert not list(pdir.glob("security/cluster-*.json")) and not list(pdir.glob("log/*"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
