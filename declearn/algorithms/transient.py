r"""Transient iterations read off two error curves, and power-law fits of them.

* :func:`transient_length`: with ``r(k) = e_DSGD(k) / e_PSGD(k)`` (``r = 1`` where both are
  0), ``T = min{k : 1/factor <= r(j) <= factor for every recorded j >= k}``; 0 when DSGD is
  within the factor from the start, ``math.inf`` when it is not at the end of the run.
* :func:`fit_exponent`: ``log T = log c + a log n`` by least squares, with a Student-t
  confidence interval on ``a`` (:class:`ExponentFit`).

Plain numpy on arrays; :mod:`declearn.algorithms.speedup` makes the curves.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from declearn.problems.base import check_real

__all__ = ["transient_length", "ExponentFit", "fit_exponent"]


def _tail_median(values: np.ndarray, k: np.ndarray, start: float) -> float:
    """The median of ``values`` over ``k >= start * k[-1]`` (and k >= 1)."""
    check_real(start, "start")
    if not start < 1:
        raise ValueError(f"start must be in [0, 1), got {start}.")
    tail = k >= max(1, int(start * k[-1]))
    return float(np.median(values[tail]))


# ---------------------------------------------------------------------- the definition
def _ratio(dsgd: np.ndarray, parallel: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = dsgd / parallel
    r[(dsgd == 0) & (parallel == 0)] = 1.0  # equal (both at x*): within any factor
    return r


def transient_length(dsgd, parallel, *, iterations=None, factor: float = 2.0) -> float:
    """The first iteration after which ``dsgd`` stays within ``factor`` of ``parallel``:
    ``min{k : 1/factor <= dsgd[j] / parallel[j] <= factor for every j >= k}`` (see the module
    docstring), read on ``iterations`` (default ``0, 1, 2, ...``). Returns that iteration,
    ``0`` if within from the start, ``math.inf`` if not within at the last point."""
    d = np.asarray(dsgd, dtype=float)
    p = np.asarray(parallel, dtype=float)
    if d.ndim != 1 or d.shape != p.shape or d.size == 0:
        raise ValueError(f"dsgd and parallel must be two 1-D error curves of the same length, "
                         f"got shapes {d.shape} and {p.shape}.")
    if not (np.isfinite(d).all() and np.isfinite(p).all()) or (d < 0).any() or (p < 0).any():
        raise ValueError("Error curves must hold finite numbers >= 0 (mean squared errors); "
                         "a NaN or inf means a run diverged: use a smaller step size.")
    k = np.arange(d.size) if iterations is None else np.asarray(iterations)
    if k.shape != d.shape or (np.diff(k) <= 0).any():
        raise ValueError(f"iterations must be increasing, one per error value ({d.size}), got "
                         f"shape {k.shape}.")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not factor > 1:
        raise ValueError(f"factor must be a number > 1 (2 means within a factor 2), got "
                         f"{factor!r}.")
    r = _ratio(d, p)
    outside = np.flatnonzero(~((r >= 1.0 / factor) & (r <= factor)))
    if outside.size == 0:
        return 0 if k[0] == 0 else int(k[0])
    last = int(outside[-1])
    return math.inf if last == d.size - 1 else int(k[last + 1])


# ---------------------------------------------------------------------- exponents
@dataclass(frozen=True)
class ExponentFit:
    """``T ~ prefactor * n^exponent`` fitted in log-log by least squares; ``ci`` is the
    ``level`` confidence interval of the exponent (Student t on ``points - 2`` degrees of
    freedom; NaN with 2 points), ``residual`` the rms of the residuals of ``log T``."""

    exponent: float
    prefactor: float
    ci: tuple[float, float]
    residual: float
    points: int
    level: float = 0.95

    def predict(self, n):
        return self.prefactor * np.asarray(n, dtype=float) ** self.exponent

    def __str__(self) -> str:
        lo, hi = self.ci
        ci = f"{lo:.2f}..{hi:.2f}" if math.isfinite(lo) else "n/a with 2 points"
        return (f"T ~ {self.prefactor:.3g} n^{self.exponent:.2f} ({self.level:.0%} CI {ci}, "
                f"{self.points} points, rms log-residual {self.residual:.2f})")


def fit_exponent(ns, Ts, *, level: float = 0.95) -> ExponentFit:
    """Least squares of ``log T = log c + a log n``: the exponent ``a`` with a confidence
    interval. ``ns``: at least two distinct positive values; ``Ts``: positive and finite
    (T = 0 and T = inf have no logarithm: drop them, saying so)."""
    n = np.asarray(ns, dtype=float).ravel()
    T = np.asarray(Ts, dtype=float).ravel()
    if n.shape != T.shape:
        raise ValueError(f"ns and Ts must have the same length, got {n.size} and {T.size}.")
    bad_n = np.flatnonzero(~(np.isfinite(n) & (n > 0)))
    if bad_n.size:
        raise ValueError(f"ns must be positive numbers; entries {bad_n.tolist()} are not.")
    bad = np.flatnonzero(~(np.isfinite(T) & (T > 0)))
    if bad.size:
        raise ValueError(
            f"Ts must be positive and finite for a log-log fit; entries {bad.tolist()} "
            f"({T[bad].tolist()}) are not. T = 0 (within the factor from the start) and "
            "T = inf (not within the run) carry no exponent: drop those points, or run "
            "longer / use larger n.")
    if np.unique(n).size < 2:
        raise ValueError("fit_exponent needs at least two distinct values of n.")
    check_real(level, "level", strict=True)
    if not level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    x, y = np.log(n), np.log(T)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    res = y - A @ np.array([a, b])
    dof = n.size - 2
    if dof > 0:
        from scipy.stats import t as student

        s2 = float(res @ res) / dof
        se = math.sqrt(s2 / float(((x - x.mean()) ** 2).sum()))
        half = float(student.ppf(0.5 + level / 2, dof)) * se
        ci = (float(a) - half, float(a) + half)
    else:
        ci = (math.nan, math.nan)
    return ExponentFit(float(a), float(math.exp(b)), ci,
                       float(math.sqrt(float(res @ res) / n.size)), int(n.size), float(level))
