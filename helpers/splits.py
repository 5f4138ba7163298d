"""A data set in memory (:class:`DataSplits`) and its reproducible, stratified (grouped) splits."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from helpers.provenance import fingerprint_bytes


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of every class held out."""
    labels = np.asarray(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n_held = int(round(fraction * len(idx)))
        held.append(rng.permutation(idx)[:n_held])
    held_out = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


def grouped_stratified_split(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    fraction: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`stratified_split`, but every group (patient) lands wholly on one side."""
    labels = np.asarray(labels)
    if len(labels) != len(groups):
        raise ValueError("labels and groups must have the same length")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        counts = Counter(int(labels[i]) for i in members[g])
        main_class = min(counts, key=lambda c: (-counts[c], c))
        by_class[main_class].append(g)

    rng = np.random.default_rng(seed)
    held: list[int] = []
    for cls in sorted(by_class):
        target = fraction * int(np.sum(labels == cls))
        taken = 0
        for k in rng.permutation(len(by_class[cls])):
            if taken >= target - 0.5:
                break
            group = by_class[cls][k]
            held.extend(members[group])
            taken += sum(1 for i in members[group] if labels[i] == cls)
    held_out = np.array(sorted(held), dtype=int)
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


def stratified_subset(labels: Sequence[int] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items with the class proportions of ``labels`` (for quick budgets)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    _, held = stratified_split(labels, n / len(labels), seed)
    return held


@dataclass
class Split:
    """One split: images, labels and an identifier (source file or index) per image."""

    x: torch.Tensor  #: uint8, (N, C, H, W)
    y: torch.Tensor  #: int64, (N,)
    ids: list[str]
    #: optional uint8 (K, N, C, H, W): K other versions of every image (camera-shifted ones,
    #: :func:`helpers.webcam.robust.camera_views`; stretched ones, :func:`helpers.xray.aspect.with_stretch_views`),
    #: swapped in during training by the :class:`helpers.training.ViewSwap` hook
    views: torch.Tensor | None = None
    #: optional int64 (N,): how many times each image counts in accuracy, loss and confusion matrix (the
    #: importance-weighted validation split, :func:`helpers.xray.weighting.weighted_validation`); None: once each
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray | Sequence[int]) -> Split:
        """The images at ``index`` (a new Split, with their views and weights)."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        views = None if self.views is None else self.views[:, idx]
        weights = None if self.weights is None else self.weights[idx]
        return Split(self.x[idx], self.y[idx], [self.ids[i] for i in idx.tolist()], views, weights)


@dataclass
class DataSplits:
    """A data set ready for training: three splits, class names and train-split statistics."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  #: per channel, pixel scale 0..1, training split only
    std: tuple[float, ...]
    source: str  #: folder the files were read from
    note: str = ""  #: e.g. which part of the data set this is
    #: optional uint8 (M, C, H, W) images with no class in them, for the outlier-exposure loss
    #: (:class:`helpers.webcam.robust.OutlierExposure`, :func:`helpers.webcam.robust.outlier_images`)
    outliers: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        """``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}")
        return getattr(self, name)

    def fingerprint(self) -> str:
        """A short sha256 of every split's pixels and labels: the same images in the same order, the same value."""
        return fingerprint_bytes(t.contiguous().numpy().tobytes() for s in (self.train, self.val, self.test)
                                 for t in (s.x, s.y, s.weights) if t is not None)

    def sizes(self) -> str:
        """Image counts, e.g. ``'7,200 train / 800 val / 2,000 test images'``."""
        return f"{len(self.train):,} train / {len(self.val):,} val / {len(self.test):,} test images"

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns)."""
        data = {
            s: np.bincount(self.split(s).y.numpy(), minlength=self.num_classes)
            for s in ("train", "val", "test")
        }
        return pd.DataFrame(data, index=pd.Index(self.classes, name="class"))

    def pixel_stats(self) -> pd.DataFrame:
        """Per split: image count, shape and pixel statistics (0..1 scale, all channels)."""
        rows = []
        for name in ("train", "val", "test"):
            x = self.split(name).x.to(torch.float32) / 255.0
            rows.append({
                "split": name, "images": len(x), "channels": self.channels,
                "size": f"{x.shape[-2]}x{x.shape[-1]}", "mean": x.mean().item(),
                "std": x.std().item(), "min": x.min().item(), "max": x.max().item(),
            })
        return pd.DataFrame(rows).set_index("split").round(3)

    def subset(
        self, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
        seed: int = 0,
    ) -> DataSplits:
        """A class-stratified slice (for quick budgets); ``None`` keeps a split whole."""
        parts = {}
        for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            s = self.split(name)
            parts[name] = s if n is None or n >= len(s) else s.take(stratified_subset(s.y.numpy(), n, seed))
        sliced = replace(self, **parts)
        if any(len(parts[k]) < len(self.split(k)) for k in parts):
            sliced.note = (f"{self.note} " if self.note else "") + (
                f"Slice of {self.sizes()}: using {sliced.sizes()}."
            )
        return sliced
