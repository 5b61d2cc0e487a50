"""Run on a test host by tests/test_multihost.py: ``start PROFILE_DIR JSON`` starts a persistent
cluster with ``declearn.cluster.start(**JSON)`` and prints each rank's host name; ``connect
PROFILE_DIR`` (from another host) attaches to it as a chapter's first cell does
(``declearn.cluster.connect``, which must neither forget it nor start another), checks a
neighbor_allreduce and chapter 00's ring allreduce on the engines against numpy, prints the
result as JSON and detaches, leaving the cluster running.
Failures print ``ERROR <type>: <message>`` and exit 1."""

from __future__ import annotations

import json
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


def main() -> None:
    import declearn.cluster as dc

    mode, pdir = sys.argv[1], sys.argv[2]
    try:
        if mode == "start":
            cluster = dc.start(profile_dir=pdir, persistent=True, **json.loads(sys.argv[3]))
            print(json.dumps(cluster.view.apply_sync(socket.gethostname)))
        else:
            cluster = dc.connect(4, profile_dir=pdir, timeout=60)
            found = {"attached_from": socket.gethostname(), "ranks": cluster.view.apply_sync(_mix),
                     "owned": cluster.owned}
            cluster.stop()
            print(json.dumps(found))
    except Exception as exc:  # noqa: BLE001 - the test reads the error
        print(f"ERROR {type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
