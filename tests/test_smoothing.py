"""The steadier live answer (helpers.webcam.smoothing) and its copy in the Jetson script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers import data
from helpers.webcam import smoothing
from helpers.webcam.inference import load_predictor

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("webcam_onnx", ROOT / "scripts" / "webcam_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_confident_wrong_frame_does_not_change_a_steady_answer() -> None:
    s = smoothing.Smoother(threshold=0.6, window=5)
    view = np.full((3, 28, 28), 100, np.uint8)
    right, wrong = np.array([0.9, 0.05, 0.05]), np.array([0.1, 0.85, 0.05])
    for _ in range(4):
        mean, sure = s.update(right, view)
    mean, sure = s.update(wrong, view)  # alone, this frame would say class 1 at 85 %
    assert mean.argmax() == 0 and sure and mean[0] == pytest.approx((4 * 0.9 + 0.1) / 5)
    alone = smoothing.Smoother(threshold=0.6, window=1)
    assert alone.update(wrong, view)[0].argmax() == 1


def test_a_new_scene_restarts_the_average_and_the_window_is_bounded() -> None:
    s = smoothing.Smoother(threshold=0.5, window=3)
    a, b = np.full((3, 28, 28), 40, np.uint8), np.full((3, 28, 28), 200, np.uint8)  # a change of 0.63
    for _ in range(5):
        s.update(np.array([1.0, 0.0]), a)
    assert len(s.recent) == 3  # only the last three frames count
    mean, _ = s.update(np.array([0.0, 1.0]), b)  # a new card: the old frames are dropped
    assert mean.tolist() == [0.0, 1.0]
    small = a + 10  # a change of 0.04: the same card moving a little
    s.update(np.array([0.0, 1.0]), b)
    assert smoothing.view_change(a, small) < smoothing.CHANGE < smoothing.view_change(a, b)
    with pytest.raises(ValueError):
        smoothing.Smoother(window=0)


def test_the_jetson_script_smooths_exactly_as_the_laptop_demo() -> None:
    script = _script()
    assert (script.SMOOTH_WINDOW, script.SCENE_CHANGE) == (smoothing.WINDOW, smoothing.CHANGE)
    rng = np.random.default_rng(0)
    ours, theirs = smoothing.Smoother(0.55), script.Smoother(0.55)
    view = rng.integers(0, 256, (28, 28, 3)).astype(np.uint8)
    for step in range(60):
        if step % 13 == 0:
            view = rng.integers(0, 256, (28, 28, 3)).astype(np.uint8)  # a new scene now and then
        probs = rng.dirichlet(np.ones(4) * 0.5)
        moved = np.clip(view.astype(int) + rng.integers(-5, 6, view.shape), 0, 255).astype(np.uint8)
        (m1, s1), (m2, s2) = ours.update(probs, moved), theirs.update(probs, moved)
        assert s1 == s2 and np.allclose(m1, m2)


def test_on_held_clips_of_real_images_the_average_flips_less_and_swaps_are_seen() -> None:
    predictor = load_predictor(ROOT / "models" / "simpsons_demo.pt")
    simpsons = data.load_simpsons_mnist("rgb")
    idx = np.random.default_rng(1).choice(len(simpsons.test), 30, replace=False)
    clips = smoothing.video([simpsons.test.x[i].numpy() for i in idx], n_frames=8, seed=1)
    assert [len(c) for c in clips] == [8] * 30
    again = smoothing.video([simpsons.test.x[i].numpy() for i in idx[:2]], n_frames=8, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again[0], clips[0]))  # seeded: the same video every time
    changes = smoothing.change_table(predictor, clips)
    assert changes.loc["50 % quantile", "same card, next frame"] < smoothing.CHANGE
    assert changes.loc["50 % quantile", "card swapped"] > smoothing.CHANGE
    table = smoothing.replay(predictor, clips, [int(simpsons.test.y[i]) for i in idx])
    alone, mean = table.iloc[0], table.iloc[1]
    assert alone["frames"] == mean["frames"] == 240
    assert mean["flips per 100 frames"] < alone["flips per 100 frames"]
