"""Where each data set's files come from: ``data/``, a local mirror, or the public source.

Order of preference, for every data set:

1. the project's ``data/<folder>`` if the data set's required files are there;
2. else a copy from ``$DATA_MIRROR/<folder>`` (CI and tests point it at ``../shared/data``);
3. else a download from the data set's public source (or, where the host needs an account,
   an error that says exactly where to get the files and where to put them).

Copies and downloads land in a temporary folder first and are renamed into place at the end,
so an interrupted copy never leaves a half data set that looks complete.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from helpers import paths


class DataError(RuntimeError):
    """Base class of every data problem this project reports."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set (or a required part of it) is missing everywhere we looked."""


class CorruptDataError(DataError, ValueError):
    """A data file exists but is truncated, undecodable or fails its checksum."""


@dataclass(frozen=True)
class DataSource:
    """How to find one data set on disk and how to fetch it when it is missing."""

    name: str  #: human name, used in messages
    folder: str  #: folder name inside ``data/`` and inside the mirror
    required: tuple[str, ...]  #: paths relative to ``folder`` that must exist
    homepage: str  #: where the data set is published
    licence: str
    download: Callable[[Path], None] | None = None  #: fills a folder with the data set
    manual_steps: str = ""  #: what to do by hand when there is no automatic download
    notes: tuple[str, ...] = field(default=())

    def missing_in(self, root: Path) -> list[str]:
        """The required paths absent from ``root`` (empty: the data set is there)."""
        return [rel for rel in self.required if not (root / rel).exists()]


def ensure_dataset(
    source: DataSource,
    data_root: Path | None = None,
    mirror: Path | None = None,
    allow_download: bool = True,
) -> Path:
    """Make sure ``source`` is present under ``data_root`` and return its folder.

    ``data_root`` defaults to :func:`helpers.paths.data_dir` and ``mirror`` to ``$DATA_MIRROR``.
    Raises :class:`DataNotFoundError` naming every place it looked when nothing works.
    """
    data_root = Path(data_root) if data_root is not None else paths.data_dir()
    mirror = Path(mirror) if mirror is not None else paths.mirror_dir()
    target = data_root / source.folder
    if not source.missing_in(target):
        return target

    looked = [f"{target} (missing: {', '.join(source.missing_in(target))})"]
    if mirror is not None:
        candidate = mirror / source.folder
        missing = source.missing_in(candidate)
        if not missing:
            _copy_atomically(candidate, target, source)
            return target
        looked.append(f"{candidate} (missing: {', '.join(missing)})")
    else:
        looked.append(f"no mirror (${paths.MIRROR_ENV} is not set)")

    if allow_download and source.download is not None:
        try:
            _download_atomically(source, target)
        except (OSError, zipfile.BadZipFile) as exc:  # network down, host gone, bad archive
            looked.append(f"download from {source.homepage} failed: {exc}")
        else:
            missing = source.missing_in(target)
            if not missing:
                return target
            looked.append(f"download finished but lacks: {', '.join(missing)}")

    how = source.manual_steps or (
        f"Download it from {source.homepage} into {target}, or set ${paths.MIRROR_ENV} to a "
        f"folder that holds '{source.folder}/'."
    )
    raise DataNotFoundError(
        f"{source.name} not found. Looked in:\n  - " + "\n  - ".join(looked) + f"\nFix: {how}"
    )


def _copy_atomically(src: Path, dst: Path, source: DataSource) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        # copyfile, not copy2: mirrors are often read-only and the copy must stay writable.
        shutil.copytree(src, tmp / "x", copy_function=shutil.copyfile)
        _replace_dir(tmp / "x", dst, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download_atomically(source: DataSource, dst: Path) -> None:
    assert source.download is not None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    try:
        source.download(tmp)
        _replace_dir(tmp, dst, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(new: Path, dst: Path, source: DataSource) -> None:
    if dst.exists():
        if not source.missing_in(dst):  # another process finished the same copy meanwhile: keep theirs
            return
        shutil.rmtree(dst)  # an incomplete earlier copy: replace it whole
    try:
        new.rename(dst)
    except OSError:
        if source.missing_in(dst):  # lost a race to a complete copy is fine; anything else is not
            raise


def download_file(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` with a progress bar; verify ``md5`` when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "lenet5-portfolio"})
    with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    if md5 is not None and file_digest(part, "md5") != md5:
        part.unlink()
        raise CorruptDataError(f"{url}: downloaded file does not match its published md5 {md5}")
    part.replace(dest)
    return dest


def download_zip_folder(url: str, inner: str, dest: Path) -> None:
    """Download a zip archive and extract its folder ``inner`` (any top-level prefix) to ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = download_file(url, Path(tmp) / "archive.zip")
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if f"/{inner}/" in f"/{m}"]
            if not members:
                raise CorruptDataError(f"{url}: archive has no folder '{inner}/'")
            for member in tqdm(members, desc=f"extracting {inner}", leave=False):
                rel = member[member.index(inner) :]
                if member.endswith("/"):
                    continue
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(files: Sequence[Path], root: Path) -> str:
    """A short hash of file names and sizes: changes when the data on disk changes."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.relative_to(root).as_posix()}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]
