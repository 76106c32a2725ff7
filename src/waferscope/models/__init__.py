"""Models: backbones, classifiers and anomaly detectors, each created by name via the registry."""
