"""Where the engines' MPI job runs: on this machine's loopback interface only (the default,
:func:`loopback_launch`), or on several hosts, from the options :func:`declearn.cluster.start`
takes for it (``hosts``, ``interface``, the controller's ``ip``), turned into Hydra arguments and
the ranks' environment, with the checks that catch a wrong address before anything starts.

``hosts=["10.0.0.1:2", "10.0.0.2:2"]`` runs ranks 0-1 on the first host and 2-3 on the second
(Hydra's ``-hosts``; a host without ``:slots`` takes one rank per turn). Hydra starts the ranks
of the other hosts over ssh, so each must run an sshd that this user reaches without a password
(``ssh`` settings as usual, or ``mpi_args=["-launcher-exec", "/path/to/ssh"]``), and see the
same Python environment at the same path (a shared file system, as on a cluster).

``interface="eth0"`` keeps the job's traffic on that network interface: Hydra's own (``-iface``)
and the ranks' (UCX's ``UCX_NET_DEVICES``, libfabric's ``FI_TCP_IFACE`` and
``FI_SOCKETS_IFACE``). The interface has the same name on every host.

The controller listens on ``ip``, which must be an address of this machine that the engines'
hosts can reach (or ``"*"``: every interface); its connection files, in the profile, carry the
key the engines and the notebook present.
"""

from __future__ import annotations

import ipaddress
import socket
import warnings
from collections.abc import Sequence

from declearn.cluster.checks import ClusterRequestError
from declearn.cluster.mpiexec import check_loopback_args, loopback_env, loopback_runtime

__all__ = ["SSH_PORT", "check_controller_address", "check_hosts_reachable", "host_launch",
           "loopback_launch", "started_elsewhere", "controller_answers", "shutdown_remote"]

#: Where Hydra's ssh launcher reaches a host (unless the user's ssh settings say otherwise).
SSH_PORT = 22
WILDCARDS = ("*", "0.0.0.0", "::", "")


def _parse_hosts(hosts) -> list[tuple[str, int | None]]:
    if isinstance(hosts, str) or not isinstance(hosts, Sequence) or not hosts:
        raise ClusterRequestError(
            f"hosts must be a list of host names or addresses, each optionally with ':slots' "
            f"(e.g. ['10.0.0.1:2', '10.0.0.2:2']), got {hosts!r}.")
    parsed = []
    for entry in hosts:
        name, _, slots = str(entry).partition(":")
        if not name or (slots and not (slots.isdigit() and int(slots) > 0)):
            raise ClusterRequestError(
                f"hosts entry {entry!r} is not 'host' or 'host:slots' with slots >= 1.")
        parsed.append((name, int(slots) if slots else None))
    return parsed


def local_addresses() -> set[str]:
    """The addresses of this machine's interfaces (in this network namespace)."""
    import psutil

    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values()
            for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)}


def check_controller_address(ip: str) -> None:
    """Raise ClusterRequestError unless the controller can listen on ``ip`` here."""
    if ip in WILDCARDS:
        return
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, 0))
        except OSError as exc:
            mine = ", ".join(sorted(local_addresses()))
            raise ClusterRequestError(
                f"The controller cannot listen on ip={ip!r}: it is not an address of any "
                f"interface of this machine ({exc.strerror or exc}). This machine's addresses: "
                f"{mine}. Use one that the engines' hosts reach, or '*' for every interface."
            ) from None


def check_hosts_reachable(hosts, port: int = SSH_PORT, timeout: float = 5.0) -> None:
    """Raise ClusterRequestError naming the first host (and port) that does not answer a TCP
    connection within ``timeout`` seconds; this machine's own addresses are not tried."""
    mine = local_addresses() | {socket.gethostname(), "localhost"}
    for name, _ in _parse_hosts(hosts):
        if name in mine:
            continue
        try:
            socket.create_connection((name, port), timeout=timeout).close()
        except OSError as exc:
            why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise ClusterRequestError(
                f"Host {name} cannot be reached on port {port} ({why} within {timeout:g} s): "
                "Hydra starts the engines of other hosts over ssh there. Check the address, "
                "that an sshd runs on it and that this machine reaches it; with another "
                "launcher pass mpi_args=['-launcher', ...]."
            ) from None


def _uses_ssh(mpi_args: Sequence[str]) -> bool:
    args = [str(a) for a in mpi_args]
    for flag in ("-launcher", "-bootstrap"):
        if flag in args and args.index(flag) + 1 < len(args):
            return args[args.index(flag) + 1] in ("ssh", "rsh")
    return True


def host_launch(hosts, interface: str | None, mpi_args: Sequence[str], *, runtime=None,
                check: bool = True) -> tuple[list[str], dict]:
    """``(mpi_args, env)`` of a job across ``hosts`` on ``interface`` (either may be None),
    after checking the interface exists here and, with ssh as the launcher, that every host
    answers on its ssh port. ``runtime`` (an MPIRuntime) must be Hydra's (MPICH, Intel MPI)
    when either is given."""
    args, env = [str(a) for a in mpi_args], {}
    if (hosts is not None or interface is not None) and runtime is not None \
            and runtime.flavor not in ("mpich", "intel"):
        raise ClusterRequestError(
            f"hosts= and interface= become Hydra's -hosts and -iface (the mpiexec of MPICH or "
            f"Intel MPI), but this MPI is {runtime.flavor} ({runtime.mpiexec}): pass its own "
            "options through mpi_args instead.")
    if interface is not None:
        import psutil

        names = sorted(psutil.net_if_addrs())
        if interface not in names:
            raise ClusterRequestError(
                f"interface={interface!r} is not a network interface of this machine "
                f"(it has {', '.join(names)}).")
        args += ["-iface", interface]
        env.update(UCX_NET_DEVICES=interface, FI_TCP_IFACE=interface,
                   FI_SOCKETS_IFACE=interface)
    if hosts is not None:
        parsed = _parse_hosts(hosts)
        if check and _uses_ssh(args):
            check_hosts_reachable(hosts)
        args += ["-hosts", ",".join(f"{h}:{s}" if s else h for h, s in parsed)]
    return args, env


def _is_loopback(ip: str) -> bool:
    """Whether the controller address ``ip`` (an address or a host name) is on loopback."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(ip)).is_loopback
        except (OSError, ValueError):
            return False


def loopback_launch(runtime, mpi_args, ip: str):
    """The runtime and engine environment that keep a one-machine cluster on loopback; raise
    ClusterRequestError where an argument asks for more (``ip``, Hydra-only mpi_args)."""
    if not _is_loopback(ip):
        raise ClusterRequestError(
            f"ip={ip!r} makes the controller listen beyond this machine, but the cluster is "
            "confined to loopback by default. For engines on other hosts pass "
            f"open_network=True as well (`--open-network`), on a trusted network; on one "
            "machine leave ip at its default, 127.0.0.1."
        )
    local = loopback_runtime(runtime)
    if local is None:
        warnings.warn(
            f"declearn knows no launcher of this MPI ({runtime.flavor}: {runtime.mpiexec}) "
            "that keeps a job on the loopback interface: its mpiexec and ranks may listen on "
            "every network interface while the cluster runs. The mpich wheel has one "
            "(pip install mpich); pass open_network=True to accept this MPI as it is.",
            RuntimeWarning, stacklevel=3)
        return runtime, {}
    check_loopback_args(mpi_args, local.mpiexec)
    return local, loopback_env()


# ------------------------------------------------------------------ a cluster of another host
def started_elsewhere(record) -> bool:
    """Whether the cluster of ``record`` (a ClusterRecord, or None) was started on another
    machine sharing the profile folder: its pids are that machine's, not this one's."""
    return record is not None and record.host != socket.gethostname()


def controller_answers(profile_dir: str, cluster_id: str, timeout: float = 3.0) -> bool:
    """Whether the controller of a cluster accepts a TCP connection on its registration port
    (read from its connection file): how a cluster of another host is known to run."""
    import json
    import os

    path = os.path.join(profile_dir, "security", f"ipcontroller-{cluster_id}-client.json")
    try:
        with open(path) as f:
            info = json.load(f)
        address = info["interface"].split("://", 1)[1]
        if address in WILDCARDS:
            address = info.get("location") or "127.0.0.1"
        socket.create_connection((address, int(info["registration"])), timeout=timeout).close()
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return True


def shutdown_remote(ipp_cluster) -> None:
    """End a cluster of another machine through its controller: the engines, then the
    controller itself (whose mpiexec ends with its ranks)."""
    client = ipp_cluster.connect_client_sync()
    try:
        client.shutdown(targets="all", hub=True, block=True)
    finally:
        client.close()
