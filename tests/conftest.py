"""Shared test setup: real data from the mirror, outputs in a temporary folder, fixed seeds."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import decoding, paths
from helpers.checkpoints import save_checkpoint
from helpers.models import build_model
from helpers.webcam.calibration import Calibration, calibration_path
from helpers.webcam.export import export_onnx

ROOT = paths.project_root()
DEFAULT_MIRROR = ROOT.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Tests read the real data sets: from data/ when present, else from the mirror beside the repo.
    if not os.environ.get(paths.MIRROR_ENV) and DEFAULT_MIRROR.is_dir():
        os.environ[paths.MIRROR_ENV] = str(DEFAULT_MIRROR)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers share the cores: one thread each (notebook kernels inherit the variable).
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory: pytest.TempPathFactory):
    """Everything runs write (TensorBoard, checkpoints, results) goes to a temporary folder."""
    out = tmp_path_factory.mktemp("outputs")
    old = os.environ.get(paths.OUTPUT_DIR_ENV)
    os.environ[paths.OUTPUT_DIR_ENV] = str(out)
    yield out
    if old is None:
        os.environ.pop(paths.OUTPUT_DIR_ENV, None)
    else:
        os.environ[paths.OUTPUT_DIR_ENV] = old


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The local mirror of the real data (``$DATA_MIRROR``, by default ``../shared/data``)."""
    m = paths.mirror_dir()
    assert m is not None and m.is_dir(), (
        f"tests need the real data: set ${paths.MIRROR_ENV} to a folder like ../shared/data"
    )
    return m


@pytest.fixture(scope="session")
def mirror_data_root(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """A fresh data folder filled from the mirror by the loaders themselves (shared by tests)."""
    return tmp_path_factory.mktemp("data-from-mirror")


def copy_dataset(mirror: Path, folder: str, dest_root: Path) -> Path:
    """A writable private copy of one data set folder, for tests that damage files."""
    dest = dest_root / folder
    shutil.copytree(mirror / folder, dest, copy_function=shutil.copyfile)
    return dest


def manifest_rows(folder: Path) -> pd.DataFrame:
    """The rows of an X-ray folder's ``manifest.csv`` (one per image file)."""
    return pd.read_csv(folder / "manifest.csv")


def manifest_counts(folder: Path) -> dict[str, dict[str, int]]:
    """Images per 3-class label in the training pool (train + val folders) and in test, per the manifest."""
    rows = manifest_rows(folder)
    pool = rows["split"].map({"train": "train", "val": "train", "test": "test"})
    return {p: rows[pool == p]["label3"].value_counts().reindex(["normal", "bacterial", "viral"], fill_value=0)
            .astype(int).to_dict() for p in ("train", "test")}


def small_xray_tree(mirror: Path, dest_root: Path, per_label: int = 10, manifest: bool = True,
                    splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """A small real chest X-ray folder in the original layout: the first ``per_label`` files of each
    3-class label from each of ``splits`` of the mirror, with their manifest rows (if ``manifest``)."""
    src = mirror / "chest_xray"
    rows = manifest_rows(src)
    rows = rows[rows["split"].isin(splits)].sort_values(["split", "folder", "file"])
    picked = rows.groupby(["split", "label3"], sort=False).head(per_label)
    dest = dest_root / "chest_xray"
    for r in picked.itertuples():
        (dest / r.split / r.folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r.split / r.folder / r.file, dest / r.split / r.folder / r.file)
    if manifest:
        picked.to_csv(dest / "manifest.csv", index=False)
    return dest


# Probing commands and model files (tests/test_hostile_input*.py)


def cli(*args: str, cwd: Path = ROOT, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    env.pop("HELPERS_DEBUG", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180,
                          errors="backslashreplace")


@pytest.fixture(scope="module")
def real_image(mirror: Path) -> Path:
    """One real Simpsons-MNIST test image (a 28x28 JPEG)."""
    return mirror / "simpsons-mnist" / "dataset" / "rgb" / "test" / "homer_simpson" / sorted(
        p.name for p in (mirror / "simpsons-mnist" / "dataset" / "rgb" / "test" / "homer_simpson").iterdir())[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """An untrained LeNet-5 with the ten Simpsons-MNIST classes and a valid calibration: for the plumbing only."""
    classes = sorted(json.loads(decoding.SIMPSONS_CHECKSUMS.read_text())["folders"])
    classes = sorted({c.split("/")[-1] for c in classes})
    path = save_checkpoint(tmp_path_factory.mktemp("model") / "m.pt", build_model(in_channels=3, seed=0), classes,
                           (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    Calibration(1.5, 0.2, 0.9, "a test").save(calibration_path(path))
    return path


@pytest.fixture(scope="module")
def onnx_file(model_file: Path, tmp_path_factory) -> Path:
    return export_onnx(model_file, tmp_path_factory.mktemp("onnx") / "m.onnx")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` gray pixels (its data is cut short: only the header matters)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
