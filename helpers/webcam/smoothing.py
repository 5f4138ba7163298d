"""A steadier live answer: calibrated probabilities averaged over the last few frames, restarted on a new scene."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd

from helpers.webcam import shifts

#: Frames averaged: a sixth of a second at 30 FPS, short enough to follow a card that is swapped.
WINDOW = 5
#: Mean absolute difference (0-1) between the model's views of two consecutive frames above which the window
#: restarts: a new card or a jump of the camera (:func:`change_table` shows where held and swapped clips fall).
CHANGE = 0.15


def view_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two model views (uint8 arrays of one shape), on a 0-1 scale."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255)


class Smoother:
    """The mean of the calibrated probabilities of the last ``window`` frames; "sure" when that mean is."""

    def __init__(self, threshold: float = 0.0, window: int = WINDOW, change: float = CHANGE) -> None:
        if window < 1:
            raise ValueError(f"window must be 1 or more frames, got {window}")
        self.threshold, self.change = threshold, change
        self.recent: deque[np.ndarray] = deque(maxlen=window)
        self.last_view: np.ndarray | None = None

    def update(self, probs: np.ndarray, view: np.ndarray) -> tuple[np.ndarray, bool]:
        """Add one frame (its probabilities and model view); returns the averaged probabilities and if sure."""
        if self.last_view is not None and view_change(view, self.last_view) > self.change:
            self.recent.clear()  # a new scene: the old frames say nothing about it
        self.last_view = view
        self.recent.append(np.asarray(probs, dtype=np.float64))
        mean = np.mean(self.recent, axis=0)
        return mean, bool(mean.max() >= self.threshold)


def held_clip(image_chw: np.ndarray, family: str, severity: int, n_frames: int, seed: int) -> list[np.ndarray]:
    """Frames of one card held up to a camera: one camera shift for the clip, then per frame a small hand
    movement (up to 3 px of the 112-px guide box), a flicker of light (±4 %) and sensor noise."""
    rng = np.random.default_rng(seed)
    base = shifts.FAMILIES[family].apply(shifts.to_frame(image_chw), severity, rng)
    side = base.shape[0]
    frames = []
    for _ in range(n_frames):
        dx, dy = rng.uniform(-3, 3, size=2)
        moved = cv2.warpAffine(base, np.float32([[1, 0, dx], [0, 1, dy]]), (side, side),
                               borderMode=cv2.BORDER_REPLICATE)
        lit = moved.astype(np.float32) * rng.uniform(0.96, 1.04) + rng.normal(0, 3, moved.shape)
        frames.append(np.clip(lit, 0, 255).astype(np.uint8))
    return frames


def video(images: Sequence[np.ndarray], n_frames: int = 12, seed: int = 0) -> list[list[np.ndarray]]:
    """One held clip per image, played one after the other: family and severity drawn per clip (seeded)."""
    rng = np.random.default_rng(seed)
    names = sorted(shifts.FAMILIES)
    return [held_clip(img, names[rng.integers(len(names))], int(rng.choice(shifts.SEVERITIES)), n_frames,
                      int(rng.integers(2**31))) for img in images]


def change_table(predictor: Any, clips: Sequence[Sequence[np.ndarray]]) -> pd.DataFrame:
    """The view change between consecutive frames of one clip and across a swap of cards (quantiles)."""
    views = [predictor.pixels(list(c)) for c in clips]
    within = [view_change(v[i], v[i + 1]) for v in views for i in range(len(v) - 1)]
    across = [view_change(a[-1], b[0]) for a, b in zip(views, views[1:])]
    q = [0.05, 0.5, 0.95, 0.99]
    return pd.DataFrame({"same card, next frame": np.quantile(within, q), "card swapped": np.quantile(across, q)},
                        index=pd.Index([f"{int(100 * x)} % quantile" for x in q], name="view change (0-1)"))


def replay(predictor: Any, clips: Sequence[Sequence[np.ndarray]], labels: Sequence[int],
           window: int = WINDOW, change: float = CHANGE) -> pd.DataFrame:
    """Each frame's own answer against the averaged answer, over the clips played one after the other: flips of
    the shown answer, frames until the right name first shows, and how often a frame shows a wrong name."""
    threshold = predictor.calibration.threshold if predictor.calibration else 0.0
    modes = {"each frame alone": 1, f"mean of the last {window} frames": window}
    rows = []
    for mode, size in modes.items():
        smoother = Smoother(threshold, size, change)
        flips = frames = wrong = right = 0
        first_right: list[float] = []
        for clip, label in zip(clips, labels):
            pixels = predictor.pixels(list(clip))
            shown_before, found = None, np.nan
            for i, (probs, view) in enumerate(zip(predictor.probabilities(pixels), pixels)):
                mean, sure = smoother.update(probs, view)
                shown = int(mean.argmax()) if sure else -1  # -1: "not sure"
                flips += shown_before is not None and shown != shown_before
                shown_before, frames = shown, frames + 1
                wrong += sure and shown != label
                right += sure and shown == label
                if shown == label and np.isnan(found):
                    found = i + 1
            first_right.append(found)
        reached = np.isfinite(first_right)
        rows.append({"answer": mode, "frames": frames, "flips per 100 frames": 100 * flips / frames,
                     "right and sure %": 100 * right / frames, "wrong and sure %": 100 * wrong / frames,
                     "clips where the right name shows %": 100 * reached.mean(),
                     "frames until it shows (mean)": float(np.mean(np.asarray(first_right)[reached]))
                     if reached.any() else np.nan})
    return pd.DataFrame(rows).set_index("answer")
