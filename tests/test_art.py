"""The character-art set (helpers.webcam.art) and how a photo is framed for the model (pad or crop)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.sources import CorruptDataError, DataNotFoundError
from helpers.webcam import art
from helpers.webcam.camera import on_white, read_image
from helpers.webcam.inference import fit_square, pad_square, to_model_pixels


@pytest.fixture()
def art_copy(mirror: Path, tmp_path: Path) -> Path:
    """A copy of the mirror's art set with its first two characters only (and their manifest rows)."""
    src, dst = mirror / "simpsons-art", tmp_path / "mirror" / "simpsons-art"
    dst.mkdir(parents=True)
    with open(src / "manifest.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["class"] in ("bart_simpson", "charles_montgomery_burns")]
        fields = reader.fieldnames
    with open(dst / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        (dst / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / r["file"], dst / r["file"])
    return dst.parent


def test_the_art_set_loads_checked_and_on_white(art_copy: Path, tmp_path: Path) -> None:
    (art_copy / "simpsons-art" / "bart_simpson" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    images = art.load_art(tmp_path / "data", art_copy)
    assert len(images) == 26 and {im.split for im in images} == {"dev", "test"}
    assert all(im.frame.ndim == 3 and im.frame.shape[2] == 3 and im.frame.dtype == np.uint8 for im in images)
    assert (tmp_path / "data" / "simpsons-art" / "manifest.csv").exists()  # copied from the mirror like every set


def test_the_art_set_refuses_extra_altered_or_missing_files(art_copy: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    art.load_art(data, art_copy)
    folder = data / "simpsons-art"
    extra = folder / "bart_simpson" / "not_listed.png"
    cv2.imwrite(str(extra), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CorruptDataError, match="not_listed.png"):
        art.load_art(data, art_copy)
    extra.unlink()
    victim = next((folder / "bart_simpson").iterdir())
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(CorruptDataError, match="sha256"):
        art.load_art(data, art_copy)
    victim.unlink()
    with pytest.raises(DataNotFoundError, match="missing"):
        art.load_art(data, art_copy)
    assert art.try_load_art(data_root=tmp_path / "empty", mirror=tmp_path / "none") is None
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("SKIPPED simpsons-art:") and "DATA_MIRROR" in said[0], said


def test_transparency_is_put_on_white_and_gray_becomes_colour(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 200  # red, fully transparent except one pixel
    rgba[0, 0, 3] = 255
    assert on_white(rgba)[1, 1].tolist() == [255, 255, 255] and on_white(rgba)[0, 0].tolist() == [0, 0, 200]
    path = tmp_path / "t.png"
    cv2.imwrite(str(path), rgba)
    assert read_image(path)[2, 2].tolist() == [255, 255, 255]  # cv2.imread would have given black
    assert on_white(np.full((3, 3), 7, np.uint8)).shape == (3, 3, 3)


def test_pad_keeps_the_whole_picture_and_crop_cuts_a_tall_one() -> None:
    tall = np.zeros((60, 20, 3), np.uint8)
    tall[:5] = 255  # a white head at the top
    padded, cropped = fit_square(tall, "pad"), fit_square(tall, "crop")
    assert padded.shape == (60, 60, 3) and cropped.shape == (20, 20, 3)
    assert padded[:, :20].min() == 255 and padded[:5, 20:40].min() == 255  # white sides, the head kept
    assert cropped[:5].max() == 0  # the centred square cut the head off
    assert pad_square(np.zeros((2, 6), np.uint8)).shape == (6, 6)
    assert to_model_pixels(tall, 28, 3, "pad").shape == (3, 28, 28)
    with pytest.raises(ValueError, match="fit"):
        fit_square(tall, "stretch")


def test_art_table_counts_what_a_user_sees() -> None:
    import pandas as pd

    scores = pd.DataFrame({"split": ["dev"] * 4, "file": list("abcd"), "right": [True, True, False, False],
                           "sure": [True, False, True, False]})
    row = art.art_table(scores).iloc[0]
    assert row["images"] == 4 and row["top-1 %"] == 50 and row["right and sure %"] == 25
    assert row["wrong and sure %"] == 25 and row["not sure %"] == 50 and row["top-1 95 % CI"] == "15–85"
    twice = art.art_table(pd.concat([scores, scores])).iloc[0]  # a second seed (or card) of the same drawings
    assert twice["images"] == 8 and twice["drawings"] == 4 and twice["top-1 95 % CI"] == "15–85"  # no narrower


def test_art_targets_are_means_over_seeds_plain_and_on_cards_with_a_wilson_interval() -> None:
    import pandas as pd

    from helpers.stats import binomial_interval

    def seed(right: int, sure_wrong: int, n: int = 20, on: str = "plain", copies: int = 1) -> pd.DataFrame:
        r = [True] * right + [False] * (n - right)
        s = [True] * right + [True] * sure_wrong + [False] * (n - right - sure_wrong)
        rows = pd.DataFrame({"split": "test", "file": [f"f{i}" for i in range(n)], "right": r, "sure": s, "on": on})
        return pd.concat([rows] * copies + [pd.DataFrame({"split": ["dev"], "file": ["d"], "right": [False],
                                                          "sure": [True], "on": [on]})])

    def both(right: int, wrong: int, card_right: int, card_wrong: int) -> pd.DataFrame:
        return pd.concat([seed(right, wrong), seed(card_right, card_wrong, on="card", copies=3)])

    top1, top1_card, wrong, wrong_card = art.art_targets([both(18, 1, 16, 0), both(17, 2, 14, 1)])  # dev ignored
    assert top1.value == 87.5 and top1.outcome == "met" and "plain" in top1.name  # ≥ 85 %
    assert top1_card.value == 75 and top1_card.outcome == "met" and "coloured cards" in top1_card.name  # ≥ 75 %
    assert (top1.low, top1.high) == pytest.approx(tuple(100 * x for x in binomial_interval(17.5, 20)))
    assert (top1_card.low, top1_card.high) == pytest.approx(tuple(100 * x for x in binomial_interval(15, 20)))
    assert wrong.value == 7.5 and wrong.outcome == "missed" and "≤ 5 %" in wrong.rule
    assert wrong_card.value == 2.5 and wrong_card.outcome == "met" and "3 card colours" in wrong_card.rule
    with pytest.raises(ValueError, match="same art test images"):
        art.art_targets([both(15, 0, 15, 0), pd.concat([seed(5, 0, n=10), seed(15, 0, on="card")])])


def test_art_on_cards_keeps_the_character_and_colours_its_background() -> None:
    drawing = np.full((100, 60, 3), 255, np.uint8)
    drawing[20:80, 15:45] = (0, 200, 255)  # a yellow "character" on white
    image = art.ArtImage("bart/x.png", "bart_simpson", "test", "g", "official-art", drawing)
    cards = art.on_cards([image], ("red-pink", "dark blue"))
    assert [c.background for c in cards] == ["red-pink", "dark blue"] and image.background == "plain"
    for c in cards:
        h, w = c.frame.shape[:2]
        assert h > 100 and w > 60  # a card margin around the drawing
        corner = c.frame[2, 2].astype(int)
        assert np.abs(corner - art.ART_CARDS[c.background]).max() < 80  # the card's colour, under its light
        centre = c.frame[h // 2, w // 2].astype(int)
        assert centre[2] > 150 and centre[0] < 60  # the character stays yellow (BGR)
    assert np.array_equal(cards[0].frame, art.on_card(image, "red-pink").frame)  # seeded per image and colour
    assert len(art.ART_CARDS) >= 8


def test_print_views_are_seeded_put_scenes_on_white_and_keep_the_shape(mirror: Path) -> None:
    from helpers import data
    from helpers.webcam import printlike

    images = data.load_simpsons_mnist("rgb").subset(n_train=40).train.x.numpy()
    views = printlike.print_views(images, 28, 3, copies=2)
    assert views.shape == (2, 40, 3, 28, 28) and str(views.dtype) == "torch.uint8"
    assert np.array_equal(views.numpy(), printlike.print_views(images, 28, 3, copies=2).numpy())  # seeded
    assert not np.array_equal(views[0].numpy(), views[1].numpy())  # each copy draws again
    white = lambda x: (np.asarray(x) >= 250).all(axis=-3).mean()  # noqa: E731  share of white pixels
    assert white(views) > 0.2 > white(images)  # scenes on white card, as in a print
    through = printlike.print_views(images, 28, 3, copies=2, camera=("defocus",))  # then seen through a camera
    assert not np.array_equal(through.numpy(), views.numpy()) and white(through) < white(views)
    scene = np.zeros((112, 112, 3), np.uint8) + 90
    scene[30:80, 40:70] = (0, 200, 255)  # a yellow "character" on a flat wall
    flat = printlike.flat_background(scene, np.random.default_rng(0))
    assert (flat[0, 0] == 255).all() and (flat[50, 55] == scene[50, 55]).all()
    cards = printlike.print_views(images, 28, 3, copies=2, cards=True)  # the same scenes on cards of any colour
    assert np.array_equal(cards.numpy(), printlike.print_views(images, 28, 3, copies=2, cards=True).numpy())
    assert white(cards) < white(views) / 2  # far fewer white pixels: most cards are coloured, textured or a desk
    hues = [np.median(c.reshape(3, -1), axis=1) for c in cards[0].numpy()]
    assert np.std(hues, axis=0).mean() > 20  # backgrounds of many colours


def test_the_demo_seed_is_the_one_least_often_wrong_and_sure_on_dev() -> None:
    import pandas as pd

    def rows(checkpoint: str, wrong_plain: int, wrong_card: int, right: int, split: str = "dev") -> pd.DataFrame:
        out = []
        for on, wrong in (("plain", wrong_plain), ("card", wrong_card)):
            for i in range(10):
                out.append({"checkpoint": checkpoint, "framing": "pad", "split": split, "on": on, "file": f"f{i}",
                            "right": i < right, "sure": i < right or i >= 10 - wrong})
        return pd.DataFrame(out)

    scores = pd.concat([rows("a.pt", 1, 1, 6), rows("b.pt", 0, 1, 5), rows("c.pt", 0, 1, 7),
                        rows("a.pt", 0, 0, 10, split="test")])  # test rows must not count
    study = art.ArtStudy(scores, "pad", "robust")
    best, why = art.seed_on_dev(study, ["a.pt", "b.pt", "c.pt"])
    assert best.name == "c.pt"  # b and c tie on wrong and sure (5 %), c is more often right and sure
    assert "a 10.0 % wrong and sure" in why and "art dev half" in why
