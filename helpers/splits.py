"""Reproducible validation splits: stratified by class, optionally grouped (e.g. by patient)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of every class held out.

    The same labels and seed always give the same split. Indices are returned sorted.
    """
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
    """Like :func:`stratified_split`, but every group (patient) lands wholly on one side.

    Each group is assigned to the class most of its images have; per class, whole groups are
    drawn in a seeded random order until about ``fraction`` of that class's images are held out.
    """
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
