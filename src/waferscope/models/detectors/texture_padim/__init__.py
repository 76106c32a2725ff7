"""Texture PaDiM: a Gaussian per relative image position over fixed filter-bank features (no weights)."""
