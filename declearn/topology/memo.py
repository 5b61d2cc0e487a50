"""Values derived from a topology, computed once and kept on it.

Topologies are immutable, so anything computed from one (W as a dense array, its degrees, rho,
a passed stochasticity check, a backend's communication plan) can be kept for its lifetime.
:meth:`BaseTopology.memo(key, build) <declearn.topology.base.BaseTopology.memo>` is the one
way to do it; :class:`memoized` makes a property of it. Keys of other modules are named after
their owner (``"sim.plan"``, ``"relay.is_tree"``); the topology's own are plain words
(``"W"``, ``"rho"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["memoized"]

T = TypeVar("T")


def memoized(key: str) -> Callable[[Callable[[Any], T]], T]:
    """``@memoized("key")`` on a method of a topology: a read-only property computed on first
    use and kept by ``memo`` under ``key`` (a dict lookup afterwards). Typed as the value it
    gives, as ``property`` is."""

    def decorate(fn):
        def get(self):
            try:
                return self._cache[key]
            except KeyError:
                return self.memo(key, lambda: fn(self))

        return property(get, doc=fn.__doc__)

    return decorate
