"""The one tracked-training path: every caller goes through it, the hook can stop a run, test stays untouched."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hyperopt import STATUS_OK
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import runs, training
from helpers.data import load_fashion_mnist
from helpers.paths import Outputs
from helpers.splits import DataSplits
from helpers.training import TrainConfig, fit
from helpers.tuning import reflections, search
from helpers.tuning.search import Objective, TrialSetup


@pytest.fixture(scope="module")
def tiny() -> DataSplits:
    return load_fashion_mnist().subset(n_train=600, n_val=200, n_test=200)


def test_the_epoch_hook_sees_every_epoch_and_can_stop_the_run(tiny: DataSplits, tmp_path: Path) -> None:
    seen = []

    def hook(record: dict) -> bool:
        seen.append(record["epoch"])
        return record["epoch"] == 2  # e.g. a search's rung decides this trial is not promising

    run = runs.Run("r", "e", TrainConfig(optimizer="adam", lr=2e-3, epochs=5), test=False)
    result = runs.train_tracked(tiny, run, Outputs(tmp_path), "cpu", on_epoch=hook)
    assert seen == [1, 2] and len(result.history.epochs) == 2 and result.history.stopped_early
    assert result.val is not None and result.test is None


def test_the_test_split_is_evaluated_only_when_asked(tiny: DataSplits, tmp_path: Path, monkeypatch) -> None:
    splits = []
    real = training.evaluate

    def spy(model, data, split="test", device="auto"):
        splits.append(split)
        return real(model, data, split, device)

    monkeypatch.setattr(runs, "evaluate", spy)
    cfg = TrainConfig(optimizer="adam", lr=2e-3, epochs=1)
    runs.train_tracked(tiny, runs.Run("a", "e", cfg, test=False), Outputs(tmp_path), "cpu")
    assert splits == ["val"]
    runs.train_tracked(tiny, runs.Run("b", "e", cfg), Outputs(tmp_path), "cpu")
    assert splits == ["val", "val", "test"]


def test_trials_and_reflections_train_through_the_one_path(tiny: DataSplits, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = runs.train_tracked

    def counting(data, run, *args, **kwargs):
        calls.append(run.name)
        return real(data, run, *args, **kwargs)

    for module in (runs, search, reflections):  # each binds the one path at import
        monkeypatch.setattr(module, "train_tracked", counting)
    objective = Objective(TrialSetup(tiny, TrainConfig(epochs=1, seed=0), "search", "random", Outputs(tmp_path),
                                     device="cpu"))
    point = {"optimizer": {"name": "adam", "lr": 1e-3}, "batch_size": 64, "conv1": 6, "conv2": 16, "dense1": 64,
             "dense2": 32, "dropout": 0.1, "batchnorm": False, "augment": "none", "weight_decay": 0.0}
    assert objective(point)["status"] == STATUS_OK
    config = reflections.Config("a", {}, {}, {"optimizer": "adam", "lr": 1e-3, "epochs": 1})
    reflections.run_one(config, 0, tiny, "study", Outputs(tmp_path), device="cpu", cache_dir=tmp_path / "cache")
    assert calls == ["random-trial-000", "a-seed0"]


def test_a_run_that_diverges_later_keeps_its_best_epoch_and_logs_no_score(tiny: DataSplits, tmp_path: Path,
                                                                          monkeypatch) -> None:
    def diverging_fit(model, data, config, **kw):
        result = fit(model, data, config, **kw)
        result.history.diverged = "training loss nan in epoch 2 (not finite)"  # as fit records it
        return result

    monkeypatch.setattr(runs, "fit", diverging_fit)
    result = runs.train_tracked(tiny, runs.Run("d", "e", TrainConfig(optimizer="adam", lr=2e-3, epochs=2)),
                                Outputs(tmp_path), "cpu")
    assert result.val is not None and 0 <= result.val.accuracy <= 1  # the table row can still be shown
    acc = EventAccumulator(str(tmp_path / "runs" / "e" / "d"), size_guidance={"scalars": 0})
    acc.Reload()
    assert math.isnan(acc.Scalars("hparam/val_acc")[0].value)


def test_a_run_trained_before_exactly_so_is_taken_from_the_run_store(tiny: DataSplits, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Notebook 02's Simpsons-MNIST textbook run is notebook 03's seed-0 baseline: trained once, reused after."""
    calls = []
    real = runs.fit

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "fit", counting)
    config = TrainConfig(optimizer="adam", lr=2e-3, epochs=2, seed=3)
    first = runs.train_and_evaluate(tiny, runs.Run("02-name", "02", config), Outputs(tmp_path), "cpu")
    again = runs.train_and_evaluate(tiny, runs.Run("03-name", "03", config), Outputs(tmp_path), "cpu")
    assert len(calls) == 1 and again.name == "03-name" and again.history.epochs == first.history.epochs
    assert (again.val.accuracy, again.test.accuracy) == (first.val.accuracy, first.test.accuracy)
    assert (tmp_path / "runs" / "03" / "03-name").is_dir()  # its curves under its own name too
    runs.train_and_evaluate(tiny, runs.Run("other", "03", replace(config, seed=4)), Outputs(tmp_path), "cpu")
    runs.train_and_evaluate(tiny.subset(n_train=100), runs.Run("x", "03", config), Outputs(tmp_path), "cpu")
    assert len(calls) == 3  # another seed, other data: trained
    # the same images with other stored views (or other outliers) are other data for a run that swaps them in
    views = torch.zeros((1, *tiny.train.x.shape), dtype=torch.uint8)
    with_views = replace(tiny, train=replace(tiny.train, views=views))
    other_views = replace(tiny, train=replace(tiny.train, views=views + 1))
    key = runs.run_key(with_views, runs.Run("v", "03", config))
    assert key != runs.run_key(other_views, runs.Run("v", "03", config)) != runs.run_key(tiny, runs.Run("v", "03", config))
    assert key != runs.run_key(replace(with_views, outliers=views[0][:3]), runs.Run("v", "03", config))
    assert key == runs.run_key(replace(tiny, train=replace(tiny.train, views=views.clone())), runs.Run("v", "03", config))
