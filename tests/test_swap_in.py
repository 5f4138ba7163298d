"""Swapping half of one class's test patients into training, on real chest X-rays: what moves, what stays."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import small_xray_tree

from helpers import data
from helpers.paths import Outputs
from helpers.runs import train_and_evaluate
from helpers.splits import DataSplits
from helpers.training import TrainConfig
from helpers.xray import aspect, swap_in


@pytest.fixture(scope="module")
def xr(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> DataSplits:
    """40 real X-rays per class from each of train / val / test (val has no viral image), 32 px."""
    root = tmp_path_factory.mktemp("xray-swap")
    small_xray_tree(mirror, root, per_label=40)
    return data.load_chest_xray(data_root=root, mirror=mirror, size=32)


def test_swap_moves_whole_test_patients_into_training_in_place_of_as_many_pool_images(xr) -> None:
    pool, swapped = swap_in.swap_in(xr, "normal", share=0.5, seed=0)
    label = xr.classes.index("normal")
    moved = [i for i in swapped.train.ids if i not in set(xr.train.ids)]
    assert moved and set(moved) <= set(xr.test.ids) and not set(moved) & set(swapped.test.ids)
    left = [i for i, y in zip(swapped.test.ids, swapped.test.y.tolist()) if y == label]
    assert {data.patient_of(i) for i in moved}.isdisjoint(data.patient_of(i) for i in left)  # whole patients
    assert abs(len(moved) - len(left)) <= 0.5 * (len(moved) + len(left))  # about half of the class's test images
    assert len(swapped.test) == len(xr.test) - len(moved)  # only that class's test images moved
    assert pool.train.ids == xr.train.ids and torch.equal(pool.train.x, xr.train.x)
    dropped = set(pool.train.ids) - set(swapped.train.ids)
    assert len(dropped) == len(moved) and set(swapped.train.ids) == set(pool.train.ids) - dropped | set(moved)
    assert all(y == label for i, y in zip(xr.train.ids, xr.train.y.tolist()) if i in dropped)
    assert torch.equal(torch.bincount(pool.train.y), torch.bincount(swapped.train.y))  # same size, same class counts
    for a, b in ((pool.val, xr.val), (pool.test, swapped.test)):
        assert a.ids == b.ids and torch.equal(a.x, b.x)
    assert pool.mean == swapped.mean == xr.mean
    again = swap_in.swap_in(xr, "normal", share=0.5, seed=0)[1]
    assert again.train.ids == swapped.train.ids  # seeded
    with pytest.raises(ValueError, match="unknown class"):
        swap_in.swap_in(xr, "covid")
    with pytest.raises(ValueError, match="without training views"):
        swap_in.swap_in(aspect.with_stretch_views(xr, factors=(0.8,)), "normal")


def test_train_arms_trains_one_configuration_on_both_arms_over_the_same_seeds(xr, tmp_path: Path) -> None:
    arms = swap_in.swap_in(xr, "normal")
    run = SimpleNamespace(train_config=TrainConfig(optimizer="adam", lr=3e-3, epochs=1, class_weights=True, seed=9),
                          model_config={"dropout": 0.1}, hooks=())
    runs = swap_in.train_arms(arms, run, (0, 1), experiment="swap", outputs=Outputs(tmp_path), device="cpu")
    assert list(runs) == list(swap_in.ARMS)
    for name, arm in zip(swap_in.ARMS, arms):
        assert [r.train_config.seed for r in runs[name]] == [0, 1]
        assert all(r.train_config.class_weights and r.model_config["dropout"] == 0.1 for r in runs[name])
        assert all(int(r.test.confusion.sum()) == len(arm.test) for r in runs[name])  # scored on the images left
    table = swap_in.swap_table(runs)
    assert list(table.index) == [(a, f"swap-{a.replace(' ', '-')}-seed{s}") for a in swap_in.ARMS for s in (0, 1)]
    assert (table["images"] == [len(arms[0].test)] * 4).all()
    recall = table["recall normal %"]
    verdict = swap_in.swap_verdict(runs, "normal")
    # the reported models were trained on the pool-only arm's very training split: re-scored, they are its runs
    reported = [train_and_evaluate(xr, replace(run.train_config, seed=s), name=f"tuned-seed{s}", experiment="e",
                                   model_config=runs["pool only"][0].model_config, outputs=Outputs(tmp_path),
                                   device="cpu") for s in (0, 1)]
    run.model_config = reported[0].model_config
    reused = swap_in.train_arms(arms, run, (0, 1), experiment="swap", outputs=Outputs(tmp_path), device="cpu",
                                pool_runs=reported)
    assert swap_in.swap_table(reused).loc["pool only"].to_numpy().tolist() == table.loc["pool only"].to_numpy().tolist()
    with pytest.raises(ValueError, match="not trained with the given settings"):
        swap_in.train_arms(arms, run, (1, 0), experiment="swap", outputs=Outputs(tmp_path), device="cpu",
                           pool_runs=reported)
    assert f"Normal recall {recall.loc['pool only'].mean():.1f} % pool only, {recall.loc['swapped'].mean():.1f} % swapped" in verdict


def _runs(pool: list[float], swapped: list[float]) -> dict[str, list[SimpleNamespace]]:
    def run(seed: int, recall: float) -> SimpleNamespace:
        per_class = pd.Series({"normal": recall / 100, "bacterial": 0.9})
        return SimpleNamespace(train_config=SimpleNamespace(seed=seed),
                               test=SimpleNamespace(per_class=per_class, balanced_accuracy=float(per_class.mean())))
    return {"pool only": [run(s, v) for s, v in enumerate(pool)], "swapped": [run(s, v) for s, v in enumerate(swapped)]}


def test_swap_verdict_follows_its_stated_rule() -> None:
    text = swap_in.swap_verdict(_runs([30, 35, 32], [60, 66, 70]), "normal")
    assert "**Verdict: supported.**" in text and "swapped − pool only: +33.00 points" in text
    assert text.startswith("**Claim:** training on test-like normal images raises the normal recall")
    assert "test-like normal X-rays raises" in swap_in.swap_verdict(_runs([30, 35, 32], [60, 66, 70]), "normal",
                                                                    noun="X-rays")
    assert "Balanced accuracy on the same images: 61.2 % and 77.7 %" in text  # (recall + 90) / 2, averaged
    assert "**Verdict: refuted.**" in swap_in.swap_verdict(_runs([60, 66, 70], [30, 35, 32]), "normal")
    text = swap_in.swap_verdict(_runs([30, 50, 40], [45, 35, 42]), "normal")  # +15, −15, +2: no clear sign
    assert "**Verdict: inconclusive.**" in text and "swapped − pool only: +0.67 points" in text
    runs = _runs([30, 35], [60, 66])
    runs["swapped"].reverse()
    with pytest.raises(ValueError, match="same seeds"):
        swap_in.swap_verdict(runs, "normal")
