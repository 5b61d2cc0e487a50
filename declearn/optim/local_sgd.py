r"""The Local SGD family as ``torch.optim`` optimizers, for deep learning on MPI engines.

The pattern of Overlap_Local_SGD's optimizers: after ``loss.backward()`` call
``opt.step()`` (a local SGD step, with optional momentum, Nesterov and weight decay), then
``opt.average()`` at *every* iteration; it synchronises after every ``tau``-th call::

    opt = LocalSGD(model.parameters(), comm, lr=0.1, tau=4, momentum=0.9)
    for xb, yb in loader:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
        opt.average()

The synchronisation rules are those of :mod:`declearn.algorithms.local_sgd` (the same
:class:`~declearn.algorithms.local_sgd.SyncRule` objects), applied to one flat buffer holding
every parameter (:class:`~declearn.optim.flat.FlatParameters`), so a synchronisation is one
collective. The local momentum buffer is never communicated nor reset.

Under MPIComm each rank passes its own model. Under SimComm(n) the model must be n stacked
models (every parameter with the node dim first), which lets a notebook train n small models
in one process. At construction the parameters are set to node 0's (a broadcast not counted
as traffic) so all nodes start from the same model, as the anchors assume.

``state_dict()`` / ``load_state_dict()`` save and restore everything a resumed run needs (the
parameters, the momentum buffer, the rule's position in the ``tau`` period and its anchors;
:mod:`declearn.optim.optimizer_state`); :func:`declearn.optim.save_checkpoint` writes them to
one file per rank.
"""

from __future__ import annotations

import torch

from declearn.algorithms.base import check_step_size
from declearn.algorithms.local_sgd import (
    BlockMomentum,
    CoCoDAveraging,
    ElasticAveraging,
    ModelAveraging,
    OverlapAveraging,
    check_alpha,
    check_gmf,
    check_period,
)

__all__ = ["PeriodicSyncSGD", "LocalSGD", "EASGD", "OverlapLocalSGD", "CoCoDSGD"]


class PeriodicSyncSGD(torch.optim.Optimizer):
    """``torch.optim.SGD``'s local step plus a synchronisation rule run by :meth:`average`.

    A thin use of :class:`~declearn.optim.Decentralized`: the local step is
    ``torch.optim.SGD``'s (``d = g + weight_decay x``; with momentum ``v <- momentum v +
    (1 - dampening) d``, ``v = d`` at first, and ``d = v``, or ``d + momentum v`` with
    Nesterov; ``x <- x - lr d``), the flat buffer, the start from node 0's parameters and the
    rule are the wrapper's. ``average()``: ``x <- rule(x, lr)`` (a synchronisation every
    ``tau`` calls). The parameter groups are the SGD's (a scheduler on either works).
    """

    def __init__(self, params, comm, rule, *, lr, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        from declearn.comm.base import Communicator
        from declearn.optim.wrap import Decentralized

        if not isinstance(comm, Communicator):
            raise TypeError(
                f"comm must be a declearn Communicator (MPIComm() on engines, SimComm(n) for "
                f"stacked models), got {type(comm).__name__}."
            )
        check_step_size(lr)
        for name, value in (("momentum", momentum), ("dampening", dampening),
                            ("weight_decay", weight_decay)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening = 0.")
        params = list(params)
        if params and isinstance(params[0], dict):
            if len(params) != 1:
                raise ValueError(
                    "These optimizers keep all parameters in one flat buffer with one learning "
                    "rate: pass model.parameters() (or a single parameter group)."
                )
            params = list(params[0]["params"])
        if not params:
            raise ValueError("The optimizer got no parameters; pass model.parameters().")
        hyper = dict(lr=lr, momentum=momentum, dampening=dampening,
                     weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, hyper)
        self._sgd = torch.optim.SGD(params, foreach=False, **hyper)
        self.param_groups = self._sgd.param_groups  # one set of hyperparameters for both
        self.comm = comm
        self.rule = rule
        self._wrapper = Decentralized(self._sgd, comm, rule=rule)
        self.flat = self._wrapper.flat

    @property
    def _velocity(self) -> torch.Tensor | None:
        """The momentum buffer as one flat tensor like ``x`` (None before the first step or
        without momentum): the SGD's per-parameter buffers, concatenated."""
        lead = self.flat.lead
        buffers = [self._sgd.state.get(p, {}).get("momentum_buffer") for p in self.flat.params]
        if any(b is None for b in buffers):
            return None
        return torch.cat([b.reshape(lead + (-1,)) for b in buffers], dim=-1)

    @_velocity.setter
    def _velocity(self, value: torch.Tensor | None) -> None:
        offset = 0
        for p, size in zip(self.flat.params, self.flat.sizes):
            if value is None:
                self._sgd.state[p].pop("momentum_buffer", None)
            else:
                part = value[..., offset:offset + size].reshape(p.shape).clone()
                self._sgd.state[p]["momentum_buffer"] = part
            offset += size

    @property
    def lr(self) -> float:
        return float(self.param_groups[0]["lr"])

    @property
    def x(self) -> torch.Tensor:
        """This node's parameters as one flat vector (the wrapper's, see
        :attr:`Decentralized.x <declearn.optim.Decentralized.x>`)."""
        return self._wrapper.x

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients (the wrapper's :meth:`~declearn.optim.Decentralized.zero_grad`)."""
        self._wrapper.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        """One local SGD step (``torch.optim.SGD``'s) on the flat buffer's views."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.flat.gather_grads():
            return loss
        self._sgd.step()
        return loss

    @torch.no_grad()
    def average(self) -> None:
        """Count one iteration; every ``tau``-th call synchronises the models."""
        self.flat.load(self.rule(self.flat.flat, self.lr))

    def finish(self) -> None:
        """Wait for a synchronisation still in flight (overlap variants); call it on every
        rank before tearing the communicator down."""
        if hasattr(self.rule, "finish"):
            self.rule.finish()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly as this one would (a snapshot:
        tensors are copies). See :mod:`declearn.optim.optimizer_state` for the contents and
        the in-flight averages it completes first (call it on every rank at one iteration)."""
        from declearn.optim.optimizer_state import optimizer_state

        return optimizer_state(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from ``state_dict`` (from :meth:`state_dict` of the same optimizer class,
        hyperparameters, model, node and number of nodes); parameters included. Raises a
        ValueError saying what differs, before changing anything."""
        from declearn.optim.optimizer_state import load_optimizer_state

        load_optimizer_state(self, state_dict)


class LocalSGD(PeriodicSyncSGD):
    """Local SGD (``gmf = 0``: average every ``tau`` steps) or BMUF/SlowMo (block momentum
    ``gmf > 0``); the rules of :class:`declearn.algorithms.LocalSGD`."""

    def __init__(self, params, comm, *, lr, tau, gmf: float = 0.0, **sgd):
        tau, gmf = check_period(tau), check_gmf(gmf)
        rule = ModelAveraging(comm, tau) if gmf == 0 else BlockMomentum(comm, tau, gmf)
        super().__init__(params, comm, rule, lr=lr, **sgd)


class EASGD(PeriodicSyncSGD):
    """Elastic averaging SGD, centre update overlapped; see :class:`declearn.algorithms.EASGD`."""

    def __init__(self, params, comm, *, lr, tau, alpha, **sgd):
        rule = ElasticAveraging(comm, check_period(tau), check_alpha(alpha))
        super().__init__(params, comm, rule, lr=lr, **sgd)


class OverlapLocalSGD(PeriodicSyncSGD):
    """Overlap-Local-SGD; see :class:`declearn.algorithms.OverlapLocalSGD`."""

    def __init__(self, params, comm, *, lr, tau, alpha, gmf: float = 0.0, **sgd):
        rule = OverlapAveraging(comm, check_period(tau), check_alpha(alpha), check_gmf(gmf))
        super().__init__(params, comm, rule, lr=lr, **sgd)


class CoCoDSGD(PeriodicSyncSGD):
    """CoCoD-SGD; see :class:`declearn.algorithms.CoCoDSGD`."""

    def __init__(self, params, comm, *, lr, tau, **sgd):
        rule = CoCoDAveraging(comm, check_period(tau))
        super().__init__(params, comm, rule, lr=lr, **sgd)
