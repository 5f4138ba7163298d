"""Export a checkpoint to ONNX for the Jetson script (``scripts/webcam_onnx.py``, no PyTorch)."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx
import torch

from helpers.checkpoints import load_checkpoint
from helpers.webcam.calibration import Calibration, calibration_path

OPSET = 9
OPENCV41_OPS = {"Conv", "Relu", "Tanh", "Elu", "LeakyRelu", "MaxPool", "AveragePool", "Flatten", "Gemm"}


class ExportError(RuntimeError):
    """The model cannot be exported in a form OpenCV 4.1's ``cv2.dnn`` reads."""


def export_onnx(checkpoint_path: Path, onnx_path: Path | None = None) -> Path:
    """Write ``<name>.onnx`` and ``<name>.json`` (classes, mean, std, input shape); returns the .onnx path."""
    ckpt = load_checkpoint(checkpoint_path)
    onnx_path = Path(onnx_path) if onnx_path else Path(checkpoint_path).with_suffix(".onnx")
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
    if cal_file.exists():  # temperature and "not sure" threshold, so the Jetson abstains like helpers.webcam.demo
        meta["calibration"] = asdict(Calibration.load(cal_file))
    onnx_path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return onnx_path


def graph_ops(path: Path) -> set[str]:
    """The operator types in an ONNX file."""
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def jetson_script():
    """``scripts/webcam_onnx.py`` (the standalone Jetson script) imported as a module."""
    import importlib.util

    from helpers.paths import project_root

    spec = importlib.util.spec_from_file_location("webcam_onnx", project_root() / "scripts" / "webcam_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parity(onnx_path: Path, torch_predictor, onnx_predictor, frames, classes) -> tuple[str, Any]:
    """Do PyTorch, ONNX and the Jetson script agree on ``frames``? One line and the agreement table."""
    import cv2
    import numpy as np

    from helpers.webcam.robust import agreement

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
    import argparse

    from helpers.webcam.inference import demo_choice

    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX for scripts/webcam_onnx.py")
    parser.add_argument("--checkpoint", type=Path, help="default: the tuned (else baseline) Simpsons-MNIST model")
    parser.add_argument("--out", type=Path, help="default: beside the checkpoint, with .onnx")
    args = parser.parse_args(argv)
    path = export_onnx(args.checkpoint or demo_choice()[0], args.out)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    import sys

    from helpers import plumbing

    sys.exit(plumbing.run(main))
