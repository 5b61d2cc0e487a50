r"""Gossip with compressed messages: naive compressed gossip, CHOCO-Gossip and CHOCO-SGD.

Koloskova, Stich & Jaggi, "Decentralized Stochastic Optimization and Gossip Algorithms with
Compressed Communication", ICML 2019 (arXiv 1902.00340). Notation: ``W`` doubly stochastic
(row i = receiver), ``Q`` a compressor of quality ``omega`` (``E||Q(x) - x||^2 <= (1 - omega)
||x||^2``, :mod:`declearn.compress`), ``delta = 1 - rho`` the spectral gap (``rho =
||W - 11^T/n||_2``, for symmetric W the second largest ``|lambda_i(W)|``), ``beta =
||I - W||_2``, ``gamma`` the consensus step.

* :class:`CompressedGossip`, the naive schemes the paper starts from (its (Q1-G) and (Q2-G),
  [recall]): ``variant="q2"``: ``x_i <- x_i + gamma sum_j W_ij (Q(x_j) - Q(x_i))`` keeps the
  average but stalls at an error set by the compression; ``variant="q1"``:
  ``x_i <- x_i + gamma sum_j W_ij (Q(x_j) - x_i)`` does not even keep the average (it drifts).
* :class:`CHOCOGossip` (the paper's Algorithm 1), with ``x_hat_i^0 = 0``: every node sends
  ``q_i = Q(x_i - x_hat_i)``; every node adds it to its copy, ``x_hat_j <- x_hat_j + q_j``;
  then ``x_i <- x_i + gamma sum_j W_ij (x_hat_j - x_hat_i)``. The copies ``x_hat`` (error
  feedback: what was not sent is sent later) make the compression error vanish with the
  consensus error, so the nodes reach the *exact* average linearly, for any ``omega > 0``.
* :class:`CHOCOSGD` (Algorithm 2 [recall]): ``x_i^{1/2} = x_i - lr g_i(x_i)`` first, then the
  same exchange with ``q_i = Q(x_i^{1/2} - x_hat_i)`` and ``x_i <- x_i^{1/2} + gamma sum_j W_ij
  (x_hat_j - x_hat_i)``. The authors' code (epfml/ChocoSGD, ``convex_code/logistic.py``) and
  their restatement of CHOCO-SGD in Koloskova, Lin, Stich & Jaggi (ICLR 2020, Algorithm 1)
  order it the other way: gossip with the copies of the previous step, then send
  ``Q(x_i - x_hat_i)``, then the gradient step (so that communication and gradient can overlap);
  with gradients the copies then lag the gradient step by one iteration. For CHOCO-Gossip the
  two orders are the same recursion, shifted by one step.

Every node keeps ``s_i = sum_j W_ij x_hat_j`` (self included) as a running sum, ``s_i <- s_i +
sum_j W_ij q_j``, so it never stores its neighbors' copies one by one; rows of W summing to 1,
``sum_j W_ij (x_hat_j - x_hat_i) = s_i - x_hat_i``. (It is stored as ``r_i = s_i - x_hat_i``,
updated by ``r_i <- r_i + sum_j W_ij q_j - q_i``: one pass fewer per step.) The messages
travel as the compressed bytes (:class:`CompressedExchange`: one ``neighbor_allgather`` of the
uint8 messages, decoded by each receiver), and ``comm.traffic`` counts those bytes. The
random compressors draw from ``(seed, node, iteration)``, so SimComm and MPI give the same
iterates.

*The consensus step.* The authors state the step and the rate of CHOCO-Gossip in their ICLR 2020
follow-up (Koloskova, Lin, Stich & Jaggi, "Decentralized Deep Learning with Arbitrary
Communication Compression", Theorem 4.1; their notation: ``rho`` the spectral gap, ``delta`` the
compression quality; quoted in ASCII): "the consensus stepsize from (Koloskova et al., 2019),
gamma := rho^2 delta / (16 rho + rho^2 + 4 beta^2 + 2 rho beta^2 - 8 rho delta) with beta = ||I -
W||_2 in [0, 2]" and "c := rho^2 delta / 82 denotes the convergence rate of the underlying
consensus averaging scheme". In this module's notation that is ``gamma* = delta^2 omega / (16
delta + delta^2 + 4 beta^2 + 2 delta beta^2 - 8 delta omega)`` (:func:`choco_gamma`) and the rate
``1 - delta^2 omega / 82`` per step for the error ``e_t = sum_i (||x_i - x_bar||^2 + ||x_i -
x_hat_i||^2)`` (the ICML paper's own text, and its exact ``e_t``, could not be read here). Our
check, not the paper's: for small gaps this step cannot give that rate. With the identity
compressor (omega = 1) CHOCO-Gossip is exact gossip with step ``gamma*``, whose slowest mode
shrinks the squared error by ``(1 - gamma* delta)^2`` per step: 0.9999975 against ``1 - c =
0.9999947`` on a ring of 25 (weights 1/3). So read ``gamma*`` as the step the paper's theorem
names, not as a promise of that rate. It is tiny (3e-6 for top-1% on a ring of 16), far below the
steps that work in practice: the paper's experiments tune gamma (the authors' scripts use 0.01 to
0.34 on a ring of 9, see below). So ``gamma=None`` takes ``gamma*``; a larger gamma gets a
:class:`ConsensusStepWarning` naming ``gamma*``; and a gamma ``>= 2 / beta``
(:func:`gossip_gamma_limit`, symmetric W) is refused, since with exact messages (the identity is a
compressor of every quality omega) the update is ``x <- (I + gamma (W - I)) x``, which diverges
there.

*The paper's stated results* (quoted from its abstract):

    "CHOCO-SGD, that converges at rate O(1/(nT) + 1/(T delta^2 omega)^2) for strongly
    convex objectives, where T denotes the number of iterations and delta the eigengap of
    the connectivity matrix. Despite compression quality and network connectivity affecting
    the higher order terms, the first term in the rate, O(1/(nT)), is the same as for the
    centralized baseline with exact communication."

    "CHOCO-GOSSIP, for the average consensus problem that converges in time
    O(1/(delta^2 omega) log(1/epsilon)) for accuracy epsilon > 0. This is (up to our
    knowledge) the first gossip algorithm that supports arbitrary compressed messages for
    omega > 0 and still exhibits linear convergence."

Its theorem for CHOCO-SGD [recall] takes the same ``gamma*``, steps ``lr_t = 4 / (mu (a + t))``
with ``a >= max(410 / (delta^2 omega), 16 kappa)``, and bounds ``E f(x_avg^T) - f*`` by
``O(sigma_bar^2 / (mu n T) + kappa G^2 / (mu omega^2 delta^4 T^2) + G^2 / (mu omega^3 delta^6
T^3))`` for mu-strongly convex, L-smooth f_i (``kappa = L / mu``, gradient variance
``sigma_bar^2``, second moment bound ``G^2``).

*The paper's reported experimental result* (abstract): "both of our algorithms do outperform
the respective state-of-the-art baselines and CHOCO-SGD can reduce communication by at least
two orders of magnitudes." Its consensus experiments [recall, not in the authors' repository]
run a ring of n = 25 nodes with d = 2000 and qsgd, rand-1% and top-1% messages, where (Q1-G) and
(Q2-G) stall while CHOCO-Gossip converges linearly, also per bit sent. Its CHOCO-SGD runs (the
authors' ``convex_code/experiment_epsilon_final.py``, read): logistic regression on epsilon
(d = 2000), a ring of 9 nodes (weights 1/3), top-20 (1%) with gamma = 0.04, rand-20 (unscaled)
with gamma = 0.01, QSGD with 16 levels rescaled by ``1 / tau`` (as :class:`~declearn.compress.QSGD`
does) with gamma = 0.34. The follow-up's Sign is ``(||x||_1 / d) sign(x)`` per layer, as
:class:`~declearn.compress.Sign` (over the whole vector).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from declearn.algorithms.base import Algorithm, check_step_size
from declearn.algorithms.mixing import GossipMethod, check_mixing
from declearn.compress.base import Compressor
from declearn.errors import TopologyError
from declearn.topology import spectral
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["CHOCOGossip", "CHOCOSGD", "CompressedGossip", "CompressedExchange",
           "ConsensusStepWarning", "choco_gamma", "gossip_gamma_limit", "NAIVE_VARIANTS"]

#: The naive compressed gossip updates (the paper's (Q1-G) and (Q2-G)).
NAIVE_VARIANTS = ("q1", "q2")


class ConsensusStepWarning(UserWarning):
    """A consensus step above the one the paper's theorem guarantees (see the module
    docstring); silence with ``warnings.simplefilter("ignore", ConsensusStepWarning)``."""


# ---------------------------------------------------------------------- the step size
def _beta(topology: Topology) -> float:
    """``||I - W||_2`` (kept on the topology)."""
    def build() -> float:
        n = topology.n
        if topology.shifts is not None:  # circulant, so normal: singular values |1 - lambda|
            return float(np.abs(1.0 - spectral.circulant_spectrum(topology)).max())
        if n <= spectral.DENSE_SYMMETRIC_MAX:
            return float(np.linalg.norm(np.eye(n) - topology.W, 2))
        import scipy.sparse
        from scipy.sparse.linalg import svds

        op = scipy.sparse.identity(n, format="csr") - spectral.csr(topology)
        return float(svds(op, k=1, return_singular_vectors=False)[0])
    return topology.memo("choco.beta", build)


def choco_gamma(topology: Topology, omega: float) -> float:
    r"""The consensus step of the paper's Theorem 2, as the authors restate it (ICLR 2020, see
    the module docstring), for ``topology`` and a compressor of quality ``omega`` in (0, 1]:
    ``delta^2 omega / (16 delta + delta^2 + 4 beta^2 + 2 delta beta^2 - 8 delta omega)``."""
    if not isinstance(topology, Topology):
        raise TopologyError(f"choco_gamma needs a static Topology, got {type(topology).__name__}.")
    if not 0 < omega <= 1:
        raise ValueError(f"omega must be in (0, 1] (a contractive compressor), got {omega!r}.")
    delta, beta = topology.spectral_gap, _beta(topology)
    if delta <= 1e-12:
        raise TopologyError(f"{topology.name} has spectral gap {delta:.3g}: the graph is not "
                            "connected (or W is periodic), so gossip cannot reach the average.")
    return delta ** 2 * omega / (16 * delta + delta ** 2 + 4 * beta ** 2
                                 + 2 * delta * beta ** 2 - 8 * delta * omega)


def gossip_gamma_limit(topology: Topology) -> float:
    """``2 / ||I - W||_2``: for symmetric W, exact gossip ``x <- x + gamma (W - I) x``
    converges for ``0 < gamma < 2 / beta`` and diverges beyond."""
    beta = _beta(topology)
    return math.inf if beta == 0 else 2.0 / beta


def _consensus_step(topology: Topology, compressor: Compressor, d: int, gamma, who: str,
                    *, naive: bool = False) -> float:
    """The checked consensus step (see the module docstring, *The consensus step*); for
    naive gossip (no theorem) only the divergence limit is checked."""
    omega = compressor.omega(d)
    gamma_star = None if naive else choco_gamma(topology, omega)
    if gamma is None and gamma_star is not None:
        return gamma_star
    gamma = check_step_size(gamma, "gamma")
    limit = gossip_gamma_limit(topology)
    if topology.is_symmetric and gamma >= limit:
        use = ("a smaller one" if gamma_star is None else
               f"gamma={gamma_star:.3g} (the paper's Theorem 2 for omega={omega:.3g}: linear "
               "convergence guaranteed) or tune a value between it and the limit")
        raise ValueError(
            f"{who}: gamma={gamma:g} diverges on {topology.name}. With exact messages (the "
            f"identity is a compressor of every quality omega) the update is x <- x + gamma "
            f"(W - I) x, which converges only for gamma < 2 / ||I - W||_2 = {limit:.4g}. Use "
            f"{use}."
        )
    if gamma_star is not None and gamma > gamma_star * (1 + 1e-12):
        warnings.warn(
            f"{who}: gamma={gamma:g} is above gamma*={gamma_star:.3g}, the consensus step of "
            f"the paper's Theorem 2 for {topology.name} (delta={topology.spectral_gap:.3g}, "
            f"beta={_beta(topology):.3g}) and {compressor!r} (omega={omega:.3g}). gamma* "
            f"guarantees linear convergence but is only sufficient, and small; larger steps "
            f"are usually faster (the paper tunes gamma), without a guarantee: if the error "
            f"grows, lower gamma toward {gamma_star:.3g}.", ConsensusStepWarning, stacklevel=4)
    return gamma


# ---------------------------------------------------------------------- the exchange
class CompressedExchange:
    """Send ``Q(v_i)`` to the out-neighbors as its compressed bytes and return
    ``(q, lq)``: ``q_i = Q(v_i)`` and ``lq_i = sum_j W_ij q_j - q_i = ((W - I) q)_i``.

    One ``neighbor_allgather`` of the uint8 messages ``(*node_dims, nbytes)``: node i gets its
    in-neighbors' messages in slots ``(D_in, nbytes)``, ascending, and decodes them weighted
    by ``W[i, j]`` (``Compressor.accumulate``; padded slots weigh 0). ``step`` keys the
    random compressors' draws (with the node index and the compressor's seed).
    """

    def __init__(self, comm, topology: Topology, compressor: Compressor, shape, dtype):
        self.comm, self.topology, self.compressor = comm, topology, compressor
        self.shape, self.dtype = tuple(shape), dtype
        lead = comm.node_dims
        self.flat_shape = lead + (math.prod(self.shape[len(lead):]),)
        self.d = self.flat_shape[-1]
        table, self_w = topology.memo(("choco.slot_weights", str(comm.device), dtype),
                                      lambda: _slot_weights(topology, comm.device, dtype))
        if comm.is_simulator:
            self.slot_w, self.diag_minus_one = table, self_w.unsqueeze(-1) - 1
        else:
            self.slot_w, self.diag_minus_one = table[comm.rank], self_w[comm.rank] - 1
        self.nodes = comm.rank
        self.nbytes = compressor.bytes(self.d, dtype)
        # A compressor that returns the wrong shapes is caught here, before any step.
        probe = torch.zeros(self.flat_shape, dtype=dtype, device=comm.device)
        compressor.decompress(compressor.compress(probe, nodes=self.nodes, step=0),
                              self.flat_shape, dtype)

    def __call__(self, v: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        comp, flat = self.compressor, v.reshape(self.flat_shape)
        message = comp.compress(flat, nodes=self.nodes, step=step)
        q = comp.decompress(message, self.flat_shape, self.dtype)
        got = self.comm.neighbor_allgather(message, self.topology)
        lq = comp.accumulate(got, self.slot_w, self.d, self.dtype)  # a new tensor
        lq = lq.addcmul_(q, self.diag_minus_one)  # + (W_ii - 1) q_i
        return q.reshape(self.shape), lq.reshape(self.shape)


def _slot_weights(topology: Topology, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(table, self_w)``: ``table[i, s] = W[i, j]`` for the s-th in-neighbor j != i of i
    (ascending, zero past i's in-degree; the slots of ``neighbor_allgather``), ``self_w[i] =
    W[i, i]``."""
    n, rows, cols, w = topology.n, topology.rows, topology.indices, topology.data
    off = rows != cols
    r, c = rows[off], w[off]
    width = int(topology.in_degrees.max()) if n > 1 else 0
    first = np.searchsorted(r, np.arange(n))  # CSR: rows ascending, columns sorted per row
    table = np.zeros((n, width))
    table[r, np.arange(r.size) - first[r]] = c
    self_w = np.zeros(n)
    self_w[rows[~off]] = w[~off]
    return (torch.tensor(table, dtype=dtype, device=device),
            torch.tensor(self_w, dtype=dtype, device=device))


# ---------------------------------------------------------------------- shared set-up
def _static_topology(topology, who: str) -> Topology:
    if isinstance(topology, DynamicTopology):
        raise TopologyError(
            f"{who} keeps s_i = sum_j W_ij x_hat_j as a running sum, which needs the same W "
            f"at every step; {topology.name} changes with k. Pass a static topology "
            "(ring(n), exponential(n), ...)."
        )
    if not isinstance(topology, Topology):
        raise TopologyError(f"Expected a declearn Topology, got {type(topology).__name__}. "
                            "Build one with declearn.topology (e.g. ring(n)).")
    return topology


def _compressor(compressor, who: str) -> Compressor:
    if not isinstance(compressor, Compressor):
        raise TypeError(
            f"{who}: compressor must be a declearn.compress.Compressor (TopK(ratio=0.01), "
            f"RandK(k), Sign(), QSGD(s), Identity(), or a subclass), got "
            f"{type(compressor).__name__}."
        )
    return compressor


class _CompressedState(Algorithm):
    """The copies ``x_hat``, the running sums and the exchange, for the CHOCO methods (set up
    by :meth:`_setup_choco` once ``self.x`` exists). The running sum is kept as
    ``r = s - x_hat = sum_j W_ij (x_hat_j - x_hat_i)``, the direction of the consensus step,
    updated by ``r <- r + (W - I) q`` (one pass fewer per step than ``s`` and ``s - x_hat``);
    :attr:`s` gives ``s = r + x_hat``."""

    compressor: Compressor
    gamma: float

    def _setup_choco(self, topology: Topology, gamma, *, naive: bool = False) -> None:
        x = self.x
        if not x.is_floating_point():
            raise TypeError(f"{self.name} averages values, so x must be floating point, got "
                            f"{x.dtype}; convert x0 with .double().")
        check_mixing(self.comm, topology, "doubly", self.name)
        self.exchange = CompressedExchange(self.comm, topology, self.compressor, x.shape,
                                           x.dtype)
        d = self.exchange.d
        if not naive and not self.compressor.omega(d) > 0:
            better = self.compressor.contractive()
            raise ValueError(
                f"{self.name} needs a contractive compressor (E||Q(x) - x||^2 <= (1 - omega) "
                f"||x||^2 with omega > 0); {self.compressor!r} has omega = "
                f"{self.compressor.omega(d):.3g} for d = {d}. Use its rescaled version "
                f"{better!r} (omega = {better.omega(d):.3g}), the paper's choice."
            )
        self.gamma = _consensus_step(topology, self.compressor, d, gamma, self.name,
                                     naive=naive)
        self.history.params.update(gamma=self.gamma, omega=self.compressor.omega(d),
                                   message_bytes=self.exchange.nbytes)
        if not naive:
            self.x_hat = torch.zeros_like(x)
            self.r = torch.zeros_like(x)

    @property
    def s(self) -> torch.Tensor:
        """``s_i = sum_j W_ij x_hat_j``, the weighted sum of the copies node i has heard."""
        return self.r + self.x_hat

    def _choco_mix(self, base: torch.Tensor, step: int) -> torch.Tensor:
        """One CHOCO exchange from ``base`` (x, or x^{1/2} for CHOCO-SGD): the new x,
        ``base + gamma (s - x_hat)`` with the updated s and x_hat."""
        q, lq = self.exchange(base - self.x_hat, step)
        self.x_hat = self.x_hat + q
        self.r = self.r + lq
        return torch.add(base, self.r, alpha=self.gamma)


# ---------------------------------------------------------------------- the methods
class CHOCOGossip(_CompressedState):
    """CHOCO-Gossip (Algorithm 1): average consensus with compressed messages and error
    feedback, linear convergence to the exact average (see the module docstring).

    Parameters: ``topology`` static, doubly stochastic; ``x0`` node-local starting values;
    ``compressor`` a contractive :class:`~declearn.compress.Compressor`; ``gamma`` the
    consensus step (default: the paper's guaranteed ``gamma*``, :func:`choco_gamma`).
    """

    name = "choco_gossip"
    _assigns_new_tensors = True

    def __init__(self, comm, topology, x0, *, compressor: Compressor, gamma: float | None = None):
        self.topology = _static_topology(topology, self.name)
        self.compressor = _compressor(compressor, self.name)
        super().__init__(comm, None, x0=x0)
        self._setup_choco(self.topology, gamma)

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name,
                "compressor": repr(self.compressor)}

    def _step(self) -> None:
        self.x = self._choco_mix(self.x, self.k)


class CHOCOSGD(_CompressedState, GossipMethod):
    """CHOCO-SGD (Algorithm 2): ``x^{1/2} = x - lr g(x)``, then the CHOCO exchange of
    ``Q(x^{1/2} - x_hat)`` and ``x <- x^{1/2} + gamma (s - x_hat)`` (see the module
    docstring). One gradient and one compressed ``neighbor_allgather`` per iteration.
    """

    name = "choco_sgd"
    mixing = "doubly"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, compressor: Compressor,
                 gamma: float | None = None, x0=None):
        static = _static_topology(topology, self.name)
        self.compressor = _compressor(compressor, self.name)
        super().__init__(comm, problem, static, lr=lr, x0=x0)
        self._setup_choco(static, gamma)

    def _params(self) -> dict:
        return {**super()._params(), "compressor": repr(self.compressor)}

    def _step(self) -> None:
        half = torch.add(self.x, self.grad(self.x), alpha=-self.lr())
        self.x = self._choco_mix(half, self.k)


class CompressedGossip(_CompressedState):
    """Naive compressed gossip, without copies (the paper's baselines [recall]):

    * ``variant="q2"``: ``x_i <- x_i + gamma sum_j W_ij (Q(x_j) - Q(x_i))``; keeps the average
      (doubly stochastic W) but stalls away from consensus;
    * ``variant="q1"``: ``x_i <- x_i + gamma (sum_j W_ij Q(x_j) - x_i)``; the average drifts.

    ``gamma`` defaults to 1 (``q1`` is then ``x <- W Q(x)``); any compressor, biased or
    not, is allowed (that is the point: none of them makes it converge).
    """

    name = "compressed_gossip"
    _assigns_new_tensors = True

    def __init__(self, comm, topology, x0, *, compressor: Compressor, gamma: float = 1.0,
                 variant: str = "q2"):
        if variant not in NAIVE_VARIANTS:
            raise ValueError(f"variant must be one of {NAIVE_VARIANTS} (the paper's (Q1-G): "
                             f"x + gamma (W Q(x) - x); (Q2-G): x + gamma (W - I) Q(x)), got "
                             f"{variant!r}.")
        self.variant = variant
        self.name = f"compressed_gossip-{variant}"
        self.topology = _static_topology(topology, self.name)
        self.compressor = _compressor(compressor, self.name)
        super().__init__(comm, None, x0=x0)
        self._setup_choco(self.topology, gamma, naive=True)

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name,
                "compressor": repr(self.compressor), "variant": self.variant}

    def _step(self) -> None:
        q, lq = self.exchange(self.x, self.k)  # lq = W Q(x) - Q(x)
        if self.variant == "q1":  # W Q(x) - x
            lq = lq.add_(q).sub_(self.x)
        self.x = torch.add(self.x, lq, alpha=self.gamma)
