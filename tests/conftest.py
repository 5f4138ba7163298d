"""Shared test setup: real data from the mirror, outputs in a temporary folder, fixed seeds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import paths

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
