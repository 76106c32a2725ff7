"""Readers of every supported wafer-map source (WM-811K, fab formats, folders, images)."""
