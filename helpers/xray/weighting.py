"""Validation that sees the shift: importance weights from a domain classifier, and views that zoom."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.data import patient_of
from helpers.models import build_model
from helpers.splits import DataSplits, Split
from helpers.stats import beats, target
from helpers.training import DeviceSplit, TrainConfig, TrainHook, fit, predict_logits
from helpers.xray.domain_shift import PROBE_MODEL, PROBE_TRAINING, score_auc

#: Largest weight kept, relative to the mean weight (larger ones are cut to it, then all renormalised).
CLIP = 10.0
#: How many times the validation split counts, in all, when weights become integer counts.
TOTAL_PER_IMAGE = 4


@dataclass
class ShiftWeights:
    """One importance weight per validation image (mean 1), and how much the weighted score is worth."""
    weights: np.ndarray
    clipped: int  #: weights cut to :data:`CLIP`
    auc: float  #: the domain classifier's ROC AUC on its own held-out pool and test images
    labels: np.ndarray  #: the validation images' classes
    classes: list[str]

    @property
    def ess(self) -> float:
        """Effective sample size, (Σw)² / Σw²: the number of equally weighted images the weighted score is worth."""
        w = self.weights
        return float(w.sum() ** 2 / (w**2).sum())

    def table(self) -> pd.DataFrame:
        """Per class: validation images, their share plain and weighted, and their mean weight; then all."""
        n = len(self.weights)
        rows = [{"class": c, "validation images": int((self.labels == k).sum()),
                 "share %": 100 * float((self.labels == k).mean()),
                 "weighted share %": 100 * float(self.weights[self.labels == k].sum() / self.weights.sum()),
                 "mean weight": float(self.weights[self.labels == k].mean())} for k, c in enumerate(self.classes)]
        rows.append({"class": "all", "validation images": n, "share %": 100.0, "weighted share %": 100.0,
                     "mean weight": float(self.weights.mean())})
        return pd.DataFrame(rows).set_index("class").round(2)

    def summary(self) -> str:
        """One line: the effective sample size, the clipped weights and the classifier's AUC."""
        n = len(self.weights)
        return (f"importance weights of {n} validation images: effective sample size {self.ess:.0f} "
                f"({self.ess / n:.0%} of them); {self.clipped} weight(s) clipped at {CLIP:g} × the mean; largest "
                f"{self.weights.max():.2f}; domain classifier AUC on its held-out images {self.auc:.2f}")


def _grouped_holdout(ids: list[str], share: float, rng: np.random.Generator) -> np.ndarray:
    """A mask of about ``share`` of the images, whole patients at a time."""
    patients = np.array([patient_of(i) for i in ids])
    unique = np.unique(patients)
    held = set(rng.choice(unique, max(1, round(share * len(unique))), replace=False))
    return np.array([p in held for p in patients])


def domain_weights(data: DataSplits, *, epochs: int = 15, seed: int = 0, clip: float = CLIP,
                   device: str | torch.device = "auto") -> ShiftWeights:
    """Importance weights p(test | x) / p(pool | x) of the validation images, from a LeNet-5."""
    rng = np.random.default_rng(seed)
    pool, test = data.train, data.test
    hold_pool, hold_test = _grouped_holdout(pool.ids, 0.2, rng), _grouped_holdout(test.ids, 0.2, rng)

    def side(mask_pool: np.ndarray, mask_test: np.ndarray) -> Split:
        x = torch.cat([pool.x[torch.as_tensor(mask_pool)], test.x[torch.as_tensor(mask_test)]])
        y = torch.cat([torch.zeros(int(mask_pool.sum()), dtype=torch.int64), torch.ones(int(mask_test.sum()), dtype=torch.int64)])
        return Split(x, y, [str(i) for i in range(len(y))])

    train, held = side(~hold_pool, ~hold_test), side(hold_pool, hold_test)
    pixels = train.x.to(torch.float64) / 255
    splits = DataSplits("pool vs test", ["pool", "test"], train, held, Split(data.val.x, data.val.y, data.val.ids),
                        tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist()), source="")
    model = build_model("lenet5", seed=seed, in_channels=data.channels, image_size=data.image_size, num_classes=2,
                        **PROBE_MODEL)
    fitted = fit(model, splits, TrainConfig(**{**PROBE_TRAINING, "hflip": False}, epochs=epochs, seed=seed,
                                            class_weights=True), device=device)
    dev = torch.device(fitted.device)

    def odds(split: Split) -> np.ndarray:
        logits = predict_logits(fitted.model, DeviceSplit(split, splits.mean, splits.std, dev).x).cpu()
        return torch.exp(logits[:, 1] - logits[:, 0]).numpy().astype(np.float64)

    held_odds = odds(held)
    auc = score_auc(held_odds[held.y.numpy() == 0], held_odds[held.y.numpy() == 1])
    w = odds(splits.test)  # the validation images, never in the classifier's training
    w = w / w.mean()
    clipped = int((w > clip).sum())
    w = np.minimum(w, clip)
    return ShiftWeights(w / w.mean(), clipped, auc, data.val.y.numpy(), list(data.classes))


def integer_counts(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainders get the rest)."""
    exact = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(exact).astype(int)
    rest = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def weighted_validation(data: DataSplits, weights: ShiftWeights, per_image: int = TOTAL_PER_IMAGE) -> DataSplits:
    """``data`` with validation images counted by their weights (``Split.weights``)."""
    if len(weights.weights) != len(data.val):
        raise ValueError(f"{len(weights.weights)} weights for {len(data.val)} validation images")
    counts = integer_counts(weights.weights, per_image * len(data.val))
    kept = np.flatnonzero(counts)
    note = (f"{data.note} " if data.note else "") + (
        f"Validation importance-weighted: {len(kept)} of its {len(data.val)} images, counted {int(counts.sum()):,} "
        f"times in all (effective sample size {weights.ess:.0f}).")
    val = replace(data.val.take(kept), weights=torch.as_tensor(counts[kept], dtype=torch.int64))
    return replace(data, val=val, note=note)


def weighted_accuracy(correct: np.ndarray, weights: np.ndarray) -> float:
    """Σ w·correct / Σ w: the importance-weighted accuracy of per-image 0/1 outcomes."""
    return float(np.sum(weights * correct) / np.sum(weights))


class ZoomViews(TrainHook):
    """A hook zooming, stretching and moving each training image, drawn per image and step."""
    def __init__(self, scale: tuple[float, float] = (0.8, 1.25), aspect: tuple[float, float] = (0.85, 1.18),
                 move: float = 0.08) -> None:
        if not (0 < scale[0] <= scale[1] and 0 < aspect[0] <= aspect[1] and 0 <= move < 0.5):
            raise ValueError(f"need 0 < low <= high for scale and aspect and 0 <= move < 0.5, got {scale}, {aspect}, {move}")
        self.scale, self.aspect, self.move = scale, aspect, move

    def settings(self) -> dict[str, object]:
        return {"zoom_scale": list(self.scale), "zoom_aspect": list(self.aspect), "zoom_move": self.move}

    def _draw(self, n: int, bounds: tuple[float, float], device: torch.device) -> torch.Tensor:
        lo, hi = math.log(bounds[0]), math.log(bounds[1])
        return torch.exp(lo + (hi - lo) * torch.rand(n, device=device, generator=self.gen))

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, device = len(xb), xb.device
        s, a = self._draw(n, self.scale, device), self._draw(n, self.aspect, device)
        t = (2 * torch.rand(n, 2, device=device, generator=self.gen) - 1) * 2 * self.move
        theta = torch.zeros(n, 2, 3, device=device, dtype=xb.dtype)
        theta[:, 0, 0], theta[:, 1, 1] = 1 / (s * a.sqrt()), a.sqrt() / s  # sample a smaller window: zoom in
        theta[:, :, 2] = t
        grid = F.affine_grid(theta, list(xb.shape), align_corners=False)
        return F.grid_sample(xb, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def xray_targets(baseline: list, tuned: list, accuracy: float = 80.0, normal_recall: float = 65.0) -> list:
    """The X-ray targets as decisions on the runs' test evaluations: accuracy, normal recall, above the baseline."""
    acc = target("X-rays: tuned accuracy (final half of test)", [100 * r.test.accuracy for r in tuned], accuracy)
    normal = target("X-rays: tuned normal recall (final half)", [100 * float(r.test.per_class.iloc[0]) for r in tuned],
                    normal_recall)
    above = beats("X-rays: tuned − baseline accuracy (final half)", [100 * r.test.accuracy for r in baseline],
                  [100 * r.test.accuracy for r in tuned])
    return [acc, normal, above]
