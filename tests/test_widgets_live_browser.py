"""LiveTraining updates in a real browser while the training cell runs (headless JupyterLab,
Debian's Chromium, as tests/test_widgets_browser.py).

The notebook shows the widget in one cell and trains in the next (a real simulator run of
declearn.optim.train feeding ``live.update``); while that cell's prompt still reads ``[*]``
the page must already show several different pictures and a moving progress bar, and at the
end the bar is full and the status names the last step. Skips without Chromium or playwright.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from browser_lab import (  # tests/ is on sys.path
    JupyterLab,
    browser_marks,
    launch_chromium,
    notebook,
    open_notebook,
    wait_kernel_idle,
)

pytestmark = browser_marks()

STEPS = 40
CELLS = (
    "import time\nimport torch\nfrom declearn.comm import SimComm\n"
    "from declearn.optim import Decentralized, StackedModel, train\n"
    "from declearn.problems import NodeBatches, load_digits, partition\n"
    "from declearn.topology import ring\nfrom widgets import LiveTraining\n"
    "data = load_digits(test_size=200)\n"
    "parts = partition(data.y_train.numpy(), 4, method='dirichlet', alpha=0.5, seed=0)\n"
    "net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), "
    "torch.nn.Linear(16, 10))\nmodel = StackedModel(net, 4)\n"
    "opt = Decentralized(torch.optim.Adam(model.parameters(), lr=0.01), SimComm(4), ring(4))",
    f"live = LiveTraining(steps={STEPS}, min_interval=0.2)\nlive",
    "def slow(record):\n    live.update(record)\n    time.sleep(0.2)\n"
    f"log = train(model, opt, data, NodeBatches(parts, 8, seed=1), {STEPS}, every=2, "
    "on_record=slow)",
    "live.wait_idle()\nprint('fed', len(live.model))",
)

_STATE = """() => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    const shown = cells[1]?.querySelector('.jp-OutputArea-output');
    const img = shown?.querySelector('img');
    const bar = shown?.querySelector('.progress-bar');
    return {prompts: cells.map(c => c.querySelector('.jp-InputPrompt')?.textContent ?? ''),
            src: img && img.complete && img.naturalWidth ? img.src : null,
            bar: bar ? bar.style.width : null, text: shown ? shown.innerText : ''};
}"""


def test_the_plot_moves_while_the_training_cell_runs(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs the playwright package: pip install playwright")
    root = tmp_path / "lab"
    root.mkdir()
    (root / "live.ipynb").write_text(json.dumps(notebook(*CELLS)))
    during_srcs, during_bars, states = set(), set(), []
    with JupyterLab(root) as lab, sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_notebook(page, lab, "live.ipynb")
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                state = page.evaluate(_STATE)
                states.append(state)
                if "[*]" in state["prompts"][2] and state["src"]:
                    during_srcs.add(state["src"])
                    during_bars.add(state["bar"])
                if all(re.match(r"\s*\[\d+\]", p) for p in state["prompts"]):
                    break
                time.sleep(0.1)
            wait_kernel_idle(page)
            time.sleep(1.0)  # the last comm messages
            final = page.evaluate(_STATE)
            text = page.inner_text(".jp-Notebook")
        finally:
            browser.close()
    assert "Traceback" not in text and "Error displaying widget" not in text, text
    assert f"fed {STEPS // 2}" in text, text
    assert len(during_srcs) >= 3, f"the picture did not move while training: {states[-5:]}"
    assert len(during_bars) >= 3, f"the progress bar did not move: {during_bars}"
    assert final["bar"] == "100%" and f"step {STEPS} / {STEPS}" in final["text"], final
