"""Checkpoints: weights plus everything needed to use them (config, classes, normalisation, metrics)."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.models import ARCHITECTURES, build_model, spec_of
from helpers.plumbing import ChecksumError, checksum_path, read_checked, write_checked
from helpers.provenance import git_state

FORMAT = "lenet5-portfolio-checkpoint/1"


def plain(value: Any) -> Any:
    """Metadata as plain Python values (numpy/torch scalars to numbers, tuples kept), safe to load."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


class CheckpointError(RuntimeError):
    """A file that is not a usable checkpoint of this project."""


def check_metadata(where: str, classes: Any, image_size: Any, in_channels: Any, mean: Any, std: Any,
                   outputs: int | None = None) -> tuple[list[str], int, int, tuple[float, ...], tuple[float, ...]]:
    """A model's metadata checked against itself and the model: (classes, image size, channels, mean, std)."""
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {what}; the model does not match its metadata, so it is not used "
                               f"(export or save it again from the notebook that trained it)")

    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise fail(f"'classes' must be a list of at least 2 names, got {str(classes)[:80]!r}")
    try:
        size, channels = int(image_size), int(in_channels)
    except (TypeError, ValueError):
        raise fail(f"'image_size' and 'in_channels' must be whole numbers, got {image_size!r} and {in_channels!r}") from None
    if not 8 <= size <= 1024 or channels not in (1, 3):
        raise fail(f"'image_size' must be 8..1024 and 'in_channels' 1 or 3, got {image_size!r} and {in_channels!r}")
    stats = []
    for name, value in (("mean", mean), ("std", std)):
        ok = isinstance(value, (list, tuple)) and len(value) == channels and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
        if not ok or (name == "std" and min(value) <= 0):
            raise fail(f"'{name}' must be {channels} finite number(s){' above 0' if name == 'std' else ''}, "
                       f"got {str(value)[:80]!r}")
        stats.append(tuple(float(v) for v in value))
    if outputs is not None and outputs != len(classes):
        raise fail(f"the model gives {outputs} scores but its metadata names {len(classes)} classes")
    return list(classes), size, channels, stats[0], stats[1]


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and its metadata."""

    model: nn.Module
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch: str
    model_config: dict[str, Any]
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  #: git commit and dirty flag of the code that saved it

    @property
    def image_size(self) -> int:
        return int(self.model_config["image_size"])

    @property
    def in_channels(self) -> int:
        return int(self.model_config["in_channels"])


def save_checkpoint(
    path: Path, model: nn.Module, classes: list[str], mean: tuple[float, ...], std: tuple[float, ...],
    train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = spec_of(model)
    payload = {
        "format": FORMAT, "arch": spec.arch, "model_config": spec.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes), "mean": plain(list(mean)), "std": plain(list(std)),
        "train_config": plain(dict(train_config or {})), "metrics": plain(dict(metrics or {})),
        "extra": plain(dict(extra or {})), "provenance": git_state(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_checked(path, buffer.getvalue())


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint saved by :func:`save_checkpoint` into an identical model (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train and save a model first (notebook 02 or 03)")
    if not checksum_path(path).exists():
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint of this project: it has no {checksum_path(path).name} "
            f"beside it (every checkpoint saved here has one; older versions did not). Re-create it by re-running "
            f"the notebook that trains it (02 or 03).")
    try:
        data = read_checked(path)
    except ChecksumError as exc:
        raise CheckpointError(f"{exc}. It is not loaded: re-create it by re-running the notebook that trains it "
                              f"(02 or 03), or restore the file and its .sha256 from a backup.") from None
    try:  # metadata is saved as plain values (see plain()), so no numpy types need allow-listing
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # tensors only: no pickled code
    except pickle.UnpicklingError:  # never pass on PyTorch's advice to load it unsafely
        if not data.startswith(b"PK"):  # torch.save writes a zip archive
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (not a PyTorch archive)") from None
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, which are not loaded "
                              f"(loading them could run code); re-create it by re-running the notebook that trains "
                              f"it") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project (expected format {FORMAT!r})")
    missing = [k for k in ("arch", "model_config", "state_dict", "classes", "mean", "std") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(repr(k) for k in missing)}, so it cannot be "
                              f"used; re-create it by re-running the notebook that trains it")
    arch, config = payload["arch"], payload["model_config"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: 'model_config' is {type(config).__name__}, not a dict of settings")
    classes, _, _, mean, std = check_metadata(
        str(path), payload["classes"], config.get("image_size"), config.get("in_channels"), payload["mean"],
        payload["std"], outputs=config.get("num_classes", 10))
    try:
        model = build_model(arch, seed=None, **config)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded {arch} config: {exc}") from exc
    model.to(device).eval()
    return Checkpoint(
        model=model, classes=classes, mean=mean, std=std,
        arch=arch, model_config=dict(config), train_config=dict(payload.get("train_config") or {}),
        metrics=dict(payload.get("metrics") or {}), extra=dict(payload.get("extra") or {}), path=path,
        provenance=dict(payload.get("provenance") or {}),
    )
