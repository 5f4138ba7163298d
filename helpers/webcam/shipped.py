"""The demo's own model, committed under ``models/`` so that the demo runs right after cloning."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from helpers.checkpoints import CheckpointError, checksum_path
from helpers.paths import project_root
from helpers.provenance import describe_state
from helpers.sources import file_digest
from helpers.webcam.calibration import calibration_path

STEM = "simpsons_demo"
MAX_BYTES = 3 * 2**20  #: at most 3 MB a file (the repository holds no other binaries)
SUMS = "SHA256SUMS"


def folder() -> Path:
    """``models/`` at the project's root."""
    return project_root() / "models"


def checkpoint() -> Path:
    """The committed checkpoint, ``models/simpsons_demo.pt``."""
    return folder() / f"{STEM}.pt"


def clean_accuracy(predictor: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (%) of a predictor on a split's clean images (uint8 N×C×H×W, as the model sees them)."""
    return float(100 * (predictor.logits_pixels(np.asarray(images)).argmax(1) == np.asarray(labels)).mean())


def card_markdown(card: Mapping[str, Any], heading: bool = True) -> str:
    """The card as a short page (``heading``: with its title, as ``models/README.md``)."""
    lines = [f"# The demo's model: `{STEM}`", "",
             "Written by a full-budget run of `notebooks/06_webcam_inference.ipynb`; the demo "
             "(`python -m helpers.demo`) and the photo command line (`python -m helpers.predict`) use it when "
             "notebook 06 has not chosen a model on this machine. Figures are from the run that wrote it "
             "(bit-exact on that machine only).", ""] if heading else []
    lines += [f"- **{key}**: {value}" for key, value in card.items() if not isinstance(value, (dict, list))]
    for key, value in card.items():
        if isinstance(value, dict):
            lines += ["", f"**{key}**", ""] + [f"- {k}: {v}" for k, v in value.items()]
    if card.get("files"):
        lines += ["", f"Files: {', '.join(f'`{n}`' for n in card['files'])}; check them with `sha256sum -c {SUMS}` in "
                      f"this folder."]
    return "\n".join(lines) + "\n"


def verify(dest: Path | None = None, names: Collection[str] | None = None) -> list[str]:
    """Problems with the committed model's files (or only ``names``) against ``SHA256SUMS`` (empty: all match)."""
    dest = Path(dest or folder())
    sums = dest / SUMS
    if not sums.is_file():
        return [f"{SUMS} is missing"]
    listed = dict(reversed(line.split("  ", 1)) for line in sums.read_text(encoding="utf-8").splitlines() if "  " in line)
    problems = [f"{name} is not listed in {SUMS}" for name in sorted(set(names or ()) - set(listed))]
    for name, digest in listed.items():
        if names is not None and name not in names:
            continue
        path = dest / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif file_digest(path) != digest:
            problems.append(f"{name} does not match its sha256")
    return problems


def read_by_loader(model: Path) -> list[Path]:
    """The files the demo's loader reads for ``model``: the ONNX file and its JSON, or checkpoint, sum, calibration."""
    model = Path(model)
    if model.suffix == ".onnx":
        return [model, model.with_suffix(".json")]
    return [model, checksum_path(model), calibration_path(model)]


def check_loaded(model: Path) -> None:
    """CheckpointError naming the file if ``model`` is the committed demo model and a file it reads differs."""
    model = Path(model)
    try:
        committed = model.resolve().parent == folder().resolve() and model.stem == STEM
    except (OSError, RuntimeError):  # a link loop: the loader says what is wrong with it
        return
    if not committed:
        return
    problems = verify(folder(), [p.name for p in read_by_loader(model)])
    if problems:
        raise CheckpointError(f"the demo model in models/ is not as committed: {'; '.join(problems)}. Restore it "
                              f"with `git checkout -- models/`; put a model of your own elsewhere and pass it with "
                              f"--model")


def card(predictor: Any, why: str, recipe: Any, data: Any, art_rates: Mapping[str, Any] | None) -> dict[str, Any]:
    """The demo model's card: what, why, data, recipe, commit, calibration, test and art figures."""
    ck = predictor.checkpoint
    return {
        "model": f"{ck.path.stem}: LeNet-5 ({ck.arch}, {sum(v.numel() for v in ck.model.state_dict().values()):,} "
                 f"weights), {ck.image_size}x{ck.image_size} px, {ck.in_channels} channels, {len(ck.classes)} classes",
        "chosen": why,
        "trained on": f"{data.name}: {len(data.train):,} training images; validation ({len(data.val):,}) for calibration "
                      f"and choices; never on the character-art set",
        "recipe": ({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()} if recipe
                   else "notebook 03's tuned recipe"),
        "code": describe_state(ck.provenance),
        "calibration": {"temperature": round(predictor.calibration.temperature, 4),
                        "not-sure threshold": round(predictor.calibration.threshold, 4)},
        "clean test accuracy %": round(clean_accuracy(predictor, data.test.x.numpy(), data.test.y.numpy()), 2),
        "clean test images": len(data.test),
        "character-art set": dict(art_rates) if art_rates else "not measured (the art set was not on this machine)",
    }
