"""Run on a test host by tests/test_multihost.py: ``start PROFILE_DIR JSON`` starts a persistent
cluster with ``declearn.cluster.start(**JSON)`` and prints each rank's host name; ``connect
PROFILE_DIR`` (from another host) runs a notebook in a real kernel there whose first cell
attaches to it as a chapter's does (``declearn.cluster.connect``, which must neither forget it
nor start another), then checks a neighbor_allreduce and chapter 00's ring allreduce on the
engines against numpy and detaches, leaving the cluster running; it prints the result as JSON.
Failures print ``ERROR <type>: <message>`` and exit 1."""

from __future__ import annotations

import json
import os
import socket
import sys


def _mix():
    import socket

    import numpy as np
    import torch

    import declearn.topology as T
    from declearn.comm.mpi import MPIComm
    from declearn.comm.ring import ring_allreduce

    comm = MPIComm(timeout=30)
    X = np.random.default_rng(0).standard_normal((comm.size, 1000))
    ring = T.make("exponential", comm.size)
    y = comm.neighbor_allreduce(torch.as_tensor(X[comm.rank]), ring)
    total = ring_allreduce(comm, torch.as_tensor(X[comm.rank]))
    return {"host": socket.gethostname(),
            "mix_error": float(np.abs(y.numpy() - ring.W[comm.rank] @ X).max()),
            "sum_error": float(np.abs(total.numpy() - X.sum(0)).max())}


def _from_a_notebook(pdir: str) -> dict:
    """Run, in a real notebook kernel on this host, what a chapter's cells would: connect(4),
    the collective on the engines, detach; return what the cells printed."""
    import inspect

    import nbformat
    from nbclient import NotebookClient

    cells = [
        "import json, socket\nimport declearn.cluster as dc\n"
        f"cluster = dc.connect(4, profile_dir={pdir!r}, timeout=60)",
        inspect.getsource(_mix) + "\nranks = cluster.view.apply_sync(_mix)",
        "print(json.dumps({'attached_from': socket.gethostname(), 'ranks': ranks, "
        "'owned': cluster.owned}))\ncluster.stop()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(__file__)}}).execute()
    outputs = [o for c in nb.cells for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{errors[0].ename}: {errors[0].evalue}")
    return json.loads(outputs[-1].text.strip().splitlines()[-1])


def main() -> None:
    import declearn.cluster as dc

    mode, pdir = sys.argv[1], sys.argv[2]
    try:
        if mode == "start":
            cluster = dc.start(profile_dir=pdir, persistent=True, **json.loads(sys.argv[3]))
            print(json.dumps(cluster.view.apply_sync(socket.gethostname)))
        else:
            print(json.dumps(_from_a_notebook(pdir)))
    except Exception as exc:  # noqa: BLE001 - the test reads the error
        print(f"ERROR {type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
