"""torch.optim optimizers for decentralized deep learning on MPI engines (or n stacked models
under SimComm, :class:`StackedModel`), all with the ``step()`` + ``average()`` pattern and every
parameter in one flat buffer, so a synchronisation is one collective:

* the Local SGD family (allreduce every ``tau`` steps): LocalSGD (and BMUF/SlowMo), EASGD,
  OverlapLocalSGD, CoCoDSGD;
* gossip: DecentralizedSGD (neighbor averaging over a topology) and RelaySGD (relays over a
  spanning tree).
"""

from declearn.optim.flat import FlatParameters
from declearn.optim.gossip import DecentralizedSGD, RelaySGD
from declearn.optim.local_sgd import CoCoDSGD, EASGD, LocalSGD, OverlapLocalSGD, PeriodicSyncSGD
from declearn.optim.stacked import StackedModel

__all__ = ["FlatParameters", "PeriodicSyncSGD", "LocalSGD", "EASGD", "OverlapLocalSGD",
           "CoCoDSGD", "DecentralizedSGD", "RelaySGD", "StackedModel"]
