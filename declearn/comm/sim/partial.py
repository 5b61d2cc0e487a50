"""The partial allreduce of eager-SGD in one process, on a simulated clock (the rules are in
:mod:`declearn.comm.partial`)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from declearn.comm.partial import PartialAllreduce, Round

__all__ = ["SimPartialAllreduce"]


class SimPartialAllreduce(PartialAllreduce):
    """The rounds of a partial allreduce emulated on a simulated clock (see the module
    docstring): ``pa(g, lag=...)`` with ``g`` of shape ``(n, *shape)`` and ``lag`` a number or
    an ``(n,)`` array of extra seconds; returns ``(n, *shape)``, every row the round's result.

    ``clock`` (the ``R_i``: when each node's last call returned) and ``rounds[t].time``
    (``F(t)``) are simulated seconds; ``pending`` holds the calls not contributed yet (at
    most ``staleness`` per node)."""

    def __init__(self, comm, shape, *, dtype=torch.float64, mode="solo", staleness=8,
                 seed=0, op="mean", step_time=0.0, timeout=None):
        super().__init__(comm, shape, dtype=dtype, mode=mode, staleness=staleness, seed=seed,
                         op=op)
        if isinstance(step_time, bool) or not isinstance(step_time, numbers.Real) \
                or not step_time >= 0 or not math.isfinite(step_time):
            raise ValueError(f"step_time must be simulated seconds >= 0, got {step_time!r}.")
        self.step_time = float(step_time)
        S, n = self.staleness, self.n
        # Ring of the calls not contributed yet: slot t % S holds every node's call t.
        self._values = torch.zeros((S, n) + self.shape, dtype=dtype, device=comm.device)
        self._arrival = np.full((S, n), np.inf)  # +inf: nothing pending in that slot
        self.clock = np.zeros(n)

    @property
    def pending(self) -> int:
        """Calls (over all nodes) made but not contributed to a round yet."""
        return int(np.isfinite(self._arrival).sum())

    @property
    def simulated_time(self) -> float:
        """When the latest round fired (simulated seconds)."""
        return self.rounds[-1].time if self.rounds else 0.0

    def __call__(self, g: torch.Tensor, *, lag=0.0) -> torch.Tensor:
        g = self._check_input(g)
        arrival = self.clock + self.step_time + np.broadcast_to(self._lag_value(lag),
                                                                 (self.n,))
        return self._round(g, arrival, forced=False)

    def flush(self) -> torch.Tensor:
        """A synchronous round with nothing new: every node's leftovers, now."""
        zeros = torch.zeros((self.n,) + self.shape, dtype=self.dtype, device=self.comm.device)
        return self._round(zeros, self.clock.copy(), forced=True)

    def _check_input(self, g) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("This partial allreduce was closed; create a new one.")
        want = (self.n,) + self.shape
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != want:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"The partial allreduce takes node-local tensors of shape {want} "
                             f"under SimComm, got {got}.")
        return g

    def _round(self, g, arrival: np.ndarray, forced: bool) -> torch.Tensor:
        t = len(self.rounds)
        slot = t % self.staleness
        if np.isfinite(self._arrival[slot]).any():  # pragma: no cover - the bound guarantees it
            raise AssertionError("a call older than the staleness bound is still pending")
        self._values[slot].copy_(g)
        self._arrival[slot] = arrival
        who = None if forced else self.initiator(t)
        if forced or self.synchronous(t):
            fire = float(arrival.max())
        elif who is None:  # solo: the first to arrive
            fire = float(arrival.min())
        else:
            fire = float(arrival[who])
        if self.rounds:
            fire = max(fire, self.rounds[-1].time)
        landed = self._arrival <= fire  # (S, n): the calls in this round
        weights = torch.from_numpy(landed).to(device=self._values.device, dtype=self.dtype)
        total = torch.tensordot(weights.reshape(-1), self._values.reshape(landed.size, -1),
                                dims=1).reshape(self.shape)
        self._arrival[landed] = np.inf
        self.clock = np.maximum(arrival, fire)
        synchronous = forced or self.synchronous(t)
        if who is None and not synchronous:
            who = int(arrival.argmin())
        self.rounds.append(Round(t, None if synchronous else who, synchronous, fire))
        comm, n = self.comm, self.n  # traffic: one allreduce of the payload per round
        comm._record("partial_allreduce", comm._every_node(2 * (n - 1)), self._nbytes / n)
        out = self._finish(total)
        return out.expand((self.n,) + self.shape).clone()
