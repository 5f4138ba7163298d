"""TensorBoard tracking: one ``SummaryWriter`` per run under ``runs/<experiment>/<run>``.

Each run gets per-epoch scalars (``loss/train``, ``loss/val``, ``accuracy/train``,
``accuracy/val``, ``lr``, ``time/epoch_seconds``), optional figures, and its hyperparameters with
final metrics for the HParams dashboard. ``SummaryWriter.add_hparams`` would put those in a new
sub-run and reject non-scalar values; :meth:`RunTracker.log_hparams` writes them into the run's own
folder instead, so every run appears once in the HParams table next to its curves.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

EPOCH_TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
    "val_acc": "accuracy/val", "lr": "lr", "seconds": "time/epoch_seconds",
}


def safe_name(text: str) -> str:
    """A run or experiment name usable as a folder name."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "run"


def scalar_hparams(hparams: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """Hyperparameters as the scalar types the HParams plugin accepts (others become strings)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in hparams.items():
        if isinstance(value, bool | int | str):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
            out[key] = value.item()
        else:  # None, tuples, lists, dicts
            out[key] = str(value)
    return out


class RunTracker:
    """Logs one run to TensorBoard; use as a context manager or call :meth:`close`."""

    def __init__(self, experiment: str, run: str, runs_root: Path, fresh: bool = True) -> None:
        self.log_dir = Path(runs_root) / safe_name(experiment) / safe_name(run)
        if fresh and self.log_dir.exists():  # a re-run replaces the old curves instead of doubling them
            shutil.rmtree(self.log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, record: Mapping[str, float]) -> None:
        """Per-epoch scalars from a history record (keys as in :class:`helpers.training.History`)."""
        step = int(record["epoch"])
        for key, tag in EPOCH_TAGS.items():
            if key in record and record[key] is not None:
                self.writer.add_scalar(tag, float(record[key]), step)

    def log_figure(self, tag: str, figure: Figure, step: int = 0) -> None:
        """A matplotlib figure (e.g. the confusion matrix) as an image."""
        self.writer.add_figure(tag, figure, global_step=step, close=False)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Hyperparameters and final metrics, in this run's folder (one row in the HParams table)."""
        clean = scalar_hparams(hparams)
        metric_values = {f"hparam/{k}": float(v) for k, v in metrics.items()}
        exp, ssi, sei = hparams_summary(clean, metric_values)
        writer = self.writer.file_writer  # the run's own event file (public attribute of SummaryWriter)
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)
        for tag, value in metric_values.items():
            self.writer.add_scalar(tag, value if math.isfinite(value) else float("nan"), 0)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
