r"""Gradient tracking: each node also mixes ``y``, its estimate of the network-average gradient.

With doubly stochastic W and ``y^0 = g(x^0)``, the average of y equals the average of the
latest gradients at every iteration (``y_bar^k = g_bar^k``), so at a consensual fixed point the
nodes step along the *global* gradient and x* is a fixed point: constant step sizes converge
exactly (linearly for strongly convex f), unlike DGD. Works with time-varying W (``.at(k)``).

* :class:`GradientTracking`: ``variant="atc"`` (adapt then combine) or ``"diging"``.
* :class:`PushDIGing`: directed and time-varying graphs with column-stochastic weights only.
"""

from __future__ import annotations

import torch

from declearn.algorithms.flat import node_dims, pack, unpack
from declearn.algorithms.mixing import GossipMethod

__all__ = ["GradientTracking", "PushDIGing", "TRACKING_VARIANTS"]

TRACKING_VARIANTS = ("atc", "diging")


class GradientTracking(GossipMethod):
    r"""Gradient tracking over doubly stochastic ``W = W^(k)``, ``y^0 = g(x^0)``:

    * ``variant="atc"`` (ATC-GT, augmented DGD): ``x+ = W (x - lr y)``,
      ``y+ = W (y + g(x+) - g(x))``;
    * ``variant="diging"`` (DIGing): ``x+ = W x - lr y``, ``y+ = W y + g(x+) - g(x)``.

    DIGing mixes x and y of the same iteration, so both travel in **one** message per
    neighbor (stacked in one buffer): half the messages of two separate calls. ATC needs
    ``y+`` mixed before the next ``x - lr y`` can be, so it sends two messages per iteration.
    ATC tolerates larger steps; DIGing's stable range shrinks with the spectral gap.
    One gradient per iteration (``g(x)`` is kept from the previous one).
    """

    name = "gradient_tracking"
    _assigns_new_tensors = True
    mixing = "doubly"

    def __init__(self, comm, problem, topology, *, lr, variant: str = "atc", x0=None):
        if variant not in TRACKING_VARIANTS:
            raise ValueError(
                f"variant must be one of {TRACKING_VARIANTS} (adapt-then-combine gradient "
                f"tracking, or DIGing), got {variant!r}."
            )
        self.variant = variant
        self.name = f"gt-{variant}"
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        self.g = self.grad(self.x)
        self.y = self.g.clone()
        if variant == "diging":
            self._xy = pack(comm, self.x, self.y)
            self.x, self.y = unpack(comm, self._xy, (self.x.shape, self.y.shape))

    def _params(self) -> dict:
        return {**super()._params(), "variant": self.variant}

    def _step(self) -> None:
        lr, k = self.lr(), self.k
        self._check_mixing(self.topology.at(k))
        if self.variant == "atc":
            x = self.mix(torch.add(self.x, self.y, alpha=-lr))
            g = self.grad(x)
            self.y = self.mix(torch.add(self.y, g).sub_(self.g))
        else:
            mixed = self.mix(self._xy)  # [W x, W y]
            x, wy = unpack(self.comm, mixed, (self.x.shape, self.y.shape))
            x.sub_(self.y, alpha=lr)
            g = self.grad(x)
            self.y = wy.add_(g).sub_(self.g)
            self._xy = mixed
        self.x, self.g = x, g


class PushDIGing(GossipMethod):
    r"""Push-DIGing (Nedic, Olshevsky, Shi 2017): gradient tracking with push-sum weights, for
    directed and time-varying graphs whose weights ``A = W^(k)`` only have columns summing
    to 1 (each sender splits its mass; ``rule="uniform_out"``):

    ``u+ = A (u - lr y)``,  ``v+ = A v``,  ``x+ = u+ / v+``,  ``y+ = A y + g(x+) - g(x)``,

    with ``u^0 = x^0``, ``v^0 = 1`` (one scalar per node), ``y^0 = g(x^0)``. ``v`` corrects
    the imbalance of A exactly as push-sum's weight does; with doubly stochastic A, ``v = 1``
    and this is DIGing. ``u - lr y``, ``y`` and ``v`` travel in one message per out-neighbor.
    The iterate is ``x = u / v``.
    """

    name = "push_diging"
    _assigns_new_tensors = True
    mixing = "column"

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        p = node_dims(comm)
        shape = self.x.shape
        v = torch.ones(shape[:p] + (1,) * (len(shape) - p), dtype=self.x.dtype,
                       device=self.x.device)
        self.g = self.grad(self.x)
        self._shapes = (shape, shape, v.shape)
        # the buffer that is sent: [u - lr y, y, v]
        self._uyv = pack(comm, torch.add(self.x, self.g, alpha=-self.lr(0)), self.g, v)
        _, self.y, self.v = unpack(comm, self._uyv, self._shapes)

    def _step(self) -> None:
        mixed = self.mix(self._uyv)
        u, ay, v = unpack(self.comm, mixed, self._shapes)
        x = u / v
        g = self.grad(x)
        y = ay.add_(g).sub_(self.g)
        u.sub_(y, alpha=self.lr(self.k + 1))  # next message: u - lr y
        self.x, self.y, self.v, self.g, self._uyv = x, y, v, g, mixed
