"""Splitting a labelled data set over n nodes: i.i.d., Dirichlet label skew, or sorted by label.

Every function here is a pure function of its arguments and ``seed`` (numpy
``default_rng(seed)``), so every MPI rank computes the same split without communicating.
"""

from __future__ import annotations

import numpy as np

from declearn.problems.base import check_choice, check_count, check_real

__all__ = ["partition", "label_histogram", "PARTITION_METHODS"]

PARTITION_METHODS = ("iid", "dirichlet", "sorted")


def partition(labels, n: int, *, method: str = "iid", alpha: float = 1.0, seed: int = 0,
              balanced: bool = True, min_size: int | None = None,
              max_tries: int = 100) -> list[np.ndarray]:
    """Split the indices ``0..N-1`` of ``labels`` (length N) into n index arrays.

    Every index appears in exactly one array. Methods:

    * ``"iid"``: a random permutation cut into n blocks whose sizes differ by at most one.
    * ``"sorted"``: indices sorted by label (ties in random order) and cut into n contiguous
      blocks of near-equal size: the most skewed split, each node sees one or two labels.
    * ``"dirichlet"``: label skew of strength ``1 / alpha``. Classes are dealt in random
      order; class c's shuffled samples go to the nodes in proportions ``p ~ Dirichlet(alpha
      * 1_n)``, except that nodes already holding their fair share ``N / n`` get none of it
      (so no node swallows several classes). Small ``alpha`` (0.01) gives nodes one class
      each; large ``alpha`` (100) approaches the i.i.d. split. The draw is repeated (at most
      ``max_tries`` times) until every node holds at least ``min_size`` samples (default:
      1 if ``balanced`` is False, else 0). With ``balanced=True`` the per-node lists are then
      concatenated in node order and cut into n near-equal blocks: equal sizes, skewed labels.

    ``balanced`` only matters for ``"dirichlet"``; the other two are always balanced.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    n = check_count(n, "n (number of nodes)")
    method = check_choice(method, "method", PARTITION_METHODS)
    if labels.size < n:
        raise ValueError(f"Cannot give each of n={n} nodes a sample: only {labels.size} "
                         "samples. Use fewer nodes.")
    rng = np.random.default_rng(check_count(seed, "seed", 0))
    if method == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(labels.size), n)]
    if method == "sorted":
        shuffled = rng.permutation(labels.size)
        order = shuffled[np.argsort(labels[shuffled], kind="stable")]
        return list(np.array_split(order, n))
    alpha = check_real(alpha, "alpha (Dirichlet concentration)", strict=True)
    min_size = (0 if balanced else 1) if min_size is None else check_count(
        min_size, "min_size", 0)
    max_tries = check_count(max_tries, "max_tries")
    for _ in range(max_tries):
        order, sizes = _dirichlet_draw(labels, n, alpha, rng)
        if sizes.min() >= min_size:
            break
    else:
        raise ValueError(
            f"No Dirichlet(alpha={alpha:g}) split in {max_tries} draws gave every one of the "
            f"{n} nodes at least {min_size} samples (the last gave one node {sizes.min()}); "
            "use balanced=True, a larger alpha, a smaller min_size, or fewer nodes."
        )
    if balanced:
        return list(np.array_split(order, n))
    return list(np.split(order, np.cumsum(sizes)[:-1]))


def _dirichlet_draw(labels: np.ndarray, n: int, alpha: float, rng) -> tuple:
    """One capped Dirichlet assignment: (indices grouped by node, then class; node sizes)."""
    classes, codes = np.unique(labels, return_inverse=True)
    fair = labels.size / n
    counts = np.zeros(n, dtype=np.int64)
    chunks, owners = [], []
    for c in rng.permutation(len(classes)):
        idx = rng.permutation(np.flatnonzero(codes == c))
        p = rng.dirichlet(np.full(n, alpha))
        if not np.isfinite(p).all() or p.sum() <= 0:  # alpha so small that sampling underflows
            p = np.eye(n)[rng.integers(n)]
        p = np.where(counts >= fair, 0.0, p)
        if p.sum() <= 0:  # every open node drew ~0: spread over the open ones
            p = (counts < fair).astype(float)
        if p.sum() <= 0:
            p = np.ones(n)
        cuts = np.rint(np.cumsum(p / p.sum())[:-1] * idx.size).astype(np.int64)
        owner = np.searchsorted(cuts, np.arange(idx.size), side="right")
        counts += np.bincount(owner, minlength=n)
        chunks.append(idx)
        owners.append(owner)
    seq, owner = np.concatenate(chunks), np.concatenate(owners)
    return seq[np.argsort(owner, kind="stable")], counts


def label_histogram(labels, parts) -> np.ndarray:
    """Counts of each label on each node: an ``(n, C)`` int array whose column c counts the
    label ``np.unique(labels)[c]`` (for a stacked bar plot of a split)."""
    labels = np.asarray(labels)
    classes, codes = np.unique(labels, return_inverse=True)
    sizes = [len(p) for p in parts]
    index = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]) if parts else []
    node = np.repeat(np.arange(len(parts)), sizes)
    flat = np.bincount(node * len(classes) + codes[index], minlength=len(parts) * len(classes))
    return flat.reshape(len(parts), len(classes))
