"""Problems ``f(x) = (1/n) sum_i f_i(x)`` whose node i sees only ``f_i``.

* :class:`LeastSquares`, :class:`LogisticRegression` (synthetic, or real data via
  :meth:`LogisticRegression.from_data`), :class:`RandomQuadratics` (the RelaySGD paper's),
  :class:`TwoTypeQuadratics` (stiff and soft nodes pulling apart: a transient that grows
  with n);
  each knows its optimum ``x_star``, ``f_star`` and heterogeneity ``b^2``;
* :func:`partition` (iid, Dirichlet(alpha), sorted) and :func:`label_histogram` for real data;
* :func:`load_digits` (a real small image dataset, shipped), :func:`load_mnist`,
  :func:`load_fashion_mnist` and :func:`load_cifar10` (the published files, from a local folder
  or downloaded with checksums), :class:`NodeBatches` (per-node minibatches), and the
  models :func:`small_cnn` and :func:`resnet20` (BatchNorm, GroupNorm or EvoNorm) for deep
  learning;
* :class:`Problem` / :class:`Oracle`, the contract (``problem.on(comm)`` gives the node-local
  gradient oracle), and :func:`as_problem` for a user's own ``grad(x)``.
"""

from declearn.problems.base import FunctionProblem, Oracle, Problem, as_problem
from declearn.problems.data import Dataset, NodeBatches, load_digits
from declearn.problems.images import (
    images_available,
    load_cifar10,
    load_fashion_mnist,
    load_images,
    load_mnist,
)
from declearn.problems.least_squares import LeastSquares
from declearn.problems.logistic import LogisticRegression
from declearn.problems.models import EvoNormS0, resnet20, small_cnn
from declearn.problems.partition import PARTITION_METHODS, label_histogram, partition
from declearn.problems.quadratics import RandomQuadratics
from declearn.problems.two_type import TwoTypeQuadratics

__all__ = [
    "Problem", "Oracle", "FunctionProblem", "as_problem",
    "LeastSquares", "LogisticRegression", "RandomQuadratics", "TwoTypeQuadratics",
    "partition", "label_histogram", "PARTITION_METHODS",
    "Dataset", "load_digits", "NodeBatches",
    "load_images", "load_mnist", "load_fashion_mnist", "load_cifar10", "images_available",
    "small_cnn", "resnet20", "EvoNormS0",
]
