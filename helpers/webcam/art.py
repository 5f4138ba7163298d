"""Simpsons character art that is not frames of the show: what the webcam model meets in a print or a drawing.

The set (``simpsons-art/``, described in the data mirror's README) holds renders, game sprites and trading
cards of the ten Simpsons-MNIST characters, each file listed in ``manifest.csv`` with its source, its sha256
and a ``dev`` / ``test`` half (whole drawings on one side). It is for evaluation only: no model trains on
it, and its files are never committed (their repositories state no licence). :func:`load_art` finds it like
every data set (``data/`` → ``$DATA_MIRROR``; there is no public download) and checks it; :func:`score_art`
runs a predictor over it with a stated framing; :func:`art_table` counts what a user would see: right,
right and sure, wrong and sure, not sure, with counts and Wilson intervals.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.decoding import extra_files_message
from helpers.sources import CorruptDataError, DataNotFoundError, DataSource, ensure_dataset, file_digest, list_files
from helpers.stats import binomial_interval
from helpers.webcam.camera import read_image

ART = DataSource(
    name="Simpsons character art (evaluation only)",
    folder="simpsons-art",
    required=("manifest.csv",),
    homepage="the data mirror's README (simpsons-art/)",
    licence="none stated by its source repositories: evaluation in this portfolio only, never redistributed",
    download=None,
    manual_steps=("the art set has no public download: set $DATA_MIRROR to a folder that holds 'simpsons-art/' "
                  "(with its manifest.csv), or copy that folder to {target}"),
)
SPLITS = ("dev", "test")


@dataclass
class ArtImage:
    """One file of the art set: its character, half, drawing group and kind, and its pixels (BGR, on white)."""

    file: str
    label: str
    split: str
    artgroup: str
    kind: str
    frame: np.ndarray


def load_art(data_root: Path | None = None, mirror: Path | None = None) -> list[ArtImage]:
    """Every file of the art set, checked against ``manifest.csv`` (sha256; a listed file missing, or a file not
    listed, stops the load with its name; hidden files are ignored); DataNotFoundError when it is not here."""
    folder = ensure_dataset(ART, data_root, mirror, allow_download=False)
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    listed = {r["file"] for r in rows}
    extra = sorted(list_files(folder) - listed - {"manifest.csv"})
    if extra:
        raise CorruptDataError(extra_files_message(f"simpsons-art: {folder}", extra, "its manifest.csv", folder))
    images = []
    for r in rows:
        path = folder / r["file"]
        if not path.is_file():
            raise DataNotFoundError(f"simpsons-art: {path} is listed in its manifest.csv but missing; copy the "
                                    f"folder again from the mirror")
        if file_digest(path) != r["sha256"]:
            raise CorruptDataError(f"simpsons-art: {path} does not match its sha256 in manifest.csv (truncated or "
                                   f"altered); copy the folder again from the mirror")
        if r["split"] not in SPLITS:
            raise CorruptDataError(f"simpsons-art: {r['file']} is in split {r['split']!r}, not one of {SPLITS}")
        images.append(ArtImage(r["file"], r["class"], r["split"], r["artgroup"], r["kind"], read_image(path)))
    return images


def try_load_art(**kwargs: Any) -> list[ArtImage] | None:
    """:func:`load_art`, or None with one line saying how to get the set (the rest of a notebook still runs)."""
    try:
        return load_art(**kwargs)
    except DataNotFoundError as exc:
        fix = next((line.strip() for line in str(exc).splitlines() if line.startswith("Fix:")), "")
        print(f"SKIPPED simpsons-art: not on this machine. {fix}")
        return None


def score_art(predictor: Any, images: Sequence[ArtImage], fit: str) -> pd.DataFrame:
    """One row per image: the predictor's answer with ``fit`` (``"pad"`` or ``"crop"``), its confidence, whether it
    was sure and right."""
    before, predictor.fit = getattr(predictor, "fit", "crop"), fit
    try:
        preds = predictor.predict_many([im.frame for im in images])
    finally:
        predictor.fit = before
    return pd.DataFrame([{"file": im.file, "class": im.label, "split": im.split, "kind": im.kind, "framing": fit,
                          "answer": p.label, "confidence": p.confidence, "sure": p.sure, "right": p.label == im.label}
                         for im, p in zip(images, preds)])


def _rates(rows: pd.DataFrame) -> dict[str, Any]:
    n = len(rows)
    right, sure = rows["right"].to_numpy(), rows["sure"].to_numpy()
    counts = {"top-1": int(right.sum()), "right and sure": int((right & sure).sum()),
              "wrong and sure": int((~right & sure).sum()), "not sure": int((~sure).sum())}
    out: dict[str, Any] = {"images": n}
    for name, k in counts.items():
        low, high = binomial_interval(k, n)
        out[f"{name} %"] = 100 * k / n
        out[f"{name} 95 % CI"] = f"{100 * low:.0f}–{100 * high:.0f}"
    return out


def art_table(scores: pd.DataFrame, by: Sequence[str] = ("split",)) -> pd.DataFrame:
    """Top-1, right and sure, wrong and sure, and not sure (%, with Wilson 95 % intervals and image counts) per
    group of ``by`` (e.g. split, kind, class)."""
    table = pd.DataFrame({key if isinstance(key, tuple) else (key,): _rates(g)
                          for key, g in scores.groupby(list(by), sort=True)}).T.rename_axis(list(by))
    for column in table.columns:
        if column == "images" or column.endswith(" %"):
            table[column] = pd.to_numeric(table[column]).round(1 if column != "images" else 0)
    return table.astype({"images": int})
