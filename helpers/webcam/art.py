"""Simpsons character art that is not frames of the show: what the webcam model meets in a print or a drawing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from helpers.data import if_present
from helpers.decoding import extra_files_message, read_manifest
from helpers.provenance import fingerprint_bytes
from helpers.sources import CorruptDataError, DataNotFoundError, DataSource, ensure_dataset, file_digest, list_files
from helpers.stats import Decision, binomial_interval, finding, target
from helpers.webcam.camera import read_image
from helpers.webcam.printlike import border_mask, held_light
from helpers.webcam.shifts import frame_rng

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
    background: str = "plain"  #: "plain" (as published, on white) or the card colour it was composited on


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


#: The card colours (BGR) the art set is composited on to measure drawings held up on card (:func:`on_cards`):
#: fixed and named, none of them drawn on purpose in training (its cards take any hue at random).
ART_CARDS = {"red-pink": (150, 120, 235), "red": (50, 50, 200), "orange": (40, 140, 240), "yellow": (80, 225, 245),
             "green": (90, 180, 90), "sky blue": (230, 190, 120), "dark blue": (140, 60, 20), "purple": (160, 80, 130),
             "brown": (60, 100, 150), "grey": (150, 150, 150)}
CARD_SEED = 0  #: seed of the composites: margins, light and silhouette tolerance, per image and colour


def on_card(image: ArtImage, colour: str, seed: int = CARD_SEED) -> ArtImage:
    """``image`` held up on a card of ``colour``: its border-connected background becomes the card, with a card
    margin of 8-20 % around it, a light gradient and a shadow at one edge (as a held-up card gets)."""
    rng = frame_rng(seed, f"art-card/{colour}/{image.file}", 0, 0)  # its own draw per image and colour
    frame = image.frame.copy()
    frame[border_mask(frame, rng)] = ART_CARDS[colour]
    h, w = frame.shape[:2]
    top, bottom, left, right = (int(round(rng.uniform(0.08, 0.2) * side)) for side in (h, h, w, w))
    frame = cv2.copyMakeBorder(frame, top, bottom, left, right, cv2.BORDER_CONSTANT, value=ART_CARDS[colour])
    return replace(image, frame=held_light(frame, rng), background=colour)


def on_cards(images: Sequence[ArtImage], colours: Sequence[str] = tuple(ART_CARDS), seed: int = CARD_SEED
             ) -> list[ArtImage]:
    """Every image on every card colour (:func:`on_card`)."""
    return [on_card(im, c, seed) for im in images for c in colours]


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
                          "background": im.background, "on": "plain" if im.background == "plain" else "card",
                          "answer": p.label, "confidence": p.confidence, "sure": p.sure, "right": p.label == im.label}
                         for im, p in zip(images, preds)])


def _rates(rows: pd.DataFrame) -> dict[str, Any]:
    n = len(rows)
    right, sure = rows["right"].to_numpy(), rows["sure"].to_numpy()
    counts = {"top-1": int(right.sum()), "right and sure": int((right & sure).sum()),
              "wrong and sure": int((~right & sure).sum()), "not sure": int((~sure).sum())}
    drawings = rows["file"].nunique()  # seeds and card colours repeat a drawing: the interval counts drawings
    out: dict[str, Any] = {"images": n, "drawings": drawings}
    for name, k in counts.items():
        low, high = binomial_interval(k / n * drawings, drawings)
        out[f"{name} %"] = 100 * k / n
        out[f"{name} 95 % CI"] = f"{100 * low:.0f}–{100 * high:.0f}"
    return out


def art_table(scores: pd.DataFrame, by: Sequence[str] = ("split",)) -> pd.DataFrame:
    """Top-1, right and sure, wrong and sure, not sure (%, Wilson 95 % over the drawings) per group of ``by``."""
    table = pd.DataFrame({key if isinstance(key, tuple) else (key,): _rates(g)
                          for key, g in scores.groupby(list(by), sort=True)}).T.rename_axis(list(by))
    for column in table.columns:
        if column in ("images", "drawings") or column.endswith(" %"):
            table[column] = pd.to_numeric(table[column]).round(1 if column.endswith(" %") else 0)
    return table.astype({"images": int, "drawings": int})


#: The art set's targets on its test half: (measure, plain or on card, threshold %, at most?)
TARGETS = (("top-1", "plain", 85.0, False), ("top-1", "card", 75.0, False),
           ("wrong and sure", "plain", 5.0, True), ("wrong and sure", "card", 5.0, True))
ON = {"plain": "plain", "card": "on coloured cards"}


def art_targets(scores: Sequence[pd.DataFrame]) -> list[Decision]:
    """:data:`TARGETS` decided on the test half: means over seeds, Wilson interval over the drawings."""
    out = []
    for measure, on, threshold, at_most in TARGETS:
        tests = [s[(s["split"] == "test") & (s["on"] == on)] for s in scores]
        n, drawings = len(tests[0]), tests[0]["file"].nunique()
        if not n or any(len(t) != n for t in tests):
            raise ValueError(f"every seed's scores must hold the same art test images ({ON[on]})")
        hit = [(t["right"] if measure == "top-1" else ~t["right"] & t["sure"]).to_numpy() for t in tests]
        rates = [100 * float(h.mean()) for h in hit]
        where = f"on the art test half ({drawings} drawings" + (")" if on == "plain" else
                                                                  f" × {n // drawings} card colours)")
        out.append(target(f"art test: {measure}, {ON[on]}", rates, threshold, at_most=at_most, where=where,
                          interval=tuple(100 * v for v in binomial_interval(np.mean(rates) / 100 * drawings, drawings))))
    return out


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
        """:func:`art_table` of one half per model, framing and background (plain or card), pooled over seeds."""
        return readable(art_table(self.scores[self.scores["split"] == split], by=("model", "framing", "on")))

    def detail(self, by: str, split: str = "test") -> pd.DataFrame:
        """:func:`art_table` of the judged model in the chosen framing on one half, per ``by`` (``kind``, ``class``,
        ``background``)."""
        rows = self.scores[(self.scores["model"] == self.judged) & (self.scores["framing"] == self.framing)]
        return readable(art_table(rows[rows["split"] == split], by=(by,)))

    def per_seed(self, model: str | None = None) -> list[pd.DataFrame]:
        """The scores of ``model`` (default: the judged one) in the chosen framing, one table per seed."""
        rows = self.scores[(self.scores["model"] == (model or self.judged)) & (self.scores["framing"] == self.framing)]
        return [g for _, g in rows.groupby("seed", sort=True)]

    def of(self, checkpoint: Path) -> pd.DataFrame:
        """One checkpoint's scores in the chosen framing."""
        return self.scores[(self.scores["checkpoint"] == Path(checkpoint).name)
                           & (self.scores["framing"] == self.framing)]

    def rates_of(self, checkpoint: Path) -> dict[str, str]:
        """One model's figures per half and background in the chosen framing (%)."""
        out = {}
        for (split, on), r in art_table(self.of(checkpoint), by=("split", "on")).iterrows():
            out[f"{split} half ({self.framing}), {ON[on]}"] = (
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
    by_on = art_table(dev, by=("framing", "on"))["right and sure %"]  # plain and cards count alike
    framing = str(by_on.groupby(level="framing").mean().idxmax())
    return ArtStudy(scores, framing, judged)


SEED_RULE = ("the seed least often wrong and sure on the art dev half (mean of plain and on cards, chosen framing), "
             "then most often right and sure")


def seed_on_dev(study: ArtStudy, checkpoints: Sequence[Path]) -> tuple[Path, str]:
    """The demo's checkpoint among ``checkpoints`` (one per seed) by :data:`SEED_RULE`, on the dev half only."""
    def score(path: Path) -> tuple[float, float, str]:
        t = art_table(study.of(path).query("split == 'dev'"), by=("on",))
        return float(t["wrong and sure %"].mean()), -float(t["right and sure %"].mean()), Path(path).name

    scores = {Path(p): score(p) for p in checkpoints}
    best = min(scores, key=scores.get)
    text = "; ".join(f"{p.stem} {v[0]:.1f} % wrong and sure, {-v[1]:.1f} % right and sure" for p, v in scores.items())
    return best, f"art dev half ({study.framing}, plain and on cards): {text}"


def decision_table(decisions: Sequence[Decision]) -> pd.DataFrame:
    """Targets as a table: value, 95 % interval, rule and outcome."""
    return pd.DataFrame([{"target": d.name, "value %": round(d.value, 1), "95 % CI": d.interval_text(),
                          "rule": d.rule, "outcome": d.outcome} for d in decisions]).set_index("target")


def findings(decisions: Sequence[Decision], framing: str, section: str) -> list[dict[str, str]]:
    """The art targets as lines of the report's findings page."""
    words = {"pad": "padded", "crop": "cropped"}
    return [finding(f"Webcam model on drawings ({words.get(framing, framing)}): {d.name.removeprefix('art test: ')}",
                    f"{d.value:.1f} %", section, interval=d.interval_text(), target=d, outcome=d.outcome)
            for d in decisions]
