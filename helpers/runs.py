"""One tracked training run, start to finish: build, fit, evaluate, log, checkpoint."""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from helpers.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from helpers.lanes import as_lanes_run, side_by_side
from helpers.models import build_model, count_parameters
from helpers.paths import Outputs
from helpers.plots import plot_confusion
from helpers.plumbing import pick_device
from helpers.provenance import code_only, fingerprint_bytes
from helpers.splits import DataSplits
from helpers.training import Evaluation, History, TrainConfig, TrainHook, evaluate, fit, hook_settings

ARCH_LABELS = {"lenet5": "LeNet-5", "reference_cnn": "Reference CNN"}


@dataclass
class RunResult:
    """The outcome of :func:`train_tracked` (and so of :func:`train_and_evaluate`)."""

    name: str
    dataset: str
    arch: str
    model: nn.Module
    history: History
    val: Evaluation | None  #: None when no epoch finished (train_and_evaluate then raises)
    test: Evaluation | None  #: None unless asked for
    n_params: int
    checkpoint: Path | None
    train_config: TrainConfig
    model_config: dict[str, Any]
    hooks: tuple[TrainHook, ...] = ()  #: what a wing added to fit's batches (views, outlier exposure)

    def settings(self) -> dict[str, Any]:
        """The training settings as recorded: the TrainConfig and the hooks' settings, one flat dict."""
        return {**asdict(self.train_config), **hook_settings(self.hooks)}

    def summary(self) -> dict[str, Any]:
        """A table row: data set, model, size, epochs, validation and test accuracy (%), time."""
        return {
            "data set": self.dataset, "model": ARCH_LABELS.get(self.arch, self.arch), "run": self.name,
            "parameters": self.n_params,
            "epochs run": len(self.history.epochs), "best epoch": self.history.best_epoch,
            "val acc %": round(100 * self.val.accuracy, 2),
            "val bal acc %": round(100 * self.val.balanced_accuracy, 2),
            "test acc %": round(100 * self.test.accuracy, 2) if self.test else None,
            "test bal acc %": round(100 * self.test.balanced_accuracy, 2) if self.test else None,
            "train time s": round(self.history.seconds, 1),
        }


@dataclass(frozen=True)
class Run:
    """One training run, built once and passed whole: names, TrainConfig, model, hooks and what it reports."""

    name: str  #: the TensorBoard run (``outputs/runs/<experiment>/<name>``)
    experiment: str
    train: TrainConfig
    model: Mapping[str, Any] = field(default_factory=dict)  #: model fields beside the data's (layer sizes, ...)
    arch: str = "lenet5"
    hooks: tuple[TrainHook, ...] = ()  #: what a wing adds to fit's batches (views, outlier exposure)
    hparams: Mapping[str, Any] | None = None  #: TensorBoard's HParams row (default: every setting)
    test: bool = True  #: evaluate the test split too (to report it); a search's trials never do
    figures: bool = True  #: confusion matrices in TensorBoard
    init_state: Mapping[str, torch.Tensor] | None = None  #: start from these weights (fine-tuning)

    def for_seed(self, seed: int) -> Run:
        """The same run with another seed (weights and batch order), named ``<name>-seed<seed>``."""
        return replace(self, name=f"{self.name}-seed{seed}", train=replace(self.train, seed=seed))


def train_tracked(data: DataSplits, run: Run, outputs: Outputs, device: str | torch.device = "auto",
                  on_epoch: Callable[[dict[str, float]], bool | None] | None = None) -> RunResult:
    """The one tracked-training path: build the model, fit it, log to TensorBoard, evaluate, return the result."""
    config = {"in_channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes,
              **run.model}
    model = build_model(run.arch, seed=run.train.seed, **config)  # the seed fixes the initial weights
    if run.init_state is not None:
        model.load_state_dict(run.init_state)
    hparams = run.hparams if run.hparams is not None else {
        "arch": run.arch, "dataset": data.name, **config, **asdict(run.train), **hook_settings(run.hooks)}
    val = test = None
    with RunTracker(run.experiment, run.name, outputs.runs) as tracker:
        result = fit(model, data, run.train, device=device, tracker=tracker, on_epoch=on_epoch, hooks=run.hooks)
        h = result.history
        if not h.epochs:
            tracker.log_hparams(hparams, {"val_acc": float("nan"), "val_loss": float("nan")})
        else:  # the weights of the best epoch, also when a later epoch diverged
            val = evaluate(result.model, data, "val", device=device)
            test = evaluate(result.model, data, "test", device=device) if run.test else None
            if run.figures:
                for split, ev in (("val", val), ("test", test)):
                    if ev is not None:
                        fig = plot_confusion(ev, split)
                        tracker.log_figure(f"confusion_matrix/{split}", fig)
                        plt.close(fig)
            nan = {"val_acc": float("nan"), "val_loss": float("nan")}  # a diverged run scores nothing
            tracker.log_hparams(hparams, nan if h.diverged else _metrics(val, test, h))
    return RunResult(run.name, data.name, run.arch, result.model, h, val, test, count_parameters(result.model), None,
                     run.train, config, run.hooks)


def _metrics(val: Evaluation, test: Evaluation | None, history: History) -> dict[str, float]:
    metrics = {"val_acc": val.accuracy, "val_loss": val.loss, "final_val_acc": history.epochs[-1]["val_acc"],
               "best_epoch": history.best_epoch}
    if test is not None:
        metrics["test_acc"] = test.accuracy
    return metrics


def train_and_evaluate(data: DataSplits, run: Run, outputs: Outputs, device: str | torch.device = "auto",
                       checkpoint: Path | None = None) -> RunResult:
    """:func:`train_tracked` (or the same run from the run store), refused when no epoch finished; saved if asked."""
    stored = store_path(outputs, data, run)
    result = reload_run(stored, data, run, device)  # trained before, by any notebook, exactly so: not again
    if result is not None:
        result.test = evaluate(result.model, data, "test", device=device) if run.test else None
        with RunTracker(run.experiment, run.name, outputs.runs) as tracker:  # its curves under this run's name
            for record in result.history.epochs:
                tracker.log_epoch(record)
    else:
        result = train_tracked(data, run, outputs, device)
        if result.val is not None and not result.history.diverged:
            save_run(result, data, stored, extra={"history": result.history.to_dict()})
    if result.val is None:
        raise RuntimeError(f"run {run.name!r} finished no epoch: {result.history.diverged or 'no training step ran'}")
    if checkpoint is not None:
        save_run(result, data, checkpoint)
    return result


def store_path(outputs: Outputs, data: DataSplits, run: Run) -> Path:
    """Where the run store keeps ``run`` on ``data`` (trained on this thread count): ``models/store/<key>.pt``."""
    return outputs.models / "store" / f"{run_key(data, run)}.pt"


def run_key(data: DataSplits, run: Run) -> str:
    """What determines a run's weights (data with its stored views and outliers, model, settings, hooks, start,
    the training code, the CPU threads it trains on), as a short hash."""
    hooks = hook_settings(run.hooks)
    start = None if run.init_state is None else fingerprint_bytes(
        v.detach().cpu().contiguous().numpy().tobytes() for v in run.init_state.values())
    code = _code_digest(tuple(sorted({inspect.getsourcefile(type(h)) or "" for h in run.hooks})))
    extra = {name: None if t is None else fingerprint_bytes([t.contiguous().numpy().tobytes()])
             for name, t in (("views", data.train.views), ("outliers", data.outliers))}  # what hooks train on too
    ident = {"data": data.fingerprint(), **extra, "arch": run.arch, "model": dict(run.model),
             "train": asdict(run.train), "hooks": hooks, "start": start, "code": code,
             "threads": torch.get_num_threads()}  # a CPU sums in another order on another thread count
    return fingerprint_bytes([json.dumps(ident, sort_keys=True, default=str).encode()])


@functools.cache
def _code_digest(hook_files: tuple[str, ...]) -> str:
    """The training path's code (and the hooks' modules), docstrings and comments aside: a change retrains."""
    files = [Path(__file__).with_name(n) for n in ("models.py", "training.py", "runs.py")]
    files += [Path(f) for f in hook_files if f]
    return fingerprint_bytes(code_only(f.read_text(encoding="utf-8")).encode() for f in sorted(files))


def save_run(result: RunResult, data: DataSplits, checkpoint: Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Save one run's weights with its settings and metrics (``extra``: more plain metadata)."""
    metrics = {"val_acc": result.val.accuracy, "val_loss": result.val.loss, "best_epoch": result.history.best_epoch,
               "seed": result.train_config.seed}
    if result.test is not None:
        metrics["test_acc"] = result.test.accuracy
    save_checkpoint(checkpoint, result.model, data.classes, data.mean, data.std,
                    train_config=result.settings(), metrics=metrics,
                    extra={"dataset": data.name, "note": data.note, "data_fingerprint": data.fingerprint(),
                           **(extra or {})})
    result.checkpoint = checkpoint
    return checkpoint


def reload_run(checkpoint: Path, data: DataSplits, run: Run, device: str | torch.device = "auto") -> RunResult | None:
    """The run saved at ``checkpoint`` if it was trained exactly as ``run`` on ``data``; else None."""
    try:
        ck = load_checkpoint(checkpoint)
    except CheckpointError:
        return None
    config = {"in_channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes,
              **run.model}

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    history = ck.extra.get("history")
    if (ck.arch != run.arch or not isinstance(history, dict) or ck.extra.get("data_fingerprint") != data.fingerprint()
            or not same(ck.train_config, {**asdict(run.train), **hook_settings(run.hooks)})
            or not same({k: ck.model_config.get(k) for k in config}, config)):
        return None
    val = evaluate(ck.model, data, "val", device=device)
    return RunResult(run.name, data.name, run.arch, ck.model, History(**history), val, None,
                     count_parameters(ck.model), checkpoint, run.train, config, run.hooks)


def results_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run (see :meth:`RunResult.summary`)."""
    return pd.DataFrame([r.summary() for r in results])


def recall_table(results: Sequence[RunResult], split: str = "test") -> pd.DataFrame:
    """Per run: accuracy, balanced accuracy and the recall of every class on ``split``, in %."""
    rows = {}
    for r in results:
        ev = r.val if split == "val" else r.test
        if ev is None:
            raise ValueError(f"run {r.name!r} was not evaluated on {split}")
        rows[r.name] = {"images": int(ev.confusion.sum()), "accuracy %": 100 * ev.accuracy,
                        "balanced acc %": 100 * ev.balanced_accuracy,
                        **{f"recall {c} %": 100 * v for c, v in ev.per_class.items()}}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("run").round(2)


def run_headlines(results: Sequence[RunResult], device: str) -> list[dict[str, str]]:
    """One summary row per run (:meth:`helpers.provenance.RunStamp.finish`): validation and test accuracy."""
    return [{"data set": r.dataset, "model": ARCH_LABELS.get(r.arch, r.arch),
             "val acc %": f"{100 * r.val.accuracy:.2f}",
             "test acc %": f"{100 * r.test.accuracy:.2f} (balanced {100 * r.test.balanced_accuracy:.2f})" if r.test else "",
             "spent": f"{len(r.history.epochs)} epochs, {r.history.seconds / 60:.1f} min, {device}",
             "note": f"one seed ({r.train_config.seed}), {r.n_params:,} parameters"} for r in results]


def seed_summary(results: Sequence[RunResult]) -> dict[str, float]:
    """Mean and standard deviation (over seeds) of validation and test accuracy, in %."""
    val = pd.Series([100 * r.val.accuracy for r in results])
    test = pd.Series([100 * r.test.accuracy for r in results if r.test is not None])
    return {"seeds": len(results), "val mean %": val.mean(), "val std %": val.std(ddof=1) if len(val) > 1 else 0.0,
            "test mean %": test.mean(), "test std %": test.std(ddof=1) if len(test) > 1 else 0.0}


def train_runs(data: DataSplits | Sequence[DataSplits], runs: Sequence[Run], outputs: Outputs,
               device: str | torch.device = "auto", checkpoints: Sequence[Path | None] | None = None
               ) -> list[RunResult]:
    """:func:`train_and_evaluate` of each run (on ``data``, or on its own data set from a list; saved to its
    checkpoint, if given), side by side on a CPU (:func:`helpers.lanes.side_by_side`: one thread each)."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    sets = [data] * len(runs) if isinstance(data, DataSplits) else list(data)
    jobs = [(d, r, outputs, device, c)
            for d, r, c in zip(sets, runs, checkpoints or [None] * len(runs), strict=True)]
    with as_lanes_run(device):  # the runs' keys as the lanes train them
        if all(store_path(outputs, d, r).exists() for d, r in zip(sets, runs)):  # read back here: no lanes to start
            return [train_and_evaluate(*job) for job in jobs]
    return side_by_side(train_and_evaluate, jobs, device, [work_of(d, r) for d, r in zip(sets, runs)])


def work_of(data: DataSplits, run: Run) -> float:
    """A run's rough cost, to order runs side by side: training images × epochs × pixels per image."""
    return float(len(data.train) * run.train.epochs * data.image_size ** 2)


def train_over_seeds(data: DataSplits, run: Run, seeds: Sequence[int], outputs: Outputs,
                     device: str | torch.device = "auto") -> list[RunResult]:
    """:func:`train_runs` of ``run`` once per seed (weights and batch order both seeded)."""
    return train_runs(data, [run.for_seed(s) for s in seeds], outputs, device)


def save_best(results: Sequence[RunResult], data: DataSplits, checkpoint: Path) -> RunResult:
    """Save the run with the best *validation* accuracy to ``checkpoint`` (with the seeds' summary); return it."""
    best = max(results, key=lambda r: r.val.accuracy)
    save_checkpoint(checkpoint, best.model, data.classes, data.mean, data.std,
                    train_config=best.settings(),
                    metrics={"val_acc": best.val.accuracy, "test_acc": best.test.accuracy if best.test else None,
                             "seed": best.train_config.seed, **{f"seeds_{k}": v for k, v in seed_summary(results).items()}},
                    extra={"dataset": data.name, "note": data.note, "data_fingerprint": data.fingerprint()})
    for r in results:
        r.checkpoint = checkpoint if r is best else None
    return best


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
