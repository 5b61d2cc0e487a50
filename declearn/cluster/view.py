"""The view ``%px`` uses: :class:`ClusterView`, a rank-ordered DirectView that checks the
cluster before each request and names the rank that died when engines die during one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipyparallel import AsyncResult, DirectView
from ipyparallel.error import CompositeError, EngineError, NoEnginesRegistered, RemoteError

from declearn.cluster.faults import JOB_END_WAIT

if TYPE_CHECKING:
    from declearn.cluster.handle import Cluster

__all__ = ["ClusterView"]


def _engine_died(exc: BaseException) -> bool:
    """Whether an ipyparallel error says that an engine died while running the request."""
    if isinstance(exc, EngineError):
        return True
    if isinstance(exc, CompositeError):
        return any(entry[0] == "EngineError" for entry in exc.elist)
    return isinstance(exc, RemoteError) and exc.ename == "EngineError"


class _ExplainedResult(AsyncResult):
    """An AsyncResult whose ``get()`` says which rank died when engines died meanwhile
    (``%px`` sends without blocking, then calls ``get()`` itself)."""

    _cluster: Cluster

    def get(self, *args, **kwargs):
        try:
            return super().get(*args, **kwargs)
        except (CompositeError, RemoteError) as exc:
            explained = self._cluster._explain_failure(exc)
            if explained is None:
                raise
            raise explained from exc


class ClusterView(DirectView):
    """The blocking, rank-ordered DirectView of a :class:`Cluster` (``cluster.view``, what
    ``%px`` uses). Before each request it checks that the cluster can serve it: stopped
    clusters and ended MPI jobs raise a :class:`ClusterError` that says what to do, instead of
    ipyparallel's closed-socket or no-engine errors. A request during which engines die
    raises :class:`MPIJobEndedError`, naming the rank that died first and how."""

    _cluster: Cluster

    def _explained(self, call, *args, **kwargs):
        self._cluster._check_usable(self)
        try:
            result = call(*args, **kwargs)
        except (CompositeError, RemoteError) as exc:
            explained = self._cluster._explain_failure(exc)
            if explained is None:
                raise
            raise explained from exc
        except NoEnginesRegistered:
            self._cluster._check_usable(self, wait=JOB_END_WAIT)
            raise
        if type(result) is AsyncResult:
            result.__class__ = _ExplainedResult  # adds get(); same state, same behaviour
            result._cluster = self._cluster
        return result

    def execute(self, *args, **kwargs):
        return self._explained(super().execute, *args, **kwargs)

    def _really_apply(self, *args, **kwargs):  # apply*, push, pull, map, scatter, gather
        return self._explained(super()._really_apply, *args, **kwargs)
