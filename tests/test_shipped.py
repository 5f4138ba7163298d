"""The demo's committed model (models/): intact, small, safe to load, and as accurate as its card says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import data
from helpers.checkpoints import checksum_path, load_checkpoint
from helpers.webcam import export, shipped
from helpers.webcam.calibration import Calibration, calibration_path
from helpers.webcam.inference import Predictor

MODELS = shipped.folder()
CARD = json.loads((MODELS / "card.json").read_text(encoding="utf-8")) if (MODELS / "card.json").is_file() else {}


def test_the_committed_files_match_their_checksums_and_stay_small() -> None:
    assert shipped.verify() == [], "models/ does not match its SHA256SUMS"
    listed = [line.split("  ", 1)[1] for line in (MODELS / shipped.SUMS).read_text().splitlines()]
    expected = {f"{shipped.STEM}{s}" for s in (".pt", ".pt.sha256", ".calibration.json", ".onnx", ".json")}
    assert expected | {"card.json", "README.md"} <= set(listed)
    assert all((MODELS / name).stat().st_size <= shipped.MAX_BYTES for name in listed)


def test_the_checkpoint_loads_with_weights_only_and_its_calibration_is_the_onnx_one() -> None:
    payload = torch.load(shipped.checkpoint(), map_location="cpu", weights_only=True)  # no code can run on load
    assert isinstance(payload, dict) and "state_dict" in payload
    ck = load_checkpoint(shipped.checkpoint())
    assert len(ck.classes) == 10 and ck.image_size == 28
    cal = Calibration.load(calibration_path(shipped.checkpoint()))
    meta = json.loads((MODELS / f"{shipped.STEM}.json").read_text())
    assert meta["calibration"]["temperature"] == cal.temperature and meta["calibration"]["threshold"] == cal.threshold
    assert meta["classes"] == ck.classes and meta["source_checkpoint"] == f"{shipped.STEM}.pt"


def test_the_committed_model_reproduces_its_clean_test_accuracy(mirror: Path) -> None:
    simpsons = data.load_simpsons_mnist("rgb")
    predictor = Predictor.from_checkpoint(shipped.checkpoint())
    accuracy = shipped.clean_accuracy(predictor, simpsons.test.x.numpy(), simpsons.test.y.numpy())
    assert CARD["clean test images"] == len(simpsons.test)
    assert abs(accuracy - CARD["clean test accuracy %"]) <= 0.1, (accuracy, CARD["clean test accuracy %"])
    assert predictor.calibration is not None  # the demo abstains with the committed threshold


def test_publish_writes_only_at_full_budget_and_verify_catches_a_changed_file(tmp_path: Path, capsys) -> None:
    source = tmp_path / "run" / "simpsons_robust-D-seed0.pt"
    source.parent.mkdir()
    for src, dst in ((shipped.checkpoint(), source), (checksum_path(shipped.checkpoint()), checksum_path(source)),
                     (calibration_path(shipped.checkpoint()), calibration_path(source))):
        shutil.copy2(src, dst)
    dest = tmp_path / "models"
    assert export.publish(source, {"note": "test"}, "quick", dest) is None and not dest.exists()
    assert "only a full-budget run" in capsys.readouterr().out
    (dest / "mine.txt").parent.mkdir()
    (dest / "mine.txt").write_text("a user's file")
    assert export.publish(source, {"note": "test"}, "full", dest) == dest / f"{shipped.STEM}.pt"
    assert shipped.verify(dest) == [] and (dest / "mine.txt").read_text() == "a user's file"
    assert json.loads((dest / "card.json").read_text())["note"] == "test"
    assert "**note**: test" in (dest / "README.md").read_text()
    (dest / f"{shipped.STEM}.onnx").write_bytes(b"not a model")
    assert shipped.verify(dest) == [f"{shipped.STEM}.onnx does not match its sha256"]
    calibration_path(source).unlink()
    with pytest.raises(FileNotFoundError, match="calibrat"):
        export.publish(source, {}, "full", tmp_path / "other")


@pytest.mark.slow
def test_right_after_cloning_the_photo_command_uses_the_committed_model(mirror: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    marge = sorted((mirror / "simpsons-art" / "marge_simpson").iterdir())[0]  # a drawing, not a show frame
    env = {**os.environ, "PORTFOLIO_OUTPUT_DIR": str(tmp_path / "fresh")}  # nothing trained on this machine
    out = subprocess.run([sys.executable, "-m", "helpers.predict", str(marge)], capture_output=True, text=True,
                         env=env, cwd=MODELS.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    first, answer = out.stdout.strip().splitlines()
    assert first.startswith(f"model: models/{shipped.STEM}.pt (the model committed in models ")
    assert "notebook 06 has not run on this machine" in first and answer.startswith(str(marge))
    expected = Predictor.from_checkpoint(shipped.checkpoint())
    expected.fit = "pad"
    from helpers.webcam.camera import read_image

    p = expected.predict(read_image(marge))
    assert answer.startswith(f"{marge}: {p.shown if p.sure else 'not sure'}  (top 3: ")
