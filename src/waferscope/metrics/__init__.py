"""Classification and detection metrics."""
