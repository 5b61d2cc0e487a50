r"""n copies of a torch model as one module: decentralized deep learning in one process.

Under SimComm(n) a node-local tensor has the node dim first, so n models are one model whose
every parameter has shape ``(n, *shape)``. :class:`StackedModel` holds them that way and runs
node i's copy on node i's inputs with ``torch.func.vmap``:

    ``model(x)[i] = f(theta_i, x[i])``  for ``x`` of shape ``(n, batch, ...)``.

Because node i's output only depends on ``theta_i``, the gradient of the *sum* of the n
losses with respect to the stacked parameters is, row by row, each node's own gradient: one
``backward()`` gives all n. The optimizers of :mod:`declearn.optim` take
``stacked.parameters()`` with ``SimComm(n)`` exactly as each MPI rank passes its own
``model.parameters()`` with ``MPIComm()``.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["StackedModel"]


class StackedModel(torch.nn.Module):
    """``n`` copies of ``model`` (all equal to it at first), parameters stacked along dim 0.

    ``forward(x)`` takes ``x`` of shape ``(n, batch, ...)`` and returns ``(n, batch, ...)``;
    ``node(i)`` returns node i's model as an ordinary module (a copy, e.g. to evaluate it);
    ``mean_model()`` the model with the averaged parameters.
    """

    def __init__(self, model: torch.nn.Module, n: int):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"StackedModel needs a torch.nn.Module, got {type(model).__name__}.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of nodes) must be an integer >= 1, got {n!r}.")
        if any(True for _ in model.buffers()):
            names = ", ".join(name for name, _ in model.named_buffers())
            raise ValueError(
                f"StackedModel supports models without buffers, but this one has {names} "
                "(BatchNorm keeps running statistics). Use GroupNorm or LayerNorm, or no "
                "normalisation, for decentralized training in one process."
            )
        self.n = n
        self._names = [name for name, _ in model.named_parameters()]
        if not self._names:
            raise ValueError("The model has no parameters to train.")
        # The template only provides the computation; its own parameters are never used.
        self._template = [copy.deepcopy(model).to("meta")]  # a list: not a registered child
        for i, p in enumerate(model.parameters()):
            stacked = p.detach().unsqueeze(0).repeat(n, *([1] * p.dim())).clone()
            self.register_parameter(f"p{i}", torch.nn.Parameter(stacked, p.requires_grad))

    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        """``{name in the original model: stacked parameter (n, *shape)}``."""
        return {name: getattr(self, f"p{i}") for i, name in enumerate(self._names)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.n:
            raise ValueError(
                f"StackedModel over {self.n} nodes needs inputs of shape (n={self.n}, batch, "
                f"...), one batch per node; got shape {tuple(x.shape)}."
            )
        from torch.func import functional_call, vmap

        template = self._template[0]

        def one(params, xi):
            return functional_call(template, params, (xi,))

        return vmap(one)(self.stacked_parameters(), x)

    def node(self, i: int) -> torch.nn.Module:
        """Node i's model as an ordinary module (a copy with its own parameters)."""
        if not -self.n <= i < self.n:
            raise IndexError(f"node {i} out of range for {self.n} nodes.")
        return self._unstacked(lambda p: p[i])

    def mean_model(self) -> torch.nn.Module:
        """The model whose parameters are the average of the n nodes' (a copy)."""
        return self._unstacked(lambda p: p.mean(0))

    def _unstacked(self, pick) -> torch.nn.Module:
        first = next(iter(self.stacked_parameters().values()))
        model = copy.deepcopy(self._template[0]).to_empty(device=first.device)
        with torch.no_grad():
            for name, p in self.stacked_parameters().items():
                model.get_parameter(name).copy_(pick(p))
        return model
