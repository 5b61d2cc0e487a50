r"""RelaySum: exact uniform averaging over a spanning tree, with finite delays.

On a tree every pair of nodes is joined by one path, so a node can forward what it heard
without anything arriving twice. Each node i keeps ``r_{j->i}``, the last message (value and
count) received from each tree neighbor j, and at every step sends to each neighbor j

    m_{i->j} = v_i + sum_{k in N(i), k != j} r_{k->i},      c_{i->j} = 1 + sum_{k != j} c_{k->i}

(value and count packed in one message of ``numel + 1`` scalars, one
``comm.neighbor_alltoall`` per tree). After the exchange node i holds

    S_i = v_i + sum_j r_{j->i},      C_i = 1 + sum_j c_{j->i}.

A value node k injected at step t reaches node i's ``S_i`` at step ``t + tau_ik`` with
``tau_ik = max(d(i, k) - 1, 0)`` (d = hops in the tree): neighbors see each other at once.
``C_i`` counts the contributions in ``S_i``; it reaches n after exactly ``diameter`` steps,
and from then on ``S_i`` holds every node's value once (each with its own delay).

Classes:

* :class:`RelaySum`: the mechanism, on a :class:`~declearn.topology.TreeTopology` (or any
  Topology whose graph is a tree) or on a :class:`~declearn.topology.TreePair` (the vector is
  split into interleaved halves, one relay state per tree);
* :class:`RelaySumConsensus`: ``x_i = S_i / C_i`` of the fixed initial values, exactly the
  average once ``C_i = n``;
* :class:`RelaySGD`: model relaying, the missing mass filled with the shared initial model
  (``fill="initial"``) or with the node's own model (``fill="own"``);
* :class:`RelaySGDGrad`: relaying of updates, missing ones count as zero;
* :func:`lr_correction`: the learning-rate factor that compensates the damping of delayed
  uniform averaging (exact), and :func:`impulse_response`, the experiment that measures it.

Each takes its tree as ``topology`` (a tree is a topology; the keyword ``tree=`` still works,
deprecated).
"""

from __future__ import annotations

import numpy as np
import torch

from declearn._deprecation import renamed_keyword
from declearn.algorithms.base import Algorithm
from declearn.errors import TopologyError

__all__ = ["RelaySum", "RelaySumConsensus", "RelaySGD", "RelaySGDGrad", "lr_correction",
           "impulse_response", "tree_parts", "tree_diameter"]

_USE_A_TREE = "use chain(n), binary_tree(n) or spanning_tree(graph) from declearn.topology"


# ---------------------------------------------------------------------- checking trees
def tree_parts(tree, n: int | None = None) -> list:
    """The trees a relay runs on: ``[tree]``, or ``[first, second]`` for a TreePair.

    Any static :class:`~declearn.topology.Topology` whose links (taken two-way) form a tree
    is accepted (a star, say); anything else raises a TopologyError that says what to use.
    """
    from declearn.topology import Topology, TreePair

    parts: list[Topology]
    if isinstance(tree, TreePair):
        parts = [tree.first, tree.second]
    elif isinstance(tree, Topology):
        parts = [tree]
    elif getattr(tree, "is_dynamic", False):
        raise TopologyError(
            f"RelaySum needs one fixed spanning tree, got the dynamic topology "
            f"{getattr(tree, 'name', '?')}; {_USE_A_TREE}."
        )
    else:
        raise TopologyError(
            f"RelaySum needs a spanning tree, got {type(tree).__name__}; {_USE_A_TREE}."
        )
    for part in parts:
        if n is not None and part.n != n:
            raise TopologyError(
                f"The tree {part.name} has n={part.n} nodes but the communicator has {n}; "
                f"build it with n={n}."
            )
        _check_is_tree(part)
    return parts


def _check_is_tree(topo) -> None:
    """A TopologyError unless ``topo`` is a spanning tree with two-way links (remembered)."""
    topo.memo("relay.is_tree", lambda: _is_tree(topo))


def _is_tree(topo) -> bool:
    off = topo.rows != topo.indices
    dst, src = topo.rows[off], topo.indices[off]
    forward = np.unique(dst * topo.n + src)
    backward = np.unique(src * topo.n + dst)
    if not np.array_equal(forward, backward):
        raise TopologyError(
            f"{topo.name} has one-way links, but RelaySum sends along every tree link in both "
            f"directions; {_USE_A_TREE}."
        )
    links = forward.size // 2
    if links != topo.n - 1 or (topo.n > 1 and not topo.is_connected):
        what = "is not connected" if not topo.is_connected else \
            f"has {links} links where a tree on {topo.n} nodes has {topo.n - 1} (it has a cycle)"
        raise TopologyError(
            f"RelaySum needs a spanning tree, but the graph of {topo.name} {what}: messages "
            f"would arrive twice or never. To relay on it, {_USE_A_TREE} "
            "(spanning_tree(graph) keeps a breadth-first tree of any connected graph)."
        )
    return True


def tree_diameter(topo) -> int:
    """Longest path of a tree, in hops (the steps after which every count is n)."""
    if hasattr(topo, "diameter"):
        return int(topo.diameter)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    A = csr_matrix((np.ones(topo.nnz), (topo.rows, topo.indices)), shape=(topo.n, topo.n))
    return int(shortest_path(A, directed=False, unweighted=True).max())


# ---------------------------------------------------------------------- the mechanism
class _TreeChannel:
    """The relay state of one tree.

    ``own`` is the packed outgoing value ``[v / n, 1]`` (values pre-scaled by 1/n so that the
    sums come out as averages; the count stays a count), ``received[.., s, :]`` the last
    packed message from the s-th tree neighbor and ``received_sum`` their sum over s. Tree
    links are two-way, so slot s of what comes in and of what goes out are the same
    neighbor. ``own`` is reused from step to step (scratch: it holds nothing between steps);
    ``received`` and ``received_sum`` are state and never written in place, so that an
    algorithm can keep them by reference to undo a step."""

    _scratch = ("own",)

    def __init__(self, comm, tree, lead: tuple):
        self.comm = comm
        self.tree = tree
        self.lead = lead
        self.slots = tree.degree
        self.steps = 0
        self.full_after = tree_diameter(tree)  # from then on every count is n
        self.own: torch.Tensor | None = None
        self.received: torch.Tensor | None = None
        self.received_sum: torch.Tensor | None = None

    def exchange(self, v: torch.Tensor) -> torch.Tensor:
        """Send ``v`` (flat per node) plus the relays; return ``[S / n, C]`` packed."""
        own = self._own_buffer(v)
        torch.mul(v, 1.0 / self.comm.size, out=own[..., :-1])
        slot_dim = own.dim() - 1
        if self.received is None:
            message = own.unsqueeze(slot_dim).expand(
                own.shape[:slot_dim] + (self.slots,) + own.shape[slot_dim:])
        else:  # to neighbor s: own + (sum over all neighbors) - (what s sent us)
            message = torch.sub((own + self.received_sum).unsqueeze(slot_dim), self.received)
        self.received = self.comm.neighbor_alltoall(message, self.tree)
        self.received_sum = _sum_slots(self.received, slot_dim)
        self.steps += 1
        return own + self.received_sum

    @property
    def counts_full(self) -> bool:
        """Whether every node's count is n (true from the ``diameter``-th exchange on)."""
        return self.steps >= self.full_after

    def _own_buffer(self, v):
        own = self.own
        width = v.shape[-1] + 1
        if own is None:
            own = self.own = torch.ones(self.lead + (width,), dtype=v.dtype, device=v.device)
        elif own.shape[-1] != width or own.dtype != v.dtype or own.device != v.device:
            raise ValueError(
                f"RelaySum carries one value shape and dtype per run: it started with "
                f"{own.shape[-1] - 1} numbers per node ({own.dtype}, {own.device}), now got "
                f"{width - 1} ({v.dtype}, {v.device}). Build a new relay for new shapes."
            )
        return own


def _sum_slots(received: torch.Tensor, slot_dim: int) -> torch.Tensor:
    """Sum over the slot dim; a few slots add faster one by one than torch.sum reduces."""
    slots = received.shape[slot_dim]
    if slots == 0 or slots > 4:
        return received.sum(slot_dim)
    total = received.select(slot_dim, 0)
    if slots == 1:
        return total.clone()
    total = torch.add(total, received.select(slot_dim, 1))
    for s in range(2, slots):
        total.add_(received.select(slot_dim, s))
    return total


class RelaySum:
    """The RelaySum mechanism over a spanning tree or a TreePair (see the module docstring).

    ``mix(v, fill=None, by_count=False)`` sends the node-local ``v`` (any shape) and returns,
    node-local and of ``v``'s shape, with ``S_i``, ``C_i`` as in the module docstring:

    * ``by_count=True``: ``S_i / C_i`` (the mean of the contributions that arrived);
    * otherwise: ``(S_i + (n - C_i) fill_i) / n`` (``fill=None``: missing ones count as 0).

    On a TreePair the flattened vector's even entries travel over ``first`` and its odd
    entries over ``second``, each half with its own counts.
    """

    @renamed_keyword("tree", "topology")
    def __init__(self, comm, topology):
        self.comm = comm
        self.parts = tree_parts(topology, comm.size)
        self.is_pair = len(self.parts) == 2
        # The node dim of SimComm's node-local tensors must stay out of the flattening; this
        # is shape bookkeeping only, the arithmetic is the same on both backends.
        self._lead = comm.node_dims
        self.channels = [_TreeChannel(comm, part, self._lead) for part in self.parts]
        self.diameter = max(tree_diameter(part) for part in self.parts)

    def mix(self, v: torch.Tensor, fill: torch.Tensor | None = None, *,
            by_count: bool = False) -> torch.Tensor:
        flat = v.reshape(self._lead + (-1,))
        fills = None if fill is None else fill.reshape(self._lead + (-1,))
        if self.is_pair:
            from declearn.topology import TreePair

            halves = TreePair.split(flat)
            fill_halves = (None, None) if fills is None else TreePair.split(fills)
            out = TreePair.merge(*[
                self._mix_part(ch, h, f, by_count)
                for ch, h, f in zip(self.channels, halves, fill_halves)
            ])
        else:
            out = self._mix_part(self.channels[0], flat, fills, by_count)
        return out.reshape(v.shape)

    def _mix_part(self, channel, v, fill, by_count):
        total = channel.exchange(v)
        mean, count = total[..., :-1], total[..., -1:]  # S / n and C
        if channel.counts_full:  # C = n exactly (a sum of ones): nothing is missing
            return mean
        n = self.comm.size
        if by_count:
            return mean * (n / count)
        if fill is None:
            return mean
        return torch.addcmul(mean, count.neg().add_(n).div_(n), fill)


class _Relaying(Algorithm):
    """An algorithm whose state includes the relay buffers of ``self.relay``."""

    relay: RelaySum

    def _stateful_parts(self) -> tuple:
        return (*super()._stateful_parts(), *self.relay.channels)


def _tree_params(tree) -> dict:
    parts = tree_parts(tree)
    names = "+".join(p.name for p in parts)
    return {"tree": names}


# ---------------------------------------------------------------------- algorithms
class RelaySumConsensus(_Relaying):
    r"""Average consensus by relaying the initial values: ``x_i^{t} = S_i^t / C_i^t``.

    ``S_i^t`` sums the initial values of the ``C_i^t`` nodes within ``t + 1`` hops of i
    (module docstring, with ``v = x^0`` at every step), so ``x`` is exactly the average of
    ``x^0`` after ``diameter`` steps, and not before at the ends of a longest path.
    """

    name = "relaysum_consensus"
    _assigns_new_tensors = True

    @renamed_keyword("tree", "topology")
    def __init__(self, comm, topology, x0):
        self._tree_info = _tree_params(topology)
        super().__init__(comm, None, x0=x0)
        self.relay = RelaySum(comm, topology)
        self.values = self.x

    def _params(self) -> dict:
        return {**super()._params(), **self._tree_info}

    def _step(self) -> None:
        self.x = self.relay.mix(self.values, by_count=True)


class RelaySGD(_Relaying):
    r"""RelaySGD (model relaying) on a spanning tree.

    ``x_half = x - lr * grad(x)``, then with ``S_i, C_i`` the relayed sum and count of the
    ``x_half`` (module docstring)

        x_i <- (S_i + (n - C_i) * f_i) / n

    where the missing mass ``f_i`` is the shared initial model ``x^0`` of node 0
    (``fill="initial"``, the paper's implementation) or the node's own ``x_half_i``
    (``fill="own"``, the README's academic version). Once every count is n both read
    ``x_i^{t+1} = (1/n) sum_k x_half_k^{t - tau_ik}`` with ``tau_ik = max(d(i, k) - 1, 0)``.
    """

    name = "relaysgd"
    _assigns_new_tensors = True
    FILLS = ("initial", "own")

    @renamed_keyword("tree", "topology")
    def __init__(self, comm, problem, topology, *, lr, fill: str = "initial", x0=None):
        if fill not in self.FILLS:
            raise ValueError(
                f"fill must be 'initial' (missing contributions replaced by the shared initial "
                f"model, as in the paper's code) or 'own' (by the node's own model, as in the "
                f"README's academic version), got {fill!r}."
            )
        self.fill = fill
        self._tree_info = {**_tree_params(topology), "fill": fill}
        super().__init__(comm, problem, x0=x0, lr=lr)
        self.relay = RelaySum(comm, topology)
        self.x_ref = None
        if fill == "initial":
            with comm.untracked():  # set-up, not the algorithm's traffic
                self.x_ref = comm.broadcast(self.x, 0)

    def _params(self) -> dict:
        return {**super()._params(), **self._tree_info}

    def _step(self) -> None:
        half = torch.add(self.x, self.grad(self.x), alpha=-self.lr())
        self.x = self.relay.mix(half, self.x_ref if self.fill == "initial" else half)


class RelaySGDGrad(_Relaying):
    r"""RelaySGD/Grad: relaying updates ``u = -lr * grad(x)`` on a spanning tree.

        x_i <- x_i + S_i / n,      S_i = u_i + (relayed updates of the others)

    i.e. ``x_i^{t+1} = x_i^t + (1/n) sum_k u_k^{t - tau_ik}`` once counts are full; updates
    still in flight count as zero. Models are never pulled together, so differences caused
    by in-flight updates persist (a heterogeneity-dependent plateau).
    """

    name = "relaysgd_grad"
    _assigns_new_tensors = True

    @renamed_keyword("tree", "topology")
    def __init__(self, comm, problem, topology, *, lr, x0=None):
        self._tree_info = _tree_params(topology)
        super().__init__(comm, problem, x0=x0, lr=lr)
        self.relay = RelaySum(comm, topology)

    def _params(self) -> dict:
        return {**super()._params(), **self._tree_info}

    def _step(self) -> None:
        update = torch.mul(self.grad(self.x), -self.lr())
        self.x = self.x + self.relay.mix(update)



@renamed_keyword("tree", "topology")
def lr_correction(topology) -> float:
    r"""The factor by which to scale a centralised learning rate for RelaySGD on the spanning
    tree ``topology`` (or a TreePair).

    Delayed uniform averaging damps a step. Let every node take one unit step from 0 and then
    only relay-average (``fill="initial"`` with ``x^0 = 0``): the nodes settle at a common
    value ``c < 1`` instead of 1, and the factor is ``1 / c`` (:func:`impulse_response`
    runs that experiment). Summing the update rule over nodes shows that
    ``sum_i x_i^t + (1/n) sum_{i,k} (the last tau_ik values of x_k)`` never changes, which gives
    the exact value computed here:

        1 / c = 1 + (1/n^2) sum_{i,k} tau_ik,     tau_ik = max(d(i, k) - 1, 0),

    one plus the mean delay (e.g. 1.8 on a chain of 5, 5.375 on a chain of 16; the paper's
    rough rule is ``max tau / 2``). For a TreePair, whose two halves are damped separately, the
    factor of the whole vector is the harmonic mean of the two trees' factors.
    """
    parts = tree_parts(topology)
    factors = [1.0 + _sum_of_delays(part) / part.n ** 2 for part in parts]
    return len(factors) / sum(1.0 / f for f in factors)


@renamed_keyword("tree", "topology")
def impulse_response(topology, steps: int) -> np.ndarray:
    """Mean over nodes of the unit-impulse experiment of :func:`lr_correction` after each of
    ``steps`` relay steps (one entry per step); ``1 / response[-1]`` tends to the factor."""
    from declearn.comm.sim import SimComm

    parts = tree_parts(topology)
    n = parts[0].n
    relay = RelaySum(SimComm(n), topology)
    width = 2 if relay.is_pair else 1
    zeros = torch.zeros(n, width, dtype=torch.float64)
    x = torch.ones(n, width, dtype=torch.float64)  # the unit step, taken from x^0 = 0
    out = np.empty(int(steps))
    for t in range(int(steps)):
        x = relay.mix(x, zeros)
        out[t] = float(x.mean())
    return out


def _sum_of_delays(topo) -> float:
    """``sum_{i,k} max(d(i, k) - 1, 0) = sum_{i,k} d(i, k) - n (n - 1)`` on a tree, where a
    link splitting the tree into parts of s and n - s nodes lies on 2 s (n - s) paths."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order

    n = topo.n
    A = csr_matrix((np.ones(topo.nnz), (topo.rows, topo.indices)), shape=(n, n))
    order, pred = breadth_first_order(A, 0, directed=False, return_predecessors=True)
    size = np.ones(n, dtype=np.int64)
    for v in order[:0:-1]:  # leaves first: subtree sizes
        size[pred[v]] += size[v]
    below = size[order[1:]]
    return float(2 * np.sum(below * (n - below)) - n * (n - 1))
