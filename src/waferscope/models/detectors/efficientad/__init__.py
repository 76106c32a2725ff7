"""EfficientAD: accurate visual anomaly detection at millisecond-level latencies (Batzner, Heckler & König, WACV 2024)."""
