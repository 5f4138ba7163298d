"""Budgets and the 'how this notebook was run' stamp every notebook ends with."""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from typing import TypeVar

import torch

from helpers.devices import describe
from helpers.paths import BUDGETS

T = TypeVar("T")


def choose(budget: str, quick: T, full: T) -> T:
    """The settings for ``budget`` (``"quick"`` for tests, ``"full"`` for the report)."""
    if budget not in BUDGETS:
        raise ValueError(f"BUDGET must be one of {BUDGETS}, got {budget!r}")
    return quick if budget == "quick" else full


class RunStamp:
    """Started at the top of a notebook; :meth:`summary` says budget, device and wall time."""

    def __init__(self, budget: str, device: torch.device) -> None:
        choose(budget, None, None)  # validates the budget name
        self.budget = budget
        self.device = device
        self.started = time.perf_counter()
        self.started_at = datetime.now(timezone.utc)

    def elapsed(self) -> float:
        """Seconds since the stamp was made."""
        return time.perf_counter() - self.started

    def summary(self) -> str:
        """One paragraph: budget, device, software versions, start time and wall time."""
        minutes, seconds = divmod(round(self.elapsed()), 60)
        return (
            f"Run with BUDGET={self.budget!r} on {describe(self.device)}, {platform.processor() or platform.machine()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}. "
            f"Started {self.started_at:%Y-%m-%d %H:%M} UTC; wall time {minutes} min {seconds:02d} s."
        )
