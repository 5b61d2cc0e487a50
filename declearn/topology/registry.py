"""Topology families by name: ``make("exponential", 16)`` and the list the widgets offer.

A family is a function ``f(n, **params) -> Topology | DynamicTopology`` registered with
:func:`family`. Its keyword parameters (with their defaults) are read from its signature.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from declearn._deprecation import accept_renamed
from declearn.errors import TopologyError

__all__ = ["family", "make", "families", "family_info", "FamilyInfo"]


@dataclass(frozen=True)
class FamilyInfo:
    """What a widget or a user needs to know to build a family."""

    name: str
    fn: Callable
    dynamic: bool
    params: dict  # keyword -> default (inspect.Parameter.empty when required)
    summary: str  # the first paragraph of the family's docstring, on one line


_FAMILIES: dict[str, FamilyInfo] = {}


def family(name: str, *, dynamic: bool = False):
    """Register ``fn(n, **params)`` as the topology family ``name``."""

    def register(fn):
        sig = inspect.signature(fn)
        params = {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        first_paragraph = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0]
        summary = " ".join(first_paragraph.split())
        _FAMILIES[name] = FamilyInfo(name, fn, dynamic, params, summary)
        return fn

    return register


def families(dynamic: bool | None = None) -> list[str]:
    """Names of the registered families (only static or only dynamic ones if asked)."""
    return sorted(k for k, v in _FAMILIES.items() if dynamic is None or v.dynamic == dynamic)


def family_info(name: str) -> FamilyInfo:
    """The :class:`FamilyInfo` of ``name``; an unknown name raises with the closest matches."""
    try:
        return _FAMILIES[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_FAMILIES), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TopologyError(
            f"Unknown topology family {name!r}.{hint} Known families: {', '.join(families())}."
        ) from None


def make(name: str, n: int, **params):
    """Build the topology family ``name`` over ``n`` nodes, e.g. ``make("ring", 8)``.

    A keyword's old name (``weights=``, now ``rule=``) still works, with a DeprecationWarning."""
    info = family_info(name)
    params = accept_renamed(info.fn, params, stacklevel=2)
    unknown = set(params) - set(info.params)
    if unknown:
        raise TopologyError(
            f"Family {name!r} has no parameter {', '.join(sorted(unknown))}; "
            f"it takes {', '.join(info.params) or 'only n'}."
        )
    return info.fn(n, **params)
