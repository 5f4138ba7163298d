"""Is TPE better than random search? Repeated searches at equal total epochs, and a stated rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers.lanes import side_by_side
from helpers.plumbing import pick_device
from helpers.stats import RankTest, finding, mann_whitney
from helpers.tuning.search import TrialSetup
from helpers.tuning.study import SearchPlan, search
from helpers.tuning.tables import best_at_budget, spend


@dataclass
class AlgorithmComparison:
    """Every search of the comparison and the verdict."""

    epoch_budget: int
    frames: dict[tuple[str, int], pd.DataFrame]  #: (algo, search seed) -> trials frame
    test: RankTest
    chosen: str  #: the algorithm the full study uses

    def finals(self) -> pd.DataFrame:
        """One row per search: best validation accuracy within the epoch budget and what it spent."""
        rows = []
        for (algo, seed), frame in self.frames.items():
            rows.append({"algorithm": algo, "search seed": seed,
                         "best val acc %": round(100 * best_at_budget(frame, self.epoch_budget), 2),
                         **spend(frame[frame["epochs_spent"] <= self.epoch_budget])})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Per algorithm: searches, mean ± sd of the final best validation accuracy, epochs and trials."""
        f = self.finals()
        out = f.groupby("algorithm", sort=False).agg(
            searches=("search seed", "size"), **{"best val acc mean %": ("best val acc %", "mean"),
                                                 "best val acc sd %": ("best val acc %", "std"),
                                                 "trials mean": ("trials", "mean"), "epochs mean": ("epochs", "mean")},
        ).round(2)
        # the sd of one search (the deterministic grid) is undefined: shown as a dash, not NaN
        out["best val acc sd %"] = out["best val acc sd %"].astype(object).where(out["searches"] > 1, "–")
        return out

    def curves(self) -> pd.DataFrame:
        """Best-so-far validation accuracy (%) after every epoch spent, one column per search."""
        grid = np.arange(1, self.epoch_budget + 1)
        return pd.DataFrame({f"{algo} #{seed}": [100 * best_at_budget(frame, e) for e in grid]
                             for (algo, seed), frame in self.frames.items()}, index=pd.Index(grid, name="epochs spent"))

    def verdict(self) -> str:
        """One sentence: the rule, its numbers and what follows."""
        t = self.test
        s = self.summary()
        means = ", ".join(f"{a} {r['best val acc mean %']:.2f} ± {r['best val acc sd %']:.2f} %" if r["searches"] > 1
                          else f"{a} {r['best val acc mean %']:.2f} % (one search)" for a, r in s.iterrows())
        outcome = "inconclusive" if t.verdict == "inconclusive" else f"{t.verdict} is better"
        return (f"Rule: {t.rule}. Final best validation accuracy at {self.epoch_budget} epochs: {means}; "
                f"U = {t.u:g}, p = {t.p:.3f}: **{outcome}**, so the full search uses **{self.chosen}**.")

    def as_finding(self, section: str) -> dict[str, str]:
        """The comparison's line on the report's findings page."""
        s = self.summary()
        n = int(s["searches"].max())
        means = ", ".join(f"{a} {r['best val acc mean %']:.2f} %" for a, r in s.iterrows() if a != "grid")
        outcome = "inconclusive" if self.test.verdict == "inconclusive" else f"{self.test.verdict} better"
        return finding(f"TPE vs random search, {n} searches each at {self.epoch_budget} epochs (best validation "
                       f"accuracy)", means, section, interval=f"Mann-Whitney U = {self.test.u:g}, p = {self.test.p:.2f}",
                       outcome=outcome)


def _search_frame(setup: TrialSetup, plan: SearchPlan) -> tuple[pd.DataFrame, bool]:
    """One search of a comparison (in a lane): its trials table, and whether it was loaded finished."""
    outcome = search(setup, plan, progress=False, quiet_loaded=True)
    return outcome.frame, bool(getattr(outcome.trials, "loaded_complete", False))


def compare_at_equal_epochs(setup: TrialSetup, plan: SearchPlan, search_seeds: Sequence[int],
                            algos: tuple[str, str] = ("tpe", "random"), progress: bool = True) -> AlgorithmComparison:
    """Run each of ``algos`` once per search seed (and ``plan``'s grid once, if any), ``plan.epoch_budget`` each.

    The searches run side by side without progress bars; ``progress`` says how many were loaded from earlier runs.
    """
    if setup.rungs is not None and plan.epoch_budget < setup.rungs.max_epochs:
        raise ValueError(f"epoch_budget {plan.epoch_budget} is below one full trial ({setup.rungs.max_epochs} epochs)")
    runs = [(algo, seed) for seed in search_seeds for algo in algos] + ([("grid", 0)] if plan.grid else [])
    device = setup.device if isinstance(setup.device, torch.device) else pick_device(setup.device)
    # each search its own trials file (<experiment>-s<seed>-<algo>.json), side by side on a CPU
    done = side_by_side(_search_frame, [(replace(setup, experiment=f"{setup.experiment}-s{seed}", algo=algo),
                                         replace(plan, seed=seed)) for algo, seed in runs], device)
    frames = {run: frame for run, (frame, _) in zip(runs, done, strict=True)}
    loaded = sum(was_loaded for _, was_loaded in done)
    if progress and loaded:
        print(f"{loaded} of {len(runs)} searches loaded from {setup.outputs.results.name}/{setup.experiment}-s*.json "
              f"(finished earlier, not re-run)")
    epoch_budget = plan.epoch_budget
    finals = {a: [best_at_budget(f, epoch_budget) for (algo, _), f in frames.items() if algo == a] for a in algos}
    test = mann_whitney(finals[algos[0]], finals[algos[1]], names=algos)
    chosen = test.verdict if test.verdict != "inconclusive" else "tpe"
    return AlgorithmComparison(epoch_budget, frames, test, chosen)


#: What the grid of notebook 03's comparison holds fixed while it crosses its axes.
GRID_FIXED: dict[str, Any] = {"optimizer": "adam", "weight_decay": 1e-4, "batch_size": 64, "dropout": 0.2, "augment": "flip"}
