"""Loaders for the portfolio's three data sets, as train / validation / test tensors.

Every loader returns a :class:`DataSplits`: images as ``uint8`` tensors shaped ``(N, C, H, W)``,
labels as ``int64`` tensors, class names, and per-channel mean/std computed on the training split
only (pixel scale 0..1). The validation split is carved from the official training split (fixed
seed, stratified; grouped by patient for the X-rays); the official test split is left untouched.

Decoded images are cached under ``data/cache/`` so that a second load takes a fraction of a
second; the cache key changes whenever the files on disk change.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets import FashionMNIST

from helpers import paths
from helpers.datasources import (
    CorruptDataError,
    DataNotFoundError,
    DataSource,
    damaged_file_advice,
    download_file,
    download_zip_folder,
    ensure_dataset,
    file_digest,
    content_key,
    visible,
)
from helpers.integrity import read_checked, remove_checked, write_checked
from helpers.splits import grouped_stratified_split, stratified_split, stratified_subset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class Split:
    """One split: images, labels and an identifier (source file or index) per image."""

    x: torch.Tensor  #: uint8, (N, C, H, W)
    y: torch.Tensor  #: int64, (N,)
    ids: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray | Sequence[int]) -> Split:
        """The images at ``index`` (a new Split)."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Split(self.x[idx], self.y[idx], [self.ids[i] for i in idx.tolist()])


@dataclass
class DataSplits:
    """A data set ready for training: three splits, class names and train-split statistics."""

    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  #: per channel, pixel scale 0..1, training split only
    std: tuple[float, ...]
    source: str  #: folder the files were read from
    note: str = ""  #: e.g. which part of the data set this is

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        """``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}")
        return getattr(self, name)

    def sizes(self) -> str:
        """Image counts, e.g. ``'7,200 train / 800 val / 2,000 test images'``."""
        return f"{len(self.train):,} train / {len(self.val):,} val / {len(self.test):,} test images"

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns)."""
        data = {
            s: np.bincount(self.split(s).y.numpy(), minlength=self.num_classes)
            for s in ("train", "val", "test")
        }
        return pd.DataFrame(data, index=pd.Index(self.classes, name="class"))

    def pixel_stats(self) -> pd.DataFrame:
        """Per split: image count, shape and pixel statistics (0..1 scale, all channels)."""
        rows = []
        for name in ("train", "val", "test"):
            x = self.split(name).x.to(torch.float32) / 255.0
            rows.append({
                "split": name, "images": len(x), "channels": self.channels,
                "size": f"{x.shape[-2]}x{x.shape[-1]}", "mean": x.mean().item(),
                "std": x.std().item(), "min": x.min().item(), "max": x.max().item(),
            })
        return pd.DataFrame(rows).set_index("split").round(3)

    def subset(
        self, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
        seed: int = 0,
    ) -> DataSplits:
        """A class-stratified slice (for quick budgets); ``None`` keeps a split whole.

        Mean/std stay those of the full training split; the note records the counts used.
        """
        parts = {}
        for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            s = self.split(name)
            parts[name] = s if n is None or n >= len(s) else s.take(stratified_subset(s.y.numpy(), n, seed))
        sliced = replace(self, **parts)
        if any(len(parts[k]) < len(self.split(k)) for k in parts):
            sliced.note = (f"{self.note} " if self.note else "") + (
                f"Slice of {self.sizes()}: using {sliced.sizes()}."
            )
        return sliced


# ----------------------------------------------------------------------------------- sources


def _download_fashion(dest: Path) -> None:
    for fname, md5 in FashionMNIST.resources:  # torchvision's list of files and published md5s
        download_file(FashionMNIST.mirrors[0] + fname, dest / "raw" / fname, md5)


FASHION = DataSource(
    name="Fashion-MNIST",
    folder="FashionMNIST",
    required=tuple(f"raw/{fname}" for fname, _ in FashionMNIST.resources),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    licence="MIT",
    download=lambda dest: _download_fashion(dest),
)

SIMPSONS_URL = "https://github.com/alvarobartt/simpsons-mnist/archive/HEAD.zip"
SIMPSONS = DataSource(
    name="Simpsons-MNIST",
    folder="simpsons-mnist",
    required=tuple(f"dataset/{c}/{s}" for c in ("rgb", "grayscale") for s in ("train", "test")),
    homepage="https://github.com/alvarobartt/simpsons-mnist",
    licence="CC BY-NC-SA 4.0 (non-commercial use only)",
    download=lambda dest: download_zip_folder(SIMPSONS_URL, "dataset", dest),
)

XRAY = DataSource(
    name="Chest X-ray (Kermany et al. 2018)",
    folder="chest_xray",
    required=("train/NORMAL", "train/PNEUMONIA", "test/NORMAL", "test/PNEUMONIA"),
    homepage="https://data.mendeley.com/datasets/rscbjbr9sj/2",
    licence="CC BY 4.0 (attribute Kermany, Zhang, Goldbaum)",
    download=None,  # both hosts need a login or a token
    manual_steps=(
        "the chest X-ray images need a (free) account to download. Get 'ChestXRay2017.zip' from "
        "https://data.mendeley.com/datasets/rscbjbr9sj/2 (or 'chest-xray-pneumonia' from "
        "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia), unzip it and move "
        "its 'chest_xray' folder (holding train/ and test/, each with NORMAL/ and PNEUMONIA/) to "
        "{target}; or set $DATA_MIRROR to a folder that holds 'chest_xray/'."
    ),
)

SOURCES = {"fashion": FASHION, "simpsons": SIMPSONS, "xray": XRAY}

XRAY_CLASSES = ["normal", "bacterial", "viral"]
#: Images in the published Kermany 2018 release (ChestXRay2017 v2): 5,216 train + 16 val + 624 test.
KERMANY_IMAGES = 5856
_PNEUMONIA_NAME = re.compile(r"^(person\d+)_(bacteria|virus)_\d+\.jpe?g$", re.IGNORECASE)
_NORMAL_NAME = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+(?:-\d+)?\.jpe?g$", re.IGNORECASE)


def _ensure(source: DataSource, data_root: Path | None, mirror: Path | None) -> Path:
    """``ensure_dataset`` with the X-ray's manual steps pointing at the real target folder."""
    root = Path(data_root) if data_root is not None else paths.data_dir()
    if source.manual_steps:
        source = replace(source, manual_steps=source.manual_steps.format(target=root / source.folder))
    return ensure_dataset(source, root, mirror)


# ----------------------------------------------------------------------------------- caching


def _cached(key: str, content: str, cache_dir: Path, build: Callable[[], dict]) -> dict:
    """Return ``build()``'s tensors, from ``cache_dir/<key>-<content>.pt`` when present and intact.

    ``content`` is a hash of the source files' contents (:func:`content_key`), so a file altered in
    place, even to the same size, is never served from an old cache. Each cache file has a sha256
    beside it (:mod:`helpers.integrity`); one that does not match is reported and rebuilt.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}-{content}.pt"
    if path.exists():
        try:
            return torch.load(io.BytesIO(read_checked(path)), weights_only=True)
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"decoded-data cache not used, rebuilding it: {exc}", stacklevel=3)
            remove_checked(path)
    for stale in cache_dir.glob(f"{key}-*.pt"):  # caches of files that have changed since
        if stale != path:
            remove_checked(stale)
    raw = build()
    buffer = io.BytesIO()
    torch.save(raw, buffer)
    write_checked(path, buffer.getvalue())
    return raw


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.to(torch.float64) / 255.0
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _assemble(
    name: str, classes: list[str], raw: dict, val_idx_fn: Callable[[np.ndarray], tuple], source: Path,
) -> DataSplits:
    full_train = Split(raw["train_x"], raw["train_y"], list(raw["train_ids"]))
    keep, held = val_idx_fn(full_train.y.numpy())
    train, val = full_train.take(keep), full_train.take(held)
    mean, std = _channel_stats(train.x)
    test = Split(raw["test_x"], raw["test_y"], list(raw["test_ids"]))
    return DataSplits(name, classes, train, val, test, mean, std, str(source))


def _list_images(folder: Path, dataset: str, root: Path) -> list[Path]:
    """The visible image files of one class folder (hidden ``._x.jpg`` / ``.DS_Store`` are skipped)."""
    fix = f"Put its images back, or move '{root}' away and load again for a fresh copy."
    if not folder.is_dir():
        raise DataNotFoundError(f"{dataset}: class folder {folder} is missing. {fix}")
    files = sorted(p for p in folder.iterdir() if visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataNotFoundError(f"{dataset}: class folder {folder} holds no images. {fix}")
    return files


def _damaged(path: Path, problem: str, origin: tuple[Path, DataSource]) -> CorruptDataError:
    """The error for a damaged data file: what is wrong and how to fix it, by where the file came from."""
    return CorruptDataError(f"{path}: {problem}. {damaged_file_advice(path, *origin)}")


def _decode(path: Path, mode: str, origin: tuple[Path, DataSource], size: int | None = None,
            expect: int | None = None) -> np.ndarray:
    """Decode one image as ``mode`` ('L' or 'RGB'); resize to ``size`` or check it is ``expect``.

    ``origin`` is (data set folder, its source), for the advice when the file is damaged."""
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft(mode, (size, size))  # JPEG: decode at reduced scale, much faster
                im = im.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
            else:
                im = im.convert(mode)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _damaged(path, f"cannot decode image ({exc})", origin) from exc
    if expect is not None and arr.shape[:2] != (expect, expect):
        raise _damaged(path, f"image is {arr.shape[1]}x{arr.shape[0]}, expected {expect}x{expect}", origin)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# ----------------------------------------------------------------------------------- Fashion-MNIST


def _check_md5(path: Path, md5: str, origin: tuple[Path, DataSource]) -> str:
    got = file_digest(path, "md5")
    if got != md5:
        raise _damaged(path, f"md5 {got} differs from the published {md5}, so the file is truncated or altered", origin)
    return got


def _read_idx_gz(path: Path, origin: tuple[Path, DataSource]) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(path, f"not a readable gzip file ({exc})", origin) from exc
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise _damaged(path, f"not an IDX file of unsigned bytes (magic {magic:#x})", origin)
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise _damaged(path, f"holds {body.size} bytes of data, header says {shape}", origin)
    return body.reshape(shape)


def load_fashion_mnist(
    data_root: Path | None = None, mirror: Path | None = None, val_fraction: float = 0.1, seed: int = 0,
) -> DataSplits:
    """Fashion-MNIST: 60,000 train (minus a stratified validation slice) and 10,000 test images."""
    folder = _ensure(FASHION, data_root, mirror)
    files = {fname: folder / "raw" / fname for fname, _ in FashionMNIST.resources}

    def build() -> dict:
        arrays = {f: _read_idx_gz(p, (folder, FASHION)) for f, p in files.items()}
        out = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            x = arrays[f"{prefix}-images-idx3-ubyte.gz"]
            y = arrays[f"{prefix}-labels-idx1-ubyte.gz"]
            if len(x) != len(y):
                raise CorruptDataError(f"{folder}: {len(x)} {split} images but {len(y)} labels")
            out[f"{split}_x"] = torch.from_numpy(x.copy()).unsqueeze(1)
            out[f"{split}_y"] = torch.from_numpy(y.astype(np.int64))
            out[f"{split}_ids"] = [f"{split}[{i}]" for i in range(len(y))]
        return out

    digests = {f: _check_md5(files[f], md5, (folder, FASHION)) for f, md5 in FashionMNIST.resources}  # every load
    raw = _cached("fashion", content_key(digests), folder.parent / "cache", build)
    return _assemble(
        "Fashion-MNIST", list(FashionMNIST.classes), raw,
        lambda y: stratified_split(y, val_fraction, seed), folder,
    )


# ----------------------------------------------------------------------------------- Simpsons-MNIST

#: Per class folder of the published Simpsons-MNIST: file count and a digest of its files' sha256s.
SIMPSONS_CHECKSUMS = Path(__file__).with_name("checksums") / "simpsons-mnist.json"


def _folder_digest(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """(digest of a class folder, ``{file name: sha256}``), as in :data:`SIMPSONS_CHECKSUMS`."""
    per_file = {f.name: file_digest(f) for f in sorted(files, key=lambda p: p.name)}
    h = hashlib.sha256()
    for name, digest in per_file.items():
        h.update(f"{name} {digest}\n".encode())
    return h.hexdigest(), per_file


def _verify_simpsons(folder: Path, color: str, listing: dict[str, dict[str, list[Path]]], mirror: Path | None) -> str:
    """Check every class folder against :data:`SIMPSONS_CHECKSUMS`; returns the content key for the cache.

    A folder that does not match is named, and so are the files that differ from the mirror's copy
    when a mirror that matches the list is at hand.
    """
    expected = json.loads(SIMPSONS_CHECKSUMS.read_text())["folders"]
    digests = {}
    for split, per_class in listing.items():
        for cls, files in per_class.items():
            rel = f"{color}/{split}/{cls}"
            digest, per_file = _folder_digest(files)
            digests[rel] = digest
            if rel not in expected:
                raise CorruptDataError(f"Simpsons-MNIST: {folder / 'dataset' / rel} is not a class folder of the "
                                       f"published data set. Move it out of {folder / 'dataset' / color / split}.")
            if digest != expected[rel]["sha256"]:
                raise CorruptDataError(_simpsons_mismatch(folder, rel, per_file, expected[rel], mirror))
    return content_key(digests)


def _simpsons_mismatch(folder: Path, rel: str, per_file: dict[str, str], expected: dict, mirror: Path | None) -> str:
    where = folder / "dataset" / rel
    msg = (f"Simpsons-MNIST: the files in {where} do not match the published data set's checksums "
           f"({len(per_file)} files here, {expected['files']} published)")
    reference = (Path(mirror) if mirror is not None else paths.mirror_dir() or Path("/nonexistent")) / SIMPSONS.folder
    ref_files = [p for p in (reference / "dataset" / rel).glob("*") if visible(p) and p.suffix.lower() in IMAGE_SUFFIXES]
    if ref_files:
        ref_digest, ref_per_file = _folder_digest(ref_files)
        if ref_digest == expected["sha256"]:
            changed = sorted(n for n in per_file if n in ref_per_file and per_file[n] != ref_per_file[n])
            missing = sorted(set(ref_per_file) - set(per_file))
            extra = sorted(set(per_file) - set(ref_per_file))
            for what, names in (("altered", changed), ("missing", missing), ("not in the data set", extra)):
                if names:
                    msg += f"; {what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            return msg + f". {damaged_file_advice(where / (changed or missing or extra)[0], folder, SIMPSONS)}"
    return msg + f". Replace the folder with a good copy from {SIMPSONS.homepage}, or move '{folder}' away and load again."


def load_simpsons_mnist(
    color: str = "rgb", data_root: Path | None = None, mirror: Path | None = None,
    val_fraction: float = 0.1, seed: int = 0,
) -> DataSplits:
    """Simpsons-MNIST, ``color`` 'rgb' or 'grayscale': 8,000 train (minus validation) / 2,000 test."""
    if color not in ("rgb", "grayscale"):
        raise ValueError(f"color must be 'rgb' or 'grayscale', got {color!r}")
    folder = _ensure(SIMPSONS, data_root, mirror)
    base = folder / "dataset" / color
    split_dirs = {s: base / s for s in ("train", "test")}
    classes = sorted(p.name for p in split_dirs["train"].iterdir() if p.is_dir() and visible(p))
    if not classes:
        raise DataNotFoundError(f"Simpsons-MNIST: {split_dirs['train']} has no character folders")
    test_classes = sorted(p.name for p in split_dirs["test"].iterdir() if p.is_dir() and visible(p))
    if test_classes != classes:
        raise DataNotFoundError(
            f"Simpsons-MNIST: train and test character folders differ under {base}: "
            f"missing in test {sorted(set(classes) - set(test_classes))}, "
            f"missing in train {sorted(set(test_classes) - set(classes))}"
        )
    listing = {s: [(c, _list_images(d / c, "Simpsons-MNIST", folder)) for c in classes] for s, d in split_dirs.items()}
    mode = "RGB" if color == "rgb" else "L"

    def build() -> dict:
        out = {}
        for split, per_class in listing.items():
            xs, ys, ids = [], [], []
            for label, (_, files) in enumerate(per_class):
                for f in files:
                    xs.append(_decode(f, mode, (folder, SIMPSONS), expect=28))
                    ys.append(label)
                    ids.append(f.relative_to(folder).as_posix())
            out[f"{split}_x"] = torch.from_numpy(np.stack(xs))
            out[f"{split}_y"] = torch.tensor(ys, dtype=torch.int64)
            out[f"{split}_ids"] = ids
        return out

    content = _verify_simpsons(folder, color, {s: dict(per_class) for s, per_class in listing.items()}, mirror)
    raw = _cached(f"simpsons-{color}", content, folder.parent / "cache", build)
    return _assemble(
        f"Simpsons-MNIST ({color})", classes, raw,
        lambda y: stratified_split(y, val_fraction, seed), folder,
    )


# ----------------------------------------------------------------------------------- chest X-ray


def xray_label_and_patient(folder_name: str, file_name: str) -> tuple[str, str] | None:
    """``(label, patient)`` read from a Kermany file name, or ``None`` if the name is unknown.

    ``NORMAL/IM-0001-0001.jpeg`` -> ('normal', 'IM-0001');
    ``PNEUMONIA/person12_virus_3.jpeg`` -> ('viral', 'person12').
    """
    if folder_name.upper() == "NORMAL":
        m = _NORMAL_NAME.match(file_name)
        return ("normal", m.group(1).upper()) if m else None
    m = _PNEUMONIA_NAME.match(file_name)
    if not m:
        return None
    return ("bacterial" if m.group(2).lower() == "bacteria" else "viral", m.group(1).lower())


def patient_of(image_id: str) -> str:
    """The patient of an X-ray image id such as ``'train/PNEUMONIA/person12_virus_3.jpeg'``."""
    parts = image_id.split("/")
    parsed = xray_label_and_patient(parts[-2], parts[-1])
    return parsed[1] if parsed else parts[-1]


def _verify_manifest(folder: Path, digests: dict[str, str]) -> None:
    """Check the files listed in ``manifest.csv`` (the offline mirror ships one) against their sha256."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            rel = f"{row['split']}/{row['folder']}/{row['file']}"
            path = folder / rel
            if not path.exists():
                raise DataNotFoundError(
                    f"chest X-ray: {path} is listed in {manifest} but missing. Put it back, or move '{folder}' away "
                    f"and load again for a fresh copy.")
            if digests.get(rel, file_digest(path)) != row["sha256"]:
                raise _damaged(path, f"does not match its sha256 in {manifest.name} (truncated or altered)",
                               (folder, XRAY))


def load_chest_xray(
    size: int = 64, data_root: Path | None = None, mirror: Path | None = None,
    val_fraction: float = 0.1, seed: int = 0,
) -> DataSplits:
    """Chest X-rays in 3 classes (normal / bacterial / viral), resized to ``size`` x ``size`` gray.

    Reads the Kermany 2018 layout ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}``; a Kaggle-style
    ``val/`` folder is folded into the training pool. The validation split is drawn by patient, so no
    patient has images in both train and validation. Files whose names do not follow the original
    pattern are skipped with a warning naming them.
    """
    folder = _ensure(XRAY, data_root, mirror)
    pools = {"train": ["train", "val"], "test": ["test"]}
    listing: dict[str, list[tuple[Path, int, str]]] = {"train": [], "test": []}
    skipped: list[str] = []
    for split, subdirs in pools.items():
        for sub in subdirs:
            if not (folder / sub).is_dir():
                continue
            for cls_dir in ("NORMAL", "PNEUMONIA"):
                for f in _list_images(folder / sub / cls_dir, "chest X-ray", folder):
                    parsed = xray_label_and_patient(cls_dir, f.name)
                    if parsed is None:
                        skipped.append(f.relative_to(folder).as_posix())
                        continue
                    listing[split].append((f, XRAY_CLASSES.index(parsed[0]), parsed[1]))
    if skipped:
        warnings.warn(
            f"chest X-ray: skipped {len(skipped)} file(s) whose names do not follow the original "
            f"pattern: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
            stacklevel=2,
        )
    for split in listing:
        present = {label for _, label, _ in listing[split]}
        for label, cls in enumerate(XRAY_CLASSES):
            if label not in present:
                raise DataNotFoundError(f"chest X-ray: no '{cls}' images in the {split} split under {folder}")
    digests = {f.relative_to(folder).as_posix(): file_digest(f) for items in listing.values() for f, _, _ in items}
    _verify_manifest(folder, digests)  # every load, cache or not

    def build() -> dict:
        out = {}
        for split, items in listing.items():
            out[f"{split}_x"] = torch.from_numpy(np.stack([_decode(f, "L", (folder, XRAY), size=size) for f, _, _ in items]))
            out[f"{split}_y"] = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
            out[f"{split}_ids"] = [f.relative_to(folder).as_posix() for f, _, _ in items]
        return out

    raw = _cached(f"xray-{size}px", content_key(digests), folder.parent / "cache", build)
    groups = [patient_of(i) for i in raw["train_ids"]]
    splits = _assemble(
        "Chest X-ray", list(XRAY_CLASSES), raw,
        lambda y: grouped_stratified_split(y, groups, val_fraction, seed), folder,
    )
    splits.note = xray_note(len(splits.train) + len(splits.val) + len(splits.test), splits.sizes(),
                            _source_kinds(folder, raw["train_ids"] + raw["test_ids"]))
    return splits


def _source_kinds(folder: Path, ids: Sequence[str]) -> dict[str, int]:
    """How many of the images ``ids`` each ``source_kind`` of ``manifest.csv`` covers (empty: no such column)."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return {}
    with open(manifest, newline="") as f:
        kinds = {f"{r['split']}/{r['folder']}/{r['file']}": r.get("source_kind") for r in csv.DictReader(f)}
    counts: dict[str, int] = {}
    for image_id in ids:
        kind = kinds.get(image_id)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def xray_note(n_images: int, sizes: str, source_kinds: dict[str, int] | None = None) -> str:
    """What part of the Kermany 2018 release a load holds, and how many images are re-encoded copies."""
    if n_images < 0.99 * KERMANY_IMAGES:
        note = f"Subset of the Kermany 2018 data: {n_images:,} of its {KERMANY_IMAGES:,} images ({sizes})."
    else:
        note = f"Complete Kermany 2018 data: {n_images:,} of its {KERMANY_IMAGES:,} images ({sizes})."
    copies = {k: n for k, n in (source_kinds or {}).items() if k != "original"}
    if copies:
        note += " " + "; ".join(f"{n:,} are '{k}' copies" for k, n in sorted(copies.items())) + " (manifest.csv)."
    return note


# ----------------------------------------------------------------------------------- registry

LOADERS: dict[str, Callable[..., DataSplits]] = {
    "fashion": load_fashion_mnist,
    "simpsons-rgb": lambda **kw: load_simpsons_mnist("rgb", **kw),
    "simpsons-gray": lambda **kw: load_simpsons_mnist("grayscale", **kw),
    "xray": load_chest_xray,
}


def load_dataset(name: str, **kwargs) -> DataSplits:
    """Load a data set by short name: ``fashion``, ``simpsons-rgb``, ``simpsons-gray`` or ``xray``."""
    if name not in LOADERS:
        raise KeyError(f"unknown data set {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name](**kwargs)


def try_load(name: str, **kwargs) -> DataSplits | None:
    """:func:`load_dataset`, but a *missing* data set prints how to get it and returns ``None``.

    Notebooks use it to skip a data set that is not on this machine (corrupt data still raises).
    """
    try:
        return load_dataset(name, **kwargs)
    except DataNotFoundError as exc:
        print(f"SKIPPED {name}: {exc}")
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.data``: fetch and decode every data set; exit 1 naming what is missing and how to get it."""
    missing = []
    for name in LOADERS:
        try:
            splits = load_dataset(name)
        except DataNotFoundError as exc:
            missing.append(f"{name}: {exc}")
            continue
        print(f"{splits.name}: {splits.sizes()} from {splits.source}" + (f" - {splits.note}" if splits.note else ""))
    if missing:
        print(f"\n{len(missing)} data set(s) missing. Get each one of two ways: put its files in "
              f"{paths.data_dir()} (layout in data/README.md), or set ${paths.MIRROR_ENV} to a folder that holds "
              f"them.\n\n" + "\n\n".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from helpers.cli import run

    sys.exit(run(main))
