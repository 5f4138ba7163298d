"""Where each data set's files come from: ``data/``, a local mirror, or the public source."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets import FashionMNIST
from tqdm import tqdm

from helpers import paths


class DataError(RuntimeError):
    """Base class of every data problem this project reports."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set (or a required part of it) is missing everywhere we looked."""


class CorruptDataError(DataError, ValueError):
    """A data file exists but is truncated, undecodable or fails its checksum."""


class IncompleteDataError(DataError):
    """A data set folder exists in ``data/`` but lacks required files (it is left untouched)."""


PROVENANCE = ".provenance.json"


def list_files(folder: Path) -> set[str]:
    """Every visible file under ``folder`` (not under a hidden folder), as relative POSIX paths."""
    if not folder.is_dir():
        return set()
    out = set()
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and all(not part.startswith(".") for part in rel.parts):
            out.add(rel.as_posix())
    return out


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

    def missing_in(self, root: Path) -> list[str]:
        """The required paths absent from ``root`` (empty: the data set is there)."""
        return [rel for rel in self.required if not (root / rel).exists()]


def ensure_dataset(
    source: DataSource,
    data_root: Path | None = None,
    mirror: Path | None = None,
    allow_download: bool = True,
) -> Path:
    """Make sure ``source`` is present under ``data_root`` and return its folder."""
    data_root = Path(data_root) if data_root is not None else paths.data_dir()
    mirror = Path(mirror) if mirror is not None else paths.mirror_dir()
    target = data_root / source.folder
    remove_abandoned(target)
    if not source.missing_in(target):
        return target
    if target.exists() and any(target.iterdir()):  # somebody's folder: never changed, never replaced
        raise IncompleteDataError(incomplete_message(source, target, mirror))

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
        f"{source.name} not found. Looked in:\n  - " + "\n  - ".join(looked) + f"\nFix: {how}\n"
        f"Licence of the data set: {source.licence}."
    )


#: In each temporary folder a copy or download is made in: who is making it (a killed process leaves it behind).
OWNER = ".portfolio-partial"


def _partial_folder(dst: Path) -> Path:
    """A new hidden folder beside ``dst`` to build it in, marked with this process as its owner."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    (tmp / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
    return tmp


def remove_abandoned(dst: Path) -> list[Path]:
    """Delete the partial folders of ``dst`` whose owner process is gone (killed mid-copy); returns them."""
    removed = []
    for tmp in dst.parent.glob(f".{glob.escape(dst.name)}-*") if dst.parent.is_dir() else ():
        try:
            owner = json.loads((tmp / OWNER).read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):  # no owner record: not ours to delete
            continue
        if host == socket.gethostname() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _copy_atomically(src: Path, dst: Path, source: DataSource) -> None:
    tmp = _partial_folder(dst)
    try:
        # copyfile, not copy2: mirrors are often read-only and the copy must stay writable.
        try:
            shutil.copytree(src, tmp / "x", copy_function=shutil.copyfile)
            _write_provenance(tmp / "x", "mirror", str(src))
        except shutil.Error as exc:  # one (source, destination, reason) per file that failed: name the first
            failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
            first = failures[0] if failures else ("?", "?", str(exc))
            more = f" (and {len(failures) - 1:,} more file(s))" if len(failures) > 1 else ""
            raise DataError(f"{source.name}: copying from the mirror {src} failed at {first[0]}: {first[2]}{more}. "
                            f"Nothing was left behind in {dst.parent}; free some space (or fix the permission) and "
                            f"load again") from None
        except OSError as exc:
            raise DataError(f"{source.name}: copying from the mirror {src} failed: {exc}. Nothing was left behind "
                            f"in {dst.parent}; free some space (or fix the permission) and load again") from None
        _move_into_place(tmp / "x", dst, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, never the user's


def _download_atomically(source: DataSource, dst: Path) -> None:
    assert source.download is not None
    tmp = _partial_folder(dst)
    try:
        (tmp / "x").mkdir()
        source.download(tmp / "x")
        _write_provenance(tmp / "x", "download", source.homepage)
        _move_into_place(tmp / "x", dst, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_provenance(folder: Path, kind: str, origin: str) -> None:
    record = {"source": kind, "from": origin, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
    (folder / PROVENANCE).write_text(json.dumps(record) + "\n")


def provenance(folder: Path) -> dict[str, str] | None:
    """Where the project got ``folder`` from (``source``, ``from``), or None if it did not put it there."""
    try:
        return json.loads((Path(folder) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None


def _move_into_place(new: Path, dst: Path, source: DataSource) -> None:
    if dst.exists():
        if not source.missing_in(dst):  # another process finished the same copy meanwhile: keep theirs
            return
        if any(dst.iterdir()):  # appeared meanwhile and incomplete: somebody's, so left alone
            raise IncompleteDataError(incomplete_message(source, dst, None))
        dst.rmdir()  # an empty folder
    try:
        new.rename(dst)
    except OSError:
        if source.missing_in(dst):  # lost a race to a complete copy is fine; anything else is not
            raise


def incomplete_message(source: DataSource, target: Path, mirror: Path | None) -> str:
    """Why ``target`` cannot be used as it is, what is missing (and extra), and the two ways to fix it."""
    lines = [f"{source.name}: the folder {target} is incomplete (missing: {', '.join(source.missing_in(target))})."]
    reference = mirror / source.folder if mirror is not None else None
    if reference is not None and not source.missing_in(reference):
        here, there = list_files(target), list_files(reference)
        for what, names in (("missing here", sorted(there - here)), ("here but not in the mirror", sorted(here - there))):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5:,} more" if len(names) > 5 else "")
                lines.append(f"Compared with the mirror {reference}: {len(names):,} file(s) {what}: {shown}.")
    fresh = f"from the mirror {reference}" if reference is not None and not source.missing_in(reference) else (
        f"from {source.homepage}")
    lines.append(
        "Nothing in it was changed or deleted. Fix it one of two ways:\n"
        f"  1. complete it yourself: put the missing files in place (the data set is published at {source.homepage});\n"
        f"  2. move it away (e.g. mv '{target}' '{target}.mine') and load again: a fresh copy then comes {fresh}."
    )
    return "\n".join(lines)


def damaged_file_advice(path: Path, folder: Path, source: DataSource) -> str:
    """How to fix the damaged file ``path`` of the data set in ``folder``, by where the file came from."""
    origin = provenance(folder)
    move_away = f"move '{folder}' away (e.g. to '{folder}.damaged') and load again"
    if origin is None:
        return (f"{path.name} is in your own copy of {source.name} (not put there by this project): replace it with a "
                f"good copy from {source.homepage}, or {move_away} to get a fresh copy.")
    if origin.get("source") == "mirror":
        mirrored = Path(origin["from"]) / Path(path).relative_to(folder)
        if mirrored.exists() and Path(path).exists() and file_digest(mirrored) == file_digest(path):
            return (f"{path.name} was copied from the mirror, whose own copy {mirrored} is damaged the same way, so "
                    f"re-copying would not help: replace that file with a good copy from {source.homepage} (or unset "
                    f"${paths.MIRROR_ENV} to download instead), then {move_away}.")
        return f"{path.name} was copied from the mirror {origin['from']}, whose copy differs: {move_away} to re-copy it."
    return f"{path.name} was downloaded from {origin.get('from')}: {move_away} to download it afresh."


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
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        archive = download_file(url, Path(tmp) / "archive.zip")
        extract_zip_folder(archive, inner, dest, url)


def extract_zip_folder(archive: Path, inner: str, dest: Path, origin: str) -> None:
    """Extract folder ``inner`` of zip ``archive`` to ``dest``, refusing members outside ``dest``."""
    root = Path(dest).resolve()
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.namelist() if f"/{inner}/" in f"/{m}"]
        if not members:
            raise CorruptDataError(f"{origin}: archive has no folder '{inner}/'")
        targets = {}
        for member in members:
            rel = member[member.index(inner):]
            out = (root / rel).resolve()
            if member.startswith("/") or not out.is_relative_to(root):
                raise CorruptDataError(f"{origin}: the archive member {member!r} would be written outside {dest}; "
                                       f"nothing was extracted (the archive is not the published one)")
            if not member.endswith("/"):
                targets[member] = out
        for member, out in tqdm(targets.items(), desc=f"extracting {inner}", leave=False):
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


def content_key(digests: dict[str, str]) -> str:
    """A short hash of ``{relative path: sha256}``: changes whenever any file's content changes."""
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(f"{rel}:{digests[rel]}\n".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------- the three data sets


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

#: The commit the checksum list (helpers/checksums/simpsons-mnist.json) was made from, not the moving branch head.
SIMPSONS_COMMIT = "f70f4e60d21a5fac0e6bd99f7879f5751ccef673"
SIMPSONS_URL = f"https://github.com/alvarobartt/simpsons-mnist/archive/{SIMPSONS_COMMIT}.zip"
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
