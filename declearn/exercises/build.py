r"""Build-it-yourself exercises: the student's step, run next to the library's class.

In the algorithm chapters the student writes one iteration of a method from the
communicator's primitives (``neighbor_allreduce``, ``neighbor_alltoall``, ...), as a function
of the node-local state. A chapter's check builds one problem, topology and starting point from
fixed seeds, starts the library's class on them, and then, for ``k = 1, 2, ..., steps``, advances
both and compares the student's iterate ``x_s^k`` with the class's ``x_r^k``:

    node i differs at iteration k   iff   max |x_s^k[i] - x_r^k[i]| > rtol * max_j max |x_r^k[j]|

The verdict names the first such k, on how many nodes, and the order of magnitude of the
relative difference, never the expected values. Iterates that agree to rounding (the class may
add in another order, or pack several vectors into one message) pass.

The same check runs under ``SimComm`` (one process) and under ``MPIComm`` (called on every
rank, e.g. in a ``%%px`` cell): after each iteration the ranks exchange a three-number status
(``allgather``, not counted in ``comm.traffic``), so every rank reaches the same verdict and
stops at the same iteration, also when the student's code raised on some of them. (A step
that raises on some ranks *between* two of its own collectives leaves the other ranks waiting
in the next one: they get the communicator's deadline error, which the verdict reports, and
the communicator then needs ``comm.resync()`` before the next collective.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from declearn.exercises.base import Verdict, check_true

__all__ = ["compare_iterates", "path_with_chord", "refuse_before_running", "refuse_library_call",
           "seeded_node_local"]

#: Status codes a node reports after each iteration.
_OK, _RAISED, _NOT_TENSOR, _BAD_SHAPE, _NOT_FINITE = range(5)
_MAX_ERROR_TEXT = 300


def refuse_library_call(exercise: str, step: Callable, forbidden) -> Verdict | None:
    """A "not yet" when ``step`` is not a function, or names one of the ``forbidden`` classes
    (the class the exercise rebuilds, say), else None."""
    if not callable(step):
        return Verdict(False, exercise, f"pass your step function itself (got a "
                                        f"{type(step).__name__}), without calling it.")
    code = getattr(step, "__code__", None)
    names = set(code.co_names) if code is not None else set()
    used = sorted(names & set(forbidden))
    if used:
        return Verdict(False, exercise, f"your step uses {', '.join(used)}: build the iteration "
                                        "from the communicator's primitives instead.")
    return None


def refuse_before_running(exercise: str, step, comm, *, signature: str, returns: str,
                          forbidden, min_nodes: int = 3, why: str = "") -> Verdict | None:
    """The verdicts a build-it check gives without running anything: no function yet
    (``None``), not a function, a function that calls a ``forbidden`` class, or fewer than
    ``min_nodes`` nodes (``why`` says why more are needed); None when the run can start."""
    if step is None:
        return Verdict(False, exercise, f"define {signature} (it returns {returns}), then pass "
                                        "the function to the check.")
    refused = refuse_library_call(exercise, step, forbidden)
    if refused is not None:
        return refused
    if comm.size < min_nodes:
        return Verdict(False, exercise, f"run the check on {min_nodes} or more nodes{why} (this "
                                        f"communicator has {comm.size}).")
    return None


def seeded_node_local(comm, width: int, seed: int) -> torch.Tensor:
    """Node-local float64 starting values: row i of ``randn(n, width)`` drawn from ``seed``
    for node i. Every rank draws the same table and keeps its own row (``x[comm.rank]``), so
    SimComm and MPIComm start from the same values."""
    table = torch.randn(comm.size, width, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    return table.to(comm.device)[comm.rank]


def path_with_chord(n: int, chord: tuple[int, int], *, name: str):
    """A check's graph: the path ``0 - 1 - ... - n-1`` plus the link ``chord`` when n >= 4,
    with Metropolis weights (symmetric, doubly stochastic; the degrees differ, so do the
    weights)."""
    from declearn.topology import apply_weights

    edges = [(i, i + 1) for i in range(n - 1)] + ([chord] if n >= 4 else [])
    return apply_weights(n, edges, "metropolis", name=name)


def compare_iterates(exercise: str, comm, student: Iterator[torch.Tensor], reference, *,
                     steps: int, what: str, hint: str = "", rtol: float = 1e-9) -> Verdict:
    """Advance ``student`` (an iterator yielding the student's node-local iterate after each of
    its iterations) and ``reference`` (a declearn ``Algorithm`` at iteration 0) side by side
    for ``steps`` iterations; right when every iterate agrees to ``rtol`` (see the module
    docstring). ``what`` names the reference in the verdict ("AverageConsensus's x");
    ``hint`` is added when the iterates differ. Collective under MPIComm."""
    n = comm.size
    for k in range(1, steps + 1):
        reference.step()
        expected = reference.iterate
        code, error, got = _OK, "", None
        try:
            got = next(student)
        except StopIteration:  # pragma: no cover - the chapters' iterators never end
            code, error = _RAISED, "the iteration stopped early"
        except Exception as exc:  # noqa: BLE001 - whatever the student's code raised
            code, error = _RAISED, f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT]
        if code == _OK:
            code, error = _shape_code(got, expected)
        diff, scale = _node_differences(got if code == _OK else None, expected)
        if code == _OK and not bool(torch.isfinite(diff).all()):
            code = _NOT_FINITE
        status, errors = _gather_status(comm, code, diff, scale, error)
        codes = status[:, 0].round().long()  # status: (n, 3), code, diff and scale per node
        if bool((codes != _OK).any()):
            return _broken_step(exercise, k, codes, errors, tuple(expected.shape))
        tol = rtol * float(status[:, 2].max())
        off = status[:, 1] > tol
        if bool(off.any()):
            worst = float(status[:, 1].max()) / max(float(status[:, 2].max()), 1e-300)
            before = "" if k == 1 else \
                f" (iteration{'s 1 to' if k > 2 else ''} {k - 1} agreed)"
            return Verdict(False, exercise, (
                f"at iteration {k}{before} your iterate differs from {what} on "
                f"{int(off.sum())} of {n} node{'s' if n > 1 else ''}, largest relative "
                f"difference of order {_order(worst)}. {hint}").strip())
    return check_true(exercise, True, wrong="", right=(
        f"your step gives the same iterates as {what} for {steps} iterations on {n} nodes "
        f"(to {rtol:g} relative; the rest is rounding)."))


# ------------------------------------------------------------------ helpers
def _shape_code(got, expected: torch.Tensor) -> tuple[int, str]:
    """A status code and, when not OK, what was returned instead."""
    if not isinstance(got, torch.Tensor):
        return _NOT_TENSOR, "None" if got is None else f"a {type(got).__name__}"
    if tuple(got.shape) != tuple(expected.shape):
        return _BAD_SHAPE, str(tuple(got.shape))
    return _OK, ""


def _lead(comm, x: torch.Tensor) -> tuple:
    from declearn.algorithms.flat import node_dims

    return tuple(x.shape[:node_dims(comm)])


def _node_differences(got, expected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entrywise ``|got - expected|`` (zeros when there is nothing to compare) and
    ``|expected|``, in float64; :func:`_gather_status` reduces them per node."""
    ref = expected.detach().to(torch.float64)
    if got is None:
        return torch.zeros_like(ref), ref.abs()
    return (got.detach().to(device=ref.device, dtype=torch.float64) - ref).abs(), ref.abs()


def _gather_status(comm, code: int, diff: torch.Tensor, scale: torch.Tensor, error: str):
    """Every node's status code, largest difference and largest |reference| (an ``(n, 3)``
    tensor), and the text of each node's exception ("" where none), in one ``allgather``."""
    lead = _lead(comm, scale)
    per_node = (lambda t: t.reshape(lead + (-1,)).amax(-1) if t.numel() else
                torch.zeros(lead, dtype=torch.float64, device=t.device))
    d, s = per_node(diff), per_node(scale)
    d = torch.where(torch.isnan(d), torch.full_like(d, math.inf), d)
    text = error.encode()[:_MAX_ERROR_TEXT]
    chars = torch.zeros(_MAX_ERROR_TEXT, dtype=torch.float64, device=d.device)
    chars[:len(text)] = torch.tensor(list(text), dtype=torch.float64)
    local = torch.cat([torch.stack([torch.full_like(d, float(code)), d, s], dim=-1),
                       chars.expand(lead + (_MAX_ERROR_TEXT,))], dim=-1)
    with comm.untracked():
        gathered = comm.allgather(local)
    rows = gathered.reshape(-1, comm.size, 3 + _MAX_ERROR_TEXT)[0].cpu()
    errors = [bytes(r[3:].round().to(torch.uint8).tolist()).rstrip(b"\0").decode(
        errors="ignore") for r in rows]
    return rows[:, :3], errors


def _broken_step(exercise, k, codes, errors, shape: tuple) -> Verdict:
    """The verdict when some node's step raised or returned something that is not an
    iterate; the same on every rank (what went wrong is the first failing node's)."""
    bad = torch.nonzero(codes != _OK).reshape(-1).tolist()
    first, detail = int(codes[bad[0]]), errors[bad[0]]
    at = f"at iteration {k}{_ranks(bad, len(codes))}"
    if first == _RAISED:
        return Verdict(False, exercise, f"your step raised {at}: {detail or 'an exception'}")
    if first == _NOT_TENSOR:
        return Verdict(False, exercise, f"your step returned {detail} {at}; return the new "
                                        "node-local torch tensor(s).")
    if first == _BAD_SHAPE:
        return Verdict(False, exercise, f"your step returned shape {detail} {at}; the new "
                                        f"iterate keeps the node-local shape {shape}.")
    return Verdict(False, exercise, f"your iterate has NaN or inf {at}.")


def _ranks(bad: list, n: int) -> str:
    if len(bad) == n:
        return ""
    return f" on node{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}"


def _order(rel: float) -> str:
    if not math.isfinite(rel):
        return "inf"
    return f"1e{math.floor(math.log10(rel)):+03d}" if rel > 0 else "0"
