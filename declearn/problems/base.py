r"""Problems: ``f(x) = (1/n) sum_i f_i(x)``, where node i can only evaluate its own ``f_i``.

A :class:`Problem` is a *global, deterministic* description: all its data comes from ``seed``,
so every MPI rank builds the same object without communicating. ``problem.on(comm)`` binds it
to the nodes a communicator holds and returns an :class:`Oracle`:

* under ``SimComm(n)`` the oracle serves all n nodes at once: ``oracle.grad(x)`` takes the
  node-local ``x`` of shape ``(n, *shape)`` and returns ``(n, *shape)``, vectorized;
* under ``MPIComm`` it serves the rank's own node: ``x`` has shape ``shape``.

Subclasses implement the oracles *batched over local nodes*: ``_loss(x, nodes)`` and
``_grad(x, nodes)`` receive ``x`` of shape ``(L, *shape)`` and the ``L`` node indices, so the
same code serves both backends (L = n in the simulator, L = 1 on a rank).

Stochastic gradients (``sigma > 0``): ``grad(x) = grad f_i(x_i) + sigma / sqrt(d) * xi_i`` with
``xi_i`` standard normal, so ``E||noise||^2 = sigma^2``. The noise of *all* n nodes for the
c-th call is drawn on the CPU from a generator seeded by ``(seed, c)`` and then sliced to the
local nodes, so a run under SimComm and a run under MPIComm see exactly the same noise.

Any function ``grad(x)`` written for node-local tensors can stand in for a problem:
``as_problem(grad)`` wraps it (no loss, no optimum: only consensus and gradient metrics).
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable

import torch

from declearn.topology.base import check_n

__all__ = ["Problem", "Oracle", "FunctionProblem", "as_problem"]


class Problem(abc.ABC):
    """``f(x) = (1/n) sum_i f_i(x)`` with ``x`` of shape ``shape``; see the module docstring.

    Attributes a subclass sets: ``x_star`` (the minimiser, a float64 tensor of ``shape``, or
    None if unknown), ``f_star`` (``f(x_star)``, or None), and where known ``smoothness``
    (an ``L`` such that every ``f_i`` is L-smooth: step sizes are quoted as ``c / L``) and
    ``strong_convexity`` (a ``mu`` such that ``f`` is mu-strongly convex; None if not).

    Helpers for subclasses: :meth:`_rows` picks the local nodes' rows of per-node data without
    copying in the common cases, and :meth:`_data_like` gives the problem's data in the dtype
    and on the device of ``x`` (converted once, then cached).
    """

    name = "problem"
    x_star: torch.Tensor | None = None
    f_star: float | None = None
    smoothness: float | None = None
    strong_convexity: float | None = None

    def __init__(self, n: int, shape, *, sigma: float = 0.0, seed: int = 0):
        self.n = check_n(n)
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        sigma = float(sigma)
        if not sigma >= 0 or math.isinf(sigma):
            raise ValueError(f"sigma (gradient noise) must be a finite number >= 0, got {sigma}.")
        self.sigma = sigma
        self.seed = int(seed)

    @property
    def dim(self) -> int:
        """Number of scalars in x."""
        return math.prod(self.shape)

    # --------------------------------------------------------- to implement (batched oracles)
    @abc.abstractmethod
    def _loss(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``f_i(x[l])`` for ``i = nodes[l]``: x of shape ``(L, *shape)`` -> ``(L,)``."""

    @abc.abstractmethod
    def _grad(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """``grad f_i(x[l])`` for ``i = nodes[l]``, exact: ``(L, *shape)`` -> ``(L, *shape)``."""

    def initial_point(self) -> torch.Tensor:
        """The starting point every node shares (zeros unless a problem says otherwise)."""
        return torch.zeros(self.shape, dtype=torch.float64)

    def _data(self) -> dict[str, torch.Tensor]:
        """The tensors the oracles read, float64 on the CPU (subclasses override)."""
        return {}

    # --------------------------------------------------------- helpers for the oracles
    def _node_index(self, device=None) -> torch.Tensor:
        """``arange(n)`` on ``device``, one cached tensor per device (so that :meth:`_rows`
        recognises "all nodes" by identity, without a device sync)."""
        device = torch.device("cpu") if device is None else torch.device(device)
        cache = self.__dict__.setdefault("_node_index_cache", {})
        if device not in cache:
            cache[device] = torch.arange(self.n, device=device)
        return cache[device]

    def _rows(self, t: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """The rows of per-node data ``t`` (leading dim n) for ``nodes``: ``t`` itself when
        ``nodes`` is the cached index of all nodes (the simulator's hot path), else a gather.
        Data shared by every node is stored with leading dim 1 and is returned as is."""
        if t.shape[0] == 1 and self.n != 1:
            return t
        index = self.__dict__.get("_node_index_cache", {}).get(nodes.device)
        if nodes is index:
            return t
        return t.index_select(0, nodes.to(t.device))

    def _data_like(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`_data` with floating tensors in ``x``'s dtype, all on ``x``'s device; the
        conversion happens once per (dtype, device) and is cached."""
        key = (x.dtype, x.device)
        cache = self.__dict__.setdefault("_data_cache", {})
        if key not in cache:
            cache[key] = {
                k: v.to(device=x.device, dtype=x.dtype if v.is_floating_point() else v.dtype)
                for k, v in self._data().items()
            }
        return cache[key]

    # --------------------------------------------------------- global views (one process)
    @property
    def all_nodes(self) -> torch.Tensor:
        return self._node_index()

    def loss(self, x: torch.Tensor) -> float:
        """``f(x)`` at one point ``x`` of shape ``shape`` (every f_i evaluated here)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(self.shape)
        return float(self._loss(x.expand((self.n,) + self.shape), self.all_nodes).mean())

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """``grad f(x) = (1/n) sum_i grad f_i(x)`` at one point ``x`` (exact)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(self.shape)
        return self._grad(x.expand((self.n,) + self.shape), self.all_nodes).mean(0)

    @property
    def heterogeneity(self) -> float:
        """``b^2 = (1/n) sum_i ||grad f_i(x*)||^2``: how much the nodes disagree at the optimum
        (0 when every node's data has the same minimiser). None if ``x_star`` is unknown."""
        if self.x_star is None:
            return None
        g = self._grad(self.x_star.expand((self.n,) + self.shape), self.all_nodes)
        return float(g.reshape(self.n, -1).pow(2).sum(1).mean())

    def on(self, comm) -> Oracle:
        """The node-local oracle for the nodes ``comm`` holds."""
        if comm.size != self.n:
            raise ValueError(
                f"{self.name} is defined over n={self.n} nodes but the communicator has "
                f"{comm.size}; build the problem with n={comm.size}."
            )
        return Oracle(self, comm)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} n={self.n} shape={self.shape} sigma={self.sigma:g}>"


class Oracle:
    """A problem bound to the nodes of one communicator (see the module docstring).

    ``grad(x)``, ``loss(x)`` take and return node-local tensors; ``calls`` counts the noisy
    gradient evaluations so far (the noise of call c is seeded by ``(seed, c)``).
    """

    def __init__(self, problem: Problem, comm):
        self.problem = problem
        self.comm = comm
        self.simulated = bool(comm.node_dims)  # every node in this process
        self.device = comm.device
        self.rank = None  # the node this oracle serves under MPIComm
        if self.simulated:
            self.nodes = problem._node_index(self.device)
        else:
            self.rank = int(comm.rank)
            self.nodes = torch.tensor([self.rank], device=self.device)
        self.calls = 0

    # node-local <-> batched (L, *shape)
    def _batched(self, x: torch.Tensor, what: str = "x") -> torch.Tensor:
        shape = self.problem.shape
        want = ((self.problem.n,) + shape) if self.simulated else shape
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"{what} must be node-local of shape {want} for {self.problem.name} under this "
                f"communicator, got {got}."
            )
        return x if self.simulated else x.unsqueeze(0)

    def _unbatched(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.simulated else y.squeeze(0)

    def _nodes_on(self, x: torch.Tensor) -> torch.Tensor:
        if x.device == self.nodes.device:
            return self.nodes
        if self.simulated:
            return self.problem._node_index(x.device)
        return self.nodes.to(x.device)

    def x0(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Node-local copies of the problem's initial point (a new tensor)."""
        x = self.problem.initial_point().to(device=self.device, dtype=dtype)
        if self.simulated:
            return x.expand((self.problem.n,) + x.shape).clone()
        return x.clone()

    def full_grad(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``grad f_i(x_i)``, node-local."""
        return self._unbatched(self.problem._grad(self._batched(x), self._nodes_on(x)))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``grad f_i(x_i)`` plus the seeded noise of this call when ``sigma > 0``."""
        g = self.full_grad(x)
        if self.problem.sigma > 0:
            g = g + self.noise(x.dtype)
        return g

    def noise(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The node-local noise of the next call (advances the call counter)."""
        p = self.problem
        gen = torch.Generator().manual_seed(_mix_seed(p.seed, self.calls))
        self.calls += 1
        xi = torch.randn((p.n,) + p.shape, generator=gen, dtype=torch.float64)
        xi = xi if self.simulated else xi[self.rank]
        return (xi * (p.sigma / math.sqrt(p.dim))).to(device=self.device, dtype=dtype)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``f_i(x_i)``, node-local: shape ``(n,)`` under SimComm, a scalar tensor on a rank."""
        return self._unbatched(self.problem._loss(self._batched(x), self._nodes_on(x)))


class FunctionProblem:
    """A user's node-local gradient function ``grad(x)`` standing in for a problem.

    It knows no loss and no optimum, so histories record the consensus error and the gradient
    norm only, and the algorithm needs an explicit ``x0``. The function must return a tensor
    of the same shape as its input.
    """

    name = "function"
    x_star = None
    f_star = None
    sigma = 0.0

    def __init__(self, grad: Callable):
        if not callable(grad):
            raise TypeError(f"Expected a gradient function grad(x), got {type(grad).__name__}.")
        self.fn = grad

    def on(self, comm) -> FunctionOracle:
        return FunctionOracle(self, comm)

    def __repr__(self) -> str:
        return f"<FunctionProblem {getattr(self.fn, '__name__', 'grad')}>"


class FunctionOracle:
    """Calls the user's function on node-local tensors and checks what it returns."""

    def __init__(self, problem: FunctionProblem, comm):
        self.problem = problem
        self.comm = comm
        self.calls = 0

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        g = self.problem.fn(x)
        self.calls += 1
        if not isinstance(g, torch.Tensor) or g.shape != x.shape:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(
                f"The gradient function {getattr(self.problem.fn, '__name__', 'grad')} returned "
                f"{got} for x of shape {tuple(x.shape)}; it must return a tensor of the same "
                "shape as x (node-local: one gradient per node)."
            )
        return g

    full_grad = grad

    def loss(self, x):
        raise NotImplementedError("A gradient function has no loss; pass a Problem for losses.")

    def x0(self, dtype=None):
        raise ValueError(
            "A gradient function does not say where to start: pass x0 (node-local) to the "
            "algorithm."
        )


def as_problem(problem) -> Problem | FunctionProblem:
    """A Problem as is; a callable ``grad(x)`` wrapped in a :class:`FunctionProblem`."""
    if isinstance(problem, (Problem, FunctionProblem)):
        return problem
    if callable(problem):
        return FunctionProblem(problem)
    raise TypeError(
        f"Expected a declearn Problem or a gradient function grad(x), got "
        f"{type(problem).__name__}."
    )


# ------------------------------------------------------------------ helpers for subclasses
def matvec(M: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M[l] @ x[l]`` for every local node l: ``M`` is ``(L, p, q)`` (per node) or ``(1, p, q)``
    (one matrix every node shares, applied as a single matrix product), ``x`` is ``(L, q)``."""
    if M.shape[0] == 1 and x.shape[0] != 1:
        return x @ M[0].mT
    return torch.matmul(M, x.unsqueeze(-1)).squeeze(-1)


def check_count(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a TypeError / ValueError saying what is wanted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}.")
    return int(value)


def check_real(value, what: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> when ``strict``), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r}.")
    value = float(value)
    ok = value > minimum if strict else value >= minimum
    if not ok or not math.isfinite(value):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{what} must be a finite number {bound}, got {value!r}.")
    return value


def check_choice(value, what: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def _mix_seed(seed: int, counter: int) -> int:
    """One 63-bit seed from (seed, counter), the same on every rank (splitmix64 steps)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(counter) + 0x632BE59BD9B4E019) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & ((1 << 63) - 1)
