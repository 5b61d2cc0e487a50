"""declearn's IPython profile, and the ``ipcluster_config.py`` it keeps there.

Anything that starts a cluster from a profile alone reads that profile's
``ipcluster_config.py``: JupyterLab's IPython Parallel sidebar (its START button), and
``ipcluster start --profile=declearn``. Without one they start ``cpu_count()`` engines as
separate processes, each its own MPI world of size 1 (ranks ``[0, 0, ...]``), which
:func:`declearn.cluster.connect` must refuse. :func:`resolve_profile_dir` therefore writes, into
every profile it resolves, a config that starts what ``connect()`` accepts: a controller on
127.0.0.1 plus :data:`SIDEBAR_ENGINES` engines as ONE MPI job (``--mpi``: engine id = rank),
launched as :func:`declearn.cluster.start` launches them (the same ``mpiexec``, loopback-only
where this MPI allows it, the Python that wrote the file) with the quiet launchers of
:mod:`declearn.cluster.launchers`.

The file is declearn's only while its text is the one declearn wrote: its header holds the
SHA-256 of the text below it. declearn refreshes such a file when what it would write changes
(another virtual environment, another MPI), and never touches a file without that header or
whose text no longer matches it (the user's own settings, e.g. a batch launcher).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

__all__ = ["resolve_profile_dir", "write_profile_config", "profile_config_state",
           "profile_config_text", "CONFIG_NAME", "DEFAULT_PROFILE", "SIDEBAR_ENGINES"]

#: The IPython profile declearn uses unless told otherwise (kept apart from profile_default).
DEFAULT_PROFILE = "declearn"
#: The controller's heartbeat: every HEARTBEAT_MS ms, an engine silent for HEARTBEAT_MISSES
#: beats in a row is declared dead (30 s: long enough for a busy engine on a loaded laptop).
HEARTBEAT_MS = 500
HEARTBEAT_MISSES = 60

#: The file ipyparallel reads from a profile when it starts a cluster.
CONFIG_NAME = "ipcluster_config.py"
#: Engines a cluster started from the profile alone gets (the sidebar's START sends no count).
SIDEBAR_ENGINES = 4
_HEADER = (
    "# Written by declearn (declearn.cluster.profile), so that JupyterLab's IPython Parallel\n"
    "# sidebar and `ipcluster start` start, from this profile, the cluster of MPI engines that\n"
    "# declearn.cluster.connect() accepts. declearn keeps this file up to date while the text\n"
    "# below is unchanged; once you edit it, declearn leaves it alone.\n"
    "# (sha256 {digest})\n"
)
_DIGEST = re.compile(r"\A(?:#[^\n]*\n)*?#[^\n]*\(sha256 ([0-9a-f]{64})\)[^\n]*\n")


def resolve_profile_dir(profile: str | None = None, profile_dir: str | None = None) -> str:
    """The profile directory to use, created if missing: ``profile_dir`` if given, else
    ``$IPYTHONDIR/profile_<profile>`` (default profile: ``declearn``); its
    ``ipcluster_config.py`` written or refreshed (see the module docstring)."""
    from IPython.core.profiledir import ProfileDir, ProfileDirError
    from IPython.paths import get_ipython_dir

    if profile_dir:
        profile_dir = os.path.abspath(os.path.expanduser(profile_dir))
        location = ProfileDir.create_profile_dir(profile_dir).location
    else:
        name = profile or DEFAULT_PROFILE
        try:
            location = ProfileDir.find_profile_dir_by_name(get_ipython_dir(), name).location
        except ProfileDirError:
            location = ProfileDir.create_profile_dir_by_name(get_ipython_dir(), name).location
    write_profile_config(location)
    return location


def _launch_settings() -> tuple[list[str], list[str], dict]:
    """(mpiexec command, its arguments, the engines' extra environment) as start() would
    use them on this machine; ``mpiexec`` from PATH if declearn finds none (a start then
    fails saying so, instead of starting engines that are not one MPI job)."""
    from declearn.cluster.mpiexec import (
        launch_args,
        loopback_env,
        loopback_runtime,
        mpi_runtime,
    )
    from declearn.errors import ClusterError

    try:
        runtime = mpi_runtime()
    except ClusterError:
        return ["mpiexec"], [], {}
    local = loopback_runtime(runtime)
    env = {}
    if local is not None:
        runtime, env = local, loopback_env()
    return [runtime.mpiexec], launch_args(runtime, (), oversubscribe=True), env


def profile_config_text() -> str:
    """The body of the ``ipcluster_config.py`` declearn writes (without its header)."""
    mpi_cmd, mpi_args, env = _launch_settings()
    bindir = os.path.dirname(os.path.realpath(mpi_cmd[0])) if os.path.isabs(mpi_cmd[0]) else ""
    return f"""\
import os

c = get_config()  # noqa: F821 (ipyparallel provides it)

try:  # engine and controller output stays in this profile's log/ folder
    import declearn.cluster.launchers  # noqa: F401

    c.Cluster.engine_launcher_class = "declearn.cluster.launchers.QuietMPIEngineSetLauncher"
    c.Cluster.controller_launcher_class = "declearn.cluster.launchers.QuietControllerLauncher"
except ImportError:
    c.Cluster.engine_launcher_class = "mpi"
c.Cluster.n = {SIDEBAR_ENGINES}
c.Cluster.delay = 0
c.Cluster.controller_ip = "127.0.0.1"
c.Cluster.controller_args = {[f"--HeartMonitor.period={HEARTBEAT_MS}",
                              f"--HeartMonitor.max_heartmonitor_misses={HEARTBEAT_MISSES}"]!r}
c.MPILauncher.mpi_cmd = {mpi_cmd!r}
c.MPILauncher.mpi_args = {mpi_args!r}
c.MPIEngineSetLauncher.engine_cmd = {[sys.executable, "-m", "ipyparallel.engine"]!r}
c.MPIEngineSetLauncher.environment = {{
    "PATH": os.pathsep.join(filter(None, [{bindir!r}, os.environ.get("PATH", "")])),
    **{env!r},
}}
"""


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def _split(text: str) -> tuple[str | None, str]:
    """(the digest in declearn's header or None, the text below the header)."""
    match = _DIGEST.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end():]


def profile_config_state(profile_dir: str) -> str:
    """``"missing"``, ``"declearn"`` (declearn's text, unedited), or ``"user"`` (no declearn
    header, or edited since declearn wrote it)."""
    path = os.path.join(profile_dir, CONFIG_NAME)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return "missing"
    digest, body = _split(text)
    return "declearn" if digest is not None and digest == _digest(body) else "user"


def write_profile_config(profile_dir: str) -> str | None:
    """Write or refresh ``<profile_dir>/ipcluster_config.py`` unless it is the user's (see
    the module docstring); return its path if written, None if left as it was."""
    state = profile_config_state(profile_dir)
    if state == "user":
        return None
    path = os.path.join(profile_dir, CONFIG_NAME)
    body = profile_config_text()
    text = _HEADER.format(digest=_digest(body)) + body
    if state == "declearn":
        with open(path) as f:
            if f.read() == text:
                return None
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
