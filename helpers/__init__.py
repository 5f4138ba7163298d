"""Helpers for the LeNet-5 hyperparameter-tuning portfolio: a small core and wings beside it.

The core modules (``helpers.data``, ``helpers.training``, ``helpers.stats``, ...) are what every
notebook uses; the wings are subpackages, one per line of work: ``helpers.tuning``,
``helpers.xray``, ``helpers.webcam`` and ``helpers.reporting``. The core imports no wing
(``helpers/README.md`` maps both). Every module imports without a GPU, a camera or a display.
"""

__version__ = "0.1.0"
