"""Classify image files or folders from the command line, with the demo's crop, model and "not sure".

``python -m helpers.predict PATH [PATH ...] [--json] [--model FILE.pt|FILE.onnx]``

Images of any size are cropped to the guide box (the centred square) and resized as the demo does
(:mod:`helpers.inference`). One line per file: the answer (a character, or "not sure" below the
model's calibrated threshold) and the top 3 with probabilities; ``--json`` prints one JSON list
instead. A file that cannot be read as an image gets one ``error:`` line (the project's CLI helper)
and the exit code is 1; the other files are still classified.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from helpers import cli
from helpers.camera import read_image
from helpers.paths import shown

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def image_paths(paths: Sequence[Path]) -> Iterator[Path | ValueError]:
    """Files as given; folders expanded to their image files (sorted, not recursive). A folder with no
    image files yields a ValueError in its place, so that the other arguments are still classified."""
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                yield ValueError(f"{shown(p)}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            yield from found
        else:
            yield p


def main(argv: Sequence[str] | None = None) -> int:
    from helpers.inference import NOT_SURE, demo_choice, load_predictor

    parser = argparse.ArgumentParser(description="Classify image files or folders with the Simpsons-MNIST model.")
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--model", type=Path, help="checkpoint (.pt) or ONNX file (default: the demo's model, see notebook 06)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of one line per file")
    args = parser.parse_args(argv)
    model, why = (args.model, "given with --model") if args.model else demo_choice()
    predictor = load_predictor(model)
    if not args.json and not args.model:  # say which model answers when the user did not name one
        print(f"model: {shown(model)} ({why})")
    rows, failed = [], 0
    for path in image_paths(args.paths):
        try:
            if isinstance(path, ValueError):
                raise path
            frame = read_image(path)
        except ValueError as exc:
            cli.complain(str(exc))
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


if __name__ == "__main__":
    sys.exit(cli.run(main))
