"""A whole tuning study on one data set: baseline, three searches compared, retrained winner, test once.

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
from hyperopt import STATUS_OK, Trials

from helpers.objective import Objective, RunConfig, to_run_config
from helpers.paths import Outputs
from helpers.runs import RunResult, seed_summary, train_over_seeds
from helpers.splits import DataSplits
from helpers.training import TrainConfig
from helpers.tuning import (
    SearchSpec,
    best_trial,
    grid_points,
    grid_space,
    lenet_space,
    run_search,
    trials_file,
    trials_frame,
    trials_to_reach,
)

TEXTBOOK = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)


@dataclass
class SearchOutcome:
    """One algorithm's finished search."""

    algo: str
    trials: Trials
    space: dict[str, Any]
    frame: pd.DataFrame


def compare_algorithms(
    data: DataSplits, base_train: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], grid_fixed: Mapping[str, Any],
    *, name: str, n_trials: int | None = None, algos: Sequence[str] = ("grid", "random", "tpe"), seed: int = 0,
    outputs: Outputs, n_startup_jobs: int = 8, device: str | torch.device = "auto", progress: bool = True,
    space_options: Mapping[str, Any] | None = None,
) -> dict[str, SearchOutcome]:
    """Run grid, random and TPE searches at the same budget (the grid's size unless given).

    TPE and random search use ``lenet_space(**space_options)``. Trials are saved to
    ``<outputs.results>/<name>-<algo>.json`` after every trial, so re-running resumes; TensorBoard
    runs go to ``runs/<name>/<algo>-trial-NNN``.
    """
    n_trials = n_trials or len(grid_points(grid))
    settings = {"base_train": dict(base_train), "data": data.sizes(), "space_options": {k: list(v) for k, v in (space_options or {}).items()}, "grid": {k: list(map(str, v)) for k, v in grid.items()},
                "grid_fixed": {k: str(v) for k, v in grid_fixed.items()}, "n_trials": n_trials}
    out = {}
    for algo in algos:
        algo_space = grid_space(grid, grid_fixed) if algo == "grid" else lenet_space(**(space_options or {}))
        objective = Objective(data, base_train, name, algo, outputs=outputs, device=device)
        spec = SearchSpec(name, algo, seed, n_trials, n_startup_jobs, extra=settings)
        path = trials_file(outputs.results, name, algo)
        if progress and not path.exists() and path.with_suffix(".pkl").exists():
            print(f"{path.with_suffix('.pkl').name}: trials pickled by an earlier version are not loaded (unpickling "
                  f"can run code); this search starts afresh into {path.name}. Delete the .pkl file when it is done.")
        trials = run_search(objective, algo_space, spec, path,
                            grid=grid if algo == "grid" else None, progress=progress)
        out[algo] = SearchOutcome(algo, trials, algo_space, trials_frame(trials, algo_space, algo))
    return out


def comparison_table(outcomes: Mapping[str, SearchOutcome], reference_algo: str = "grid") -> pd.DataFrame:
    """Per algorithm: trials, failures, best validation accuracy, and trials needed to reach the
    reference algorithm's best validation accuracy."""
    target = outcomes[reference_algo].frame["val_acc"].max()
    rows = []
    for algo, o in outcomes.items():
        f = o.frame
        reached = trials_to_reach(f, target)
        rows.append({
            "algorithm": algo, "trials": len(f), "failed": int((f["status"] != STATUS_OK).sum()),
            "best val acc %": round(100 * f["val_acc"].max(), 2),
            f"trials to reach {reference_algo} best ({100 * target:.2f} %)": reached if reached is not None else f"not in {len(f)}",
            "search time min": round(f["seconds"].sum() / 60, 1),
        })
    return pd.DataFrame(rows).set_index("algorithm")


def best_overall(outcomes: Mapping[str, SearchOutcome]) -> tuple[str, pd.Series]:
    """(algorithm, trial row) of the highest validation accuracy across all searches."""
    algo, row = max(((a, best_trial(o.frame)) for a, o in outcomes.items()), key=lambda ar: ar[1]["val_acc"])
    return algo, row


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
    checkpoint_name: str | None = None, outputs: Outputs | None = None,
) -> TuningStudy:
    """Run the three steps above; TensorBoard runs go to ``runs/<name>`` and ``runs/<name>-final``.

    ``budget`` picks the output folders (``outputs`` overrides them)."""
    outputs = outputs or Outputs.for_budget(budget)
    search_data = data.subset(**search_slice) if search_slice else data
    baseline = train_over_seeds(data, TrainConfig(**TEXTBOOK, epochs=baseline_epochs), seeds, name="baseline",
                                experiment=f"{name}-final", outputs=outputs, device=device)
    outcomes = compare_algorithms(search_data, search_train, grid, grid_fixed, name=name, n_startup_jobs=n_startup_jobs,
                                  outputs=outputs, device=device, space_options=space_options)
    best_algo, best_row = best_overall(outcomes)
    final = to_run_config(best_row["point"], data, {**search_train, "epochs": final_epochs})
    checkpoint = outputs.models / f"{checkpoint_name}.pt" if checkpoint_name else None
    tuned = train_over_seeds(data, final.train, seeds, name="tuned", experiment=f"{name}-final",
                             model_config=final.model, outputs=outputs, device=device, checkpoint=checkpoint)
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
