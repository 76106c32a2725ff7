"""Defect-pattern classifiers; importing this package registers them."""
