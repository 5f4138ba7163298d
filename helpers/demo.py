"""The live webcam demo: ``python -m helpers.demo`` (the code is :mod:`helpers.webcam.live`)."""

import sys

from helpers.plumbing import run
from helpers.webcam.live import main

if __name__ == "__main__":
    sys.exit(run(main))
