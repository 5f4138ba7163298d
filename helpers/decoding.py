"""Reading and checking the files of a data set: listing, decoding, checksums and the decoded cache."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import pickle
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from helpers import paths
from helpers.paths import printable, visible
from helpers.plumbing import read_checked, remove_checked, write_checked
from helpers.sources import (
    CorruptDataError,
    DataNotFoundError,
    DataSource,
    content_key,
    damaged_file_advice,
    file_digest,
)

#: The image files of the three data sets (a photo of a print is read by helpers.webcam.camera, PHOTO_SUFFIXES).
DATASET_SUFFIXES = {".jpg", ".jpeg", ".png"}
#: What every loader's decoded cache holds: images, labels and file ids of the training pool and the test split.
CACHE_KEYS = tuple(f"{split}_{what}" for split in ("train", "test") for what in ("x", "y", "ids"))


def cached_tensors(key: str, content: str, cache_dir: Path, build: Callable[[], dict],
                   required: Sequence[str] = CACHE_KEYS) -> dict:
    """Return ``build()``'s tensors, from ``cache_dir/<key>-<content>.pt`` when present and intact."""
    path = cache_dir / f"{key}-{content}.pt"
    if path.exists():
        try:
            cached = torch.load(io.BytesIO(read_checked(path)), weights_only=True)
            lacking = [k for k in required if not isinstance(cached, dict) or k not in cached]
            if lacking:
                raise ValueError(f"{path.name} lacks {', '.join(lacking)}")
            check_shapes(cached)
            return cached
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            reason = ("it holds objects other than tensors, which are not loaded" if isinstance(exc, pickle.UnpicklingError)
                      else str(exc))
            warnings.warn(f"decoded-data cache not used, rebuilding it: {reason}", stacklevel=3)
            remove_checked(path)
    raw = build()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{key}-*.pt"):  # caches of files that have changed since
            if stale != path:
                remove_checked(stale)
        buffer = io.BytesIO()
        torch.save(raw, buffer)
        write_checked(path, buffer.getvalue())
    except OSError as exc:
        remove_checked(path)  # never half a cache with a checksum beside it
        warnings.warn(f"decoded-data cache not written, the data are used without it: {exc}", stacklevel=3)
    return raw


def check_shapes(tensors: dict) -> None:
    """ValueError unless each split's images (N, C, H, W uint8), labels (N integers from 0) and ids (N) fit together."""
    shapes = set()
    for split in sorted(k.removesuffix("_x") for k in tensors if k.endswith("_x")):
        x, y, ids = (tensors.get(f"{split}_{what}") for what in ("x", "y", "ids"))
        fits = (isinstance(x, torch.Tensor) and x.ndim == 4 and x.dtype == torch.uint8
                and isinstance(y, torch.Tensor) and y.shape == (len(x),) and not y.is_floating_point()
                and (len(y) == 0 or int(y.min()) >= 0) and ids is not None and len(ids) == len(x))
        if not fits:
            raise ValueError(f"its {split} images, labels and ids do not fit together (shapes "
                             f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}, "
                             f"{len(ids) if ids is not None else 'no'} ids)")
        shapes.add(tuple(x.shape[1:]))
    if len(shapes) > 1:
        raise ValueError(f"its splits hold images of different sizes {sorted(shapes)}")


def list_images(folder: Path, dataset: str, root: Path) -> list[Path]:
    """The visible image files of one class folder (hidden ``._x.jpg`` / ``.DS_Store`` are skipped)."""
    fix = f"Put its images back, or move '{root}' away and load again for a fresh copy."
    if not folder.is_dir():
        raise DataNotFoundError(f"{dataset}: class folder {folder} is missing. {fix}")
    files = sorted(p for p in folder.iterdir() if visible(p) and p.suffix.lower() in DATASET_SUFFIXES)
    special = [p for p in files if not p.is_file()]  # a pipe or a device (a link to /dev/zero) would hang the reader
    if special:
        names = ", ".join(printable(p.name) for p in special[:5]) + (" ..." if len(special) > 5 else "")
        raise CorruptDataError(f"{dataset}: {printable(str(folder))} holds {len(special):,} image name(s) that are not "
                               f"regular files (a pipe, a device or a folder): {names}. Nothing was loaded; move them "
                               f"out of the folder, then load again")
    if not files:
        raise DataNotFoundError(f"{dataset}: class folder {folder} holds no images. {fix}")
    return files


def damaged(path: Path, problem: str, origin: tuple[Path, DataSource]) -> CorruptDataError:
    """The error for a damaged data file: what is wrong and how to fix it, by where the file came from."""
    return CorruptDataError(f"{path}: {problem}. {damaged_file_advice(path, *origin)}")


def decode_image(path: Path, mode: str, origin: tuple[Path, DataSource], size: int | None = None,
                 expect: int | None = None) -> np.ndarray:
    """Decode one image as ``mode`` ('L' or 'RGB'); resize to ``size`` or check it is ``expect``."""
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft(mode, (size, size))  # JPEG: decode at reduced scale, much faster
                im = im.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
            else:
                im = im.convert(mode)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # far larger than any image of these data sets
        raise damaged(path, f"not an image of this data set: {exc}", origin) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise damaged(path, f"cannot decode image ({exc})", origin) from exc
    if expect is not None and arr.shape[:2] != (expect, expect):
        raise damaged(path, f"image is {arr.shape[1]}x{arr.shape[0]}, expected {expect}x{expect}", origin)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def check_md5(path: Path, md5: str, origin: tuple[Path, DataSource]) -> str:
    """``path``'s md5 if it is the published ``md5``; else a :class:`CorruptDataError` with the fix."""
    got = file_digest(path, "md5")
    if got != md5:
        raise damaged(path, f"md5 {got} differs from the published {md5}, so the file is truncated or altered", origin)
    return got


def read_idx_gz(path: Path, origin: tuple[Path, DataSource]) -> np.ndarray:
    """The array in a gzipped IDX file of unsigned bytes (Fashion-MNIST's format), checked for length."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise damaged(path, f"not a readable gzip file ({exc})", origin) from exc
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise damaged(path, f"not an IDX file of unsigned bytes (magic {magic:#x})", origin)
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise damaged(path, f"holds {body.size} bytes of data, header says {shape}", origin)
    return body.reshape(shape)


#: Per class folder of the published Simpsons-MNIST: file count and a digest of its files' sha256s.
SIMPSONS_CHECKSUMS = Path(__file__).with_name("checksums") / "simpsons-mnist.json"


def _folder_digest(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """(digest of a class folder, ``{file name: sha256}``), as in :data:`SIMPSONS_CHECKSUMS`."""
    per_file = {f.name: file_digest(f) for f in sorted(files, key=lambda p: p.name)}
    h = hashlib.sha256()
    for name, digest in per_file.items():
        h.update(f"{name} {digest}\n".encode())
    return h.hexdigest(), per_file


def verify_simpsons(folder: Path, source: DataSource, color: str, listing: dict[str, dict[str, list[Path]]], mirror: Path | None) -> str:
    """Check every class folder against :data:`SIMPSONS_CHECKSUMS`; returns the content key for the cache."""
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
                raise CorruptDataError(_simpsons_mismatch(folder, source, rel, per_file, expected[rel], mirror))
    return content_key(digests)


def _simpsons_mismatch(folder: Path, source: DataSource, rel: str, per_file: dict[str, str], expected: dict, mirror: Path | None) -> str:
    where = folder / "dataset" / rel
    msg = (f"Simpsons-MNIST: the files in {where} do not match the published data set's checksums "
           f"({len(per_file)} files here, {expected['files']} published)")
    reference = (Path(mirror) if mirror is not None else paths.mirror_dir() or Path("/nonexistent")) / source.folder
    ref_files = [p for p in (reference / "dataset" / rel).glob("*") if visible(p) and p.suffix.lower() in DATASET_SUFFIXES]
    if ref_files:
        ref_digest, ref_per_file = _folder_digest(ref_files)
        if ref_digest == expected["sha256"]:
            changed = sorted(n for n in per_file if n in ref_per_file and per_file[n] != ref_per_file[n])
            missing = sorted(set(ref_per_file) - set(per_file))
            extra = sorted(set(per_file) - set(ref_per_file))
            if extra and not changed and not missing:
                return extra_files_message(f"Simpsons-MNIST: {where}", extra, "the published checksum list", where)
            for what, names in (("altered", changed), ("missing", missing), ("not in the data set", extra)):
                if names:
                    msg += f"; {what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
            return msg + f". {damaged_file_advice(where / (changed or missing)[0], folder, source)}"
    return msg + f". Replace the folder with a good copy from {source.homepage}, or move '{folder}' away and load again."


def read_manifest(manifest: Path, columns: Sequence[str], where: Callable[[dict[str, str]], str]) -> list[dict[str, str]]:
    """A manifest's rows, checked: the ``columns`` present, each row's file (``where``) inside its folder and once."""
    with open(manifest, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of a name
        reader = csv.DictReader(f)
        lacking = [c for c in columns if c not in (reader.fieldnames or [])]
        if lacking:
            raise CorruptDataError(f"{manifest} lacks the column(s) {', '.join(lacking)} (it has: "
                                   f"{', '.join(reader.fieldnames or []) or 'none'}); restore it from the mirror")
        rows = list(reader)
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        rel = where(row)
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts:
            raise CorruptDataError(f"{manifest}, line {n}: {printable(rel)!r} is not a file inside "
                                   f"{printable(str(manifest.parent))}; a manifest names its own files only. "
                                   f"Restore it from the mirror")
        if rel in seen:
            raise CorruptDataError(f"{manifest}, line {n}: {printable(rel)} is listed twice (it would count twice); "
                                   f"restore the manifest from the mirror")
        seen.add(rel)
    return rows


def xray_file(row: dict[str, str]) -> str:
    """An X-ray manifest row's file, relative to the data set's folder."""
    return f"{row['split']}/{row['folder']}/{row['file']}"


def verify_manifest(folder: Path, source: DataSource, digests: dict[str, str], present: Sequence[str] = ()) -> None:
    """Check files against ``manifest.csv`` (sha256); a file ``present`` but not listed stops the load."""
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return
    listed = set()
    for row in read_manifest(manifest, ("split", "folder", "file", "sha256"), xray_file):
        rel = xray_file(row)
        listed.add(rel)
        path = folder / rel
        if not path.is_file():  # missing, or a pipe or device that hashing would wait on forever
            raise DataNotFoundError(
                f"chest X-ray: {path} is listed in {manifest} but is not a regular file there. Put it back, or move "
                f"'{folder}' away and load again for a fresh copy.")
        if (digests[rel] if rel in digests else file_digest(path)) != row["sha256"]:
            raise damaged(path, f"does not match its sha256 in {manifest.name} (truncated or altered)",
                          (folder, source))
    extra = sorted(set(present) - listed)
    if extra:
        raise CorruptDataError(extra_files_message(f"chest X-ray: {folder}", extra, f"its {manifest.name}", folder))


def extra_files_message(what: str, extra: Sequence[str], reference: str, move_from: Path) -> str:
    """Why a load stops on files that are not part of the published data set, and how to fix it."""
    names = ", ".join(printable(n) for n in extra[:5]) + (f" and {len(extra) - 5:,} more" if len(extra) > 5 else "")
    return (f"{what} holds {len(extra):,} file(s) that are not in {reference}, so not part of the published data "
            f"set: {names}. Nothing was loaded: an extra file (say, a test image copied into train) would change "
            f"what the models are trained or scored on. Move the file(s) out of {move_from}, then load again.")
