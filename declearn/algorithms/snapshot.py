"""The state of an algorithm at one iteration, kept to undo a step (see
:mod:`declearn.algorithms.base`, *Failures*)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from declearn.algorithms.base import Algorithm

__all__ = ["Snapshot"]


class Snapshot:
    """The state of an algorithm at one iteration: a shallow copy of its attributes and of
    those of its stateful parts (references: no tensor is copied), and, unless the class
    is known to assign new tensors only, the version counter of every tensor in it, so that
    a later in-place modification is seen."""

    __slots__ = ("parts", "versions")
    versions: list[tuple[str, torch.Tensor, int]]

    def __init__(self, alg: Algorithm):
        saved = alg.__dict__.copy()
        del saved["_undo"]  # the snapshot before this one: not state, and it would chain
        parts = [(alg, saved)]
        for obj in alg._stateful_parts():
            attrs = obj.__dict__.copy()
            for name in getattr(obj, "_scratch", ()):
                attrs.pop(name, None)
            parts.append((obj, attrs))
        self.parts = parts
        check = saved.get("_check_versions")
        if check is None:
            check = alg._check_versions = alg._checks_in_place_updates()
        if not check:
            self.versions = []
            return
        try:
            self.versions = [(name, t, t._version) for _, attrs in parts
                             for name, t in attrs.items() if isinstance(t, torch.Tensor)]
        except RuntimeError:  # inference tensors have no version counter: not checked
            self.versions = [(name, t, t._version) for _, attrs in parts
                             for name, t in attrs.items()
                             if isinstance(t, torch.Tensor) and not t.is_inference()]

    def modified_in_place(self) -> str | None:
        """The name of a tensor of this state modified in place since, or None."""
        for name, t, version in self.versions:
            if t._version != version:
                return f"self.{name}"
        return None

    def restore(self) -> None:
        for obj, attrs in self.parts:
            keep = {"_undo", "_check_versions", *getattr(obj, "_scratch", ())}
            for name in obj.__dict__.keys() - attrs.keys() - keep:  # set since
                del obj.__dict__[name]
            obj.__dict__.update(attrs)
