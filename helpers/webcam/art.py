"""Simpsons character art that is not frames of the show: what the webcam model meets in a print or a drawing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.data import if_present
from helpers.decoding import extra_files_message, read_manifest
from helpers.provenance import fingerprint_bytes
from helpers.sources import CorruptDataError, DataNotFoundError, DataSource, ensure_dataset, file_digest, list_files
from helpers.stats import Decision, binomial_interval, finding, target
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
    sha256: str = ""


class ArtSet(list):
    """The art set's images (a list of :class:`ArtImage`), with a name and a fingerprint for the run stamp."""
    name = "Simpsons character art"

    def fingerprint(self) -> str:
        """A short sha256 over the files' names and their manifest digests."""
        return fingerprint_bytes(f"{im.file}:{im.sha256}".encode() for im in self)


def load_art(data_root: Path | None = None, mirror: Path | None = None) -> ArtSet:
    """Every art-set file, checked against ``manifest.csv``; DataNotFoundError when it is not here."""
    folder = ensure_dataset(ART, data_root, mirror, allow_download=False)
    rows = read_manifest(folder / "manifest.csv", ("file", "class", "split", "artgroup", "kind", "sha256"),
                         lambda row: row["file"])
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
        images.append(ArtImage(r["file"], r["class"], r["split"], r["artgroup"], r["kind"], read_image(path), r["sha256"]))
    return ArtSet(images)


def try_load_art(**kwargs: Any) -> ArtSet | None:
    """:func:`load_art`, or None with one ``SKIPPED`` line saying how to get the set (the rest of a notebook runs)."""
    return if_present("simpsons-art", load_art, **kwargs)


def score_art(predictor: Any, images: Sequence[ArtImage], fit: str) -> pd.DataFrame:
    """One row per image: the answer with ``fit`` (pad or crop), its confidence, sure, right."""
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
    """Top-1, right and sure, wrong and sure, not sure (%, Wilson 95 %, counts) per group of ``by``."""
    table = pd.DataFrame({key if isinstance(key, tuple) else (key,): _rates(g)
                          for key, g in scores.groupby(list(by), sort=True)}).T.rename_axis(list(by))
    for column in table.columns:
        if column == "images" or column.endswith(" %"):
            table[column] = pd.to_numeric(table[column]).round(1 if column != "images" else 0)
    return table.astype({"images": int})


#: The art set's targets on its test half: (measure, threshold %, at most?)
TARGETS = (("top-1", 80.0, False), ("right and sure", 60.0, False), ("wrong and sure", 5.0, True))


def art_targets(scores: Sequence[pd.DataFrame]) -> list[Decision]:
    """:data:`TARGETS` decided on the test half: means over seeds, Wilson interval over images."""
    tests = [s[s["split"] == "test"] for s in scores]
    n = len(tests[0])
    if not n or any(len(t) != n for t in tests):
        raise ValueError("every seed's scores must hold the same art test images")
    counts = {"top-1": [int(t["right"].sum()) for t in tests],
              "right and sure": [int((t["right"] & t["sure"]).sum()) for t in tests],
              "wrong and sure": [int((~t["right"] & t["sure"]).sum()) for t in tests]}
    return [target(f"art test: {measure}", [100 * k / n for k in counts[measure]], threshold, at_most=at_most,
                   interval=tuple(100 * v for v in binomial_interval(float(np.mean(counts[measure])), n)),
                   where=f"on the art test half ({n} images)") for measure, threshold, at_most in TARGETS]


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """An :func:`art_table` with each rate and its interval in one column: ``87.3 (78–93)``."""
    out = table[["images"]].copy()
    for column in table.columns:
        if column.endswith(" %"):
            out[f"{column} (95 % CI)"] = [f"{v:.1f} ({ci})" for v, ci in zip(table[column], table[f"{column[:-2]} 95 % CI"])]
    return out


@dataclass
class ArtStudy:
    """Every model and seed scored on the art set in both framings; the framing chosen on the dev half."""
    scores: pd.DataFrame  #: one row per model, seed, framing and image (:func:`score_art` plus model and seed)
    framing: str
    judged: str  #: the model whose framing and targets are reported

    def table(self, split: str) -> pd.DataFrame:
        """:func:`art_table` of one half per model and framing, pooled over seeds, as :func:`readable`."""
        return readable(art_table(self.scores[self.scores["split"] == split], by=("model", "framing")))

    def detail(self, by: str, split: str = "test") -> pd.DataFrame:
        """:func:`art_table` of the judged model in the chosen framing on one half, per ``by`` (``kind``, ``class``)."""
        rows = self.scores[(self.scores["model"] == self.judged) & (self.scores["framing"] == self.framing)]
        return readable(art_table(rows[rows["split"] == split], by=(by,)))

    def per_seed(self, model: str | None = None) -> list[pd.DataFrame]:
        """The scores of ``model`` (default: the judged one) in the chosen framing, one table per seed."""
        rows = self.scores[(self.scores["model"] == (model or self.judged)) & (self.scores["framing"] == self.framing)]
        return [g for _, g in rows.groupby("seed", sort=True)]

    def rates_of(self, checkpoint: Path) -> dict[str, str]:
        """One model's figures per half in the chosen framing: images, top-1, right and sure, wrong and sure (%)."""
        rows = self.scores[(self.scores["checkpoint"] == Path(checkpoint).name) & (self.scores["framing"] == self.framing)]
        out = {}
        for split, r in art_table(rows, by=("split",)).iterrows():
            out[f"{split[0]} half ({self.framing})"] = (
                f"{r['images']} images: top-1 {r['top-1 %']:.1f} %, right and sure {r['right and sure %']:.1f} %, "
                f"wrong and sure {r['wrong and sure %']:.1f} %, not sure {r['not sure %']:.1f} %")
        return out

    def targets(self) -> list[Decision]:
        """:func:`art_targets` of the judged model in the chosen framing."""
        return art_targets(self.per_seed())


def measure(models: dict[str, Sequence[Any]], images: Sequence[ArtImage], fits: Sequence[str] = ("pad", "crop"),
            judged: str = "robust") -> ArtStudy:
    """Score every calibrated predictor of ``models`` (name → one per seed) on ``images`` in each framing."""
    parts = [score_art(p, images, fit).assign(model=name, seed=int(p.checkpoint.train_config["seed"]),
                                              checkpoint=p.checkpoint.path.name)
             for name, predictors in models.items() for p in predictors for fit in fits]
    scores = pd.concat(parts, ignore_index=True)
    judged = judged if judged in models else next(iter(models))
    dev = scores[(scores["split"] == "dev") & (scores["model"] == judged)]
    framing = str(art_table(dev, by=("framing",))["right and sure %"].idxmax()[0])
    return ArtStudy(scores, framing, judged)


def decision_table(decisions: Sequence[Decision]) -> pd.DataFrame:
    """Targets as a table: value, 95 % interval, rule and outcome."""
    return pd.DataFrame([{"target": d.name, "value %": round(d.value, 1), "95 % CI": d.interval_text(),
                          "rule": d.rule, "outcome": d.outcome} for d in decisions]).set_index("target")


def findings(decisions: Sequence[Decision], framing: str, section: str) -> list[dict[str, str]]:
    """The art targets as lines of the report's findings page."""
    words = {"pad": "padded", "crop": "cropped"}
    return [finding(f"Webcam model on drawings and prints ({words.get(framing, framing)}): {d.name.removeprefix('art test: ')}",
                    f"{d.value:.1f} %", section, interval=d.interval_text(), target=d, outcome=d.outcome)
            for d in decisions]
