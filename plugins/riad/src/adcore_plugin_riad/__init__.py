"""RIAD for adcore: a U-Net inpaints masked grid cells; anomalies are what it cannot restore."""

__version__ = "0.1.0"
