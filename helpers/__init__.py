"""Helpers for the LeNet-5 hyperparameter-tuning portfolio: a small core and wings beside it."""

__version__ = "0.1.0"
