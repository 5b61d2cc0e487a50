"""Clusters of MPI engines for notebooks: start, attach, restart, stop.

```python
import declearn
cluster = declearn.cluster.start(4)      # controller + 4 engines = one MPI job, %%px ready
# or declearn.cluster.connect(4): attach to the running cluster if there is one, else start
cluster.view.apply_sync(lambda: rank)    # [0, 1, 2, 3]: the view is ordered by MPI rank
cluster.stop()                           # ends every process it started
```

Each engine has ``rank``, ``size``, ``local_rank`` and ``device`` in its namespace, one GPU
pinned by local rank where GPUs exist, and the same Python as this kernel (``MPIComm()`` works
there). ``declearn cluster start -n 4`` starts a cluster that outlives the shell; notebooks use
it with :func:`attach`. Gotchas handled here: ``%px`` runs on a *blocking* view (a non-blocking
one prints nothing), engines are addressed by MPI rank (never by engine id), and a killed engine
takes its whole MPI job down: the call that was running raises :class:`MPIJobEndedError`
naming the rank that died and how, every later use says the job ended, and
:meth:`Cluster.restart` starts a new one.
"""

from declearn.cluster.checks import ClusterRequestError
from declearn.cluster.faults import ClusterBusyError, ClusterStoppedError, MPIJobEndedError
from declearn.cluster.handle import Cluster, ClusterView
from declearn.cluster.launch import (
    DEFAULT_PROFILE,
    attach,
    connect,
    list_clusters,
    resolve_profile_dir,
    start,
    stop_clusters,
)
from declearn.cluster.live import EngineRunError, follow, publish_record
from declearn.cluster.mpiexec import MPIRuntime, find_mpiexec, mpi_runtime

__all__ = [
    "start", "attach", "connect", "Cluster", "ClusterView", "list_clusters", "stop_clusters",
    "MPIJobEndedError", "ClusterBusyError", "ClusterStoppedError",
    "resolve_profile_dir",
    "DEFAULT_PROFILE", "ClusterRequestError", "MPIRuntime", "find_mpiexec", "mpi_runtime",
    "follow", "publish_record", "EngineRunError",
]
