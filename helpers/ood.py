"""Frames with no Simpsons character in them: what the demo must answer "not sure" for.

Measured kinds (:data:`KINDS`, never trained on): an empty desk or sheet (a lit, textured
background), a flat colour, uniform noise, blurred noise, and Fashion-MNIST images (real photos of
clothes; passed in, as they come from the data loader).

Training kinds (:data:`TRAIN_KINDS`, for the outlier-exposure loss of the robust model, kept apart
from the measured ones): Simpsons-MNIST training images cut into tiles and shuffled (their colours,
none of their shapes), random filled shapes on a background, and chest X-rays (real images of
something else; passed in). All are BGR frames of :data:`helpers.shifts.FRAME` px, each drawn from
its own seeded generator, so a set is identical on every build.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from helpers.shifts import FRAME, background, frame_rng, to_frame

KINDS = ("empty desk", "flat colour", "uniform noise", "blurred noise", "Fashion-MNIST")
TRAIN_KINDS = ("shuffled tiles", "random shapes", "chest X-ray")
_FROM_IMAGES = ("Fashion-MNIST", "shuffled tiles", "chest X-ray")  #: kinds made from images passed in


def shuffled_tiles(image_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image cut into a 4×4 … 7×7 grid of tiles, shuffled and re-flipped: its colours, none of its shapes."""
    frame = to_frame(image_chw)
    g = int(rng.choice([4, 7]))  # divides the 28-px grid of the source image
    t = frame.shape[0] // g
    tiles = [frame[r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(g) for c in range(g)]
    order = rng.permutation(len(tiles))
    rows = [np.concatenate([np.rot90(tiles[order[r * g + c]], int(rng.integers(4))) for c in range(g)], axis=1)
            for r in range(g)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def random_shapes(rng: np.random.Generator, side: int) -> np.ndarray:
    """One to six filled rectangles, ellipses or thick lines in random colours on a flat background."""
    out = np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (side, side, 3)).copy()
    for _ in range(int(rng.integers(1, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, side, size=4))
        kind = int(rng.integers(3))
        if kind == 0:
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, -1)
        elif kind == 1:
            cv2.ellipse(out, (x0, y0), (int(rng.integers(4, side // 2)), int(rng.integers(4, side // 2))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            cv2.line(out, (x0, y0), (x1, y1), colour, int(rng.integers(3, 15)))
    return out


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
    raise ValueError(f"unknown out-of-distribution kind {kind!r}; known: {KINDS + TRAIN_KINDS}")


def ood_frames(kind: str, n: int, *, seed: int = 0, images: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """``n`` frames of one kind. "Fashion-MNIST" and "chest X-ray" take the first ``n`` uint8 C×H×W
    ``images``; "shuffled tiles" cuts up the first ``n`` of them."""
    if kind in _FROM_IMAGES and (images is None or len(images) < n):
        raise ValueError(f"{kind} frames need at least {n} images, got {0 if images is None else len(images)}")
    if kind in ("Fashion-MNIST", "chest X-ray"):
        return [to_frame(np.asarray(images[i])) for i in range(n)]
    if kind == "shuffled tiles":
        return [shuffled_tiles(np.asarray(images[i]), frame_rng(seed, f"ood/{kind}", 0, i)) for i in range(n)]
    if kind == "random shapes":
        return [random_shapes(frame_rng(seed, f"ood/{kind}", 0, i), FRAME) for i in range(n)]
    return [_synthetic(kind, frame_rng(seed, f"ood/{kind}", 0, i), FRAME) for i in range(n)]
