"""The aspect-ratio shortcut helpers: stretched views and source aspect ratios."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import manifest_rows, small_xray_tree
from PIL import Image

from helpers.data import load_simpsons_mnist
from helpers.splits import DataSplits
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


def test_source_aspect_ratios_give_none_for_square_files_on_real_xrays(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, per_label=25)
    rows = manifest_rows(folder)
    ids = [f"{r.split}/{r.folder}/{r.file}" for r in rows.itertuples()]
    ratios = aspect.source_aspect_ratios(folder, ids)
    sizes = []
    for i in ids:
        with Image.open(folder / i) as im:
            sizes.append(im.size)
    assert ratios == [w / h if w != h else None for w, h in sizes]  # read from the file headers
    square = (rows["source_kind"] == "reencoded-224").to_numpy()
    assert square.any() and not square.all()
    assert all(r is None for r, sq in zip(ratios, square) if sq)  # a re-encoded square copy carries no ratio
    assert any(r is not None for r in ratios)
