"""Controlled experiments: run a list of configurations × seeds, cache results, aggregate."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from helpers import data
from helpers.paths import Outputs
from helpers.lanes import as_lanes_run, lane_count, side_by_side
from helpers.plumbing import ChecksumError, pick_device, read_checked, remove_checked, write_checked
from helpers.runs import Run, train_tracked
from helpers.splits import DataSplits
from helpers.stats import COMBINE_RULE, Verdict, combine, diff_in_diff, given, held, paired
from helpers.training import TrainConfig
from helpers.tuning import cache_version, search, spaces, tables, trialstore


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
             "precision": TrainConfig(**config.train).precision,  # bf16 and fp32 runs are not the same result
             "data": [data.name, data.sizes(), list(data.mean)], "cache_version": cache_version.CACHE_VERSION,
             "threads": torch.get_num_threads()}  # a CPU sums in another order on another thread count
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run_one(config: Config, seed: int, data: DataSplits, study: str, outputs: Outputs,
            device: str | torch.device = "auto", cache_dir: Path | None = None) -> tuple[dict[str, Any], bool]:
    """Train one (config, seed) via :func:`helpers.runs.train_tracked` or read it from the cache."""
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
    run = Run(f"{config.label}-seed{seed}", study, train, dict(config.model), test=False, figures=False,
              hparams={"label": config.label, **config.factors, **config.model, **config.train, "seed": seed})
    result = train_tracked(data, run, outputs, device)
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
    jobs = [(c, s) for c in configs for s in seeds]
    folder = cache_dir or outputs.results / study
    device = device if isinstance(device, torch.device) else pick_device(device)
    args = [(c, s, datasets[c.dataset], study, outputs, device, cache_dir) for c, s in jobs]
    with as_lanes_run(device):  # the runs' keys as the lanes train them
        cached = sum((folder / f"{_key(c, s, datasets[c.dataset])}.json").exists() for c, s in jobs)
        if cached == len(jobs):  # all finished earlier: read here, no lanes to start
            results = [run_one(*a) for a in args]
    if cached == len(jobs):
        if progress:
            print(f"{len(jobs)} runs loaded from {folder.name}/ (finished earlier, not re-run)")
    else:
        if progress:
            print(f"{study}: {len(jobs) - cached} of {len(jobs)} runs to train, side by side "
                  f"({lane_count(len(jobs) - cached) if device.type == 'cpu' else 1} at once)", flush=True)
        costs = [len(datasets[c.dataset].train) * TrainConfig(**c.train).epochs for c, _ in jobs]
        results = side_by_side(run_one, args, device, costs)  # the longest first
    frame = pd.DataFrame([row for row, _ in results])
    frame.attrs["trained"] = sum(fresh for _, fresh in results)
    return frame


def tuned_settings(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A tuned model's LeNet-5 options and training settings from its JSON; None before it exists."""
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
    """Per batch size: the learning rate kept (``fixed lr``) or scaled by batch / its batch (``scaled lr``)."""
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
                xlabel: str | None = None, order: Sequence[Any] | None = None, ax: Axes | None = None) -> Figure:
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



# ------------------------------------------------------------------ notebook 05's experiments, one function each

#: SGD with momentum, as the batch-size and learning-rate experiments use it
SGD: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.9}


def reflection_data(slice_: Mapping[str, int]) -> dict[str, DataSplits]:
    """Notebook 05's data: Simpsons-MNIST rgb and gray cut to ``slice_``, Fashion-MNIST if here."""
    datasets = {"simpsons-rgb": data.load_simpsons_mnist("rgb").subset(**slice_),
                "simpsons-gray": data.load_simpsons_mnist("grayscale").subset(**slice_)}
    fashion = data.try_load("fashion")
    if fashion is not None:
        datasets["fashion"] = fashion.subset(**{"n_val": 1000, **slice_})
    return datasets


def plot_epoch_curves(runs: pd.DataFrame, stops: pd.Series, title: str) -> Figure:
    """Validation accuracy (%) and loss per epoch, mean ± sd over seeds, with where early stopping stopped."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric, label in ((axes[0], "val_acc", "validation accuracy (%)"), (axes[1], "val_loss", "validation loss (nats)")):
        c = curves(runs, metric)
        sns.lineplot(data=c.assign(**{metric: c[metric] * (100 if metric == "val_acc" else 1)}), x="epoch", y=metric,
                     errorbar="sd", ax=ax)
        ax.axvline(stops.mean(), color="gray", ls=":", label=f"early stopping (mean epoch {stops.mean():.0f})")
        ax.set(xlabel="epoch", ylabel=label)
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def batch_grid(base: Mapping[str, Any], *, batches: Sequence[int], lr: float, epochs: int, updates: int,
               n_train: int) -> list[Config]:
    """H3's conditions: each batch size, lr fixed or scaled, at fixed epochs and at fixed updates."""
    configs = []
    for bs in batches:
        for lr_mode, value in (("fixed lr", lr), ("scaled lr", lr * bs / 128)):
            train = dict(base, **SGD, lr=value, batch_size=bs)
            configs.append(Config(f"bs{bs}-{lr_mode[:5]}-epochs", {"batch_size": bs, "lr rule": lr_mode,
                                  "budget": f"{epochs} epochs"}, {}, train))
            configs.append(Config(f"bs{bs}-{lr_mode[:5]}-updates", {"batch_size": bs, "lr rule": lr_mode,
                                  "budget": f"{updates} updates"}, {},
                                  dict(train, max_updates=updates, epochs=updates * bs // n_train + 2)))
    return configs


def regime_check(tuned: tuple[dict[str, Any], dict[str, Any]], before: Sequence[Verdict], regime: Mapping[str, Any],
                 datasets: dict[str, DataSplits], *, outputs: Outputs, device: str | torch.device = "auto",
                 ) -> tuple[Verdict, pd.DataFrame]:
    """H3c: the claims ``before`` re-tested at a tuned configuration on the full split (:data:`HELD_RULE`)."""
    model, train = tuned
    train = dict(train, epochs=regime["epochs"] or train["epochs"])
    full = data.load_simpsons_mnist("rgb")
    datasets["simpsons-rgb-full"] = full.subset(**regime["slice"]) if regime["slice"] else full
    small, budget = int(train["batch_size"]), f"{train['epochs']} epochs"
    frame = run_experiments(batch_size_configs(model, train, (small, 512), dataset="simpsons-rgb-full", budget=budget),
                            regime["seeds"], datasets, study="05-regime", outputs=outputs, device=device)
    after = [paired(frame[frame["lr rule"] == r], "batch_size", 512, small,
                    claim=f"tuned, full split, {budget}, {r}: batch {small} beats 512") for r in ("fixed lr", "scaled lr")]
    return held("3c. Small batches beat large ones at fixed epochs (3a), re-tested at the tuned configuration "
                "on the full split", before, after), frame


def depth_verdict(frame: pd.DataFrame, present: Sequence[str]) -> Verdict:
    """H4: each extra layer helps on Simpsons-MNIST, and helps more there than on Fashion-MNIST (paired by seed)."""
    claim = "4. Depth helps only on complex data"
    if "fashion" not in present:
        return given(claim, "inconclusive", "needs both data sets", "Fashion-MNIST not available")
    simpsons = frame[frame["data set"] == "simpsons-rgb"]
    parts = [v for name in ("+ conv layer", "+ dense layer") for v in (
        paired(simpsons, "architecture", "LeNet-5", name, claim=f"{name} helps on Simpsons-MNIST"),
        diff_in_diff(frame, "architecture", "LeNet-5", name, "data set", "simpsons-rgb", "fashion",
                     claim=f"{name} helps more on Simpsons-MNIST than on Fashion-MNIST"))]
    return combine(claim, parts)


def plot_lr_effect(frame: pd.DataFrame, title: str) -> Figure:
    """H5's accuracy per learning rate and variant, the learning rates in numeric order."""
    fig = plot_effect(frame, "lr", title, hue="variant", xlabel="learning rate (SGD, momentum 0.9)",
                      order=sorted(frame["lr"].unique()))
    fig.axes[0].legend(title="variant", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def batchnorm_verdict(frame: pd.DataFrame, lrs: Sequence[float], num_classes: int) -> tuple[Verdict, pd.DataFrame]:
    """H5: BatchNorm beats the plain network away from its best lr (chance-level lrs left out)."""
    s = aggregate(frame, ["variant", "lr"])
    table = s["mean"].unstack("lr").round(1)
    table["learning rates within 10 % of the best result"] = (s["mean"].unstack("lr") >= 0.9 * s["mean"].max()).sum(axis=1)
    plain_best = s.loc["plain", "mean"].idxmax()
    chance = 100 / num_classes
    parts, degenerate = [], []
    for lr in lrs:
        if lr == plain_best:
            continue
        both = frame[(frame["lr"] == lr) & frame["variant"].isin(["plain", "BatchNorm"])]["final_val_acc"] * 100
        if (both.sub(chance).abs() < 1.0).all():
            degenerate.append(f"lr {lr:g}: both at chance ({chance:.0f} %) in every seed, a degenerate comparison")
            continue
        parts.append(paired(frame[frame["lr"] == lr], "variant", "plain", "BatchNorm", claim=f"lr {lr:g}: BatchNorm beats plain"))
    claim = "5. BatchNorm widens the usable learning-rate range"
    verdict = combine(claim, parts) if parts else given(claim, "inconclusive", COMBINE_RULE, "every comparison degenerate")
    verdict.evidence += (f"; compared away from the plain model's best learning rate ({plain_best:g})"
                         + "".join(f"; left out: {d}" for d in degenerate))
    return verdict, table


def interaction_verdict(frame: pd.DataFrame, results: Path) -> tuple[Verdict, str]:
    """H7: the best lr shifts with batch size, and lr ranks first by η² in notebook 03."""
    s = aggregate(frame, ["batch_size", "lr"])
    best_lr = s["mean"].unstack("lr").idxmax(axis=1)
    small, large = int(frame["batch_size"].min()), int(frame["batch_size"].max())
    interaction = (diff_in_diff(frame, "lr", best_lr[large], best_lr[small], "batch_size", small, large,
                                claim=f"lr {best_lr[small]:g} over {best_lr[large]:g} gains more at batch {small} than at {large}")
                   if best_lr[small] != best_lr[large] else given(
                       "the best lr shifts with batch size", "inconclusive", "best lr per batch size",
                       f"the same best lr at batch {small} and {large}"))
    paths = {a: search.trials_file(results, "03-simpsons", a) for a in ("random", "tpe")}
    loaded = {a: trialstore.load_trials(p) for a, p in paths.items() if p.exists()}
    frames = [tables.trials_frame(t, spaces.stored_space(t), a) for a, t in loaded.items()]
    if not frames:
        readout, imp = "Notebook 03's trials are not in `outputs/results/` yet: run notebook 03 for the importance estimate.", None
    else:
        explored = pd.concat(frames, ignore_index=True)
        imp = tables.importance(explored, list(spaces.HYPERPARAMETERS))
        readout = tables.importance_readout(explored, imp)
        imp = None if imp.isna().all() else imp
    readout = f"Best learning rate per batch size: {', '.join(f'{b}: {v:g}' for b, v in best_lr.items())}. " + readout
    return combine("7. lr and batch size interact; lr matters most", [interaction, tables.ranking_claim(imp, "lr")]), readout
