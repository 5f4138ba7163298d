"""The aspect-ratio shortcut helpers: stretched views, source aspect ratios, stretch sensitivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import manifest_rows, small_xray_tree
from PIL import Image

from helpers import data
from helpers.data import load_simpsons_mnist
from helpers.models import build_model
from helpers.paths import Outputs
from helpers.runs import train_and_evaluate
from helpers.splits import DataSplits
from helpers.training import TrainConfig, ViewSwap, evaluate, fit
from helpers.xray import aspect


@pytest.fixture(scope="module")
def tiny() -> DataSplits:
    """200 train / 100 val real Simpsons-MNIST (rgb) images."""
    return load_simpsons_mnist("rgb").subset(n_train=200, n_val=100, n_test=50)


def _band(n: int = 4, size: int = 32, width: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, :, (size - width) // 2:(size + width) // 2] = 200  # a full-height band, centred
    return x


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_stretch_changes_the_width_only_by_its_factor(factor: float) -> None:
    x = _band()
    out = aspect.stretch(x, factor)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    width = out[0, 0, 16].float().sum().item() / 200
    assert width == pytest.approx(16 * factor, abs=0.6)
    assert torch.equal(out, out[:, :, :1, :].expand_as(out))  # every row alike: heights untouched
    assert torch.equal(aspect.stretch(x, 1.0), x)


def test_squashing_fills_the_sides_by_reflection_not_black_bars() -> None:
    grey = torch.full((2, 1, 16, 16), 90, dtype=torch.uint8)
    assert torch.equal(aspect.stretch(grey, 0.8), grey)  # zero padding would darken the edge columns
    with pytest.raises(ValueError, match="positive"):
        aspect.stretch(grey, 0.0)


def test_stretch_views_follow_their_images_through_a_slice(tiny) -> None:
    with_views = aspect.with_stretch_views(tiny, factors=(0.8, 1.25))
    views = with_views.train.views
    assert views.shape == (2, *tiny.train.x.shape)
    assert torch.equal(views[1], aspect.stretch(tiny.train.x, 1.25))
    sliced = with_views.subset(n_train=20)
    pos = [tiny.train.ids.index(i) for i in sliced.train.ids]
    assert torch.equal(sliced.train.views[0], views[0][pos])


def test_source_aspects_counts_square_files_apart_on_real_xrays(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, per_label=25)
    xr = data.load_chest_xray(data_root=tmp_path, mirror=mirror, size=32)
    table = aspect.source_aspects(xr, folder)
    rows = manifest_rows(folder)
    rows = rows[rows["split"] != "test"]
    assert table["images"].sum() == len(rows) == len(xr.train) + len(xr.val)
    squares = rows[rows["source_kind"] == "reencoded-224"].groupby("label3").size()
    for cls in table.index:
        assert table.loc[cls, "square files"] == squares.get(cls, 0)
        assert table.loc[cls, "with aspect"] == table.loc[cls, "images"] - squares.get(cls, 0)
    one = rows[rows["source_kind"] == "original"].iloc[0]
    with Image.open(folder / one["split"] / one["folder"] / one["file"]) as im:
        assert im.size[0] != im.size[1]  # an original keeps its own aspect ratio


def test_stretch_recall_row_at_factor_one_is_plain_evaluation(tiny) -> None:
    model = build_model(seed=0, in_channels=tiny.channels, num_classes=tiny.num_classes, image_size=tiny.image_size)
    model = fit(model, tiny, TrainConfig(optimizer="adam", lr=3e-3, epochs=2), device="cpu").model
    table = aspect.stretch_recall(model, tiny, factors=(0.8, 1.0), device="cpu")
    assert list(table.index) == [0.8, 1.0]
    plain = evaluate(model, tiny, "val", device="cpu")
    assert table.loc[1.0, "accuracy %"] == pytest.approx(round(100 * plain.accuracy, 1))
    assert table.loc[1.0, f"recall {tiny.classes[0]} %"] == pytest.approx(round(100 * float(plain.per_class.iloc[0]), 1))
    assert not np.allclose(table.loc[0.8].to_numpy(), table.loc[1.0].to_numpy())  # the stretch reaches the model


def test_without_views_retrains_the_same_run_with_views_off(tiny, tmp_path: Path) -> None:
    data_v = aspect.with_stretch_views(tiny, factors=(0.8, 1.25))
    outputs = Outputs(tmp_path)
    run = train_and_evaluate(data_v, TrainConfig(optimizer="adam", lr=3e-3, epochs=1, seed=3),
                             name="r", experiment="e", model_config={"dropout": 0.1}, outputs=outputs,
                             device="cpu", evaluate_test=False, hooks=(ViewSwap(0.5),))
    ctrl = aspect.without_views(run, data_v, experiment="e", outputs=outputs, device="cpu")
    assert run.settings()["view_prob"] == 0.5 and "view_prob" not in ctrl.settings()
    assert ctrl.train_config == run.train_config and ctrl.hooks == ()
    assert ctrl.model_config == run.model_config and ctrl.name == "r-no-views"
    assert ctrl.test is not None  # the ablation is reported on test
    table = aspect.compare_stretch({"views": run.model, "no views": ctrl.model}, data_v, factors=(0.8, 1.0), device="cpu")
    assert list(table.index.get_level_values("model").unique()) == ["views", "no views"] and len(table) == 4
    summary = aspect.stretch_summary(table)
    assert summary.count("\n") == 1 and "views: balanced accuracy" in summary and "over width factors 0.8–1" in summary
