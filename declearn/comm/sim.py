"""(to be written)"""

__all__ = ["SimComm"]


class SimComm:  # placeholder until comm.sim lands
    pass
