"""One Hyperopt trial: a sampled point turned into a LeNet-5 and its training, trained and scored.

:func:`to_run_config` maps a point of the search space onto model options and a
:class:`~helpers.training.TrainConfig`; :func:`validate_space` checks a space before any training;
:class:`Objective` trains one point through :func:`helpers.runs.train_tracked` and reports its
validation result to Hyperopt (the test split is never touched).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hyperopt import STATUS_FAIL, STATUS_OK
from hyperopt.pyll.stochastic import sample

from helpers.models import build_model
from helpers.paths import Outputs
from helpers.provenance import git_state
from helpers.rungs import Rungs
from helpers.splits import DataSplits
from helpers.training import TrainConfig, fit


@dataclass
class RunConfig:
    """A sampled point turned into what training needs: model kwargs and a TrainConfig."""

    model: dict[str, Any]
    train: TrainConfig

    def describe(self) -> dict[str, Any]:
        """Flat, readable dict of the settings (for tables)."""
        t = self.train
        return {
            "optimizer": t.optimizer, "lr": t.lr, "momentum": t.momentum if t.optimizer in ("sgd", "rmsprop") else None,
            "weight_decay": t.weight_decay, "batch_size": t.batch_size, "schedule": t.schedule,
            "label_smoothing": t.label_smoothing, "image_size": self.model["image_size"],
            "conv": "/".join(map(str, self.model["conv_channels"])), "dense": "/".join(map(str, self.model["dense_units"])),
            "dropout": self.model.get("dropout", 0.0), "batchnorm": self.model.get("batchnorm", False),
            "augment": augment_name(t.hflip, t.shift, t.rotate),
        }


AUGMENT_PARTS = ("flip", "shift", "rotate")
ROTATE_DEGREES = 10.0


def shift_pixels(image_size: int) -> int:
    """The largest random translation for ``image_size`` px inputs: 1/14 of the side (2 px at 28 px)."""
    return max(1, round(image_size / 14))


def augment_name(hflip: bool, shift: int, rotate: float) -> str:
    """``'flip+shift'``-style name of an augmentation setting (``'none'`` when off)."""
    parts = [name for name, on in zip(AUGMENT_PARTS, (hflip, shift, rotate)) if on]
    return "+".join(parts) or "none"


def parse_augment(name: str, image_size: int) -> dict[str, Any]:
    """TrainConfig fields for an augmentation name such as ``'flip+shift+rotate'``."""
    parts = [] if name == "none" else name.split("+")
    unknown = [p for p in parts if p not in AUGMENT_PARTS]
    if unknown or not parts and name != "none":
        raise ValueError(f"augment must be 'none' or a '+'-joined subset of {AUGMENT_PARTS}, got {name!r}")
    return {"hflip": "flip" in parts, "shift": shift_pixels(image_size) if "shift" in parts else 0,
            "rotate": ROTATE_DEGREES if "rotate" in parts else 0.0}


def to_run_config(params: Mapping[str, Any], data: DataSplits, base_train: Mapping[str, Any]) -> RunConfig:
    """Map a point of the space (after ``space_eval``) onto model kwargs and a TrainConfig.

    ``base_train`` holds the settings the search does not vary (epochs, patience, seed, ...).
    Raises ``ValueError`` for values the model or the optimizer cannot use.
    """
    opt = params.get("optimizer", {"name": "sgd"})
    if isinstance(opt, str):
        opt = {"name": opt}
    image_size = int(params.get("image_size", data.image_size))
    train_kwargs = dict(base_train)
    train_kwargs.update(
        optimizer=opt["name"], lr=float(opt.get("lr", params.get("lr", base_train.get("lr", 0.01)))),
        momentum=float(opt.get("momentum", base_train.get("momentum", 0.9))),
        weight_decay=float(params.get("weight_decay", base_train.get("weight_decay", 0.0))),
        batch_size=int(params.get("batch_size", base_train.get("batch_size", 64))),
        schedule=params.get("schedule", base_train.get("schedule", "none")),
        label_smoothing=float(params.get("label_smoothing", base_train.get("label_smoothing", 0.0))),
        **parse_augment(params.get("augment", "none"), image_size),
    )
    model = {
        "in_channels": data.channels, "image_size": image_size, "num_classes": data.num_classes,
        "conv_channels": tuple(int(c) for c in params.get("conv", (params.get("conv1", 6), params.get("conv2", 16)))),
        "dense_units": tuple(int(u) for u in params.get("dense", (params.get("dense1", 120), params.get("dense2", 84)))),
        "dropout": float(params.get("dropout", 0.0)), "batchnorm": bool(params.get("batchnorm", False)),
    }
    for key in ("activation", "pool"):
        if key in params:
            model[key] = params[key]
    if min(model["conv_channels"] + model["dense_units"]) < 1:
        raise ValueError(f"layer widths must be positive, got {model['conv_channels']} / {model['dense_units']}")
    build_model(seed=None, **model)  # validates the model config (raises ValueError)
    return RunConfig(model, TrainConfig(**train_kwargs))


def validate_space(space: Mapping[str, Any], data: DataSplits, base_train: Mapping[str, Any],
                   n_samples: int = 50, seed: int = 0) -> None:
    """Sample the space and check every sample maps to a valid config, before any training.

    Raises ``ValueError`` naming the offending sample.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_samples):
        point = sample(space, rng=rng)
        try:
            to_run_config(point, data, base_train)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"invalid search space: the point {point} is not usable: {exc}") from exc


def trial_weights(outputs: Outputs, experiment: str, algo: str, trial_index: int) -> Path:
    """The checkpoint of finished trial ``trial_index`` (0-based, as the TensorBoard run's name) of a search."""
    return outputs.models / "trials" / f"{experiment}-{algo}-trial-{trial_index:03d}.pt"


class Objective:
    """Trains one configuration (through :func:`helpers.runs.train_tracked`) and reports its
    validation result to Hyperopt.

    Each trial is logged to TensorBoard as ``runs/<experiment>/<algo>-trial-NNN`` with its
    hyperparameters (HParams dashboard). With ``rungs`` (:class:`helpers.rungs.Rungs`) a trial trains
    for up to ``rungs.max_epochs`` and is stopped at a rung where it falls behind the trials before it
    (``recorded``, set by the search before each trial); a stopped trial is ``STATUS_OK`` with
    ``loss = 1 − val_acc`` at that rung and ``outcome = 'stopped'``. A diverging trial returns
    ``STATUS_FAIL`` with the reason. ``sized(image_size)`` gives the data for a space with an
    ``image_size`` axis. With ``keep_weights`` a finished trial's best weights and history are saved
    (:func:`trial_weights`), so that the study can reuse it as its first seed's run. The result records what the model and optimizer actually received
    (parameter count, the optimizer's learning rate), so it can be shown that the search changes the
    trained model.
    """

    def __init__(self, data: DataSplits, base_train: Mapping[str, Any], experiment: str, algo: str,
                 outputs: Outputs, device: str | torch.device = "auto", train_fn: Callable = fit,
                 rungs: Rungs | None = None, sized: Callable[[int], DataSplits] | None = None,
                 keep_weights: bool = False) -> None:
        self.data, self.base_train, self.experiment, self.algo = data, dict(base_train), experiment, algo
        self.keep_weights = keep_weights
        self.outputs, self.device, self.train_fn, self.rungs, self.sized = outputs, device, train_fn, rungs, sized
        if rungs is not None:
            self.base_train["epochs"] = rungs.max_epochs
        self.trial_index = 0
        self.recorded: dict[int, list[float]] = {}

    def data_for(self, params: Mapping[str, Any]) -> DataSplits:
        """The data a point trains on (resized when the space has an ``image_size`` axis)."""
        size = params.get("image_size")
        if size is None or int(size) == self.data.image_size:
            return self.data
        if self.sized is None:
            raise ValueError(f"the space proposes image_size {size} but the objective has no `sized` data provider")
        return self.sized(int(size))

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        from helpers.runs import (
            train_tracked,  # runs imports plots: keep this module light to import
        )

        data = self.data_for(params)
        run = to_run_config(params, data, self.base_train)
        stopper = self.rungs.stopper(self.recorded) if self.rungs else None
        stopped_at: list[int] = []

        def on_epoch(record: dict[str, float]) -> bool:
            if stopper is not None and stopper(record):
                stopped_at.append(int(record["epoch"]))
                return True
            return False

        result = train_tracked(data, run.train, experiment=self.experiment,
                               name=f"{self.algo}-trial-{self.trial_index:03d}", outputs=self.outputs,
                               model_config=run.model, hparams={"algo": self.algo, **run.describe()},
                               device=self.device, figures=False, train_fn=self.train_fn, on_epoch=on_epoch)
        h = result.history
        applied = {"n_params": result.n_params, **h.optimizer}  # read off the objects trained
        common = {"config": run.describe(), "applied": applied, "seconds": h.seconds, "epochs": len(h.epochs),
                  "provenance": {**git_state(), "data": data.fingerprint()},
                  "attachments": {"history": json.dumps(h.to_dict())}}
        if h.diverged or not h.epochs:
            return {"status": STATUS_FAIL, "failure": h.diverged or "no epoch finished", **common}
        rung_scores = {str(k): v for k, v in self.rungs.scores(h.epochs).items()} if self.rungs else {}
        if stopped_at:  # scored where it stopped: at its last rung
            last = h.epochs[-1]
            return {"status": STATUS_OK, "outcome": "stopped", "loss": 1.0 - last["val_acc"], "val_acc": last["val_acc"],
                    "val_loss": last["val_loss"], "best_epoch": last["epoch"], "rung_scores": rung_scores, **common}
        if self.keep_weights:  # a finished trial may be reused as a retraining run (helpers.study)
            from helpers.runs import save_run

            weights = trial_weights(self.outputs, self.experiment, self.algo, self.trial_index)
            save_run(result, data, weights, extra={"history": h.to_dict()})
        best = h.best
        return {"status": STATUS_OK, "outcome": "finished", "loss": 1.0 - best["val_acc"], "val_acc": best["val_acc"],
                "val_loss": best["val_loss"], "best_epoch": h.best_epoch, "rung_scores": rung_scores, **common}
