"""Reverse Distillation for adcore: a student decoder reconstructs frozen teacher features from a one-class embedding."""

__version__ = "0.1.0"
