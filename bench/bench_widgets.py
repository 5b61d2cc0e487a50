"""Benchmark: widget responsiveness, from a control change to the new image, against 150 ms.

The target: a slider change for n <= 256 redraws within 150 ms. For n in (16, 64, 256)
we set a control the way the browser does (assigning ``.value`` in the kernel) and time until
the widget's new PNG is ready (``wait_idle()`` returns once the background redraw has
replaced ``image.value``). Each timed change alternates between two values so that every
assignment is a real change. Rows:

* TopologyExplorer: ``n`` (e.g. 256 <-> 254) for several families, a parameter (seed, eta,
  torus) and the step slider k of dynamic families (products W(k)...W(0) included);
* SpectralGapExplorer (default families, n_max = 1024, sweeps computed before timing): the
  cursor n (a new n costs one ``make`` + rho per family the first time), rho / gap toggle,
  iid / heterogeneous toggle;
* ConsensusPlayer and AlgorithmRace, when ``widgets/consensus_player.py`` / ``widgets/race.py``
  exist: their topology n, step slider, heterogeneity and step size (rows are skipped when
  the widget lacks the control). A widget that streams (it records ``first_image_seconds``,
  the time to the first picture of a change) is scored on that first picture; the time until
  its run finished is printed as "(info)" and not scored.

We print the median and the worst time per change (ms) and ``ratio = median / 150 ms``
(target <= 1). The machine may be shared: the worst column catches load spikes; rerun rows
that look off. BLAS runs on one thread by default (``--threads``): the matrices are small
(n <= 256), and a multi-threaded SVD or eigensolve competing with other processes for the
cores can take 50x longer than on one thread.

Usage::

    python bench/bench_widgets.py            # 5 timed changes per row, about a minute
    python bench/bench_widgets.py --quick    # 3 changes per row, n = 16 and 256
    python bench/bench_widgets.py --threads 0    # keep the environment's BLAS threads
    python bench/bench_widgets.py --pixel-ratio 1    # PNGs at 1 device pixel per CSS pixel

The pictures are rendered at ``widgets._render.PIXEL_RATIO`` device pixels per CSS pixel
(default 2, sharp on HiDPI screens: four times the pixels of ratio 1); the header says which.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time

TARGET_MS = 150.0


def time_changes(widget, setter, values, reps: int) -> list[float]:
    """ms from ``setter(v)`` to ``widget.wait_idle()`` returning, for ``reps`` changes that
    cycle through ``values`` (after one untimed change, which warms caches and imports)."""
    setter(values[-1])
    widget.wait_idle(60.0)
    times = []
    for i in range(reps):
        v = values[i % len(values)]
        t0 = time.perf_counter()
        setter(v)
        widget.wait_idle(60.0)
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def row(widget_name: str, control: str, n: int, times: list[float]) -> float:
    med = statistics.median(times)
    print(f"{widget_name:<20} {control:<34} {n:>4} {med:>9.1f} {max(times):>9.1f} "
          f"{med / TARGET_MS:>7.2f}", flush=True)
    return med / TARGET_MS


def setattr_value(w):
    def set_value(v):
        w.value = v

    return set_value


def bench_topology_explorer(ns, reps) -> list[float]:
    from widgets import TopologyExplorer

    ratios = []
    cases = [  # family, params, extra controls: (label, control getter, values)
        ("ring", {}, []),
        ("exponential", {}, []),
        ("grid", {}, [("torus", lambda ex: ex.picker.params["torus"], [True, False])]),
        ("erdos_renyi", {}, [("seed", lambda ex: ex.picker.params["seed"], [1, 2])]),
        ("od_equidyn", {}, [("eta", lambda ex: ex.picker.params["eta"], [0.55, 0.5]),
                            ("k (random steps)", lambda ex: ex.k, [3, 9, 17, 30])]),
        ("one_peer_exponential", {}, [("k", lambda ex: ex.k, [1, 2, 3, 4, 5, 6, 7, 0])]),
    ]
    for n in ns:
        for family, params, extra in cases:
            ex = TopologyExplorer(family, n=n, **params)
            try:
                if family == "erdos_renyi":  # a p that keeps G(n, p) connected at every n
                    ex.picker.params["p"].value = 0.35 if n <= 16 else 0.15
                    ex.wait_idle(60.0)
                other = n - 2 if n > 4 else n + 2
                ts = time_changes(ex, setattr_value(ex.picker.n), [n, other], reps)
                ratios.append(row("TopologyExplorer", f"{family}: n {other}<->{n}", n, ts))
                ex.picker.n.value = n
                ex.wait_idle(60.0)
                for label, get, values in extra:
                    ts = time_changes(ex, setattr_value(get(ex)), values, reps)
                    ratios.append(row("TopologyExplorer", f"{family}: {label}", n, ts))
                if ex.message.value or ex.picker.error:
                    print(f"   (message shown: {ex.picker.error or ex.message.value})")
            finally:
                ex.close()
    return ratios


def bench_spectral_gap(ns, reps) -> list[float]:
    from widgets import SpectralGapExplorer

    ratios = []
    sg = SpectralGapExplorer(n_max=1024)  # computes (or reuses) the default sweeps
    try:
        for n in ns:
            ts = time_changes(sg, setattr_value(sg.n), [n, n + 1], reps)
            ratios.append(row("SpectralGapExplorer", f"cursor n {n + 1}<->{n}", n, ts))
        ts = time_changes(sg, setattr_value(sg.quantity), ["rho", "gap"], reps)
        ratios.append(row("SpectralGapExplorer", "rho / gap toggle", sg.n.value, ts))
        ts = time_changes(sg, setattr_value(sg.setting), ["heterogeneous", "iid"], reps)
        ratios.append(row("SpectralGapExplorer", "iid / heterogeneous toggle", sg.n.value, ts))
        full = tuple(sg.families.value)
        ts = time_changes(sg, setattr_value(sg.families), [full[:-1], full], reps)
        ratios.append(row("SpectralGapExplorer", "deselect / select a family", sg.n.value, ts))
    finally:
        sg.close()
    return ratios


def _optional(module: str, cls: str):
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None


def bench_other(ns, reps) -> list[float]:
    """ConsensusPlayer / AlgorithmRace: their topology n and their own main controls (step k;
    heterogeneity and step size), when they have them. For a widget that records how long its
    first picture of a change took (``first_image_seconds``), that is printed too."""
    ratios = []
    extra_controls = (  # attribute, values to alternate
        ("step_slider", (5, 20, 50, 100)),
        ("heterogeneity", (2.0, 0.5)),
        ("lr", (0.1, 0.3)),
    )
    for module, cls in (("widgets.consensus_player", "ConsensusPlayer"),
                        ("widgets.race", "AlgorithmRace")):
        Widget = _optional(module, cls)
        if Widget is None:
            print(f"{cls:<20} (not available: {module} is missing)")
            continue
        for n in ns:
            try:
                w = Widget(n=n)
            except Exception as exc:  # noqa: BLE001 - a row, not a crash, for a widget we do not own
                print(f"{cls:<20} could not be built at n={n}: {type(exc).__name__}: {exc}")
                continue
            try:
                w.wait_idle(120.0)
                controls = []
                picker = getattr(w, "picker", None)
                if picker is not None:
                    other = n - 2 if n > 4 else n + 2
                    controls.append((f"topology n {other}<->{n}", picker.n, (n, other)))
                for name, values in extra_controls:
                    c = getattr(w, name, None)
                    if c is not None and hasattr(c, "value"):
                        values = [min(max(v, c.min), c.max) for v in values]
                        controls.append((name, c, values))
                for label, control, values in controls:
                    firsts = []

                    def set_value(v, control=control, firsts=firsts):
                        control.value = v

                    ts = []
                    set_value(values[-1])
                    w.wait_idle(120.0)
                    for i in range(reps):
                        t0 = time.perf_counter()
                        set_value(values[i % len(values)])
                        w.wait_idle(120.0)
                        ts.append(1e3 * (time.perf_counter() - t0))
                        first = getattr(w, "first_image_seconds", None)
                        if first is not None:
                            firsts.append(1e3 * first)
                    if firsts:  # a streaming widget: its first picture is the redraw
                        ratios.append(row(cls, f"{label}: first image", n, firsts))
                        row(cls, f"{label}: run finished (info)", n, ts)
                    else:
                        ratios.append(row(cls, label, n, ts))
            finally:
                w.close()
    return ratios


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 16 and 256, 3 changes per row")
    ap.add_argument("--n", type=int, nargs="*", help="node counts (default 16 64 256)")
    ap.add_argument("--reps", type=int, help="timed changes per row (default 5)")
    ap.add_argument("--only", nargs="*", choices=["explorer", "spectral", "others"],
                    help="which widgets to time")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/OpenMP threads (default 1: steadier on a shared machine; 0 keeps "
                         "the environment's setting)")
    ap.add_argument("--pixel-ratio", type=float,
                    help="device pixels per CSS pixel of the PNGs (default: the widgets' own, "
                         "DECLEARN_PIXEL_RATIO or 2)")
    args = ap.parse_args(argv)
    if args.pixel_ratio is not None:  # read when widgets._render is first imported
        os.environ["DECLEARN_PIXEL_RATIO"] = str(args.pixel_ratio)
    if args.threads > 0:  # before numpy is imported (the widgets are imported lazily below)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    ns = args.n or ([16, 256] if args.quick else [16, 64, 256])
    reps = args.reps or (3 if args.quick else 5)
    only = args.only or ["explorer", "spectral", "others"]
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    from widgets import _render

    print(f"ms from a control change to the new image (median and worst of {reps}); "
          f"ratio = median / {TARGET_MS:.0f} ms (target <= 1); BLAS threads: {threads}; "
          f"pixel ratio: {_render.PIXEL_RATIO:g}")
    print(f"{'widget':<20} {'control':<34} {'n':>4} {'median':>9} {'worst':>9} {'ratio':>7}")
    ratios = []
    if "explorer" in only:
        ratios += bench_topology_explorer(ns, reps)
    if "spectral" in only:
        ratios += bench_spectral_gap(ns, reps)
    if "others" in only:
        ratios += bench_other(ns, reps)
    if ratios:
        print(f"worst ratio: {max(ratios):.2f} (target <= 1.0); "
              f"{sum(r > 1 for r in ratios)} of {len(ratios)} rows over target")


if __name__ == "__main__":
    main()
