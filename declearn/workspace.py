"""The student's working copies of the chapters, and the JupyterLab that ``make lab`` opens.

``declearn lab`` (what ``make lab`` runs) copies the chapter notebooks of ``tutorials/`` into a
working folder (``work/`` next to it, ignored by git) the first time, and opens JupyterLab
there. Students edit and save their own copies; the originals stay clean, so ``git pull``
updates the course without conflicts and the tests run the originals. A later run copies only
chapters the working folder does not have yet (a new chapter after a pull), never over a
student's file. ``declearn lab --refresh 03`` puts a fresh copy of chapter 03 in place and
keeps the student's as ``03_....backup-<time>.ipynb``.

Run as root (containers, VMs, Binder-like images), JupyterLab refuses to start unless given
``--allow-root``; ``declearn lab`` adds it and says so once. The terminals JupyterLab opens
inherit this process's ``PATH``, which starts with the environment's ``bin`` folder, so
``declearn`` and ``mpiexec`` work there.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

__all__ = ["seed_workspace", "refresh_chapter", "lab_command", "CHAPTER_GLOB"]

#: The chapter notebooks of the tutorials folder.
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"


def _chapters(tutorials: Path) -> list[Path]:
    found = sorted(Path(tutorials).glob(CHAPTER_GLOB))
    if not found:
        raise FileNotFoundError(
            f"no chapter notebooks ({CHAPTER_GLOB}) in {tutorials}: run from the repository "
            "root (where tutorials/ is), or pass --tutorials.")
    return found


def seed_workspace(tutorials: Path, work: Path) -> list[str]:
    """Copy into ``work`` every chapter (and the tutorials' README) it does not have yet;
    return the names copied. Never overwrites a file."""
    tutorials, work = Path(tutorials), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in [*_chapters(tutorials), tutorials / "README.md"]:
        target = work / source.name
        if source.is_file() and not target.exists():
            shutil.copy2(source, target)
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
    shutil.copy2(source, target)
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
