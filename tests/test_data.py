"""The data layer on the real data sets: shapes, counts, splits, caching and bad input."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_dataset, manifest_counts, manifest_rows, small_xray_tree
from torchvision.datasets import FashionMNIST

from helpers import data, sources
from helpers.sources import CorruptDataError, DataNotFoundError, ensure_dataset
from helpers.splits import DataSplits


def _check_common(s: DataSplits, channels: int, size: int, n_classes: int) -> None:
    for name in ("train", "val", "test"):
        split = s.split(name)
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (channels, size, size)
        assert len(split.ids) == len(split.y) == split.x.shape[0]
        assert int(split.y.min()) >= 0 and int(split.y.max()) < n_classes
    assert len(s.classes) == n_classes
    # validation is carved from train: no image in both
    assert not set(s.train.ids) & set(s.val.ids)
    # normalisation statistics are those of the training split alone
    xf = s.train.x.double() / 255
    assert np.allclose(s.mean, xf.mean(dim=(0, 2, 3)).numpy(), atol=1e-5)
    assert np.allclose(s.std, xf.std(dim=(0, 2, 3)).numpy(), atol=1e-5)


def test_fashion_mnist_shapes_counts_and_split(mirror_data_root: Path, mirror: Path) -> None:
    s = data.load_fashion_mnist(data_root=mirror_data_root, mirror=mirror)
    _check_common(s, channels=1, size=28, n_classes=10)
    assert s.classes == list(FashionMNIST.classes)
    counts = s.counts()
    assert (counts["train"] == 5400).all() and (counts["val"] == 600).all() and (counts["test"] == 1000).all()


@pytest.mark.parametrize("color, channels", [("rgb", 3), ("grayscale", 1)])
def test_simpsons_mnist_shapes_counts_and_split(mirror_data_root: Path, mirror: Path, color: str, channels: int) -> None:
    s = data.load_simpsons_mnist(color, data_root=mirror_data_root, mirror=mirror)
    _check_common(s, channels=channels, size=28, n_classes=10)
    assert s.classes[0] == "bart_simpson" and s.classes[-1] == "principal_skinner"
    counts = s.counts()
    assert (counts["train"] == 720).all() and (counts["val"] == 80).all() and (counts["test"] == 200).all()
    # every image id names its own character folder
    assert all(f"/{s.classes[int(y)]}/" in i for i, y in zip(s.test.ids, s.test.y))


def test_chest_xray_three_classes_and_patient_disjoint_splits(mirror_data_root: Path, mirror: Path) -> None:
    s = data.load_chest_xray(size=64, data_root=mirror_data_root, mirror=mirror)
    _check_common(s, channels=1, size=64, n_classes=3)
    assert s.classes == ["normal", "bacterial", "viral"]
    counts = s.counts()
    # every image the mirror's manifest lists, in its class; its val/ folder is folded into training
    expected = manifest_counts(mirror / "chest_xray")
    assert (counts["train"] + counts["val"]).to_dict() == expected["train"]
    assert counts["test"].to_dict() == expected["test"]
    assert 0.07 < len(s.val) / (len(s.train) + len(s.val)) < 0.13
    patients = {k: {data.patient_of(i) for i in s.split(k).ids} for k in ("train", "val", "test")}
    assert not patients["train"] & patients["val"]
    # labels agree with the file names they came from
    for image_id, y in zip(s.train.ids, s.train.y):
        parts = image_id.split("/")
        assert data.xray_label_and_patient(parts[-2], parts[-1])[0] == s.classes[int(y)]
    n_all = sum(expected["train"].values()) + sum(expected["test"].values())
    kinds = manifest_rows(mirror / "chest_xray")["source_kind"].value_counts()
    complete = n_all >= 0.99 * data.KERMANY_IMAGES
    assert s.note.startswith("Complete" if complete else "Subset")
    assert f"{n_all:,} of its 5,856 images" in s.note
    for kind, n in kinds.items():
        assert (f"{n:,} are '{kind}' copies" in s.note) == (kind != "original")


def test_xray_note_says_subset_or_complete() -> None:
    assert data.xray_note(780, "x").startswith("Subset of the Kermany 2018 data: 780 of its 5,856")
    full = data.xray_note(5833, "x", {"original": 2198, "reencoded-224": 3635})
    assert full.startswith("Complete") and "3,635 are 'reencoded-224' copies" in full and "original'" not in full


def test_chest_xray_size_is_configurable(mirror_data_root: Path, mirror: Path) -> None:
    s = data.load_chest_xray(size=32, data_root=mirror_data_root, mirror=mirror)
    assert s.train.x.shape[1:] == (1, 32, 32)


def test_split_is_stable_under_a_fixed_seed(mirror_data_root: Path, mirror: Path) -> None:
    a = data.load_simpsons_mnist("grayscale", data_root=mirror_data_root, mirror=mirror, seed=0)
    b = data.load_simpsons_mnist("grayscale", data_root=mirror_data_root, mirror=mirror, seed=0)
    c = data.load_simpsons_mnist("grayscale", data_root=mirror_data_root, mirror=mirror, seed=1)
    assert a.val.ids == b.val.ids and torch.equal(a.val.x, b.val.x)
    assert a.val.ids != c.val.ids


def test_a_second_load_reads_the_cache_and_decodes_nothing(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    ensure_dataset(sources.SIMPSONS, tmp_path, mirror)
    first = data.load_simpsons_mnist("grayscale", data_root=tmp_path, mirror=mirror)
    assert len(list((tmp_path / "cache").glob("simpsons-grayscale-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images")

    monkeypatch.setattr(data, "decode_image", no_decoding)
    second = data.load_simpsons_mnist("grayscale", data_root=tmp_path, mirror=mirror)
    assert torch.equal(first.train.x, second.train.x) and first.test.ids == second.test.ids


def test_subset_is_stratified_and_says_so(mirror_data_root: Path, mirror: Path) -> None:
    s = data.load_simpsons_mnist("rgb", data_root=mirror_data_root, mirror=mirror)
    small = s.subset(n_train=1000, n_val=200, n_test=300)
    assert (len(small.train), len(small.val), len(small.test)) == (1000, 200, 300)
    assert (small.counts()["train"] == 100).all()
    assert "1,000 train / 200 val / 300 test" in small.note and "7,200 train" in small.note


# ------------------------------------------------------------------------------ bad input


def test_missing_data_names_the_data_set_and_where_it_looked(tmp_path: Path) -> None:
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    with pytest.raises(DataNotFoundError) as err:
        data.load_chest_xray(data_root=tmp_path / "data", mirror=empty_mirror)
    msg = str(err.value)
    assert "Chest X-ray" in msg and str(tmp_path / "data" / "chest_xray") in msg
    assert str(empty_mirror / "chest_xray") in msg and "mendeley" in msg.lower()


def test_failed_download_is_reported_with_the_places_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(FashionMNIST, "mirrors", [f"file://{tmp_path}/nowhere/"])
    with pytest.raises(DataNotFoundError) as err:
        data.load_fashion_mnist(data_root=tmp_path / "data", mirror=tmp_path / "no-mirror")
    msg = str(err.value)
    assert "Fashion-MNIST not found" in msg and "download" in msg and "DATA_MIRROR" in msg


def test_download_path_fetches_and_verifies_the_real_files(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    # A file:// "server" holding the real gz files exercises download + md5 check offline.
    monkeypatch.setattr(FashionMNIST, "mirrors", [(mirror / "FashionMNIST" / "raw").as_uri() + "/"])
    s = data.load_fashion_mnist(data_root=tmp_path / "data", mirror=tmp_path / "no-mirror")
    assert len(s.test) == 10000


@pytest.mark.slow
def test_simpsons_download_extracts_the_dataset_folder(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    archive = tmp_path / "simpsons-mnist-HEAD.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # the real files, laid out like GitHub's archive
        for f in (mirror / "simpsons-mnist" / "dataset").rglob("*.jpg"):  # all of them: each load checks them
            zf.write(f, "simpsons-mnist-HEAD/" + f.relative_to(mirror / "simpsons-mnist").as_posix())
        zf.writestr("simpsons-mnist-HEAD/README.md", "not part of dataset/")
    monkeypatch.setattr(sources, "SIMPSONS_URL", archive.as_uri())
    s = data.load_simpsons_mnist("rgb", data_root=tmp_path / "data", mirror=tmp_path / "no-mirror")
    assert len(s.test) == 2000 and s.num_classes == 10


def test_truncated_gz_names_the_file(tmp_path: Path, mirror: Path) -> None:
    folder = copy_dataset(mirror, "FashionMNIST", tmp_path)
    victim = folder / "raw" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_fashion_mnist(data_root=tmp_path, mirror=mirror)


def test_gz_that_is_not_gzip_is_reported(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    folder = copy_dataset(mirror, "FashionMNIST", tmp_path)
    victim = folder / "raw" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(b"not a gzip file")
    fake = [(f, data.file_digest(folder / "raw" / f, "md5")) for f, _ in FashionMNIST.resources]
    monkeypatch.setattr(FashionMNIST, "resources", fake)  # md5 passes: the gzip check must catch it
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz.*gzip"):
        data.load_fashion_mnist(data_root=tmp_path, mirror=mirror)


def test_idx_with_wrong_length_is_reported(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    folder = copy_dataset(mirror, "FashionMNIST", tmp_path)
    victim = folder / "raw" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:-10]))
    fake = [(f, data.file_digest(folder / "raw" / f, "md5")) for f, _ in FashionMNIST.resources]
    monkeypatch.setattr(FashionMNIST, "resources", fake)
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz.*header"):
        data.load_fashion_mnist(data_root=tmp_path, mirror=mirror)


def test_xray_file_failing_its_manifest_checksum_is_named(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path)
    assert (folder / "manifest.csv").exists()
    victim = sorted((folder / "test" / "NORMAL").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:500])
    with pytest.raises(CorruptDataError, match=victim.name):
        data.load_chest_xray(data_root=tmp_path, mirror=mirror)


def test_undecodable_image_is_named(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, manifest=False)  # like the original release: no manifest
    victim = sorted((folder / "train" / "PNEUMONIA").iterdir())[3]
    victim.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(CorruptDataError, match=f"cannot decode image .*{victim.name}"):
        data.load_chest_xray(data_root=tmp_path, mirror=mirror)


def test_empty_class_folder_is_reported(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, manifest=False)
    for f in (folder / "test" / "NORMAL").iterdir():
        f.unlink()
    with pytest.raises(DataNotFoundError, match="test/NORMAL holds no images"):
        data.load_chest_xray(data_root=tmp_path, mirror=mirror)


def test_missing_class_folder_in_simpsons_is_reported(tmp_path: Path, mirror: Path) -> None:
    folder = copy_dataset(mirror, "simpsons-mnist", tmp_path)
    shutil.rmtree(folder / "dataset" / "rgb" / "test" / "moe_szyslak")
    with pytest.raises(DataNotFoundError, match="missing in test \\['moe_szyslak'\\]"):
        data.load_simpsons_mnist("rgb", data_root=tmp_path, mirror=mirror)


def test_files_with_unknown_names_are_skipped_with_a_warning(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, manifest=False)
    n_pool = sum(1 for sub in ("train", "val") for _ in (folder / sub).rglob("*.jpeg"))
    src = sorted((folder / "train" / "PNEUMONIA").iterdir())[0]
    shutil.copyfile(src, folder / "train" / "PNEUMONIA" / "scan_without_patient.jpeg")
    with pytest.warns(UserWarning, match="scan_without_patient.jpeg"):
        s = data.load_chest_xray(data_root=tmp_path, mirror=mirror)
    assert len(s.train) + len(s.val) == n_pool  # every well-named file, and not the odd one
    assert not any("scan_without_patient" in i for i in s.train.ids + s.val.ids)


def test_kaggle_val_folder_is_folded_into_training(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, manifest=False, splits=("train", "test"))
    assert not (folder / "val").exists()
    for cls in ("NORMAL", "PNEUMONIA"):  # move a few images to a Kaggle-style val/ folder
        (folder / "val" / cls).mkdir(parents=True)
        for f in sorted((folder / "train" / cls).iterdir())[:4]:
            f.rename(folder / "val" / cls / f.name)
    n_pool = sum(1 for sub in ("train", "val") for _ in (folder / sub).rglob("*.jpeg"))
    n_test = sum(1 for _ in (folder / "test").rglob("*.jpeg"))
    s = data.load_chest_xray(data_root=tmp_path, mirror=mirror)
    assert len(s.train) + len(s.val) == n_pool and len(s.test) == n_test
    assert sum(i.startswith("val/") for i in s.train.ids + s.val.ids) == 8


def test_try_load_skips_a_missing_data_set_with_instructions(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PORTFOLIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "empty-mirror"))
    assert data.try_load("xray") is None
    out = capsys.readouterr().out
    assert "SKIPPED xray" in out and "mendeley" in out.lower()


def test_a_damaged_data_cache_is_reported_and_rebuilt(tmp_path: Path, mirror: Path) -> None:
    small_xray_tree(mirror, tmp_path)
    first = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    (cache,) = (tmp_path / "cache").glob("xray-32px-*.pt")
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit among the pixels: torch.load alone would not notice
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="cache not used, rebuilding.*does not match its checksum"):
        again = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.x, first.test.x)
    third = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)  # the rebuilt cache is trusted
    assert torch.equal(third.val.x, first.val.x)
