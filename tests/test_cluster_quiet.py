"""Stopping a cluster is quiet, as in ``make lab``: a real JupyterLab server (with ipyparallel's
server extension, which watches every profile's clusters for the IPython Parallel sidebar)
starts a real kernel; the kernel and its cluster write to the server's stdout/stderr, captured
in the server's log file like the ``make lab`` terminal. A stop must add no engine or
controller log lines there, and no "Failed to remove"; a real failure (an engine killed) is
still reported in the notebook."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid

import pytest
from cluster_helpers import kill_processes_mentioning

from browser_lab import JupyterLab

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: What the engines, their nannies and the controller log, and ipyparallel's "Output for".
PROCESS_LOG = re.compile(r"\[IPEngine|\[KernelNanny|\[IPController|received signal|"
                         r"Output for |Failed to remove")
CELL_TIMEOUT = 180.0
NOTICE_TIMEOUT = 60.0


def _api(lab: JupyterLab, method: str, path: str, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{lab.port}{path}?token={lab.token}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=CELL_TIMEOUT) as reply:
        text = reply.read()
    return json.loads(text) if text else None


async def _execute(lab: JupyterLab, kernel_id: str, code: str) -> list[tuple[str, str]]:
    """Run ``code`` in the kernel through the server's websocket, as JupyterLab does; return
    its ``(stream name or "error", text)`` outputs."""
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(
        f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?token={lab.token}")
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    outputs = []
    try:
        while True:
            raw = await asyncio.wait_for(ws.read_message(), CELL_TIMEOUT)
            if raw is None:
                raise RuntimeError("the kernel's websocket closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream":
                outputs.append((content["name"], content["text"]))
            elif kind == "error":
                outputs.append(("error", "\n".join(content["traceback"])))
            elif kind == "status" and content["execution_state"] == "idle":
                return outputs
    finally:
        ws.close()


def _run(lab, kernel_id, code) -> list[tuple[str, str]]:
    return asyncio.run(_execute(lab, kernel_id, code))


def _wait_for_log(lab: JupyterLab, pattern: str, count: int = 1) -> bool:
    """Until the server has logged ``pattern`` ``count`` times (it notices the processes of
    a cluster it watches end); each look also lists the clusters, as the sidebar does."""
    deadline = time.monotonic() + NOTICE_TIMEOUT
    while time.monotonic() < deadline:
        if len(re.findall(pattern, lab.log_path.read_text())) >= count:
            return True
        _api(lab, "GET", "/ipyparallel/clusters")
        time.sleep(0.2)
    return False


def test_stop_prints_nothing_and_a_killed_engine_is_still_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    root = tmp_path / "root"
    root.mkdir()
    try:
        with JupyterLab(root) as lab:
            kernel = _api(lab, "POST", "/api/kernels", {"name": "python3"})["id"]
            start = _run(lab, kernel, "import declearn.cluster as dc\n"
                                      "cluster = dc.connect(2)\nprint(cluster.cluster_id)")
            cid = start[-1][1].strip()
            # the sidebar lists the clusters: the server now watches this one's processes
            listed = [c["id"] for c in _api(lab, "GET", "/ipyparallel/clusters")]
            assert f"declearn:{cid}" in listed, (listed, start)
            before = len(lab.log_path.read_text())
            stop = _run(lab, kernel, "cluster.stop()\nprint('stopped')")
            assert stop == [("stdout", "stopped\n")], stop
            # the server has seen the controller and the engines end (and logged what it would)
            assert _wait_for_log(lab, rf"Controller stopped: .*{re.escape(cid)}"), lab.log()
            assert _wait_for_log(lab, rf"engine set stopped .*{re.escape(cid)}"), lab.log()
            after = lab.log_path.read_text()[before:]
            assert not PROCESS_LOG.search(after), after
            log_dir = tmp_path / "ipython" / "profile_declearn" / "log"
            assert not [p.name for p in log_dir.iterdir() if cid in p.name]

            # a real failure is not silenced: the notebook names the rank that died
            _run(lab, kernel, "cluster = dc.connect(2)")
            failed = _run(lab, kernel, "import os, signal\n"
                                       "os.kill(cluster.info[1]['pid'], signal.SIGKILL)\n"
                                       "cluster.view.apply_sync(lambda: 1)")
            errors = "".join(text for name, text in failed if name == "error")
            assert "MPIJobEndedError" in errors and "rank 1" in errors, failed
            _run(lab, kernel, "cluster.stop()")
    finally:
        kill_processes_mentioning(str(tmp_path))
