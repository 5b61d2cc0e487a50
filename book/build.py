"""Build the book (reading mode): a static website of the chapters with their executed outputs.

    python book/build.py [--out build/book] [--executed test-artifacts] [--tutorials tutorials]
    python -m book.build ...                  (the same, from the repository root)

Steps, all under ``--out``:

1. ``source/``: for every chapter ``tutorials/NN_name.ipynb`` its executed copy from
   ``--executed`` (executed first when missing or out of date, see ``book/chapters.py``), with
   each widget output replaced by a picture of its last state (``book/widget_pictures.py``;
   the pictures go to ``source/_extra/widget-pictures/``), as ``source/tutorials/NN_name.ipynb``;
   an ``index.md`` from ``book/index_template.md`` and ``tutorials/README.md`` (the chapter list)
   with the table of contents; ``conf.py`` and ``_static/`` from ``book/``; and the repository
   files that the chapters link to (``../declearn/optim/train.py``), at the same place relative
   to the chapters, so that such links become downloads.
2. ``html/``: ``sphinx-build -W`` with myst-nb, which never executes anything here. Any warning,
   such as a link to a chapter or a file that does not exist, fails the build with the list.

Open ``<out>/html/index.html`` in a browser. Math needs MathJax, which Sphinx loads from its
usual CDN: offline, formulas show as TeX source.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python book/build.py`: make `book` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from book.chapters import ChapterError, chapters, executed_copy
from book.widget_pictures import WidgetStateError, picture_widgets

__all__ = ["BookError", "build", "main"]

ROOT = Path(__file__).resolve().parents[1]
BOOK = Path(__file__).resolve().parent
MARKER = ".declearn-book"
PICTURES = "widget-pictures"
#: Seconds the Sphinx build may take before it is stopped (about a minute is usual).
SPHINX_TIMEOUT = 1200
_MD_LINK = re.compile(r"(\]\()(<[^>]+>|[^)\s]+)")
_HTML_LINK = re.compile(r"""((?:href|src)\s*=\s*["'])([^"']+)""")


class BookError(RuntimeError):
    """The book cannot be built; the message says why and what to do."""


def _is_relative(target: str) -> bool:
    return not re.match(r"^([a-zA-Z][\w+.-]*:|#|/)", target)


def _markdown(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _link_targets(markdown: str):
    for pattern in (_MD_LINK, _HTML_LINK):
        for match in pattern.finditer(markdown):
            target = match.group(2).strip("<>")
            if _is_relative(target):
                yield target.split("#", 1)[0]


def _copy_linked_files(markdown: str, folder: Path, source: Path) -> None:
    """Copy into ``source`` the repository files that ``markdown`` (a text in the chapters'
    ``folder``) links to, except pages (.ipynb, .md: the book's or nothing), at the same path
    relative to the chapters (the repository is the folder above them)."""
    root = folder.resolve().parent
    for target in _link_targets(markdown):
        path = (folder / target).resolve()
        if not target or path.suffix in (".ipynb", ".md") or not path.is_file():
            continue  # a chapter, or a missing file: Sphinx reports the link if it is broken
        try:
            rel = path.relative_to(root)
        except ValueError:
            raise BookError(f"{folder.name}/ links to {target}, outside the repository; link "
                            "to a file inside it or to a web address") from None
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, source / rel)


def _index(tutorials: Path, names: list[str]) -> str:
    """The front page: the template with tutorials/README.md (its title dropped, its relative
    links made relative to the book's root) and the chapters' table of contents."""
    readme = (tutorials / "README.md").read_text() if (tutorials / "README.md").exists() else ""
    readme = re.sub(r"\A\s*# [^\n]*\n", "", readme)
    rel = tutorials.resolve().name

    def relocate(match: re.Match) -> str:
        target = match.group(2)
        return match.group(1) + (f"{rel}/{target}" if _is_relative(target) else target)

    readme = _HTML_LINK.sub(relocate, _MD_LINK.sub(relocate, readme))
    text = (BOOK / "index_template.md").read_text()
    toc = "\n".join(f"{rel}/{name}" for name in names)
    return text.replace("@TUTORIALS_README@", readme.strip()).replace("@CHAPTERS@", toc)


def _prepare_out(out: Path) -> None:
    """Check that ``out`` is a book folder (or new, or empty), and clear what a build writes."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise BookError(f"{out} is not empty and holds no earlier book ({MARKER} missing): give "
                        "--out a new or empty folder")
    for part in ("source", "html", "doctrees", "jupyter_execute"):
        shutil.rmtree(out / part, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("built by book/build.py; `make book` clears and rebuilds it\n")


def assemble(source: Path, tutorials: Path, executed: Path, *, log=print) -> dict[str, int]:
    """Write the Sphinx source folder (step 1); return the number of widget outputs turned
    into pictures, per chapter."""
    pages = source / tutorials.resolve().name
    pictures = source / "_extra" / PICTURES
    pages.mkdir(parents=True)
    pictures.mkdir(parents=True)
    widgets = {}

    def save(data: bytes, extension: str, name: str) -> str:
        (pictures / name).write_bytes(data)
        return f"../{PICTURES}/{name}"  # from a chapter's page, one folder down

    for chapter in chapters(tutorials):
        nb = executed_copy(chapter, executed, log=log)
        try:
            widgets[chapter.stem] = picture_widgets(nb, save, name=chapter.stem)
        except WidgetStateError as err:
            raise BookError(f"{err}\n(executed copy: {executed / chapter.name}; delete it and "
                            "build again to execute the chapter anew)") from None
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                _copy_linked_files(_markdown(cell), chapter.parent, source)
        (pages / chapter.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    (source / "index.md").write_text(_index(tutorials, [c.stem for c in chapters(tutorials)]))
    if (tutorials / "README.md").exists():
        _copy_linked_files((tutorials / "README.md").read_text(), tutorials, source)
    shutil.copy2(BOOK / "conf.py", source / "conf.py")
    shutil.copytree(BOOK / "_static", source / "_static")
    return widgets


def run_sphinx(source: Path, html: Path, doctrees: Path, *, timeout: int = SPHINX_TIMEOUT) -> None:
    """``sphinx-build -W --keep-going`` (HTML) of ``source`` into ``html``; every warning fails
    it with a :class:`BookError` listing them."""
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
               "-d", str(doctrees), str(source), str(html)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BookError(f"Sphinx did not finish within {timeout} s: {' '.join(command)}") from None
    if done.returncode != 0:
        if "No module named sphinx" in done.stderr:
            raise BookError("Sphinx is not installed: `.venv/bin/pip install -e '.[book]'` "
                            "(or `make book`, which does it)")
        raise BookError(f"the book has errors (Sphinx warnings, each one fails the build):\n"
                        f"{_explain(done.stderr.strip() or done.stdout.strip(), source)}")


def _explain(log: str, source: Path) -> str:
    """Sphinx's warnings with places named in the chapters' terms: myst-nb numbers the lines
    of a notebook ``10000 * (cell index + 1) + line``."""
    def place(match: re.Match) -> str:
        number = int(match.group(2))
        return f"{match.group(1)} cell {number // 10000 - 1}, line {number % 10000}:"

    log = log.replace(f"{source}{os.sep}", "")
    return re.sub(r"(\S+\.ipynb):(\d{5,}):", place, log)


def build(out: Path, executed: Path, tutorials: Path | None = None, *, log=print) -> Path:
    """Build the book of ``tutorials`` (default: the repository's) from the executed copies in
    ``executed`` into ``out``; return the path of its front page ``out/html/index.html``."""
    tutorials = Path(tutorials or ROOT / "tutorials")
    out, executed = Path(out).resolve(), Path(executed).resolve()
    _prepare_out(out)
    widgets = assemble(out / "source", tutorials, executed, log=log)
    log(f"{len(widgets)} chapters, {sum(widgets.values())} widget outputs shown as pictures; "
        "running Sphinx...")
    run_sphinx(out / "source", out / "html", out / "doctrees")
    return out / "html" / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python book/build.py", description="Build the chapters as a static website "
        "(reading mode) from their executed copies, executing the chapters that have none.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book",
                        help="folder of the build; the site is OUT/html (default: build/book)")
    parser.add_argument("--executed", type=Path, default=ROOT / "test-artifacts",
                        help="folder of the executed chapters, as the tests write them; "
                        "missing or outdated ones are executed into it (default: test-artifacts)")
    parser.add_argument("--tutorials", type=Path, default=ROOT / "tutorials",
                        help="folder of the chapter notebooks (default: tutorials)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        index = build(args.out, args.executed, args.tutorials)
    except (BookError, ChapterError) as err:
        print(f"make book: {err}", file=sys.stderr)
        return 1
    print(f"The book is in {index} (built in {time.monotonic() - start:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
