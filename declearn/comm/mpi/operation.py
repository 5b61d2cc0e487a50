"""One MPIComm operation in flight: its deadline, its MPI requests and any native collective,
and the context manager that runs it (see :meth:`MPIComm._operation
<declearn.comm.mpi.comm.MPIComm._operation>`)."""

from __future__ import annotations


class _Operation:
    """One operation in flight (its deadline, its MPI requests and any native collective),
    and the context manager that runs it (see :meth:`MPIComm._operation`)."""

    __slots__ = ("comm", "name", "deadline", "requests", "native", "spin")

    def __init__(self, comm, name, deadline, requests, spin):
        self.comm = comm
        self.name = name
        self.deadline = deadline
        self.requests = requests
        self.spin = spin  # seconds of yielding before sleeping (see deadline.spin_for)
        self.native = None  # (kind, request or works, buffers) while a collective runs

    def __enter__(self) -> _Operation:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is not None:
                self.comm._abandon(self, exc)
        finally:
            self.comm._seq += 1
        return False
