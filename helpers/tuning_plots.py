"""Figures and tables for Hyperopt searches (work on :func:`helpers.tuning.trials_frame` output).

Failed trials (diverged, no loss) are drawn as crosses at the bottom of the history plot and
left out of everything that needs a validation accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from hyperopt import STATUS_OK
from matplotlib import cm, colors
from matplotlib.figure import Figure

LOG_SCALE = {"lr", "weight_decay"}
TABLE_COLUMNS = ["algo", "trial", "val_acc", "val_loss", "optimizer", "lr", "momentum", "weight_decay",
                 "batch_size", "conv", "dense", "dropout", "batchnorm", "augment", "n_params", "epochs", "seconds"]


def plot_optimization_history(frames: Mapping[str, pd.DataFrame], reference: float | None = None,
                              reference_label: str = "grid best", title: str = "Optimization history") -> Figure:
    """Validation accuracy per trial (dots) and best so far (line), one colour per algorithm."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    palette = dict(zip(frames, sns.color_palette(n_colors=max(3, len(frames)))))
    floor = min((f["val_acc"].min() for f in frames.values() if f["val_acc"].notna().any()), default=0.0)
    for algo, frame in frames.items():
        ok = frame[frame["status"] == STATUS_OK]
        failed = frame[frame["status"] != STATUS_OK]
        ax.scatter(ok["trial"], 100 * ok["val_acc"], s=14, color=palette[algo], alpha=0.5)
        ax.step(frame["trial"], 100 * frame["best_so_far"], where="post", color=palette[algo], lw=2,
                label=f"{algo} (best {100 * ok['val_acc'].max():.1f} %)" if len(ok) else algo)
        if len(failed):
            ax.scatter(failed["trial"], np.full(len(failed), 100 * floor - 1), marker="x", color=palette[algo],
                       label=f"{algo}: {len(failed)} failed trial(s)")
    if reference is not None:
        ax.axhline(100 * reference, color="gray", ls=":", label=f"{reference_label} ({100 * reference:.1f} %)")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title + " (dots: each trial, line: best so far)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _encode(column: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numbers on [0, 1] for a parallel-coordinates axis, and tick labels for categories."""
    if column.name in LOG_SCALE:
        v = np.log10(column.astype(float))
        return ((v - v.min()) / (v.max() - v.min() + 1e-12)).to_numpy(), None
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        v = column.astype(float)
        return ((v - v.min()) / (v.max() - v.min() + 1e-12)).to_numpy(), None
    cats = sorted(column.astype(str).unique())
    codes = column.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(dtype=float)
    return codes / max(len(cats) - 1, 1), cats


def plot_parallel_coordinates(frame: pd.DataFrame, params: Sequence[str], title: str = "Hyperparameters of every trial") -> Figure:
    """One line per successful trial across the hyperparameter axes, coloured by validation accuracy."""
    ok = frame[frame["status"] == STATUS_OK].sort_values("val_acc")
    fig, ax = plt.subplots(figsize=(1.3 * len(params) + 2, 4.5))
    norm = colors.Normalize(vmin=100 * ok["val_acc"].min(), vmax=100 * ok["val_acc"].max())
    cmap = plt.get_cmap("viridis")
    encoded = {p: _encode(ok[p]) for p in params}
    xs = np.arange(len(params))
    for row in range(len(ok)):
        ys = [encoded[p][0][row] for p in params]
        ax.plot(xs, ys, color=cmap(norm(100 * ok["val_acc"].iloc[row])), alpha=0.8, lw=1.2)
    for x, p in zip(xs, params):
        ax.axvline(x, color="gray", lw=0.6)
        values, cats = encoded[p]
        if cats is not None:
            for i, c in enumerate(cats):
                ax.text(x + 0.04, i / max(len(cats) - 1, 1), c, fontsize=7, va="center")
        else:
            col = ok[p].astype(float)
            lo, hi = col.min(), col.max()
            fmt = "{:.1e}" if p in LOG_SCALE else "{:.3g}"
            ax.text(x + 0.04, 0, fmt.format(lo), fontsize=7, va="center")
            ax.text(x + 0.04, 1, fmt.format(hi), fontsize=7, va="center")
    ax.set_xticks(xs, [p + (" (log)" if p in LOG_SCALE else "") for p in params], rotation=20)
    ax.set_yticks([])
    ax.set_ylabel("value (scaled to each axis' range)")
    ax.set_title(f"{title} ({len(ok)} successful trials)")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="validation accuracy (%)")
    fig.tight_layout()
    return fig


def plot_param_scatter(frame: pd.DataFrame, params: Sequence[str], title: str = "Hyperparameter vs validation accuracy") -> Figure:
    """One panel per hyperparameter: its value against validation accuracy (all algorithms)."""
    ok = frame[frame["status"] == STATUS_OK]
    ncols = min(4, len(params))
    nrows = int(np.ceil(len(params) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
    hue = "algo" if ok["algo"].nunique() > 1 else None
    for ax, p in zip(axes.flat, params):
        numeric = pd.api.types.is_numeric_dtype(ok[p]) and not pd.api.types.is_bool_dtype(ok[p]) and ok[p].nunique() > 4
        y = 100 * ok["val_acc"]
        if numeric:
            sns.scatterplot(x=ok[p].astype(float), y=y, hue=ok[hue] if hue else None, ax=ax, s=22, legend=False)
            if p in LOG_SCALE:
                ax.set_xscale("log")
        else:
            sns.stripplot(x=ok[p].astype(str), y=y, hue=ok[hue] if hue else None, ax=ax, size=4, legend=False,
                          order=sorted(ok[p].astype(str).unique()))
            ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.set_xlabel(p + (" (log scale)" if p in LOG_SCALE else ""))
        ax.set_ylabel("validation accuracy (%)")
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({len(ok)} successful trials" + (", colour = algorithm)" if hue else ")"))
    fig.tight_layout()
    return fig


def top_table(frame: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` best successful trials, readable columns, accuracy in %."""
    ok = frame[frame["status"] == STATUS_OK].sort_values("val_acc", ascending=False).head(k)
    cols = [c for c in TABLE_COLUMNS if c in ok.columns]
    table = ok[cols].copy()
    table["val_acc"] = (100 * table["val_acc"]).round(2)
    table["val_loss"] = table["val_loss"].round(4)
    for c in ("lr", "weight_decay", "momentum"):
        if c in table:
            table[c] = table[c].map(lambda v: f"{v:.2e}" if pd.notna(v) else "")
    for c in ("dropout", "seconds"):
        if c in table:
            table[c] = table[c].astype(float).round(2)
    return table.rename(columns={"val_acc": "val_acc_%"}).reset_index(drop=True)
