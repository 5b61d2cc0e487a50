"""Decentralized methods, each written once against a Communicator (both backends).

Every method is an :class:`Algorithm`: node-local state, ``step()``, ``run(steps)`` and a
``history`` that plots in one call.
"""

from declearn.algorithms.base import Algorithm, StepSize, check_step_size, diminishing
from declearn.algorithms.consensus import *  # noqa: F401,F403
from declearn.algorithms.history import History, plot_histories

__all__ = [
    "Algorithm", "StepSize", "check_step_size", "diminishing", "History", "plot_histories",
    "AverageConsensus",
]
