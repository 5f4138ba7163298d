"""Figures and tables for Hyperopt searches (work on :func:`helpers.tuning.tables.trials_frame` output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import cm, colors
from matplotlib.figure import Figure

LOG_SCALE = {"lr", "weight_decay"}
TABLE_COLUMNS = ["algo", "trial", "val_acc", "val_loss", "optimizer", "lr", "momentum", "schedule", "weight_decay",
                 "batch_size", "image_size", "conv", "dense", "dropout", "batchnorm", "label_smoothing", "augment",
                 "n_params", "epochs", "seconds"]


def plot_optimization_history(frames: Mapping[str, pd.DataFrame], reference: float | None = None,
                              reference_label: str = "grid best", title: str = "Optimization history",
                              x: str = "trial") -> Figure:
    """Validation accuracy per trial and best finished trial so far (line), one colour per algorithm."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    palette = dict(zip(frames, sns.color_palette(n_colors=max(3, len(frames)))))
    floor = min((f["val_acc"].min() for f in frames.values() if f["val_acc"].notna().any()), default=0.0)
    for algo, frame in frames.items():
        state = frame["state"]
        done, stopped, failed = frame[state == "finished"], frame[state == "stopped"], frame[state == "failed"]
        ax.scatter(done[x], 100 * done["val_acc"], s=18, color=palette[algo], alpha=0.7)
        if len(stopped):
            ax.scatter(stopped[x], 100 * stopped["val_acc"], s=18, facecolors="none", edgecolors=palette[algo],
                       alpha=0.7, label=f"{algo}: {len(stopped)} stopped early (hollow)")
        ax.step(frame[x], 100 * frame["best_so_far"], where="post", color=palette[algo], lw=2,
                label=f"{algo} (best finished {100 * done['val_acc'].max():.1f} %)" if len(done) else algo)
        if len(failed):
            ax.scatter(failed[x], np.full(len(failed), 100 * floor - 1), marker="x", color=palette[algo],
                       label=f"{algo}: {len(failed)} failed trial(s)")
    if reference is not None:
        ax.axhline(100 * reference, color="gray", ls=":", label=f"{reference_label} ({100 * reference:.1f} %)")
    ax.set_xlabel("trial (proposal order)" if x == "trial" else "epochs spent by the search")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title + " (dots: each trial, line: best finished so far)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_comparison_curves(curves: pd.DataFrame, title: str = "Best so far against epochs spent") -> Figure:
    """Mean ± sd over search seeds of the best-so-far validation accuracy, per algorithm."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    algos = list(dict.fromkeys(c.split(" #")[0] for c in curves.columns))
    for colour, algo in zip(sns.color_palette(n_colors=max(3, len(algos))), algos):
        block = curves[[c for c in curves.columns if c.split(" #")[0] == algo]]
        mean, sd = block.mean(axis=1), block.std(axis=1).fillna(0)
        ax.plot(curves.index, mean, color=colour, lw=2, label=f"{algo} ({block.shape[1]} search(es))")
        ax.fill_between(curves.index, mean - sd, mean + sd, color=colour, alpha=0.2)
    ax.set_xlabel("epochs spent by the search")
    ax.set_ylabel("best finished validation accuracy (%)")
    ax.set_title(title + " (line: mean over search seeds, band: ± 1 sd)")
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
    cats = _in_order(list(column.astype(str).unique()))
    codes = column.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(dtype=float)
    return codes / max(len(cats) - 1, 1), cats


def plot_parallel_coordinates(frame: pd.DataFrame, params: Sequence[str], title: str = "Hyperparameters of every trial") -> Figure:
    """One line per finished trial across the hyperparameter axes, coloured by validation accuracy."""
    ok = frame[frame["state"] == "finished"].sort_values("val_acc")
    params = [p for p in params if p in ok and ok[p].nunique(dropna=False) > 1]  # a constant gets no axis
    fig, ax = plt.subplots(figsize=(1.3 * len(params) + 2, 4.8))
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
    ax.set_title(f"{title} ({len(ok)} finished trials)")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="validation accuracy (%)", fraction=0.03, pad=0.04)
    fig.subplots_adjust(left=0.04, right=0.97, bottom=0.18, top=0.9)
    return fig


def _in_order(values: Sequence[Any]) -> list[Any]:
    """Category values in numeric order when they are numbers (80, 96, 112, not "112", "80"), else as text."""
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def plot_param_scatter(frame: pd.DataFrame, params: Sequence[str], title: str = "Hyperparameter vs validation accuracy") -> Figure:
    """One panel per hyperparameter: its value against validation accuracy (finished trials of all algorithms)."""
    ok = frame[frame["state"] == "finished"]
    params = [p for p in params if p in ok and ok[p].nunique(dropna=False) > 1]  # a constant gets no panel
    if not params:
        raise ValueError("no hyperparameter takes more than one value among the finished trials")
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
                          order=[str(v) for v in _in_order(ok[p].dropna().unique())])
            ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.set_xlabel(p + (" (log scale)" if p in LOG_SCALE else ""))
        ax.set_ylabel("validation accuracy (%)")
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    fig.suptitle(f"{title} ({len(ok)} finished trials" + (", colour = algorithm)" if hue else ")"))
    fig.tight_layout()
    return fig


def top_table(frame: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` best finished trials (all their epochs trained), readable columns, accuracy in %."""
    ok = frame[frame["state"] == "finished"].sort_values("val_acc", ascending=False).head(k)
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
