"""The live demo: frames from a camera (or video, or folder) → the model → an annotated window."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from helpers import plumbing
from helpers.checkpoints import CheckpointError
from helpers.paths import output_dir, printable, shown
from helpers.webcam import framings
from helpers.webcam.camera import (
    PHOTO_SUFFIXES,
    FrameSource,
    image_files,
    one_line,
    open_source,
    read_image,
    write_image,
)
from helpers.webcam.inference import FITS, annotate, demo_choice, load_predictor
from helpers.webcam.smoothing import WINDOW, Smoother


def run_demo(source: FrameSource, predictor: Any, *, headless: bool, out_dir: Path | None, max_frames: int | None,
             window: str = "Simpsons-MNIST LeNet-5 (q quits)", log: Callable[[str], None] = print,
             smooth: int = WINDOW) -> int:
    """The live loop: read, predict, average over the last ``smooth`` frames, annotate, show (or save); returns
    the number of frames handled."""
    if headless and out_dir is None:
        raise ValueError("--headless needs --out DIR for the annotated frames")
    fps, last, count = None, time.perf_counter(), 0
    smoother = Smoother(predictor.calibration.threshold if predictor.calibration else 0.0, smooth)
    try:
        for frame in source:
            pixels = predictor.pixels([frame])
            mean, sure = smoother.update(predictor.probabilities(pixels)[0], pixels[0])
            prediction = predictor.prediction(mean, sure)
            now = time.perf_counter()
            fps = 1.0 / max(now - last, 1e-6) if fps is None else 0.9 * fps + 0.1 / max(now - last, 1e-6)
            last = now
            shown = annotate(frame, prediction, fps, inset=predictor.model_view(frame), fit=getattr(predictor, "fit", "crop"))
            if headless:
                out_dir.mkdir(parents=True, exist_ok=True)
                write_image(out_dir / f"frame_{count:05d}.png", shown)
            else:
                try:
                    cv2.imshow(window, shown)
                    key = cv2.waitKey(1)
                except cv2.error as exc:
                    raise WindowError(f"OpenCV could not open a window ({one_line(getattr(exc, 'err', None) or exc)}); use --headless --out DIR on a "
                                      f"machine without a display") from None
                if key & 0xFF == ord("q"):
                    break
            count += 1
            if count % 30 == 0:
                log(f"{count} frames, {fps:.1f} FPS, last: {prediction.shown} (top-1 {prediction.label}, "
                    f"{100 * prediction.confidence:.0f} %)")
            if max_frames is not None and count >= max_frames:
                break
    finally:
        source.close()
        if not headless:
            with contextlib.suppress(cv2.error):  # no window was ever opened
                cv2.destroyAllWindows()
    return count


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


FRAME_NAME = re.compile(r"frame_\d{5}\.png")


def frames_folder(out: Path | None) -> Path:
    """Where the headless demo writes its frames: ``--out`` if it holds no earlier run's frames, else refused."""
    if out is None:  # our own folder: an earlier run's frames are replaced, so none is mixed with this run's
        out = output_dir() / "demo-frames"
        for old in (out.iterdir() if out.is_dir() else ()):
            if FRAME_NAME.fullmatch(old.name) and old.is_file():
                old.unlink()
        return out
    earlier = sorted(p.name for p in out.iterdir() if FRAME_NAME.fullmatch(p.name) and p.is_file()) \
        if out.is_dir() else []
    if earlier:
        raise ValueError(f"{shown(out)} already holds {len(earlier):,} annotated frame(s) of an earlier run "
                         f"({earlier[0]} ...); they are not overwritten or mixed with this run's: choose another --out "
                         f"or move them away")
    return out


class WindowError(RuntimeError):
    """OpenCV cannot open a window here (no display, or a build without GUI support)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Live Simpsons-MNIST predictions from a camera, video or folder.")
    parser.add_argument("--source", default="0", help="camera index (0), 'csi' (Jetson), video file or image folder")
    parser.add_argument("--fallback", help="video file or folder to use if the camera fails")
    parser.add_argument("--checkpoint", "--model", type=Path,
                        help="model file, .pt or .onnx (default: the one notebook 06 chose on this machine, else the "
                             "committed models/simpsons_demo.pt)")
    parser.add_argument("--headless", action="store_true", help="no window: write annotated frames to --out")
    parser.add_argument("--out", type=Path, help="folder for annotated frames (with --headless)")
    parser.add_argument("--max-frames", type=positive, help="stop after this many frames (1 or more)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--flip", type=int, default=0, help="CSI camera flip-method 0..7 (2 = 180 degrees)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smooth", type=positive, default=WINDOW,
                        help=f"average the answer over the last N frames, restarted when the picture changes a lot "
                             f"(default {WINDOW}; 1: each frame alone)")
    parser.add_argument("--fit", choices=FITS, default="crop",
                        help="crop: classify the centred square (the guide box; hold the print inside it); pad: "
                             "classify the whole frame, padded to a square on white (the box then frames everything)")
    args = parser.parse_args(argv)
    if not args.headless and not plumbing.has_display():
        args.headless = True
        print("no display reachable (DISPLAY / WAYLAND_DISPLAY unset, or no server answers there): running headless")
    if args.headless:
        args.out = frames_folder(args.out)
        print(f"annotated frames go to {shown(args.out)}")
    try:
        model, why = (args.checkpoint, "given with --checkpoint") if args.checkpoint else demo_choice()
        predictor = load_predictor(model, args.device)
        predictor.fit = args.fit
        print(f"model: {model} ({why}); " + (
            f"calibrated (temperature {predictor.calibration.temperature:.2f}, 'not sure' below "
            f"{100 * predictor.calibration.threshold:.1f} %)" if predictor.calibration else
            "not calibrated: always names a character (run notebook 06 to write its calibration file)"))
        source = open_source(args.source, fallback=args.fallback, width=args.width, height=args.height, fps=args.fps,
                             flip=args.flip)
        n = run_demo(source, predictor, headless=args.headless, out_dir=args.out, max_frames=args.max_frames,
                     smooth=args.smooth)
    except cv2.error as exc:  # anything else OpenCV refuses (a model or frame it cannot handle): its own words
        raise RuntimeError(f"OpenCV failed: {one_line(getattr(exc, 'err', None) or exc)}") from None
    if n == 0:
        plumbing.complain(f"no frame could be read from {args.source!r}: nothing was classified")
        return 1
    print(f"done: {n} frames" + (f", annotated frames in {shown(args.out)}" if args.headless else ""))
    return 0


def image_paths(paths: Sequence[Path]) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for each file given or image in a folder given; (folder, why) for a folder empty or unreadable."""
    for p in paths:
        try:
            if not p.is_dir():
                yield p, None
                continue
            found = image_files(p)
        except OSError as exc:  # an unreadable folder: reported in its place, the other paths still read
            yield p, f"{shown(p)}: cannot be listed ({exc.strerror or exc})"
            continue
        if not found:
            yield p, f"{shown(p)}: folder holds no image files ({', '.join(sorted(PHOTO_SUFFIXES))})"
        yield from ((f, None) for f in found)


def answer_row(path: Path, problem: str | None, predictor: Any, notes: list[str]) -> dict[str, Any]:
    """One image's JSON entry: its name, the answer, sure or not and the top 3; or the error that stopped it."""
    row: dict[str, Any] = {"file": shown(path)}
    if printable(str(path)) != str(path):  # escaped for printing: the name's own bytes too
        row["file_hex"] = os.fsencode(path).hex()
    try:
        if problem:
            raise ValueError(problem)
        p = predictor.predict(read_image(path, note=notes.append))
    except (ValueError, CheckpointError) as exc:
        return {**row, "error": str(exc)}
    return {**row, "answer": p.shown, "sure": p.sure,
            "top3": [{"class": c, "probability": round(q, 4)} for c, q in p.top], **({"notes": notes} if notes else {})}


def predict_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Classify image files or folders with the Simpsons-MNIST model.",
        epilog="A file name that is not valid UTF-8 or holds control characters is printed with backslash escapes "
               "(\\xff, \\n); with --json its bytes are given too, as hexadecimal in 'file_hex'.")
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--model", type=Path, help="checkpoint (.pt) or ONNX file (default: the demo's model, see notebook 06)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of one line per file")
    parser.add_argument("--fit", choices=(*FITS, framings.VOTE), default="pad",
                        help="pad (default): the whole image, padded to a square on white, so no head or feet are cut "
                             "off; crop: its largest centred square, as the live demo's guide box; vote: padded, "
                             "cropped and zoomed 10 %% averaged, 'not sure' when they disagree (fewer wrong names, "
                             "fewer right ones: python -m helpers.webcam.framings measures it)")
    args = parser.parse_args(argv)
    model, why = (args.model, "given with --model") if args.model else demo_choice()
    predictor = load_predictor(model)
    predictor.fit = "pad" if args.fit == framings.VOTE else args.fit
    if not args.json and not args.model:  # say which model answers when the user did not name one
        print(f"model: {shown(model)} ({why})")
    if predictor.calibration is None:
        plumbing.complain(f"note: {shown(model)} is not calibrated (no calibration beside it): every answer names a "
                          f"character, none says 'not sure'", prefix="")
    if args.fit == framings.VOTE:
        predictor = framings.Voting(predictor)
    rows: list[dict[str, Any]] = []
    try:
        for path, problem in image_paths(args.paths):
            row = answer_row(path, problem, predictor, notes := [])
            rows.append(row)
            for note in notes:
                plumbing.complain(f"note: {note}", prefix="")
            if "error" in row:
                plumbing.complain(row["error"])
            elif not args.json:
                top = ", ".join(f"{t['class']} {100 * t['probability']:.1f} %" for t in row["top3"])
                print(f"{row['file']}: {row['answer']}  (top 3: {top})")
    except KeyboardInterrupt:  # what is done is still printed, then the usual exit code of an interrupt
        if args.json:
            print(json.dumps(rows, indent=2, allow_nan=False))
        plumbing.complain(f"interrupted after {len(rows):,} image(s)", prefix="")
        return 130
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
    return 1 if any("error" in r for r in rows) else 0
