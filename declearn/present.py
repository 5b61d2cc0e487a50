"""Lecture mode: ``declearn present 02`` shows a chapter at a projector, with Voilà.

Voilà runs the chapter top to bottom in a fresh kernel and serves a page with its text, the
outputs of its cells (figures, tables, printed results) and its live widgets, but no code.
Everything is made readable from the back of a room by one factor, ``--scale`` (default
1.5):

* text (Markdown, printed output, tables) gets font sizes ``scale`` times JupyterLab's, set
  through JupyterLab's CSS variables in a Voilà template derived from Voilà's ``lab`` one
  (written to a temporary folder put on ``JUPYTER_PATH``, removed when the server stops);
* matplotlib figures drawn by the cells are rendered at ``scale`` times matplotlib's default
  resolution (``figure.dpi`` in a ``matplotlibrc`` that ``MATPLOTLIBRC`` points the kernel to):
  the same figure, every font, line and marker larger, drawn sharp at that size;
* each widget is zoomed as a whole (CSS ``zoom``): its controls keep their layout (their
  widths are set in pixels, larger fonts alone would truncate their labels) and its picture,
  rendered with ``PIXEL_RATIO`` device pixels per CSS pixel (see ``widgets._render``), stays
  sharp up to a scale of that ratio; a larger scale raises ``DECLEARN_PIXEL_RATIO``.

The chapter's own ``declearn.cluster.connect(n)`` cell attaches to the cluster of the
``declearn`` profile when one runs (a lecturer's ``declearn cluster start -n 8`` before the
lecture, kept across chapters and page reloads), or starts n engines for this page. Its last
cell, ``cluster.stop()``, then stops only what the page started, as in JupyterLab: by then
every cell has run, and the widgets left on the page compute in the kernel, not on the
engines, so the cores go back to them. Stopping the server (Ctrl+C) shuts its kernels down.

Voilà is started like ``declearn lab`` starts JupyterLab: this environment's ``bin`` folder
first on ``PATH`` (the kernel's ``mpiexec`` is the environment's), and as root too (Voilà does
not refuse root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from declearn.workspace import CHAPTER_GLOB, lab_environment

__all__ = [
    "DEFAULT_SCALE",
    "TEMPLATE_NAME",
    "parse_scale",
    "list_chapters",
    "find_chapter",
    "present_css",
    "write_template",
    "matplotlibrc_text",
    "voila_command",
    "present_environment",
    "serve",
]

#: The default of ``--scale``: 1.5 times JupyterLab's sizes.
DEFAULT_SCALE = 1.5
#: ``--scale`` is refused outside these bounds (smaller is unreadable, larger leaves no room).
SCALE_BOUNDS = (0.5, 4.0)
#: The Voilà template that ``present`` writes and selects.
TEMPLATE_NAME = "declearn-present"
#: JupyterLab's own sizes in CSS pixels (its theme's ``--jp-*-font-size*`` variables; Markdown
#: tables are set in a fixed 12px), and matplotlib's default ``figure.dpi``.
LAB_SIZES = {"--jp-content-font-size1": 14, "--jp-ui-font-size1": 13, "--jp-code-font-size": 13}
LAB_TABLE_FONT_SIZE = 12
MATPLOTLIB_DPI = 100
#: The widgets' pictures are rendered with this many device pixels per CSS pixel by default.
WIDGET_PIXEL_RATIO = 2.0


def parse_scale(text: str | float) -> float:
    """``--scale``: a number within :data:`SCALE_BOUNDS`; ValueError saying what to pass."""
    low, high = SCALE_BOUNDS
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not low <= value <= high:  # also refuses nan
        raise ValueError(f"--scale takes a number from {low:g} to {high:g} (1 is JupyterLab's "
                         f"size, {DEFAULT_SCALE:g} the default), not {text!r}.")
    return value


def list_chapters(folder: Path) -> list[Path]:
    """The chapter notebooks (``NN_*.ipynb``) of ``folder``, in order."""
    return sorted(Path(folder).glob(CHAPTER_GLOB))


def _describe(chapters: list[Path]) -> str:
    return ", ".join(f"{p.name[:2]} ({p.stem[3:]})" for p in chapters)


def find_chapter(chapter: str | None, tutorials: Path, work: Path | None = None) -> Path:
    """The notebook of chapter ``chapter`` ("02", "2" or a file name): the student's working
    copy in ``work`` when it has one, else the original in ``tutorials``. ValueError naming the
    chapters when there is no such chapter (or none was given); FileNotFoundError when
    ``tutorials`` holds no chapter at all."""
    originals = list_chapters(tutorials)
    if not originals:
        raise FileNotFoundError(
            f"no chapter notebooks ({CHAPTER_GLOB}) in {tutorials}: run from the repository "
            "root (where tutorials/ is), or pass --tutorials.")
    key = "" if chapter is None else str(chapter).strip()
    if key.isdigit():
        key = f"{int(key):02d}_"
    matches = [p for p in originals if key and (p.name.startswith(key) or p.name == key)]
    if len(matches) != 1:
        what = "which chapter?" if not key else f"no chapter {chapter!r} in {tutorials}/."
        raise ValueError(f"{what} Pass its number: declearn present NN, with NN one of "
                         f"{_describe(originals)}.")
    original = matches[0]
    if work is not None and (Path(work) / original.name).is_file():
        return Path(work) / original.name
    return original


def _px(base: float, scale: float) -> str:
    return f"{base * scale:.4g}px"


def present_css(scale: float) -> str:
    """The style sheet of the lecture page: text ``scale`` times larger, widgets zoomed."""
    text_sizes = "\n".join(f"  {name}: {_px(size, scale)};" for name, size in LAB_SIZES.items())
    # The widgets' variables are pinned to JupyterLab's sizes: the zoom scales them.
    widget_sizes = "\n".join(f"  {name}: {size}px;" for name, size in LAB_SIZES.items())
    return f"""
/* declearn present --scale {scale:g}: readable from the back of the room. */
html:root {{
{text_sizes}
  --jp-widgets-font-size: {LAB_SIZES["--jp-ui-font-size1"]}px;
}}
.jp-RenderedHTMLCommon table {{
  font-size: {_px(LAB_TABLE_FONT_SIZE, scale)};
}}
.jp-OutputArea-output > .jupyter-widgets {{
  zoom: {scale:g};
{widget_sizes}
}}
"""


def write_template(data_dir: Path, scale: float) -> Path:
    """Write the Voilà template :data:`TEMPLATE_NAME` (Voilà's ``lab`` template plus
    :func:`present_css`) under ``data_dir``, a folder for ``JUPYTER_PATH``; return its
    folder."""
    folder = Path(data_dir) / "voila" / "templates" / TEMPLATE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conf.json").write_text(json.dumps({"base_template": "lab"}) + "\n")
    (folder / "index.html.j2").write_text(
        "{%- extends 'lab/index.html.j2' -%}\n"
        "{%- block notebook_css -%}\n"
        "{{ super() }}\n"
        f"<style>{present_css(scale)}</style>\n"
        "{%- endblock notebook_css -%}\n"
    )
    return folder


def matplotlibrc_text(scale: float, user_rc: str = "") -> str:
    """A ``matplotlibrc``: the user's own settings ``user_rc`` (if any), then ``figure.dpi``
    ``scale`` times matplotlib's default (a later key wins)."""
    lines = [user_rc.rstrip("\n")] if user_rc.strip() else []
    lines.append(f"figure.dpi: {MATPLOTLIB_DPI * scale:g}  # declearn present --scale {scale:g}")
    return "\n".join(lines) + "\n"


def _user_matplotlibrc(env: dict) -> str:
    """The text of the matplotlibrc the kernel would read without us (not matplotlib's own
    defaults file), or ""."""
    candidates = []
    if env.get("MATPLOTLIBRC"):
        rc = Path(env["MATPLOTLIBRC"])
        candidates.append(rc / "matplotlibrc" if rc.is_dir() else rc)
    config = env.get("MPLCONFIGDIR") or os.path.join(
        env.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config"), "matplotlib")
    candidates.append(Path(config) / "matplotlibrc")
    for path in candidates:
        if path.is_file():
            return path.read_text()
    return ""


def voila_command(notebook: Path, *, port: int | None = None, open_browser: bool = True,
                  extra: list[str] | None = None) -> list[str]:
    """This environment's ``voila`` serving ``notebook`` with the lecture template, tracebacks
    shown (a lecturer must see why a cell failed)."""
    voila = Path(sys.executable).with_name("voila")
    if not voila.exists():
        found = shutil.which("voila")
        if found is None:
            raise FileNotFoundError(
                f"Voila is not installed in this environment ({sys.prefix}): run `make env`, "
                "or `.venv/bin/pip install -e .` in the repository.")
        voila = Path(found)
    cmd = [str(voila), str(notebook),
           f"--template={TEMPLATE_NAME}", "--show_tracebacks=True"]
    if port is not None:
        cmd.append(f"--port={int(port)}")
    if not open_browser:
        cmd.append("--no-browser")
    return cmd + list(extra or [])


def present_environment(scale: float, data_dir: Path, base: dict | None = None) -> dict:
    """The environment of Voilà and its kernels: ``declearn lab``'s (the environment's ``bin``
    first on ``PATH``), ``data_dir`` first on ``JUPYTER_PATH`` (the template), ``MATPLOTLIBRC``
    pointing to a ``matplotlibrc`` written there, and a widget pixel ratio of at least
    ``scale``."""
    env = lab_environment(base)
    rc = Path(data_dir) / "matplotlibrc"
    rc.write_text(matplotlibrc_text(scale, _user_matplotlibrc(env)))
    env["MATPLOTLIBRC"] = str(rc)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures into the page
    env["JUPYTER_PATH"] = os.pathsep.join(
        [str(data_dir), *[p for p in env.get("JUPYTER_PATH", "").split(os.pathsep) if p]])
    ratio = float(env.get("DECLEARN_PIXEL_RATIO") or WIDGET_PIXEL_RATIO)
    if ratio < scale:
        env["DECLEARN_PIXEL_RATIO"] = f"{scale:g}"
    return env


def serve(notebook: Path, *, scale: float = DEFAULT_SCALE, port: int | None = None,
          open_browser: bool = True, extra: list[str] | None = None,
          stop_timeout: float = 30.0) -> int:
    """Run Voilà on ``notebook`` until it stops (Ctrl+C, or SIGTERM to this process, which is
    passed on); return its exit status. The template folder is removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="declearn-present-"))
    try:
        write_template(data_dir, scale)
        env = present_environment(scale, data_dir)
        cmd = voila_command(Path(notebook).resolve(), port=port, open_browser=open_browser,
                            extra=extra)
        proc = subprocess.Popen(cmd, cwd=Path(notebook).resolve().parent, env=env)

        def _pass_on(signum, frame):  # Voilà stops gracefully on SIGTERM: kernels shut down
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _pass_on)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
