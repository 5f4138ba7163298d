"""Camera-shift sets, calibration, "not sure", ONNX parity of abstain decisions, the predict CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.checkpoints import save_checkpoint
from helpers.data import load_simpsons_mnist
from helpers.models import build_model
from helpers.splits import DataSplits
from helpers.training import TrainConfig, fit
from helpers.webcam import calibration, robust, shifts
from helpers.webcam.calibration import Calibration, calibration_path
from helpers.webcam.export import export_onnx
from helpers.webcam.inference import NOT_SURE, OnnxPredictor, Predictor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def simpsons() -> DataSplits:
    return load_simpsons_mnist("rgb").subset(n_train=1000, n_val=200, n_test=300)


@pytest.fixture(scope="module")
def model_file(simpsons: DataSplits, tmp_path_factory) -> Path:
    """A briefly trained LeNet-5 (BatchNorm + dropout) with a calibration fitted on 200 real validation images."""
    model = build_model(in_channels=3, batchnorm=True, dropout=0.3, seed=0)
    result = fit(model, simpsons, TrainConfig(optimizer="adam", lr=3e-3, epochs=2), device="cpu")
    path = save_checkpoint(tmp_path_factory.mktemp("models") / "simpsons.pt", result.model, simpsons.classes,
                           simpsons.mean, simpsons.std)
    predictor = Predictor.from_checkpoint(path)
    logits = predictor.logits_many([shifts.to_frame(x) for x in simpsons.val.x])
    Calibration.fit(logits, simpsons.val.y.numpy(), "test validation, 200 images").save(calibration_path(path))
    return path


# ----------------------------------------------------------------------------------- shift sets


def test_shift_sets_are_identical_on_two_builds_and_differ_by_seed(simpsons: DataSplits) -> None:
    images = simpsons.val.x[:12].numpy()
    for family in shifts.FAMILIES:
        for s in shifts.SEVERITIES:
            a = shifts.frames_hash(shifts.shifted_frames(images, family, s, seed=0))
            assert a == shifts.frames_hash(shifts.shifted_frames(images, family, s, seed=0)), (family, s)
    for family in ("placement", "perspective", "motion", "sensor_noise"):
        assert (shifts.frames_hash(shifts.shifted_frames(images, family, 2, seed=0))
                != shifts.frames_hash(shifts.shifted_frames(images, family, 2, seed=1)))
    # an image's frame does not depend on which other images are in the set
    one = shifts.shifted_frames(images, "placement", 3, seed=0, indices=[5])[0]
    assert np.array_equal(one, shifts.shifted_frames(images, "placement", 3, seed=0)[5])
    assert list(shifts.family_table().columns) == ["imitates", "severity 1", "severity 2", "severity 3"]
    with pytest.raises(ValueError, match="unknown shift family"):
        shifts.shifted_frames(images, "fog", 1)


def _magenta() -> np.ndarray:
    img = np.zeros((3, 28, 28), np.uint8)
    img[0], img[2] = 255, 255  # RGB magenta: easy to find on any background
    return img


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.PSNR(a, b))


def _sharpness(frame: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_each_shift_changes_pixels_as_documented(simpsons: DataSplits) -> None:
    images = simpsons.val.x[:20].numpy()
    clean = [shifts.to_frame(x) for x in images]
    side = shifts.FRAME
    for severity, (lo, hi) in zip(shifts.SEVERITIES, ((0.85, 1.0), (0.7, 0.9), (0.55, 0.8))):
        for f in shifts.shifted_frames([_magenta()] * 10, "placement", severity):
            area = int(np.all(f == (255, 0, 255), axis=2).sum())  # BGR magenta pixels = the placed print
            assert (lo * side - 1) ** 2 <= area <= (hi * side + 1) ** 2
    by = {name: [shifts.shifted_frames(images, name, s) for s in shifts.SEVERITIES] for name in shifts.FAMILIES}
    for name in ("defocus", "motion"):  # blur removes detail, more at each severity
        sharp = [np.mean([_sharpness(f) for f in fs]) for fs in by[name]]
        assert np.mean([_sharpness(f) for f in clean]) > sharp[0] > sharp[1] > sharp[2], (name, sharp)
    for name in ("perspective", "sensor_noise", "jpeg", "lighting"):  # further from the clean frame each step
        psnr = [np.mean([_psnr(c, f) for c, f in zip(clean, fs)]) for fs in by[name]]
        assert psnr[0] > psnr[1] > psnr[2], (name, psnr)
    noise = (by["sensor_noise"][1][0].astype(float) - clean[0]).std()
    assert 9 < noise < 13  # sigma 12, a little less where pixels clip
    for f, c in zip(by["colour_temperature"][2], clean):  # ±30 %: blue and red move apart, green stays
        ratio = (f[..., 2].mean() + 1) / (f[..., 0].mean() + 1) / ((c[..., 2].mean() + 1) / (c[..., 0].mean() + 1))
        assert ratio > 1.3 or ratio < 1 / 1.3
        assert np.abs(f[..., 1].astype(int) - c[..., 1]).max() == 0
    area, bilinear, nearest = by["resample"]  # same round trip, only the interpolation differs
    assert any(not np.array_equal(a, n) for a, n in zip(area, nearest))
    assert all(f.shape == (side, side, 3) and f.dtype == np.uint8 for fs in by.values() for s in fs for f in s)


def test_out_of_distribution_frames_are_deterministic(simpsons: DataSplits) -> None:
    for kind in shifts.KINDS[:-1]:
        a = shifts.ood_frames(kind, 5, seed=0)
        assert shifts.frames_hash(a) == shifts.frames_hash(shifts.ood_frames(kind, 5, seed=0)) and len(a) == 5
    assert np.all(shifts.ood_frames("flat colour", 1)[0] == shifts.ood_frames("flat colour", 1)[0][0, 0])
    fashion = load_simpsons_mnist("grayscale").test.x[:3].numpy()  # any 1-channel real images work here
    assert shifts.ood_frames("Fashion-MNIST", 3, images=fashion)[0].shape == (shifts.FRAME, shifts.FRAME, 3)
    with pytest.raises(ValueError, match="need at least 4"):
        shifts.ood_frames("Fashion-MNIST", 4, images=fashion)


# ----------------------------------------------------------------------------------- calibration


def test_ece_on_a_constructed_case() -> None:
    probs = np.array([[0.9, 0.1]] * 10)  # always 90 % sure, right 6 times in 10
    labels = np.array([0] * 6 + [1] * 4)
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.3)
    perfect = np.array([[0.75, 0.25]] * 4)
    assert calibration.expected_calibration_error(perfect, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    table = calibration.reliability(probs, labels)
    assert len(table) == 15 and table["predictions"].sum() == 10


def test_temperature_fit_cools_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), labels] += 1.0  # a real signal...
    hot = 8 * logits  # ...shown far too confidently
    t = calibration.fit_temperature(hot, labels)
    assert 5 < t < 12
    assert (calibration.expected_calibration_error(calibration.softmax(hot, t), labels)
            < calibration.expected_calibration_error(calibration.softmax(hot), labels))
    assert (calibration.softmax(hot, t).argmax(1) == hot.argmax(1)).all()  # never changes the answer


def test_threshold_keeps_the_chosen_share_of_correct_predictions_confident() -> None:
    conf = np.array([0.99, 0.97, 0.95, 0.93, 0.91, 0.89, 0.87, 0.85, 0.83, 0.60])
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.zeros(10, int)  # all ten correct
    t = calibration.confidence_threshold(probs, labels, keep=0.9)
    assert t == pytest.approx(0.83)  # 9 of 10 at or above it
    assert (conf >= t).mean() >= 0.9 and (conf >= np.nextafter(t, 1)).mean() < 0.9
    wrong = np.array([[0.2, 0.8]])
    with pytest.raises(ValueError, match="no correct prediction"):
        calibration.confidence_threshold(wrong, np.array([0]))


def test_calibration_file_round_trip_and_bad_file(tmp_path: Path) -> None:
    cal = Calibration(1.7, 0.8, 0.9, "x")
    assert Calibration.load(cal.save(tmp_path / "m.calibration.json")) == cal
    (tmp_path / "bad.json").write_text("{\"temperature\": 1}")
    with pytest.raises(ValueError, match="not a calibration (file )?of this project"):
        Calibration.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------------- not sure, parity


def test_below_the_threshold_the_answer_is_not_sure(model_file: Path, simpsons: DataSplits) -> None:
    predictor = Predictor.from_checkpoint(model_file)
    assert predictor.calibration is not None
    frames = [shifts.to_frame(x) for x in simpsons.test.x] + shifts.ood_frames("uniform noise", 50)
    preds = predictor.predict_many(frames)
    unsure = [p for p in preds if not p.sure]
    assert unsure and all(p.shown == NOT_SURE and p.confidence < predictor.calibration.threshold for p in unsure)
    assert all(p.shown == p.label for p in preds if p.sure)
    plain = Predictor.from_checkpoint(model_file, calibrated=False).predict_many(frames)
    assert all(p.sure for p in plain)  # uncalibrated: always an answer
    assert [p.label for p in plain] == [p.label for p in preds]  # the temperature never changes the top-1
    pixels = predictor.pixels(frames)  # the probabilities the reports use are the ones the demo answers from
    probs = predictor.probabilities(pixels)
    assert np.allclose(probs, np.stack([p.probabilities for p in preds]))
    assert list(predictor.sure(probs)) == [p.sure for p in preds]
    assert np.allclose(probs, calibration.softmax(predictor.logits_pixels(pixels), predictor.calibration.temperature))


def test_onnx_and_torch_agree_on_top1_and_not_sure_on_the_test_shift_set(model_file: Path, simpsons: DataSplits,
                                                                         tmp_path: Path) -> None:
    onnx_path = export_onnx(model_file, tmp_path / "m.onnx")
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["calibration"] == json.loads(calibration_path(model_file).read_text())
    images = simpsons.test.x[:40].numpy()
    frames = [f for name in shifts.FAMILIES for s in shifts.SEVERITIES for f in shifts.shifted_frames(images, name, s)]
    torch_preds = Predictor.from_checkpoint(model_file).predict_many(frames)
    onnx_preds = OnnxPredictor(onnx_path).predict_many(frames)
    assert len(frames) == 40 * 27
    assert [p.label for p in torch_preds] == [p.label for p in onnx_preds]
    assert [p.sure for p in torch_preds] == [p.sure for p in onnx_preds]
    import importlib.util
    spec = importlib.util.spec_from_file_location("webcam_onnx", ROOT / "scripts" / "webcam_onnx.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    net, meta = script.load_model(str(onnx_path))
    probs = script.predict(net, meta, frames)
    assert (probs.argmax(1) == np.array([simpsons.classes.index(p.label) for p in torch_preds])).all()
    assert list(script.sure(meta, probs)) == [p.sure for p in torch_preds]
    answers = lambda preds: (np.array([simpsons.classes.index(p.label) for p in preds]), np.array([p.sure for p in preds]))  # noqa: E731
    flipped = (answers(torch_preds)[0], ~answers(torch_preds)[1])
    table = robust.agreement({"PyTorch": answers(torch_preds), "ONNX": answers(onnx_preds), "flipped": flipped})
    assert list(table["same top-1 as PyTorch"]) == [len(frames)] * 3
    assert list(table["same 'not sure' as PyTorch"]) == [len(frames), len(frames), 0]


def test_shift_report_has_a_row_per_family_and_severity(model_file: Path, simpsons: DataSplits) -> None:
    predictor = Predictor.from_checkpoint(model_file)
    images, labels = simpsons.val.x[:60].numpy(), simpsons.val.y[:60].numpy()
    shift_set = robust.ShiftSet.build("val", images, labels, 28, 3, families=["jpeg", "defocus", "resample"])
    assert shift_set.families == ["jpeg", "defocus", "resample"] and len(shift_set) == 60
    frames = shifts.shifted_frames(images, "jpeg", 2)
    assert np.array_equal(shift_set.pixels[("jpeg", 2)], predictor.pixels(frames))  # the demo's own crop and resize
    assert np.allclose(predictor.logits_pixels(shift_set.pixels[("jpeg", 2)]), predictor.logits_many(frames), atol=1e-5)
    table, curves = robust.shift_report(predictor, shift_set)
    table = table.drop(index="resample", level="family")
    assert len(table) == 1 + 2 * 3 and table.loc[("clean", 0), "images"] == 60
    assert table["accuracy %"].between(0, 100).all() and table["ECE %"].between(0, 100).all()
    assert set(curves) == {"clean", "all shifts"} and curves["all shifts"]["predictions"].sum() == 60 * 9
    fam = robust.by_family(table, {"seen": ["jpeg"], "held out": ["defocus"]})
    assert list(fam["group"]) == ["", "seen", "held out"]
    flips = robust.resample_flips(predictor, shift_set)
    assert 0 <= flips <= 100
    oods = robust.ood_report(predictor, {"flat colour": shifts.ood_frames("flat colour", 20)})
    assert oods.loc["all", "frames"] == 20


# ----------------------------------------------------------------------------------- predict CLI


@pytest.mark.slow
def test_predict_cli_on_real_images_of_any_size_and_a_broken_file(model_file: Path, simpsons: DataSplits,
                                                                   tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    frame = shifts.to_frame(simpsons.test.x[0].numpy())
    cv2.imwrite(str(folder / "a_small.png"), cv2.resize(frame, (28, 28), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(folder / "b_wide.jpg"), cv2.copyMakeBorder(frame, 0, 0, 60, 60, cv2.BORDER_CONSTANT, value=(0, 0, 255)))
    (folder / "c_broken.png").write_bytes(b"\x89PNG not really")
    env = {**os.environ}
    env.pop("HELPERS_DEBUG", None)
    run = lambda *args: subprocess.run([sys.executable, "-m", "helpers.predict", *args], capture_output=True,  # noqa: E731
                                       text=True, env=env, cwd=ROOT, timeout=120)
    out = run(str(folder), "--model", str(model_file))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"error: {folder / 'c_broken.png'}: not a readable image (OpenCV could not decode its 15 bytes)"]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{folder / 'a_small.png'}: ") and "top 3:" in lines[0]
    expected = Predictor.from_checkpoint(model_file).predict(frame)
    assert lines[1].startswith(f"{folder / 'b_wide.jpg'}: ")  # the guide box crops the border away
    js = run(str(folder / "a_small.png"), "--json", "--model", str(model_file))
    rows = json.loads(js.stdout)
    assert js.returncode == 0 and rows[0]["answer"] == expected.shown and len(rows[0]["top3"]) == 3
    onnx_path = export_onnx(model_file, tmp_path / "m.onnx")
    assert json.loads(run(str(folder / "a_small.png"), "--json", "--model", str(onnx_path)).stdout)[0]["answer"] == expected.shown
    missing = run(str(tmp_path / "nope.png"), "--model", str(model_file))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "no such file" in missing.stderr
    bad_model = run(str(folder), "--model", str(tmp_path / "nope.pt"))
    assert bad_model.returncode == 2 and bad_model.stderr.startswith("error: ") and "Traceback" not in bad_model.stderr
