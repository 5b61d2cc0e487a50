r"""One flat buffer behind all parameters of a model, so that a synchronisation is one
collective on one tensor instead of one per parameter.

:class:`FlatParameters` copies the parameters into a node-local buffer ``flat`` and makes each
parameter (its ``.data``) and its gradient views of ``flat`` and ``grad``. Under MPIComm the
buffers have shape ``(P,)``, P = number of scalars; under SimComm the model is a stack of n
models (every parameter has the node dim first, e.g. built with
``declearn.optim.StackedModel``) and the buffers have shape ``(n, P)``.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["FlatParameters"]


class FlatParameters:
    """Parameters and gradients as views of two node-local buffers, ``flat`` and ``grad``."""

    def __init__(self, params, comm):
        params = list(params)
        if not params:
            raise ValueError("The optimizer got no parameters; pass model.parameters().")
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("Parameters must be torch tensors (model.parameters()).")
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError(
                "All parameters must share one dtype and device to live in one flat buffer; "
                "convert the model first, e.g. model.to(torch.float32)."
            )
        if not first.is_floating_point():
            raise TypeError(f"Parameters must be floating point, got {first.dtype}.")
        # Under SimComm the node dim stays in front of the flattening (shape bookkeeping only).
        self.lead = comm.node_dims
        for p in params:
            if self.lead and (p.dim() == 0 or p.shape[0] != comm.size):
                raise ValueError(
                    f"Under SimComm(n={comm.size}) the optimizer trains n stacked models: every "
                    f"parameter needs the node dim first, got shape {tuple(p.shape)}. Pass "
                    f"declearn.optim.StackedModel(model, {comm.size}).parameters(), or run "
                    "under MPIComm."
                )
        if self.lead:
            # Views into an (n, P) buffer are strided, which autograd flags (harmlessly) on
            # every backward; only the simulator's stacked models hit it.
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient")
        self.params = params
        self.shapes = [tuple(p.shape) for p in params]
        self.sizes = [math.prod(s[len(self.lead):]) for s in self.shapes]
        total = sum(self.sizes)
        self.flat = torch.empty(self.lead + (total,), dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        self.param_views, self.grad_views = [], []
        offset = 0
        with torch.no_grad():
            for p, shape, size in zip(params, self.shapes, self.sizes):
                view = self.flat[..., offset:offset + size].view(shape)
                view.copy_(p)
                p.data = view
                gview = self.grad[..., offset:offset + size].view(shape)
                p.grad = gview
                self.param_views.append(view)
                self.grad_views.append(gview)
                offset += size

    def gather_grads(self) -> bool:
        """Make ``grad`` hold every parameter's gradient; False if no parameter has one.

        Backward accumulates into the views in place, so usually nothing moves; a gradient
        that was replaced (``zero_grad(set_to_none=True)`` then backward) is copied back
        and the view re-attached.
        """
        seen = False
        for p, gview in zip(self.params, self.grad_views):
            g = p.grad
            if g is None:
                gview.zero_()
                p.grad = gview
                continue
            seen = True
            if g is not gview:
                gview.copy_(g)
                p.grad = gview
        return seen

    def zero_grad(self) -> None:
        self.grad.zero_()
        for p, gview in zip(self.params, self.grad_views):
            if p.grad is not gview:
                p.grad = gview

    def load(self, x: torch.Tensor) -> None:
        """``flat <- x`` (in place: the parameters see it)."""
        if x is not self.flat:
            self.flat.copy_(x)
