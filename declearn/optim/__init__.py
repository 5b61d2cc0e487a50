"""torch.optim optimizers for decentralized deep learning on MPI engines (or stacked models
under SimComm): the Local SGD family with the ``step()`` + ``average()`` pattern, every
parameter in one flat buffer so a synchronisation is one collective."""

from declearn.optim.flat import FlatParameters
from declearn.optim.local_sgd import CoCoDSGD, EASGD, LocalSGD, OverlapLocalSGD, PeriodicSyncSGD

__all__ = ["FlatParameters", "PeriodicSyncSGD", "LocalSGD", "EASGD", "OverlapLocalSGD",
           "CoCoDSGD"]
