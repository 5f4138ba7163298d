"""The photo command's framings vote (helpers.webcam.framings): the mean of pad, crop and zoom, sure only when agreed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cli
from helpers.webcam import framings
from helpers.webcam.camera import read_image
from helpers.webcam.inference import load_predictor
from helpers.webcam import shipped


def test_zoom_keeps_the_central_share_and_refuses_nonsense() -> None:
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3)
    z = framings.zoomed(frame, 0.9)
    assert z.shape == (90, 180, 3) and (z[0, 0] == frame[5, 10]).all()
    assert framings.zoomed(frame, 1.0).shape == frame.shape
    with pytest.raises(ValueError, match="keep"):
        framings.zoomed(frame, 0.0)


def test_the_vote_is_the_mean_of_the_framings_and_sure_only_when_they_agree(real_image: Path) -> None:
    predictor = load_predictor(shipped.checkpoint())
    frames = [read_image(real_image)] + [np.full((60, 90, 3), v, np.uint8) for v in (0, 90, 200)]
    frames.append(np.random.default_rng(0).integers(0, 256, (80, 50, 3), dtype=np.uint8))
    each = np.stack([framings.framing_probabilities(predictor, frames, f) for f in framings.FRAMINGS])
    votes = framings.vote(predictor, frames)
    assert np.allclose([v.probabilities for v in votes], each.mean(axis=0))
    agree = (each.argmax(axis=2) == each.mean(axis=0).argmax(axis=1)).all(axis=0)
    assert [v.sure for v in votes] == list(predictor.sure(each.mean(axis=0)) & agree)
    assert not all(agree)  # the frames above include ones the framings split on: the rule is exercised
    assert predictor.fit == "crop"  # the predictor's own framing is left as it was


def test_the_rule_keeps_the_vote_only_when_it_lowers_wrong_and_sure_without_losing_right() -> None:
    def table(pad: tuple[float, float], vote: tuple[float, float]) -> pd.DataFrame:
        rows = {("dev", f): {"right and sure %": r, "wrong and sure %": w, "not sure %": 100 - r - w}
                for f, (r, w) in (("pad", pad), (framings.VOTE, vote))}
        return pd.DataFrame(rows).T
    assert framings.decide(table((50, 8), (49.5, 4))).outcome == "supported"
    lost = framings.decide(table((50, 8), (45, 3)))
    assert lost.outcome == "refuted" and lost.value == pytest.approx(-5.0)
    assert framings.decide(table((50, 8), (52, 8))).outcome == "refuted"  # no fewer wrong names


def test_the_photo_command_votes_when_asked(real_image: Path) -> None:
    done = cli("-m", "helpers.predict", str(real_image), "--fit", "vote", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[0]
    predictor = load_predictor(shipped.checkpoint())
    assert row["top3"][0]["class"] == framings.Voting(predictor).predict(read_image(real_image)).label
