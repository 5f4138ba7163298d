"""The live demo: frames from a camera (or video, or folder) → the model → an annotated window."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2

from helpers import plumbing
from helpers.paths import output_dir, shown
from helpers.webcam.camera import FrameSource, one_line, open_source, read_image, write_image


def run_demo(source: FrameSource, predictor: Any, *, headless: bool, out_dir: Path | None, max_frames: int | None,
             window: str = "Simpsons-MNIST LeNet-5 (q quits)", log: Callable[[str], None] = print) -> int:
    """The live loop: read, predict, annotate, show (or save); returns the number of frames handled."""
    from helpers.webcam.inference import annotate

    if headless and out_dir is None:
        raise ValueError("--headless needs --out DIR for the annotated frames")
    fps, last, count = None, time.perf_counter(), 0
    try:
        for frame in source:
            prediction = predictor.predict(frame)
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


class WindowError(RuntimeError):
    """OpenCV cannot open a window here (no display, or a build without GUI support)."""


def main(argv: list[str] | None = None) -> int:
    from helpers.webcam.inference import FITS, demo_choice, load_predictor

    parser = argparse.ArgumentParser(description="Live Simpsons-MNIST predictions from a camera, video or folder.")
    parser.add_argument("--source", default="0", help="camera index (0), 'csi' (Jetson), video file or image folder")
    parser.add_argument("--fallback", help="video file or folder to use if the camera fails")
    parser.add_argument("--checkpoint", "--model", type=Path,
                        help="model file, .pt or .onnx (default: the one notebook 06 chose, else tuned, else baseline)")
    parser.add_argument("--headless", action="store_true", help="no window: write annotated frames to --out")
    parser.add_argument("--out", type=Path, help="folder for annotated frames (with --headless)")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--flip", type=int, default=0, help="CSI camera flip-method 0..7 (2 = 180 degrees)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fit", choices=FITS, default="crop",
                        help="crop: classify the centred square (the guide box; hold the print inside it); pad: "
                             "classify the whole frame, padded to a square on white (the box then frames everything)")
    args = parser.parse_args(argv)
    if not args.headless and not plumbing.has_display():
        args.headless, args.out = True, args.out or output_dir() / "demo-frames"
        print(f"no display found (DISPLAY / WAYLAND_DISPLAY unset): running headless, annotated frames go to {args.out}")
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
        n = run_demo(source, predictor, headless=args.headless, out_dir=args.out, max_frames=args.max_frames)
    except cv2.error as exc:  # anything else OpenCV refuses (a model or frame it cannot handle): its own words
        raise RuntimeError(f"OpenCV failed: {one_line(getattr(exc, 'err', None) or exc)}") from None
    if n == 0:
        plumbing.complain(f"no frame could be read from {args.source!r}: nothing was classified")
        return 1
    print(f"done: {n} frames" + (f", annotated frames in {shown(args.out)}" if args.headless else ""))
    return 0


PREDICT_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def image_paths(paths: Sequence[Path]) -> Iterator[Path | ValueError]:
    """Files as given, folders expanded to their images; an empty folder yields a ValueError in place."""
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in PREDICT_SUFFIXES and f.is_file())
            if not found:
                yield ValueError(f"{shown(p)}: folder holds no image files ({', '.join(sorted(PREDICT_SUFFIXES))})")
            yield from found
        else:
            yield p


def predict_main(argv: Sequence[str] | None = None) -> int:
    from helpers.webcam.inference import FITS, NOT_SURE, demo_choice, load_predictor

    parser = argparse.ArgumentParser(description="Classify image files or folders with the Simpsons-MNIST model.")
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--model", type=Path, help="checkpoint (.pt) or ONNX file (default: the demo's model, see notebook 06)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of one line per file")
    parser.add_argument("--fit", choices=FITS, default="pad",
                        help="pad (default): the whole image, padded to a square on white, so no head or feet are cut "
                             "off; crop: its largest centred square, as the live demo's guide box")
    args = parser.parse_args(argv)
    model, why = (args.model, "given with --model") if args.model else demo_choice()
    predictor = load_predictor(model)
    predictor.fit = args.fit
    if not args.json and not args.model:  # say which model answers when the user did not name one
        print(f"model: {shown(model)} ({why})")
    rows, failed = [], 0
    for path in image_paths(args.paths):
        try:
            if isinstance(path, ValueError):
                raise path
            frame = read_image(path)
        except ValueError as exc:
            plumbing.complain(str(exc))
            failed += 1
            continue
        p = predictor.predict(frame)
        rows.append({"file": shown(path), "answer": p.shown, "sure": p.sure,
                     "top3": [{"class": c, "probability": round(q, 4)} for c, q in p.top]})
        if not args.json:
            top = ", ".join(f"{c} {100 * q:.1f} %" for c, q in p.top)
            print(f"{shown(path)}: {p.shown if p.sure else NOT_SURE}  (top 3: {top})")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0

