"""Early stopping across the trials of a search: asynchronous successive halving (ASHA) rungs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rungs:
    """The stopping schedule: first rung after ``grace`` epochs, then every factor ``eta``, up to ``max_epochs``."""

    grace: int = 3
    eta: int = 3
    max_epochs: int = 27

    @classmethod
    def of(cls, value: Rungs | Mapping[str, int]) -> Rungs:
        """``value`` as Rungs: Rungs as they are, or the plain dict a budget table holds (grace, eta, max_epochs)."""
        return value if isinstance(value, cls) else cls(**value)

    def __post_init__(self) -> None:
        if self.grace < 1 or self.eta < 2 or self.max_epochs < self.grace:
            raise ValueError(f"need grace >= 1, eta >= 2 and max_epochs >= grace, got {self}")

    def milestones(self) -> list[int]:
        """The epochs at which a trial may be stopped (``max_epochs`` itself is the end, not a rung)."""
        out, m = [], self.grace
        while m < self.max_epochs:
            out.append(m)
            m *= self.eta
        return out

    def cutoff(self, recorded: Iterable[float]) -> float | None:
        """The accuracy a trial needs at a rung to go on, given earlier trials' values there (None: no bar yet)."""
        values = [v for v in recorded if not np.isnan(v)]
        if not values:
            return None
        return float(np.percentile(values, 100 * (1 - 1 / self.eta)))

    def stopper(self, recorded: Mapping[int, list[float]]) -> Callable[[dict[str, float]], bool]:
        """An ``on_epoch`` hook: True (stop) when an epoch is a rung and its accuracy is below the cutoff."""
        milestones = set(self.milestones())

        def should_stop(record: dict[str, float]) -> bool:
            epoch = int(record["epoch"])
            if epoch not in milestones:
                return False
            bar = self.cutoff(recorded.get(epoch, []))
            return bar is not None and record["val_acc"] < bar

        return should_stop

    def scores(self, history_epochs: list[dict[str, float]]) -> dict[int, float]:
        """A trial's validation accuracy at each rung it reached (what later trials are compared with)."""
        by_epoch = {int(e["epoch"]): float(e["val_acc"]) for e in history_epochs}
        return {m: by_epoch[m] for m in self.milestones() if m in by_epoch}


def recorded_from(results: Iterable[Mapping]) -> dict[int, list[float]]:
    """Per rung, the values of the given trial results (each with a ``rung_scores`` dict), in trial order."""
    recorded: dict[int, list[float]] = {}
    for result in results:
        for epoch, value in (result.get("rung_scores") or {}).items():
            recorded.setdefault(int(epoch), []).append(float(value))
    return recorded
