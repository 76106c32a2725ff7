"""Wafer-map features: the handcrafted ones (density, geometry, Radon) and their compiled kernels."""
