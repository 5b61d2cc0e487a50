r"""Any ``torch.optim`` optimizer, made decentralized.

    opt = Decentralized(torch.optim.Adam(model.parameters(), lr=1e-3), comm,
                        topology=exponential(comm.size))
    for xb, yb in batches:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()                      # Adam's local step, then the neighbor averaging

The wrapped optimizer makes the local update of node i, ``x_i <- x_i + Delta_i`` (its
momentum, Adam's moments, weight decay, parameter groups and learning-rate schedulers stay
local and work as usual: attach a scheduler to the *wrapped* optimizer). The wrapper adds the
communication on one flat buffer holding every parameter (:class:`~declearn.optim.flat.
FlatParameters`), so each exchange is one collective. With ``W(k) = topology.at(k)``:

* ``mode="atc"`` (adapt then combine): ``x_i <- sum_j W(k)[i, j] (x_j + Delta_j)``;
* ``mode="awc"`` (adapt while combining): ``x_i <- sum_j W(k)[i, j] x_j + Delta_i``, the
  averaging reads the parameters from before the local step (which does not wait for it);
* ``mode="tracking"``: gradient tracking (adapt then combine), the local step reading the
  tracker ``y_i`` instead of the gradient: ``y_i <- g_i`` at the first step, then
  ``y_i <- sum_j W(k - 1)[i, j] (y_j + g_j - g_j^prev)``, and ``x_i <- sum_j W(k)[i, j]
  (x_j + Delta_j(y_j))``; with plain SGD this is :class:`declearn.algorithms.GradientTracking`
  (``variant="atc"``), two exchanges per step;
* ``mode="allreduce"``: the parallel SGD baseline, gradients averaged before the local step
  (``g_i <- (1/n) sum_j g_j``), so every node takes the same step from the same parameters;
* ``rule=``: a synchronisation rule of :mod:`declearn.algorithms.local_sgd` (Local SGD,
  BMUF/SlowMo, EASGD, Overlap-Local-SGD, CoCoD-SGD) or of :mod:`declearn.optim.gossip`
  (gossip every ``tau`` steps, RelaySum over a tree), applied after the local step as the
  ``average()`` of the other optimizers of :mod:`declearn.optim` does.

``overlap=True`` hides communication behind computation, with the same numbers: with mode
allreduce, the allreduce of each bucket of about ``bucket_bytes`` of gradients starts as soon as
backward has produced it, while backward goes on (:mod:`declearn.optim.overlap`); with mode
awc, the average of the next step's parameters starts at the end of ``step()`` and runs during
the next forward and backward (:mod:`declearn.optim.background`; on MPI engines, in a thread on
a private channel). Parameters changed outside ``step()`` between two steps are not seen by
an average already in flight.

``quasi_global=True`` (with ``torch.optim.SGD`` and momentum, mode atc) replaces the local
momentum by the quasi-global momentum of Lin et al. (ICML 2021,
:mod:`declearn.optim.quasi_global`), which follows how the model moved, gossip included.

``tau`` (atc and awc) exchanges only at every ``tau``-th step (local steps in between).
Building the wrapper sets every node's parameters to node 0's (a broadcast, not counted as
traffic), so all nodes start from the same model.

Under MPIComm each rank wraps its own optimizer of its own model; every rank must hold the
same parameter shapes (checked at construction: the error names the parameter and the ranks).
Under SimComm(n) the model is n stacked models (:class:`~declearn.optim.StackedModel`) and
one optimizer updates them all, which equals n separate optimizers only for optimizers that
act element by element (:data:`ELEMENTWISE`: SGD, Adam, AdamW, ...); others (LBFGS, Adafactor)
are refused there.
"""

from __future__ import annotations

import copy

import torch

from declearn.algorithms.local_sgd import SyncRule
from declearn.algorithms.mixing import check_mixing, check_schedule
from declearn.optim.background import BackgroundAveraging
from declearn.optim.flat import FlatParameters
from declearn.optim.overlap import BUCKET_BYTES, GradientBuckets
from declearn.optim.quasi_global import QuasiGlobalMomentum
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["Decentralized", "MODES", "ELEMENTWISE"]

#: The communication patterns of :class:`Decentralized` (besides ``rule=``).
MODES = ("atc", "awc", "allreduce", "tracking")

#: torch optimizers whose update of each scalar depends only on that scalar's own history, so
#: that one optimizer over n stacked models is n independent optimizers.
ELEMENTWISE = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta",
               "RMSprop", "Rprop", "ASGD")

#: Marks a state written by :meth:`Decentralized.state_dict` (and its version).
FORMAT = "declearn.optim.Decentralized state 1"


class Decentralized:
    """``optimizer``'s local steps plus decentralized communication (module docstring).

    ``optimizer``: a ``torch.optim.Optimizer`` over the model's parameters (all of one dtype
    and device); ``comm``: MPIComm() or SimComm(n); ``topology``: a Topology or
    DynamicTopology with doubly stochastic weights (atc/awc); ``model``: optional, to check
    that the parameter groups cover every trainable parameter of the model.
    """

    def __init__(self, optimizer, comm, topology=None, *, mode: str = "atc", tau: int = 1,
                 rule: SyncRule | None = None, model: torch.nn.Module | None = None,
                 quasi_global: bool = False, overlap: bool = False,
                 bucket_bytes: int = BUCKET_BYTES):
        from declearn.comm.base import Communicator

        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"Decentralized wraps a torch.optim.Optimizer (e.g. torch.optim.Adam("
                f"model.parameters(), lr=1e-3)), got {type(optimizer).__name__}.")
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must be a declearn Communicator (MPIComm() on engines, "
                            f"SimComm(n) for stacked models), got {type(comm).__name__}.")
        self.optimizer, self.comm = optimizer, comm
        self.mode = self._check_mode(mode, rule, topology)
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
            raise ValueError(f"tau must be an integer >= 1 (steps per exchange), got {tau!r}.")
        self.tau, self.rule, self.topology = tau, rule, topology
        if comm.node_dims and type(optimizer).__name__ not in ELEMENTWISE:
            raise ValueError(
                f"Under SimComm one {type(optimizer).__name__} would update the n stacked "
                f"models together, which is not n separate optimizers; use one of "
                f"{', '.join(ELEMENTWISE)}, or run it on MPI engines (one model per rank).")
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("A parameter appears in two parameter groups of the optimizer.")
        if model is not None:
            _check_coverage(model, params)
        if self.mode in ("atc", "awc", "tracking"):
            check_schedule(comm, topology, "doubly", f"Decentralized(mode={mode!r})")
        if self.mode == "tracking" and tau != 1:
            raise ValueError("mode='tracking' exchanges at every step: tau must be 1.")
        self.flat = FlatParameters(params, comm)
        self._check_same_shapes(model)
        with torch.no_grad(), comm.untracked():
            self.flat.load(comm.broadcast(self.flat.flat, 0))
        if rule is not None:
            rule.start(self.flat.flat)
        self.tracker: torch.Tensor | None = None
        self.previous_grad: torch.Tensor | None = None
        self.buckets = self.background = None
        if overlap:
            if self.mode not in ("allreduce", "awc"):
                raise ValueError(
                    "overlap=True overlaps the gradient allreduce (mode='allreduce') or the "
                    f"neighbor averaging of mode='awc' with computation; mode {self.mode!r} "
                    "does not overlap.")
            if self.mode == "allreduce":
                self.buckets = GradientBuckets(self.flat, comm, bucket_bytes)
            elif tau != 1:
                raise ValueError("overlap=True with mode='awc' averages at every step: "
                                 "tau must be 1.")
            else:
                self.background = BackgroundAveraging(comm)
        self.quasi_global = None
        if quasi_global:
            if self.mode != "atc":
                raise ValueError("quasi_global=True is QG-DSGDm, an adapt-then-combine "
                                 f"method: use mode='atc', not {self.mode!r}.")
            self.quasi_global = QuasiGlobalMomentum(optimizer, self.flat)
        self.k = 0
        if self.background is not None:
            self.background.start(self.flat.flat, self._topology())

    @staticmethod
    def _check_mode(mode, rule, topology) -> str:
        if rule is not None:
            if not isinstance(rule, SyncRule):
                raise TypeError(f"rule must be a SyncRule of declearn.algorithms.local_sgd or "
                                f"declearn.optim.gossip, got {type(rule).__name__}.")
            if topology is not None:
                raise ValueError("Pass either rule= or topology= (the rule holds its own "
                                 "topology or tree), not both.")
            return "rule"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} (or pass rule=), got {mode!r}.")
        if mode in ("atc", "awc", "tracking") and \
                not isinstance(topology, (Topology, DynamicTopology)):
            raise ValueError(f"mode={mode!r} averages with neighbors: pass topology=, e.g. "
                             "declearn.topology.ring(comm.size).")
        if mode == "allreduce" and topology is not None:
            raise ValueError("mode='allreduce' averages gradients over all nodes: it takes no "
                             "topology.")
        return mode

    def _check_same_shapes(self, model) -> None:
        """Under MPIComm: every rank must hold the same parameter shapes."""
        if self.comm.node_dims:
            return
        sizes = torch.tensor([float(s) for s in self.flat.sizes], dtype=torch.float64)
        with self.comm.untracked():
            counts = self.comm.allgather(torch.tensor([float(len(sizes))], dtype=torch.float64))
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"The ranks' models have different numbers of parameters "
                             f"(per rank: {[int(c) for c in counts.flatten()]}): every rank "
                             "must build the same model.")
        with self.comm.untracked():
            every = self.comm.allgather(sizes)
        differ = (every != every[0]).any(0).nonzero().flatten().tolist()
        if differ:
            i = differ[0]
            names = {id(p): n for n, p in model.named_parameters()} if model is not None \
                else {}
            name = names.get(id(self.flat.params[i]), f"parameter #{i} of the optimizer")
            per_rank = ", ".join(f"rank {r}: {int(every[r, i])}" for r in range(every.shape[0]))
            raise ValueError(f"The ranks' models differ in {name} ({per_rank} elements): every "
                             "rank must build the same model.")

    # ------------------------------------------------------------------ torch.optim interface
    @property
    def param_groups(self) -> list:
        """The wrapped optimizer's parameter groups (``lr`` and the rest, live)."""
        return self.optimizer.param_groups

    @property
    def x(self) -> torch.Tensor:
        """This node's parameters as one flat vector (``(n, P)`` under SimComm); the buffer
        itself, copy it before changing it."""
        return self.flat.flat

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients (they stay views of one flat buffer, whatever
        ``set_to_none`` says)."""
        self.flat.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        """The local step of the wrapped optimizer and this step's communication."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.flat.gather_grads()
        x = self.flat.flat
        exchange = self.mode == "rule" or (self.k + 1) % self.tau == 0
        if self.buckets is not None:
            self.buckets.finish()
        elif self.mode == "allreduce":
            self.flat.grad.copy_(self.comm.allreduce(self.flat.grad))
        elif self.mode == "tracking":
            self._track()
        mixed = before = None
        if self.background is not None:
            mixed, before = self.background.result()
        elif self.mode == "awc" and exchange:
            before = x.clone()
            mixed = self.comm.neighbor_allreduce(before, self._topology())
        qgm = self.quasi_global
        if qgm is not None:
            before = x.clone()
            qgm.local_step()
        else:
            self.optimizer.step()
        if mixed is not None:
            x.add_(mixed.sub_(before))  # W x + (x + Delta - x)
        elif self.mode in ("atc", "tracking") and exchange:
            self.flat.load(self.comm.neighbor_allreduce(x, self._topology()))
        elif self.mode == "rule":
            self.flat.load(self.rule(x, float(self.param_groups[0]["lr"])))  # type: ignore[misc]
        if qgm is not None:
            qgm.absorb(before)  # type: ignore[arg-type]
        self.k += 1
        if self.background is not None:
            self.background.start(x, self._topology())
        return loss

    def _track(self) -> None:
        """``y <- W (y + g - g_prev)`` (``y <- g`` at first); the local step then reads y."""
        g = self.flat.grad
        if self.tracker is None:
            self.tracker = g.clone()
        else:
            assert self.previous_grad is not None
            self.tracker = self.comm.neighbor_allreduce(  # the W of the previous step's x
                self.tracker.add(g).sub_(self.previous_grad), self._topology(self.k - 1))
        self.previous_grad = g.clone()
        g.copy_(self.tracker)

    def _topology(self, k: int | None = None):
        topo = self.topology.at((self.k if k is None else k) // self.tau)  # type: ignore[union-attr]
        check_mixing(self.comm, topo, "doubly", f"Decentralized(mode={self.mode!r})")
        return topo

    def finish(self) -> None:
        """Wait for a synchronisation still in flight (overlap rules, the next average of
        ``overlap=True``); call it on every rank before tearing the communicator down."""
        if self.rule is not None and hasattr(self.rule, "finish"):
            self.rule.finish()
        if self.background is not None:
            self.background.close()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A snapshot: the wrapped optimizer's state (deep copy), the parameters, the step
        count and, with ``rule=``, the rule's state (an average in flight completed first)."""
        from declearn.optim.sync_state import rule_identity, rule_state

        sync = rule_state(self.rule) if self.rule is not None else None
        return {
            "format": FORMAT, "optimizer": type(self.optimizer).__name__, "mode": self.mode,
            "tau": self.tau, "nodes": int(self.comm.size),
            "rule": rule_identity(self.rule) if self.rule is not None else None,
            "k": self.k, "x": self.flat.flat.detach().clone(), "sync": sync,
            "quasi_global": None if self.quasi_global is None else
            self.quasi_global.m_hat.clone(),
            "tracking": None if self.tracker is None else
            (self.tracker.clone(), self.previous_grad.clone()),  # type: ignore[union-attr]
            "inner": copy.deepcopy(self.optimizer.state_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of the same setup); raises a
        ValueError saying what differs, before changing anything."""
        from declearn.optim.sync_state import load_rule_state, rule_identity

        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError("This is not a Decentralized optimizer's state: pass what "
                             "Decentralized.state_dict() returned.")
        m_hat = state.get("quasi_global")
        if (m_hat is None) != (self.quasi_global is None):
            raise ValueError("The state does not fit this optimizer (quasi_global: saved "
                             f"{m_hat is not None}, here {self.quasi_global is not None}).")
        mine = {"optimizer": type(self.optimizer).__name__, "mode": self.mode,
                "tau": self.tau, "nodes": int(self.comm.size),
                "rule": rule_identity(self.rule) if self.rule is not None else None}
        diff = [f"{k}: saved {state.get(k)!r}, here {v!r}" for k, v in mine.items()
                if state.get(k) != v]
        if diff:
            raise ValueError(f"The state does not fit this optimizer ({'; '.join(diff)}).")
        x = state["x"]
        if not isinstance(x, torch.Tensor) or x.shape != self.flat.flat.shape:
            raise ValueError(f"The saved parameters have shape "
                             f"{getattr(x, 'shape', type(x).__name__)}, this model's flat "
                             f"buffer is {tuple(self.flat.flat.shape)}: another model.")
        if self.rule is not None:
            load_rule_state(self.rule, state["sync"], self.flat.flat)
        self.optimizer.load_state_dict(copy.deepcopy(state["inner"]))
        with torch.no_grad():
            self.flat.load(x.to(self.flat.flat.device, self.flat.flat.dtype))
        if self.background is not None:
            self.background.result()  # the average of the parameters being replaced
        if self.quasi_global is not None:
            self.quasi_global.m_hat.copy_(m_hat)
        tracking = state.get("tracking")
        self.tracker, self.previous_grad = (None, None) if tracking is None else \
            (tracking[0].clone(), tracking[1].clone())
        self.k = int(state["k"])
        if self.background is not None:
            self.background.start(self.flat.flat, self._topology())


def _check_coverage(model: torch.nn.Module, params: list) -> None:
    have = {id(p) for p in params}
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and id(p) not in have]
    if missing:
        raise ValueError(
            f"The optimizer's parameter groups do not cover the model: {', '.join(missing)} "
            "would never be trained nor averaged. Build the optimizer from "
            "model.parameters() (or add those to a parameter group).")
    extra = len(have) - sum(1 for p in model.parameters() if id(p) in have)
    if extra:
        raise ValueError(f"{extra} of the optimizer's parameters are not the model's: build "
                         "the optimizer from this model's parameters.")
