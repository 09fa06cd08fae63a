"""Extended periodic systems and padded neighbour lists (O(N), built on vesin)."""

from .nlist import NeighborData, build_neighbor_data

__all__ = ["NeighborData", "build_neighbor_data"]
