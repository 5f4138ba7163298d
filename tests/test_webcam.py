"""Webcam demo: frame sources, preprocessing, predictions, ONNX for the Jetson, bad input."""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import plumbing
from helpers.checkpoints import CheckpointError, save_checkpoint
from helpers.data import load_simpsons_mnist
from helpers.models import build_model
from helpers.splits import DataSplits
from helpers.training import DeviceSplit, TrainConfig, evaluate, fit
from helpers.webcam import camera, live
from helpers.webcam.export import OPENCV41_OPS, OPSET, export_onnx, graph_ops
from helpers.webcam.inference import Predictor, annotate, preprocess, to_bgr_frame

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "webcam_onnx.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("webcam_onnx", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def simpsons() -> DataSplits:
    return load_simpsons_mnist("rgb").subset(n_train=1000, n_val=200)  # the whole 2,000-image test split


@pytest.fixture(scope="module")
def checkpoint(simpsons: DataSplits, tmp_path_factory) -> Path:
    """A briefly trained LeNet-5 with BatchNorm and dropout (both must survive the ONNX export)."""
    model = build_model(in_channels=3, batchnorm=True, dropout=0.3, seed=0)
    result = fit(model, simpsons, TrainConfig(optimizer="adam", lr=3e-3, epochs=1), device="cpu")
    path = tmp_path_factory.mktemp("models") / "simpsons_test.pt"
    return save_checkpoint(path, result.model, simpsons.classes, simpsons.mean, simpsons.std)


@pytest.fixture(scope="module")
def video(simpsons: DataSplits, tmp_path_factory) -> Path:
    """A lossless video of 40 real test images, each enlarged 4x (112x112 frames)."""
    frames = [to_bgr_frame(simpsons.test.x[i], scale=4) for i in range(40)]
    return camera.write_video(frames, tmp_path_factory.mktemp("video") / "test_images.avi")


def test_preprocessing_matches_the_training_transform_exactly(simpsons: DataSplits) -> None:
    expected = DeviceSplit(simpsons.test, simpsons.mean, simpsons.std, torch.device("cpu")).x.numpy()
    for i in range(0, 2000, 40):
        image = simpsons.test.x[i]
        for frame in (to_bgr_frame(image), to_bgr_frame(image, scale=4)):
            got = preprocess(frame, 28, 3, simpsons.mean, simpsons.std)
            assert np.abs(got - expected[i]).max() < 1e-6
        wide = cv2.copyMakeBorder(to_bgr_frame(image, scale=4), 0, 0, 24, 24, cv2.BORDER_CONSTANT, value=(0, 0, 255))
        assert np.abs(preprocess(wide, 28, 3, simpsons.mean, simpsons.std) - expected[i]).max() < 1e-6  # centre crop


def test_video_source_yields_every_frame_and_predictions_equal_those_on_the_images(
        simpsons: DataSplits, checkpoint: Path, video: Path) -> None:
    with camera.open_source(str(video)) as source:
        frames = list(source)
    assert len(frames) == 40
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, to_bgr_frame(simpsons.test.x[i], scale=4))
    predictor = Predictor.from_checkpoint(checkpoint)
    on_frames = [p.label for p in predictor.predict_many(frames)]
    sub = simpsons.subset(n_test=None)
    sub.test = simpsons.test.take(range(40))
    on_images = evaluate(predictor.model, sub, "test", device="cpu").predictions
    assert on_frames == [simpsons.classes[k] for k in on_images]
    top = predictor.predict(frames[0]).top
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and sum(p for _, p in top) <= 1 + 1e-6


def test_image_folder_source_reads_in_order_and_skips_unreadable_files(simpsons: DataSplits, tmp_path: Path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), to_bgr_frame(simpsons.test.x[i]))
    (tmp_path / "img_2b.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="img_2b.png"):
        frames = list(camera.open_source(str(tmp_path)))
    assert len(frames) == 5 and np.array_equal(frames[3], to_bgr_frame(simpsons.test.x[3]))


def test_missing_camera_fails_fast_with_hints_and_falls_back(video: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(camera.CameraError, match="camera 97") as failed:
        camera.open_source("97", open_timeout=5)
    assert camera.camera_hint(sys.platform, platform.machine()) in str(failed.value)  # this platform's help only
    assert time.perf_counter() - started < 6
    messages = []
    source = camera.open_source("97", fallback=str(video), open_timeout=5, log=messages.append)
    assert len(list(source)) == 40 and "falling back to" in messages[0] and "camera 97" in messages[0]


def test_camera_help_names_only_the_platform_it_runs_on() -> None:
    assert "Privacy & Security" in camera.camera_hint("darwin", "arm64")
    assert "Jetson" in camera.camera_hint("linux", "aarch64")
    linux = camera.camera_hint("linux", "x86_64")
    assert "macOS" not in linux and "Jetson" not in linux and "--source 1" in linux


class _DyingCamera:
    """Stands in for a camera that delivers a few frames, then hangs (unplugged USB, stalled driver)."""

    def __init__(self, frames, hang=True):
        self.frames, self.hang = list(frames), hang

    def isOpened(self):
        return True

    def set(self, *args):
        return True

    def read(self):
        if self.frames:
            return True, self.frames.pop(0)
        if self.hang:
            time.sleep(30)
        return False, None

    def release(self):
        pass


def test_dead_stream_errors_within_the_timeout_and_falls_back(simpsons: DataSplits, video: Path) -> None:
    frames = [to_bgr_frame(simpsons.test.x[i]) for i in range(3)]
    source = camera.CaptureSource(0, live=True, frame_timeout=0.5, capture_factory=lambda t, api: _DyingCamera(frames))
    assert sum(1 for _ in range(3) if source.read() is not None) == 3
    started = time.perf_counter()
    with pytest.raises(camera.CameraError, match="stopped delivering frames: none for 0.5 s after 3 frame"):
        source.read()
    assert time.perf_counter() - started < 2
    closed = camera.CaptureSource(0, live=True, capture_factory=lambda t, api: _DyingCamera([], hang=False))
    with pytest.raises(camera.CameraError, match="stopped delivering frames after 0"):
        closed.read()
    log = []
    resilient = camera.FallbackSource(
        lambda: camera.CaptureSource(0, live=True, frame_timeout=0.5, capture_factory=lambda t, api: _DyingCamera(frames)),
        lambda: camera.open_source(str(video)), log=log.append)
    assert len(list(resilient)) == 3 + 40 and resilient.used_fallback and "stopped delivering" in log[0]


def test_camera_that_never_opens_is_abandoned_after_the_open_timeout() -> None:
    def hanging(target, api):
        time.sleep(30)

    started = time.perf_counter()
    with pytest.raises(camera.CameraError, match="did not open within 0.5 s"):
        camera.CaptureSource(0, live=True, open_timeout=0.5, capture_factory=hanging)
    assert time.perf_counter() - started < 2


def test_gstreamer_pipeline_is_well_formed() -> None:
    pipeline = camera.gstreamer_pipeline(sensor_id=1, capture_width=1920, capture_height=1080, display_width=960,
                                         display_height=540, framerate=21, flip_method=2)
    elements = [e.strip() for e in pipeline.split("!")]
    assert elements[0] == "nvarguscamerasrc sensor-id=1"
    assert elements[1] == "video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, framerate=(fraction)21/1"
    assert elements[2] == "nvvidconv flip-method=2"
    assert elements[3] == "video/x-raw, width=(int)960, height=(int)540, format=(string)BGRx"
    assert elements[4:] == ["videoconvert", "video/x-raw, format=(string)BGR", "appsink drop=1"]
    assert _load_script().gstreamer_pipeline() == camera.gstreamer_pipeline()  # the Jetson script agrees
    with pytest.raises(ValueError):
        camera.gstreamer_pipeline(flip_method=8)


@pytest.mark.slow
def test_onnx_through_cv2_dnn_equals_pytorch_on_every_test_image(simpsons: DataSplits, checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")
    ops = graph_ops(onnx_path)
    assert ops <= OPENCV41_OPS and "BatchNormalization" not in ops and "Dropout" not in ops
    import onnx
    assert onnx.load(str(onnx_path)).opset_import[0].version == OPSET <= 11
    script = _load_script()
    net, meta = script.load_model(str(onnx_path))
    frames = [to_bgr_frame(x) for x in simpsons.test.x]
    probs_onnx = np.concatenate([script.predict(net, meta, frames[i:i + 500]) for i in range(0, len(frames), 500)])
    probs_torch = np.stack([p.probabilities for p in Predictor.from_checkpoint(checkpoint).predict_many(frames)])
    assert len(frames) == 2000
    assert (probs_onnx.argmax(1) == probs_torch.argmax(1)).all()
    assert np.abs(probs_onnx - probs_torch).max() < 1e-4
    assert meta["classes"] == simpsons.classes


def test_jetson_script_is_valid_python_3_6() -> None:
    source = SCRIPT.read_text()
    ast.parse(source, feature_version=(3, 6))
    vermin = Path(sys.executable).parent / "vermin"  # installed beside this interpreter (requirements.txt)
    result = subprocess.run([str(vermin), "-t=3.6-", "--no-tips", "--violations", str(SCRIPT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    imports = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)}
    imports |= {n.module.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    # the standard library of Python 3.6, OpenCV and numpy: no torch on the Jetson
    assert imports <= {"argparse", "hashlib", "json", "os", "socket", "sys", "time", "cv2", "numpy"}


def test_wrong_model_files_give_clear_errors(tmp_path: Path, checkpoint: Path, video: Path, capsys) -> None:
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        Predictor.from_checkpoint(junk)
    argv = ["--source", str(video), "--checkpoint", str(junk), "--headless", "--out", str(tmp_path)]
    assert plumbing.run(live.main, argv) == 2
    assert "error:" in capsys.readouterr().err
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx")
    onnx_path.with_suffix(".json").unlink()
    with pytest.raises(SystemExit, match="m.json is missing"):
        _load_script().load_model(str(onnx_path))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text("{}")
    with pytest.raises(SystemExit, match="OpenCV cannot read"):
        _load_script().load_model(str(bad))


def test_cli_headless_writes_annotated_frames(checkpoint: Path, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert live.main(["--source", str(video), "--checkpoint", str(checkpoint), "--headless", "--out", str(out),
                        "--max-frames", "5"]) == 0
    written = sorted(out.glob("*.png"))
    assert len(written) == 5
    img = cv2.imread(str(written[0]))
    assert img.shape[0] >= 240  # 112-px frames are enlarged so the labels are readable


def test_jetson_script_headless_run(checkpoint: Path, video: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx")
    out = tmp_path / "frames"
    assert _load_script().main(["--model", str(onnx_path), "--source", str(video), "--headless", "--out", str(out),
                                "--max-frames", "7"]) == 0
    assert len(list(out.glob("*.png"))) == 7


def test_snapshot_series_and_annotation(video: Path, checkpoint: Path, tmp_path: Path) -> None:
    with camera.open_source(str(video)) as source:
        shots = camera.snapshot_series(source, n=3, interval=0.0, out_dir=tmp_path)
    assert len(shots) == 3 and len(list(tmp_path.glob("snapshot_*.png"))) == 3
    prediction = Predictor.from_checkpoint(checkpoint).predict(shots[0])
    drawn = annotate(shots[0], prediction, fps=12.5)
    assert drawn.dtype == np.uint8 and drawn.shape[0] >= 240 and drawn.shape[2] == 3


@pytest.mark.parametrize("runner", ["helpers", "jetson"])
def test_without_a_display_the_demo_falls_back_to_headless(checkpoint: Path, video: Path, tmp_path: Path,
                                                          monkeypatch, capsys, runner: str) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert not plumbing.has_display()
    out = tmp_path / "frames"
    if runner == "helpers":
        code = live.main(["--source", str(video), "--checkpoint", str(checkpoint), "--out", str(out),
                            "--max-frames", "3"])  # no --headless: a window would abort in Qt
    else:
        onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx")
        code = _load_script().main(["--model", str(onnx_path), "--source", str(video), "--out", str(out),
                                    "--max-frames", "3"])
    assert code == 0 and len(list(out.glob("*.png"))) == 3
    assert capsys.readouterr().out.count("no display reachable") == 1


@pytest.mark.slow
def test_entry_points_report_bad_input_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PORTFOLIO_OUTPUT_DIR": str(tmp_path)}
    env.pop("HELPERS_DEBUG", None)
    commands = [
        [sys.executable, "-m", "helpers.webcam.export", "--checkpoint", str(tmp_path / "missing.pt")],
        [sys.executable, "-m", "helpers.demo", "--checkpoint", str(tmp_path / "missing.pt"), "--headless",
         "--out", str(tmp_path)],
        [sys.executable, str(SCRIPT), "--model", str(tmp_path / "missing.onnx"), "--headless"],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert result.returncode != 0, command
        assert "Traceback" not in result.stderr and result.stderr.startswith("error: "), result.stderr
        assert "missing" in result.stderr
