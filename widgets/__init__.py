"""Interactive widgets built on declearn's public API (declearn never imports this package).

Each widget module holds a pure model (numbers from declearn, no ipywidgets), its figure (a
persistent matplotlib Figure rendered to a sharp PNG, see ``widgets._render``) and a thin
ipywidgets shell (``widgets._base.WidgetShell``: the redraw worker, errors, ``close()``).
"""

from widgets.consensus_player import ConsensusPlayer
from widgets.live_training import LiveTraining
from widgets.picker import TopologyPicker
from widgets.race import AlgorithmRace
from widgets.spectral_gap import SpectralGapExplorer
from widgets.topology_explorer import TopologyExplorer

__all__ = ["AlgorithmRace", "ConsensusPlayer", "LiveTraining", "SpectralGapExplorer",
           "TopologyExplorer", "TopologyPicker"]
