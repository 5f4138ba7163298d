"""The Hyperopt search space over LeNet-5 and its training, and how a point of it becomes a run."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from hyperopt import Trials, hp
from hyperopt.pyll import as_apply, scope
from hyperopt.pyll.stochastic import sample

from helpers.models import build_model
from helpers.splits import DataSplits
from helpers.training import TrainConfig

# ----------------------------------------------------------------------------------- spaces


AUGMENTS = ("none", "flip", "shift", "flip+shift", "flip+shift+rotate")


#: The hyperparameters :func:`lenet_space` samples (its ``hp`` labels as the trial tables name them).
HYPERPARAMETERS = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "conv1", "conv2", "dense1", "dense2",
                   "dropout", "batchnorm", "label_smoothing", "augment")

#: What every search of notebooks 03, 04 and 07 holds fixed while it samples the space (a trial replaces the
#: point's fields in it; its epochs are set by the search's rungs).
SEARCH_TRAIN = TrainConfig(schedule="onecycle", monitor="val_acc", seed=0, channels_last=True)


#: Simpsons-MNIST's space (notebooks 03 and 07): :func:`lenet_space` narrowed where earlier runs point
#: (notebook 03 says why): BatchNorm on, batches of at most 128, conv layers of at least 12 / 32
#: channels, dense layers of at least 128 / 64 units, flips always in the augmentation.
SIMPSONS_SPACE: dict[str, tuple] = {
    "batchnorm": (True,), "batch_sizes": (32, 64, 128), "conv1": (12, 24, 32), "conv2": (32, 48, 64),
    "dense1": (128, 384), "dense2": (64, 192), "augments": ("flip", "flip+shift", "flip+shift+rotate"),
}


def lenet_space(conv1: Sequence[int] = (6, 12, 24, 32), conv2: Sequence[int] = (16, 32, 48, 64),
                augments: Sequence[str] = AUGMENTS, image_sizes: Sequence[int] | None = None,
                batch_sizes: Sequence[int] = (32, 64, 128, 256), batchnorm: Sequence[bool] = (False, True),
                dense1: Sequence[int] = (32, 384), dense2: Sequence[int] = (16, 192),
                views: Sequence[str] | None = None) -> dict[str, Any]:
    """The search space over LeNet-5 and its training (conditional optimizer parameters)."""
    log = math.log
    for name, (low, high) in (("dense1", dense1), ("dense2", dense2)):
        if not 16 <= low <= high:
            raise ValueError(f"{name} needs 16 <= low <= high, got {(low, high)}")
    space = {
        "optimizer": hp.choice("optimizer", [
            {"name": "sgd", "lr": hp.loguniform("sgd_lr", log(3e-3), log(0.3)),
             "momentum": hp.uniform("sgd_momentum", 0.5, 0.97)},
            {"name": "adam", "lr": hp.loguniform("adam_lr", log(1e-4), log(1e-2))},
            {"name": "adamw", "lr": hp.loguniform("adamw_lr", log(1e-4), log(1e-2))},
            {"name": "rmsprop", "lr": hp.loguniform("rmsprop_lr", log(1e-4), log(3e-3)),
             "momentum": hp.uniform("rmsprop_momentum", 0.0, 0.9)},
        ]),
        "schedule": hp.choice("schedule", ["onecycle", "cosine"]),
        "weight_decay": hp.loguniform("weight_decay", log(1e-6), log(1e-2)),
        "batch_size": hp.choice("batch_size", [int(b) for b in batch_sizes]),
        "conv1": hp.choice("conv1", list(conv1)),
        "conv2": hp.choice("conv2", list(conv2)),
        "dense1": scope.int(hp.quniform("dense1", dense1[0], dense1[1], 16)),
        "dense2": scope.int(hp.quniform("dense2", dense2[0], dense2[1], 16)),
        "dropout": hp.uniform("dropout", 0.0, 0.5),
        "batchnorm": hp.choice("batchnorm", [bool(b) for b in batchnorm]),
        "label_smoothing": hp.choice("label_smoothing", [0.0, 0.05, 0.1]),
        "augment": hp.choice("augment", list(augments)),
    }
    if image_sizes:
        space["image_size"] = hp.choice("image_size", [int(v) for v in image_sizes])
    if views:
        space["views"] = hp.choice("views", list(views))
    return space


def space_source() -> str:
    """The ``hp`` expressions of :func:`lenet_space`, as written in this module (for a notebook to show)."""
    lines = inspect.getsource(lenet_space).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("space = {"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return textwrap.dedent("\n".join(lines[start:end + 1] + [
        line for line in lines[end + 1:] if "space[" in line or line.strip().startswith("if ")]))


def fingerprint(space: Mapping[str, Any]) -> str:
    """16 hex digits naming a space's ``hp`` graph: labels, distributions, bounds and choices."""
    return hashlib.sha256(str(as_apply(space)).encode()).hexdigest()[:16]


def stored_space(trials: Trials) -> dict[str, Any]:
    """The space a saved search sampled from: :func:`lenet_space` with its recorded options."""
    spec = json.loads(trials.attachments.get("search_spec") or "{}")
    extra = spec.get("extra") or {}
    space = lenet_space(**(extra.get("space_options") or {}))
    recorded = extra.get("space")
    if recorded is not None and recorded != fingerprint(space):
        raise ValueError(f"these trials sampled an edited space (fingerprint {recorded}), not lenet_space with "
                         f"their recorded options: decode them with the space that made them")
    return space


def grid_space(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """A fully discrete space: one ``hp.choice`` per grid axis, plus fixed values."""
    space: dict[str, Any] = dict(fixed)
    for name, values in grid.items():
        space[name] = hp.choice(name, list(values))
    return space


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, int]]:
    """Every combination of the grid, as ``{label: choice index}`` in a fixed order."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(range(len(grid[n])) for n in names))]




@dataclass
class RunConfig:
    """A sampled point turned into what training needs: model kwargs and a TrainConfig."""

    model: dict[str, Any]
    train: TrainConfig
    views: str | None = None  #: the view option the point chose (a space with a ``views`` axis), else None

    def describe(self) -> dict[str, Any]:
        """Flat, readable dict of the settings (for tables)."""
        t = self.train
        return ({"views": self.views} if self.views is not None else {}) | {
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


def to_run_config(params: Mapping[str, Any], data: DataSplits, base: TrainConfig) -> RunConfig:
    """Map a point of the space (after ``space_eval``) onto model kwargs and ``base`` with the point's fields."""
    opt = params.get("optimizer", {"name": base.optimizer})
    if isinstance(opt, str):
        opt = {"name": opt}
    image_size = int(params.get("image_size", data.image_size))
    train = replace(
        base, optimizer=opt["name"], lr=float(opt.get("lr", params.get("lr", base.lr))),
        momentum=float(opt.get("momentum", base.momentum)),
        weight_decay=float(params.get("weight_decay", base.weight_decay)),
        batch_size=int(params.get("batch_size", base.batch_size)), schedule=params.get("schedule", base.schedule),
        label_smoothing=float(params.get("label_smoothing", base.label_smoothing)),
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
    return RunConfig(model, train, params.get("views"))


def validate_space(space: Mapping[str, Any], data: DataSplits, base: TrainConfig,
                   n_samples: int = 50, seed: int = 0) -> None:
    """Sample the space and check every sample maps to a valid config, before any training."""
    rng = np.random.default_rng(seed)
    for _ in range(n_samples):
        point = sample(space, rng=rng)
        try:
            to_run_config(point, data, base)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"invalid search space: the point {point} is not usable: {exc}") from exc


