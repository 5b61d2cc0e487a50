"""(to be written)"""

__all__ = ["MPIComm"]


class MPIComm:  # placeholder until comm.mpi lands
    pass
