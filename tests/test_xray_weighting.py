"""Importance-weighted validation and zoom views (helpers.xray.weighting), on small synthetic tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.splits import DataSplits, Split
from helpers.xray import weighting


def synthetic(n_train: int = 200, n_val: int = 60, n_test: int = 80, size: int = 16, seed: int = 0) -> DataSplits:
    """Two classes of noise images; the test split is brighter than the pool (a covariate shift), and half of
    the validation images are bright like the test ones. Ids name a patient per image."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int, bright: torch.Tensor, name: str) -> Split:
        x = (torch.rand(n, 1, size, size, generator=g) * 120 + bright.view(-1, 1, 1, 1) * 100).to(torch.uint8)
        y = torch.randint(0, 2, (n,), generator=g)
        return Split(x, y, [f"{name}/person{i}_virus_{i}.jpeg" for i in range(n)])

    val_bright = torch.zeros(n_val)
    val_bright[: n_val // 2] = 1
    return DataSplits("synthetic", ["a", "b"], split(n_train, torch.zeros(n_train), "train"),
                      split(n_val, val_bright, "val"), split(n_test, torch.ones(n_test), "test"),
                      (0.3,), (0.2,), source="")


def test_integer_counts_are_proportional_and_sum_to_the_total() -> None:
    counts = weighting.integer_counts(np.array([1.0, 2.0, 3.0, 0.5]), 13)
    assert counts.sum() == 13 and list(counts) == [2, 4, 6, 1]  # 13 × (1, 2, 3, 0.5) / 6.5, rounded


def test_accuracy_on_the_weighted_split_is_the_weighted_accuracy() -> None:
    data = synthetic()
    rng = np.random.default_rng(1)
    w = rng.gamma(1.0, 1.0, len(data.val))
    sw = weighting.ShiftWeights(w / w.mean(), 0, 0.5, data.val.y.numpy(), data.classes)
    weighted = weighting.weighted_validation(data, sw, per_image=50)
    correct = rng.random(len(data.val)) < 0.7  # a fixed per-image outcome
    index = [int(i.split("person")[1].split("_")[0]) for i in weighted.val.ids]
    counts = weighted.val.weights.numpy()
    assert counts.sum() == 50 * len(data.val) and counts.min() >= 1 and len(weighted.val) <= len(data.val)
    assert abs(np.average(correct[index], weights=counts) - weighting.weighted_accuracy(correct, sw.weights)) < 0.01
    assert "importance-weighted" in weighted.note and len(weighted.test) == len(data.test)
    assert weighted.fingerprint() != data.subset(n_val=len(weighted.val)).fingerprint()  # the counts are part of it


def test_effective_sample_size_falls_when_a_few_weights_dominate() -> None:
    labels = np.zeros(100, dtype=int)
    even = weighting.ShiftWeights(np.ones(100), 0, 0.5, labels, ["a"])
    skewed = weighting.ShiftWeights(np.r_[np.full(5, 10.0), np.full(95, 0.5)], 0, 0.5, labels, ["a"])
    assert even.ess == pytest.approx(100) and skewed.ess < 30


def test_domain_weights_favour_validation_images_that_look_like_the_test_split() -> None:
    data = synthetic()
    sw = weighting.domain_weights(data, epochs=3, device="cpu")
    bright = np.arange(len(data.val)) < len(data.val) // 2
    assert sw.auc > 0.9  # pool and test are easy to tell apart here
    assert sw.weights[bright].mean() > 3 * sw.weights[~bright].mean()
    assert sw.weights.mean() == pytest.approx(1.0) and sw.weights.max() <= weighting.CLIP + 1e-9
    assert set(sw.table().index) == {"a", "b", "all"} and "effective sample size" in sw.summary()


def test_a_zoom_view_without_zoom_is_the_identity_and_a_zoom_in_magnifies() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0  # an 8-px square in the middle
    same = weighting.ZoomViews(scale=(1, 1), aspect=(1, 1), move=0)
    same.gen = torch.Generator().manual_seed(0)
    assert torch.allclose(same.batch(x, torch.arange(1)), x, atol=1e-5)
    zoom = weighting.ZoomViews(scale=(1.25, 1.25), aspect=(1, 1), move=0)
    zoom.gen = torch.Generator().manual_seed(0)
    assert (zoom.batch(x, torch.arange(1)) > 0.5).sum() > (x > 0.5).sum() * 1.3
    with pytest.raises(ValueError):
        weighting.ZoomViews(scale=(1.2, 0.8))
    assert zoom.settings()["zoom_scale"] == [1.25, 1.25]


def test_xray_targets_decide_accuracy_recall_and_the_paired_comparison() -> None:
    import pandas as pd

    from helpers.training import Evaluation

    def run(acc: float, normal: float):
        ev = Evaluation(accuracy=acc, loss=0.0, per_class=pd.Series([normal, 0.9, 0.9], index=["normal", "bacterial", "viral"]),
                        confusion=np.zeros((3, 3)), predictions=np.zeros(1), probabilities=np.zeros((1, 3)),
                        classes=["normal", "bacterial", "viral"])
        return type("R", (), {"test": ev})()

    acc, normal, above = weighting.xray_targets([run(0.70, 0.4), run(0.71, 0.4), run(0.72, 0.4)],
                                                [run(0.80, 0.65), run(0.81, 0.62), run(0.82, 0.70)])
    assert (acc.outcome, normal.outcome, above.outcome) == ("met", "met", "met")
    assert above.value == pytest.approx(10.0)
    assert above.interval_text().endswith("points") and " to " in above.interval_text()  # a difference, signed
    assert acc.interval_text().endswith("%")
