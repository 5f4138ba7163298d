"""The photo command's framings vote: one photo seen as padded, cropped and slightly zoomed, "not sure" on a split.

Measured on the art set (``python -m helpers.webcam.framings``): the vote is kept only when it lowers wrong-and-sure
on the art dev half without losing right-and-sure, by :data:`RULE`; the test half is then reported once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.plumbing import run
from helpers.stats import Decision
from helpers.webcam.art import ArtImage, art_table, on_cards, readable, score_art, try_load_art
from helpers.webcam.inference import Prediction, demo_choice, load_predictor

ZOOM = 0.9  #: the zoomed framing keeps the central 90 % of the picture's width and height, then pads
FRAMINGS = {"pad": ("pad", 1.0), "crop": ("crop", 1.0), "zoom": ("pad", ZOOM)}  #: name → (fit, share kept)
VOTE = "vote"  #: the name of the vote among the framings (a ``--fit`` option of the photo command)
RULE = ("keep the vote when, on the art dev half (plain and on cards pooled), its wrong-and-sure rate is lower than "
        "the padded framing's and its right-and-sure rate at most 1 point lower")


def zoomed(frame: np.ndarray, keep: float = ZOOM) -> np.ndarray:
    """The central ``keep`` share of a frame's height and width (a small zoom)."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    h, w = frame.shape[:2]
    dy, dx = int(round(h * (1 - keep) / 2)), int(round(w * (1 - keep) / 2))
    return frame[dy:h - dy, dx:w - dx]


def framing_probabilities(predictor: Any, frames: Sequence[np.ndarray], framing: str) -> np.ndarray:
    """Calibrated class probabilities of ``frames`` seen in one of :data:`FRAMINGS`."""
    fit, keep = FRAMINGS[framing]
    before, predictor.fit = getattr(predictor, "fit", "crop"), fit
    try:
        return predictor.probabilities(predictor.pixels([zoomed(f, keep) for f in frames]))
    finally:
        predictor.fit = before


def vote(predictor: Any, frames: Sequence[np.ndarray], framings: Sequence[str] = tuple(FRAMINGS),
         k: int = 3) -> list[Prediction]:
    """The mean of the framings' probabilities; sure only when that mean is sure and every framing's top-1 agrees."""
    probs = np.stack([framing_probabilities(predictor, frames, f) for f in framings])  # (framings, N, classes)
    mean = probs.mean(axis=0)
    agree = (probs.argmax(axis=2) == mean.argmax(axis=1)).all(axis=0)
    sure = predictor.sure(mean) & agree
    return [predictor.prediction(p, bool(s), k) for p, s in zip(mean, sure)]


class Voting:
    """A predictor whose :meth:`predict` is the :func:`vote` of its framings (for the photo command)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(self, frame: np.ndarray, k: int = 3) -> Prediction:
        """The vote's answer for one BGR frame."""
        return vote(self.predictor, [frame], k=k)[0]


def score_vote(predictor: Any, images: Sequence[ArtImage], padded: pd.DataFrame) -> pd.DataFrame:
    """:func:`helpers.webcam.art.score_art`'s rows for the vote (framing ``"vote"``), from the padded rows."""
    rows = padded.copy()  # the same images and labels; the answers replaced below
    preds = vote(predictor, [im.frame for im in images])
    rows["framing"], rows["answer"] = VOTE, [p.label for p in preds]
    rows["confidence"], rows["sure"] = [p.confidence for p in preds], [p.sure for p in preds]
    rows["right"] = rows["answer"] == rows["class"]
    return rows


def compare(predictor: Any, images: Sequence[ArtImage]) -> pd.DataFrame:
    """Padded framing against the vote, per half and background: :func:`helpers.webcam.art.art_table`'s rates."""
    padded = score_art(predictor, images, "pad")
    scores = pd.concat([padded, score_vote(predictor, images, padded)], ignore_index=True)
    return art_table(scores, by=("split", "framing"))


def decide(table: pd.DataFrame) -> Decision:
    """:data:`RULE` on the dev half of a :func:`compare` table: the change in wrong-and-sure (points), by the rule."""
    pad, voted = table.loc[("dev", "pad")], table.loc[("dev", VOTE)]
    fewer_wrong = voted["wrong and sure %"] < pad["wrong and sure %"]
    kept_right = voted["right and sure %"] >= pad["right and sure %"] - 1.0
    return Decision("the framings vote on the art dev half: change in wrong and sure",
                    float(voted["wrong and sure %"] - pad["wrong and sure %"]),
                    "supported" if fewer_wrong and kept_right else "refuted", RULE, unit="points")


def change_text(table: pd.DataFrame, split: str) -> str:
    """``wrong and sure 4.2 → 2.1 %, right and sure 80.0 → 79.5 %`` on one half, padded → vote."""
    pad, voted = table.loc[(split, "pad")], table.loc[(split, VOTE)]
    return ", ".join(f"{m} {pad[f'{m} %']:.1f} → {voted[f'{m} %']:.1f} %"
                     for m in ("wrong and sure", "right and sure", "not sure"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.webcam.framings [--model M]``: the vote against the padded framing on the art set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint or ONNX file (default: the demo's model)")
    args = parser.parse_args(argv)
    model = args.model or demo_choice()[0]
    plain = try_load_art()
    if plain is None:
        return 1
    images = list(plain) + on_cards(plain)
    table = compare(load_predictor(model), images)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{model.name} on the art set ({len(plain)} drawings, plain and on {len(images) // len(plain) - 1} "
              f"card colours): padded framing against the vote of {', '.join(FRAMINGS)}")
        print(readable(table).to_string())
    decision = decide(table)
    print(f"{decision.name}: {decision.value:+.1f} points, {decision.outcome} ({change_text(table, 'dev')}); "
          f"rule: {decision.rule}")
    print(f"test half, scored once: {change_text(table, 'test')}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
