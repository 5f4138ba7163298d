"""Helpers for the LeNet-5 hyperparameter-tuning portfolio.

Each module has one concern (data, models, training, tracking, tuning, ...). Every module
imports without a GPU, a camera or a display.
"""

__version__ = "0.1.0"
