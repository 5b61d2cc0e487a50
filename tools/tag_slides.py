"""Mark the cells of the chapter notebooks for a slideshow (JupyterLab's RISE, Voilà's reveal).

    .venv/bin/python tools/tag_slides.py                       # every chapter in tutorials/
    .venv/bin/python tools/tag_slides.py tutorials/11_*.ipynb  # a new chapter
    .venv/bin/python tools/tag_slides.py --check               # list cells without a type

Each cell gets ``metadata.slideshow.slide_type``, the key RISE reads:

* ``slide``: a cell with the title (``#``) or a section heading (``##``): a new slide per
  section;
* ``subslide``: a cell with a ``###`` heading (an exercise, a sub-section), and a text cell
  that follows a code cell (the next step of a section: its text, its code and output);
* ``fragment``: a folded solution (``<details>``), shown on the next click, after the exercise;
* ``skip``: a code cell that only stops or closes things (``cluster.stop()``): plumbing with
  nothing to show. The ``connect(n)`` cell stays on its slide: a lecturer who runs the deck
  cell by cell must run it;
* ``-``: everything else, on the slide of the cell before it.

Only cells without a slide type are tagged, so a type set by hand (in JupyterLab's property
inspector) stays; ``--force`` tags every cell again. The notebooks keep their on-disk format
(one-space indent, sorted keys), and nothing else in them changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = "[0-9][0-9]_*.ipynb"
SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "-", "notes")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+\S")
_CLEANUP = re.compile(r"^[A-Za-z_][\w.]*\.(stop|close)\(\)$")


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def heading_levels(text: str) -> list[int]:
    """The levels of the Markdown headings in ``text``, fenced code blocks left out."""
    levels, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            levels.append(len(m.group(1)))
    return levels


def is_cleanup(cell: dict) -> bool:
    """A code cell whose every statement is ``name.stop()`` or ``name.close()``."""
    lines = [ln.strip() for ln in source(cell).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return cell["cell_type"] == "code" and bool(lines) and all(map(_CLEANUP.match, lines))


def slide_type(cell: dict, previous: dict | None) -> str:
    """The slide type the rules of this module give ``cell``, ``previous`` the cell before."""
    if cell["cell_type"] == "code":
        return "skip" if is_cleanup(cell) else "-"
    levels = heading_levels(source(cell))
    if levels and min(levels) <= 2:
        return "slide"
    if levels:
        return "subslide"
    if source(cell).lstrip().startswith("<details"):
        return "fragment"
    if previous is not None and previous["cell_type"] == "code":
        return "subslide"
    return "-"


def current(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("slideshow", {}).get("slide_type")


def tag(nb: dict, *, force: bool = False) -> int:
    """Give every cell without a slide type (every cell with ``force``) its type; return the
    number of cells changed."""
    changed, previous = 0, None
    for cell in nb["cells"]:
        if force or current(cell) not in SLIDE_TYPES:
            wanted = slide_type(cell, previous)
            if current(cell) != wanted:
                cell.setdefault("metadata", {})["slideshow"] = {"slide_type": wanted}
                changed += 1
        previous = cell
    return changed


def untagged(nb: dict) -> list[int]:
    """Indices of the cells without a valid slide type."""
    return [i for i, cell in enumerate(nb["cells"]) if current(cell) not in SLIDE_TYPES]


def save(nb: dict, path: Path) -> None:
    """Write ``nb`` in the chapters' on-disk format (as ``json.dumps(indent=1,
    sort_keys=True)`` plus a newline)."""
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                    encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to tag (default: every chapter in tutorials/)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; list the cells without a slide type, exit 1 if any")
    parser.add_argument("--force", action="store_true",
                        help="tag every cell again, replacing types set by hand")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "tutorials").glob(CHAPTERS))
    if not paths:
        parser.error("no notebooks: pass their paths, or run from a clone with tutorials/")
    missing = 0
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        if args.check:
            cells = untagged(nb)
            missing += len(cells)
            if cells:
                print(f"{path}: cells {cells} have no slide type; run tools/tag_slides.py")
            continue
        changed = tag(nb, force=args.force)
        if changed:
            save(nb, path)
        print(f"{path}: {changed} cell(s) tagged")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
