"""Backbones written here with torchvision state-dict key names (torchvision does not import beside the CPU torch wheel)."""
