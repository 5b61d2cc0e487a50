"""Decentralized methods, each written once against a Communicator (both backends).

Every method is an :class:`Algorithm`: node-local state, ``step()``, ``run(steps)`` and a
``history`` that plots in one call.
"""

from declearn.algorithms.base import Algorithm, StepSize, check_step_size, diminishing
from declearn.algorithms.consensus import *  # noqa: F403
from declearn.algorithms.history import History, plot_histories
from declearn.algorithms.local_sgd import CoCoDSGD, EASGD, LocalSGD, OverlapLocalSGD
from declearn.algorithms.parallel import ParallelSGD
from declearn.algorithms.relay import (
    RelaySGD, RelaySGDGrad, RelaySum, RelaySumConsensus, lr_correction,
)
from declearn.algorithms.dgd import DGD
from declearn.algorithms.tracking import GradientTracking, PushDIGing
from declearn.algorithms.diffusion import D2, EXTRA, ExactDiffusion
from declearn.algorithms.eager import EagerSGD
from declearn.algorithms.gossip import AsyncGossip
from declearn.algorithms.gossip_pga import GossipPGA
from declearn.algorithms.choco import CHOCOGossip, CHOCOSGD, CompressedGossip, choco_gamma
from declearn.algorithms.transient import ExponentFit, fit_exponent, transient_length
from declearn.algorithms.race import RaceCurve, consensus_distance, race, relative_error
from declearn.algorithms.speedup import (
    ErrorCurve,
    InverseTimeSchedule,
    Replicas,
    SpeedupCurves,
    error_curve,
    parallel_sgd_curves,
    speedup_curves,
    transient_table,
)

__all__ = [
    "Algorithm", "StepSize", "check_step_size", "diminishing", "History", "plot_histories",
    "AverageConsensus",
    "RelaySum", "RelaySumConsensus", "RelaySGD", "RelaySGDGrad", "lr_correction",
    "ParallelSGD", "LocalSGD", "EASGD", "OverlapLocalSGD", "CoCoDSGD",
    "PushSumConsensus", "CECA", "DGD", "GradientTracking", "PushDIGing", "ExactDiffusion",
    "D2", "EXTRA",
    "EagerSGD", "AsyncGossip",
    "GossipPGA", "CHOCOGossip", "CHOCOSGD", "CompressedGossip", "choco_gamma",
    "transient_length", "fit_exponent", "ExponentFit", "Replicas", "InverseTimeSchedule",
    "ErrorCurve", "SpeedupCurves", "error_curve", "speedup_curves", "parallel_sgd_curves",
    "transient_table", "race", "RaceCurve", "consensus_distance", "relative_error",
]
