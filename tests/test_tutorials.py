"""The chapter notebooks in tutorials/: each executed top to bottom in its quick setting with real
MPI engines (nbclient, a real kernel), and each checked for what a chapter must have.

Static checks (fast): outputs are clean in git (no outputs, no execution counts, no absolute
paths); every name imported from declearn or widgets exists; no cell defines a function or
class of more than a few lines (algorithms belong in the library); a chapter has its learning
goals, a parameters cell with a quick and a full setting, a published result, exercises with a
declearn check and solutions; tutorials/README.md lists it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
MAX_DEF_LINES = 8  # a cell may define a tiny helper, not an algorithm
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/work/|/home/|/root/|/tmp/|/Users/|[A-Z]:\\\\)")
CELL_TIMEOUT = 600


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _python_of(cell_source: str) -> str:
    """The Python in a code cell: a leading cell magic line dropped (``%%px`` bodies are Python
    run on the engines), line magics and shell escapes blanked (keeping line numbers)."""
    lines = cell_source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        lines = [""] + lines[1:]
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)


def _code_trees(nb: dict):
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            src = _source(cell)
            yield i, src, ast.parse(_python_of(src))


def test_there_are_chapters():
    assert NOTEBOOKS, f"no chapter notebooks found in {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_are_clean_and_paths_relative(path):
    nb = _load(path)
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"
        match = ABSOLUTE_PATH.search(_source(cell))
        assert match is None, f"{path.name} cell {i} has an absolute path: {match.group(0)}"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} stores widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_imports_exist_and_no_library_code_in_cells(path):
    nb = _load(path)
    for i, _src, tree in _code_trees(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in ("declearn", "widgets"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert alias.name == "*" or hasattr(module, alias.name) or \
                        importlib.util.find_spec(f"{node.module}.{alias.name}") is not None, \
                        f"{path.name} cell {i}: {node.module} has no {alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ("declearn", "widgets"):
                        importlib.import_module(alias.name)
            elif isinstance(node, ast.Attribute):
                chain = _dotted(node)
                if chain and chain[0] in ("declearn", "widgets") and len(chain) > 1:
                    _resolve(chain, f"{path.name} cell {i}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.lineno + 1
                assert size <= MAX_DEF_LINES, (
                    f"{path.name} cell {i} defines {node.name} in {size} lines: code of that size "
                    "belongs in declearn (or widgets), imported by the chapter"
                )


def _dotted(node: ast.Attribute) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _resolve(chain: list[str], where: str) -> None:
    obj = importlib.import_module(chain[0])
    for k, name in enumerate(chain[1:], start=1):
        if hasattr(obj, name):
            obj = getattr(obj, name)
            continue
        try:
            obj = importlib.import_module(".".join(chain[: k + 1]))
        except ImportError:
            if not isinstance(obj, type(importlib)):  # an attribute of an object: runtime only
                return
            raise AssertionError(f"{where}: {'.'.join(chain[: k + 1])} does not exist") from None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_has_goals_parameters_result_exercises(path):
    nb = _load(path)
    markdown = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "code")
    assert re.search(r"learning goals", markdown, re.I), f"{path.name}: no learning goals"
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: tag exactly one cell 'parameters'"
    assert re.search(r"SETTING\s*=\s*[\"']quick[\"']", _source(params[0])), \
        f"{path.name}: the parameters cell sets SETTING = 'quick' (with a full setting)"
    assert "full" in _source(params[0])
    assert re.search(r"published result", markdown, re.I), f"{path.name}: no published result"
    assert re.search(r"declearn\.exercises|from declearn\.exercises import", code), \
        f"{path.name}: exercises need a declearn check"
    assert markdown.count("<details") >= 2, f"{path.name}: solutions go in <details> blocks"
    assert path.name in (TUTORIALS / "README.md").read_text(), \
        f"tutorials/README.md does not list {path.name}"


#: Chapters with a build-it-yourself exercise: the student writes an algorithm's step.
BUILD_IT_CHAPTERS = ("01", "03", "05", "06", "07")
_BUILD_CHECK = re.compile(r"(ch\d\d)\.(check_\w+_step)\((\w+), SimComm\((\d+)\)\)")
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _build_it_exercises(nb: dict):
    """(module, check, function name, n, solution code) for every build-it exercise of a
    chapter: the SimComm check cell, and the first folded solution after it that defines the
    function the check is given."""
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        match = _BUILD_CHECK.search(_source(cell)) if cell["cell_type"] == "code" else None
        if not match:
            continue
        module, check, name, n = match.groups()
        solution = next((block for c in cells[i + 1:] if c["cell_type"] == "markdown"
                         and "<details" in _source(c)
                         for block in _PYTHON_BLOCK.findall(_source(c))
                         if f"def {name}(" in block), None)
        yield module, check, name, int(n), solution


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_build_it_solutions_pass_their_checks(path):
    """The folded solution of every build-it exercise passes its check (the starter stub in
    the notebook does not: test_notebook_runs_top_to_bottom runs that one)."""
    exercises = list(_build_it_exercises(_load(path)))
    if path.name[:2] in BUILD_IT_CHAPTERS:
        assert exercises, f"{path.name}: no build-it exercise (chNN.check_..._step(f, SimComm(n)))"
    import torch

    from declearn.comm import SimComm

    for module, check, name, n, solution in exercises:
        assert solution is not None, f"{path.name}: no folded solution defines {name}"
        namespace = {"torch": torch}
        exec(compile(_python_of(solution), f"{path.name}:{name}", "exec"), namespace)
        checker = getattr(importlib.import_module(f"declearn.exercises.{module}"), check)
        verdict = checker(namespace[name], SimComm(n))
        assert verdict, f"{path.name}: the solution of {name} fails its check: {verdict}"


@pytest.mark.tutorial
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    """The quick setting, every cell, real engines, a real kernel; any error fails."""
    # The kernel inherits this environment: without conftest's Agg it draws figures inline, as
    # in JupyterLab, so the executed copy in test-artifacts/ shows them.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()
    elapsed = time.monotonic() - start
    print(f"{path.name}: {elapsed:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    nbformat.write(nb, ROOT / "test-artifacts" / path.name)  # the executed copy, for reading
