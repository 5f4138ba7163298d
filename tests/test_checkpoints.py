"""Checkpoints (weights and metadata, checked when loaded) and the TensorBoard runs that every training logs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from helpers.data import load_simpsons_mnist
from helpers.models import build_model
from helpers.plots import plot_confusion
from helpers.plumbing import write_checked
from helpers.runs import RunTracker, scalar_hparams
from helpers.training import TrainConfig, evaluate, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = load_simpsons_mnist("rgb").subset(n_train=600, n_val=200, n_test=300)
    root = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(optimizer="adam", lr=2e-3, epochs=2)
    with RunTracker("unit-test", "lenet a", root) as tracker:
        result = fit(build_model(in_channels=3, dropout=0.1), data, cfg, device="cpu", tracker=tracker)
        ev = evaluate(result.model, data, "val", device="cpu")
        tracker.log_figure("confusion_matrix", plot_confusion(ev, "val"))
        tracker.log_hparams({**cfg.__dict__, "dense_units": (120, 84)}, {"val_acc": ev.accuracy, "val_loss": ev.loss})
    return data, result, root


def test_event_files_hold_the_expected_tags(trained) -> None:
    _, result, root = trained
    run_dirs = [p for p in (root / "unit-test").iterdir() if p.is_dir()]
    assert [p.name for p in run_dirs] == ["lenet_a"]  # hparams did not create a sub-run
    acc = EventAccumulator(str(run_dirs[0]), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "hparam/val_acc"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("loss/val")] == [1, 2]
    assert acc.Scalars("loss/val")[-1].value == pytest.approx(result.history.epochs[-1]["val_loss"], rel=1e-5)
    assert "confusion_matrix" in tags["images"]
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    start = HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optimizer"].string_value == "adam"
    assert start.hparams["lr"].number_value == pytest.approx(2e-3)
    assert start.hparams["dense_units"].string_value == "(120, 84)"


def test_hparams_are_made_scalar() -> None:
    clean = scalar_hparams({"lr": 0.1, "units": (120, 84), "patience": None, "bn": True, "n": torch.tensor(3)})
    assert clean == {"lr": 0.1, "units": "(120, 84)", "patience": "None", "bn": True, "n": 3}


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path: Path) -> None:
    data, result, _ = trained
    path = save_checkpoint(tmp_path / "m.pt", result.model, data.classes, data.mean, data.std,
                           train_config=result.config.__dict__, metrics={"val_acc": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.sha256"]  # no temporary file left behind
    ckpt = load_checkpoint(path)
    assert ckpt.classes == data.classes and ckpt.mean == data.mean and ckpt.metrics["val_acc"] == 0.5
    assert ckpt.train_config["optimizer"] == "adam"
    before = evaluate(result.model, data, "test", device="cpu")
    after = evaluate(ckpt.model, data, "test", device="cpu")
    assert (before.predictions == after.predictions).all()
    assert before.probabilities == pytest.approx(after.probabilities, abs=1e-6)


def test_wrong_model_files_give_clear_errors(tmp_path: Path, trained) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save(build_model().state_dict(), foreign)  # a file this project did not write
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint of this project.*foreign.pt.sha256"):
        load_checkpoint(foreign)
    junk = write_checked(tmp_path / "junk.pt", b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(junk)
    buffer = io.BytesIO()
    torch.save(build_model().state_dict(), buffer)  # a bare state_dict, no metadata
    plain = write_checked(tmp_path / "plain.pt", buffer.getvalue())
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(plain)
    data, result, _ = trained
    path = save_checkpoint(tmp_path / "m.pt", result.model, data.classes, data.mean, data.std)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["dense_units"] = (64, 32)  # weights no longer fit the config
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_checked(path, buffer.getvalue())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_a_checkpoint_with_one_flipped_byte_is_refused(trained, tmp_path: Path) -> None:
    data, result, _ = trained
    path = save_checkpoint(tmp_path / "m.pt", result.model, data.classes, data.mean, data.std)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # inside the weights: torch.load alone would not notice
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="m.pt does not match its checksum.*not loaded.*re-running"):
        load_checkpoint(path)


def test_numpy_metadata_is_stored_as_plain_values(trained, tmp_path: Path) -> None:
    import numpy as np

    data, result, _ = trained
    path = save_checkpoint(tmp_path / "m.pt", result.model, data.classes, data.mean, data.std,
                           train_config={"dropout": np.float64(0.25), "units": (np.int64(64), 32)},
                           metrics={"val_acc": np.float32(0.5), "seeds": np.int64(3)})
    payload = torch.load(path, weights_only=True)  # no allow-listing needed: everything is plain
    assert type(payload["metrics"]["val_acc"]) is float and payload["train_config"]["units"] == (64, 32)
    assert load_checkpoint(path).metrics["seeds"] == 3


def test_a_tuning_run_logs_every_trial_with_its_hparams_and_metrics(tmp_path: Path) -> None:
    """The HParams dashboard of a search: one run per trial, each with the sampled settings and its score."""
    from helpers.paths import Outputs
    from helpers.training import TrainConfig
    from helpers.tuning import study
    from helpers.tuning.search import Rungs, TrialSetup

    data = load_simpsons_mnist("rgb").subset(n_train=300, n_val=100, n_test=100)
    base = TrainConfig(schedule="onecycle", monitor="val_acc", seed=0, epochs=2)
    setup = TrialSetup(data, base, "tb-search", "random", Outputs(tmp_path), Rungs(1, 3, 2), device="cpu")
    outcome = study.search(setup, study.SearchPlan(5, n_startup_jobs=2), progress=False)
    frame = outcome.frame
    run_dirs = sorted(p for p in (tmp_path / "runs" / "tb-search").iterdir() if p.is_dir())
    # the table counts trials from 1, the run folders from 0
    assert [p.name for p in run_dirs] == [f"random-trial-{int(t) - 1:03d}" for t in frame["trial"]]
    assert len(run_dirs) >= 2
    for run_dir, (_, row) in zip(run_dirs, frame.iterrows()):
        acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        content = acc.PluginTagToContent("hparams")
        assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(content)
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["algo"].string_value == "random"
        assert start.hparams["optimizer"].string_value == row["optimizer"]
        assert start.hparams["lr"].number_value == pytest.approx(float(row["lr"]), rel=1e-6)
        assert start.hparams["batch_size"].number_value == int(row["batch_size"])
        assert acc.Scalars("hparam/val_acc")[-1].value == pytest.approx(float(row["val_acc"]), abs=1e-6)
        assert len(acc.Scalars("accuracy/val")) == int(row["epochs"])  # a stopped trial has only its epochs
