"""A whole tuning study on one data set: baseline, a budget-aware search, retrained winner, test once.

1. Textbook LeNet-5 is trained once per seed: the baseline and its noise level.
2. One algorithm (TPE unless notebook 03's comparison, :mod:`helpers.comparison`, says otherwise)
   searches with ASHA early stopping (:mod:`helpers.rungs`) under an epoch budget, optionally on a
   stratified slice of the training data, scored on validation accuracy.
3. The best finished configuration is retrained on the full training split for the search's
   maximum epochs, once per seed (the baseline's seeds); each run is evaluated once on the test
   split. The run with the best validation accuracy is saved as a checkpoint, its settings beside it.
4. Tuned vs baseline is a paired comparison over the same seeds (:func:`helpers.stats.paired_difference`);
   every test accuracy comes with its interval over seeds and its binomial interval for the test-set size.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hyperopt import Trials

from helpers.devices import describe, pick_device
from helpers.objective import Objective, RunConfig, to_run_config
from helpers.paths import Outputs
from helpers.rungs import Rungs
from helpers.runs import RunResult, seed_summary, train_over_seeds
from helpers.splits import DataSplits
from helpers.stats import (
    PairedDifference,
    binomial_interval,
    paired_difference,
    seed_interval,
)
from helpers.training import TrainConfig
from helpers.trial_tables import best_trial, spend, trials_frame
from helpers.tuning import (
    SearchSpec,
    grid_points,
    grid_space,
    lenet_space,
    run_search,
    trials_file,
)

TEXTBOOK = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)


@dataclass
class SearchOutcome:
    """One algorithm's finished search."""

    algo: str
    trials: Trials
    space: dict[str, Any]
    frame: pd.DataFrame
    epoch_budget: int


def search(
    data: DataSplits, base_train: Mapping[str, Any], *, name: str, algo: str, rungs: Rungs, epoch_budget: int,
    outputs: Outputs, seed: int = 0, n_startup_jobs: int = 8, space_options: Mapping[str, Any] | None = None,
    sized: Callable[[int], DataSplits] | None = None, device: str | torch.device = "auto", progress: bool = True,
    grid: Mapping[str, Sequence[Any]] | None = None, grid_fixed: Mapping[str, Any] | None = None,
) -> SearchOutcome:
    """One budget-aware search over ``lenet_space(**space_options)`` (or, for ``algo='grid'``, over
    ``grid`` with ``grid_fixed``); resumes from ``<outputs.results>/<name>-<algo>.json``; TensorBoard
    runs under ``runs/<name>/``."""
    space = grid_space(grid or {}, grid_fixed or {}) if algo == "grid" else lenet_space(**(space_options or {}))
    settings = {"base_train": dict(base_train), "data": data.sizes(),
                "space_options": {k: list(v) for k, v in (space_options or {}).items()}}
    objective = Objective(data, base_train, name, algo, outputs=outputs, device=device, rungs=rungs, sized=sized)
    max_evals = len(grid_points(grid or {})) if algo == "grid" else 10_000  # else the epoch budget ends it
    spec = SearchSpec(name, algo, seed, max_evals, n_startup_jobs, extra=settings, rungs=rungs,
                      epoch_budget=epoch_budget)
    trials = run_search(objective, space, spec, trials_file(outputs.results, name, algo),
                        grid=grid if algo == "grid" else None, progress=progress)
    return SearchOutcome(algo, trials, space, trials_frame(trials, space, algo), epoch_budget)


@dataclass
class TuningStudy:
    """Everything :func:`run_study` produced."""

    name: str
    data: DataSplits
    search_data: DataSplits
    baseline: list[RunResult]
    outcome: SearchOutcome
    best_row: pd.Series
    final_config: RunConfig
    tuned: list[RunResult]
    checkpoint: Path | None
    device: str

    @property
    def frame(self) -> pd.DataFrame:
        """One row per trial of the search (see :func:`helpers.trial_tables.trials_frame`)."""
        return self.outcome.frame

    def spent(self) -> pd.DataFrame:
        """What the search and the retraining spent, beside what the search found."""
        s = spend(self.frame)
        retrain_epochs = sum(len(r.history.epochs) for r in self.tuned + self.baseline)
        retrain_min = sum(r.history.seconds for r in self.tuned + self.baseline) / 60
        return pd.DataFrame([
            {"step": f"search ({self.outcome.algo}, ASHA)", **s,
             "best val acc %": round(100 * self.best_row["val_acc"], 2), "device": self.device},
            {"step": "baseline + tuned retraining", "trials": len(self.tuned) + len(self.baseline), "stopped early": 0,
             "finished": len(self.tuned) + len(self.baseline), "failed": 0, "epochs": retrain_epochs,
             "train min": round(retrain_min, 1), "best val acc %": None, "device": self.device},
        ]).set_index("step")

    def summary(self) -> pd.DataFrame:
        """Baseline vs tuned: validation and test accuracy mean ± sd (%) over seeds, with intervals."""
        rows = {}
        for label, runs in (("baseline (textbook LeNet-5)", self.baseline), ("tuned LeNet-5", self.tuned)):
            s = seed_summary(runs)
            n_test = len(self.data.test)
            blo, bhi = binomial_interval(round(s["test mean %"] / 100 * n_test), n_test)
            rows[label] = {**{k: round(v, 2) for k, v in s.items()}, "test 95 % CI over seeds": _ci_text([100 * r.test.accuracy for r in runs]),
                           f"test 95 % binomial CI ({n_test} images)": f"{100 * blo:.1f}–{100 * bhi:.1f}",
                           "test bal acc mean %": round(100 * sum(r.test.balanced_accuracy for r in runs) / len(runs), 2),
                           "test bal acc 95 % CI over seeds": _ci_text([100 * r.test.balanced_accuracy for r in runs])}
        return pd.DataFrame(rows).T

    def paired(self) -> PairedDifference:
        """Tuned minus baseline test accuracy (points), paired by seed."""
        return paired_difference([100 * r.test.accuracy for r in self.baseline], [100 * r.test.accuracy for r in self.tuned])

    def paired_table(self) -> pd.DataFrame:
        """Per seed: baseline and tuned test accuracy and balanced accuracy, and their differences (%)."""
        rows = []
        for b, t in zip(self.baseline, self.tuned):
            rows.append({"seed": t.train_config.seed, "baseline test %": 100 * b.test.accuracy,
                         "tuned test %": 100 * t.test.accuracy, "difference": 100 * (t.test.accuracy - b.test.accuracy),
                         "baseline bal acc %": 100 * b.test.balanced_accuracy,
                         "tuned bal acc %": 100 * t.test.balanced_accuracy})
        return pd.DataFrame(rows).set_index("seed").round(2)

    def best_tuned(self) -> RunResult:
        """The retrained run with the best validation accuracy (the saved one)."""
        return max(self.tuned, key=lambda r: r.val.accuracy)


def _ci_text(values: Sequence[float]) -> str:
    lo, hi = seed_interval(values)
    return f"{lo:.1f}–{hi:.1f}" if len(values) > 1 else "one seed"


def run_study(
    name: str, data: DataSplits, *, search_train: Mapping[str, Any], rungs: Rungs, epoch_budget: int,
    baseline_epochs: int, seeds: Sequence[int] = (0, 1, 2), algo: str = "tpe",
    search_slice: Mapping[str, int] | None = None, space_options: Mapping[str, Any] | None = None,
    sized: Callable[[int], DataSplits] | None = None, n_startup_jobs: int = 8, outputs: Outputs,
    device: str | torch.device = "auto", checkpoint_name: str | None = None,
) -> TuningStudy:
    """Run the steps above; TensorBoard runs go to ``runs/<name>`` and ``runs/<name>-final``.

    ``sized(image_size)`` returns the *full* data at another input size (for a space with an
    ``image_size`` axis); the search slices it like ``data``.
    """
    search_data = data.subset(**search_slice) if search_slice else data
    search_sized = None
    if sized is not None:
        search_sized = cache(lambda size: sized(size).subset(**search_slice) if search_slice else sized(size))
    baseline = train_over_seeds(data, TrainConfig(**TEXTBOOK, epochs=baseline_epochs), seeds, name="baseline",
                                experiment=f"{name}-final", outputs=outputs, device=device)
    outcome = search(search_data, search_train, name=name, algo=algo, rungs=rungs, epoch_budget=epoch_budget,
                     outputs=outputs, n_startup_jobs=n_startup_jobs, space_options=space_options, sized=search_sized,
                     device=device)
    best_row = best_trial(outcome.frame)
    size = best_row["point"].get("image_size")
    final_data = data if size is None or int(size) == data.image_size else sized(int(size))
    final = to_run_config(best_row["point"], final_data, {**search_train, "epochs": rungs.max_epochs})
    checkpoint = outputs.models / f"{checkpoint_name}.pt" if checkpoint_name else None
    tuned = train_over_seeds(final_data, final.train, seeds, name="tuned", experiment=f"{name}-final",
                             model_config=final.model, outputs=outputs, device=device, checkpoint=checkpoint)
    if checkpoint is not None:
        checkpoint.with_suffix(".json").write_text(json.dumps(
            {"algo": algo, "trial": int(best_row["trial"]), "search_val_acc": float(best_row["val_acc"]),
             "model": final.model, "train": asdict(final.train)}, indent=2))
    return TuningStudy(name, data, search_data, baseline, outcome, best_row, final, tuned, checkpoint,
                       describe(pick_device(device) if not isinstance(device, torch.device) else device))


def conclusions(study: TuningStudy, target: float | None = None) -> str:
    """Markdown bullet points computed from the study's numbers."""
    base, tuned = seed_summary(study.baseline), seed_summary(study.tuned)
    paired = study.paired()
    s = spend(study.frame)
    lines = [
        (f"- Tuning moved LeNet-5 from {base['test mean %']:.2f} ± {base['test std %']:.2f} % to "
        f"{tuned['test mean %']:.2f} ± {tuned['test std %']:.2f} % test accuracy (mean ± sd over {tuned['seeds']} "
        f"seed(s)). Paired by seed, the difference is {paired.mean:+.2f}" + (f" ± {paired.se:.2f} (s.e.) points: " if paired.n > 1 else " points; with one seed there is no error bar, so no claim")
        + ("" if paired.n == 1 else {"b better": "**the tuned model is better** (more than 2 s.e.)",
           "a better": "**the baseline is better** (more than 2 s.e.)",
           "no clear difference": "**no difference beyond 2 s.e.**"}[paired.verdict]) + "."),
        (f"- The search ({study.outcome.algo} with ASHA early stopping) started {s['trials']} trials: "
         f"{s['stopped early']} stopped early, {s['finished']} finished, {s['failed']} failed; {s['epochs']} epochs "
         f"in {s['train min']:.1f} min of training. Its best finished trial (trial {int(study.best_row['trial'])}) "
         f"reached {100 * study.best_row['val_acc']:.2f} % validation accuracy."),
    ]
    val_gain = tuned["val mean %"] - base["val mean %"]
    gain = tuned["test mean %"] - base["test mean %"]
    if val_gain > 0 and gain < val_gain / 2:
        lines.append(
            f"- The tuned model gained {val_gain:+.1f} points on validation but {gain:+.1f} on test: with "
            f"{len(study.search_data.val)} validation images the search partly fitted the validation split itself "
            f"(selection bias), which is why the test split is kept for the final report.")
    if target is not None:
        hit = tuned["test mean %"] >= target
        lines.append(f"- Target for the full budget: mean test accuracy ≥ {target:g} %: "
                     f"**{'reached' if hit else 'not reached'}** ({tuned['test mean %']:.2f} %).")
    return "\n".join(lines)
