"""Interactive widgets built on declearn's public API (declearn never imports this package).

The explorers (topology, spectral gap, consensus player, algorithm race) arrive with issue 4.
"""

__all__: list[str] = []
