"""The one-process simulator: :class:`SimComm` (every node in one tensor, the node dim first),
its mixing kernels, and its partial collectives and pairwise gossip on a simulated clock."""

from declearn.comm.sim.comm import SimComm

__all__ = ["SimComm"]
