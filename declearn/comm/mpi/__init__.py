r"""MPIComm: one node per MPI rank; every wait has a deadline; mismatches are named.

Node i is MPI rank i and holds its own tensor ``x`` (shape ``s``). With ``W = topology.W``
(row i = receiver), ``neighbor_allreduce`` computes on rank i

.. math::  y_i = W_{ii}\, x_i + \sum_{j \in N^{in}_i} W_{ij}\, x_j ,

receiving ``x_j`` from every in-neighbor ``j`` (``W[i, j] > 0``) and sending ``x_i`` to every
out-neighbor; the other operations follow :mod:`declearn.comm.base`. mpi4py is imported when
the first MPIComm is created, never at module import.

Protocol
--------
*Communicators.* ``MPIComm(comm)`` duplicates ``comm`` (default ``COMM_WORLD``) twice: ``p2p``
carries headers, neighbor payloads and resync messages; ``coll`` carries the native nonblocking
collectives (``Iallreduce``, ``Ibcast``, ``Iallgather``). User traffic on ``comm`` can never
match ours, and a collective abandoned on ``coll`` cannot poison ``p2p``.

*Sequence numbers and epochs.* Each operation has a number ``seq`` (the same on every rank if
all ranks call the same operations in the same order) within an ``epoch`` (bumped by
:meth:`MPIComm.resync`). Point-to-point tags encode both,
``tag = 16 + 2 ((epoch mod E) S + seq mod S) + kind`` with kind 0 = header, 1 = payload and
``E, S`` sized to the library's ``TAG_UB``; tag 1 is the resync control tag. A message left
behind by an abandoned operation can therefore never match a later one.

*Headers.* Every operation first sends a 28-int64 header to its peers: operation, dtype,
shape, payload bytes, operation argument (reduce op, root or weights mode), a fingerprint of
the topology, data plane, ``seq``, the caller's iteration (``comm.iteration``, set by an
algorithm around each step; -1 outside) and the call site (:mod:`declearn.comm.mpi.callsite`:
the line that called the operation, or its ``tag``). Ranks pair two calls only if their
headers are equal, so an extra or skipped call on one rank (its next call comes from another
line) and ranks at different iterations raise instead of mixing unrelated tensors.

* Global collectives (allreduce, broadcast, allgather, barrier) exchange headers all-to-all
  (``Irecv``/``Isend``). Once every header has arrived, every rank knows that every rank is
  there and sees the same n headers, so all ranks take the same decision: raise
  :class:`~declearn.errors.CollectiveMismatchError` naming the ranks and their shapes, or
  start the native nonblocking collective and wait for it (barrier: the exchange itself).
* Neighbor operations run in one round. Each rank posts, for every in-neighbor, the receive
  of its header and the receive of its payload, sized for a peer that matches (same header,
  so the same number of bytes); then it sends its header and payload to every out-neighbor.
  When every header has arrived and equals its own, it waits for the rest. A mismatching
  in-neighbor's payload still lands in the receive posted for it: whole if it fits, else
  truncated (MPI reports ``MPI_ERR_TRUNCATE``, drops the rest and completes the send); if its
  header says it sends no payload (a global operation, the NCCL plane), that receive is
  cancelled. No sender is left blocked, and the rank raises CollectiveMismatchError. Only the
  ranks that see a mismatch raise; either way every message was consumed, so the
  communicator stays in sync. A rank that skips a neighbor operation makes only its
  neighbors time out.

*Inline payloads.* A CPU ``neighbor_allreduce`` of at most ``INLINE_MAX`` = 4 KiB sends its
payload inside the header's message (one message per neighbor instead of two; the header's
plane word says so), and combines what it received with one BLAS call
(:mod:`declearn.comm.mpi.inline`). Every receive on a header tag, of any operation, has room
for a header and the largest inline payload, so no such message is ever truncated and the
checks above read every peer's header whole: a peer that sent its payload inline has none
to drain, one that sent it apart (a larger payload) has it drained as above.

*Deadlines.* Every wait is a Python polling loop (:mod:`declearn.comm.mpi.deadline`) bounded by
``timeout`` (per call, else the communicator's, else
:func:`~declearn.comm.base.get_default_timeout`); Ctrl-C interrupts it. At the deadline the
pending receives are cancelled, the pending sends and their buffers go to a graveyard (MPI may
still read them), and :class:`~declearn.errors.CollectiveTimeoutError` names the ranks this
rank did not hear from. The communicator is then *out of sync*: every later operation raises
:class:`~declearn.errors.CommunicatorOutOfSyncError` until :meth:`MPIComm.resync` has run on
every rank.

*Resync.* A handshake of tiny messages on the control tag (itself with a deadline,
:meth:`MPIComm._handshake`): each message carries the sender's resync generation and the
newest generation it has received from the addressee, so a rank completes only on answers
given while every other rank was in resync *with it*, never on messages left by a resync
that timed out elsewhere. Then every rank moves to epoch ``max(epochs) + 1`` and
``seq = 0``, drains the stale messages already queued, and, if any rank abandoned a native
collective, replaces ``coll`` by a fresh duplicate of ``p2p`` (``Idup``, deadline-bounded).
If that duplication times out, the engines must be restarted. :func:`resync_all` resyncs
every live MPIComm of the process (an engine-side helper).

*Data planes.* CPU tensors go to MPI as zero-copy views of their memory (upper-case mpi4py
methods only, never pickles); CUDA tensors go through CUDA-aware MPI, pinned-host staging or
NCCL (:mod:`declearn.comm.mpi.planes`). Results are fresh tensors on the input's device (large CPU
ones reuse freed memory, see :mod:`declearn.comm.memory`); they never require grad.

*Call plans.* A neighbor operation derives a lot from its arguments: the rank's neighbors and
weights, its header, the receive buffers. The first call with a given (operation, topology
object, weights, shape, dtype, device) checks the arguments and builds a
:class:`_NeighborCall` with all of it; later such calls reuse it and only fill in ``seq``. For
``neighbor_allreduce`` it holds the receive buffers (one per in-neighbor slot) and their MPI
views, or the inline message and the rows the in-neighbors' messages land in; a small CPU
call finds its plan from (topology, weights, shape, dtype) after checking only what a plan
does not fix (that ``x`` is a plain contiguous CPU tensor). Call plans and buffers are
dropped when an operation is abandoned (MPI may still write into them) and by resync.

*Nonblocking allreduce.* :meth:`MPIComm.iallreduce` takes its ``seq`` and posts its header
exchange at once, then returns a :class:`Pending`; the native ``Iallreduce`` is posted as soon
as every header has arrived (and matched). Native collectives on ``coll`` must start in the
same order on every rank, so one is posted only after those of every earlier iallreduce, and
a blocking allreduce, broadcast or allgather first posts those of the iallreduces still
waiting for headers (:meth:`MPIComm._settle_in_flight`). Several may be in flight; they are
posted in call order. MPICH moves a nonblocking collective only while the process is inside
an MPI call, so nothing happens "in the background": ``Pending.done()`` and
:meth:`MPIComm.progress` test every operation in flight, and an algorithm that overlaps
communication with local steps calls one of them between steps (the Local SGD rules do).
``wait()`` applies the operation's deadline from the moment it is called: a timeout names
the ranks whose headers are missing and, as for a blocking operation, leaves the
communicator out of sync (every operation still in flight is abandoned with it). The input
must not be modified until ``wait()`` has returned. CUDA tensors, dtypes MPI cannot add and
n = 1 fall back to the blocking allreduce (a completed Pending).

*Threads.* An MPIComm is not thread-safe: call it from one thread per rank (the engine's).
Services that need asynchronous progress (the partial collectives of eager-SGD, pairwise
gossip; :mod:`declearn.comm.mpi.service`) run a thread of their own on their own duplicate of
``p2p``; the MPI library must then run at ``MPI_THREAD_MULTIPLE`` (mpi4py's default).
"""

from declearn.comm.mpi.comm import MPIComm
from declearn.comm.mpi.registry import live_comms
from declearn.comm.mpi.resync import resync_all

__all__ = ["MPIComm", "resync_all", "live_comms"]
