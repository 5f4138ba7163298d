"""A whole tuning study on one data set: baseline, three searches, retrained winner, test once.

1. Textbook LeNet-5 is trained once per seed: the baseline and its noise level.
2. Grid, random search and TPE run at the same number of trials (optionally on a stratified
   slice of the training data, to afford the budget), scored on validation accuracy.
3. The best configuration over all searches is retrained on the full training split for longer,
   once per seed; each run is evaluated once on the test split. The run with the best
   validation accuracy is saved as a checkpoint, its settings beside it as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from helpers import paths
from helpers.data import DataSplits
from helpers.runs import RunResult, seed_summary, train_over_seeds
from helpers.training import TrainConfig
from helpers.tuning import RunConfig, SearchOutcome, best_overall, compare_algorithms, comparison_table, to_run_config

TEXTBOOK = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)


@dataclass
class TuningStudy:
    """Everything :func:`run_study` produced."""

    name: str
    data: DataSplits
    search_data: DataSplits
    baseline: list[RunResult]
    outcomes: dict[str, SearchOutcome]
    comparison: pd.DataFrame
    best_algo: str
    best_row: pd.Series
    final_config: RunConfig
    tuned: list[RunResult]
    checkpoint: Path | None

    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """Per algorithm, one row per trial (see :func:`helpers.tuning.trials_frame`)."""
        return {a: o.frame for a, o in self.outcomes.items()}

    def all_trials(self) -> pd.DataFrame:
        """Every trial of every algorithm in one table."""
        return pd.concat(self.frames.values(), ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Baseline vs tuned: seeds, validation and test accuracy mean ± std (%)."""
        return pd.DataFrame({"baseline (textbook LeNet-5)": seed_summary(self.baseline),
                             "tuned LeNet-5": seed_summary(self.tuned)}).T.round(2)

    def best_tuned(self) -> RunResult:
        """The retrained run with the best validation accuracy (the saved one)."""
        return max(self.tuned, key=lambda r: r.val.accuracy)


def run_study(
    name: str, data: DataSplits, *, grid: Mapping[str, Sequence[Any]], grid_fixed: Mapping[str, Any],
    search_train: Mapping[str, Any], final_epochs: int, baseline_epochs: int, seeds: Sequence[int] = (0, 1, 2),
    search_slice: Mapping[str, int] | None = None, space_options: Mapping[str, Any] | None = None,
    n_startup_jobs: int = 8, budget: str = "full", device: str | torch.device = "auto",
    checkpoint_name: str | None = None,
) -> TuningStudy:
    """Run the three steps above; TensorBoard runs go to ``runs/<name>`` and ``runs/<name>-final``."""
    search_data = data.subset(**search_slice) if search_slice else data
    baseline = train_over_seeds(data, TrainConfig(**TEXTBOOK, epochs=baseline_epochs), seeds, name="baseline",
                                experiment=f"{name}-final", budget=budget, device=device)
    outcomes = compare_algorithms(search_data, search_train, grid, grid_fixed, name=name, n_startup_jobs=n_startup_jobs,
                                  budget=budget, device=device, space_options=space_options)
    best_algo, best_row = best_overall(outcomes)
    final = to_run_config(best_row["point"], data, {**search_train, "epochs": final_epochs})
    checkpoint = paths.models_dir(budget) / f"{checkpoint_name}.pt" if checkpoint_name else None
    tuned = train_over_seeds(data, final.train, seeds, name="tuned", experiment=f"{name}-final",
                             model_config=final.model, budget=budget, device=device, checkpoint=checkpoint)
    if checkpoint is not None:
        checkpoint.with_suffix(".json").write_text(json.dumps(
            {"algo": best_algo, "trial": int(best_row["trial"]), "search_val_acc": float(best_row["val_acc"]),
             "model": final.model, "train": asdict(final.train)}, indent=2))
    return TuningStudy(name, data, search_data, baseline, outcomes, comparison_table(outcomes), best_algo, best_row,
                       final, tuned, checkpoint)


def conclusions(study: TuningStudy, target: float | None = None) -> str:
    """Markdown bullet points computed from the study's numbers."""
    base, tuned = seed_summary(study.baseline), seed_summary(study.tuned)
    gain = tuned["test mean %"] - base["test mean %"]
    noise = max(base["test std %"], tuned["test std %"])
    n = len(study.frames["grid"])
    reach_col = study.comparison.columns[3]
    lines = [
        f"- Tuning moved LeNet-5 from {base['test mean %']:.1f} ± {base['test std %']:.1f} % to "
        f"{tuned['test mean %']:.1f} ± {tuned['test std %']:.1f} % test accuracy ({gain:+.1f} points) "
        f"over {tuned['seeds']} seed(s)"
        + (f"; the seed-to-seed spread is {noise:.1f} points." if tuned["seeds"] > 1 else " (one seed: no error bar)."),
        f"- At {n} trials each, best validation accuracy: "
        + ", ".join(f"{a} {100 * f['val_acc'].max():.1f} %" for a, f in study.frames.items())
        + f". Trials needed to match the grid's best ({reach_col.split('(')[-1].rstrip(')')}): "
        + ", ".join(f"{a} {v}" for a, v in study.comparison[reach_col].items()) + ".",
        f"- The winning configuration came from **{study.best_algo}** (trial {int(study.best_row['trial'])}).",
    ]
    val_gain = tuned["val mean %"] - base["val mean %"]
    if val_gain > 0 and gain < val_gain / 2:
        lines.append(
            f"- The tuned model gained {val_gain:+.1f} points on validation but {gain:+.1f} on test: with "
            f"{len(study.data.val)} validation images the search partly fitted the validation split itself "
            f"(selection bias), which is why the test split is kept for the final report.")
    if target is not None:
        hit = tuned["test mean %"] >= target
        lines.append(f"- Target for the full budget: {target:g} % test accuracy: **{'reached' if hit else 'not reached'}** "
                     f"({tuned['test mean %']:.1f} %).")
    return "\n".join(lines)
