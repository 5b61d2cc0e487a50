"""Execute one chapter notebook top to bottom with nbclient, in the Python that runs this file.

Run by the interpreter of the environment under test (``<venv>/bin/python
tests/binder_run_chapter.py CHAPTER.ipynb EXECUTED.ipynb``): jupyter_client then starts the
``python3`` kernel with that same interpreter, so the chapter runs in that environment and so do
the engines it starts. Standard library, nbformat and nbclient only: the environment built from
binder/ has no pytest.

Exit status 0 when every cell ran without an error output, 1 otherwise (the errors are printed);
the executed notebook is written either way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

CELL_TIMEOUT = 600


def run(chapter: Path, executed: Path) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(chapter, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(chapter.parent)}})
    start = time.monotonic()
    failure = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failure = str(exc)
    finally:
        executed.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed)
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print(f"{chapter.name}: {time.monotonic() - start:.1f} s with {sys.executable}", flush=True)
    if failure or errors:
        print("\n".join(errors) or failure, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python binder_run_chapter.py CHAPTER.ipynb EXECUTED.ipynb", file=sys.stderr)
        return 2
    chapter, executed = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    if not chapter.is_file():
        print(f"no notebook at {chapter}", file=sys.stderr)
        return 2
    return run(chapter, executed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
