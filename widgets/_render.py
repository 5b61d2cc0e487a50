"""Shared plumbing of the widgets: figures as PNG images, a background redraw worker, messages.

How our widgets show matplotlib: each widget owns a persistent ``Figure`` (built without
pyplot, Agg canvas, so nothing is shown twice and nothing leaks into ``plt``), updates the data of
its artists on a change (``set_data``, ``set_segments``, ...) and renders the figure to PNG
bytes held by an ``ipywidgets.Image``. That works the same in JupyterLab, in a headless kernel
and in tests, which read back the bytes or, better, the artists' data.

Sharp pictures: a figure of ``w x h`` inches is shown ``w * DPI`` CSS pixels wide (the image's
layout says so, so the browser never stretches it to the output's width) and rendered at
``DPI * PIXEL_RATIO`` pixels per inch, so that every CSS pixel has ``PIXEL_RATIO`` device pixels
behind it: sharp on a HiDPI ("retina", devicePixelRatio 2) screen, and downscaled cleanly on a
standard one. Fonts and line widths are in points, so the picture looks the same, only sharper.

:class:`RedrawWorker` runs a widget's redraw in one background thread. A control change only
marks the widget *dirty* and returns at once, so the kernel keeps reading slider events; the
worker then redraws from the *latest* control values. Changes that arrive while a redraw runs
coalesce into one more redraw (latest wins), and an optional ``delay`` debounces a burst of
changes. ``wait_idle()`` blocks until nothing is pending (tests, benchmarks); ``close()``
stops the thread.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import struct
import threading
import time
import traceback
import zlib
from collections.abc import Callable

import ipywidgets
import numpy as np

__all__ = [
    "DPI",
    "PIXEL_RATIO",
    "RedrawWorker",
    "blitted_png",
    "close_descendants",
    "describe_error",
    "display_layout",
    "encode_png",
    "error_html",
    "fmt",
    "new_figure",
    "note_html",
    "pin_axis_labels",
]

#: Displayed size of the pictures: CSS pixels per inch of the figure size.
DPI = 80
#: Device pixels rendered per CSS pixel: 2 covers HiDPI screens. Set it before building a
#: widget (``widgets._render.PIXEL_RATIO = 1``, or the environment variable
#: ``DECLEARN_PIXEL_RATIO``) for smaller, faster and softer images.
PIXEL_RATIO = float(os.environ.get("DECLEARN_PIXEL_RATIO", "2"))


def new_figure(width: float, height: float, *, layout: str | None = None):
    """A matplotlib Figure of ``width x height`` inches with an Agg canvas, made without pyplot
    (no global state, no figure left open, no double display in a notebook), rendered at
    ``DPI * PIXEL_RATIO`` pixels per inch; ``layout`` is matplotlib's layout engine."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI * PIXEL_RATIO, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def display_layout(fig) -> dict[str, str]:
    """Layout of the ``ipywidgets.Image`` showing ``fig``: its size in CSS pixels (``DPI`` per
    inch, whatever resolution it was rendered at), shrunk with its aspect ratio kept when the
    output is narrower."""
    width = fig.get_size_inches()[0]
    return {"width": f"{round(width * DPI)}px", "height": "auto", "max_width": "100%",
            "object_fit": "contain"}


def pin_axis_labels(fig) -> None:
    """Keep every axis label where the last draw put it (in axes coordinates).

    matplotlib otherwise re-places each label on every draw, measuring all tick labels to
    avoid them (about a tenth of a draw). Call it once the layout is final.
    """
    for ax in fig.axes:
        to_axes = ax.transAxes.inverted()
        for axis in (ax.xaxis, ax.yaxis):
            label = axis.label
            if label.get_text() and label.get_visible():
                anchor = label.get_transform().transform(label.get_position())
                axis.set_label_coords(*to_axes.transform(anchor))


def blitted_png(fig, background, moving) -> tuple[bytes, object]:
    """PNG of ``fig`` drawn by blitting; returns ``(png, background)``.

    With ``background=None`` the whole figure is drawn once, its ``animated`` artists left out,
    and that picture is saved as the new background (a figure with a layout engine keeps the
    layout of this first draw). Otherwise the saved background is restored. Then only the
    artists in ``moving`` (the animated ones) are drawn on top: a few ms instead of a full
    draw, whose tick labels and titles cost most of the time.
    """
    canvas = fig.canvas
    if background is None:
        canvas.draw()
        if fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")
            pin_axis_labels(fig)
        background = canvas.copy_from_bbox(fig.bbox)
    else:
        canvas.restore_region(background)
    for artist in moving:
        artist.axes.draw_artist(artist)
    return encode_png(np.asarray(canvas.buffer_rgba())), background


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an ``(h, w, 4)`` uint8 image, alpha dropped: every row unfiltered (filter
    byte 0) and the whole deflated at level 1. Plots are mostly flat colour, so this is as
    small as Pillow's adaptive filtering and about twice as fast, which matters at
    ``PIXEL_RATIO`` 2 (four times the pixels)."""
    h, w = rgba.shape[:2]
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0
    rows[:, 1:].reshape(h, w, 3)[...] = rgba[..., :3]
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.data, 1)) + _png_chunk(b"IEND", b""))


def describe_error(exc: BaseException, what: str = "") -> str:
    """A one-paragraph message for a user: the error's own text for our errors (they say
    what to do), the exception type and text for anything else. Never a traceback."""
    from declearn.errors import TopologyError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, TopologyError):
        return text
    prefix = f"{what}: " if what else ""
    return f"{prefix}{type(exc).__name__}: {text}"


def error_html(message: str) -> str:
    """HTML for an error message shown inside a widget (escaped; empty for no message)."""
    if not message:
        return ""
    return (
        '<div style="color:#8a1c1c;background:#fdecea;border-left:4px solid #d9534f;'
        'padding:4px 8px;margin:2px 0;line-height:1.35;white-space:normal">'
        f"{html.escape(message)}</div>"
    )


def note_html(message: str) -> str:
    """HTML for a neutral note (grey, small); empty for no message."""
    if not message:
        return ""
    return f'<div style="color:#555;font-size:90%;line-height:1.3">{html.escape(message)}</div>'


def close_descendants(widget) -> None:
    """Close every widget below ``widget`` (children, their children, ...), not ``widget``
    itself: ipywidgets' ``close()`` does not recurse, and a closed explorer should not leave
    its controls registered in the kernel."""
    stack = list(getattr(widget, "children", ()))
    seen = set()
    while stack:
        w = stack.pop()
        if id(w) in seen or not isinstance(w, ipywidgets.Widget):
            continue
        seen.add(id(w))
        stack.extend(getattr(w, "children", ()))
        w.close()


def fmt(x, digits: int = 6) -> str:
    """A number as shown in the widgets' labels: ``digits`` significant digits, "inf", or an
    em dash for "no value"."""
    if x is None:
        return "\u2014"
    x = float(x)
    if math.isnan(x):
        return "\u2014"
    if x == float("inf"):
        return "inf"
    return f"{x:.{digits}g}"


class RedrawWorker:
    """Run ``fn()`` in one background thread whenever :meth:`request` is called.

    ``fn`` reads the widget's *current* state, so requests made while it runs are merged into
    one further run. ``delay`` (seconds) waits for that long without a new request before
    running (debounce); 0 runs as soon as the thread is free. Errors raised by ``fn`` go to
    ``on_error(exc)`` (default: remembered in :attr:`last_error`), never to the notebook as a
    traceback. The thread starts on the first request, is a daemon, and ends after
    ``idle_exit`` seconds without a request (the next request starts a new one), so a
    notebook full of forgotten widgets does not keep a thread each.
    """

    def __init__(self, fn: Callable[[], None], *, delay: float = 0.0,
                 on_error: Callable[[BaseException], None] | None = None,
                 name: str = "widget-redraw", idle_exit: float = 60.0):
        self._fn = fn
        self._idle_exit = float(idle_exit)
        self._delay = float(delay)
        self._on_error = on_error
        self._name = name
        self._cond = threading.Condition()
        self._dirty = False
        self._busy = False
        self._closed = False
        self._last_request = 0.0
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        self.last_traceback = ""  # for debugging a widget; never shown to the user
        self.runs = 0

    # ------------------------------------------------------------------ API
    def request(self) -> None:
        """Ask for one more run of ``fn`` with the state as it will be when it starts."""
        with self._cond:
            if self._closed:
                return
            self._dirty = True
            self._last_request = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def run_now(self) -> None:
        """Run ``fn`` in the calling thread (after any run in progress), e.g. for the first
        picture of a widget, so that it is there as soon as the constructor returns."""
        self.wait_idle(timeout=60.0)
        with self._cond:
            self._busy = True
        try:
            self._call()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def pending(self) -> bool:
        """Whether a run is requested or in progress."""
        with self._cond:
            return self._dirty or self._busy

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Return once no run is requested or in progress; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + float(timeout)
        with self._cond:
            while (self._dirty or self._busy) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"the widget was still redrawing after {timeout:g} s; call wait_idle "
                        "with a longer timeout, or look for a redraw that never finishes."
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the thread (a run in progress finishes first; pending requests are dropped)."""
        with self._cond:
            self._closed = True
            self._dirty = False
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closed:
                    if not self._cond.wait(self._idle_exit) and not self._dirty:
                        self._thread = None  # idle: end; request() starts a new thread
                        return
                if self._closed:
                    return
                while self._delay > 0.0:  # debounce: quiet for `delay` seconds
                    remaining = self._last_request + self._delay - time.monotonic()
                    if remaining <= 0.0 or self._closed:
                        break
                    self._cond.wait(remaining)
                if self._closed:
                    return
                self._dirty = False
                self._busy = True
            try:
                self._call()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _call(self) -> None:
        self.runs += 1
        try:
            self._fn()
        except Exception as exc:  # noqa: BLE001 - shown inside the widget, never as a traceback
            self.last_error = exc
            self.last_traceback = traceback.format_exc()
            if self._on_error is not None:
                with contextlib.suppress(Exception):  # the error display itself failed
                    self._on_error(exc)
