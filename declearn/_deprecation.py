"""Renamed keywords: the old name keeps working for a while, with a DeprecationWarning.

``@renamed_keyword("weights", "rule")`` on ``f(n, *, rule=...)`` lets ``f(n, weights=v)``
run as ``f(n, rule=v)`` and warns, from the caller's line, that ``weights=`` is now ``rule=``.
``values`` translates old values too (``{"receiver": "row"}``), so that the warning shows the
exact call to write. The wrapper keeps ``f``'s signature (``inspect.signature`` sees only the
new name). Code that forwards keywords to such a function by name (the topology registry's
``make``) translates them with :func:`accept_renamed`, so that the warning points at its caller.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping

__all__ = ["renamed_keyword", "renamed_keywords", "accept_renamed"]

_RENAMED = "__declearn_renamed_keywords__"


def renamed_keyword(old: str, new: str, *, values: Mapping | None = None) -> Callable:
    """Decorator: accept ``old=v`` as ``new=values.get(v, v)``, with a DeprecationWarning that
    names the new keyword and value. Passing both names is a TypeError."""
    values = dict(values or {})

    def decorate(fn):
        who = _who(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                _translate(who, old, new, values, kwargs, stacklevel=2)
            return fn(*args, **kwargs)

        setattr(wrapper, _RENAMED, {**getattr(fn, _RENAMED, {}), old: (new, values)})
        return wrapper

    return decorate


def renamed_keywords(fn: Callable) -> dict[str, str]:
    """``{old: new}`` of the keywords ``fn`` still accepts under an old name."""
    return {old: new for old, (new, _) in getattr(fn, _RENAMED, {}).items()}


def accept_renamed(fn: Callable, kwargs: Mapping, *, stacklevel: int = 1) -> dict:
    """``kwargs`` for ``fn`` with its old keyword names replaced by the new ones, warning once
    per old name; the warning points ``stacklevel`` frames up from the caller (1: the caller
    itself, 2: its caller)."""
    kwargs = dict(kwargs)
    for old, (new, values) in getattr(fn, _RENAMED, {}).items():
        if old in kwargs:
            _translate(_who(fn), old, new, values, kwargs, stacklevel=stacklevel + 1)
    return kwargs


def _who(fn) -> str:
    """How a call is written: ``Topology.from_matrix``, ``RelaySum`` (not ``.__init__``)."""
    return fn.__qualname__.removesuffix(".__init__")


def _translate(qualname, old, new, values, kwargs, *, stacklevel) -> None:
    """Move ``kwargs[old]`` to ``kwargs[new]``, warning ``stacklevel`` frames above this one."""
    value = kwargs.pop(old)
    if new in kwargs:
        raise TypeError(
            f"{qualname}() got both {old}= and {new}=; {old}= is the old name of {new}=, pass "
            f"only {new}=."
        )
    try:
        value = values.get(value, value)
    except TypeError:  # an unhashable value: passed on as is, for the new keyword to refuse
        pass
    warnings.warn(f"{qualname}({old}=...) is deprecated: write {new}={value!r}.",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    kwargs[new] = value
