"""Validation-split helpers on known inputs."""

import numpy as np
import pytest

from helpers.data import xray_label_and_patient
from helpers.splits import grouped_stratified_split, stratified_split, stratified_subset


def test_stratified_split_holds_out_the_fraction_of_each_class() -> None:
    labels = np.repeat([0, 1, 2], [100, 50, 30])
    keep, held = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[held]).tolist() == [20, 10, 6]
    assert len(keep) + len(held) == len(labels) and not set(keep) & set(held)
    keep2, held2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(held, held2)
    assert not np.array_equal(held, stratified_split(labels, 0.2, seed=4)[1])


def test_grouped_split_never_separates_a_group() -> None:
    rng = np.random.default_rng(0)
    groups = [f"p{i // 3}" for i in range(300)]  # 100 patients with 3 images each
    labels = np.array([int(g[1:]) % 3 for g in groups])
    keep, held = grouped_stratified_split(labels, groups, 0.1, seed=rng.integers(100))
    assert not {groups[i] for i in keep} & {groups[i] for i in held}
    assert sorted(np.concatenate([keep, held])) == list(range(300))  # every image on exactly one side
    # 10 % of each class, in whole patients: 100 patients of 3 images over 3 classes -> 3 or 4 per class
    held_per_class = np.bincount(labels[held], minlength=3)
    total_per_class = np.bincount(labels, minlength=3)
    assert np.all(np.abs(held_per_class - 0.1 * total_per_class) <= 3)  # within one patient of the target
    assert held_per_class.min() > 0


def test_grouped_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        grouped_stratified_split([0, 1], ["a"], 0.5)


def test_stratified_subset_keeps_proportions() -> None:
    labels = np.repeat([0, 1], [300, 100])
    idx = stratified_subset(labels, 40)
    assert np.bincount(labels[idx]).tolist() == [30, 10]
    assert len(stratified_subset(labels, 1000)) == 400


@pytest.mark.parametrize("folder, name, expected", [
    ("NORMAL", "IM-0001-0001.jpeg", ("normal", "IM-0001")),
    ("NORMAL", "NORMAL2-IM-0666-0001.jpeg", ("normal", "NORMAL2-IM-0666")),
    ("NORMAL", "NORMAL2-IM-1345-0001-0002.jpeg", ("normal", "NORMAL2-IM-1345")),
    ("PNEUMONIA", "person12_virus_3.jpeg", ("viral", "person12")),
    ("PNEUMONIA", "person1008_bacteria_2939.jpeg", ("bacterial", "person1008")),
    ("PNEUMONIA", "notes.jpeg", None),
])
def test_xray_names(folder: str, name: str, expected) -> None:
    assert xray_label_and_patient(folder, name) == expected
