"""A headless JupyterLab and a real Chromium for the browser tests (tests/test_browser.py).

``JupyterLab`` starts ``jupyter lab`` on a free localhost port with a random token, its own
config, settings and workspace folders (nothing read from or written to the user's), serving a
temporary folder; ``open_notebook`` loads a notebook in Chromium through Playwright's Python
package and runs its cells with the keyboard, as a student would. Chromium is Debian's
``chromium`` (Playwright's own browser downloads are not used); set ``DECLEARN_CHROMIUM`` to
another binary if needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

READY_TIMEOUT = 60.0
SETTLE_SECONDS = 2.0


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None (the browser tests then skip, saying how to fix)."""
    explicit = os.environ.get("DECLEARN_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_marks() -> list:
    """The ``pytestmark`` of a browser test module: the ``browser`` marker, and a skip that says
    how to get Chromium when there is none."""
    return [
        pytest.mark.browser,
        pytest.mark.skipif(
            chromium_path() is None,
            reason="needs Chromium: apt-get install chromium (or set DECLEARN_CHROMIUM)",
        ),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook(*sources: str) -> dict:
    """An nbformat-4 notebook (as JSON-ready dict) with one code cell per source."""
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
             "id": f"cell-{i}",
             "source": src}
            for i, src in enumerate(sources)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


# Start the notebook's kernel without asking, and no news pop-up over the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


def _write_settings(settings_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class JupyterLab:
    """``with JupyterLab(root) as lab:`` serves ``root`` at ``lab.url(path)`` until the block ends;
    the server and its kernels are stopped on exit."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root.parent / f"jupyterlab-{self.port}.log"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{path}?token={self.token}"

    def __enter__(self) -> JupyterLab:
        state = self.root.parent / f"lab-state-{self.port}"
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(state / "config"),
            JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(state / "runtime"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                     env.get("PYTHONPATH")])),
        )
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={self.port}", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", "--ServerApp.port_retries=0",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class="
            "jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        _write_settings(state / "settings")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.root)
        deadline = time.monotonic() + READY_TIMEOUT
        status = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(status, timeout=2) as reply:
                    json.load(reply)
                    return self
            except OSError:
                time.sleep(0.25)
        self.__exit__(None, None, None)
        raise TimeoutError(f"jupyter lab not ready after {READY_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-5000:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # jupyter-server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def launch_chromium(playwright):
    """Debian's Chromium under Playwright; ``--no-sandbox`` because CI runs as root."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    )


def open_notebook(page, lab: JupyterLab, name: str, *, timeout_ms: int = 60_000) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.url(name), timeout=timeout_ms)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
    # JupyterLab may connect to the kernel twice while a notebook opens (the status reads idle
    # in between); code run on the first connection loses its widget comms ("model not
    # found"). Wait until the status has read idle for a while without interruption.
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        wait_kernel_idle(page, timeout_ms=timeout_ms)
        quiet_until = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < quiet_until and _kernel_status(page) == "idle":
            time.sleep(0.1)
        if _kernel_status(page) == "idle" or time.monotonic() > deadline:
            return


def _kernel_status(page) -> str | None:
    return page.evaluate(
        "() => document.querySelector('.jp-Notebook-ExecutionIndicator')"
        "?.getAttribute('data-status') ?? null"
    )


def wait_kernel_idle(page, *, timeout_ms: int = 60_000) -> None:
    """The notebook toolbar's kernel status reads Idle (JupyterLab 4 shows it in the toolbar
    and in the status bar)."""
    page.wait_for_function(
        """() => {
            const el = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return el && el.getAttribute('data-status') === 'idle';
        }""",
        timeout=timeout_ms,
    )


_PROMPTS = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"


def run_all_cells(page, *, timeout_ms: int = 120_000, attempts: int = 5) -> None:
    """Run > Run All Cells from JupyterLab's menu bar, as a student would, then wait until every
    cell shows an execution count and the kernel is idle.

    Right after a notebook opens, JupyterLab may still be connecting its kernel and then drops
    the command; it is repeated only while no cell has started (every prompt still ``[ ]``)."""
    for _ in range(attempts):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(
                f"() => {_PROMPTS}.some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))",
                timeout=5_000,
            )
            break
        except Exception:  # noqa: BLE001  (playwright's TimeoutError: try again)
            page.keyboard.press("Escape")
    page.wait_for_function(
        f"() => {_PROMPTS}.every(p => /\\[\\d+\\]/.test(p.textContent))",
        timeout=timeout_ms,
    )
    wait_kernel_idle(page, timeout_ms=timeout_ms)
