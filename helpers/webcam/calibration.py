"""Is a confidence worth its number? Calibration error, temperature scaling and the "not sure" threshold."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar

BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per equal-width confidence bin: predictions, mean confidence and accuracy (empty bins kept, NaN)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        rows.append({"bin low": edges[b], "bin high": edges[b + 1], "predictions": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else np.nan,
                     "accuracy": float(correct[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """ECE: Σ over bins of (share of predictions) × |accuracy − mean confidence|, as a fraction."""
    table = reliability(probs, labels, bins)
    used = table[table["predictions"] > 0]
    return float((used["predictions"] * (used["accuracy"] - used["confidence"]).abs()).sum() / len(probs))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (0.05–20) minimising the negative log-likelihood of ``labels`` under softmax(logits / T)."""
    labels = np.asarray(labels)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def confidence_threshold(probs: np.ndarray, labels: np.ndarray, keep: float = 0.90) -> float:
    """The highest threshold t such that at least ``keep`` of the correct predictions have confidence ≥ t."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    if not correct.any():
        raise ValueError("no correct prediction to keep confident")
    ranked = np.sort(conf[correct])[::-1]
    return float(ranked[int(np.ceil(keep * len(ranked))) - 1])


@dataclass(frozen=True)
class Calibration:
    """Temperature and "not sure" threshold for one model, and how they were chosen."""

    temperature: float
    threshold: float
    keep: float  #: share of correct validation predictions kept confident at the threshold
    fitted_on: str  #: e.g. "Simpsons-MNIST (rgb) validation, 800 images"

    def __post_init__(self) -> None:
        for name, low, high in (("temperature", 0.0, None), ("threshold", 0.0, 1.0), ("keep", 0.0, 1.0)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and (
                value > low if name == "temperature" else low <= value <= high)
            if not ok:
                bounds = "a finite number above 0" if high is None else f"a number from {low:g} to {high:g}"
                raise ValueError(f"calibration {name} must be {bounds}, got {value!r}")

    @classmethod
    def from_dict(cls, raw: object, where: str) -> Calibration:
        """A calibration from its JSON object; ValueError naming ``where`` and the problem otherwise."""
        fields = ("temperature", "threshold", "keep", "fitted_on")
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            unknown = sorted(set(raw) - set(fields))
            if unknown:
                raise KeyError(f"unknown key(s) {', '.join(unknown)}")
            return cls(float(raw["temperature"]), float(raw["threshold"]), float(raw["keep"]),
                       str(raw["fitted_on"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where} is not a calibration of this project ({type(exc).__name__}: {exc}); "
                             f"re-run notebook 06 to write it again") from None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def sure(self, probs: np.ndarray) -> np.ndarray:
        """Per row: is the top-1 confidence at or above the threshold?"""
        return probs.max(axis=1) >= self.threshold

    @classmethod
    def fit(cls, logits: np.ndarray, labels: np.ndarray, fitted_on: str, keep: float = 0.90) -> Calibration:
        """Fit the temperature, then the threshold on the temperature-scaled validation probabilities."""
        t = fit_temperature(logits, labels)
        return cls(t, confidence_threshold(softmax(logits, t), labels, keep), keep, fitted_on)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a calibration file of this project ({type(exc).__name__}: {exc}); "
                             f"re-run notebook 06 to write it again") from None
        return cls.from_dict(raw, str(path))


def calibration_path(model_path: Path) -> Path:
    """Where a model's calibration lives: ``<model>.calibration.json`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".calibration.json")


def plot_reliability(curves: dict[str, pd.DataFrame], title: str) -> Figure:
    """Reliability diagram: accuracy against mean confidence per bin, one line per model or setting."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], ls=":", color="gray", label="perfect calibration")
    for name, table in curves.items():
        used = table[table["predictions"] > 0]
        ax.plot(100 * used["confidence"], 100 * used["accuracy"], marker="o", label=name)
    ax.set(xlabel="mean top-1 confidence in bin (%)", ylabel="accuracy in bin (%)", title=title, xlim=(0, 100), ylim=(0, 100))
    ax.lines[0].set_data([0, 100], [0, 100])
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
