"""The chapters of the book and their executed copies.

The chapters are the notebooks ``tutorials/NN_name.ipynb`` (exactly those: a folder of executed
copies may also hold copies of chapters since renamed). The book renders each chapter from an
executed copy ``<executed>/NN_name.ipynb``, which the test suite writes
(``tests/test_tutorials.py::test_notebook_runs_top_to_bottom``). A copy is *current* when it has
the chapter's cells (same types and sources, in order), every code cell executed and no error
output; otherwise :func:`executed_copy` executes the chapter the way the suite does (nbclient, a
real kernel, real MPI engines, the quick setting in the chapter's parameters cell, figures
inline) and writes the copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["CELL_TIMEOUT", "ChapterError", "chapters", "execute", "executed_copy", "is_current"]

#: Seconds one cell may run before the execution fails (the suite's limit).
CELL_TIMEOUT = 600


class ChapterError(RuntimeError):
    """A chapter that cannot be found, or failed to execute."""


def chapters(tutorials: Path) -> list[Path]:
    """The chapter notebooks ``NN_name.ipynb`` of ``tutorials``, in order."""
    found = sorted(Path(tutorials).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ChapterError(f"no chapter notebooks (NN_name.ipynb) in {tutorials}: give the "
                           "tutorials folder of a declearn checkout")
    return found


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_current(executed: dict, chapter: dict) -> bool:
    """Whether notebook ``executed`` is a complete, error-free run of notebook ``chapter``."""
    ours = [(c["cell_type"], _source(c)) for c in executed.get("cells", [])]
    theirs = [(c["cell_type"], _source(c)) for c in chapter.get("cells", [])]
    if ours != theirs:
        return False
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    return all(c.get("execution_count") is not None for c in code) and not any(
        o.get("output_type") == "error" for c in code for o in c.get("outputs", []))


@contextlib.contextmanager
def _inline_figures():
    """The kernel inherits our environment: without ``MPLBACKEND`` (the tests set Agg) it draws
    figures inline, as in JupyterLab."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def _stop_leftover_clusters() -> None:
    """After a failed run the chapter's last cell (which stops its engines) never ran; stop
    the clusters whose notebook process is gone, as ``declearn cluster stop`` does."""
    cli = Path(sys.executable).with_name("declearn")
    command = [str(cli)] if cli.exists() else [sys.executable, "-c",
                                               "import sys; from declearn.cli import main; "
                                               "sys.exit(main())"]
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run([*command, "cluster", "stop"], timeout=120, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def execute(chapter: Path, dest: Path, *, timeout: int = CELL_TIMEOUT, log=print) -> dict:
    """Execute ``chapter`` top to bottom in its quick setting (every cell, a real kernel,
    real engines) and write the executed notebook to ``dest``; return it as a dict."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(chapter, as_version=4)
    log(f"executing {chapter.name} (quick setting, real engines)...")
    start = time.monotonic()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(chapter.parent)}})
    try:
        with _inline_figures():
            client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        _stop_leftover_clusters()
        raise ChapterError(
            f"{chapter.name} failed while executing, so the book cannot show it:\n{err}\n"
            f"Fix the chapter, then check it with `.venv/bin/python -m pytest "
            f"tests/test_tutorials.py -k {chapter.stem[:3]}`") from None
    log(f"executed {chapter.name} in {time.monotonic() - start:.0f} s")
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return json.loads(nbformat.writes(nb))


def executed_copy(chapter: Path, executed_dir: Path, *, log=print) -> dict:
    """The executed copy of ``chapter`` in ``executed_dir``, executing the chapter first when
    the copy is missing or not current (see :func:`is_current`)."""
    dest = Path(executed_dir) / chapter.name
    source = json.loads(chapter.read_text())
    if dest.exists():
        try:
            copy = json.loads(dest.read_text())
        except json.JSONDecodeError:
            copy = None
        if copy is not None and is_current(copy, source):
            return copy
        log(f"{dest} is not a current, complete run of {chapter}")
    return execute(chapter, dest, log=log)
