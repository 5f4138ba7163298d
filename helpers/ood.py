"""Frames with no Simpsons character in them: what the demo must answer "not sure" for.

Kinds: an empty desk or sheet (a lit, textured background), a flat colour, uniform noise, blurred
noise, and Fashion-MNIST images (real photos of clothes; passed in, as they come from the data
loader). All are BGR frames of :data:`helpers.shifts.FRAME` px, each drawn from its own seeded
generator, so a set is identical on every build.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from helpers.shifts import FRAME, background, frame_rng, to_frame

KINDS = ("empty desk", "flat colour", "uniform noise", "blurred noise", "Fashion-MNIST")


def _synthetic(kind: str, rng: np.random.Generator, side: int) -> np.ndarray:
    if kind == "empty desk":
        return background(rng, side)
    if kind == "flat colour":
        return np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (side, side, 3)).copy()
    noise = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    if kind == "uniform noise":
        return noise
    if kind == "blurred noise":
        return cv2.GaussianBlur(noise, (0, 0), sigmaX=float(rng.uniform(2, 8)))
    raise ValueError(f"unknown out-of-distribution kind {kind!r}; known: {KINDS}")


def ood_frames(kind: str, n: int, *, seed: int = 0, images: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """``n`` frames of one kind; "Fashion-MNIST" takes its first ``n`` uint8 C×H×W ``images``."""
    if kind == "Fashion-MNIST":
        if images is None or len(images) < n:
            raise ValueError(f"Fashion-MNIST frames need at least {n} images, got {0 if images is None else len(images)}")
        return [to_frame(np.asarray(images[i])) for i in range(n)]
    return [_synthetic(kind, frame_rng(seed, f"ood/{kind}", 0, i), FRAME) for i in range(n)]
