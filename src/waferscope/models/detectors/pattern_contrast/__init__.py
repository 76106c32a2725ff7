"""``pattern_contrast``: trees that tell the user's normal maps from simulated defects (see detector.py)."""
