"""Anomaly detectors, one folder each (torch_model.py, anomaly_map.py, loss.py, detector.py); importing registers them."""
