r"""Time a communicator's collectives as the message grows: allreduce against neighbor averaging.

:func:`time_collectives` runs, for every size ``d`` (floats per node), ``repeats`` calls of

* ``comm.allreduce(x)`` (exact averaging: what parallel SGD pays per iteration), and
* ``comm.neighbor_allreduce(x, topology.at(r))`` (one gossip round: what DSGD pays),

each after a ``barrier()`` so that every node starts together, and keeps the *median* of each
node's seconds per call (the median ignores the odd call slowed by another process). Every node
must call it with the same arguments (it is a sequence of collectives). On MPI engines each
rank measures its own calls; an iteration of a synchronous method lasts as long as its slowest
node, so :meth:`CollectiveTimes.slowest` combines the ranks' results by taking, for each size,
the largest median. Under SimComm the one process times all nodes at once. Under a
:class:`~declearn.comm.DelayedComm` with ``clock="virtual"`` the seconds are the modelled ones
(the increase of ``comm.clock`` during the call), not the wall's: the same table for a network
that is only simulated.

:meth:`CollectiveTimes.fit` turns the allreduce times into the latency and bandwidth of
:class:`~declearn.comm.costs.NetworkModel` (as if the allreduce were a ring), which then
predicts the neighbor averaging times: a test of the model on the machine at hand.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from declearn.comm.costs import NetworkModel, peers

__all__ = ["CollectiveTimes", "time_collectives"]

OPS = ("allreduce", "neighbor_allreduce")


@dataclass
class CollectiveTimes:
    """Median seconds per call of each op in ``OPS`` (``seconds[op][j]`` for ``sizes[j]``
    floats of ``itemsize`` bytes per node), over ``n`` nodes, neighbor averaging over
    ``topology`` (whose busiest node has ``peers`` peers)."""

    n: int
    sizes: np.ndarray
    itemsize: int
    topology: str
    peers: int
    seconds: dict = field(default_factory=dict)
    repeats: int = 0

    @property
    def nbytes(self) -> np.ndarray:
        """Bytes of one node's message at each size."""
        return self.sizes * self.itemsize

    @property
    def ratio(self) -> np.ndarray:
        """allreduce time / neighbor averaging time, per size."""
        return self.seconds["allreduce"] / self.seconds["neighbor_allreduce"]

    @classmethod
    def slowest(cls, results) -> CollectiveTimes:
        """One result from each node's (e.g. ``cluster.view.pull("times")``): for every op
        and size, the largest of the nodes' medians (the node the others wait for)."""
        results = list(results)
        if not results or not all(isinstance(r, CollectiveTimes) for r in results):
            raise TypeError("slowest needs a non-empty list of CollectiveTimes (one per node).")
        first = results[0]
        for r in results[1:]:
            if r.n != first.n or not np.array_equal(r.sizes, first.sizes):
                raise ValueError("The results come from different runs (n or sizes differ): "
                                 "time every node with the same arguments.")
        seconds = {op: np.max([r.seconds[op] for r in results], axis=0) for op in OPS}
        return cls(first.n, first.sizes, first.itemsize, first.topology, first.peers,
                   seconds, first.repeats)

    def fit(self) -> NetworkModel:
        """alpha and beta fitted to the allreduce times (``NetworkModel.fit_allreduce``)."""
        return NetworkModel.fit_allreduce(self.n, self.nbytes, self.seconds["allreduce"])

    def table(self, model: NetworkModel | None = None) -> str:
        """One line per size, times in ms; with ``model``, its predictions next to them."""
        head = f"{'floats':>10} {'MB':>8} {'allreduce':>10} {'neighbor':>10} {'ratio':>6}"
        if model is not None:
            head += f"   model: {'allreduce':>9} {'neighbor':>9} {'ratio':>6}"
        lines = [head + "   (ms per call, median; slowest node)"]
        for j, d in enumerate(self.sizes):
            b = float(self.nbytes[j])
            ar, nb = (1e3 * self.seconds[op][j] for op in OPS)
            line = f"{int(d):>10} {b / 1e6:>8.3f} {ar:>10.3f} {nb:>10.3f} {ar / nb:>6.2f}"
            if model is not None:
                mar, mnb = 1e3 * model.allreduce(self.n, b), 1e3 * model.neighbor(self.peers, b)
                line += f"          {mar:>9.3f} {mnb:>9.3f} {mar / mnb:>6.2f}"
            lines.append(line)
        return "\n".join(lines)


def _check_sizes(sizes) -> np.ndarray:
    out = np.asarray(sizes).ravel()
    ok = out.size > 0 and all(isinstance(v, numbers.Integral) or float(v).is_integer()
                              for v in out.tolist())
    if not ok or (out < 1).any():
        raise ValueError(f"sizes must be a non-empty list of whole numbers of floats >= 1 "
                         f"(e.g. [1000, 10000, 100000]), got {sizes!r}.")
    return out.astype(np.int64)


def time_collectives(comm, topology, sizes, *, repeats: int = 5, warmup: int = 1,
                     dtype: torch.dtype = torch.float32) -> CollectiveTimes:
    """Time ``allreduce`` and ``neighbor_allreduce`` over ``topology`` (static, or dynamic:
    call r uses ``topology.at(r)``) for node-local tensors of ``sizes[j]`` floats per node
    (see the module docstring); every node calls it. Returns this node's medians."""
    from declearn.topology.base import DynamicTopology, Topology

    if not isinstance(topology, (Topology, DynamicTopology)):
        raise TypeError(f"topology must be a declearn Topology (e.g. one_peer_exponential(n)), "
                        f"got {type(topology).__name__}.")
    if topology.n != comm.size:
        raise ValueError(f"topology has n = {topology.n} nodes, the communicator {comm.size}: "
                         f"build it with n = {comm.size}.")
    for value, what, low in ((repeats, "repeats", 1), (warmup, "warmup", 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}.")
    sizes = _check_sizes(sizes)
    graphs = [topology.at(r) for r in range(warmup + repeats)]
    virtual = getattr(comm, "clock_mode", None) == "virtual"
    now = (lambda: comm.clock) if virtual else time.perf_counter
    seconds = {op: np.empty(sizes.size) for op in OPS}
    for j, d in enumerate(sizes.tolist()):
        x = torch.ones(comm.node_dims + (d,), dtype=dtype, device=comm.device)
        for op in OPS:
            times = []
            for r in range(warmup + repeats):
                comm.barrier()
                start = now()
                if op == "allreduce":
                    comm.allreduce(x, "mean")
                else:
                    comm.neighbor_allreduce(x, graphs[r])
                times.append(now() - start)
            seconds[op][j] = float(np.median(times[warmup:]))
    busiest = max(peers(g) for g in graphs)
    return CollectiveTimes(comm.size, sizes, torch.empty((), dtype=dtype).element_size(),
                           topology.name, busiest, seconds, int(repeats))
