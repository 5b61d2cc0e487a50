r"""LiveTraining: a training run's curves, drawn while it runs (simulator or MPI engines).

What it shows, from the :class:`~declearn.optim.Record` objects of :func:`declearn.optim.train`
(every ``every`` steps): each worker's training loss ``l_i`` (one curve per worker, log
axis); each worker's own model's test accuracy, with the accuracy of the average model
``x_bar = (1/n) sum_i x_i`` in bold dashes; and the consensus distance
``Xi = (1/n) sum_i ||x_i - x_bar||^2`` (log axis), how far apart the workers' models are. A
progress bar counts the steps. Two ways to feed it::

    live = LiveTraining(steps=STEPS); display(live)
    train(model, opt, data, batches, STEPS, every=10, on_record=live.update)  # simulator
    live.follow(ar)   # engines: ar = the AsyncResult of a training that calls publish_record

Three parts, as for the other widgets: the model (:class:`LiveTrainingModel`, records in,
arrays out, no ipywidgets), the figure (:class:`LiveTrainingFigure`, a persistent Figure
rendered to PNG) and the shell (:class:`LiveTraining`). ``update`` only stores the record and
asks the widget's worker thread for a redraw; the worker draws at most every
``min_interval`` seconds (and never spends more than about a fifth of the time drawing), so a
fast run is slowed little, and the last record is always drawn.
"""

from __future__ import annotations

import contextlib
import html
import math
import threading
import time
from numbers import Real

import ipywidgets
import numpy as np

from widgets._base import WidgetShell
from widgets._render import blitted_png, fmt, new_figure

__all__ = ["LiveTraining", "LiveTrainingFigure", "LiveTrainingModel"]

_FIELDS = ("step", "loss", "accuracy", "mean_accuracy", "consensus")


# ============================================================================ model
class LiveTrainingModel:
    """The records of one run, as arrays (safe to add from one thread and read from another).

    ``add(record)`` takes a :class:`~declearn.optim.Record` or a dict with its fields;
    :meth:`arrays` returns ``steps (k,)``, ``loss (k, n)``, ``accuracy (k, n)``,
    ``mean_accuracy (k,)`` and ``consensus (k,)`` over the ``k`` records so far. ``steps``
    (optional) is the run's length, for the progress bar and the x-axis."""

    def __init__(self, steps: int | None = None):
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 1):
            raise ValueError(f"steps must be the run's number of steps (an integer >= 1) or "
                             f"None, got {steps!r}.")
        self.total_steps = steps
        self._lock = threading.Lock()
        self._rows: list[tuple] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def n(self) -> int | None:
        """Number of workers (None before the first record)."""
        with self._lock:
            return len(self._rows[0][1]) if self._rows else None

    @property
    def last_step(self) -> int:
        with self._lock:
            return self._rows[-1][0] if self._rows else 0

    def clear(self, steps: int | None = None) -> None:
        """Forget the records (before following another run of ``steps`` steps)."""
        self.__init__(steps)

    def add(self, record) -> None:
        fields = record.as_dict() if hasattr(record, "as_dict") else record
        if not isinstance(fields, dict) or not set(_FIELDS) <= set(fields):
            raise TypeError(f"a record is a declearn.optim.Record (or a dict with the fields "
                            f"{', '.join(_FIELDS)}), got {type(record).__name__}.")
        step = fields["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
            raise ValueError(f"a record's step must be an integer >= 1, got {step!r}.")
        loss = np.asarray(fields["loss"], dtype=float).reshape(-1)
        acc = np.asarray(fields["accuracy"], dtype=float).reshape(-1)
        if loss.size == 0 or loss.shape != acc.shape:
            raise ValueError(f"a record needs one loss and one accuracy per worker, got "
                             f"{loss.size} losses and {acc.size} accuracies.")
        row = (int(step), loss, acc, float(fields["mean_accuracy"]), float(fields["consensus"]))
        with self._lock:
            if self._rows and loss.size != self._rows[0][1].size:
                raise ValueError(f"this record has {loss.size} workers, the earlier ones "
                                 f"{self._rows[0][1].size}: call clear() before following "
                                 "another run.")
            if self._rows and step <= self._rows[-1][0]:
                raise ValueError(f"record of step {step} after one of step "
                                 f"{self._rows[-1][0]}: steps must increase; call clear() "
                                 "before following another run.")
            self._rows.append(row)

    def arrays(self) -> dict[str, np.ndarray]:
        """``{field: array}`` over the records so far (copies)."""
        with self._lock:
            rows = list(self._rows)
        n = rows[0][1].size if rows else 0
        return {
            "step": np.array([r[0] for r in rows], dtype=int),
            "loss": np.array([r[1] for r in rows]).reshape(len(rows), n),
            "accuracy": np.array([r[2] for r in rows]).reshape(len(rows), n),
            "mean_accuracy": np.array([r[3] for r in rows], dtype=float),
            "consensus": np.array([r[4] for r in rows], dtype=float),
        }

    def summary(self) -> str:
        """One line on the latest record (plain text; empty before the first)."""
        with self._lock:
            if not self._rows:
                return ""
            step, loss, acc, mean_acc, xi = self._rows[-1]
        total = f" / {self.total_steps}" if self.total_steps else ""
        return (f"step {step}{total}: training loss {fmt(loss.mean(), 4)} (mean over "
                f"{loss.size} workers), test accuracy {fmt(100 * acc.min(), 3)}% (worst worker)"
                f" to {fmt(100 * acc.max(), 3)}% (best), average model "
                f"{fmt(100 * mean_acc, 3)}%, consensus distance {fmt(xi, 3)}")


# ============================================================================ drawing
class LiveTrainingFigure:
    """Persistent Figure with three panels: per-worker training loss (log), per-worker test
    accuracy and the average model's (dashed), consensus distance (log); against the step.

    Frames are blitted (as :class:`~widgets.race.RaceFigure`): axes, ticks and legend are
    drawn once into a background, a frame draws only the curves. The background is redrawn
    when an axis' limits change, which the limits make rare: the x-axis spans the run's
    ``steps`` (or 1, 2 or 5 times a power of ten), the log axes whole decades."""

    def __init__(self, total_steps: int | None = None):
        self.fig = new_figure(13.0, 3.6, layout="constrained")
        ax_loss, ax_acc, ax_xi = self.fig.subplots(1, 3)
        self.axes = {"loss": ax_loss, "accuracy": ax_acc, "consensus": ax_xi}
        ax_loss.set(yscale="log", ylabel="training loss", ylim=(1e-3, 1e1))
        ax_acc.set(ylabel="test accuracy [%]", ylim=(0, 100))
        ax_xi.set(yscale="log", ylabel=r"$\Xi = \frac{1}{n}\sum_i \|x_i - \bar x\|^2$",
                  ylim=(1e-4, 1e0))
        ax_loss.set_title("training loss, one curve per worker", fontsize=10)
        ax_acc.set_title("test accuracy of each worker's model", fontsize=10)
        ax_xi.set_title("consensus distance", fontsize=10)
        for ax in self.axes.values():
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            ax.set_xlim(0, _right(total_steps, 0))
        self.worker_lines: dict[str, list] = {"loss": [], "accuracy": []}
        (self.mean_line,) = ax_acc.plot([], [], "k--", lw=2.2, label=r"average model $\bar x$",
                                        animated=True)
        (self.xi_line,) = ax_xi.plot([], [], color="C3", lw=1.8, animated=True)
        self.xi_note = ax_xi.text(0.5, 0.5, "", transform=ax_xi.transAxes, ha="center",
                                  va="center", fontsize=10, color="C3", animated=True)
        self._key = None
        self._background = None

    def _workers(self, n: int) -> None:
        """Make sure there is one line per worker on the loss and accuracy panels."""
        if len(self.worker_lines["loss"]) == n:
            return
        for lines in self.worker_lines.values():
            for line in lines:
                line.remove()
            lines.clear()
        width, alpha = (1.2, 0.9) if n <= 10 else (0.8, 0.55)
        for i in range(n):
            color = f"C{i % 10}" if n <= 10 else _cmap()(i / max(n - 1, 1))
            for key in ("loss", "accuracy"):
                (line,) = self.axes[key].plot([], [], color=color, lw=width, alpha=alpha,
                                              animated=True,
                                              label="one worker's model" if i == 0 else None)
                self.worker_lines[key].append(line)
        self.axes["accuracy"].legend(handles=[self.worker_lines["accuracy"][0], self.mean_line],
                                     fontsize=8, loc="lower right")
        self._background = None

    def update(self, arrays: dict, total_steps: int | None = None) -> None:
        steps = arrays["step"]
        if steps.size == 0:
            return
        n = arrays["loss"].shape[1]
        self._workers(n)
        loss = np.where(arrays["loss"] > 0, arrays["loss"], np.nan)
        for i in range(n):
            self.worker_lines["loss"][i].set_data(steps, loss[:, i])
            self.worker_lines["accuracy"][i].set_data(steps, 100 * arrays["accuracy"][:, i])
        self.mean_line.set_data(steps, 100 * arrays["mean_accuracy"])
        xi = np.where(arrays["consensus"] > 0, arrays["consensus"], np.nan)
        self.xi_line.set_data(steps, xi)
        exact = arrays["consensus"][-1] == 0  # a log axis cannot show it
        self.xi_note.set_text("exact consensus: $\\Xi = 0$\n(the models are equal)"
                              if exact else "")
        limits = {"x": (0, _right(total_steps, int(steps[-1])))}
        for key, values in (("loss", loss), ("consensus", xi)):
            values = values[np.isfinite(values)]
            if values.size:  # whole decades, so the axis does not move at every record
                low = math.floor(math.log10(values.min()))
                high = max(math.ceil(math.log10(values.max())), low + 1)
                limits[key] = (10.0 ** low, 10.0 ** high)
        key = tuple(sorted(limits.items()))
        if key != self._key:
            for name, ax in self.axes.items():
                ax.set_xlim(*limits["x"])
                if name in limits:
                    ax.set_ylim(*limits[name])
            self._key = key
            self._background = None

    def line_data(self, panel: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """(x, y) of each line drawn on ``panel`` ("loss", "accuracy", "consensus"), as
        drawn (accuracy in %); on "accuracy" the average model's line comes last."""
        if panel == "consensus":
            lines = [self.xi_line]
        else:
            lines = list(self.worker_lines[panel]) + ([self.mean_line]
                                                      if panel == "accuracy" else [])
        return [(np.asarray(ln.get_xdata(), dtype=float), np.asarray(ln.get_ydata(),
                                                                     dtype=float))
                for ln in lines]

    def png(self) -> bytes:
        moving = [*self.worker_lines["loss"], *self.worker_lines["accuracy"], self.mean_line,
                  self.xi_line, self.xi_note]
        png, self._background = blitted_png(self.fig, self._background, moving)
        return png


def _right(total_steps: int | None, last: int) -> float:
    """The x-axis' right end: the run's length, or (unknown, or passed) the least of 1, 2, 5
    times a power of ten that reaches the last step."""
    if total_steps and last <= total_steps:
        return total_steps
    x = max(last, 1)
    exp = 10.0 ** math.floor(math.log10(x))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= x)


def _cmap():
    import matplotlib

    return matplotlib.colormaps["viridis"]


# ============================================================================ the widget
class LiveTraining(WidgetShell):
    """Curves of a training run, updated while it runs; see the module docstring.

    ``LiveTraining(steps=None, *, min_interval=0.3)``: ``steps`` is the run's length (for the
    progress bar); ``min_interval`` the least time between two redraws (seconds). Feed it
    with :meth:`update` (``train(..., on_record=live.update)``) or :meth:`follow` (a request
    running on the engines). For tests and notebooks: :attr:`model` (the records as arrays),
    :attr:`figure` (the drawn lines), :attr:`bar`, :attr:`status`, :attr:`records`,
    :meth:`wait_idle`, :meth:`close`.
    """

    def __init__(self, steps: int | None = None, *, min_interval: float = 0.3):
        if isinstance(min_interval, bool) or not isinstance(min_interval, Real) \
                or not min_interval >= 0:
            raise ValueError(f"min_interval must be a number of seconds >= 0, got "
                             f"{min_interval!r}.")
        self.model = LiveTrainingModel(steps)
        self.min_interval = float(min_interval)
        self.figure = LiveTrainingFigure(steps)  # empty axes, laid out once, shown at once
        self.draws = 0
        self.draw_seconds = 0.0  # total time spent drawing (the worker thread's)
        self._last_draw_end = -math.inf
        self._last_draw_cost = 0.0
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=steps or 1, description="step",
                                          layout=ipywidgets.Layout(width="420px"))
        self.status = ipywidgets.HTML("waiting for the first record ...")
        self.message = ipywidgets.HTML()
        self.image = ipywidgets.Image(format="png")
        self._start_worker(self._redraw, name="LiveTraining-redraw", errors=self.message,
                           what="live plot")
        super().__init__([self.bar, self.status, self.message, self.image])
        self._show_png(self.image, self.figure.png(), self.figure.fig)

    @property
    def records(self) -> list[dict]:
        """The records received so far, as dicts of arrays (one per record)."""
        a = self.model.arrays()
        return [{key: a[key][i] for key in a} for i in range(a["step"].size)]

    # ------------------------------------------------------------------ feeding
    def update(self, record) -> None:
        """Add one record (a :class:`~declearn.optim.Record` or its dict) and ask for a
        redraw; returns at once (the drawing happens in the widget's thread)."""
        if getattr(self, "_shell_closed", False):
            return
        self.model.add(record)
        self._worker.request()

    def follow(self, ar, *, progress: bool = False, **kwargs) -> list:
        """Show the records of ``ar``, a request running on the engines whose training passes
        ``declearn.cluster.live.publish_record`` as ``on_record``, until it ends; returns the
        records and raises the engines' errors (see :func:`declearn.cluster.live.follow`,
        which gets ``kwargs``; ``progress`` adds its tqdm bar to the widget's)."""
        from declearn.cluster.live import follow

        try:
            records = follow(ar, self.update, steps=self.model.total_steps, progress=progress,
                             **kwargs)
        except Exception as exc:
            self._show_error(exc)
            raise
        finally:
            with contextlib.suppress(TimeoutError):  # never hide the run's own error
                self.wait_idle()  # the last record is drawn when the cell ends
        return records

    # ------------------------------------------------------------------ drawing (worker)
    def _redraw(self) -> None:
        # Throttle: at most every min_interval s, and drawing at most ~1/5 of the time.
        gap = max(self.min_interval, 4.0 * self._last_draw_cost)
        wait = self._last_draw_end + gap - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if getattr(self, "_shell_closed", False):
            return
        start = time.perf_counter()
        arrays = self.model.arrays()
        self.figure.update(arrays, self.model.total_steps)
        png = self.figure.png()
        self._show_png(self.image, png, self.figure.fig)
        last = int(arrays["step"][-1]) if arrays["step"].size else 0
        self.bar.max = max(self.model.total_steps or last, 1)
        self.bar.value = min(last, self.bar.max)
        self.status.value = (f"<span style='font-size:90%'>{html.escape(self.model.summary())}"
                             "</span>")
        end = time.perf_counter()
        self.draws += 1
        self._last_draw_cost = end - start
        self.draw_seconds += end - start
        self._last_draw_end = end
