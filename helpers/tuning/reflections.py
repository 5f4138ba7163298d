"""Controlled experiments: run a list of configurations × seeds, cache results, aggregate.

Each (configuration, seed) is one training run on the validation protocol (the test split is
not used). Its result is stored as JSON under ``results/<study>/<key>.json``, where the key hashes
everything that determines the run (model, training settings, seed, data set and its size), so
re-running a notebook reads finished runs back instead of retraining them, and changing any
setting retrains only what changed. Runs are logged to TensorBoard under ``runs/<study>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from helpers.paths import Outputs
from helpers.plumbing import ChecksumError, read_checked, remove_checked, write_checked
from helpers.runs import train_tracked
from helpers.splits import DataSplits
from helpers.training import TrainConfig
from helpers.tuning import cache_version


@dataclass(frozen=True)
class Config:
    """One experimental condition: a label, the factor values it stands for, model and training settings."""

    label: str
    factors: Mapping[str, Any]  #: e.g. {"dense": "256/128"}: the columns the analysis groups by
    model: Mapping[str, Any] = field(default_factory=dict)  #: LeNet-5 options (data dims are added)
    train: Mapping[str, Any] = field(default_factory=dict)  #: TrainConfig fields except the seed
    dataset: str = "simpsons-rgb"  #: key into the ``datasets`` mapping given to :func:`run_experiments`


MEASUREMENTS = ("final_val_acc", "final_val_loss", "best_val_acc", "best_epoch", "epochs_run", "updates",
                "stopped_early", "diverged", "seconds", "n_params", "history")


def _key(config: Config, seed: int, data: DataSplits) -> str:
    ident = {"model": dict(config.model), "train": dict(config.train), "seed": seed, "dataset": config.dataset,
             "data": [data.name, data.sizes(), list(data.mean)], "cache_version": cache_version.CACHE_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run_one(config: Config, seed: int, data: DataSplits, study: str, outputs: Outputs,
            device: str | torch.device = "auto", cache_dir: Path | None = None) -> tuple[dict[str, Any], bool]:
    """Train one (config, seed) through :func:`helpers.runs.train_tracked`, or read it from the cache;
    returns (result row, trained?)."""
    cache_dir = cache_dir or outputs.results / study
    path = cache_dir / f"{_key(config, seed, data)}.json"
    labels = {"label": config.label, **config.factors, "dataset": config.dataset, "seed": seed}
    if path.exists():  # the same training under another label (e.g. a shared baseline) is reused too
        try:
            cached = json.loads(read_checked(path))
            return {**labels, **{k: v for k, v in cached.items() if k in MEASUREMENTS}}, False
        except (ChecksumError, ValueError) as exc:
            print(f"cached result not used, training again: {exc}")
            remove_checked(path)
    train = TrainConfig(**{**config.train, "seed": seed})
    result = train_tracked(data, train, experiment=study, name=f"{config.label}-seed{seed}", outputs=outputs,
                           model_config=dict(config.model), device=device, figures=False,
                           hparams={"label": config.label, **config.factors, **config.model, **config.train, "seed": seed})
    h = result.history
    last = h.epochs[-1] if h.epochs else {}
    row = {
        **labels, "final_val_acc": last.get("val_acc", math.nan), "final_val_loss": last.get("val_loss", math.nan),
        "best_val_acc": h.best.get("val_acc", math.nan), "best_epoch": h.best_epoch, "epochs_run": len(h.epochs),
        "updates": h.updates, "stopped_early": h.stopped_early, "diverged": h.diverged,
        "seconds": h.seconds, "n_params": result.n_params, "history": h.epochs,
    }
    write_checked(path, json.dumps(row, default=float).encode())
    return row, True


def run_experiments(configs: Sequence[Config], seeds: Sequence[int], datasets: Mapping[str, DataSplits], *,
                    study: str, outputs: Outputs, device: str | torch.device = "auto", progress: bool = True,
                    cache_dir: Path | None = None) -> pd.DataFrame:
    """Every config × seed (cached); one row per run. ``df.attrs['trained']`` counts fresh runs."""
    rows, trained = [], 0
    jobs = [(c, s) for c in configs for s in seeds]
    for config, seed in tqdm(jobs, desc=study, unit="run", disable=not progress, ncols=100, file=sys.stdout):
        row, fresh = run_one(config, seed, datasets[config.dataset], study, outputs, device, cache_dir)
        rows.append(row)
        trained += fresh
    frame = pd.DataFrame(rows)
    frame.attrs["trained"] = trained
    return frame


def tuned_settings(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The LeNet-5 options and training settings (seed left out) of a tuned model, read from the JSON a
    tuning study writes beside its checkpoint (notebook 03's ``models/simpsons_tuned.json``); None when
    that notebook has not run yet."""
    path = Path(path)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    model = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["model"].items()
             if k not in ("in_channels", "image_size", "num_classes")}  # the data set gives these
    train = {k: v for k, v in doc["train"].items() if k != "seed"}
    return model, train


def batch_size_configs(model: Mapping[str, Any], train: Mapping[str, Any], batch_sizes: Sequence[int], *,
                       dataset: str, budget: str) -> list[Config]:
    """One condition per batch size × learning-rate rule around a configuration trained at
    ``train['batch_size']``: ``fixed lr`` keeps its learning rate, ``scaled lr`` multiplies it by
    batch / its batch (the linear scaling rule). Factors: ``batch_size``, ``lr rule``, ``budget``."""
    base_batch, lr = int(train["batch_size"]), float(train["lr"])
    configs = []
    for bs in batch_sizes:
        for rule, value in (("fixed lr", lr), ("scaled lr", lr * bs / base_batch)):
            configs.append(Config(f"regime-bs{bs}-{rule[:5]}", {"batch_size": bs, "lr rule": rule, "budget": budget},
                                  dict(model), {**train, "batch_size": bs, "lr": value}, dataset=dataset))
    return configs


def aggregate(frame: pd.DataFrame, by: Sequence[str] | str, metric: str = "final_val_acc") -> pd.DataFrame:
    """Mean, standard deviation (ddof=1) and count of ``metric`` per group, in % for accuracies."""
    by = [by] if isinstance(by, str) else list(by)
    scale = 100.0 if metric.endswith("acc") else 1.0
    grouped = frame.groupby(by, sort=False, observed=True)[metric]
    out = pd.DataFrame({"mean": grouped.mean() * scale, "std": grouped.std(ddof=1) * scale, "n": grouped.count()})
    out["std"] = out["std"].fillna(0.0)
    return out


def plot_effect(frame: pd.DataFrame, x: str, title: str, metric: str = "final_val_acc", hue: str | None = None,
                xlabel: str | None = None, order: Sequence[Any] | None = None, ax=None) -> Figure:
    """Mean ± standard deviation over seeds (bars), with each seed as a dot."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 4))
    else:
        fig = ax.figure
    data = frame.assign(**{"value": frame[metric] * (100 if metric.endswith("acc") else 1),
                           x: frame[x].astype(str)})
    if hue:
        data[hue] = data[hue].astype(str)
    order = [str(o) for o in order] if order is not None else list(dict.fromkeys(data[x]))
    sns.pointplot(data=data, x=x, y="value", hue=hue, order=order, errorbar="sd", capsize=0.15, ax=ax,
                  dodge=0.3 if hue else False, linestyle="none" if not hue else "-", markers="o")
    sns.stripplot(data=data, x=x, y="value", hue=hue, order=order, ax=ax, alpha=0.35, size=4, legend=False,
                  dodge=bool(hue), **({} if hue else {"color": "gray"}))
    n = int(frame.groupby([x] + ([hue] if hue else []), observed=True).size().min())
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(("validation accuracy (%)" if metric.endswith("acc") else metric) + f", mean ± sd of {n} seeds")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves(frame: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """Long table of per-epoch ``metric`` for every run (for learning-curve plots)."""
    rows = []
    for _, run in frame.iterrows():
        for e in run["history"]:
            rows.append({"label": run["label"], "seed": run["seed"], "epoch": e["epoch"], metric: e[metric]})
    return pd.DataFrame(rows)


def lr_batch_heatmap(frame: pd.DataFrame, metric: str = "final_val_acc", title: str = "") -> Figure:
    """Heatmap of mean ``metric`` (%) over learning rate (columns) × batch size (rows), sd in brackets."""
    summary = aggregate(frame, ["batch_size", "lr"], metric)
    mean = summary["mean"].unstack("lr")
    sd = summary["std"].unstack("lr")
    labels = mean.map(lambda v: f"{v:.1f}") + sd.map(lambda v: f"\n±{v:.1f}")
    fig, ax = plt.subplots(figsize=(1.6 * mean.shape[1] + 2, 1.0 * mean.shape[0] + 1.5))
    sns.heatmap(mean, annot=labels.to_numpy(), fmt="", cmap="viridis", ax=ax,
                cbar_kws={"label": "validation accuracy (%)"}, annot_kws={"fontsize": 8})
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    ax.set_title(title or f"Learning rate × batch size (mean ± sd of {int(summary['n'].min())} seeds)")
    fig.tight_layout()
    return fig

