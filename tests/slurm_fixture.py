"""A real single-node Slurm for the tests: munged, slurmctld and slurmd (Debian's munge and
slurm-wlm packages) started in a temporary folder with their own key, configuration and ports,
and ended with everything they ran. ``SLURM_CONF`` points the client commands (sbatch, squeue,
scancel, srun) at it while it runs.

The node claims ``CPUS`` CPUs (``SlurmdParameters=config_overrides``: more than this machine's,
so that a few engines fit beside a job that holds the others) and its partition does not
oversubscribe, so a job that asks for more than is free waits in the queue.

``unavailable()`` says why it cannot run here (not root, a daemon missing), or None.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CPUS = 8
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "srun", "sinfo")


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    missing = [d for d in DAEMONS if shutil.which(d) is None
               and not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        return (f"Slurm or munge is not installed ({', '.join(missing)} missing): "
                "apt-get install slurm-wlm munge")
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestSlurm:
    """``with TestSlurm() as slurm:`` a running one-node Slurm (see the module docstring)."""

    __test__ = False

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="declearn-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self._old_conf = os.environ.get("SLURM_CONF")

    def __enter__(self) -> TestSlurm:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        d = self.dir
        d.chmod(0o755)  # munged wants its socket's folders open to all (execute)
        for sub in ("state", "spool", "log", "munge", "run"):
            (d / sub).mkdir(mode=0o755)
        (d / "munge").chmod(0o700)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = d / "run" / "munge.socket"
        self.procs.append(subprocess.Popen(
            [_tool("munged"), "-F", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={d / 'munge' / 'munged.pid'}", f"--seed-file={d / 'munge' / 'seed'}",
             f"--log-file={d / 'log' / 'munged.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self._wait(sock.exists, "munged did not create its socket", "munged.log")
        host = socket.gethostname()
        self.conf.write_text(f"""\
ClusterName=declearntest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
NodeName={host} CPUs={CPUS} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        os.environ["SLURM_CONF"] = str(self.conf)
        for daemon in ("slurmctld", "slurmd"):
            self.procs.append(subprocess.Popen(
                [_tool(daemon), "-D", "-f", str(self.conf)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        self._wait(self._node_idle, "the Slurm node did not become idle", "slurmctld.log")

    def _node_idle(self) -> bool:
        out = subprocess.run([_tool("sinfo"), "-h", "-N", "-o", "%t"], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip() == "idle"

    def _wait(self, ready, what: str, log: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                text = (self.dir / "log" / log).read_text() if (self.dir / "log" / log).exists() \
                    else ""
                raise RuntimeError(f"{what} within {timeout} s:\n{text[-3000:]}")
            time.sleep(0.2)

    def jobs(self) -> list[str]:
        """``"id name state"`` of every job in the queue."""
        out = subprocess.run([_tool("squeue"), "-h", "-o", "%i %j %T"], capture_output=True,
                             text=True, timeout=10, check=False)
        return [line for line in out.stdout.splitlines() if line.strip()]

    def submit_blocker(self, cpus: int) -> str:
        """A job that holds ``cpus`` CPUs (sleeping) until cancelled; its id."""
        out = subprocess.run([_tool("sbatch"), "--parsable", "-n", str(cpus),
                              f"--output={self.dir / 'log' / 'blocker.out'}",
                              "--wrap", "sleep 600"],
                             capture_output=True, text=True, timeout=30, check=True)
        job = out.stdout.strip().split(";")[0]
        self._wait(lambda: any(j.startswith(f"{job} ") and j.endswith("RUNNING")
                               for j in self.jobs()), "the blocker job did not start",
                   "slurmctld.log")
        return job

    def close(self) -> None:
        if self.conf.exists() and self.procs:
            subprocess.run([_tool("scancel"), "--full", "-u", "root"], capture_output=True,
                           timeout=30, check=False)
            time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        self.procs = []
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf
        shutil.rmtree(self.dir, ignore_errors=True)
