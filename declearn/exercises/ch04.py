r"""Checks for chapter 04, bias correction.

Each check recomputes the right value with declearn (a short simulator run, or the roots of a
recursion), compares it with the student's ``answer``, and hints without giving it away.
``answer = None`` (the notebook's starting value) gives a "not yet" verdict, never an error.

* :func:`check_messages`: messages per node per iteration of ATC gradient tracking and DIGing;
* :func:`check_ed_as_d2`: the matrix M for which D2 on M runs exactly like exact diffusion on W;
* :func:`check_d2_self_weight`: the smallest self weight ``s`` of a ring (even n, neighbours
  ``(1 - s)/2``) for which D2 converges.
"""

from __future__ import annotations

import numpy as np

from declearn.exercises.base import Verdict, check_close, check_equal

__all__ = ["check_messages", "check_ed_as_d2", "check_d2_self_weight", "d2_root_modulus",
           "d2_threshold"]

_MISSING = "write your answer in the cell (answer = ...), then run the check again."


def _not_answered(exercise: str, answer) -> Verdict | None:
    if answer is None or answer is Ellipsis:
        return Verdict(False, exercise, _MISSING)
    return None


def _test_problem(n: int, seed: int = 0):
    from declearn.problems import LeastSquares

    return LeastSquares(n, d=4, m=8, heterogeneity=1.0, seed=seed)


# ---------------------------------------------------------------------------- exercise 1
def messages_per_iteration(topology, variant: str, steps: int = 3) -> float:
    """Messages one node sends per iteration (mean over nodes) in gradient tracking
    ``variant``, read from the run's History."""
    from declearn.algorithms import GradientTracking
    from declearn.comm import SimComm

    problem = _test_problem(topology.n)
    alg = GradientTracking(SimComm(topology.n), problem, topology,
                           lr=0.1 / problem.smoothness, variant=variant)
    history = alg.run(steps, log_every=steps, progress=False)
    return float(history.last["messages"]) / steps


def check_messages(answer, topology) -> Verdict:
    """Exercise 04.1: ``answer = (atc, diging)``, the messages each node sends per iteration
    on ``topology`` with ATC gradient tracking and with DIGing."""
    ex = "04.1"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    try:
        pair = tuple(float(a) for a in answer)
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with a pair of numbers: (ATC-GT, DIGing).")
    if len(pair) != 2:
        return Verdict(False, ex, f"answer with a pair (ATC-GT, DIGing), got {len(pair)} numbers.")
    expected = (messages_per_iteration(topology, "atc"), messages_per_iteration(topology, "diging"))
    degree = float(np.mean(topology.out_degrees))
    hint = ("Count the neighbor_allreduce calls in one iteration of each variant (the "
            "GradientTracking docstring says what travels together), then multiply by the "
            "number of neighbours a node sends to.")
    if pair == expected[::-1]:
        hint = "Swapped: which of the two packs x and y into one message?"
    elif pair == (expected[0] / degree, expected[1] / degree):
        hint = ("Those are neighbor_allreduce calls per iteration; each call sends one message "
                "to every out-neighbour.")
    elif pair[0] == pair[1]:
        hint = ("The two variants do not cost the same: one of them must wait for the mixed y "
                "before it can send x.")
    return check_equal(ex, pair, expected, hint=hint)


# ---------------------------------------------------------------------------- exercise 2
def check_ed_as_d2(answer, topology, steps: int = 30) -> Verdict:
    """Exercise 04.2: the matrix M (n x n) such that ``D2`` on M produces the iterates of
    ``ExactDiffusion`` on ``topology`` (checked by running both for ``steps`` iterations)."""
    from declearn.algorithms import D2, ExactDiffusion
    from declearn.comm import SimComm
    from declearn.errors import TopologyError
    from declearn.topology import Topology

    ex = "04.2"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    n = topology.n
    try:
        M = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                       dtype=float)
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with an n x n matrix (a numpy array).")
    if M.shape != (n, n):
        return Verdict(False, ex, f"expected an n x n matrix with n = {n}, got shape {M.shape}.")
    hint = ("Write both methods as one second-order recursion in x^{k+1}, x^k, x^{k-1} and the "
            "gradients, and compare the matrix in front.")
    if np.allclose(M, topology.W):
        return Verdict(False, ex, "that is W itself, but exact diffusion does not combine with "
                       "W. " + hint)
    try:
        target = Topology.from_matrix(M, name="answer", weights="doubly")
        problem = _test_problem(n)
        lr = 0.3 / problem.smoothness
        d2 = D2(SimComm(n), problem, target, lr=lr)
    except TopologyError as exc:
        return Verdict(False, ex, f"declearn's D2 refuses this matrix ({str(exc).split('. ')[0]}). "
                       + hint)
    ed = ExactDiffusion(SimComm(n), problem, topology, lr=lr)
    for _ in range(steps):
        d2.step()
        ed.step()
    err = float((d2.x - ed.x).abs().max())
    if err <= 1e-10 * max(1.0, float(ed.x.abs().max())):
        return Verdict(True, ex, f"D2 on your matrix reproduces exact diffusion (max difference "
                       f"{err:.1e} after {steps} iterations).")
    return Verdict(False, ex, f"D2 on your matrix drifts away from exact diffusion (max "
                   f"difference {err:.2g} after {steps} iterations). {hint}")


# ---------------------------------------------------------------------------- exercise 3
def d2_root_modulus(lam) -> np.ndarray:
    """The largest modulus of the roots of ``z^2 = lam (2 z - 1)``, D2's recursion without
    gradients along an eigenvector of W with eigenvalue ``lam`` (vectorised over lam)."""
    lam = np.asarray(lam, dtype=complex)
    disc = np.sqrt(lam * lam - lam)
    return np.maximum(np.abs(lam + disc), np.abs(lam - disc))


def d2_threshold(tol: float = 1e-12) -> float:
    """The eigenvalue below which D2's recursion has a root of modulus >= 1, found by bisection
    on :func:`d2_root_modulus` over [-1, 0]."""
    lo, hi = -1.0, 0.0  # modulus >= 1 at lo, < 1 at hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if d2_root_modulus(mid) >= 1.0:
            lo = mid
        else:
            hi = mid
    return hi


def check_d2_self_weight(answer) -> Verdict:
    """Exercise 04.3: the ring over an even number of nodes with self weight s and neighbour
    weights (1 - s)/2; the smallest s for which D2 converges (rtol 1e-3)."""
    ex = "04.3"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with one number, the self weight s.")
    lam = d2_threshold()
    expected = (1.0 + lam) / 2.0  # lambda_min of the even ring is s - (1 - s) = 2 s - 1
    hint = ("The slowest alternating pattern (+1, -1, +1, ...) is an eigenvector of the ring: "
            "write its eigenvalue as a function of s, then ask when D2's two-term recursion "
            "z^2 = lambda (2 z - 1) keeps both roots inside the unit circle.")
    if np.isclose(value, lam, rtol=1e-3):
        hint = ("That is the eigenvalue threshold; the question asks for the self weight s "
                "that puts the ring's smallest eigenvalue there.")
    elif np.isclose(value, 0.5, rtol=1e-3):
        hint = "s = 1/2 makes W lazy (eigenvalues >= 0): safe, but not the smallest s that works."
    return check_close(ex, value, expected, rtol=1e-3, hint=hint)
