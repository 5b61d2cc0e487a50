"""declearn.exercises.ch04: the right answers pass, plausible wrong ones are refused with a hint
that does not give the answer away, an unanswered exercise (None) says "not yet" and bad input
gets a clear verdict. The checks' oracle (exact first and second moments of DSGD and parallel
SGD on the chapter's quadratics, dense numpy W built from the graphs' definitions) is
independent of declearn's algorithms; here it is also compared with declearn's simulated
error curves and transient lengths (declearn.algorithms.speedup), so a bug on either side
shows, and with a deliberately wrong oracle (AWC instead of ATC), which the comparison must
reject."""

import math

import numpy as np
import pytest

from declearn.algorithms.speedup import error_curve, parallel_sgd_curves, transient_length
from declearn.exercises import Verdict, ch04
from declearn.problems import TwoTypeQuadratics
from declearn.topology import exponential, one_peer_exponential, ring


def _not_yet(v):
    assert isinstance(v, Verdict) and not v
    assert "answer" in v.message


def test_ch04_public_names():
    assert set(ch04.__all__) == {"check_factor_ratio", "check_shorter_transient",
                                 "check_speedup_error"}


# ------------------------------------------------------------------ the oracle's graphs
@pytest.mark.parametrize("n", [6, 8, 12, 16])
def test_the_oracles_graphs_are_the_chapters(n):
    assert np.allclose(ch04.ring_matrix(n), ring(n).W, atol=1e-15)
    assert np.allclose(ch04.exponential_matrix(n), exponential(n).W, atol=1e-15)
    seq = one_peer_exponential(n)
    mats = ch04.one_peer_exponential_matrices(n)
    for k in range(2 * len(mats) + 1):  # period tau, the same phase
        assert np.allclose(mats[k % len(mats)], seq.at(k).W, atol=1e-15), k


def test_first_within_is_the_chapters_definition():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0.5, 2.0, 60)
        d = p * np.exp(rng.normal(0, 0.6, 60) * np.linspace(1, 0, 60))
        d[0] = p[0] = 0.0  # both start at x*
        for f in (1.25, 2.0):
            assert ch04.first_within(d, p, f) == transient_length(d, p, factor=f)


# ------------------------------------------------------------------ the oracle vs declearn
def _simulated(topology_of_n, n, seeds, steps, replicas):
    """declearn's DSGD and parallel SGD curves, averaged over seeds: (mean, sem) each."""
    dsgd, par = [], []
    for s in seeds:
        problem = TwoTypeQuadratics(n, seed=s)
        dsgd.append(error_curve(problem, topology_of_n(n), steps=steps, replicas=replicas))
        par.append(error_curve(problem, None, steps=steps, replicas=replicas))
    pool = lambda cs: (np.mean([c.mean for c in cs], 0),
                       np.sqrt(np.sum([c.sem ** 2 for c in cs], 0)) / len(cs))
    return pool(dsgd), pool(par)


def _awc_errors(W, n, steps, seeds):
    """The wrong oracle: x <- W x - lr (grad + noise), gradient and noise not mixed."""
    s = ch04._node_types(n, seeds)
    a = 1 + ch04.KAPPA * s
    m, S = np.zeros_like(s), np.zeros((len(s), n, n))
    out = np.zeros(steps + 1)
    for k in range(steps):
        lr = ch04.THETA / (k + ch04.THETA * (1 + ch04.KAPPA))
        m = m @ W.T - lr * a * m - lr * ch04.ZETA * s
        M = W[None] - lr * a[:, :, None] * np.eye(n)[None]
        S = M @ S @ M.transpose(0, 2, 1) + lr * lr * ch04.SIGMA ** 2 / ch04.DIM * np.eye(n)
        out[k + 1] = np.mean(m.mean(1) ** 2 + ch04.DIM * S.sum((1, 2)) / n ** 2)
    return out


@pytest.mark.parametrize("family", ["ring", "one_peer_exponential"])
def test_the_oracle_is_the_mean_of_declearns_simulated_errors(family):
    """At 5 checkpoints, declearn's DSGD (200 replicas x 2 node placements) is within 4.5
    standard errors of the exact expectation, and so is parallel SGD; the AWC oracle is not."""
    n, steps, seeds, R = 8, 300, (0, 3), 200
    build = {"ring": ring, "one_peer_exponential": one_peer_exponential}[family]
    mixing = [ch04.ring_matrix(n)] if family == "ring" else \
        ch04.one_peer_exponential_matrices(n)
    (d_mean, d_sem), (p_mean, p_sem) = _simulated(build, n, seeds, steps, R)
    e_dsgd, e_par = ch04.expected_errors(mixing, n, steps, seeds=seeds)
    ks = [3, 10, 30, 100, 300]
    assert np.all(np.abs(d_mean[ks] - e_dsgd[ks]) < 4.5 * d_sem[ks]), \
        (d_mean[ks], e_dsgd[ks], d_sem[ks])
    assert np.all(np.abs(p_mean[ks] - e_par[ks]) < 4.5 * p_sem[ks])
    if family == "ring":
        wrong = _awc_errors(mixing[0], n, steps, seeds)
        assert np.max(np.abs(d_mean[ks] - wrong[ks]) / d_sem[ks]) > 10  # the test has power


def test_the_oracles_transient_matches_declearns_measurement():
    """One-peer exponential graph, n = 8, node placements 0..7: the exact T (88) against
    declearn's transient_table with 24 replicas per placement; the Monte Carlo T is read at
    the same factor on noisy curves, so it is allowed 25 %."""
    from declearn.algorithms.speedup import transient_table

    n, seeds = 8, range(8)
    e_dsgd, e_par = ch04.expected_errors(ch04.one_peer_exponential_matrices(n), n, 1000,
                                         seeds=seeds)
    exact = ch04.first_within(e_dsgd, e_par, 2.0)
    assert exact == 88
    rows = transient_table(lambda n, seed: TwoTypeQuadratics(n, seed=seed),
                           {"one_peer_exponential": one_peer_exponential}, [n], steps=500,
                           max_steps=500, replicas=24, seeds=seeds)
    assert rows[0]["T"] == pytest.approx(exact, rel=0.25), rows[0]


def test_parallel_error_is_declearns_parallel_sgd_and_tends_to_the_constant():
    """The recursion against declearn's parallel SGD (theta = 3, 400 replicas, n = 32), and
    n k v_k -> theta^2 / (2 theta - 1) sigma^2 = 9/5."""
    n, k, theta = 32, 300, 3.0
    curve = parallel_sgd_curves(lambda n: TwoTypeQuadratics(n), [n], steps=k, replicas=400,
                                theta=theta)[n]
    for j in (10, 100, 300):
        exact = ch04.parallel_error(n, j, theta=theta)
        assert abs(curve.mean[j] - exact) < 4.5 * curve.sem[j], (j, curve.mean[j], exact)
    assert n * 200000 * ch04.parallel_error(n, 200000, theta=theta) == pytest.approx(1.8,
                                                                                  rel=2e-3)


def test_odd_n_is_refused_by_the_oracle():
    with pytest.raises(ValueError, match="even"):
        ch04.expected_errors([ch04.ring_matrix(7)], 7, 10)


# ------------------------------------------------------------------ 04.1
def test_ch04_speedup_error_right_and_wrong():
    n, k, theta = 32, 5000, 3.0
    exact = ch04.parallel_error(n, k, theta=theta)
    assert ch04.check_speedup_error(exact)
    assert ch04.check_speedup_error(1.8 / (n * k))  # the asymptotic formula is within 3 %
    assert ch04.check_speedup_error(np.float64(1.8 / (n * k)))
    assert ch04.check_speedup_error(1.8 / (n * (k + 4.5)))
    wrong = {
        "theta = 2's constant": 4 / 3 / (n * k),
        "no constant": 1 / (n * k),
        "theta^2": 9 / (n * k),
        "theta": 3 / (n * k),
        "theta^2 / 2 theta": 1.5 / (n * k),
        "theta^2 / (2 theta + 1)": 9 / 7 / (n * k),
        "no speedup": 1.8 / k,
        "n squared": 1.8 / (n * n * k),
        "the step size times sigma^2 / n": theta / k / n,
        "plateau": 1.0 / n,
    }
    for label, value in wrong.items():
        v = ch04.check_speedup_error(value)
        assert not v, label
        assert f"{exact:.3g}" not in v.message and "1.8" not in v.message, label
    assert "theta = 2" in ch04.check_speedup_error(4 / 3 / (n * k)).message
    assert "n" in ch04.check_speedup_error(1.8 / k).message
    assert ch04.check_speedup_error(1.8 / (16 * 2000), n=16, k=2000)
    assert not ch04.check_speedup_error(1.8 / (16 * 2000), n=16, k=2000, theta=2.0)


def test_ch04_speedup_error_bad_input():
    _not_yet(ch04.check_speedup_error(None))
    assert "number" in ch04.check_speedup_error("1.8/(n k)").message
    assert "number" in ch04.check_speedup_error([1e-5, 2e-5]).message
    assert "NaN" in ch04.check_speedup_error(float("nan")).message
    assert "positive" in ch04.check_speedup_error(-1e-5).message
    assert not ch04.check_speedup_error(0.0)
    assert "number" in ch04.check_speedup_error(True).message
    assert ch04.check_speedup_error(np.array(1.8 / (32 * 5000)))  # a 0-d array is one number


# ------------------------------------------------------------------ 04.2
def test_ch04_factor_ratio_right_and_wrong():
    measured = ch04._ring_transients()
    longer = ch04._ring_transients(steps=24000)
    assert measured == longer  # the short horizon sees the last crossing
    assert measured[2.0] == 1363 and measured[1.25] == 5676
    assert ch04.check_factor_ratio(4)  # (2 - 1) / (1.25 - 1)
    assert ch04.check_factor_ratio(measured[1.25] / measured[2.0])
    wrong = {"the factors' ratio": 1.6, "squared": 2.56, "log ratio": math.log(2) /
             math.log(1.25), "f/(f-1)": 2.5, "no change": 1.0, "squared gaps": 16.0,
             "earlier": 0.25, "5": 5.0, "3": 3.0}
    for label, value in wrong.items():
        v = ch04.check_factor_ratio(value)
        assert not v, label
        assert "4" not in v.message.replace("1e-01", ""), (label, v.message)
    assert "later" in ch04.check_factor_ratio(0.25).message
    assert "1 + C/k = factor" in ch04.check_factor_ratio(1.6).message


def test_ch04_factor_ratio_bad_input():
    _not_yet(ch04.check_factor_ratio(None))
    assert "number" in ch04.check_factor_ratio("four").message
    assert "NaN" in ch04.check_factor_ratio(float("inf")).message


# ------------------------------------------------------------------ 04.3
def test_ch04_shorter_transient():
    T = ch04._graph_transients()
    assert T == {"exponential": 28, "one_peer_exponential": 265}
    assert ch04.check_shorter_transient("exponential")
    assert ch04.check_shorter_transient(" Exponential ")
    v = ch04.check_shorter_transient("one_peer_exponential")
    assert not v and "265" not in v.message and "28" not in v.message
    for bad in ("ring", "static", 3, ["exponential"]):
        v = ch04.check_shorter_transient(bad)
        assert not v and "one of the names" in v.message, bad
    _not_yet(ch04.check_shorter_transient(None))
