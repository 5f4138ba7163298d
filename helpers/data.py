"""Loaders for the portfolio's three data sets, as train / validation / test tensors."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torchvision.datasets import FashionMNIST

from helpers import paths
from helpers.decoding import (
    cached_tensors,
    check_md5,
    decode_image,
    list_images,
    read_idx_gz,
    read_manifest,
    verify_manifest,
    verify_simpsons,
    xray_file,
)
from helpers.paths import visible
from helpers.sources import (
    FASHION,
    SIMPSONS,
    XRAY,
    CorruptDataError,
    DataNotFoundError,
    DataSource,
    content_key,
    ensure_dataset,
    file_digest,
)
from helpers.splits import DataSplits, Split, grouped_stratified_split, stratified_split

XRAY_CLASSES = ["normal", "bacterial", "viral"]
#: Images in the published Kermany 2018 release (ChestXRay2017 v2): 5,216 train + 16 val + 624 test.
KERMANY_IMAGES = 5856
_PNEUMONIA_NAME = re.compile(r"^(person\d+)_(bacteria|virus)_\d+\.jpe?g$", re.IGNORECASE)
_NORMAL_NAME = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+(?:-\d+)?\.jpe?g$", re.IGNORECASE)

T = TypeVar("T")


def _ensure(source: DataSource, data_root: Path | None, mirror: Path | None) -> Path:
    """``ensure_dataset`` with the X-ray's manual steps pointing at the real target folder."""
    root = Path(data_root) if data_root is not None else paths.data_dir()
    if source.manual_steps:
        source = replace(source, manual_steps=source.manual_steps.format(target=root / source.folder))
    return ensure_dataset(source, root, mirror)


# ----------------------------------------------------------------------------------- assembly


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


# ----------------------------------------------------------------------------------- Fashion-MNIST


def load_fashion_mnist(
    data_root: Path | None = None, mirror: Path | None = None, val_fraction: float = 0.1, seed: int = 0,
) -> DataSplits:
    """Fashion-MNIST: 60,000 train (minus a stratified validation slice) and 10,000 test images."""
    folder = _ensure(FASHION, data_root, mirror)
    files = {fname: folder / "raw" / fname for fname, _ in FashionMNIST.resources}

    def build() -> dict:
        arrays = {f: read_idx_gz(p, (folder, FASHION)) for f, p in files.items()}
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

    digests = {f: check_md5(files[f], md5, (folder, FASHION)) for f, md5 in FashionMNIST.resources}  # every load
    raw = cached_tensors("fashion", content_key(digests), folder.parent / "cache", build)
    return _assemble(
        "Fashion-MNIST", list(FashionMNIST.classes), raw,
        lambda y: stratified_split(y, val_fraction, seed), folder,
    )


# ----------------------------------------------------------------------------------- Simpsons-MNIST


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
    listing = {s: [(c, list_images(d / c, "Simpsons-MNIST", folder)) for c in classes] for s, d in split_dirs.items()}
    mode = "RGB" if color == "rgb" else "L"

    def build() -> dict:
        out = {}
        for split, per_class in listing.items():
            xs, ys, ids = [], [], []
            for label, (_, files) in enumerate(per_class):
                for f in files:
                    xs.append(decode_image(f, mode, (folder, SIMPSONS), expect=28))
                    ys.append(label)
                    ids.append(f.relative_to(folder).as_posix())
            out[f"{split}_x"] = torch.from_numpy(np.stack(xs))
            out[f"{split}_y"] = torch.tensor(ys, dtype=torch.int64)
            out[f"{split}_ids"] = ids
        return out

    content = verify_simpsons(folder, SIMPSONS, color, {s: dict(per_class) for s, per_class in listing.items()}, mirror)
    raw = cached_tensors(f"simpsons-{color}", content, folder.parent / "cache", build)
    return _assemble(
        f"Simpsons-MNIST ({color})", classes, raw,
        lambda y: stratified_split(y, val_fraction, seed), folder,
    )


# ----------------------------------------------------------------------------------- chest X-ray


def xray_label_and_patient(folder_name: str, file_name: str) -> tuple[str, str] | None:
    """``(label, patient)`` read from a Kermany file name, or ``None`` if the name is unknown."""
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


def load_chest_xray(
    size: int = 64, data_root: Path | None = None, mirror: Path | None = None,
    val_fraction: float = 0.1, seed: int = 0,
) -> DataSplits:
    """Chest X-rays in 3 classes (normal / bacterial / viral), resized to ``size`` x ``size`` gray."""
    folder = _ensure(XRAY, data_root, mirror)
    pools = {"train": ["train", "val"], "test": ["test"]}
    listing: dict[str, list[tuple[Path, int, str]]] = {"train": [], "test": []}
    skipped: list[str] = []
    image_files: list[str] = []  # every image file, named in the pattern or not: checked against manifest.csv
    for split, subdirs in pools.items():
        for sub in subdirs:
            if not (folder / sub).is_dir():
                continue
            for cls_dir in ("NORMAL", "PNEUMONIA"):
                for f in list_images(folder / sub / cls_dir, "chest X-ray", folder):
                    image_files.append(f.relative_to(folder).as_posix())
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
    verify_manifest(folder, XRAY, digests, image_files)  # every load, cache or not

    def build() -> dict:
        out = {}
        for split, items in listing.items():
            out[f"{split}_x"] = torch.from_numpy(np.stack([decode_image(f, "L", (folder, XRAY), size=size) for f, _, _ in items]))
            out[f"{split}_y"] = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
            out[f"{split}_ids"] = [f.relative_to(folder).as_posix() for f, _, _ in items]
        return out

    raw = cached_tensors(f"xray-{size}px", content_key(digests), folder.parent / "cache", build)
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
    kinds = {xray_file(r): r.get("source_kind") for r in read_manifest(manifest, ("split", "folder", "file"), xray_file)}
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


def load_dataset(name: str, **kwargs: Any) -> DataSplits:
    """Load a data set by short name: ``fashion``, ``simpsons-rgb``, ``simpsons-gray`` or ``xray``."""
    if name not in LOADERS:
        raise KeyError(f"unknown data set {name!r}; choose from {sorted(LOADERS)}")
    return LOADERS[name](**kwargs)


def if_present(name: str, load: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``load(...)``; a *missing* data set prints one ``SKIPPED`` line and gives None (corrupt data raises)."""
    try:
        return load(*args, **kwargs)
    except DataNotFoundError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        fix = next((line for line in lines[1:] if line.startswith("Fix:")), "")
        print(f"SKIPPED {name}: {' '.join(filter(None, [lines[0] if lines else '', fix]))}")
        return None


def try_load(name: str, **kwargs: Any) -> DataSplits | None:
    """:func:`load_dataset`, or None when the data set is missing (:func:`if_present`)."""
    return if_present(name, load_dataset, name, **kwargs)


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
    from helpers import plumbing

    sys.exit(plumbing.run(main))
