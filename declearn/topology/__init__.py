"""Topologies: who talks to whom, with which weights (row i of W = receiver i).

Static families (``ring``, ``grid``, ``exponential``, ...) return a :class:`Topology`; dynamic
ones (``one_peer_exponential``, ``od_equidyn``, ...) return a :class:`DynamicTopology`. Both
answer ``.at(k)``. ``make(name, n, **params)`` builds any family by name.
"""

from declearn.topology.base import DynamicTopology, Topology  # noqa: F401 - re-exported
from declearn.topology.registry import families, family_info, make  # noqa: F401
from declearn.topology.weights import *  # noqa: F403
from declearn.topology.static import *  # noqa: F403
from declearn.topology.trees import *  # noqa: F403
from declearn.topology.equitopo import *  # noqa: F403
from declearn.topology.dynamic import *  # noqa: F403
from declearn.topology.ceca import *  # noqa: F403
from declearn.topology.analysis import *  # noqa: F403
from declearn.topology.closed_forms import *  # noqa: F403
from declearn.topology.convert import *  # noqa: F403
