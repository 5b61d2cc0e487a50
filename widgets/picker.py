"""TopologyPicker: choose a topology family, n and the family's parameters with bounded controls.

What it teaches: a topology is a *family* (ring, exponential graph, EquiDyn, ...) instantiated at
a size n with a few knobs, and some families cannot take every n or every knob (a hypercube
needs a power of 2, CECA's one-port form an even n, a random graph may come out disconnected).
The picker says so in a sentence instead of failing.

The picker is a building block: other widgets watch its ``topology`` trait::

    picker = TopologyPicker("exponential", n=32)
    picker.observe(lambda change: print(change["new"]), names="topology")

Every control change rebuilds the topology with :func:`declearn.topology.make` (a few ms for
n <= 256); ``topology`` is then the new Topology/DynamicTopology, or None with ``error`` set to a
readable message.
"""

from __future__ import annotations

import html
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets
import traitlets

from declearn.errors import TopologyError
from declearn.topology import families as registered_families
from declearn.topology import family_info, make
from widgets._render import close_descendants, describe_error, error_html

__all__ = ["PARAM_CONTROLS", "ParamControl", "TopologyPicker", "family_blurb", "param_control"]

_EMPTY = inspect.Parameter.empty
_DESC = {"description_width": "70px"}
_WIDE = ipywidgets.Layout(width="340px")


# ---------------------------------------------------------------------- parameter controls
@dataclass
class ParamControl:
    """One family parameter on screen: the ``widget``, ``get()`` -> the value passed to
    ``make``, ``put(value)`` to show a given value (TopologyError if the control cannot hold
    it) and ``on_n(n)`` to follow a new n (e.g. the largest node index)."""

    widget: ipywidgets.Widget
    get: Callable[[], Any]
    put: Callable[[Any], None]
    on_n: Callable[[int], None] | None = None


def _out_of_range(name: str, value, lo, hi) -> TopologyError:
    return TopologyError(f"{name}={value!r} is outside what the picker offers ({lo} .. {hi}).")


def _slider_control(widget, name: str, cast) -> ParamControl:
    def put(value):
        try:
            v = cast(value)
        except (TypeError, ValueError):
            raise TopologyError(f"{name} must be a number, got {value!r}.") from None
        if not widget.min <= v <= widget.max:
            raise _out_of_range(name, value, widget.min, widget.max)
        widget.value = v

    return ParamControl(widget, lambda: cast(widget.value), put)


def _float_slider(name, value, lo, hi, step, fmt=".2f", tip="") -> ParamControl:
    w = ipywidgets.FloatSlider(
        value=min(max(value, lo), hi), min=lo, max=hi, step=step, description=name,
        readout_format=fmt, continuous_update=False, style=_DESC, layout=_WIDE, tooltip=tip,
    )
    return _slider_control(w, name, float)


def _int_slider(name, value, lo, hi, tip="") -> ParamControl:
    w = ipywidgets.IntSlider(
        value=min(max(value, lo), hi), min=lo, max=hi, description=name,
        continuous_update=False, style=_DESC, layout=_WIDE, tooltip=tip,
    )
    return _slider_control(w, name, int)


def _choice(name, options: list[tuple[str, Any]], value, tip="") -> ParamControl:
    """A Dropdown over labelled values (labels are what the widget stores, so values such as
    None or tuples are safe)."""
    labels = [lab for lab, _ in options]
    table = dict(options)
    w = ipywidgets.Dropdown(options=labels, description=name, style=_DESC, tooltip=tip,
                            layout=ipywidgets.Layout(width="240px"))

    def put(v):
        for lab, val in table.items():
            if val == v:
                w.value = lab
                return
        raise TopologyError(
            f"{name}={v!r} is not one of the values the picker offers: {', '.join(labels)}."
        )

    put(value)
    return ParamControl(w, lambda: table[w.value], put)


def _eta(family, default, n):
    return _float_slider("eta", 0.5 if default is _EMPTY else default, 0.05, 1.0, 0.05,
                         tip="weight of the peer's message, in (0, 1]")


def _p(family, default, n):
    if default is _EMPTY:  # a link probability (Erdos-Renyi): connected w.h.p. above ln(n)/n
        value = round(min(1.0, 2.0 * math.log(max(n, 2)) / max(n, 2)), 2)
        return _float_slider("p", value, 0.01, 1.0, 0.01, tip="probability of each link")
    return _float_slider("p", default, 0.01, 0.99, 0.01,
                         tip="allowed failure probability of the guarantee, in (0, 1)")


def _eps(family, default, n):
    return _float_slider("eps", 0.5 if default is _EMPTY else default, 0.05, 1.0, 0.05,
                         tip="target bound on ||W - J||_2, in (0, 1]")


def _radius(family, default, n):
    if default is _EMPTY:  # twice the connectivity threshold sqrt(ln n / (pi n))
        default = round(min(1.5, 2.0 * math.sqrt(math.log(max(n, 2)) / (math.pi * n))), 2)
    return _float_slider("radius", default, 0.02, 1.5, 0.01,
                         tip="link two points closer than this (unit square)")


def _seed(family, default, n):
    default = 0 if default is _EMPTY else int(default)
    ctl = _int_slider("seed", default, 0, max(99, default), tip="random draw")
    w = ctl.widget

    def put(value):  # any non-negative seed: widen the slider rather than refuse it
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TopologyError(f"seed must be a non-negative integer, got {value!r}.")
        w.max = max(w.max, value)
        w.value = value

    ctl.put = put
    return ctl


_M_CHOICES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128)


def _m(family, default, n):
    opts = [("auto", None)] + [(str(m), m) for m in _M_CHOICES]
    if default not in (None, _EMPTY) and default not in _M_CHOICES:
        opts.append((str(default), default))
    return _choice("M", opts, None if default is _EMPTY else default,
                   tip="number of basis-matrix draws (auto: from eps and p)")


def _rule(family, default, n):
    from declearn.topology import RULES

    rules = list(RULES)
    if default not in (_EMPTY, None) and default not in rules:
        rules.append(default)
    return _choice("rule", [(r, r) for r in rules],
                   rules[0] if default in (_EMPTY, None) else default, tip="weight rule")


def _factor_pairs(n: int) -> list[tuple[int, int]]:
    return [(r, n // r) for r in range(1, n + 1) if n % r == 0]


def _shape(family, default, n):
    w = ipywidgets.Dropdown(description="shape", style=_DESC,
                            layout=ipywidgets.Layout(width="240px"),
                            tooltip="rows x columns of the grid (auto: the squarest)")

    def options(n):
        return ["auto"] + [f"{r} x {c}" for r, c in _factor_pairs(n)]

    w.options = options(n)

    def get():
        if w.value == "auto":
            return None
        r, c = w.value.split(" x ")
        return (int(r), int(c))

    def put(v):
        label = "auto" if v is None else f"{v[0]} x {v[1]}" if len(v) == 2 else None
        if label not in w.options:
            raise TopologyError(
                f"shape={v!r} does not fit n: choose one of {', '.join(w.options)}."
            )
        w.value = label

    def on_n(n):
        old = w.value
        w.options = options(n)
        w.value = old if old in w.options else "auto"

    put(None if default is _EMPTY else default)
    return ParamControl(w, get, put, on_n)


def _center(family, default, n):
    ctl = _int_slider("center", 0 if default is _EMPTY else int(default), 0, max(n - 1, 0),
                      tip="the hub node")
    w = ctl.widget

    def on_n(n):
        w.max = max(n - 1, 0)  # the slider clamps value into the new range

    ctl.on_n = on_n
    return ctl


def _ports(family, default, n):
    w = ipywidgets.ToggleButtons(options=[("1 port", 1), ("2 ports", 2)],
                                 value=2 if default is _EMPTY else int(default),
                                 description="ports", style={**_DESC, "button_width": "70px"},
                                 tooltips=["pairwise exchange (even n)",
                                           "send to one node, receive from another (any n)"])

    def put(v):
        if v not in (1, 2):
            raise TopologyError(f"ports must be 1 or 2, got {v!r}.")
        w.value = v

    return ParamControl(w, lambda: int(w.value), put)


def _base(family, default, n):
    # Static families buildable from n alone: the base graph of a one-peer sequence.
    names = [f for f in registered_families(dynamic=False)
             if all(v is not _EMPTY for v in family_info(f).params.values())]
    default = "exponential" if default is _EMPTY else default
    if default not in names:
        names.append(default)
    return _choice("base", [(f, f) for f in names], default, tip="the regular base graph")


def _flag(name):
    def factory(family, default, n):
        w = ipywidgets.Checkbox(value=bool(False if default is _EMPTY else default),
                                description=name, style=_DESC, indent=False)

        def put(v):
            if not isinstance(v, bool):
                raise TopologyError(f"{name} must be True or False, got {v!r}.")
            w.value = v

        return ParamControl(w, lambda: bool(w.value), put)

    return factory


#: Control factories by parameter name: ``factory(family, default, n) -> ParamControl``.
#: A parameter not listed here gets a control from its default's type (see
#: :func:`param_control`), or none (its default is then used).
PARAM_CONTROLS: dict[str, Callable] = {
    "eta": _eta,
    "p": _p,
    "eps": _eps,
    "radius": _radius,
    "seed": _seed,
    "M": _m,
    "rule": _rule,
    "shape": _shape,
    "center": _center,
    "ports": _ports,
    "base": _base,
    "torus": _flag("torus"),
    "reverse": _flag("reverse"),
}

#: Not parameters of the picker even if a family declares them (the step of a dynamic
#: topology is chosen by the widget that shows it).
SKIPPED_PARAMS = ("k",)


def param_control(family: str, name: str, default, n: int) -> ParamControl | None:
    """A bounded control for parameter ``name`` of ``family`` (default ``default``; ``n`` the
    current size), or None when the picker has none for it and the default is used.

    Known names come from :data:`PARAM_CONTROLS`; an unknown one gets a Checkbox for a bool
    default, a slider around an int or float default, a Dropdown of the one value for a str
    default, and nothing otherwise."""
    if name in SKIPPED_PARAMS:
        return None
    if name in PARAM_CONTROLS:
        return PARAM_CONTROLS[name](family, default, n)
    if isinstance(default, bool):
        return _flag(name)(family, default, n)
    if isinstance(default, int):
        return _int_slider(name, default, min(0, default), max(10, 4 * abs(default)))
    if isinstance(default, float) and math.isfinite(default):
        hi = max(1.0, 4.0 * abs(default))
        lo = 0.0 if default >= 0 else -hi
        return _float_slider(name, default, lo, hi, hi / 100.0, fmt=".3g")
    if isinstance(default, str):
        return _choice(name, [(default, default)], default)
    return None


# ---------------------------------------------------------------------- the family blurb
_ROLE = re.compile(r":\w+:`~?([^`]+)`")
_CODE = re.compile(r"``([^`]+)``")


def family_blurb(name: str) -> str:
    """The first paragraph of the family's docstring as HTML (``code`` kept as code): the
    registry's ``summary`` is only its first line, often cut mid-sentence."""
    info = family_info(name)
    doc = inspect.getdoc(info.fn) or info.summary or ""
    para = " ".join(doc.split("\n\n")[0].split())
    para = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], para)
    parts = _CODE.split(para)  # odd items were inside ``...``
    out = "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )
    kind = "dynamic" if info.dynamic else "static"
    return (f'<div style="font-size:90%;line-height:1.3;max-width:520px;color:#333">'
            f"<b>{html.escape(name)}</b> ({kind}): {out}</div>")


# ---------------------------------------------------------------------- the picker
class TopologyPicker(ipywidgets.VBox):
    """A family dropdown, an n slider and one control per family parameter (eta, seed, p,
    radius, ...), rebuilt when the family changes; builds the topology on every change.

    ``TopologyPicker("exponential", n=32)``; ``families=[...]`` offers only those families
    (default: every registered one); ``n_min``/``n_max`` bound the n slider; further keyword
    arguments set parameters of the initial family (``TopologyPicker("erdos_renyi", 32,
    p=0.2)``).

    Traits: ``topology`` (the built Topology/DynamicTopology, or None when it cannot be built)
    and ``error`` (a readable message then, "" otherwise). Controls: ``family`` (Dropdown),
    ``n`` (IntSlider), ``params`` (name -> widget of the current family); ``param_values()``
    gives the keyword arguments passed to ``make``.
    """

    topology = traitlets.Any(None)
    error = traitlets.Unicode("")

    def __init__(self, family: str = "ring", n: int = 16, *, families: list[str] | None = None,
                 n_min: int = 2, n_max: int = 256, **params):
        names = list(registered_families() if families is None else families)
        if not names:
            raise TopologyError("families is empty: pass None (every family) or some names.")
        for f in [family, *names]:
            family_info(f)  # an unknown name raises with the closest matches
        if family not in names:
            raise TopologyError(
                f"family {family!r} is not among the offered families: {', '.join(names)}."
            )
        if isinstance(n, bool) or not isinstance(n, int) or not (1 <= n_min <= n <= n_max):
            raise TopologyError(
                f"n must be an integer in n_min..n_max = {n_min}..{n_max}, got {n!r}; "
                "pass n_min=/n_max= to widen the slider."
            )
        self._quiet = 0  # > 0 while several controls change at once: build once, at the end
        self._controls: dict[str, ParamControl] = {}
        self.params: dict[str, ipywidgets.Widget] = {}
        self.family = ipywidgets.Dropdown(options=names, value=family, description="family",
                                          style=_DESC, layout=ipywidgets.Layout(width="340px"))
        self.summary = ipywidgets.HTML(family_blurb(family))
        self.n = ipywidgets.IntSlider(
            value=n, min=n_min, max=n_max, description="n", style=_DESC, layout=_WIDE,
            continuous_update=False, tooltip="number of nodes",
        )
        self.param_box = ipywidgets.VBox()
        self.error_label = ipywidgets.HTML("")
        super().__init__([self.family, self.summary, self.n, self.param_box, self.error_label])
        self._make_controls(family, n)
        self._put_params(family, params)
        self.family.observe(self._on_family, names="value")
        self.n.observe(self._on_n, names="value")
        self._build()

    # ------------------------------------------------------------------ API
    def param_values(self) -> dict:
        """The keyword arguments of ``make(family, n, **kwargs)`` shown by the controls."""
        return {name: ctl.get() for name, ctl in self._controls.items()}

    def close(self) -> None:
        """Close the picker and all its controls (again: nothing)."""
        if self.comm is None:
            return
        close_descendants(self)
        super().close()

    # ------------------------------------------------------------------ internals
    def _make_controls(self, family: str, n: int) -> None:
        for ctl in self._controls.values():
            ctl.widget.unobserve(self._on_param, names="value")
            ctl.widget.close()
        self._controls = {}
        missing = []
        for name, default in family_info(family).params.items():
            try:
                ctl = param_control(family, name, default, n)
            except Exception:  # noqa: BLE001 - a control factory must not break the picker
                ctl = None
            if ctl is None:
                if default is _EMPTY:
                    missing.append(name)
                continue
            self._controls[name] = ctl
            ctl.widget.observe(self._on_param, names="value")
        self._missing = missing
        self.params = {name: ctl.widget for name, ctl in self._controls.items()}
        self.param_box.children = [ctl.widget for ctl in self._controls.values()]

    def _put_params(self, family: str, params: dict) -> None:
        known = family_info(family).params
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise TopologyError(
                f"Family {family!r} has no parameter {', '.join(unknown)}; it takes "
                f"{', '.join(known) or 'only n'}."
            )
        uncontrolled = sorted(set(params) - set(self._controls))
        if uncontrolled:
            raise TopologyError(
                f"The picker has no control for {', '.join(uncontrolled)} of {family!r}."
            )
        self._quiet += 1
        try:
            for name, value in params.items():
                self._controls[name].put(value)
        finally:
            self._quiet -= 1

    def _on_family(self, change) -> None:
        self._quiet += 1
        try:
            self.summary.value = family_blurb(change["new"])
            self._make_controls(change["new"], self.n.value)
        except Exception as exc:  # noqa: BLE001 - a message in the widget, never a traceback
            self._show(None, describe_error(exc, "the controls could not be built"))
            return
        finally:
            self._quiet -= 1
        self._build()

    def _on_n(self, change) -> None:
        self._quiet += 1
        try:
            for ctl in self._controls.values():
                if ctl.on_n is not None:
                    ctl.on_n(change["new"])
        except Exception as exc:  # noqa: BLE001 - a message in the widget, never a traceback
            self._show(None, describe_error(exc, "the controls could not follow n"))
            return
        finally:
            self._quiet -= 1
        self._build()

    def _on_param(self, change) -> None:
        self._build()

    def _build(self) -> None:
        if self._quiet:
            return
        family, n = self.family.value, self.n.value
        if self._missing:
            self._show(None, f"The picker cannot set the required parameter(s) "
                             f"{', '.join(self._missing)} of {family!r}; build it with "
                             f"declearn.topology.make({family!r}, n, ...) instead.")
            return
        try:
            kwargs = self.param_values()
            topo = make(family, n, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a message in the widget, never a traceback
            self._show(None, describe_error(exc, f"{family}(n={n}) could not be built"))
            return
        self._show(topo, "")

    def _show(self, topo, message: str) -> None:
        # error first: an observer of `topology` then sees a consistent `error`.
        self.error = message
        self.error_label.value = error_html(message)
        self.topology = topo
