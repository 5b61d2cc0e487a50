"""``%px`` in a real kernel: the outputs of a cell come in rank order, labelled by rank, even
when the ranks print in the opposite order."""

from __future__ import annotations

import re

import pytest
from cluster_helpers import kill_processes_mentioning

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_px_outputs_come_in_rank_order_labelled_by_rank(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "import declearn\ncluster = declearn.cluster.start(4)",
        "print(sorted((d['rank'], d['engine_id']) for d in cluster.info))",
        "%%px\nimport time\ntime.sleep(1.0 * (3 - rank))   # rank 3 prints first\n"
        "print(f'rank {rank} says hello', flush=True)",
        "cluster.stop()",
    )]
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # as in JupyterLab: conftest makes ipyparallel non-interactive (no streaming) for the tests
    monkeypatch.delenv("IPP_NONINTERACTIVE", raising=False)
    try:
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    finally:
        kill_processes_mentioning(str(tmp_path))

    def text(cell):  # streams, and what a streaming %px displays as it arrives
        return "".join(out.get("text", "") or out.get("data", {}).get("text/plain", "") + "\n"
                       for out in cell.outputs)

    assert text(nb.cells[1]).strip() == str([(r, r) for r in range(4)])  # engine id = rank
    out = text(nb.cells[2])
    labels = [int(m) for m in re.findall(r"\[stdout:(\d+)\]", out)]  # each rank once, in order
    said = [int(m) for m in re.findall(r"rank (\d+) says hello", out)]
    assert labels == said == [0, 1, 2, 3], out
    for r in range(4):  # each label right before its rank's line
        assert re.search(rf"\[stdout:{r}\]\s*\nrank {r} says hello", out), out
