"""Shared test setup: real data from the mirror, outputs in a temporary folder, fixed seeds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
