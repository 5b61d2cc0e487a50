"""Interactive widgets built on declearn's public API (declearn never imports this package).

The explorers (topology, spectral gap, consensus player, algorithm race) arrive with issue 4.
"""

__all__: list[str] = []

from widgets.picker import TopologyPicker
from widgets.spectral_gap import SpectralGapExplorer
from widgets.topology_explorer import TopologyExplorer

__all__ += ["SpectralGapExplorer", "TopologyExplorer", "TopologyPicker"]

from widgets.consensus_player import ConsensusPlayer
from widgets.race import AlgorithmRace

__all__ += ["AlgorithmRace", "ConsensusPlayer"]
