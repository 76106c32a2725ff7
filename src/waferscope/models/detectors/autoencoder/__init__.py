"""Convolutional autoencoder anomaly detector (reconstruction error on normal maps)."""
