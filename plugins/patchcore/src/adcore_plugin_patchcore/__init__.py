"""PatchCore for adcore: memory bank of locally aware patch features with greedy coreset."""

__version__ = "0.1.0"
