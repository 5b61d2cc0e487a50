"""The shell every widget shares: one background redraw worker, errors shown in the widget,
``wait_idle()`` and ``close()``.

A widget is a pure model (numbers from declearn), a figure (a persistent matplotlib Figure
drawn to PNG) and this shell around them: an ``ipywidgets.VBox`` whose controls ask the worker
for a redraw (:class:`~widgets._render.RedrawWorker`: the latest control values win, the
kernel never waits). What the worker raises is shown as a message in the widget, never as a
traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import ipywidgets

from widgets._render import (
    RedrawWorker,
    close_descendants,
    describe_error,
    display_layout,
    error_html,
)

__all__ = ["WidgetShell"]


class WidgetShell(ipywidgets.VBox):
    """Base of the widgets. A subclass builds its controls, calls ``super().__init__(children)``
    and :meth:`_start_worker` with its redraw function and the HTML widget that shows errors;
    extra links to close go to ``self._links`` and :meth:`_stop` is called first on close."""

    #: Default of :meth:`wait_idle`'s timeout (seconds).
    WAIT_TIMEOUT = 10.0

    def _start_worker(self, fn: Callable[[], None], *, name: str, errors: ipywidgets.HTML,
                      what: str = "", delay: float = 0.0) -> RedrawWorker:
        self._errors = errors
        self._error_what = what
        self._worker = RedrawWorker(fn, delay=delay, on_error=self._show_error, name=name)
        return self._worker

    # ------------------------------------------------------------------ API
    def wait_idle(self, timeout: float | None = None) -> None:
        """Return once no redraw is pending (TimeoutError after ``timeout`` seconds)."""
        self._worker.wait_idle(self.WAIT_TIMEOUT if timeout is None else timeout)

    def close(self) -> None:
        """Stop the background thread and close the widget and every control in it (again:
        nothing)."""
        if getattr(self, "_shell_closed", False):
            return
        self._shell_closed = True
        self._stop()
        worker = getattr(self, "_worker", None)  # absent if the constructor failed
        if worker is not None:
            worker.close()
        for link in getattr(self, "_links", ()):
            with contextlib.suppress(Exception):  # already gone
                link.close() if isinstance(link, ipywidgets.Widget) else link.unlink()
        close_descendants(self)
        super().close()

    # ------------------------------------------------------------------ for subclasses
    def _stop(self) -> None:
        """Called first by :meth:`close` (e.g. to make a run in progress give up)."""

    def _show_error(self, exc: BaseException) -> None:
        self._errors.value = error_html(describe_error(exc, self._error_what))

    def _guard(self, fn: Callable, *args) -> None:
        """``fn(*args)`` with any error shown in the widget instead of raised."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, never a traceback
            self._show_error(exc)

    @staticmethod
    def _show_png(image: ipywidgets.Image, png: bytes, fig) -> None:
        """Put ``png`` (a render of ``fig``) into ``image``, shown at the figure's size in
        CSS pixels whatever the pixel ratio it was rendered at."""
        layout = display_layout(fig)
        if image.layout.width != layout["width"]:
            for key, value in layout.items():
                setattr(image.layout, key, value)
        image.value = png
