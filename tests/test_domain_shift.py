"""The domain-shift probe on real chest X-rays: told apart when they differ, not when they do not, per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import manifest_rows, small_xray_tree

from helpers import data
from helpers.splits import DataSplits
from helpers.xray import domain_shift
from helpers.xray.aspect import source_sizes


@pytest.fixture(scope="module")
def xr(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> tuple[DataSplits, Path]:
    """40 real X-rays per class from each of train / val / test (val has no viral image), 32 px."""
    root = tmp_path_factory.mktemp("xray-shift")
    folder = small_xray_tree(mirror, root, per_label=40)
    return data.load_chest_xray(data_root=root, mirror=mirror, size=32), folder


def _pool(splits: DataSplits) -> tuple[torch.Tensor, list[str]]:
    x = torch.cat([splits.train.x, splits.val.x])
    return x, [data.patient_of(i) for i in list(splits.train.ids) + list(splits.val.ids)]


def test_upside_down_xrays_are_told_apart_and_two_halves_of_one_pool_are_not(xr) -> None:
    x, groups = _pool(xr[0])
    auc, p, n = domain_shift.separability(x, x.flip(-2), groups, groups, folds=3, epochs=3, seed=0)
    assert auc > 0.9 and p < 1e-6 and n == len(x)
    patients = sorted(set(groups))
    half = set(patients[::2])
    a = [i for i, g in enumerate(groups) if g in half]
    b = [i for i, g in enumerate(groups) if g not in half]
    auc_same, p_same, n_same = domain_shift.separability(x[a], x[b], [groups[i] for i in a], [groups[i] for i in b],
                                                         folds=3, epochs=3, seed=0)
    assert auc_same < 0.7 and p_same > 0.01 and n_same == min(len(a), len(b))


def test_each_fold_trains_through_fit_and_scores_only_images_no_choice_saw(xr, monkeypatch) -> None:
    """Per fold, ``fit`` gets training and validation folds; the held-out fold is neither, no patient is on
    two of the three, and every image is held out (scored) exactly once."""
    x, groups = _pool(xr[0])
    calls = []
    real_fit = domain_shift.fit

    def recording_fit(model, splits, config, **kwargs):
        calls.append(splits)
        return real_fit(model, splits, config, **kwargs)

    monkeypatch.setattr(domain_shift, "fit", recording_fit)
    domain_shift.separability(x, x.flip(-2), groups, groups, folds=4, epochs=1, seed=0)
    assert len(calls) == 4
    held_out = []
    for splits in calls:
        patients = [{i for i in split.ids} for split in (splits.train, splits.val, splits.test)]
        assert all(p and not p & q for k, p in enumerate(patients) for q in patients[k + 1:])
        held_out += splits.test.ids
    assert sorted(set(held_out)) == sorted({i for s in calls for i in s.train.ids})
    assert sum(len(s.test) for s in calls) == 2 * len(x)
    with pytest.raises(ValueError, match="at least 3 folds"):
        domain_shift.separability(x, x, groups, groups, folds=2)


def test_class_shift_compares_only_files_with_their_own_aspect_ratio(xr) -> None:
    splits, folder = xr
    table = domain_shift.class_shift(splits, domain_shift.class_sides(splits, folder), seeds=(0,), folds=3, epochs=1)
    assert list(table.index) == splits.classes
    ids = list(splits.train.ids) + list(splits.val.ids)
    labels = torch.cat([splits.train.y, splits.val.y]).tolist()
    for label, name in enumerate(splits.classes):  # square files (the re-encoded 224 x 224 copies) left out
        pool = sum(w != h and y == label for (w, h), y in zip(source_sizes(folder, ids), labels))
        test = sum(w != h and y == label for (w, h), y in zip(source_sizes(folder, splits.test.ids),
                                                               splits.test.y.tolist()))
        assert 0 < pool < labels.count(label)
        assert table.loc[name, "images per side"] == min(pool, test)
    for column in ("AUC pool vs test", "control AUC (pool halves)", "largest p", "aspect-only AUC",
                   "brightness-only AUC", "contrast-only AUC", "matched aspect-only AUC", "AUC aspect-matched", "matched largest p"):
        assert table[column].between(0, 1).all()
    assert (table["matched per side"] <= table["images per side"]).all()


def test_brightness_and_contrast_scores_of_real_xrays(xr) -> None:
    """Per image, as the model sees it: unchanged by a mirror image (so the two sets score AUC 0.5),
    both lower for every image once its pixels are halved (AUC near 0)."""
    x, _ = _pool(xr[0])
    scores = domain_shift.pixel_scores(x)
    assert np.allclose(scores["brightness"], x.flatten(1).double().mean(1).numpy() / 255)
    assert 0.1 < scores["contrast"].min() and scores["contrast"].max() < 0.5  # real X-rays: neither flat nor binary
    mirrored, halved = domain_shift.pixel_scores(x.flip(-1)), domain_shift.pixel_scores(x // 2)
    for k in ("brightness", "contrast"):
        assert domain_shift.score_auc(scores[k], mirrored[k]) == pytest.approx(0.5, abs=1e-3)  # float sums differ in order
        assert (halved[k] < scores[k]).all() and domain_shift.score_auc(scores[k], halved[k]) < 0.01


def test_pixel_difference_marks_only_where_the_test_side_differs(xr) -> None:
    x, _ = _pool(xr[0])
    marked = x.clone()
    marked[..., 10:20, 5:15] = 255  # a bright label burnt into every "test" image
    mean_a, mean_b, z = domain_shift.pixel_difference(x, marked)
    assert mean_a.shape == z.shape == x.shape[-2:]
    assert np.allclose(mean_a, x.double().mean(1).mean(0).numpy() / 255)
    assert (z[10:20, 5:15] > 4).all() and np.allclose(mean_b[10:20, 5:15], 1.0)
    outside = np.ones_like(z, dtype=bool)
    outside[10:20, 5:15] = False
    assert (z[outside] == 0).all()


def test_matched_difference_plot_shows_the_matched_images_of_every_class(xr, monkeypatch) -> None:
    splits, folder = xr
    sides = domain_shift.class_sides(splits, folder)
    fig = domain_shift.plot_matched_difference(splits, sides)
    titles = [ax.get_title() for ax in fig.axes]
    for name, sd in sides.items():
        assert len(sd.matched_pool) == len(sd.matched_test) >= 2
        assert f"{name}: pool mean ({len(sd.matched_pool)} images)" in titles
        assert np.abs(np.array(sd.pool_aspect)[sd.matched_pool] - np.array(sd.test_aspect)[sd.matched_test]).max() <= 0.02
    assert sum(t.startswith("z per pixel") for t in titles) == len(splits.classes)
    none = (np.array([], dtype=int), np.array([], dtype=int))  # classes where no test image finds a partner
    monkeypatch.setattr(domain_shift, "aspect_matched", lambda a, b, **kwargs: none)
    titles = [ax.get_title() for ax in domain_shift.plot_matched_difference(splits, domain_shift.class_sides(splits, folder)).axes]
    assert [t for t in titles if t] == [f"{name}: 0 images matched, too few for a mean" for name in splits.classes]


def test_sides_of_other_data_are_refused(xr) -> None:
    """Sides index the pool and test images of the data they were made from; with other data they would
    pick other images (here: the same X-rays with their test split cut short)."""
    splits, folder = xr
    sides = domain_shift.class_sides(splits, folder)
    shorter = splits.subset(n_test=len(splits.test) // 3)
    with pytest.raises(ValueError, match="do not belong to these data"):
        domain_shift.plot_matched_difference(shorter, sides)
    with pytest.raises(ValueError, match="do not belong to these data"):
        domain_shift.class_shift(shorter, sides, seeds=(0,), folds=3, epochs=1)
    with pytest.raises(ValueError, match="'normal'"):
        domain_shift.plot_matched_difference(splits, {k: v for k, v in sides.items() if k != "normal"})


def test_aspect_matching_removes_the_aspect_difference_of_the_real_test_normals(mirror: Path) -> None:
    """The mirror's test normals are wider files than the training pool's (by their headers); matched
    pairs are within the tolerance, use no image twice, and no longer differ in aspect ratio."""
    folder = mirror / "chest_xray"
    rows = manifest_rows(folder)
    rows = rows[(rows["label3"] == "normal") & (rows["source_kind"] == "original")]
    ids = (rows["split"] + "/" + rows["folder"] + "/" + rows["file"]).tolist()
    aspect = np.array([w / h for w, h in source_sizes(folder, ids)])
    is_test = (rows["split"] == "test").to_numpy()
    pool, test = aspect[~is_test], aspect[is_test]
    assert domain_shift.score_auc(pool, test) > 0.65
    ia, ib = domain_shift.aspect_matched(pool, test, tolerance=0.02)
    assert len(set(ia)) == len(ia) == len(set(ib)) == len(ib) >= 100
    assert np.abs(pool[ia] - test[ib]).max() <= 0.02
    assert 0.45 < domain_shift.score_auc(pool[ia], test[ib]) < 0.55
    a, b = domain_shift.aspect_matched([1.0, 1.5, 1.02], [1.01, 2.0, 1.49], tolerance=0.02)
    assert (a.tolist(), b.tolist()) == ([0, 1], [0, 2])  # 2.0 has no partner; of two equally close, the first
    a, b = domain_shift.aspect_matched([1.0, 1.1], [1.5], tolerance=0.02)
    assert len(a) == len(b) == 0 and np.isnan(domain_shift.score_auc(pool[a], test[b]))  # nothing matched: no AUC


def test_shift_summary_follows_its_stated_rule() -> None:
    table = pd.DataFrame({"images per side": [200, 200, 200], "AUC pool vs test": [0.91, 0.62, 0.55],
                          "AUC per seed": ["0.93 / 0.89", "0.60 / 0.64", "0.55 / 0.55"], "largest p": [1e-40, 0.2, 1e-4],
                          "control AUC (pool halves)": [0.46, 0.45, 0.50], "control per seed": ["", "", ""],
                          "aspect-only AUC": [0.71, 0.5, 0.5], "brightness-only AUC": [0.53, 0.4, 0.5],
                          "contrast-only AUC": [0.45, 0.5, 0.6], "matched per side": [170, 200, 200],
                          "matched aspect-only AUC": [0.5, 0.5, 0.5], "AUC aspect-matched": [0.88, 0.6, 0.55],
                          "matched largest p": [1e-30, 0.3, 1e-3]},
                         index=pd.Index(["normal", "bacterial", "viral"], name="class"))
    decided = domain_shift.shift_decisions(table)
    assert [d[0].outcome for d in decided.values()] == ["shifted", "no shift shown", "no shift shown"]
    assert [d[1].outcome for d in decided.values()] == ["beyond the aspect ratio", "not tested", "not tested"]
    assert decided["normal"][0].value == 0.91 and decided["normal"][0].reference == 0.46 and "p < 0.05" in decided["normal"][0].rule
    lines = domain_shift.shift_summary(table).splitlines()
    assert lines[0].startswith("Rule:")
    assert "**shifted**" in lines[1] and "**beyond the aspect ratio**" in lines[1]  # p small, AUC 0.45 above the control
    assert "aspect ratio scores AUC 0.71, brightness 0.53, contrast 0.45" in lines[1]
    assert "no shift shown" in lines[2]  # AUC well above the control, but p = 0.2 on one seed
    assert "no shift shown" in lines[3]  # p small, but only 0.05 above the control
    assert lines[4] == "- Furthest from the training pool: normal (AUC 0.91); next bacterial (0.62)."
    table.loc["normal", "AUC aspect-matched"] = 0.52  # the shift gone once matched on aspect
    assert domain_shift.shift_decisions(table)["normal"][1].outcome == "not shown beyond the aspect ratio"
    assert "not shown beyond the aspect ratio" in domain_shift.shift_summary(table).splitlines()[1]
    table.loc["normal", ["matched per side", "AUC aspect-matched", "matched largest p"]] = [3, np.nan, np.nan]
    assert domain_shift.shift_decisions(table)["normal"][1].outcome == "too few matched"
    assert "Too few images match on aspect ratio (3 per side)" in domain_shift.shift_summary(table).splitlines()[1]
