"""Bad input, third pass: a book build that deleted a folder, an export that overwrote the weights, and 20 more.

One test (or a few) per item of the issue "Bad input, third pass", in its order; the probes that could hang or
take the machine's memory when unfixed (3, 8, 9) run in a subprocess with a time-out and a memory limit.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, cli, copy_dataset, png_header, small_xray_tree
from PIL import Image, ImageOps

from helpers import data, decoding, plumbing, sources
from helpers.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from helpers.reporting import book
from helpers.tuning import trialstore
from helpers.webcam import art, camera, export, inference, live, shipped
from helpers.webcam.calibration import Calibration, calibration_path

MEMORY = 6 << 30  #: address space for a probe: enough to import torch, far below what an unbounded image takes


RUN_MODULE = "import runpy; sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"


def limited(*args: str, code: str = RUN_MODULE, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m *args`` (or ``-c code``) with a time-out and a memory limit: an unfixed probe cannot hang or swap."""
    limit = f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, {MEMORY})); "
    env = {k: v for k, v in os.environ.items() if k != "HELPERS_DEBUG"}
    return subprocess.run([sys.executable, "-c", limit + code, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, errors="backslashreplace")


def load_in_a_probe(loader: str, root: Path) -> subprocess.CompletedProcess:
    """``helpers.data.<loader>(data_root=root)`` in a limited subprocess, bad input reported as by the commands."""
    return limited(str(root), code=f"from pathlib import Path; from helpers import data, plumbing; sys.exit("
                                   f"plumbing.run(lambda a: data.{loader}(data_root=Path(sys.argv[1])) and 0))")


def write_png(path: Path, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", image)
    path.write_bytes(encoded.tobytes())
    return path


# ----------------------------------------------------------------------------------- 1. the book build


def test_the_book_build_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    source = tmp_path / "report" / "source"
    source.mkdir(parents=True)
    (source / "thesis.tex").write_text("a user's work")
    notebooks = sorted((ROOT / "notebooks").glob("0[1-2]_*.ipynb"))
    with pytest.raises(ValueError, match="not made by this project's book build"):
        book.stage(notebooks, source)
    assert (source / "thesis.tex").read_text() == "a user's work"
    result = cli("-m", "helpers.report", "--render-only", "--report-dir", str(tmp_path / "report"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert (source / "thesis.tex").read_text() == "a user's work"
    own = tmp_path / "own" / "source"
    book.stage(notebooks, own)
    (own / "leftover.md").write_text("from the last build")
    book.stage(notebooks, own)  # its own folder: rebuilt from scratch
    assert (own / book.MARKER).is_file() and not (own / "leftover.md").exists() and (own / "index.md").is_file()


# ----------------------------------------------------------------------------------- 2. the export


@pytest.mark.parametrize("out", ["m.pt", "m.pt.sha256", "m.calibration.onnx", "m.txt", "m"])
def test_the_export_never_writes_over_the_model_or_a_name_without_onnx(tmp_path: Path, model_file: Path,
                                                                         out: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_file.parent, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(ValueError, match="overwrite|must end in .onnx"):
        export.export_onnx(folder / "m.pt", folder / out)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert plumbing.run(export.main, ["--checkpoint", str(folder / "m.pt"), "--out", str(folder / out)]) == 2


def test_the_export_writes_outside_the_committed_models_by_default(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PORTFOLIO_OUTPUT_DIR", str(tmp_path))
    before = {p.name: p.read_bytes() for p in shipped.folder().iterdir()}
    assert export.main([]) == 0
    assert {p.name: p.read_bytes() for p in shipped.folder().iterdir()} == before and shipped.verify() == []
    assert (tmp_path / "outputs" / "webcam" / "simpsons_demo.onnx").is_file()
    assert "outputs/webcam/simpsons_demo.onnx" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- 3. extreme aspect ratios


@pytest.mark.slow
def test_extreme_aspect_ratios_are_classified_without_huge_allocations(tmp_path: Path, model_file: Path) -> None:
    wide = write_png(tmp_path / "wide.png", np.full((1, 100_000, 3), 90, np.uint8))
    tall = write_png(tmp_path / "tall.png", np.full((30_000, 1, 3), 90, np.uint8))
    result = limited("helpers.predict", "--json", str(wide), str(tall), "--model", str(model_file))
    assert result.returncode == 0, result.stderr
    assert [r["file"] for r in json.loads(result.stdout)] == [str(wide), str(tall)]
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copyfile(wide, frames / "a.png")
    result = limited("helpers.demo", "--source", str(frames), "--checkpoint", str(model_file), "--headless",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").glob("frame_*.png"))) == 1


def test_padding_and_the_overlay_are_bounded_in_size() -> None:
    line = np.full((1, 100_000, 3), 90, np.uint8)
    assert inference.pad_square(line).shape == (inference.MAX_SIDE, inference.MAX_SIDE, 3)
    assert inference.to_model_pixels(line, 28, 3, "pad").shape == (3, 28, 28)
    frame = np.full((100, 120, 3), 90, np.uint8)
    assert inference.bounded(frame) is frame  # ordinary frames are untouched (results do not move)
    shown = inference.annotate(line, inference.Prediction(np.ones(3) / 3, [("a", 0.4), ("b", 0.3), ("c", 0.3)]))
    assert max(shown.shape[:2]) <= inference.MAX_SIDE


# ----------------------------------------------------------------------------------- 4. EXIF orientation


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_exif_orientation_is_honoured_as_a_photo_viewer_does(tmp_path: Path, orientation: int) -> None:
    rgb = np.random.default_rng(orientation).integers(0, 256, (20, 32, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    with Image.open(path) as im:
        viewer = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(camera.read_image(path), viewer[..., ::-1])


def test_a_phone_photo_saved_on_its_side_gets_the_upright_answer(tmp_path: Path, real_image: Path,
                                                                   model_file: Path) -> None:
    upright = cv2.resize(cv2.imread(str(real_image)), (40, 64))
    write_png(tmp_path / "upright.png", upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90° counter-clockwise; a viewer turns it back clockwise
    Image.fromarray(np.rot90(upright[..., ::-1], 1).copy()).save(tmp_path / "phone.png", exif=exif)
    assert np.array_equal(camera.read_image(tmp_path / "phone.png"), upright)
    predictor = inference.load_predictor(model_file)
    assert predictor.predict(camera.read_image(tmp_path / "phone.png")).top == predictor.predict(upright).top


# ----------------------------------------------------------------------------------- 5. tampered model files


@pytest.fixture()
def models_copy(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the committed models/ folder that the loader takes for the committed one."""
    folder = tmp_path / "models"
    shutil.copytree(shipped.folder(), folder)
    monkeypatch.setattr(shipped, "folder", lambda: folder)
    return folder


def _edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


@pytest.mark.parametrize("model, tamper, named", [
    ("simpsons_demo.onnx", lambda f: f.joinpath("simpsons_demo.onnx").write_bytes(
        (b := bytearray(f.joinpath("simpsons_demo.onnx").read_bytes()), b.__setitem__(-100, b[-100] ^ 1), bytes(b))[-1]),
     "simpsons_demo.onnx does not match"),
    ("simpsons_demo.onnx", lambda f: _edit_json(f / "simpsons_demo.json", lambda d: d["classes"].insert(
        0, d["classes"].pop(1))), "simpsons_demo.json does not match"),
    ("simpsons_demo.pt", lambda f: _edit_json(f / "simpsons_demo.calibration.json", lambda d: d.update(threshold=0)),
     "simpsons_demo.calibration.json does not match"),
    ("simpsons_demo.pt", lambda f: (f / "simpsons_demo.calibration.json").unlink(),
     "simpsons_demo.calibration.json is missing"),
    ("simpsons_demo.pt", lambda f: (f / "SHA256SUMS").unlink(), "SHA256SUMS is missing"),
])
def test_a_tampered_committed_model_is_refused_naming_the_file(models_copy: Path, tamper, model: str,
                                                              named: str) -> None:
    assert inference.load_predictor(models_copy / model).classes  # as committed: loads
    tamper(models_copy)
    with pytest.raises(CheckpointError, match=named):
        inference.load_predictor(models_copy / model)


def test_a_committed_checkpoint_replaced_with_its_sum_is_refused(models_copy: Path, model_file: Path,
                                                                  capsys) -> None:
    shutil.copyfile(model_file, models_copy / "simpsons_demo.pt")  # another model, with a matching .pt.sha256
    shutil.copyfile(model_file.with_name("m.pt.sha256"), models_copy / "simpsons_demo.pt.sha256")
    assert load_checkpoint(models_copy / "simpsons_demo.pt").classes  # the checkpoint's own checksum is satisfied
    assert plumbing.run(live.predict_main, [str(ROOT / "models" / "README.md")]) == 2  # predict: the demo's model
    err = capsys.readouterr().err
    assert err.startswith("error: the demo model in models/ is not as committed: simpsons_demo.pt does not match")
    assert "git checkout -- models/" in err


def test_a_threshold_that_is_always_sure_is_refused(tmp_path: Path, model_file: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(model_file.parent, folder)
    Calibration(1.0, 0.05, 0.9, "edited").save(calibration_path(folder / "m.pt"))  # below 1/10: always sure
    with pytest.raises(CheckpointError, match="at or below 1/10.*every answer would be sure"):
        inference.load_predictor(folder / "m.pt")


def test_the_jetson_script_checks_the_sums_beside_its_model(models_copy: Path) -> None:
    script = export.jetson_script()
    net, meta = script.load_model(str(models_copy / "simpsons_demo.onnx"))
    _edit_json(models_copy / "simpsons_demo.json", lambda d: d["classes"].reverse())
    with pytest.raises(SystemExit, match="simpsons_demo.json does not match its sha256"):
        script.load_model(str(models_copy / "simpsons_demo.onnx"))


# ----------------------------------------------------------------------------------- 6. a display that cannot be opened


def _free_display() -> str:
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    return f":{number}"


def test_a_display_is_only_used_when_a_server_answers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", _free_display())
    assert plumbing.has_display() is False  # DISPLAY set, nobody listening: Qt would abort the process
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "xquartz:0"))
        server.listen(8)
        monkeypatch.setenv("DISPLAY", str(tmp_path / "xquartz:0"))
        assert plumbing.has_display() is True
        monkeypatch.setenv("DISPLAY", "")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.setenv("WAYLAND_DISPLAY", "xquartz:0")
        assert plumbing.has_display() is True
        assert export.jetson_script().has_display() is True
    monkeypatch.setenv("WAYLAND_DISPLAY", "gone")
    assert plumbing.has_display() is False and export.jetson_script().has_display() is False


@pytest.mark.slow
def test_the_demo_and_the_jetson_script_run_headless_on_an_unreachable_display(tmp_path: Path, real_image: Path,
                                                                                 model_file: Path,
                                                                                 onnx_file: Path) -> None:
    frame = cv2.resize(cv2.imread(str(real_image)), (64, 64))
    video = camera.write_video([frame] * 3, tmp_path / "clip.avi")
    env = {"DISPLAY": _free_display(), "WAYLAND_DISPLAY": ""}
    result = cli("-m", "helpers.demo", "--source", str(video), "--checkpoint", str(model_file), "--out",
                 str(tmp_path / "out"), env_extra=env)
    assert result.returncode == 0, result.stderr  # was SIGABRT (rc 134) in Qt
    assert "running headless" in result.stdout and len(list((tmp_path / "out").glob("frame_*.png"))) == 3
    result = cli(str(ROOT / "scripts" / "webcam_onnx.py"), "--model", str(onnx_file), "--source", str(video),
                 "--out", str(tmp_path / "jetson"), env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "running headless" in result.stdout and len(list((tmp_path / "jetson").glob("frame_*.png"))) == 3


# ----------------------------------------------------------------------------------- 7. one bad path, interrupts


def test_one_bad_path_is_one_entry_and_the_others_are_answered(tmp_path: Path, real_image: Path, model_file: Path,
                                                                monkeypatch, capsys) -> None:
    shutil.copyfile(real_image, tmp_path / "a.png")
    shutil.copyfile(real_image, tmp_path / "b.png")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    listing = camera.image_files

    def unreadable(folder: Path) -> list[Path]:  # as a folder without read permission (root reads every folder)
        if Path(folder) == locked:
            raise PermissionError(errno.EACCES, "Permission denied")
        return listing(folder)

    monkeypatch.setattr(live, "image_files", unreadable)
    paths = [tmp_path / "a.png", tmp_path / "loop.png", locked, tmp_path / "b.png"]
    assert live.predict_main(["--json", *map(str, paths), "--model", str(model_file)]) == 1
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [r["file"] for r in rows] == [str(p) for p in paths]
    assert "answer" in rows[0] and "answer" in rows[3]
    assert "symbolic link that leads nowhere" in rows[1]["error"] and "cannot be listed" in rows[2]["error"]
    assert err.count("error: ") == 2


def test_an_interrupted_json_run_prints_what_is_done(tmp_path: Path, real_image: Path, model_file: Path,
                                                     monkeypatch, capsys) -> None:
    for name in "abc":
        shutil.copyfile(real_image, tmp_path / f"{name}.png")
    answer = live.answer_row
    calls = []

    def ctrl_c_on_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return answer(*args)

    monkeypatch.setattr(live, "answer_row", ctrl_c_on_the_third)
    assert live.predict_main(["--json", str(tmp_path), "--model", str(model_file)]) == 130
    out, err = capsys.readouterr()
    assert [r["file"] for r in json.loads(out)] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert "interrupted after 2 image(s)" in err


# ----------------------------------------------------------------------------------- 8. pipes and devices


@pytest.mark.slow
def test_a_pipe_in_a_class_folder_is_named_not_waited_on(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "data"
    folder = copy_dataset(mirror, "simpsons-mnist", root)
    os.mkfifo(folder / "dataset" / "rgb" / "train" / "bart_simpson" / "pic_9999.jpg")
    result = load_in_a_probe("load_simpsons_mnist", root)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not regular files" in result.stderr and "pic_9999.jpg" in result.stderr


@pytest.mark.slow
def test_a_link_to_a_device_named_as_an_xray_is_named_not_read(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, per_label=2, manifest=False)
    (folder / "train" / "NORMAL" / "IM-9999-0001.jpeg").symlink_to("/dev/zero")
    result = load_in_a_probe("load_chest_xray", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not regular files" in result.stderr and "IM-9999-0001.jpeg" in result.stderr


@pytest.mark.slow
def test_a_listed_xray_that_became_a_pipe_is_not_hashed(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, per_label=2)
    first = sorted((folder / "test" / "NORMAL").iterdir())[0]
    first.unlink()
    os.mkfifo(first.with_suffix(".fifo"))
    first.symlink_to(first.with_suffix(".fifo"))  # the listed name now leads to a pipe
    result = load_in_a_probe("load_chest_xray", tmp_path)
    assert result.returncode == 2 and "not regular files" in result.stderr and first.name in result.stderr


# ----------------------------------------------------------------------------------- 9. decompression bombs


@pytest.mark.slow
def test_a_decompression_bomb_named_as_an_xray_is_one_line(tmp_path: Path, mirror: Path) -> None:
    folder = small_xray_tree(mirror, tmp_path, per_label=2, manifest=False)
    (folder / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(png_header(15000, 15000))
    result = load_in_a_probe("load_chest_xray", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "IM-9999-0001.jpeg" in result.stderr
    assert "not an image of this data set" in result.stderr


# ----------------------------------------------------------------------------------- 10-11. manifests


@pytest.fixture()
def art_folder(mirror: Path, tmp_path: Path) -> Path:
    return copy_dataset(mirror, "simpsons-art", tmp_path / "data")


def _rewrite_manifest(folder: Path, change, encoding: str = "utf-8") -> None:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), list(reader.fieldnames)
    rows, fields = change(rows, fields)
    with open(folder / "manifest.csv", "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_an_art_manifest_row_outside_its_folder_or_twice_is_refused(art_folder: Path, mirror: Path) -> None:
    intruder = sorted((mirror / "simpsons-mnist" / "dataset" / "rgb" / "test" / "homer_simpson").iterdir())[0]
    row = {"file": f"../simpsons-mnist/dataset/rgb/test/homer_simpson/{intruder.name}", "class": "homer_simpson",
           "split": "test", "artgroup": "x", "kind": "official-art", "sha256": sources.file_digest(intruder)}
    _rewrite_manifest(art_folder, lambda rows, fields: (rows + [{k: row.get(k, "") for k in fields}], fields))
    with pytest.raises(sources.CorruptDataError, match="is not a file inside"):
        art.load_art(art_folder.parent)
    _rewrite_manifest(art_folder, lambda rows, fields: (rows[:-1] + [{**rows[-1], "file": str(intruder)}], fields))
    with pytest.raises(sources.CorruptDataError, match="is not a file inside"):
        art.load_art(art_folder.parent)
    _rewrite_manifest(art_folder, lambda rows, fields: (rows[:-1] + rows[:1], fields))
    with pytest.raises(sources.CorruptDataError, match="listed twice"):
        art.load_art(art_folder.parent)


def test_a_manifest_with_a_byte_order_mark_loads_and_a_renamed_column_is_named(art_folder: Path,
                                                                                tmp_path: Path,
                                                                                mirror: Path) -> None:
    _rewrite_manifest(art_folder, lambda rows, fields: (rows, fields), encoding="utf-8-sig")
    assert (art_folder / "manifest.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert len(art.load_art(art_folder.parent)) == 109
    _rewrite_manifest(art_folder, lambda rows, fields: (
        [{("sha" if k == "sha256" else k): v for k, v in r.items()} for r in rows],
        [("sha" if k == "sha256" else k) for k in fields]))
    with pytest.raises(sources.CorruptDataError, match="lacks the column.s. sha256"):
        art.load_art(art_folder.parent)
    xray = small_xray_tree(mirror, tmp_path, per_label=2)
    text = (xray / "manifest.csv").read_text(encoding="utf-8")
    (xray / "manifest.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert len(data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror).test) > 0
    (xray / "manifest.csv").write_text(text.replace("split,", "part,", 1), encoding="utf-8")
    with pytest.raises(sources.CorruptDataError, match="lacks the column.s. split"):
        data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)


# ----------------------------------------------------------------------------------- 12-13. odd pixel formats


def test_floating_point_images_are_scaled_to_light_levels(tmp_path: Path) -> None:
    light = np.linspace(0, 1, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    cv2.imwrite(str(tmp_path / "f.tiff"), light)
    cv2.imwrite(str(tmp_path / "f.hdr"), light * 4)  # HDR: brighter than white
    tiff, hdr = camera.read_image(tmp_path / "f.tiff"), camera.read_image(tmp_path / "f.hdr")
    assert tiff.dtype == np.uint8 and np.abs(tiff.astype(int) - np.round(light * 255)).max() <= 1
    assert hdr.dtype == np.uint8 and hdr.max() == 255 and hdr.min() == 0 and hdr.mean() > 100
    with pytest.raises(ValueError, match="not light levels"):
        camera.on_white(np.full((4, 4), np.nan, np.float32))


def test_an_animation_is_read_as_its_first_frame_and_says_so(tmp_path: Path, model_file: Path, capsys) -> None:
    frames = [Image.new("RGB", (30, 30), c) for c in ("red", "green", "blue")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    heard = []
    frame = camera.read_image(tmp_path / "anim.gif", note=heard.append)
    assert frame[0, 0].tolist() == [0, 0, 255] and heard == [f"{tmp_path}/anim.gif: holds 3 frames (an animation "
                                                             f"or a multi-page file); only the first is used"]
    with pytest.warns(UserWarning, match="holds 3 frames"):
        camera.read_image(tmp_path / "anim.gif")
    assert live.predict_main(["--json", str(tmp_path / "anim.gif"), "--model", str(model_file)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["notes"] == heard and "note: " in err


# ----------------------------------------------------------------------------------- 14. hidden files


def test_macos_resource_forks_in_a_folder_are_skipped(tmp_path: Path, real_image: Path, model_file: Path,
                                                      capsys) -> None:
    shutil.copyfile(real_image, tmp_path / "homer.png")
    (tmp_path / "._homer.png").write_bytes(b"\x00\x05\x16\x07" + bytes(100))  # AppleDouble: not an image
    assert live.predict_main([str(tmp_path), "--model", str(model_file)]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [str(tmp_path / "homer.png")]
    assert camera.ImageFolderSource(tmp_path).files == [tmp_path / "homer.png"]


# ----------------------------------------------------------------------------------- 15-16. NaN, no calibration


def test_a_model_that_outputs_nan_gives_an_error_not_invalid_json(tmp_path: Path, model_file: Path,
                                                                  real_image: Path, capsys) -> None:
    ckpt = load_checkpoint(model_file)
    with torch.no_grad():
        [p for n, p in ckpt.model.named_parameters() if n.endswith("bias")][-1].fill_(float("nan"))  # the output layer
    path = save_checkpoint(tmp_path / "nan.pt", ckpt.model, ckpt.classes, ckpt.mean, ckpt.std)
    onnx = export.export_onnx(path, tmp_path / "nan.onnx")
    for model in (path, onnx):
        assert live.predict_main(["--json", str(real_image), "--model", str(model)]) == 1
        out, err = capsys.readouterr()
        (row,) = json.loads(out)  # strict JSON: no NaN
        assert "not numbers (NaN or infinite)" in row["error"] and err.count("error: ") == 1


def test_predict_says_when_its_model_is_not_calibrated(tmp_path: Path, model_file: Path, real_image: Path,
                                                       capsys) -> None:
    shutil.copyfile(model_file, tmp_path / "m.pt")
    shutil.copyfile(model_file.with_name("m.pt.sha256"), tmp_path / "m.pt.sha256")
    assert live.predict_main([str(real_image), "--model", str(tmp_path / "m.pt")]) == 0
    assert "is not calibrated" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- 17. a killed mirror copy


def test_a_partial_copy_left_by_a_killed_process_is_removed_later(tmp_path: Path, mirror: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    folders = {}
    for name, owner in (("dead", {"pid": dead.pid, "host": host}), ("alive", {"pid": os.getpid(), "host": host}),
                        ("unmarked", None)):
        folders[name] = tmp_path / f".chest_xray-{name}"
        folders[name].mkdir()
        if owner:
            (folders[name] / sources.OWNER).write_text(json.dumps(owner))
    (tmp_path / ".FashionMNIST-dead").mkdir()
    (tmp_path / ".FashionMNIST-dead" / sources.OWNER).write_text(json.dumps({"pid": dead.pid, "host": host}))
    assert sources.remove_abandoned(tmp_path / "chest_xray") == [folders["dead"]]
    assert folders["alive"].is_dir() and folders["unmarked"].is_dir()  # a live copy, and a folder not ours
    assert (tmp_path / ".FashionMNIST-dead").is_dir()  # another data set's: removed when that one loads


@pytest.mark.slow
def test_sigkill_during_the_mirror_copy_leaves_nothing_after_the_next_load(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "data"
    copier = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; from helpers import "
                               "sources; sources.ensure_dataset(sources.SIMPSONS, Path(sys.argv[1]), "
                               "Path(sys.argv[2]))", str(root), str(mirror)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not list(root.glob(".simpsons-mnist-*/x/dataset")) and time.monotonic() < deadline:
        time.sleep(0.05)
    copier.send_signal(signal.SIGKILL)
    copier.wait()
    assert list(root.glob(".simpsons-mnist-*")), "the copy should have been killed midway"
    sources.ensure_dataset(sources.SIMPSONS, root, mirror)
    assert not list(root.glob(".simpsons-mnist-*")) and (root / "simpsons-mnist" / "dataset").is_dir()


# ----------------------------------------------------------------------------------- 18. control characters in names


def test_control_characters_in_names_are_escaped_and_json_gives_the_bytes(tmp_path: Path, real_image: Path,
                                                                         model_file: Path, capsys) -> None:
    name = "a\nb\x1b[31mred.png"
    shutil.copyfile(real_image, tmp_path / name)
    assert live.predict_main([str(tmp_path), "--model", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and len(out.splitlines()) == 1 and out.startswith(f"{tmp_path}/a\\nb\\x1b[31mred.png: ")
    assert live.predict_main(["--json", str(tmp_path), "--model", str(model_file)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert bytes.fromhex(row["file_hex"]) == os.fsencode(tmp_path / name)


# ----------------------------------------------------------------------------------- 19. the demo's output folder


def test_the_demo_never_mixes_runs_in_one_folder_and_needs_a_frame_count_of_1_or_more(
        tmp_path: Path, real_image: Path, model_file: Path, monkeypatch, capsys) -> None:
    frames = tmp_path / "in"
    frames.mkdir()
    for i in range(3):
        shutil.copyfile(real_image, frames / f"{i}.jpg")
    args = ["--source", str(frames), "--checkpoint", str(model_file), "--headless"]
    assert live.main([*args, "--out", str(tmp_path / "out")]) == 0
    assert plumbing.run(live.main, [*args, "--out", str(tmp_path / "out"), "--max-frames", "1"]) == 2
    assert "already holds 3 annotated frame(s)" in capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("frame_*.png"))) == 3
    monkeypatch.setenv("PORTFOLIO_OUTPUT_DIR", str(tmp_path / "own"))
    assert live.main(args) == 0 and live.main([*args, "--max-frames", "2"]) == 0  # its own folder: replaced
    assert len(list((tmp_path / "own" / "outputs" / "demo-frames").glob("frame_*.png"))) == 2
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit):
            live.main([*args, "--max-frames", bad])
        assert "must be 1 or more" in capsys.readouterr().err


def test_a_frame_that_does_not_fit_on_the_disk_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def half_then_full(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        camera.write_image(tmp_path / "frame_00000.png", np.zeros((8, 8, 3), np.uint8))
    assert not (tmp_path / "frame_00000.png").exists()


# ----------------------------------------------------------------------------------- 20-21. stored state


def test_a_deleted_trials_checksum_is_an_error_after_the_one_time_migration(tmp_path: Path) -> None:
    from hyperopt import Trials, fmin, hp, tpe

    trials = Trials()
    fmin(lambda x: x ** 2, hp.uniform("x", -1, 1), tpe.suggest, 2, trials=trials,
         rstate=np.random.default_rng(0), show_progressbar=False)
    path = tmp_path / "t.json"
    trialstore.save_trials(trials, path)
    plumbing.checksum_path(path).unlink()
    with pytest.raises(trialstore.TrialsFileError, match="no checksum beside it .* it was deleted"):
        trialstore.load_trials(path)
    path.write_text(path.read_text().replace(trialstore.FORMAT, "lenet5-portfolio-trials/1"))  # an older file
    with pytest.warns(UserWarning, match="used as they are, once"):
        assert len(trialstore.load_trials(path).trials) == 2
    assert json.loads(path.read_text())["format"] == trialstore.FORMAT  # migrated: saved again, checked
    plumbing.checksum_path(path).unlink()
    with pytest.raises(trialstore.TrialsFileError, match="it was deleted"):
        trialstore.load_trials(path)


def test_a_cache_with_a_valid_checksum_but_wrong_shapes_is_rebuilt(tmp_path: Path, mirror: Path) -> None:
    small_xray_tree(mirror, tmp_path, per_label=4)
    first = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    (cache,) = (tmp_path / "cache").glob("xray-32px-*.pt")
    payload = torch.load(io.BytesIO(cache.read_bytes()), weights_only=True)
    payload["train_x"] = payload["train_x"][:3]  # fewer images than labels
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    plumbing.write_checked(cache, buffer.getvalue())
    with pytest.warns(UserWarning, match="rebuilding it: its train images, labels and ids do not fit together"):
        again = data.load_chest_xray(size=32, data_root=tmp_path, mirror=mirror)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    with pytest.raises(ValueError, match="different sizes"):
        decoding.check_shapes({"a_x": torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "a_y": torch.zeros(1, dtype=torch.long),
                               "a_ids": ["i"], "b_x": torch.zeros(1, 1, 5, 5, dtype=torch.uint8),
                               "b_y": torch.zeros(1, dtype=torch.long), "b_ids": ["j"]})


# ----------------------------------------------------------------------------------- 22. OpenCV's own log


@pytest.mark.slow
def test_a_truncated_image_gets_one_line_without_opencvs_log(tmp_path: Path, real_image: Path,
                                                               model_file: Path) -> None:
    ok, encoded = cv2.imencode(".png", cv2.resize(cv2.imread(str(real_image)), (64, 64)))
    (tmp_path / "cut.png").write_bytes(encoded.tobytes()[: len(encoded) // 2])
    result = cli("-m", "helpers.predict", str(tmp_path / "cut.png"), "--model", str(model_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path}/cut.png: not a readable image (OpenCV could not decode "
                                          f"its {len(encoded) // 2:,} bytes)"]
