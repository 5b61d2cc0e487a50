"""Follow a training run on the engines while it runs: records published by the engines,
collected by the notebook.

On the engines, the training loop (:func:`declearn.optim.train`) hands every
:class:`~declearn.optim.Record` to :func:`publish_record`, which sends it from the reporting
rank with ipyparallel's data publication (``ipyparallel.datapub.publish_data``: a dict merged
into the running request's ``AsyncResult.data`` on the client). In the notebook,
:func:`follow` watches the request's ``AsyncResult`` until it is done, hands each new record to
a callback (e.g. a live plot) and shows a progress bar of the steps::

    %%px --noblock -o ar
    log = train(model, opt, data, batches, STEPS, every=10, on_record=publish_record)

    records = follow(ar, steps=STEPS, on_record=print)   # ar: that cell's AsyncResult

Each record travels under its own key (``PREFIX`` + a per-process sequence number), so none
is overwritten by the next one, however rarely the client looks. ``follow`` waits on the
request with a timeout of ``interval`` seconds between two looks (no busy loop), and when the
engines raised, raises :class:`EngineRunError` naming the ranks (an engine that died raises
:class:`~declearn.cluster.MPIJobEndedError`, as every request on ``cluster.view`` does).
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Callable
from numbers import Real

from declearn.errors import ClusterError

__all__ = ["PREFIX", "EngineRunError", "follow", "publish_record", "published_records"]

#: Key prefix of a published record in ``AsyncResult.data``.
PREFIX = "declearn.live.record."
_sequence = itertools.count()
_warned_outside = False


# ============================================================================ engine side
def _data_publisher():
    """ipyparallel's data publisher of this process, or None outside an ipyparallel engine."""
    if "ipyparallel.engine.kernel" not in sys.modules:
        return None
    from ipykernel.zmqshell import ZMQInteractiveShell
    from ipyparallel.engine.datapub import ZMQDataPublisher

    if not ZMQInteractiveShell.initialized():
        return None
    publisher = getattr(ZMQInteractiveShell.instance(), "_data_pub", None)
    return publisher if isinstance(publisher, ZMQDataPublisher) else None


def _reports(comm) -> bool:
    if comm is not None:
        return bool(comm.reports)
    mpi = sys.modules.get("mpi4py.MPI")  # an engine of a declearn cluster has imported it
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return True  # one process: it reports
    return mpi.COMM_WORLD.Get_rank() == 0


def publish_record(record, comm=None) -> bool:
    """Send ``record`` (a :class:`~declearn.optim.Record`, or a dict with the same fields) to
    the client that follows this request; use it as ``train(..., on_record=publish_record)``.

    Only the reporting rank sends (``comm.reports`` when ``comm`` is given, else MPI rank 0 of
    ``COMM_WORLD``): records are the same on every rank. Returns True when the record was
    sent. Outside an ipyparallel engine (a notebook kernel, a script, the simulator) it does
    nothing and returns False, with a RuntimeWarning the first time; there, pass
    ``LiveTraining.update`` (or any callback) as ``on_record`` instead.
    """
    global _warned_outside
    publisher = _data_publisher()
    if publisher is None:
        if not _warned_outside:
            _warned_outside = True
            warnings.warn("publish_record does nothing outside an ipyparallel engine: records "
                          "are published only by training that runs on a cluster's engines. "
                          "In the simulator, pass your own callback as on_record (e.g. "
                          "LiveTraining.update).", RuntimeWarning, stacklevel=2)
        return False
    if not _reports(comm):
        return False
    fields = record.as_dict() if hasattr(record, "as_dict") else dict(record)
    publisher.publish_data({f"{PREFIX}{next(_sequence):09d}": fields})
    return True


# ============================================================================ client side
class EngineRunError(ClusterError):
    """The request that :func:`follow` watched raised on some engines.

    ``ranks``: the MPI ranks that raised (engine ids when the request was not made through a
    declearn cluster's view); ``errors``: ``{rank: (exception name, message, traceback)}``;
    the remote traceback of the first rank is shown under the message."""

    def __init__(self, message: str, errors: dict):
        super().__init__(message)
        self.errors = errors
        self.ranks = sorted(errors)

    def _render_traceback_(self):  # IPython: the message, then the first remote traceback
        first = self.errors[self.ranks[0]]
        tb = first[2] if isinstance(first[2], list) else str(first[2] or "").splitlines()
        return [f"{type(self).__name__}: {self}", "", *tb]


def published_records(ar) -> list[dict]:
    """The records published so far to ``ar`` (dicts, in publication order)."""
    data = ar.data
    merged: dict = {}
    for part in data if isinstance(data, list) else [data]:
        merged.update(dict(part or {}))  # a copy: the client's I/O thread adds keys
    return [merged[k] for k in sorted(k for k in merged if str(k).startswith(PREFIX))]


def _as_record(fields):
    import numpy as np

    from declearn.optim.training import Record

    return Record(int(fields["step"]), np.asarray(fields["loss"], dtype=float),
                  np.asarray(fields["accuracy"], dtype=float), float(fields["mean_accuracy"]),
                  float(fields["consensus"]))


def _where(engine_id, cluster) -> tuple[object, str]:
    """(key, words) for the engine that raised: its MPI rank when known."""
    if cluster is not None and engine_id is not None:
        for info in cluster.info:
            if info.get("engine_id") == engine_id:
                return info["rank"], f"rank {info['rank']}"
    return engine_id, f"engine {engine_id}"


def _engine_errors(exc, cluster) -> EngineRunError | None:
    from ipyparallel.error import CompositeError, RemoteError

    if isinstance(exc, CompositeError):
        entries = exc.elist
    elif isinstance(exc, RemoteError):
        entries = [(exc.ename, exc.evalue, exc.traceback, exc.engine_info)]
    else:
        return None
    errors, words = {}, {}
    for ename, evalue, tb, info in entries:
        key, where = _where((info or {}).get("engine_id"), cluster)
        errors.setdefault(key, (ename, evalue, tb))
        words.setdefault(key, where)
    keys = sorted(errors, key=lambda k: (k is None, k if isinstance(k, int) else 0))
    errors = {k: errors[k] for k in keys}
    lines = "; ".join(f"{words[k]} raised {errors[k][0]}: {errors[k][1]}" for k in keys)
    plural = "s" if len(keys) > 1 else ""
    message = (f"The training on the engines failed on {len(keys)} engine{plural}: {lines}. "
               "The records published before the error were delivered; fix the cause and run "
               "the cell again.")
    return EngineRunError(message, errors)


def _check_follow_args(ar, interval, steps, output_timeout) -> None:
    if not (hasattr(ar, "ready") and hasattr(ar, "wait") and hasattr(ar, "msg_ids")):
        raise TypeError(
            f"follow needs the ipyparallel AsyncResult of a running request, got "
            f"{type(ar).__name__}; use ar = cluster.view.apply_async(f, ...) or the value of a "
            "'%%px --noblock -o ar' cell (ar).")
    for name, value in (("interval", interval), ("output_timeout", output_timeout)):
        if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ValueError(f"steps must be the run's number of steps (an integer >= 1) or None, "
                         f"got {steps!r}.")


def follow(ar, on_record: Callable | None = None, *, steps: int | None = None,
           interval: float = 0.25, progress: bool = True, cluster=None,
           output_timeout: float = 10.0) -> list:
    """Watch the running request ``ar`` until it is done; return its records, in order.

    Every ``interval`` seconds (sooner when the request ends) the records the engines
    published since the last look (:func:`publish_record`) become
    :class:`~declearn.optim.Record` objects and go to ``on_record(record)`` one by one.
    ``progress`` shows a tqdm bar of the steps (out of ``steps`` when given). When the request
    ends, the records still in flight are collected (up to ``output_timeout`` seconds), then
    the engines' errors are raised: :class:`EngineRunError` naming the ranks that raised
    (``cluster``, or the cluster whose view made ``ar``, maps engine ids to ranks), or
    :class:`~declearn.cluster.MPIJobEndedError` when an engine died. Interrupting ``follow``
    (the notebook's stop button) leaves the engines running: ``cluster.interrupt()`` stops
    them.
    """
    _check_follow_args(ar, interval, steps, output_timeout)
    cluster = cluster if cluster is not None else getattr(ar, "_cluster", None)
    records: list = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", unit="step")

    def drain() -> None:
        for fields in published_records(ar)[len(records):]:
            record = _as_record(fields)
            records.append(record)
            if bar is not None and record.step > bar.n:
                bar.update(record.step - bar.n)
            if on_record is not None:
                on_record(record)

    try:
        drain()
        while not ar.wait(interval):
            drain()
        ar.wait_for_output(output_timeout)  # data published just before the end
        drain()
    finally:
        if bar is not None:
            bar.close()
    try:
        ar.get()
    except ClusterError:
        raise  # e.g. MPIJobEndedError from cluster.view: already names the rank
    except Exception as exc:
        explained = _engine_errors(exc, cluster)
        if explained is None:
            raise
        raise explained from exc
    return records
