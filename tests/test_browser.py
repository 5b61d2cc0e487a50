"""The widgets in a real browser: a headless JupyterLab, Debian's Chromium driven by Playwright.

A notebook with one TopologyExplorer cell is opened and run from JupyterLab's menu; the test then
moves the explorer's n slider with the keyboard and checks that what the browser renders changed
to the right thing: the rho label shows rho of the new ring (computed here with declearn.topology)
and the drawn PNG is a different image. Screenshots go to test-artifacts/ (before and after).

Needs Chromium (``apt-get install chromium``; ``.ci/run`` installs it) and the ``playwright``
Python package (in the test extra); without them the test skips, saying which is missing.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

from browser_lab import (
    JupyterLab,
    browser_marks,
    launch_chromium,
    notebook,
    open_notebook,
    run_all_cells,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = browser_marks()

EXPLORER_CELL = (
    "from widgets import TopologyExplorer\n"
    "explorer = TopologyExplorer('ring', n=8)\n"
    "explorer"
)

RHO_LABEL = re.compile(r"rho = \|\|W - J\|\|_2 = ([0-9.eE+-]+)")


def _output_state(page) -> dict:
    """What the browser shows in the explorer's output: the n readout, the rho label, and the
    PNG's bytes (the <img> holds them as a blob URL, read back through fetch)."""
    return page.evaluate(
        """async () => {
            const out = document.querySelector('.jp-OutputArea-output');
            const readouts = [...out.querySelectorAll('.widget-slider')]
                .filter(s => s.querySelector('.widget-label')?.textContent.trim() === 'n')
                .map(s => s.querySelector('.widget-readout').textContent.trim());
            const img = out.querySelector('img');
            let png = '';
            if (img && img.src) {
                const blob = await (await fetch(img.src)).blob();
                const buf = new Uint8Array(await blob.arrayBuffer());
                png = btoa(String.fromCharCode(...buf.subarray(0, 8)))
                      + ':' + buf.length + ':' + buf.reduce((h, b) => (h * 31 + b) >>> 0, 7);
            }
            return {n: readouts[0] ?? null, text: out.innerText, png: png};
        }"""
    )


def _wait_for_change(page, before: dict, *, timeout: float, rho: float) -> dict:
    """Poll what the browser shows until the rho label shows ``rho`` (to 5 digits) and the
    image differs from ``before`` (they arrive as separate widget messages; a slider dragged
    past several values may first show an intermediate redraw); return the new state."""
    deadline = time.monotonic() + timeout
    state = before
    while time.monotonic() < deadline:
        state = _output_state(page)
        new = RHO_LABEL.search(state["text"])
        if new and abs(float(new.group(1)) - rho) <= 1e-5 * max(rho, 1e-12) \
                and state["png"] != before["png"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the explorer did not redraw within {timeout} s: {state}")


def test_topology_explorer_renders_and_follows_its_n_slider(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    import torch  # noqa: F401  (fail here, not in the kernel, if the environment is broken)

    from declearn.topology import make, rho

    root = tmp_path / "lab"
    root.mkdir()
    (root / "explorer.ipynb").write_text(json.dumps(notebook(EXPLORER_CELL)))
    ARTIFACTS.mkdir(exist_ok=True)

    with JupyterLab(root) as lab, sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_notebook(page, lab, "explorer.ipynb")
            run_all_cells(page)
            page.wait_for_selector(".jp-OutputArea-output img", timeout=60_000)
            page.wait_for_function(
                "() => /rho = /.test(document.querySelector('.jp-OutputArea-output').innerText)",
                timeout=60_000,
            )
            text = page.inner_text(".jp-Notebook")
            assert "Error displaying widget" not in text, text
            assert "Traceback" not in text, text
            before = _output_state(page)
            page.screenshot(path=str(ARTIFACTS / "browser-explorer-before.png"))
            assert before["n"] == "8", before
            shown = float(RHO_LABEL.search(before["text"]).group(1))
            assert shown == pytest.approx(rho(make("ring", 8)), rel=1e-5)
            assert before["png"].startswith(base64.b64encode(b"\x89PNG\r\n\x1a\n").decode())

            # Three steps right on the n slider's handle, as a keyboard user would.
            handle = page.locator(".jp-OutputArea-output .widget-slider", has_text="n") \
                .filter(has=page.locator(".widget-label", has_text=re.compile(r"^n$"))) \
                .locator(".noUi-handle").first
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            after = _wait_for_change(page, before, timeout=60.0, rho=rho(make("ring", 11)))
            page.screenshot(path=str(ARTIFACTS / "browser-explorer-after.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-explorer-failure.png"))
            raise
        finally:
            browser.close()

    assert after["n"] == "11", after
    shown = float(RHO_LABEL.search(after["text"]).group(1))
    assert shown == pytest.approx(rho(make("ring", 11)), rel=1e-5)
    assert shown != pytest.approx(rho(make("ring", 8)), rel=1e-3)
    assert after["png"] != before["png"], "the drawn graph did not change with n"
    assert "Error displaying widget" not in after["text"]


WIDGET_CELLS = (
    "from widgets import AlgorithmRace, ConsensusPlayer, SpectralGapExplorer",
    "SpectralGapExplorer()",
    "ConsensusPlayer('ring', n=8)",
    "AlgorithmRace()",
)


def _images(page) -> list:
    """Per code cell: a fingerprint of the PNG its output shows (None without an image)."""
    return page.evaluate(
        """async () => {
            const cells = [...document.querySelectorAll('.jp-CodeCell')];
            return Promise.all(cells.map(async c => {
                const img = c.querySelector('.jp-OutputArea-output img');
                if (!img || !img.src) return null;
                const buf = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
                return buf.length + ':' + buf.reduce((h, b) => (h * 31 + b) >>> 0, 7);
            }));
        }"""
    )


def test_the_other_widgets_render_and_the_player_steps(tmp_path):
    """SpectralGapExplorer, ConsensusPlayer and AlgorithmRace each render a picture in the
    browser without a widget error; a step of the player's k slider changes its picture."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "widgets.ipynb").write_text(json.dumps(notebook(*WIDGET_CELLS)))
    ARTIFACTS.mkdir(exist_ok=True)

    with JupyterLab(root) as lab, sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_notebook(page, lab, "widgets.ipynb")
            run_all_cells(page)
            deadline = time.monotonic() + 90
            while None in (images := _images(page))[1:] and time.monotonic() < deadline:
                time.sleep(0.3)
            page.screenshot(path=str(ARTIFACTS / "browser-widgets.png"), full_page=True)
            text = page.inner_text(".jp-Notebook")
            assert "Error displaying widget" not in text, text
            assert "Traceback" not in text, text
            assert None not in images[1:], f"a widget shows no picture: {images}"

            player = page.locator(".jp-CodeCell").nth(2)
            handle = player.locator(".widget-slider") \
                .filter(has=page.locator(".widget-label", has_text=re.compile(r"^step k$"))) \
                .locator(".noUi-handle").first
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            # The player streams frames: wait for its status line to read k = 3, then for the
            # picture to stay the same for a second (the last frame has arrived).
            player.locator("text=step k = 3").first.wait_for(timeout=30_000)
            after, since = _images(page), time.monotonic()
            deadline = since + 30
            while time.monotonic() < deadline and time.monotonic() - since < 1.0:
                time.sleep(0.2)
                now = _images(page)
                if now != after:
                    after, since = now, time.monotonic()
            page.screenshot(path=str(ARTIFACTS / "browser-widgets-player-stepped.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-widgets-failure.png"))
            raise
        finally:
            browser.close()
    assert after[2] != images[2], "the player's picture did not change with its step slider"
    assert after[1] == images[1], "the spectral-gap picture changed without input"


def _dirty_tabs(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty')]"
        ".map(t => t.textContent.trim())")


def test_an_untouched_working_copy_opens_unmodified(tmp_path):
    """A chapter copied into the student's working folder (as `make lab` does) opens in
    JupyterLab, kernel connected, without being marked as changed; the original chapter, whose
    metadata names only the language, is (which is why the copies carry the kernel's
    language_info)."""
    from playwright.sync_api import sync_playwright

    from declearn.workspace import seed_workspace

    root = tmp_path / "work"
    seed_workspace(Path(__file__).resolve().parents[1] / "tutorials", root)
    original = json.loads((Path(__file__).resolve().parents[1] / "tutorials"
                           / "00_getting_started.ipynb").read_text())
    (root / "original.ipynb").write_text(json.dumps(original))
    with JupyterLab(root) as lab, sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            open_notebook(page, lab, "00_getting_started.ipynb")
            time.sleep(2)  # metadata from the kernel arrives after it is idle
            assert _dirty_tabs(page) == [], "an untouched working copy shows as modified"
            open_notebook(page, lab, "original.ipynb")
            time.sleep(2)
            assert _dirty_tabs(page) == ["original.ipynb"], _dirty_tabs(page)
        finally:
            browser.close()
    assert json.loads((root / "00_getting_started.ipynb").read_text())["cells"] == \
        original["cells"]
