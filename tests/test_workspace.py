"""declearn lab: working copies of the chapters (seeded once, never overwritten, refreshed on
demand) and a real JupyterLab started on them, as root when the tests run as root."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from declearn.workspace import lab_command, lab_environment, refresh_chapter, seed_workspace

ROOT = Path(__file__).resolve().parents[1]


def course(tmp_path: Path) -> Path:
    tutorials = tmp_path / "tutorials"
    tutorials.mkdir()
    for name in ("00_start.ipynb", "03_dgd.ipynb"):
        (tutorials / name).write_text(json.dumps({"cells": [], "name": name}))
    (tutorials / "README.md").write_text("# chapters\n")
    (tutorials / "notes.txt").write_text("not a chapter")
    return tutorials


def test_seeding_copies_once_and_never_overwrites(tmp_path):
    tutorials, work = course(tmp_path), tmp_path / "work"
    assert seed_workspace(tutorials, work) == ["00_start.ipynb", "03_dgd.ipynb", "README.md"]
    assert (work / "03_dgd.ipynb").read_bytes() == (tutorials / "03_dgd.ipynb").read_bytes()
    assert not (work / "notes.txt").exists()
    (work / "03_dgd.ipynb").write_text("my answers")
    (tutorials / "04_new.ipynb").write_text("{}")  # a chapter that came with a git pull
    assert seed_workspace(tutorials, work) == ["04_new.ipynb"]
    assert (work / "03_dgd.ipynb").read_text() == "my answers"


def test_refresh_keeps_the_students_copy_as_a_backup(tmp_path):
    tutorials, work = course(tmp_path), tmp_path / "work"
    seed_workspace(tutorials, work)
    (work / "03_dgd.ipynb").write_text("my answers")
    fresh, backup = refresh_chapter(tutorials, work, "3")
    assert fresh == work / "03_dgd.ipynb"
    assert fresh.read_bytes() == (tutorials / "03_dgd.ipynb").read_bytes()
    assert backup.name.startswith("03_dgd.backup-") and backup.read_text() == "my answers"
    assert refresh_chapter(tutorials, work, "00")[1].name.startswith("00_start.backup-")
    with pytest.raises(ValueError, match="one of 00, 03"):
        refresh_chapter(tutorials, work, "7")
    with pytest.raises(FileNotFoundError, match="run from the repository root"):
        seed_workspace(tmp_path / "nowhere", work)


def test_root_gets_allow_root_and_terminals_get_the_environment():
    assert lab_command(["--no-browser"], root=True)[-1] == "--allow-root"
    assert "--allow-root" not in lab_command([], root=False)
    assert lab_command([])[:2][1] == "lab"
    env = lab_environment({"PATH": "/usr/bin:/bin"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["PATH"].endswith("/usr/bin:/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_declearn_lab_serves_the_working_copies(tmp_path):
    tutorials, work = course(tmp_path), tmp_path / "work"
    port, token = _free_port(), "declearn-test"
    cmd = [str(Path(sys.executable).with_name("declearn")), "lab", "--tutorials", str(tutorials),
           "--work", str(work), "--", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}"]
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        deadline, listing = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer"
        names = {item["name"] for item in listing["content"]}
        assert {"00_start.ipynb", "03_dgd.ipynb", "README.md"} <= names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "working copies are in" in out
    if os.geteuid() == 0:  # JupyterLab refuses root without --allow-root: it answered above
        assert "Running as root" in out
