"""How a model fares on camera-shift and out-of-distribution frames: accuracy, calibration, "not sure".

:func:`shift_report` runs a predictor (:mod:`helpers.inference`) over the clean frames and every
shift family × severity of :mod:`helpers.shifts`, and reports accuracy, expected calibration error
(15 bins) and how often the calibrated model says "not sure". :func:`resample_flips` counts images
whose answer changes with the resize method alone. :func:`ood_report` gives the "not sure" rate on
frames without a character (:mod:`helpers.ood`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from helpers.calibration import Calibration, expected_calibration_error, reliability, softmax
from helpers.shifts import FAMILIES, SEVERITIES, shifted_frames, to_frame


def _probs(predictor: Any, frames: Sequence[np.ndarray]) -> np.ndarray:
    cal = predictor.calibration
    return softmax(predictor.logits_many(frames), cal.temperature if cal else 1.0)


def _row(probs: np.ndarray, labels: np.ndarray, predictor: Any) -> dict[str, float]:
    cal = predictor.calibration
    sure = cal.sure(probs) if cal else np.ones(len(probs), bool)
    correct = probs.argmax(1) == labels
    return {"images": len(labels), "accuracy %": 100 * correct.mean(),
            "ECE %": 100 * expected_calibration_error(probs, labels),
            "mean confidence %": 100 * probs.max(1).mean(), "not sure %": 100 * (~sure).mean(),
            "wrong and sure %": 100 * (~correct & sure).mean()}


def shift_report(predictor: Any, images: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                 families: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row for the clean frames and one per (family, severity); and the reliability table of the
    clean frames and of all shifted frames pooled (for a reliability diagram)."""
    labels = np.asarray(labels)
    clean = _probs(predictor, [to_frame(x) for x in images])
    rows = [{"family": "clean", "severity": 0, **_row(clean, labels, predictor)}]
    pooled_p, pooled_y = [], []
    for name in families or FAMILIES:
        for s in SEVERITIES:
            p = _probs(predictor, shifted_frames(images, name, s, seed=seed))
            rows.append({"family": name, "severity": s, **_row(p, labels, predictor)})
            pooled_p.append(p)
            pooled_y.append(labels)
    table = pd.DataFrame(rows).set_index(["family", "severity"])
    curves = {"clean": reliability(clean, labels),
              "all shifts": reliability(np.concatenate(pooled_p), np.concatenate(pooled_y))}
    return table, curves


def by_family(table: pd.DataFrame, groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Mean over severities per family (and the clean row), optionally with a ``group`` column."""
    out = table.groupby(level="family", sort=False).mean(numeric_only=True).drop(columns="images")
    if groups:
        out.insert(0, "group", [next((g for g, fams in groups.items() if f in fams), "") for f in out.index])
    return out.round(2)


def resample_flips(predictor: Any, images: np.ndarray, *, seed: int = 0) -> float:
    """Share (%) of images whose top-1 class differs between the area, bilinear and nearest round trips."""
    tops = [_probs(predictor, shifted_frames(images, "resample", s, seed=seed)).argmax(1) for s in SEVERITIES]
    return float(100 * np.mean((tops[0] != tops[1]) | (tops[0] != tops[2])))


def ood_report(predictor: Any, frames: Mapping[str, Sequence[np.ndarray]]) -> pd.DataFrame:
    """Per kind of frame without a character: how many, and the share answered "not sure"."""
    cal = predictor.calibration
    rows = []
    for kind, fs in frames.items():
        p = _probs(predictor, fs)
        sure = cal.sure(p) if cal else np.ones(len(p), bool)
        rows.append({"kind": kind, "frames": len(fs), "not sure %": 100 * (~sure).mean(),
                     "mean confidence %": 100 * p.max(1).mean()})
    out = pd.DataFrame(rows).set_index("kind")
    total = sum(len(fs) for fs in frames.values())
    out.loc["all"] = [total, float((out["not sure %"] * out["frames"]).sum() / total),
                      float((out["mean confidence %"] * out["frames"]).sum() / total)]
    out["frames"] = out["frames"].astype(int)
    return out.round(2)


def calibrate(predictor: Any, images: np.ndarray, labels: np.ndarray, fitted_on: str, keep: float = 0.90) -> Calibration:
    """Temperature and "not sure" threshold fitted on clean frames of ``images`` (the validation split)."""
    return Calibration.fit(predictor.logits_many([to_frame(x) for x in images]), np.asarray(labels), fitted_on, keep)


def latency_ms(predictor: Any, frames: Sequence[np.ndarray], repeats: int = 1) -> float:
    """Median milliseconds to predict one frame at a time (preprocessing included), as the live loop does."""
    times = []
    for _ in range(repeats):
        for f in frames:
            start = time.perf_counter()
            predictor.predict(f)
            times.append(time.perf_counter() - start)
    return float(1000 * np.median(times))
