"""Reverse Distillation: anomaly detection via reverse distillation from one-class embedding (Deng & Li, CVPR 2022)."""
