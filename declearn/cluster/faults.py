"""Engine deaths: which rank died first, how, and what to tell the user.

The engines of a cluster are ONE MPI job. When one engine process dies (``kill -9``, a
segfault, ``os._exit``), mpiexec (Hydra) ends every other rank and exits. ipyparallel then
only reports n engines that "died while running task ...", and Hydra's own report names the
first rank *in rank order* with a bad status, which is often a rank that Hydra itself killed.

Which rank died first. A :class:`DeathWatch` thread in this process holds a pidfd per
engine that runs on this host, opened on the engine's main thread (``PIDFD_THREAD``, Linux
6.9+; plain pidfds on Linux 5.3+). Such a pidfd becomes readable when that thread exits, and
epoll hands ready descriptors back in the order they became ready, so the first death seen is
the rank that died and the later ones are the ranks mpiexec ended. (A plain pidfd waits for
the engine's last thread, which can come after mpiexec has already killed another rank.)
Where pidfds are missing the thread polls every :data:`POLL_S` seconds, and deaths seen in
the same poll are reported together.

How it died. Right when the main thread exits, the engine is a zombie whose wait status is
the last field of ``/proc/<pid>/stat``; the watch reads it there when it is in time (before
Hydra's proxy reaps the process). Otherwise mpiexec's report is used: it exits with the first
bad status it collected, and for a signal prints ``... EXIT STRING: Killed (signal 9)``; with
``-print-all-exitcodes`` it also prints every rank's wait status (``Exit codes: [host]
0,0,9,0``), and after a clean-up by signals (SIGINT, then SIGQUIT) one line per rank
(``[0]2:Return code = 0, signaled with Killed``). The first two can describe a rank that
mpiexec itself killed, so they come after the per-rank statuses.
"""

from __future__ import annotations

import os
import re
import select
import signal
import threading
import time
from dataclasses import dataclass, field

from declearn.errors import ClusterError

#: Seconds a call that saw engines die waits for mpiexec to exit (and finish its report).
JOB_END_WAIT = 10.0

__all__ = ["MPIJobEndedError", "ClusterBusyError", "ClusterStoppedError", "DeathWatch",
           "JobEnd", "read_hydra_report"]

POLL_S = 0.01

_EXIT_STRING = re.compile(r"EXIT STRING:\s*(.*?)\s*\(signal (\d+)\)")
_ALL_CODES = re.compile(r"Exit codes:\s*\[[^\]]*\]\s*([\d,\s]+)")
# Hydra's per-rank lines after a clean-up by signals: "[0]2:Return code = 0, signaled with Killed"
_RANK_LINE = re.compile(r"^\[\d+\](\d+):Return code = (\d+)(?:, signaled with (.+?))?\s*$",
                        re.MULTILINE)


class MPIJobEndedError(ClusterError):
    """The cluster's MPI job has ended (an engine died and took the others down).

    Attributes: ``ranks_first`` (the rank(s) that died first; empty if unknown), ``how`` (e.g.
    ``"killed by signal 9 (SIGKILL)"``, or None), ``during`` (True when raised by the call
    that was running when the job ended)."""

    def __init__(self, message: str, *, ranks_first=(), how=None, during=False):
        super().__init__(message)
        self.ranks_first = list(ranks_first)
        self.how = how
        self.during = during

    def _render_traceback_(self):  # IPython: the message is the whole story
        return [f"{type(self).__name__}: {self}"]


class ClusterBusyError(ClusterError, TimeoutError):
    """Some engines were still running an earlier command; ``ranks`` names them."""

    def __init__(self, message: str, ranks):
        super().__init__(message)
        self.ranks = list(ranks)

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


class ClusterStoppedError(ClusterError):
    """The cluster was stopped (or detached from) with ``cluster.stop()``."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


_SIGNAL_BY_TEXT = {(signal.strsignal(s) or "").lower(): int(s) for s in signal.Signals}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(status: int) -> str:
    """A wait status (as Hydra's ``Exit codes`` list gives it) in words."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({_signal_name(sig)})"
    return f"exited with exit code {os.WEXITSTATUS(status)}"


@dataclass
class HydraReport:
    """What mpiexec printed and returned about the end of the job."""

    signal: int | None = None        # from "EXIT STRING: ... (signal N)"
    statuses: list | None = None     # per rank, from "Exit codes: [host] s0,s1,..."
    returncode: int | None = None    # mpiexec's own exit status, when known


def read_hydra_report(output: str, returncode: int | None = None) -> HydraReport:
    report = HydraReport(returncode=returncode)
    found = _EXIT_STRING.findall(output or "")
    if found:
        report.signal = int(found[-1][1])
    codes = _ALL_CODES.findall(output or "")
    if codes:
        report.statuses = [int(s) for s in codes[-1].replace(" ", "").split(",") if s]
    lines = _RANK_LINE.findall(output or "")
    if lines and report.statuses is None:
        by_rank = {}
        for rank, code, how in lines:
            sig = _SIGNAL_BY_TEXT.get(how.strip().lower()) if how else None
            by_rank[int(rank)] = sig if sig is not None else (int(code) << 8)
        if sorted(by_rank) == list(range(len(by_rank))):
            report.statuses = [by_rank[r] for r in range(len(by_rank))]
    return report


def _pidfd_of_main_thread(pid: int) -> int:
    """A pidfd that is readable once the main thread of ``pid`` exits."""
    try:
        return os.pidfd_open(pid, os.O_EXCL)  # PIDFD_THREAD == O_EXCL (Linux 6.9+)
    except OSError as exc:
        if isinstance(exc, ProcessLookupError):
            raise
        return os.pidfd_open(pid)


def _zombie_status(pid: int) -> int | None:
    """The wait status of an exited, not yet reaped process (last field of /proc/pid/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if not fields or fields[0] not in ("Z", "X") or not fields[-1].lstrip("-").isdigit():
        return None
    return int(fields[-1])


class DeathWatch:
    """Records, in order, the exits of the engine processes ``pids`` (rank -> pid) that run on
    this host. ``deaths`` is a list of ``(ranks, seconds)`` groups: ranks seen dead together
    (one rank each with pidfds) and when (``time.monotonic()``); ``statuses`` maps a rank to
    its wait status where /proc still showed it."""

    def __init__(self, pids: dict[int, int]):
        self.deaths: list[tuple[list[int], float]] = []
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pids = dict(pids)
        self._wake_r, self._wake_w = os.pipe()
        self._fds: dict[int, int] = {}  # pidfd -> rank
        self._epoll = None
        if hasattr(os, "pidfd_open") and hasattr(select, "epoll"):
            self._epoll = select.epoll()
            self._epoll.register(self._wake_r, select.EPOLLIN)
            for rank, pid in self._pids.items():
                try:
                    fd = _pidfd_of_main_thread(pid)
                except ProcessLookupError:
                    self.deaths.append(([rank], time.monotonic()))
                    continue
                self._fds[fd] = rank
                self._epoll.register(fd, select.EPOLLIN)
        target = self._run_epoll if self._epoll is not None else self._run_poll
        self._thread = threading.Thread(target=target, daemon=True,
                                        name="declearn-cluster-death-watch")
        self._thread.start()

    @property
    def first(self) -> list[int]:
        """The rank(s) seen dead first (empty while all live)."""
        with self._lock:
            return list(self.deaths[0][0]) if self.deaths else []

    def dead_ranks(self) -> list[int]:
        with self._lock:
            return sorted(r for group, _ in self.deaths for r in group)

    def _record(self, ranks) -> None:
        statuses = {r: _zombie_status(self._pids[r]) for r in ranks}
        with self._lock:
            self.deaths.append((sorted(ranks), time.monotonic()))
            self.statuses.update({r: s for r, s in statuses.items() if s is not None})

    def _run_epoll(self) -> None:
        while self._fds and not self._stop.is_set():
            for fd, _ in self._epoll.poll():
                if fd == self._wake_r:
                    return
                rank = self._fds.pop(fd)
                self._epoll.unregister(fd)
                os.close(fd)
                self._record([rank])

    def _run_poll(self) -> None:
        import psutil

        alive = dict(self._pids)
        while alive and not self._stop.wait(POLL_S):
            gone = []
            for rank, pid in alive.items():
                try:
                    proc = psutil.Process(pid)
                    dead = proc.status() == psutil.STATUS_ZOMBIE
                except psutil.NoSuchProcess:
                    dead = True
                if dead:
                    gone.append(rank)
            if gone:
                for rank in gone:
                    del alive[rank]
                self._record(gone)

    def close(self) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(2.0)
        for fd in list(self._fds):
            os.close(fd)
        self._fds.clear()
        if self._epoll is not None:
            self._epoll.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class JobEnd:
    """Why a cluster's MPI job is over, as far as this process can tell."""

    cluster_id: str
    n: int
    first: list[int] = field(default_factory=list)   # rank(s) that died first
    later: list[int] = field(default_factory=list)   # ranks ended after them
    how: str | None = None                           # "killed by signal 9 (SIGKILL)"
    mpiexec_running: bool = False
    output_tail: str = ""

    @classmethod
    def build(cls, cluster_id: str, n: int, watch: DeathWatch | None, report: HydraReport,
              *, mpiexec_running: bool, output_tail: str = "") -> JobEnd:
        end = cls(cluster_id, n, mpiexec_running=mpiexec_running, output_tail=output_tail)
        if watch is not None:
            end.first = watch.first
            end.later = [r for r in watch.dead_ranks() if r not in end.first]
        statuses = report.statuses if report.statuses and len(report.statuses) == n else None
        if not end.first and statuses:
            # the odd one out: a status other than the SIGKILL/0 that Hydra's clean-up gives
            cleanup = (0, signal.SIGKILL, signal.SIGINT, signal.SIGQUIT)
            odd = [r for r, s in enumerate(statuses) if s not in cleanup]
            killed = [r for r, s in enumerate(statuses) if s == signal.SIGKILL]
            end.first = odd if len(odd) == 1 else (killed if len(killed) == 1 else [])
        seen = watch.statuses if watch is not None else {}
        if len(end.first) == 1 and end.first[0] in seen:
            end.how = describe_status(seen[end.first[0]])
        elif len(end.first) == 1 and statuses:
            end.how = describe_status(statuses[end.first[0]])
        elif report.signal is not None:  # the first bad status mpiexec collected
            end.how = (f"mpiexec reports: killed by signal {report.signal} "
                       f"({_signal_name(report.signal)})")
        elif report.returncode not in (None, 0):
            end.how = f"mpiexec exited with status {report.returncode}"
        return end

    def what_happened(self) -> str:
        how = f", {self.how}" if self.how else ""
        if len(self.first) == 1:
            text = f"rank {self.first[0]} died{how}"
        elif self.first:
            text = f"ranks {', '.join(map(str, self.first))} died at the same moment{how}"
        else:
            text = f"an engine died{how} (which rank died first is not known here)"
        later = [r for r in range(self.n) if r not in self.first]
        if self.first and later and not self.mpiexec_running:
            text += (f"; mpiexec then ended rank{'s' if len(later) > 1 else ''} "
                     f"{', '.join(map(str, later))}, since one dead rank takes the whole MPI "
                     "job down")
        return text

    def message(self, *, during: bool) -> str:
        cid = self.cluster_id
        if during:
            text = f"The MPI job of cluster {cid!r} ended while this ran: "
        else:
            text = (f"The MPI job of cluster {cid!r} has ended, so nothing can run on its "
                    "engines any more: ")
        text += (f"{self.what_happened()}. cluster.restart() starts a new MPI job with the "
                 f"same {self.n} ranks. The engines' state is lost (variables, models, "
                 "communicators): re-run your set-up cells, and load your last checkpoint to "
                 "bring training back.")
        if not self.first and self.output_tail:
            text += f"\n--- what mpiexec printed:\n{self.output_tail}"
        return text
