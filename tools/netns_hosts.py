"""Test hosts on one machine: Linux network namespaces joined by a virtual switch.

Each host ``h_i`` is a network namespace ``<prefix>-h<i>`` with one interface ``eth0``, address
``<subnet>.<i+1>/24``, cabled by a veth pair to port ``p<i>`` of a Linux bridge that lives in
its own namespace ``<prefix>-sw`` (so the machine's own namespace gains no interface and no
route). The addresses exist only on those links: no packet of the hosts leaves them, and
nothing outside reaches them. The hosts share the machine's file system and processes' view,
as the nodes of a cluster share a home directory.

:class:`TestHosts` (a context manager) creates them, optionally runs an ``sshd`` in each (keys
it generates; for MPICH's Hydra ``ssh`` launcher), gives what an MPI job across them needs
(:meth:`TestHosts.mpiexec_args`), takes links down and up, shapes them with ``tc`` (latency
with netem where the kernel has it, a bandwidth cap) and reads the interfaces' byte counters;
on exit (also after a failure) it stops the sshds and removes every namespace it made, which
removes their interfaces.

Needs root and ``ip`` (iproute2); ``sshd`` for :meth:`TestHosts.start_sshd`; ``tc`` for
:meth:`TestHosts.shape`. :func:`unavailable` says what is missing.

Demo, from the repository root (as root)::

    python tools/netns_hosts.py up -n 2        # hosts dl-h0 (10.231.0.1), dl-h1 (10.231.0.2)
    ip netns exec dl-h0 bash                   # a shell "on" host 0
    python tools/netns_hosts.py down           # remove them
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "dl"
SUBNET = "10.231.0"
IFACE = "eth0"


@dataclass(frozen=True)
class Host:
    """One test host: its namespace, address and interface."""

    index: int
    netns: str
    address: str
    iface: str = IFACE


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def unavailable() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "test hosts need iproute2's `ip` (apt-get install iproute2)"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def sshd_unavailable() -> str | None:
    """Why :meth:`TestHosts.start_sshd` cannot work here, or None."""
    for tool in ("sshd", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is missing (apt-get install openssh-server openssh-client)"
    return None


def netem_unavailable() -> str | None:
    """Why ``tc netem`` (added latency) cannot be used here, or None. Some kernels (e.g. a
    minimal VM's, without loadable modules) lack ``sch_netem``; ``tbf`` (a rate) may remain."""
    if shutil.which("tc") is None:
        return "tc is missing (apt-get install iproute2)"
    probe = f"{PREFIX}-netem-{os.getpid()}"
    _ip("netns", "add", probe, check=False)
    try:
        out = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo",
                              "root", "netem", "delay", "1ms"], capture_output=True, text=True,
                             check=False, timeout=30)
    finally:
        _ip("netns", "del", probe, check=False)
    if out.returncode:
        return (f"this kernel ({os.uname().release}) has no netem qdisc (sch_netem): "
                f"{out.stderr.strip()}")
    return None


def remove_stale(prefix: str = PREFIX, *, family: bool = False) -> list[str]:
    """Delete namespaces left by a run that could not clean up (killed); their names. Those
    of ``prefix``, or with ``family`` those of every prefix ``<prefix><digits>`` too (the tests
    add their process id to theirs)."""
    pattern = re.compile(rf"^{re.escape(prefix)}{r'[0-9]*' if family else ''}-")
    out = _ip("netns", "list", check=False).stdout.split()
    stale = [name for name in out if pattern.match(name)]
    for name in stale:
        _kill_netns_processes(name)
        _ip("netns", "del", name, check=False)
    for folder in Path("/etc/netns").glob(f"{prefix}*-*"):
        if pattern.match(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    return stale


def _kill_netns_processes(netns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          check=False, timeout=30).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


class TestHosts:
    """``n`` test hosts joined by a switch (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(self, n: int = 2, *, prefix: str = PREFIX, subnet: str = SUBNET):
        if not 2 <= n <= 200:
            raise ValueError(f"n must be between 2 and 200 hosts, got {n}.")
        self.n, self.prefix, self.subnet = n, prefix, subnet
        self.switch = f"{prefix}-sw"
        self.hosts = [Host(i, f"{prefix}-h{i}", f"{subnet}.{i + 1}") for i in range(n)]
        self.workdir: Path | None = None
        self._sshd: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ set-up, tear-down
    def __enter__(self) -> TestHosts:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        remove_stale(self.prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-hosts-"))
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        names = "".join(f"{h.address} {h.netns}\n" for h in self.hosts)
        for h in self.hosts:  # `ip netns exec` mounts /etc/netns/<name>/hosts on /etc/hosts
            folder = Path("/etc/netns") / h.netns
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for h in self.hosts:
            _ip("netns", "add", h.netns)
            _ip("-n", h.netns, "link", "set", "lo", "up")
            port = f"p{h.index}"
            _ip("link", "add", f"{self.prefix}tmp{h.index}", "netns", h.netns, "type", "veth",
                "peer", "name", port, "netns", self.switch)
            _ip("-n", h.netns, "link", "set", f"{self.prefix}tmp{h.index}", "name", h.iface)
            _ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", h.iface)
            _ip("-n", h.netns, "link", "set", h.iface, "up")
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")

    def close(self) -> None:
        """Stop the sshds, remove every namespace (and so every interface) made here."""
        for proc in self._sshd:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self._sshd = []
        for name in [h.netns for h in self.hosts] + [self.switch]:
            _kill_netns_processes(name)
            _ip("netns", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------ running things
    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run on host i: in its network namespace, with its own host name (a UTS
        namespace; MPI tells hosts apart by name: with one name for all, it would pass every
        message through shared memory) and its own ``/etc/hosts`` naming every host."""
        h = self.hosts[i]
        return ["ip", "netns", "exec", h.netns, "unshare", "--uts", "sh", "-c",
                f'hostname {h.netns} && exec "$@"', "sh", *argv]

    def run(self, i: int, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(i, argv), check=False, **kwargs)

    def start_sshd(self) -> None:
        """An sshd on port 22 of each host's address, for root, with a key made here; ssh
        between the hosts then goes through :attr:`ssh_wrapper` (no prompt, no known_hosts)."""
        reason = sshd_unavailable()
        if reason:
            raise RuntimeError(reason)
        d = self.workdir
        assert d is not None, "use TestHosts as a context manager"
        for key in ("hostkey", "userkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                           check=True, timeout=30)
        shutil.copy(d / "userkey.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o600)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        (d / "ssh_config").write_text(
            f"Host *\n  IdentityFile {d / 'userkey'}\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
            "  ConnectTimeout 5\n")
        wrapper = d / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec ssh -F {d / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        for h in self.hosts:
            conf = d / f"sshd_{h.index}.conf"
            conf.write_text(
                f"ListenAddress {h.address}\nPort 22\nHostKey {d / 'hostkey'}\n"
                f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin yes\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                f"PidFile {d / f'sshd_{h.index}.pid'}\n")
            self._sshd.append(subprocess.Popen(
                self.command(h.index, [sshd, "-D", "-E", str(d / f"sshd_{h.index}.log"),
                                       "-f", str(conf)]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        for h in self.hosts:  # each sshd answers from the other side of the switch
            peer = (h.index + 1) % self.n
            while self.run(peer, [str(wrapper), h.address, "true"], timeout=15).returncode:
                if time.monotonic() > deadline:
                    log = (d / f"sshd_{h.index}.log").read_text()
                    raise RuntimeError(f"sshd on {h.netns} ({h.address}) did not answer in 20 s:"
                                       f"\n{log}")
                time.sleep(0.2)

    @property
    def ssh_wrapper(self) -> str:
        assert self.workdir is not None
        return str(self.workdir / "ssh")

    def mpiexec_args(self, ranks_per_host: int | list[int]) -> list[str]:
        """Hydra's options for one job across the hosts, ``ranks_per_host`` ranks on each
        (ranks numbered host by host), launched from host 0 over ssh, every socket on the
        hosts' ``eth0``."""
        counts = ranks_per_host if isinstance(ranks_per_host, list) else \
            [ranks_per_host] * self.n
        hosts = ",".join(f"{h.address}:{c}" for h, c in zip(self.hosts, counts, strict=True))
        return ["-launcher", "ssh", "-launcher-exec", self.ssh_wrapper, "-iface", IFACE,
                "-hosts", hosts, "-n", str(sum(counts))]

    # ------------------------------------------------------------------ the links
    def set_link(self, i: int, up: bool) -> None:
        """Unplug (``up=False``) or plug back host i's cable, at the switch."""
        _ip("-n", self.switch, "link", "set", f"p{i}", "up" if up else "down")

    def shape(self, i: int, *, delay_ms: float | None = None,
              rate_mbit: float | None = None) -> None:
        """Shape host i's outgoing traffic: added latency (``tc netem``, which needs the
        kernel's ``sch_netem``) and/or a bandwidth cap (``netem rate``, or ``tc tbf`` where
        netem is missing); both None removes the shaping."""
        dev = ["dev", self.hosts[i].iface]
        if delay_ms is None and rate_mbit is None:
            self.run(i, ["tc", "qdisc", "del", *dev, "root"])
            return
        if delay_ms is not None:
            reason = netem_unavailable()
            if reason:
                raise RuntimeError(f"cannot add latency on {self.hosts[i].netns}: {reason}")
            spec = ["netem", "delay", f"{delay_ms}ms"]
            if rate_mbit is not None:
                spec += ["rate", f"{rate_mbit}mbit"]
        else:  # a token bucket: the rate, bursts of 64 KiB, up to 2 s of queue
            spec = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "64kb", "latency", "2s"]
        out = self.run(i, ["tc", "qdisc", "replace", *dev, "root", *spec])
        if out.returncode:
            raise RuntimeError(f"tc {spec[0]} on {self.hosts[i].netns}: {out.stderr.strip()}")

    def counters(self, i: int) -> dict[str, int]:
        """Bytes and packets through host i's interface so far (the kernel's counters)."""
        out = self.run(i, ["ip", "-s", "-j", "link", "show", self.hosts[i].iface])
        stats = json.loads(out.stdout)[0]["stats64"]
        return {"tx_bytes": stats["tx"]["bytes"], "rx_bytes": stats["rx"]["bytes"],
                "tx_packets": stats["tx"]["packets"], "rx_packets": stats["rx"]["packets"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create the hosts (and leave them)")
    up.add_argument("-n", type=int, default=2, help="number of hosts (default 2)")
    up.add_argument("--sshd", action="store_true", help="also run an sshd on each")
    sub.add_parser("down", help="remove the hosts")
    args = ap.parse_args(argv)
    if args.cmd == "down":
        gone = remove_stale(family=True)
        for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-hosts-*"):
            shutil.rmtree(folder, ignore_errors=True)
        print(f"removed: {', '.join(gone) or 'nothing'}")
        return 0
    reason = unavailable() or (sshd_unavailable() if args.sshd else None)
    if reason:
        print(f"cannot create test hosts: {reason}", file=sys.stderr)
        return 1
    hosts = TestHosts(args.n).__enter__()
    if args.sshd:
        hosts.start_sshd()
        hosts._sshd = []  # leave them running; `down` kills them with their namespaces
    for h in hosts.hosts:
        print(f"{h.netns}: {h.address} on {h.iface}   (a shell: ip netns exec {h.netns} bash)")
    if args.sshd:
        print(f"ssh between them: {hosts.ssh_wrapper} <address>")
    print("remove them: python tools/netns_hosts.py down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
