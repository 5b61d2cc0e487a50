"""The student's working copies of the chapters, and the JupyterLab that ``make lab`` opens.

``declearn lab`` (what ``make lab`` runs) copies the chapter notebooks of ``tutorials/`` into a
working folder (``work/`` next to it, ignored by git) the first time, and opens JupyterLab
there. Students edit and save their own copies; the originals stay clean, so ``git pull``
updates the course without conflicts and the tests run the originals. A later run copies only
chapters the working folder does not have yet (a new chapter after a pull), never over a
student's file. ``declearn lab --refresh 03`` puts a fresh copy of chapter 03 in place and
keeps the student's as ``03_....backup-<time>.ipynb``.

A copy opens in JupyterLab as unmodified: on connecting to its kernel JupyterLab writes the
kernel's full ``language_info`` (Python version, lexer, ...) and its spec's display name into
the notebook's metadata, which would mark a chapter that only says ``{"name": "python"}`` as
changed; the copies get that metadata from this environment's kernel when they are made
(:func:`copy_chapter`).

Run as root (containers, VMs, Binder-like images), JupyterLab refuses to start unless given
``--allow-root``; ``declearn lab`` adds it and says so once. The terminals JupyterLab opens
inherit this process's ``PATH``, which starts with the environment's ``bin`` folder, so
``declearn`` and ``mpiexec`` work there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["seed_workspace", "refresh_chapter", "copy_chapter", "kernel_language_info",
           "lab_command", "CHAPTER_GLOB"]

#: The chapter notebooks of the tutorials folder.
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"


def _chapters(tutorials: Path) -> list[Path]:
    found = sorted(Path(tutorials).glob(CHAPTER_GLOB))
    if not found:
        raise FileNotFoundError(
            f"no chapter notebooks ({CHAPTER_GLOB}) in {tutorials}: run from the repository "
            "root (where tutorials/ is), or pass --tutorials.")
    return found


def kernel_language_info() -> dict | None:
    """What this environment's Python kernel (ipykernel) reports as ``language_info``."""
    try:
        from ipykernel.ipkernel import IPythonKernel
    except ImportError:
        return None
    return json.loads(json.dumps(IPythonKernel.language_info))


def _kernel_spec(name: str) -> dict | None:
    """The ``kernelspec`` metadata JupyterLab writes for the installed kernel ``name``."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        spec = KernelSpecManager().get_kernel_spec(name)
    except (ImportError, NoSuchKernel):
        return None
    return {"display_name": spec.display_name, "language": spec.language, "name": name}


def copy_chapter(source: Path, target: Path) -> None:
    """Copy a chapter notebook, with the kernel's ``language_info`` in its metadata (in the
    format JupyterLab saves); any other file, or a file that is not a notebook, as it is."""
    info = kernel_language_info() if source.suffix == ".ipynb" else None
    try:
        nb = json.loads(source.read_text(encoding="utf-8")) if info else None
    except (OSError, ValueError):
        nb = None
    if not (isinstance(nb, dict) and "nbformat" in nb and isinstance(nb.get("metadata"), dict)):
        shutil.copy2(source, target)
        return
    nb["metadata"]["language_info"] = info
    spec = nb["metadata"].get("kernelspec")
    if isinstance(spec, dict) and spec.get("name"):
        spec.update(_kernel_spec(spec["name"]) or {})
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                      encoding="utf-8")


def seed_workspace(tutorials: Path, work: Path) -> list[str]:
    """Copy into ``work`` every chapter (and the tutorials' README) it does not have yet;
    return the names copied. Never overwrites a file."""
    tutorials, work = Path(tutorials), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in [*_chapters(tutorials), tutorials / "README.md"]:
        target = work / source.name
        if source.is_file() and not target.exists():
            copy_chapter(source, target)
            copied.append(source.name)
    return copied


def refresh_chapter(tutorials: Path, work: Path, chapter: str) -> tuple[Path, Path | None]:
    """A fresh copy of chapter ``chapter`` ("03", "3" or a file name) in ``work``; the
    student's copy, if any, is renamed ``<stem>.backup-<time>.ipynb``. Returns (fresh copy,
    backup or None)."""
    key = str(chapter).strip()
    if key.isdigit():
        key = f"{int(key):02d}_"
    matches = [p for p in _chapters(Path(tutorials)) if p.name.startswith(key) or p.name == key]
    if len(matches) != 1:
        names = ", ".join(p.name[:2] for p in _chapters(Path(tutorials)))
        raise ValueError(f"no single chapter {chapter!r}: pass its number, one of {names}.")
    source = matches[0]
    target = Path(work) / source.name
    backup = None
    if target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = target.with_name(f"{target.stem}.backup-{stamp}.ipynb")
        target.rename(backup)
    Path(work).mkdir(parents=True, exist_ok=True)
    copy_chapter(source, target)
    return target, backup


def lab_command(extra: list[str] | None = None, *, root: bool | None = None) -> list[str]:
    """The JupyterLab command line: this environment's ``jupyter lab``, ``--allow-root``
    when running as root."""
    if root is None:
        root = hasattr(os, "geteuid") and os.geteuid() == 0
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter) if jupyter.exists() else "jupyter", "lab", *(extra or [])]
    if root and "--allow-root" not in cmd:
        cmd.append("--allow-root")
    return cmd


def lab_environment(base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with this environment's ``bin`` first
    on ``PATH``, so that JupyterLab's terminals find ``declearn`` and ``mpiexec``."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    parts = env.get("PATH", "").split(os.pathsep)
    if parts[:1] != [bin_dir]:
        env["PATH"] = os.pathsep.join([bin_dir, *[p for p in parts if p and p != bin_dir]])
    return env
