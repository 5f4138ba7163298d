"""The X-ray target-domain split and the three ways of choosing (helpers.xray.target)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import data
from helpers.data import patient_of
from helpers.stats import binomial_interval
from helpers.training import Evaluation
from helpers.xray import target


@pytest.fixture(scope="module")
def xray() -> data.DataSplits:
    return data.load_chest_xray(size=28)


def test_the_halves_split_the_real_test_split_by_patient_and_class(xray: data.DataSplits) -> None:
    dev, final = target.split_test(xray)
    ids_dev, ids_final = set(dev.test.ids), set(final.test.ids)
    assert not ids_dev & ids_final and ids_dev | ids_final == set(xray.test.ids)
    assert not {patient_of(i) for i in ids_dev} & {patient_of(i) for i in ids_final}  # no patient on both sides
    table = target.split_table(dev, final)
    for cls in xray.classes:  # stratified: each class close to half and half
        a, b = table.loc[cls, "dev images"], table.loc[cls, "final images"]
        assert abs(a - b) <= 0.1 * (a + b), (cls, a, b)
    assert dev.train is xray.train and final.val is xray.val  # only the test split is cut
    again, _ = target.split_test(xray)
    assert again.test.ids == dev.test.ids  # a fixed seed: the same halves every run
    other, _ = target.split_test(xray, seed=1)
    assert other.test.ids != dev.test.ids


def test_each_way_of_choosing_ranks_by_its_own_score() -> None:
    scores = pd.DataFrame({"pool val acc %": [80.0, 82.0, 81.0], "weighted val acc %": [79.0, 78.0, 83.0],
                           "dev bal acc %": [70.0, 65.0, 70.0]}, index=["a", "b", "c"])
    assert target.choose(scores) == {"pool validation": "b", "weighted validation": "c", "dev half": "a"}  # tie: first
    assert target.choose(scores, weighted="b")["weighted validation"] == "b"  # the study's own pick, when given


def _run(acc: float, normal: float, n: int = 100) -> object:
    per_class = pd.Series([normal, 0.9, 0.8], index=["normal", "bacterial", "viral"])
    confusion = np.array([[40, 0, 0], [0, 30, 0], [0, 0, 30]])
    ev = Evaluation(accuracy=acc, loss=0.0, per_class=per_class, confusion=confusion, predictions=np.zeros(n),
                    probabilities=np.zeros((n, 3)), classes=list(per_class.index))
    return type("R", (), {"test": ev})()


def test_the_final_table_gives_wilson_intervals_and_the_paired_difference() -> None:
    tuned = [_run(0.80, 0.70), _run(0.82, 0.72), _run(0.84, 0.74)]
    base = [_run(0.70, 0.40), _run(0.71, 0.41), _run(0.72, 0.42)]
    table = target.final_table({"dev half": ("t", tuned, "b", base)}, n_images=100)
    row = table.loc["dev half"]
    assert row["tuned acc %"] == pytest.approx(82.0) and row["normal recall %"] == pytest.approx(72.0)
    assert row["acc 95 % (Wilson)"] == "73.3 to 88.3"  # 82 of 100 images
    lo, hi = binomial_interval(29, 40)  # 72 % of the 40 normal images (row 0 of the confusion matrix)
    assert row["recall 95 % (Wilson)"] == f"{100 * lo:.1f} to {100 * hi:.1f}"
    assert row["tuned − baseline"].startswith("+11.00 points")
