"""Classify image files or folders: ``python -m helpers.predict PATH...`` (the code is :mod:`helpers.webcam.live`)."""

import sys

from helpers.plumbing import run
from helpers.webcam.live import predict_main

if __name__ == "__main__":
    sys.exit(run(predict_main))
