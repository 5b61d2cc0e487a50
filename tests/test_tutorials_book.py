"""The book (reading mode, ``make book``): the chapters as a static website built by
``python -m book.build`` (Sphinx + myst-nb) from the executed copies that
``tests/test_tutorials.py`` writes to test-artifacts/ (this file sorts after it; run alone, the
build executes the chapters whose copy is missing or out of date, with real engines).

The built site is checked with an HTML parser against facts taken independently from the
executed notebooks: one page per chapter with the chapter's title; every ``<img>`` a file that
decodes, as many as the notebook has image outputs and ``Image`` widgets; every widget output a
static snapshot holding that widget's saved image bytes; every local link and anchor resolving;
the solutions folded in ``<details>`` with their code highlighted. A small handmade book checks
links between chapters, to an anchor and to a repository file, and that a broken link fails the
build. The fast test checks the widget-to-picture step on a handmade widget state.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
EXECUTED = ROOT / "test-artifacts"
CHAPTERS = sorted(p.stem for p in TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
BUILD_TIMEOUT = 2400  # executing all eleven chapters (run alone) and Sphinx

sys.path.insert(0, str(ROOT))
from book.widget_pictures import WidgetStateError, picture_widgets  # noqa: E402

# -- a small HTML tree -------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: dict, parent: Element | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []
        self.text = []

    def iter(self, tag: str | None = None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Element(tag, dict(attrs), self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.text.append(data)


def parse_html(path: Path) -> Element:
    builder = _TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    return builder.root


# -- facts from the notebooks ------------------------------------------------------------------

def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def image_outputs(nb: dict) -> int:
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if any(m in o.get("data", {}) for m in IMAGE_MIMES)
               and WIDGET_VIEW not in o.get("data", {}))


def widget_state(nb: dict) -> dict:
    return nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def widget_views(nb: dict) -> list[str]:
    return [o["data"][WIDGET_VIEW]["model_id"] for c in nb["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]


def image_bytes(entry: dict) -> bytes | None:
    for buffer in entry.get("buffers", []):
        if buffer["path"] == ["value"]:
            return base64.b64decode(buffer["data"])
    return None


def images_under(model_id: str, state: dict) -> list[bytes]:
    """The bytes of the Image models that a widget refers to, following every IPY_MODEL_
    reference in its state (not only a box's children)."""
    seen, found, todo = set(), [], [model_id]
    while todo:
        mid = todo.pop()
        if mid in seen or mid not in state:
            continue
        seen.add(mid)
        if state[mid]["model_name"] == "ImageModel" and image_bytes(state[mid]):
            found.append(image_bytes(state[mid]))
        refs = json.dumps(state[mid]["state"])
        todo.extend(re.findall(r"IPY_MODEL_([0-9a-f]+)", refs))
    return found


def markdown_of(nb: dict) -> list[str]:
    return [_text(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def solution_blocks(nb: dict) -> list[str]:
    return [block for md in markdown_of(nb)
            for block in re.findall(r"<details.*?</details>", md, re.S)]


def first_heading(nb: dict) -> str:
    for md in markdown_of(nb):
        match = re.search(r"^# (.+)$", md, re.M)
        if match:
            return match.group(1).strip()
    raise AssertionError("the chapter has no '# ' title")


# -- checks on a built site --------------------------------------------------------------------

def check_image_file(path: Path) -> None:
    data = path.read_bytes()
    assert data, f"{path} is empty"
    if path.suffix == ".svg":
        assert ElementTree.fromstring(data).tag.endswith("svg"), f"{path} is not an SVG"
        return
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.width > 0 and image.height > 0, f"{path} has no pixels"


def local_target(page: Path, url: str) -> tuple[Path, str] | None:
    """The file and fragment that ``url`` on ``page`` points to, or None for a web address."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return None
    target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if target.is_dir():
        target = target / "index.html"
    return target, parts.fragment


def ids_of(path: Path, cache: dict) -> set[str]:
    if path not in cache:
        root = parse_html(path)
        cache[path] = {e.attrs[k] for e in root.iter() for k in ("id", "name")
                       if e.attrs.get(k) and (k == "id" or e.tag == "a")}
    return cache[path]


def broken_links(site: Path) -> list[str]:
    """Every local href/src of every page of ``site`` that names no file, or an anchor that
    is not on the page it names."""
    broken, cache = [], {}
    pages = [p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts]
    for page in sorted(pages):
        for element in parse_html(page).iter():
            for attr in ("href", "src"):
                url = element.attrs.get(attr)
                if not url or element.tag not in ("a", "img", "link", "script"):
                    continue
                resolved = local_target(page, url)
                if resolved is None:
                    continue
                target, fragment = resolved
                where = f"{page.relative_to(site)}: {element.tag} {attr}={url!r}"
                if not target.is_file():
                    broken.append(f"{where}: no file {target}")
                elif not target.is_relative_to(site):
                    broken.append(f"{where}: outside the site")
                elif fragment and target.suffix == ".html" and \
                        unquote(fragment) not in ids_of(target, cache):
                    broken.append(f"{where}: no id {fragment!r} on {target.name}")
    return broken


# -- building ----------------------------------------------------------------------------------

def run_build(*args: str, timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m book.build ARGS`` as ``make book`` runs it; its process group (kernels,
    engines, Sphinx) is killed after a timeout or a failure of the test."""
    proc = subprocess.Popen([sys.executable, "-m", "book.build", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the book build did not finish within {timeout} s") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("sphinx", "myst_nb", "sphinx_book_theme"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"{module} is missing: `.venv/bin/pip install -e '.[book]'`")
    out = tmp_path_factory.mktemp("book")
    start = time.monotonic()
    done = run_build("--out", str(out), "--executed", str(EXECUTED))
    print(f"book built in {time.monotonic() - start:.1f} s\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, f"make book failed:\n{done.stdout}\n{done.stderr}"
    return out / "html"


def executed(stem: str) -> dict:
    return json.loads((EXECUTED / f"{stem}.ipynb").read_text())


slow_book = [pytest.mark.slow, pytest.mark.tutorial, pytest.mark.timeout(BUILD_TIMEOUT + 300)]


@pytest.mark.parametrize("stem", CHAPTERS)
class TestChapterPages:
    pytestmark = slow_book

    def test_one_page_with_the_chapter_title(self, site, stem):
        page = site / "tutorials" / f"{stem}.html"
        assert page.is_file(), f"no page for chapter {stem}"
        root = parse_html(page)
        title = first_heading(json.loads((TUTORIALS / f"{stem}.ipynb").read_text()))
        h1 = [e.all_text().replace("#", "").strip() for e in root.iter("h1")]
        assert title in h1, f"{stem}: page headings {h1} lack the chapter title {title!r}"
        assert title in next(root.iter("title")).all_text()
        index_links = {e.attrs.get("href") for e in parse_html(site / "index.html").iter("a")}
        assert f"tutorials/{stem}.html" in index_links, f"the front page does not link {stem}"

    def test_every_figure_is_a_picture_file(self, site, stem):
        page = site / "tutorials" / f"{stem}.html"
        nb = executed(stem)
        images = [e for e in parse_html(page).iter("img")]
        for img in images:
            target, _ = local_target(page, img.attrs["src"])
            assert target.is_file(), f"{stem}: <img src={img.attrs['src']!r}> names no file"
            check_image_file(target)
        widget_images = sum(1 for e in widget_state(nb).values()
                            if e["model_name"] == "ImageModel" and image_bytes(e))
        markdown_images = sum(len(re.findall(r"!\[[^\]]*\]\(|<img\b", md))
                              for md in markdown_of(nb))
        expected = image_outputs(nb) + widget_images + markdown_images
        assert len(images) == expected, (
            f"{stem}: {len(images)} pictures on the page, the executed notebook has "
            f"{image_outputs(nb)} image outputs, {widget_images} Image widgets and "
            f"{markdown_images} images in its text")

    def test_every_widget_is_shown_as_its_last_state(self, site, stem):
        page = site / "tutorials" / f"{stem}.html"
        nb = executed(stem)
        state = widget_state(nb)
        text = page.read_text(encoding="utf-8")
        assert "widget-view+json" not in text and "widget-state+json" not in text, \
            f"{stem}: a widget is left for JavaScript that a static page cannot run"
        snapshots = {e.attrs.get("data-widget-model"): e for e in parse_html(page).iter("div")
                     if "widget-snapshot" in e.classes()}
        views = widget_views(nb)
        assert set(views) <= state.keys(), f"{stem}: the executed copy lacks widget state"
        assert set(snapshots) == set(views), f"{stem}: widget outputs {views}, snapshots " \
            f"{sorted(snapshots)}"
        for model_id in views:
            saved = sorted(images_under(model_id, state))
            shown = sorted(local_target(page, img.attrs["src"])[0].read_bytes()
                           for img in snapshots[model_id].iter("img"))
            assert shown == saved, f"{stem}: widget {model_id} shows {len(shown)} pictures, " \
                f"its saved state holds {len(saved)} images (or other bytes)"
            assert snapshots[model_id].all_text().strip() or shown, \
                f"{stem}: widget {model_id} became an empty snapshot"

    def test_solutions_are_folded_with_their_code(self, site, stem):
        page = site / "tutorials" / f"{stem}.html"
        blocks = solution_blocks(executed(stem))
        details = list(parse_html(page).iter("details"))
        assert len(details) == len(blocks) >= 1, \
            f"{stem}: {len(details)} <details> on the page, {len(blocks)} in the notebook"
        for block, element in zip(blocks, details):
            assert "open" not in element.attrs, f"{stem}: a solution is unfolded"
            assert any(True for _ in element.iter("summary")), f"{stem}: a solution lacks <summary>"
            fences = len(re.findall(r"^\s*```", block, re.M)) // 2
            code = [e for e in element.iter("div") if "highlight" in e.classes()]
            assert len(code) == fences, \
                f"{stem}: a solution has {fences} code blocks, {len(code)} highlighted on the page"


@pytest.mark.slow
@pytest.mark.tutorial
@pytest.mark.timeout(BUILD_TIMEOUT + 300)
def test_every_local_link_of_the_book_resolves(site):
    assert sorted(p.stem for p in (site / "tutorials").glob("*.html")) == CHAPTERS, \
        "the book has a page per chapter of tutorials/, and no other"
    broken = broken_links(site)
    assert not broken, "broken links:\n" + "\n".join(broken[:30])


# -- a handmade book: links, and a broken link failing the build --------------------------------

def tiny_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG written byte by byte: 8-bit RGB, no filter, one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def notebook(*cells: dict, widgets: dict | None = None) -> dict:
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}}
    if widgets is not None:
        meta["widgets"] = {WIDGET_STATE: {"version_major": 2, "version_minor": 0,
                                          "state": widgets}}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": meta,
            "cells": [dict(cell, id=f"cell{i}") for i, cell in enumerate(cells)]}


def markdown(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code(text: str, *outputs: dict, count: int | None = 1) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": text, "execution_count": count,
            "outputs": list(outputs)}


def widget_output(model_id: str, text: str) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": model_id},
                     "text/plain": text}}


def model(name: str, buffers: list | None = None, **state) -> dict:
    entry = {"model_name": name, "model_module": "@jupyter-widgets/controls",
             "model_module_version": "2.0.0", "state": {"_model_name": name, **state}}
    if buffers:
        entry["buffers"] = buffers
    return entry


def write_chapters(tmp: Path, chapters: dict[str, dict]) -> tuple[Path, Path]:
    """``tmp/repo/tutorials`` with the chapters cleared, ``tmp/executed`` with them as given."""
    tutorials, executed_dir = tmp / "repo" / "tutorials", tmp / "executed"
    tutorials.mkdir(parents=True)
    executed_dir.mkdir()
    for name, nb in chapters.items():
        (executed_dir / f"{name}.ipynb").write_text(json.dumps(nb))
        clean = json.loads(json.dumps(nb))
        clean["metadata"].pop("widgets", None)
        for cell in clean["cells"]:
            if cell["cell_type"] == "code":
                cell.update(outputs=[], execution_count=None)
        (tutorials / f"{name}.ipynb").write_text(json.dumps(clean))
    return tutorials, executed_dir


@pytest.mark.slow
def test_links_between_chapters_and_to_files_and_a_broken_one(tmp_path):
    png = tiny_png(3, 2, (200, 30, 40))
    state = {"box": model("VBoxModel", children=["IPY_MODEL_img"]),
             "img": model("ImageModel", format="png",
                          buffers=[{"path": ["value"], "encoding": "base64",
                                    "data": base64.b64encode(png).decode()}])}
    first = notebook(
        markdown("# A first chapter\n\nOn to [the next chapter](01_second.ipynb), straight to "
                 "[its section](01_second.ipynb#a-section-title), and [the data](../data/points."
                 "csv).\n\n<details><summary>Solution</summary>\n\n```python\nx = 1\n```\n\n"
                 "</details>"),
        code("show()", widget_output("box", "Shown(children=...)")),
        widgets=state)
    second = notebook(markdown("# The second chapter\n\n## A section title\n\nBack to "
                               "[the first](00_first.ipynb)."), code("y = 2"))
    tutorials, executed_dir = write_chapters(tmp_path, {"00_first": first, "01_second": second})
    (tutorials.parent / "data").mkdir()
    (tutorials.parent / "data" / "points.csv").write_text("x,y\n1,2\n")

    done = run_build("--out", str(tmp_path / "book"), "--executed", str(executed_dir),
                     "--tutorials", str(tutorials), timeout=300)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "book" / "html"
    assert broken_links(site) == []
    page = site / "tutorials" / "00_first.html"
    hrefs = [e.attrs.get("href", "") for e in parse_html(page).iter("a")]
    assert "01_second.html" in hrefs and "01_second.html#a-section-title" in hrefs
    download = next(h for h in hrefs if h.endswith("points.csv"))
    assert (page.parent / download).resolve().read_text() == "x,y\n1,2\n"
    pictures = [local_target(page, e.attrs["src"])[0] for e in parse_html(page).iter("img")]
    assert [p.read_bytes() for p in pictures] == [png]

    second["cells"][0]["source"] += "\n\nAnd [a chapter that is not there](02_third.ipynb)."
    tutorials, executed_dir = write_chapters(tmp_path / "broken", {"00_first": first,
                                                                   "01_second": second})
    (tutorials.parent / "data").mkdir()
    (tutorials.parent / "data" / "points.csv").write_text("x,y\n1,2\n")
    done = run_build("--out", str(tmp_path / "broken" / "book"), "--executed", str(executed_dir),
                     "--tutorials", str(tutorials), timeout=300)
    assert done.returncode == 1
    assert "02_third.ipynb" in done.stderr and "01_second.ipynb cell 0" in done.stderr, \
        done.stderr


# -- the widget-to-picture step, fast -----------------------------------------------------------

def test_widget_state_becomes_a_static_picture():
    png = tiny_png(4, 3, (10, 120, 250))
    layout = {"hidden": model("LayoutModel", display="none"),
              "wide": model("LayoutModel", width="320px")}
    state = {
        "root": model("VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_img", "IPY_MODEL_status",
                                             "IPY_MODEL_secret"]),
        "row": model("HBoxModel", children=["IPY_MODEL_n", "IPY_MODEL_family", "IPY_MODEL_bar"]),
        "n": model("IntSliderModel", description="n", value=16, min=2, max=64),
        "family": model("DropdownModel", description="family", index=1,
                        _options_labels=["ring", "grid"]),
        "bar": model("FloatProgressModel", value=7.0, max=10.0),
        "img": model("ImageModel", format="png", layout="IPY_MODEL_wide",
                     buffers=[{"path": ["value"], "encoding": "base64",
                               "data": base64.b64encode(png).decode()}]),
        "status": model("HTMLModel", value="<b>step 3</b>"),
        "secret": model("LabelModel", value="not shown", layout="IPY_MODEL_hidden"),
        **layout,
    }
    plot = {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}}
    nb = notebook(code("w", widget_output("root", "Player(children=(...))"), plot),
                  widgets=state)
    saved = []

    def save(data: bytes, extension: str, name: str) -> str:
        saved.append((data, extension, name))
        return f"pictures/{name}"

    assert picture_widgets(nb, save, name="ch") == 1
    assert "widgets" not in nb["metadata"]
    assert saved == [(png, "png", "ch-img.png")]
    out, untouched = nb["cells"][0]["outputs"]
    assert untouched is plot and WIDGET_VIEW not in out["data"]
    builder = _TreeBuilder()
    builder.feed(out["data"]["text/html"])
    root = next(builder.root.iter("div"))
    assert root.attrs["data-widget-model"] == "root" and root.attrs["data-widget"] == "Player"
    assert [e.attrs["src"] for e in root.iter("img")] == ["pictures/ch-img.png"]
    assert "width:320px" in next(root.iter("img")).attrs["style"]
    slider = next(root.iter("input"))
    assert (slider.attrs["value"], slider.attrs["min"], slider.attrs["max"]) == ("16", "2", "64")
    assert "disabled" in slider.attrs
    assert [o.all_text() for o in root.iter("option")] == ["grid"]
    progress = next(root.iter("progress"))
    assert (progress.attrs["value"], progress.attrs["max"]) == ("7.0", "10.0")
    assert [b.all_text() for b in root.iter("b")] == ["step 3"]
    assert "not shown" not in out["data"]["text/html"]
    rows = [e for e in root.iter("div") if "ws-row" in e.classes()]
    assert len(rows) == 1 and {c.tag for c in rows[0].children} == {"span"}


def test_a_widget_without_saved_state_is_a_clear_error():
    nb = notebook(markdown("# t"), code("w", widget_output("gone", "W()")), widgets={})
    with pytest.raises(WidgetStateError, match=r"cell 1 shows widget 'gone'.*nbclient"):
        picture_widgets(nb, lambda data, ext, name: name, name="ch")
