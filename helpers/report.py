"""Run the notebooks and render the report: ``python -m helpers.report`` (the code is :mod:`helpers.reporting.report`)."""

import sys

from helpers.plumbing import run
from helpers.reporting.report import main

if __name__ == "__main__":
    sys.exit(run(main))
