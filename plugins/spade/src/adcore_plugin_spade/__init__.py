"""SPADE for adcore: kNN image scores and sub-image deep pyramid correspondences."""

__version__ = "0.1.0"
