"""The widgets' pictures are sharp in a real browser (headless JupyterLab, Debian's Chromium).

A page with ``devicePixelRatio`` 2 (a HiDPI screen) shows the four widgets; for each picture we
read what the browser lays out: the ``<img>``'s width in CSS pixels and the PNG's own width in
pixels. Sharp means every device pixel has a PNG pixel behind it (``naturalWidth >= clientWidth
x devicePixelRatio``) and the picture is not stretched beyond the size it was drawn for. Needs
Chromium and playwright, as tests/test_browser.py; skips without them.
"""

from __future__ import annotations

import json
import time

import pytest

from browser_lab import (  # tests/ is on sys.path
    JupyterLab,
    browser_marks,
    launch_chromium,
    notebook,
    open_notebook,
    run_all_cells,
)

pytestmark = browser_marks()

CELLS = (
    "from widgets import AlgorithmRace, ConsensusPlayer, SpectralGapExplorer, TopologyExplorer",
    "TopologyExplorer('ring', n=8)",
    "SpectralGapExplorer()",
    "ConsensusPlayer('ring', n=8)",
    "AlgorithmRace()",
)


def _sizes(page) -> list:
    """Per code cell: the picture's natural (PNG) and displayed (CSS) size, or None."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.jp-CodeCell')].map(c => {
            const img = c.querySelector('.jp-OutputArea-output img');
            if (!img || !img.complete || !img.naturalWidth) return null;
            const r = img.getBoundingClientRect();
            return {natural: [img.naturalWidth, img.naturalHeight], shown: [r.width, r.height],
                    dpr: window.devicePixelRatio};
        })"""
    )


def test_pictures_have_a_png_pixel_per_device_pixel(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "sharp.ipynb").write_text(json.dumps(notebook(*CELLS)))
    with JupyterLab(root) as lab, sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000},
                                    device_scale_factor=2)
            open_notebook(page, lab, "sharp.ipynb")
            run_all_cells(page)
            deadline = time.monotonic() + 90
            while None in (sizes := _sizes(page))[1:] and time.monotonic() < deadline:
                time.sleep(0.3)
            text = page.inner_text(".jp-Notebook")
        finally:
            browser.close()
    assert "Error displaying widget" not in text and "Traceback" not in text, text
    assert None not in sizes[1:], f"a widget shows no picture: {sizes}"
    for cell, size in zip(CELLS[1:], sizes[1:]):
        (nw, nh), (w, h), dpr = size["natural"], size["shown"], size["dpr"]
        assert dpr == 2
        assert nw >= w * dpr - 1 and nh >= h * dpr - 1, f"{cell}: blurred, {size}"
        assert nw <= w * dpr + 1, f"{cell}: shown smaller than drawn, {size}"
        assert abs(nw / nh - w / h) < 0.02, f"{cell}: aspect ratio changed, {size}"
