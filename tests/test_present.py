"""Lecture mode without a browser: ``declearn present``'s arguments (chapter, folder, scale), the
environment it gives Voilà (read back by a real matplotlib and by Voilà's own template lookup),
and the slide metadata of every chapter (static, fast). The served page itself is checked in a
real browser by tests/test_present_browser.py."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from declearn.cli import build_parser, main
from declearn.present import (
    DEFAULT_SCALE,
    TEMPLATE_NAME,
    find_chapter,
    parse_scale,
    present_environment,
    voila_command,
    write_template,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "-", "notes"}


def course(tmp_path: Path) -> tuple[Path, Path]:
    tutorials, work = tmp_path / "tutorials", tmp_path / "work"
    tutorials.mkdir()
    work.mkdir()
    for name in ("00_start.ipynb", "02_topologies.ipynb", "03_dgd.ipynb"):
        (tutorials / name).write_text("{}")
    (work / "03_dgd.ipynb").write_text("{}")  # the student's copy of chapter 03 only
    return tutorials, work


# ---------------------------------------------------------------------- arguments
def test_the_work_copy_is_shown_when_there_is_one(tmp_path):
    tutorials, work = course(tmp_path)
    assert find_chapter("03", tutorials, work) == work / "03_dgd.ipynb"
    assert find_chapter("3", tutorials, work) == work / "03_dgd.ipynb"
    assert find_chapter("03", tutorials, None) == tutorials / "03_dgd.ipynb"  # --original
    assert find_chapter("2", tutorials, work) == tutorials / "02_topologies.ipynb"
    assert find_chapter("02_topologies.ipynb", tutorials, work).parent == tutorials
    assert find_chapter("00", tutorials, tmp_path / "no-work-yet").parent == tutorials


def test_an_unknown_chapter_lists_the_chapters(tmp_path, capsys):
    tutorials, work = course(tmp_path)
    with pytest.raises(ValueError, match=r"no chapter '42'.*00 \(start\), 02 \(topologies\), "
                                         r"03 \(dgd\)"):
        find_chapter("42", tutorials, work)
    with pytest.raises(ValueError, match=r"which chapter\?.*declearn present NN"):
        find_chapter(None, tutorials, work)
    with pytest.raises(FileNotFoundError, match="run from the repository root"):
        find_chapter("02", tmp_path / "nowhere", work)
    # Through the command: exit status 2, the list on stderr, no server started.
    assert main(["present", "42", "--tutorials", str(tutorials)]) == 2
    err = capsys.readouterr().err
    assert "declearn present: no chapter '42'" in err and "02 (topologies)" in err
    assert main(["present", "--tutorials", str(ROOT / "tutorials")]) == 2
    err = capsys.readouterr().err
    assert all(f"{p.name[:2]} ({p.stem[3:]})" in err for p in CHAPTERS), err


@pytest.mark.parametrize("text, value", [("1.5", 1.5), ("2", 2.0), ("0.5", 0.5), ("4", 4.0)])
def test_scale_accepts_numbers_in_range(text, value):
    assert parse_scale(text) == value


@pytest.mark.parametrize("text", ["9", "0", "-1", "x", "nan", "inf", ""])
def test_scale_refuses_what_would_not_fit(text, capsys):
    with pytest.raises(ValueError, match=r"--scale takes a number from 0\.5 to 4"):
        parse_scale(text)
    assert main(["present", "02", "--scale", text,
                 "--tutorials", str(ROOT / "tutorials")]) == 2
    assert "--scale takes a number from 0.5 to 4" in capsys.readouterr().err


def test_options_after_the_chapter_are_options_not_voila_arguments():
    args = build_parser().parse_args(["present", "02", "--scale", "2", "--no-browser",
                                      "--port", "8899", "--original"])
    assert (args.chapter, args.scale, args.no_browser, args.port, args.original) == \
        ("02", "2", True, 8899, True)
    assert args.work == "work" and args.tutorials == "tutorials"
    assert build_parser().parse_args(["present", "02"]).scale is None  # DEFAULT_SCALE then
    assert DEFAULT_SCALE == 1.5


def test_voila_command_is_this_environments_voila():
    cmd = voila_command(Path("/x/02_t.ipynb"), port=8899, open_browser=False,
                        extra=["--theme=dark"])
    assert cmd[0] == str(Path(sys.executable).with_name("voila")) and Path(cmd[0]).exists()
    assert cmd[1] == "/x/02_t.ipynb"
    assert {f"--template={TEMPLATE_NAME}", "--port=8899", "--no-browser"} <= set(cmd)
    assert cmd[-1] == "--theme=dark"
    assert "--no-browser" not in voila_command(Path("a.ipynb"))


# ---------------------------------------------------------------------- what Voilà's kernel gets
def test_kernel_environment_scales_matplotlib_and_keeps_the_users_settings(tmp_path):
    mplconfig = tmp_path / "mplconfig"
    mplconfig.mkdir()
    (mplconfig / "matplotlibrc").write_text("lines.linewidth: 3\nfigure.dpi: 72\n")
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLCONFIGDIR": str(mplconfig),
            "MPLBACKEND": "Agg", "JUPYTER_PATH": "/elsewhere"}
    data = tmp_path / "data"
    data.mkdir()
    env = present_environment(2.0, data, base)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["JUPYTER_PATH"].split(os.pathsep) == [str(data), "/elsewhere"]
    assert "MPLBACKEND" not in env  # the inline backend draws into the page
    assert float(env.get("DECLEARN_PIXEL_RATIO", 2)) >= 2.0
    # What a real matplotlib in that environment reads.
    out = subprocess.run(
        [sys.executable, "-c", "import matplotlib as m; "
         "print(m.rcParams['figure.dpi'], m.rcParams['lines.linewidth'])"],
        env=env, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == ["200.0", "3.0"]
    assert present_environment(3.0, data, base)["DECLEARN_PIXEL_RATIO"] == "3"


def test_voila_finds_the_lecture_template_with_its_style(tmp_path):
    from jupyter_core.paths import jupyter_path
    from voila.paths import collect_template_paths

    folder = write_template(tmp_path, 1.5)
    paths = collect_template_paths(["voila", "nbconvert"], TEMPLATE_NAME, prune=True,
                                   root_dirs=[str(tmp_path), *jupyter_path()])
    assert str(folder) == paths[0]
    assert any(p.endswith(os.path.join("voila", "templates", "lab")) for p in paths)
    page = (folder / "index.html.j2").read_text()
    assert "--jp-content-font-size1: 21px" in page and "zoom: 1.5" in page


# ---------------------------------------------------------------------- slides
def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _headings(text: str) -> list[int]:
    """Levels of the Markdown headings outside fenced code."""
    levels, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#+) ", line)):
            levels.append(len(m.group(1)))
    return levels


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_is_a_deck_with_a_slide_per_section(path):
    cells = json.loads(path.read_text())["cells"]
    types = [c.get("metadata", {}).get("slideshow", {}).get("slide_type") for c in cells]
    untagged = [i for i, t in enumerate(types) if t not in SLIDE_TYPES]
    assert not untagged, (f"{path.name}: cells {untagged} have no slide type; run "
                          f"tools/tag_slides.py {path.relative_to(ROOT)}")
    sections = [i for i, c in enumerate(cells)
                if c["cell_type"] == "markdown" and any(lv <= 2 for lv in _headings(_source(c)))]
    assert sections and sections[0] == 0, f"{path.name}: the title cell starts the deck"
    assert [i for i, t in enumerate(types) if t == "slide"] == sections, \
        f"{path.name}: a new slide at each # / ## heading, and only there"
    for i, cell in enumerate(cells):
        if types[i] == "skip":  # nothing a later cell needs: calls only, no names defined
            tree = ast.parse(_source(cell))
            assert cell["cell_type"] == "code" and all(
                isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) for s in tree.body), \
                f"{path.name} cell {i} is skipped in the slides but defines something"
        if "connect(" in _source(cell):
            assert types[i] != "skip", f"{path.name}: the engines' cell {i} must stay in the deck"
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                 and re.search(r"^### Exercise", _source(c), re.M) and types[i] != "slide"]
    assert all(types[i] == "subslide" for i in exercises), f"{path.name}: exercises as subslides"


def test_tagging_keeps_the_notebook_format_and_is_stable(tmp_path):
    """Tagging a chapter whose slide types were removed gives back the committed file, byte
    for byte; ``--check`` finds an untagged cell and tagging leaves hand-set types alone."""
    script = ROOT / "tools" / "tag_slides.py"
    original = CHAPTERS[2].read_text(encoding="utf-8")
    nb = json.loads(original)
    for cell in nb["cells"]:
        cell["metadata"].pop("slideshow", None)
    nb["cells"][1]["metadata"]["slideshow"] = {"slide_type": "notes"}  # set by hand
    copy = tmp_path / CHAPTERS[2].name
    copy.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    run = [sys.executable, str(script)]
    check = subprocess.run([*run, "--check", str(copy)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 1 and "have no slide type" in check.stdout
    subprocess.run([*run, str(copy)], check=True, capture_output=True, timeout=60)
    tagged = json.loads(copy.read_text(encoding="utf-8"))
    assert tagged["cells"][1]["metadata"]["slideshow"] == {"slide_type": "notes"}
    tagged["cells"][1]["metadata"] = json.loads(original)["cells"][1]["metadata"]
    copy.write_text(json.dumps(tagged, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    subprocess.run([*run, "--force", str(copy)], check=True, capture_output=True, timeout=60)
    assert copy.read_text(encoding="utf-8") == original
