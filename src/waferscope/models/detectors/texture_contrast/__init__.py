"""Texture contrast: trees on filter-bank features, normal image patches vs synthetic anomalies (DRAEM / CutPaste style)."""
