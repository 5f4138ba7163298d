"""How a model fares on camera-shift and out-of-distribution frames: accuracy, calibration, "not sure".

:class:`ShiftSet` holds a split under every shift family × severity of :mod:`helpers.shifts`, as
the model sees it; :func:`shift_report` runs a predictor (:mod:`helpers.inference`) over it and reports accuracy, expected calibration error
(15 bins) and how often the calibrated model says "not sure". :func:`resample_flips` counts images
whose answer changes with the resize method alone. :func:`ood_report` gives the "not sure" rate on
frames without a character (:mod:`helpers.ood`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers.calibration import Calibration, expected_calibration_error, reliability, softmax
from helpers.inference import to_model_pixels
from helpers.shifts import FAMILIES, SEVERITIES, shifted_frames, to_frame


@dataclass(frozen=True)
class ShiftSet:
    """A split under every camera shift, kept as *model pixels* (the demo's crop and resize already
    applied, uint8 N×C×H×W per (family, severity); the clean frames under ``("clean", 0)``), so that
    several models are measured on identical inputs without rebuilding the frames."""

    name: str  #: e.g. "test split, 2,000 images"
    labels: np.ndarray
    pixels: dict[tuple[str, int], np.ndarray]
    seed: int

    @classmethod
    def build(cls, name: str, images: np.ndarray, labels: np.ndarray, image_size: int, in_channels: int, *,
              seed: int = 0, families: Sequence[str] | None = None) -> ShiftSet:
        """Frames of every family × severity (:func:`helpers.shifts.shifted_frames`, ``seed``), as the model sees them."""
        images = np.asarray(images)
        to_pixels = lambda frames: np.stack([to_model_pixels(f, image_size, in_channels) for f in frames])  # noqa: E731
        pixels = {("clean", 0): to_pixels([to_frame(x) for x in images])}
        for fam in families or FAMILIES:
            for sev in SEVERITIES:
                pixels[(fam, sev)] = to_pixels(shifted_frames(images, fam, sev, seed=seed))
        return cls(name, np.asarray(labels), pixels, seed)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(f for f, _ in self.pixels if f != "clean"))

    def __len__(self) -> int:
        return len(self.labels)


def probabilities(predictor: Any, pixels: np.ndarray) -> np.ndarray:
    """Temperature-scaled (if calibrated) class probabilities of model pixels."""
    cal = predictor.calibration
    return softmax(predictor.logits_pixels(pixels), cal.temperature if cal else 1.0)


def _row(probs: np.ndarray, labels: np.ndarray, predictor: Any) -> dict[str, float]:
    cal = predictor.calibration
    sure = cal.sure(probs) if cal else np.ones(len(probs), bool)
    correct = probs.argmax(1) == labels
    return {"images": len(labels), "accuracy %": 100 * correct.mean(),
            "ECE %": 100 * expected_calibration_error(probs, labels),
            "mean confidence %": 100 * probs.max(1).mean(), "not sure %": 100 * (~sure).mean(),
            "wrong and sure %": 100 * (~correct & sure).mean()}


def shift_report(predictor: Any, shift_set: ShiftSet) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row for the clean frames and one per (family, severity); and the reliability table of the
    clean frames and of all shifted frames pooled (for a reliability diagram)."""
    labels = shift_set.labels
    rows, pooled_p = [], []
    curves: dict[str, pd.DataFrame] = {}
    for (fam, sev), pixels in shift_set.pixels.items():
        p = probabilities(predictor, pixels)
        rows.append({"family": fam, "severity": sev, **_row(p, labels, predictor)})
        if fam == "clean":
            curves["clean"] = reliability(p, labels)
        else:
            pooled_p.append(p)
    curves["all shifts"] = reliability(np.concatenate(pooled_p), np.tile(labels, len(pooled_p)))
    return pd.DataFrame(rows).set_index(["family", "severity"]), curves


def by_family(table: pd.DataFrame, groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Mean over severities per family (and the clean row), optionally with a ``group`` column."""
    out = table.groupby(level="family", sort=False).mean(numeric_only=True).drop(columns="images")
    if groups:
        out.insert(0, "group", [next((g for g, fams in groups.items() if f in fams), "") for f in out.index])
    return out.round(2)


def resample_flips(predictor: Any, shift_set: ShiftSet) -> float:
    """Share (%) of images whose top-1 class differs between the area, bilinear and nearest round trips."""
    tops = [predictor.logits_pixels(shift_set.pixels[("resample", s)]).argmax(1) for s in SEVERITIES]
    return float(100 * np.mean((tops[0] != tops[1]) | (tops[0] != tops[2])))


def ood_report(predictor: Any, frames: Mapping[str, Sequence[np.ndarray]]) -> pd.DataFrame:
    """Per kind of frame without a character: how many, and the share answered "not sure"."""
    cal = predictor.calibration
    rows = []
    for kind, fs in frames.items():
        p = probabilities(predictor, predictor.pixels(fs))
        sure = cal.sure(p) if cal else np.ones(len(p), bool)
        rows.append({"kind": kind, "frames": len(fs), "not sure %": 100 * (~sure).mean(),
                     "mean confidence %": 100 * p.max(1).mean()})
    out = pd.DataFrame(rows).set_index("kind")
    total = sum(len(fs) for fs in frames.values())
    out.loc["all"] = [total, float((out["not sure %"] * out["frames"]).sum() / total),
                      float((out["mean confidence %"] * out["frames"]).sum() / total)]
    out["frames"] = out["frames"].astype(int)
    return out.round(2)


def calibrate(predictor: Any, shift_set: ShiftSet, keep: float = 0.90) -> Calibration:
    """Temperature and "not sure" threshold fitted on the clean frames of ``shift_set`` (the validation split)."""
    return Calibration.fit(predictor.logits_pixels(shift_set.pixels[("clean", 0)]), shift_set.labels,
                           shift_set.name, keep)


def latency_ms(predictor: Any, frames: Sequence[np.ndarray], repeats: int = 1) -> float:
    """Median milliseconds to predict one frame at a time (preprocessing included), as the live loop does."""
    times = []
    for _ in range(repeats):
        for f in frames:
            start = time.perf_counter()
            predictor.predict(f)
            times.append(time.perf_counter() - start)
    return float(1000 * np.median(times))


def agreement(answers: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Front ends compared on the same frames: ``answers[name] = (top-1 class indices, sure flags)``.
    Per front end, how many frames have the same top-1 and the same "not sure" decision as the first."""
    (ref_name, (ref_top, ref_sure)), *_ = answers.items()
    rows = [{"front end": name, "frames": len(top), f"same top-1 as {ref_name}": int((np.asarray(top) == ref_top).sum()),
             f"same 'not sure' as {ref_name}": int((np.asarray(sure) == ref_sure).sum())}
            for name, (top, sure) in answers.items()]
    return pd.DataFrame(rows).set_index("front end")
