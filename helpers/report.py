"""Run the notebooks and render the report: ``python -m helpers.report`` (the code is :mod:`helpers.reporting.runner`)."""

import sys

from helpers.plumbing import run
from helpers.reporting.runner import main

if __name__ == "__main__":
    sys.exit(run(main))
