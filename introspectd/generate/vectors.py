"""Small types shared by the engine's torch and torch-free halves."""

from __future__ import annotations

# (concept, layer) → (float32 little-endian bytes, dim, norm)
VectorTable = dict[tuple[str, int], tuple[bytes, int, float]]
