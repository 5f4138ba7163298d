"""One tracked training run, start to finish: build, fit, evaluate, log, checkpoint.

Used by the baseline notebook and for retraining tuned configurations. The test split is
evaluated once, after training, and only reported (model selection uses validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

from helpers.checkpoints import save_checkpoint
from helpers.data import DataSplits
from helpers.models import build_model, count_parameters
from helpers.plots import plot_confusion
from helpers.tracking import RunTracker
from helpers.training import Evaluation, History, TrainConfig, evaluate, fit


ARCH_LABELS = {"lenet5": "LeNet-5", "reference_cnn": "Reference CNN"}


@dataclass
class RunResult:
    """The outcome of :func:`train_and_evaluate`."""

    name: str
    dataset: str
    arch: str
    model: nn.Module
    history: History
    val: Evaluation
    test: Evaluation | None
    n_params: int
    checkpoint: Path | None
    train_config: TrainConfig
    model_config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """A table row: data set, model, size, epochs, validation and test accuracy (%), time."""
        return {
            "data set": self.dataset, "model": ARCH_LABELS.get(self.arch, self.arch), "run": self.name,
            "parameters": self.n_params,
            "epochs run": len(self.history.epochs), "best epoch": self.history.best_epoch,
            "val acc %": round(100 * self.val.accuracy, 2),
            "val bal acc %": round(100 * self.val.balanced_accuracy, 2),
            "test acc %": round(100 * self.test.accuracy, 2) if self.test else None,
            "test bal acc %": round(100 * self.test.balanced_accuracy, 2) if self.test else None,
            "train time s": round(self.history.seconds, 1),
        }


def train_and_evaluate(
    data: DataSplits, train: TrainConfig, *, name: str, experiment: str, arch: str = "lenet5",
    model_config: dict[str, Any] | None = None, budget: str = "full", device: str | torch.device = "auto",
    checkpoint: Path | None = None, evaluate_test: bool = True, runs_root: Path | None = None,
) -> RunResult:
    """Train ``arch`` on ``data`` with ``train``; log to ``runs/<experiment>/<name>``; evaluate.

    ``model_config`` holds architecture options; input channels, size and classes come from
    ``data``. The checkpoint (if a path is given) carries classes, normalisation and metrics.
    """
    config = {"in_channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes,
              **(model_config or {})}
    model = build_model(arch, seed=train.seed, **config)
    with RunTracker(experiment, name, budget, runs_root) as tracker:
        result = fit(model, data, train, device=device, tracker=tracker)
        val = evaluate(result.model, data, "val", device=device)
        test = evaluate(result.model, data, "test", device=device) if evaluate_test else None
        for split, ev in (("val", val), ("test", test)):
            if ev is not None:
                fig = plot_confusion(ev, split)
                tracker.log_figure(f"confusion_matrix/{split}", fig)
                plt.close(fig)
        metrics = {"val_acc": val.accuracy, "val_loss": val.loss}
        if test is not None:
            metrics["test_acc"] = test.accuracy
        tracker.log_hparams({"arch": arch, "dataset": data.name, **config, **asdict(train)}, metrics)
    if checkpoint is not None:
        save_checkpoint(checkpoint, result.model, data.classes, data.mean, data.std, train_config=asdict(train),
                        metrics={**metrics, "best_epoch": result.history.best_epoch},
                        extra={"dataset": data.name, "note": data.note})
    return RunResult(name, data.name, arch, result.model, result.history, val, test,
                     count_parameters(result.model), checkpoint, train, config)


def results_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run (see :meth:`RunResult.summary`)."""
    return pd.DataFrame([r.summary() for r in results])


def recall_table(results: Sequence[RunResult], split: str = "test") -> pd.DataFrame:
    """Per run: accuracy, balanced accuracy and the recall of every class on ``split``, in %.

    Balanced accuracy (the mean of the per-class recalls) is the fair summary when a split's classes
    are unbalanced, as the chest X-rays' test split is.
    """
    rows = {}
    for r in results:
        ev = r.val if split == "val" else r.test
        if ev is None:
            raise ValueError(f"run {r.name!r} was not evaluated on {split}")
        rows[r.name] = {"images": int(ev.confusion.sum()), "accuracy %": 100 * ev.accuracy,
                        "balanced acc %": 100 * ev.balanced_accuracy,
                        **{f"recall {c} %": 100 * v for c, v in ev.per_class.items()}}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("run").round(2)


def seed_summary(results: Sequence[RunResult]) -> dict[str, float]:
    """Mean and standard deviation (over seeds) of validation and test accuracy, in %."""
    val = pd.Series([100 * r.val.accuracy for r in results])
    test = pd.Series([100 * r.test.accuracy for r in results if r.test is not None])
    return {"seeds": len(results), "val mean %": val.mean(), "val std %": val.std(ddof=1) if len(val) > 1 else 0.0,
            "test mean %": test.mean(), "test std %": test.std(ddof=1) if len(test) > 1 else 0.0}


def train_over_seeds(
    data: DataSplits, train: TrainConfig, seeds: Sequence[int], *, name: str, experiment: str,
    model_config: dict[str, Any] | None = None, budget: str = "full", device: str | torch.device = "auto",
    checkpoint: Path | None = None,
) -> list[RunResult]:
    """:func:`train_and_evaluate` once per seed (weights and batch order both seeded).

    If ``checkpoint`` is given, the run with the best *validation* accuracy is saved there.
    """
    results = [
        train_and_evaluate(data, replace(train, seed=s), name=f"{name}-seed{s}", experiment=experiment,
                           model_config=model_config, budget=budget, device=device)
        for s in seeds
    ]
    if checkpoint is not None:
        best = max(results, key=lambda r: r.val.accuracy)
        save_checkpoint(checkpoint, best.model, data.classes, data.mean, data.std,
                        train_config=asdict(best.train_config),
                        metrics={"val_acc": best.val.accuracy, "test_acc": best.test.accuracy if best.test else None,
                                 "seed": best.train_config.seed, **{f"seeds_{k}": v for k, v in seed_summary(results).items()}},
                        extra={"dataset": data.name, "note": data.note})
        for r in results:
            r.checkpoint = checkpoint if r is best else None
    return results
