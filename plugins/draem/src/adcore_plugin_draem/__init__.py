"""DRAEM for adcore: reconstruct simulated anomalies away, then segment what changed."""

__version__ = "0.1.0"
