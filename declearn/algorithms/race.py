r"""One method, several topologies, one problem: the curves of a race between graphs.

:func:`race` builds the method once per topology (``build(topology)`` returns a fresh
:class:`~declearn.algorithms.Algorithm` with its own communicator), takes ``steps`` iterations
with each, and records ``metric(alg)`` at ``k = 0, every, 2 every, ...`` and at the end. The
iterates are exactly those of ``alg.step()`` called ``steps`` times: nothing is logged inside
the run (no History rows, no collectives but the metric's, under ``comm.untracked()``), so a
race costs the steps plus the metric. A curve stops at the first non-finite value
(``diverged_at``).

The metrics the EquiTopo experiments plot (Song et al., NeurIPS 2022; the authors' notebooks),
each with collectives only, so they run on both backends:

* :func:`consensus_distance`: ``||x - 1 x_bar^T||_F = (sum_i ||x_i - x_bar||^2)^(1/2)``. For
  average consensus ``x^k = W^(k-1) ... W^(0) x^0`` with doubly stochastic W this is
  ``||J x^0 - prod_k W^(k) x^0||`` (``J = 11^T / n``), the quantity of their consensus figure.
* :func:`relative_error` (``x_star``): ``||x - 1 x*^T||_F / ||1 x*^T||_F``, their DSGD figure.
* any column of :meth:`Algorithm.metrics` by name: ``"grad_norm"`` (``||grad f(x_bar)||``, the
  full gradient at the averaged model: their gradient-tracking figure), ``"suboptimality"``,
  ``"consensus_error"``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from declearn.algorithms.base import Algorithm, check_steps

__all__ = ["RaceCurve", "race", "consensus_distance", "relative_error"]


@dataclass
class RaceCurve:
    """``values[j]`` = the metric at iteration ``iterations[j]`` for the topology ``name``
    (its ``rho`` when known, ``degree`` = messages per node per iteration); ``seconds`` of
    stepping (the metric excluded); ``diverged_at``: the iteration of the first non-finite
    value, else None."""

    name: str
    iterations: np.ndarray
    values: np.ndarray
    seconds: float
    rho: float | None
    degree: int
    diverged_at: int | None = None

    def first_below(self, level: float) -> float:
        """The first recorded iteration whose value is <= ``level`` (``math.inf`` if none)."""
        hit = np.flatnonzero(self.values <= level)
        return int(self.iterations[hit[0]]) if hit.size else math.inf

    def plot(self, ax, **kwargs):
        """``values`` against ``iterations`` on a log y axis, labelled with the name."""
        ax.semilogy(self.iterations, self.values, label=kwargs.pop("label", self.name), **kwargs)
        return ax


def _sum_over_nodes(comm, local: torch.Tensor) -> float:
    return float(comm.one_node(comm.allreduce(local, "sum")))


def consensus_distance(alg: Algorithm) -> float:
    """``(sum_i ||x_i - x_bar||^2)^(1/2)`` of ``alg.iterate`` (see the module docstring)."""
    comm, x = alg.comm, alg.iterate
    with comm.untracked():
        xbar = comm.allreduce(x, "mean")
        dev = (x - xbar).reshape(comm.node_dims + (-1,))
        return math.sqrt(_sum_over_nodes(comm, dev.pow(2).sum(-1)))


def relative_error(x_star) -> Callable[[Algorithm], float]:
    """The metric ``||x - 1 x*^T||_F / ||1 x*^T||_F`` (``x_star``: one node's shape)."""
    target = torch.as_tensor(x_star)
    if not torch.isfinite(target).all() or not target.abs().sum() > 0:
        raise ValueError("x_star must be finite and non-zero (the error is relative to it).")

    def metric(alg: Algorithm) -> float:
        comm, x = alg.comm, alg.iterate
        ref = target.to(dtype=x.dtype, device=x.device)
        with comm.untracked():
            dev = (x - ref).reshape(comm.node_dims + (-1,))
            err = _sum_over_nodes(comm, dev.pow(2).sum(-1))
        return math.sqrt(err / (comm.size * float(ref.pow(2).sum())))

    return metric


def _metric_of(metric) -> Callable[[Algorithm], float]:
    if callable(metric):
        return metric
    if isinstance(metric, str):
        def column(alg: Algorithm) -> float:
            row = alg.metrics()
            if metric not in row:
                raise ValueError(f"{alg.name}'s metrics() has no {metric!r} column (it has "
                                 f"{sorted(row)}); pass a function metric(alg) instead.")
            return float(row[metric])
        return column
    raise TypeError(f"metric must be a function metric(alg) -> float or the name of a "
                    f"metrics() column ('grad_norm', ...), got {type(metric).__name__}.")


def race(build: Callable, topologies: Mapping, steps: int, *, metric,
         every: int = 1) -> dict[str, RaceCurve]:
    """``{name: RaceCurve}``: ``build(topology)`` (a fresh Algorithm) stepped ``steps`` times
    for each ``name -> topology`` of ``topologies``, ``metric`` recorded at 0, ``every``,
    ``2 every``, ... and at the end (see the module docstring). A value may also be a pair
    ``(topology, options)``: that racer is ``build(topology, **options)`` (e.g. its own
    ``{"lr": 1.6}``)."""
    if not isinstance(topologies, Mapping) or not topologies:
        raise TypeError("topologies must be a non-empty dict name -> Topology "
                        "(e.g. {'ring': ring(n), 'OD-EquiDyn': od_equidyn(n)}).")
    steps = check_steps(steps)
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"every must be an integer >= 1 (record the metric every that many "
                         f"iterations), got {every!r}.")
    measure = _metric_of(metric)
    curves = {}
    for name, entry in topologies.items():
        topology, options = entry if isinstance(entry, tuple) else (entry, {})
        if not isinstance(options, Mapping):
            raise TypeError(f"{name!r}: a pair must be (topology, dict of build options), got "
                            f"{type(options).__name__} as options.")
        alg = build(topology, **options)
        if not isinstance(alg, Algorithm):
            raise TypeError(f"build(topology) must return a declearn Algorithm, got "
                            f"{type(alg).__name__} for {name!r}.")
        ks, values, seconds, diverged = [0], [measure(alg)], 0.0, None
        while alg.k < steps and math.isfinite(values[-1]):
            todo = min(every, steps - alg.k)
            start = time.perf_counter()
            for _ in range(todo):
                alg.step()
            seconds += time.perf_counter() - start
            ks.append(alg.k)
            values.append(measure(alg))
        if not math.isfinite(values[-1]):
            diverged = ks[-1]
        rho = topology.recall("rho") if hasattr(topology, "recall") else None
        curves[name] = RaceCurve(str(name), np.asarray(ks), np.asarray(values, dtype=float),
                                 seconds, None if rho is None else float(rho),
                                 int(topology.degree), diverged)
    return curves
