"""Bad input, second pass: odd file names, archives that reach outside, extra data files, huge images,
model files that contradict their metadata, links, a full disk, damaged state files.

Each test reproduces one probe of a hostile user (issue "Bad input, second pass", items 1-14) on
real data where data are involved; together with tests/test_safety.py they keep every earlier probe.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pytest
import torch
from conftest import cli as _cli
from conftest import png_header as _png_header
from conftest import small_xray_tree

from helpers import data, decoding, plumbing, sources
from helpers.checkpoints import CheckpointError, load_checkpoint
from helpers.paths import Outputs
from helpers.reporting import runner
from helpers.training import TrainConfig
from helpers.tuning import ray_tune, search, trialstore
from helpers.webcam import camera, live
from helpers.webcam.calibration import calibration_path
from helpers.webcam.inference import DEMO_CHOICE, OnnxPredictor, Predictor, demo_choice

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "webcam_onnx.py"
BAD = os.fsdecode(b"bad\xff\xfe")  # a file name that is not valid UTF-8 (as Linux allows)
BAD_SHOWN = "bad\\xff\\xfe"


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("webcam_onnx", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------- 1. non-UTF-8 file names


@pytest.mark.slow
def test_a_non_utf8_image_name_is_classified_not_a_crash(tmp_path: Path, real_image: Path, model_file: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copyfile(real_image, folder / f"{BAD}.png")
    shutil.copyfile(real_image, folder / "good.jpg")
    result = _cli("-m", "helpers.predict", str(folder), "--model", str(model_file))
    assert result.returncode == 0, result.stderr  # was -11 (a segfault) with nothing printed
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{folder}/{BAD_SHOWN}.png: ") and "top 3:" in lines[0]
    js = json.loads(_cli("-m", "helpers.predict", str(folder), "--json", "--model", str(model_file)).stdout)
    assert [r["file"] for r in js] == [f"{folder}/{BAD_SHOWN}.png", f"{folder}/good.jpg"]
    assert js[0]["top3"] == js[1]["top3"]  # the same image, whatever its name


def test_the_demo_reads_and_writes_frames_under_non_utf8_names(tmp_path: Path, real_image: Path,
                                                               model_file: Path, onnx_file: Path) -> None:
    frames = tmp_path / f"in-{BAD}"
    frames.mkdir()
    for i in range(3):
        shutil.copyfile(real_image, frames / f"{BAD}-{i}.jpg")
    out = tmp_path / f"out-{BAD}"
    assert live.main(["--source", str(frames), "--checkpoint", str(model_file), "--headless", "--out", str(out)]) == 0
    assert len(list(out.glob("frame_*.png"))) == 3
    with camera.open_source(str(frames)) as source:
        camera.snapshot_series(source, 2, interval=0, out_dir=out / BAD)
    assert len(list((out / BAD).glob("snapshot_*.png"))) == 2
    onnx_bad = tmp_path / f"{BAD}.onnx"  # --model with such a name: read through bytes
    shutil.copyfile(onnx_file, onnx_bad)
    shutil.copyfile(onnx_file.with_suffix(".json"), onnx_bad.with_suffix(".json"))
    assert OnnxPredictor(onnx_bad).predict(cv2.imread(str(real_image))).label
    net, meta = _load_script().load_model(str(onnx_bad))  # the Jetson script too
    assert meta["classes"] and net is not None


@pytest.mark.slow
def test_a_video_with_a_non_utf8_name_is_refused_in_one_line(tmp_path: Path, model_file: Path) -> None:
    video = tmp_path / f"{BAD}.avi"
    video.write_bytes(b"not opened")
    result = _cli("-m", "helpers.demo", "--source", str(video), "--checkpoint", str(model_file), "--headless",
                  "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "not valid UTF-8" in result.stderr and BAD_SHOWN in result.stderr
    jetson = _cli(str(SCRIPT), "--model", str(model_file.with_suffix(".onnx")), "--source", str(video), "--headless")
    assert jetson.returncode != 0 and "Traceback" not in jetson.stderr


def test_an_unreadable_image_gets_the_real_reason(tmp_path: Path, real_image: Path, monkeypatch) -> None:
    path = tmp_path / "locked.jpg"
    shutil.copyfile(real_image, path)

    def denied(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # as root, chmod 000 would not stop the read
    with pytest.raises(ValueError, match=r"locked.jpg: cannot be read \(Permission denied\)"):
        camera.read_image(path)


# ----------------------------------------------------------------------------------- 2. zip slip, pinned archive


def test_an_archive_member_outside_the_target_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                    real_image: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x/dataset/rgb/train/homer_simpson/pic_0001.jpg", real_image.read_bytes())
        zf.writestr("x/dataset/../../../zs/ESCAPED.txt", "outside")
    dest = tmp_path / "a" / "b" / "target"
    dest.mkdir(parents=True)
    with pytest.raises(sources.CorruptDataError, match="would be written outside"):
        sources.extract_zip_folder(archive, "dataset", dest, "a test archive")
    assert not list(tmp_path.rglob("ESCAPED.txt")) and not list(dest.rglob("*"))


def test_the_simpsons_download_is_the_commit_the_checksums_were_made_from() -> None:
    about = json.loads(decoding.SIMPSONS_CHECKSUMS.read_text())["about"]
    commit = about.split("commit ")[1][:8]
    assert sources.SIMPSONS_COMMIT.startswith(commit) and len(sources.SIMPSONS_COMMIT) == 40
    assert sources.SIMPSONS_URL.endswith(f"/archive/{sources.SIMPSONS_COMMIT}.zip")


# ----------------------------------------------------------------------------------- 3, 13. extra data files


def test_an_extra_xray_file_is_named_and_nothing_is_loaded(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path)
    test_image = sorted((folder / "test" / "PNEUMONIA").iterdir())[0]
    extra = folder / "train" / "PNEUMONIA" / "person9999_bacteria_1.jpeg"
    shutil.copyfile(test_image, extra)  # a test image slipped into training
    with pytest.raises(sources.CorruptDataError) as err:
        data.load_chest_xray(data_root=tmp_path, mirror=mirror)
    msg = str(err.value)
    assert "1 file(s) that are not in its manifest.csv" in msg and "train/PNEUMONIA/person9999_bacteria_1.jpeg" in msg
    assert "Move the file(s) out of" in msg and extra.exists()  # named, never deleted
    extra.unlink()
    assert len(data.load_chest_xray(data_root=tmp_path, mirror=mirror).test) == 3 * 10


def test_an_extra_simpsons_file_is_called_extra_not_a_differing_copy(tmp_path: Path, mirror: Path) -> None:
    sources.ensure_dataset(sources.SIMPSONS, tmp_path, mirror)
    folder = tmp_path / "simpsons-mnist" / "dataset" / "grayscale" / "test" / "bart_simpson"
    shutil.copyfile(folder / sorted(p.name for p in folder.iterdir())[0], folder / "pic_9999.jpg")
    with pytest.raises(sources.CorruptDataError) as err:
        data.load_simpsons_mnist("grayscale", data_root=tmp_path, mirror=mirror)
    msg = str(err.value)
    assert "not in the published checksum list" in msg and "pic_9999.jpg" in msg and "whose copy differs" not in msg


# ----------------------------------------------------------------------------------- 4. images too large


@pytest.mark.slow
def test_huge_images_are_refused_in_one_line_and_the_others_still_classified(tmp_path: Path, real_image: Path,
                                                                              model_file: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "a_40000.png").write_bytes(_png_header(40000, 40000))  # over OpenCV's own limit
    (folder / "b_12000.png").write_bytes(_png_header(12000, 12000))  # would need 1.5 GB decoded
    shutil.copyfile(real_image, folder / "c_fine.jpg")
    result = _cli("-m", "helpers.predict", str(folder), "--model", str(model_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") and "million pixels" in e for e in errors)
    assert result.stdout.strip().splitlines()[0].startswith(f"{folder}/c_fine.jpg: ")


def test_a_large_jpeg_is_decoded_reduced(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    ok, encoded = cv2.imencode(".jpg", np.full((9000, 9000), 128, np.uint8))
    path.write_bytes(encoded.tobytes())
    frame = camera.read_image(path)  # 81 million pixels: decoded at half size
    assert frame.shape == (4500, 4500, 3)


# ----------------------------------------------------------------------------------- 5. model vs metadata


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(image_size=32), "does not take the 3x32x32 input"),
    (lambda m: m.update(classes=[f"c{i}" for i in range(20)]), "gives 10 scores but its metadata names 20"),
    (lambda m: m.update(classes=m["classes"][:3]), "gives 10 scores but its metadata names 3"),
    (lambda m: m.update(image_size=0), "'image_size' must be 8..1024"),
    (lambda m: m.update(calibration={"temperature": 1.0, "threshold": 0.5, "keep": 0.9, "fitted_on": "x",
                                     "bias": 2}), "unknown key"),
    (lambda m: m["calibration"].update(temperature=0.0), "temperature must be a finite number above 0"),
    (lambda m: m.update(mean="abc"), "'mean' must be 3 finite number"),
])
def test_an_onnx_model_that_contradicts_its_json_is_refused_in_one_line(tmp_path: Path, onnx_file: Path,
                                                                         change, expected: str) -> None:
    onnx = tmp_path / "m.onnx"
    shutil.copyfile(onnx_file, onnx)
    meta = json.loads(onnx_file.with_suffix(".json").read_text())
    change(meta)
    onnx.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises((CheckpointError, ValueError), match=expected):
        OnnxPredictor(onnx)
    with pytest.raises(SystemExit) as err:  # the standalone Jetson script checks the same
        _load_script().load_model(str(onnx))
    assert str(err.value).startswith("error: ") and "\n" not in str(err.value)


@pytest.mark.slow
def test_an_onnx_json_that_is_a_list_is_refused(tmp_path: Path, onnx_file: Path) -> None:
    onnx = tmp_path / "m.onnx"
    shutil.copyfile(onnx_file, onnx)
    onnx.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a JSON list"):
        OnnxPredictor(onnx)
    result = _cli("-m", "helpers.predict", str(onnx), "--model", str(onnx))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def _write_payload(path: Path, payload: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return plumbing.write_checked(path, buffer.getvalue())


@pytest.mark.parametrize("change, expected", [
    (lambda p: p.update(classes=["a", "b"]), "the model gives 10 scores but its metadata names 2 classes"),
    (lambda p: p.pop("arch"), "the checkpoint lacks 'arch'"),
    (lambda p: p.update(mean="abc"), "'mean' must be 3 finite number"),
])
def test_a_checkpoint_whose_metadata_does_not_fit_is_refused_in_one_line(tmp_path: Path, model_file: Path,
                                                                         change, expected: str) -> None:
    payload = torch.load(io.BytesIO(model_file.read_bytes()), weights_only=True)
    change(payload)
    path = _write_payload(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


class _NotPlainData:
    """Something a weights-only load refuses (it would need unpickling code)."""


def test_pytorchs_unsafe_loading_advice_is_never_passed_on(tmp_path: Path, model_file: Path) -> None:
    payload = torch.load(io.BytesIO(model_file.read_bytes()), weights_only=True)
    payload["extra"] = {"thing": _NotPlainData()}
    path = _write_payload(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value) and "not loaded (loading them could run code)" in str(err.value)


# ----------------------------------------------------------------------------------- 6. the lock file


def test_a_lock_file_that_links_to_a_user_file_never_empties_it(tmp_path: Path) -> None:
    precious = tmp_path / "my_thesis.txt"
    precious.write_text("three years of work")
    trials = tmp_path / "search.json"
    trials.with_name(trials.name + ".lock").symlink_to(precious)
    with pytest.raises(trialstore.TrialsFileError, match="is a symbolic link"):
        with trialstore.locked(trials):
            pass
    assert precious.read_text() == "three years of work"


# ----------------------------------------------------------------------------------- 7. a full disk


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_atomic_write_leaves_no_temporary_file_and_names_the_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "t.json"
    target.write_text("previous")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError, match=r"could not write .*t.json \(No space left on device\)"):
        plumbing.write_atomic(target, b"x" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"] and target.read_text() == "previous"


def test_a_data_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path: Path, mirror: Path,
                                                                       monkeypatch) -> None:
    small_xray_tree(mirror, tmp_path, per_label=4)
    monkeypatch.setattr(decoding, "write_checked", _disk_full)
    with pytest.warns(UserWarning, match="cache not written, the data are used without it.*No space left"):
        splits = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    assert len(splits.test) == 12 and not list((tmp_path / "cache").glob("*.pt"))


def test_a_mirror_copy_onto_a_full_disk_fails_in_one_short_line_and_leaves_nothing(tmp_path: Path, mirror: Path,
                                                                                   monkeypatch) -> None:
    real_copy, copied = shutil.copyfile, []

    def copy_until_full(src, dst, *args, **kwargs):
        if len(copied) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(src)
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    with pytest.raises(sources.DataError) as err:
        sources.ensure_dataset(sources.SIMPSONS, tmp_path, mirror)
    msg = str(err.value)
    assert "No space left on device" in msg and "more file(s)" in msg and len(msg) < 600 and "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # no half copy, no temporary folder


# ----------------------------------------------------------------------------------- 8. the demo's results


@pytest.mark.slow
def test_the_demo_fails_when_a_frame_cannot_be_written(tmp_path: Path, real_image: Path, model_file: Path) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    shutil.copyfile(real_image, frames / "a.jpg")
    out = tmp_path / "out"
    (out / "frame_00000.png").mkdir(parents=True)  # a folder where the first frame should go
    result = _cli("-m", "helpers.demo", "--source", str(frames), "--checkpoint", str(model_file), "--headless",
                  "--out", str(out))
    assert result.returncode == 2 and "done:" not in result.stdout
    assert result.stderr.startswith("error: could not write") and "frame_00000.png" in result.stderr


@pytest.mark.slow
def test_the_demo_fails_on_a_folder_of_unreadable_images(tmp_path: Path, model_file: Path) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    (frames / "a.jpg").write_bytes(b"not an image")
    result = _cli("-m", "helpers.demo", "--source", str(frames), "--checkpoint", str(model_file), "--headless",
                  "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "no frame could be read" in result.stderr


def test_an_opencv_error_is_not_reported_as_a_missing_window(tmp_path: Path, real_image: Path, model_file: Path,
                                                             monkeypatch, capsys) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    shutil.copyfile(real_image, frames / "a.jpg")

    def broken(frame):
        raise cv2.error("a shape mismatch")

    monkeypatch.setattr(Predictor, "probabilities", lambda self, pixels: broken(pixels))  # the live loop's path
    code = plumbing.run(live.main, ["--source", str(frames), "--checkpoint", str(model_file), "--headless", "--out",
                               str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: OpenCV failed") and "window" not in err


# ----------------------------------------------------------------------------------- 9. report --only


@pytest.mark.parametrize("argv", [["--only"], ["--only", ""], ["--only", "99"]])
def test_report_refuses_an_empty_or_unmatched_selection(argv: list[str], monkeypatch, capsys, tmp_path: Path) -> None:
    def never(*args, **kwargs):
        raise AssertionError("no notebook may run")

    monkeypatch.setattr(runner, "execute", never)
    monkeypatch.setattr(runner.book, "build", never)
    assert plumbing.run(runner.main, [*argv, "--report-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and ("at least one notebook" in err or "no notebooks matched --only 99" in err)


# ----------------------------------------------------------------------------------- 10. damaged state files


def _good_trials(tmp_path: Path) -> Path:
    from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

    trials = Trials()
    fmin(lambda x: {"loss": x ** 2, "status": STATUS_OK}, hp.uniform("x", -1, 1), algo=tpe.suggest, max_evals=2,
         trials=trials, rstate=np.random.default_rng(0), show_progressbar=False)
    trials.attachments["search_spec"] = "{}"
    path = tmp_path / "t.json"
    trialstore.save_trials(trials, path)
    return path


@pytest.mark.parametrize("damage, expected", [
    (lambda d: d["trials"][0].pop("misc"), "trial 0 lacks misc"),
    (lambda d: d.update(trials={"0": {}}), "'trials' is not a list"),
    (lambda d: d.update(attachments=["a"]), "'attachments' is not an object"),
    (lambda d: d.pop("trials"), "'trials' is not a list"),
])
def test_a_malformed_trials_file_is_named_as_damaged(tmp_path: Path, damage, expected: str) -> None:
    path = _good_trials(tmp_path)
    doc = json.loads(path.read_text())
    damage(doc)
    text = json.dumps(doc)
    with pytest.raises(trialstore.TrialsFileError, match=f"t.json is damaged: {expected}"):
        trialstore.trials_from_json(text, str(path))


def test_trials_without_a_record_of_their_search_are_not_called_another_search(tmp_path: Path) -> None:

    path = _good_trials(tmp_path)
    trials = trialstore.load_trials(path)
    trials.attachments.pop("search_spec")
    trialstore.save_trials(trials, path)
    spec = search.SearchSpec(name="x", algo="tpe", seed=0, max_evals=2)
    with pytest.raises(search.SearchMismatchError, match="does not record which search made its trials"):
        search._open_trials(path, spec)


def test_a_cache_with_a_valid_checksum_but_a_missing_key_is_rebuilt(tmp_path: Path, mirror: Path) -> None:
    small_xray_tree(mirror, tmp_path, per_label=4)
    first = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    (cache,) = (tmp_path / "cache").glob("xray-32px-*.pt")
    payload = torch.load(io.BytesIO(cache.read_bytes()), weights_only=True)
    del payload["train_y"]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    plumbing.write_checked(cache, buffer.getvalue())  # a valid checksum over an incomplete cache
    with pytest.warns(UserWarning, match="rebuilding it: .* lacks train_y"):
        again = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    assert torch.equal(first.train.y, again.train.y) and torch.equal(first.test.x, again.test.x)


def test_a_dangling_or_damaged_ray_state_names_the_folder_to_delete(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "outputs" / "ray" / "search"
    run.mkdir(parents=True)
    (run / "tuner.pkl").symlink_to(tmp_path / "gone.pkl")
    with pytest.raises(ray_tune.UnsafeRestoreError, match="which does not exist.*Delete or move"):
        ray_tune.check_restorable(run)
    (run / "tuner.pkl").unlink()
    (run / "tuner.pkl").write_bytes(b"\x80\x04 damaged")
    from ray import tune

    def restore(*args, **kwargs):
        import pickle

        raise pickle.UnpicklingError("invalid load key")

    monkeypatch.setattr(tune, "with_parameters", lambda trainable, **kwargs: trainable)  # no Ray cluster needed
    monkeypatch.setattr(tune, "with_resources", lambda trainable, resources: trainable)
    monkeypatch.setattr(tune.Tuner, "can_restore", classmethod(lambda cls, p: True))
    monkeypatch.setattr(tune.Tuner, "restore", classmethod(restore))
    from helpers.tuning.search import Rungs

    with pytest.raises(ray_tune.RayStateError, match=re.escape(f"cannot be read (UnpicklingError); delete or move {run}")):
        ray_tune.run_ray_search(None, TrainConfig(), name="search", rungs=Rungs(1, 2, 3), num_samples=1,
                             outputs=Outputs(tmp_path / "outputs"))


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, float("nan")])
def test_a_calibration_with_a_zero_or_nan_temperature_is_refused(tmp_path: Path, model_file: Path,
                                                                  real_image: Path, temperature: float) -> None:
    model = tmp_path / "m.pt"
    shutil.copyfile(model_file, model)
    shutil.copyfile(plumbing.checksum_path(model_file), plumbing.checksum_path(model))
    calibration_path(model).write_text(json.dumps({"temperature": temperature, "threshold": 0.5, "keep": 0.9,
                                                    "fitted_on": "x"}))
    result = _cli("-m", "helpers.predict", str(real_image), "--model", str(model))
    assert result.returncode == 2 and "temperature must be a finite number above 0" in result.stderr
    assert "nan %" not in result.stdout


@pytest.mark.slow
def test_a_folder_without_images_does_not_stop_the_others(tmp_path: Path, real_image: Path, model_file: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _cli("-m", "helpers.predict", str(tmp_path / "empty"), str(real_image), "--json", "--model",
                  str(model_file))
    assert result.returncode == 1 and "folder holds no image files" in result.stderr
    rows = json.loads(result.stdout)  # the empty folder is an entry of its own, with its error
    assert len(rows) == 2 and "folder holds no image files" in rows[0]["error"] and "answer" in rows[1]


def test_a_demo_choice_naming_a_missing_file_says_so(tmp_path: Path, monkeypatch, model_file: Path) -> None:
    models = Outputs.for_budget("full").models
    models.mkdir(parents=True, exist_ok=True)
    (models / DEMO_CHOICE).write_text(json.dumps({"checkpoint": "simpsons_robust.pt", "why": "chosen"}))
    shutil.copyfile(model_file, models / "simpsons_tuned.pt")
    try:
        path, why = demo_choice()
        assert path.name == "simpsons_demo.pt"  # the committed model, not another local checkpoint
        assert "notebook 06 chose simpsons_robust.pt, which is missing" in why and "has not run" not in why
    finally:
        (models / DEMO_CHOICE).unlink()
        (models / "simpsons_tuned.pt").unlink()


# ----------------------------------------------------------------------------------- 11. a trials file edited by hand


def test_a_hand_edited_trials_file_is_refused_and_an_old_one_accepted_once(tmp_path: Path) -> None:
    path = _good_trials(tmp_path)
    assert plumbing.checksum_path(path).exists()
    doc = json.loads(path.read_text())
    doc["trials"][0]["result"]["loss"] = -0.99  # a result made better by hand
    path.write_text(json.dumps(doc))
    with pytest.raises(trialstore.TrialsFileError, match="does not match its checksum"):
        trialstore.load_trials(path)
    plumbing.checksum_path(path).unlink()  # as written by an earlier version: no checksum yet, format 1
    path.write_text(path.read_text().replace(trialstore.FORMAT, "lenet5-portfolio-trials/1"))
    with pytest.warns(UserWarning, match="no checksum beside it.*saved again with its sha256"):
        assert len(trialstore.load_trials(path).trials) == 2
    assert len(trialstore.load_trials(path).trials) == 2  # from now on it is checked
    path.write_text(path.read_text().replace("-0.99", "-0.5"))
    with pytest.raises(trialstore.TrialsFileError, match="does not match its checksum"):
        trialstore.load_trials(path)


# ----------------------------------------------------------------------------------- 12. Ray state others could write


def test_a_ray_state_linking_into_a_world_writable_folder_is_not_restored(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "ray" / "search"
    run.mkdir(parents=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "tuner.pkl").write_bytes(b"not loaded")
    os.chmod(shared / "tuner.pkl", 0o644)
    os.chmod(shared, 0o777)
    (run / "tuner.pkl").symlink_to(shared / "tuner.pkl")
    with pytest.raises(ray_tune.UnsafeRestoreError, match="shared is writable by other users"):
        ray_tune.check_restorable(run)
    (run / "tuner.pkl").unlink()
    (run / "tuner.pkl").write_bytes(b"not loaded")
    ray_tune.check_restorable(run)
    os.chmod(run.parent, 0o777)  # a world-writable outputs/ray: another user could swap the run folder
    with pytest.raises(ray_tune.UnsafeRestoreError, match="ray is writable by other users"):
        ray_tune.check_restorable(run)


# ----------------------------------------------------------------------------------- 14. machine paths in notebooks


def test_committed_notebooks_hold_no_machine_paths() -> None:
    for path in runner.notebook_paths():
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        assert "input_path" not in meta and "output_path" not in meta, path.name


def test_tidy_strips_papermills_machine_paths(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": "/home/me/x.ipynb", "output_path": "/home/me/.x.ipynb", "duration": 1}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    runner.tidy(path)
    assert nbformat.read(path, as_version=4).metadata["papermill"] == {"duration": 1}
