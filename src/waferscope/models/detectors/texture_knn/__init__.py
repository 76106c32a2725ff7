"""Texture kNN: PatchCore-style nearest-neighbour scoring of fixed filter-bank features (no weights)."""
