"""torch.optim optimizers for decentralized deep learning on MPI engines (or n stacked models
under SimComm, :class:`StackedModel`), all with the ``step()`` + ``average()`` pattern and every
parameter in one flat buffer, so a synchronisation is one collective:

* the Local SGD family (allreduce every ``tau`` steps): LocalSGD (and BMUF/SlowMo), EASGD,
  OverlapLocalSGD, CoCoDSGD;
* gossip: DecentralizedSGD (neighbor averaging over a topology) and RelaySGD (relays over a
  spanning tree).

:class:`Decentralized` wraps any ``torch.optim`` optimizer (Adam, AdamW, SGD with momentum,
parameter groups and schedulers as usual) and adds neighbor averaging (adapt-then-combine or
adapt-while-combining), the allreduce baseline, or any of the rules above, in ``step()``.

Every optimizer saves its whole state with ``state_dict()`` and restores it with
``load_state_dict()`` (:mod:`declearn.optim.optimizer_state`); :func:`save_checkpoint` and
:func:`load_checkpoint` write and read one file per rank, atomically
(:mod:`declearn.optim.checkpoint`).
"""

from declearn.optim.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from declearn.optim.flat import FlatParameters
from declearn.optim.gossip import DecentralizedSGD, RelaySGD
from declearn.optim.local_sgd import EASGD, CoCoDSGD, LocalSGD, OverlapLocalSGD, PeriodicSyncSGD
from declearn.optim.pga import GossipPGA
from declearn.optim.stacked import StackedModel
from declearn.optim.training import Record, TrainLog, node_loss, train
from declearn.optim.wrap import Decentralized

__all__ = [
    "EASGD",
    "CheckpointError",
    "CoCoDSGD",
    "Decentralized",
    "DecentralizedSGD",
    "FlatParameters",
    "GossipPGA",
    "LocalSGD",
    "OverlapLocalSGD",
    "PeriodicSyncSGD",
    "RelaySGD",
    "StackedModel",
    "Record",
    "TrainLog",
    "node_loss",
    "train",
    "checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
]
