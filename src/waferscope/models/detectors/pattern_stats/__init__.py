"""Gaussian model of wafer pattern statistics (a fast, normal-only detector for die-state maps)."""
