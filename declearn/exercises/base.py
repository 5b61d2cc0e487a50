"""The building blocks of exercise checks: a :class:`Verdict` and three comparisons."""

from __future__ import annotations

import html
import math
import numbers
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Verdict", "check_close", "check_equal", "check_true", "is_number", "not_yet"]


#: `code` spans of a message, shown as code in the notebook (not as literal backticks).
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and a message (with a hint when wrong).

    ``bool(verdict)`` is ``ok``, so ``assert ch01.check_rate(x)`` works in tests."""

    ok: bool
    exercise: str
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        mark = "correct" if self.ok else "not yet"
        return f"[{self.exercise}] {mark}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if self.ok:
            color, mark = "#1a7f37", "&#10004; correct"
        else:
            color, mark = "#b42318", "&#10008; not yet"
        message = _CODE.sub(r"<code>\1</code>", html.escape(self.message))
        return (f'<div style="color:{color};font-weight:600">[{html.escape(self.exercise)}] '
                f'{mark}: <span style="font-weight:400">{message}</span></div>')


def _as_array(value, what: str) -> np.ndarray:
    try:
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: expected a number or an array of numbers, got "
                        f"{type(value).__name__} ({exc})") from None


def check_close(exercise: str, answer, expected, *, rtol: float = 1e-6, atol: float = 0.0,
                hint: str = "") -> Verdict:
    """Right when ``answer`` equals ``expected`` within ``rtol``/``atol`` (same shape)."""
    a = _as_array(answer, exercise)
    e = _as_array(expected, exercise)
    if a.shape != e.shape:
        return Verdict(False, exercise, f"expected shape {e.shape}, got {a.shape}. {hint}".strip())
    if not np.all(np.isfinite(a)):
        return Verdict(False, exercise, f"the answer contains NaN or inf. {hint}".strip())
    if np.allclose(a, e, rtol=rtol, atol=atol):
        return Verdict(True, exercise, "correct to the stated tolerance.")
    return Verdict(False, exercise, f"{_how_far(a, e, rtol, atol)} {hint}".strip())


def _how_far(a: np.ndarray, e: np.ndarray, rtol: float, atol: float) -> str:
    """How wrong an answer is, without giving the expected value away.

    Only the direction (scalars) or the count of wrong entries (arrays) and the order of
    magnitude of the relative error are said: never the exact offset.
    """
    diff = np.abs(a - e)
    scale = np.maximum(np.abs(e), 1e-300)
    rel = float(np.max(diff / scale))
    order = f"relative error of order 1e{math.floor(math.log10(rel)):+03d}" if math.isfinite(rel) \
        and rel > 0 else "the expected value is 0"
    if a.size == 1:
        side = "too large" if float(a.reshape(-1)[0]) > float(e.reshape(-1)[0]) else "too small"
        return f"the answer is {side} ({order}; tolerance {rtol:g})."
    wrong = int(np.sum(~np.isclose(a, e, rtol=rtol, atol=atol)))
    return f"{wrong} of {a.size} entries are off (largest {order}; tolerance {rtol:g})."


def check_equal(exercise: str, answer, expected, *, hint: str = "") -> Verdict:
    """Right when ``answer == expected`` (numbers, strings, tuples, sets...)."""
    if answer == expected:
        return Verdict(True, exercise, "that is the exact answer.")
    return Verdict(False, exercise, f"{answer!r} is not it. {hint}".strip())


def check_true(exercise: str, condition: bool, *, right: str, wrong: str) -> Verdict:
    """A verdict from a condition the chapter's check computed itself."""
    return Verdict(bool(condition), exercise, right if condition else wrong)


def not_yet(exercise: str, what: str, *, name: str = "answer") -> Verdict:
    """The verdict for an exercise cell still holding ``<name> = None``."""
    return Verdict(False, exercise, f"replace `{name} = None` with {what}, then run the check.")


def is_number(answer) -> bool:
    """True for a finite real number (not a bool, not a string, not an array)."""
    return not isinstance(answer, bool) and isinstance(answer, numbers.Real) \
        and math.isfinite(answer)
