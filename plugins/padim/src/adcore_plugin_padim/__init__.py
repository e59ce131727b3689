"""PaDiM for adcore: one Gaussian per patch position, Mahalanobis distance as anomaly score."""

__version__ = "0.1.0"
