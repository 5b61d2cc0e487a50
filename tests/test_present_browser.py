"""Lecture mode in a real browser: ``declearn present 02`` (a real Voilà server, real engines)
opened in Debian's Chromium through Playwright.

Two ways a lecture starts: on a lecturer's cluster (``declearn cluster start -n 4`` first: the
chapter's ``connect()`` attaches, its last cell only detaches and the cluster keeps running),
and on none (the chapter starts its 4 engines for the page and its last cell stops them).
Checked on the page: every cell ran (the engines' output is there, no error), no code is
shown, text and widgets are drawn at the scale asked for (read from the browser's layout and
from the PNGs themselves), and dragging the topology explorer's step slider with the mouse
changes its picture. Then the server is stopped as Ctrl+C would, a lecturer's cluster with
``declearn cluster stop``, and no server, kernel or engine process may be left. Prints the time
from the command to the rendered page.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from cluster_helpers import processes_mentioning

from browser_lab import browser_marks, free_port, launch_chromium  # tests/ is on sys.path

pytestmark = [*browser_marks(), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "tutorials" / "02_topologies.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
SCALE = 1.5
DECLEARN = str(Path(sys.executable).with_name("declearn"))
SERVER_TIMEOUT = 60.0
RENDER_TIMEOUT_MS = 480_000

WIDGETS = ".jp-OutputArea-output > .jupyter-widgets:has(img)"
EXPLORER_IMAGE = """async () => {
    const img = document.querySelector('WIDGETS img');
    const buf = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    return buf.length + ':' + buf.reduce((h, b) => (h * 31 + b) >>> 0, 7);
}""".replace("WIDGETS", WIDGETS)


def _png_dpi(png: bytes) -> float | None:
    """The resolution a PNG says it was drawn at (its pHYs chunk), in dots per inch."""
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"pHYs":
            per_metre, _, unit = struct.unpack(">IIB", png[pos + 8:pos + 17])
            return per_metre * 0.0254 if unit == 1 else None
        pos += 12 + length
    return None


def _code_lines() -> list[str]:
    """Distinctive lines of chapter 02's code cells: none may appear on the lecture page."""
    cells = json.loads(CHAPTER.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"]).splitlines()
            lines += [ln.strip() for ln in src if len(ln.strip()) > 24 and "%" not in ln][:2]
    return lines


def _ours(marker: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``marker`` (this test's IPYTHONDIR): the
    server, its kernels, the engines and their launchers."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.status() != psutil.STATUS_ZOMBIE \
                    and marker in " ".join(p.environ().values()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"declearn present exited with {proc.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # the server answers
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"Voila not listening after {SERVER_TIMEOUT} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM to ``declearn present`` (it passes it on to Voilà), then SIGKILL to its whole
    session if it is not gone within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.mark.cluster
@pytest.mark.parametrize("lecturer_cluster", [True, False],
                         ids=["on-a-running-cluster", "chapter-starts-its-engines"])
def test_lecture_view_of_chapter_02(tmp_path, lecturer_cluster):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    ipython_dir = tmp_path / "ipython"
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir), "IPP_NONINTERACTIVE": "1",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("MPLBACKEND", None)
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    log = tmp_path / "present.log"
    server = None
    try:
        if lecturer_cluster:
            subprocess.run([DECLEARN, "cluster", "start", "-n", "4", "--timeout", "180"],
                           env=env, check=True, timeout=240, capture_output=True, cwd=ROOT)
            assert processes_mentioning(str(ipython_dir)), "no engine to attach to"

        start = time.monotonic()
        with open(log, "w") as out:
            server = subprocess.Popen(
                [DECLEARN, "present", "02", "--no-browser", "--port", str(port),
                 "--scale", str(SCALE), "--work", str(tmp_path / "no-work"),
                 "--", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait_listening(port, server, log)
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/", timeout=RENDER_TIMEOUT_MS)
                # Executed and rendered: the cells are shown, both widgets drew a picture.
                page.wait_for_function(
                    f"""() => document.querySelector('#rendered_cells')?.style.display !== 'none'
                        && [...document.querySelectorAll('{WIDGETS} img')]
                           .filter(i => i.complete && i.naturalWidth > 0).length >= 2""",
                    timeout=RENDER_TIMEOUT_MS)
                rendered = time.monotonic() - start
                print(f"declearn present 02 -> page rendered: {rendered:.1f} s")
                text = page.inner_text("body")
                layout = page.evaluate(
                    f"""() => {{
                        const root = document.querySelector('{WIDGETS}');
                        const label = [...root.querySelectorAll('.widget-slider .widget-label')]
                            .find(l => l.textContent.trim() === 'step k');
                        const r = label.getBoundingClientRect();
                        const img = root.querySelector('img');
                        return {{
                            paragraph: getComputedStyle(
                                document.querySelector('.jp-RenderedMarkdown p')).fontSize,
                            label: [r.width, r.height, label.offsetWidth, label.offsetHeight],
                            image: [img.naturalWidth, img.getBoundingClientRect().width],
                            inputs: document.querySelectorAll(
                                '.jp-CodeCell .jp-InputArea, .jp-InputPrompt, .cm-editor')
                                .length,
                            figures: [...document.querySelectorAll('.jp-RenderedImage img')]
                                .map(i => i.src).filter(s => s.startsWith('data:image/png')),
                        }};
                    }}""")
                page.screenshot(path=str(ARTIFACTS / "present-02-top.png"))

                before = page.evaluate(EXPLORER_IMAGE)
                explorer = page.locator(WIDGETS).first
                slider = explorer.locator(".widget-slider").filter(
                    has=page.locator(".widget-label", has_text="step k"))
                handle = slider.locator(".noUi-handle").first
                handle.scroll_into_view_if_needed()
                box = handle.bounding_box()
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 150, y, steps=10)  # a drag of the zoomed handle
                page.mouse.up()
                # The kernel redraws for the slider's latest value: its label, then picture.
                step = slider.locator(".widget-readout").inner_text().strip()
                page.wait_for_function(
                    "(k) => document.body.innerText.includes(`W(${k})...W(0)`)", arg=step,
                    timeout=60_000)
                deadline = time.monotonic() + 60
                while (after := page.evaluate(EXPLORER_IMAGE)) == before \
                        and time.monotonic() < deadline:
                    time.sleep(0.2)
                page.wait_for_timeout(1000)  # the last redraw, for the screenshot
                explorer.screenshot(path=str(ARTIFACTS / "present-02-explorer.png"))
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "present-02-failure.png"))
                raise
            finally:
                browser.close()

        # Every cell ran, on the lecturer's cluster or on the page's own, without an error.
        assert ("Attached to the running cluster" in text) == lecturer_cluster, text[:3000]
        assert "after 2 CECA rounds" in text and "rank 3" in text, "the engines' output is missing"
        assert "Traceback" not in text and "There was an error" not in text, text
        assert "Summary" in text
        # No code: no input area, none of the code cells' lines.
        assert layout["inputs"] == 0, layout
        shown = [ln for ln in _code_lines() if ln in text]
        assert not shown, f"code is shown on the lecture page: {shown}"
        # The scale: Markdown at 1.5 x JupyterLab's 14px; the widget drawn 1.5 x its own
        # layout (its 70 x 28 px label); its PNG (2 device pixels per CSS pixel) shown at
        # 1.5 / 2 of its pixels; the cells' figures rendered at 1.5 x matplotlib's 100 dpi.
        assert layout["paragraph"] == f"{14 * SCALE:g}px", layout
        w, h, ow, oh = layout["label"]
        assert (ow, oh) == (70, 28) and w == pytest.approx(ow * SCALE, abs=1), layout
        assert h == pytest.approx(oh * SCALE, abs=1), layout
        natural, displayed = layout["image"]
        assert displayed == pytest.approx(natural / 2 * SCALE, abs=2), layout
        assert layout["figures"], "no matplotlib figure on the page"
        for src in layout["figures"]:
            dpi = _png_dpi(base64.b64decode(src.split(",", 1)[1]))
            assert dpi == pytest.approx(100 * SCALE, abs=0.5)
        # The slider moved and the picture followed.
        assert step != "0", step
        assert after != before

        # The chapter's last cell detached from the lecturer's cluster, which still runs, or
        # stopped the page's own, whose engines are gone while the page stays served.
        status = subprocess.run([DECLEARN, "cluster", "status"], env=env, timeout=60,
                                capture_output=True, text=True, cwd=ROOT)
        if lecturer_cluster:
            assert status.returncode == 0 and "running, 4" in status.stdout, status.stdout
        else:
            assert status.returncode == 1, status.stdout
            assert processes_mentioning(str(ipython_dir)) == []

        # Ctrl+C's path: the server stops its kernels and exits; then the cluster is stopped.
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        if lecturer_cluster:
            stopped = subprocess.run([DECLEARN, "cluster", "stop"], env=env, timeout=120,
                                     capture_output=True, text=True, cwd=ROOT)
            assert "Stopped cluster" in stopped.stdout, stopped.stdout + stopped.stderr
        deadline = time.monotonic() + 30
        while _ours(str(ipython_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ours(str(ipython_dir)) == [], "a server, kernel or engine process is left"
        assert processes_mentioning(str(ipython_dir)) == []
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=2)
    finally:
        if server is not None:
            _stop(server)
        subprocess.run([DECLEARN, "cluster", "stop", "--all"], env=env, timeout=120,
                       capture_output=True, cwd=ROOT)
        for p in _ours(str(ipython_dir)):
            p.kill()
        print(log.read_text()[-2000:] if log.exists() else "")


def test_rise_shows_chapter_02_as_a_deck_in_jupyterlab(tmp_path):
    """JupyterLab's RISE extension is installed and reads the chapter's slide metadata: its
    preview of chapter 02 has one top-level slide per title / ``##`` section."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    from browser_lab import JupyterLab, open_notebook

    root = tmp_path / "lab"
    root.mkdir()
    (root / CHAPTER.name).write_bytes(CHAPTER.read_bytes())
    cells = json.loads(CHAPTER.read_text())["cells"]
    sections = sum(1 for c in cells if c["cell_type"] == "markdown"
                   and any(line.startswith(("# ", "## ")) for line in c["source"]))
    with JupyterLab(root) as lab, sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            open_notebook(page, lab, CHAPTER.name)
            page.locator('.jp-NotebookPanel-toolbar [data-command="RISE:preview"]').click()
            deck = page.frame_locator("iframe[src*='/rise/']")
            deck.locator(".reveal .slides > section").first.wait_for(timeout=60_000)
            shown = deck.locator(".reveal .slides > section").count()
        finally:
            browser.close()
    assert sections > 1 and shown == sections, (shown, sections)
