"""Export a checkpoint to ONNX for the Jetson script (``scripts/webcam_onnx.py``, no PyTorch)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import onnx
import pandas as pd
import torch

from helpers import plumbing
from helpers.checkpoints import checksum_path, load_checkpoint
from helpers.paths import output_dir, project_root, shown
from helpers.plumbing import write_atomic
from helpers.sources import file_digest
from helpers.webcam import shipped
from helpers.webcam.calibration import Calibration, calibration_path
from helpers.webcam.inference import OnnxPredictor, Predictor, demo_choice
from helpers.webcam.robust import agreement

OPSET = 9
OPENCV41_OPS = {"Conv", "Relu", "Tanh", "Elu", "LeakyRelu", "MaxPool", "AveragePool", "Flatten", "Gemm"}


class ExportError(RuntimeError):
    """The model cannot be exported in a form OpenCV 4.1's ``cv2.dnn`` reads."""


def export_onnx(checkpoint_path: Path, onnx_path: Path | None = None) -> Path:
    """Write ``<name>.onnx`` and ``<name>.json`` (classes, mean, std, input shape); returns the .onnx path."""
    onnx_path = Path(onnx_path) if onnx_path else Path(checkpoint_path).with_suffix(".onnx")
    check_destination(Path(checkpoint_path), onnx_path)
    ckpt = load_checkpoint(checkpoint_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, ckpt.in_channels, ckpt.image_size, ckpt.image_size)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the one OpenCV 4.1 can read
        torch.onnx.export(ckpt.model.cpu().eval(), dummy, str(tmp), opset_version=OPSET, dynamo=False,
                          do_constant_folding=True, input_names=["input"], output_names=["logits"])
    ops = graph_ops(tmp)
    unsupported = ops - OPENCV41_OPS
    if unsupported:
        tmp.unlink()
        raise ExportError(f"{checkpoint_path}: the graph uses {sorted(unsupported)}, which OpenCV 4.1's cv2.dnn "
                          f"cannot read; use relu/tanh/elu/leaky_relu activations")
    tmp.replace(onnx_path)
    meta = {"classes": ckpt.classes, "mean": list(ckpt.mean), "std": list(ckpt.std), "image_size": ckpt.image_size,
            "in_channels": ckpt.in_channels, "opset": OPSET, "source_checkpoint": Path(checkpoint_path).name,
            "metrics": {k: v for k, v in ckpt.metrics.items() if isinstance(v, (int, float, str))},
            "crop": "guide box: the largest centred square of the frame", "calibration": None}
    cal_file = calibration_path(checkpoint_path)
    if cal_file.exists():  # temperature and "not sure" threshold, so the Jetson abstains like helpers.webcam.live
        meta["calibration"] = asdict(Calibration.load(cal_file))
    write_atomic(onnx_path.with_suffix(".json"), json.dumps(meta, indent=2).encode())
    return onnx_path


def check_destination(checkpoint_path: Path, onnx_path: Path) -> None:
    """ValueError unless ``onnx_path`` ends in ``.onnx`` and neither it nor its ``.json`` is a file of the model."""
    if onnx_path.suffix.lower() != ".onnx":
        raise ValueError(f"--out {shown(onnx_path)}: the exported model's name must end in .onnx (its .json is "
                         f"written beside it)")
    own = [checkpoint_path, checksum_path(checkpoint_path), calibration_path(checkpoint_path)]
    for target in (onnx_path, onnx_path.with_suffix(".json")):
        if any(_same_file(target, f) for f in own):
            raise ValueError(f"--out {shown(onnx_path)} would overwrite {shown(target)}, a file of the model being "
                             f"exported; choose another name")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):
        return False


def publish(source: Path, card: Mapping[str, Any], budget: str, dest: Path | None = None) -> Path | None:
    """Copy the model into ``models/`` with ONNX, card and sums; only the full budget (else None)."""
    if budget != "full":
        print(f"models/ left as it is: only a full-budget run publishes the demo's model (this run: {budget!r})")
        return None
    dest = Path(dest or shipped.folder())
    if not calibration_path(source).is_file():
        raise FileNotFoundError(f"{calibration_path(source)} is missing: calibrate the model before publishing it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".models-") as tmp:
        staged = Path(tmp)
        ckpt = staged / f"{shipped.STEM}.pt"
        shutil.copy2(source, ckpt)
        shutil.copy2(checksum_path(source), checksum_path(ckpt))
        shutil.copy2(calibration_path(source), calibration_path(ckpt))
        export_onnx(ckpt, staged / f"{shipped.STEM}.onnx")
        files = sorted(p.name for p in staged.iterdir())
        full = {**card, "files": files + ["card.json", "README.md"]}
        (staged / "card.json").write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (staged / "README.md").write_text(shipped.card_markdown(full), encoding="utf-8")
        too_big = [f"{p.name} ({p.stat().st_size:,} bytes)" for p in staged.iterdir() if p.stat().st_size > shipped.MAX_BYTES]
        if too_big:
            raise ValueError(f"not published: over {shipped.MAX_BYTES:,} bytes: {', '.join(too_big)}")
        sums = "".join(f"{file_digest(p)}  {p.name}\n" for p in sorted(staged.iterdir()))
        (staged / shipped.SUMS).write_text(sums, encoding="utf-8")
        for p in staged.iterdir():  # each file replaced whole; nothing else in models/ is touched
            dest.mkdir(exist_ok=True)
            p.replace(dest / p.name)
    return dest / f"{shipped.STEM}.pt"


def graph_ops(path: Path) -> set[str]:
    """The operator types in an ONNX file."""
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def jetson_script() -> ModuleType:
    """``scripts/webcam_onnx.py`` (the standalone Jetson script) imported as a module."""
    spec = importlib.util.spec_from_file_location("webcam_onnx", project_root() / "scripts" / "webcam_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity(onnx_path: Path, torch_predictor: Predictor, onnx_predictor: OnnxPredictor, frames: Sequence[np.ndarray],
           classes: Sequence[str]) -> tuple[str, pd.DataFrame]:
    """Do PyTorch, ONNX and the Jetson script agree on ``frames``? One line and the agreement table."""
    script = jetson_script()
    net, meta = script.load_model(str(onnx_path))
    p_script = script.predict(net, meta, frames)
    torch_preds, onnx_preds = torch_predictor.predict_many(frames), onnx_predictor.predict_many(frames)

    def answers(preds):
        return np.array([classes.index(p.label) for p in preds]), np.array([p.sure for p in preds])

    line = (f"ONNX operators: {sorted(graph_ops(onnx_path))}; calibration in {onnx_path.with_suffix('.json').name}: "
            f"{meta['calibration'] is not None}; largest probability difference, Jetson script vs PyTorch: "
            f"{np.abs(p_script - np.stack([p.probabilities for p in torch_preds])).max():.1e} (OpenCV {cv2.__version__})")
    table = agreement({"PyTorch": answers(torch_preds), "helpers ONNX": answers(onnx_preds),
                       "Jetson script": (p_script.argmax(1), np.asarray(script.sure(meta, p_script)))})
    return line, table


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.webcam.export [--checkpoint FILE] [--out FILE.onnx]``."""
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX for scripts/webcam_onnx.py")
    parser.add_argument("--checkpoint", type=Path, help="default: the demo's model (notebook 06's choice on this "
                                                            "machine, else the committed models/simpsons_demo.pt)")
    parser.add_argument("--out", type=Path, help="the .onnx file to write (default: outputs/webcam/<model>.onnx; "
                                                 "the committed models/ folder is never rewritten)")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or demo_choice()[0]
    path = export_onnx(checkpoint, args.out or output_dir() / "webcam" / f"{Path(checkpoint).stem}.onnx")
    print(f"wrote {shown(path)} and {shown(path.with_suffix('.json'))}")
    return 0


if __name__ == "__main__":
    sys.exit(plumbing.run(main))
