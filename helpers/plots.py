"""Figures for data sets and training runs (matplotlib + seaborn, labelled for the HTML report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from helpers.splits import DataSplits
from helpers.training import Evaluation, History


def to_display(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C, H, W) uint8 image as an array ``imshow`` understands (H, W) or (H, W, 3)."""
    arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def image_grid(
    images: Sequence[torch.Tensor | np.ndarray], titles: Sequence[str], ncols: int, title: str,
    title_colors: Sequence[str] | None = None, cell: float = 1.5, title_loc: str = "center",
) -> Figure:
    """A grid of images with a caption above each."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (img, caption) in enumerate(zip(images, titles)):
        ax = axes.flat[k]
        arr = to_display(img)
        # nearest: each image pixel is a flat block, as the network sees it (and it compresses well)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(caption, fontsize=7, loc=title_loc, color=title_colors[k] if title_colors else "black")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_samples(splits: DataSplits, split: str = "train", per_class: int = 6, seed: int = 0) -> Figure:
    """``per_class`` random images of every class, one row per class, named above its first image."""
    s = splits.split(split)
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for label, name in enumerate(splits.classes):
        idx = np.flatnonzero(s.y.numpy() == label)
        picked = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        images += [s.x[i] for i in picked]
        titles += [name] + [""] * (len(picked) - 1)
    h, w = s.x.shape[-2:]
    return image_grid(images, titles, per_class, f"{splits.name}: {per_class} random {split} images per class ({h}x{w} px)",
                      cell=1.0, title_loc="left")


def plot_class_balance(splits: DataSplits) -> Figure:
    """Bar chart of images per class in each split."""
    counts = splits.counts().reset_index().melt(id_vars="class", var_name="split", value_name="images")
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * splits.num_classes + 3), 3.8))
    sns.barplot(data=counts, x="class", y="images", hue="split", ax=ax)
    ax.set_xlabel("class")
    ax.set_ylabel("images (count)")
    ax.set_title(f"{splits.name}: class balance per split ({splits.sizes()})")
    ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def plot_pixel_histograms(datasets: Mapping[str, DataSplits], max_images: int = 2000) -> Figure:
    """Histogram of training-pixel intensities for each data set (first ``max_images`` images)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, splits in datasets.items():
        x = splits.train.x[:max_images].to(torch.float32).flatten().numpy() / 255.0
        n = min(max_images, len(splits.train))
        sns.histplot(x, bins=50, stat="density", element="step", fill=False, ax=ax, label=f"{name} ({n:,} images)")
    ax.set_xlabel("pixel intensity (0 = black, 1 = white)")
    ax.set_yscale("log")
    ax.set_ylabel("density (log scale)")
    ax.set_title("Pixel intensity distribution of training images")
    ax.legend()
    fig.tight_layout()
    return fig



def plot_learning_curves(histories: Mapping[str, History], title: str = "Learning curves") -> Figure:
    """Loss and accuracy per epoch, train (dashed) and validation (solid), one colour per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4))
    palette = sns.color_palette(n_colors=max(3, len(histories)))
    for color, (name, history) in zip(palette, histories.items()):
        h = history.frame()
        if h.empty:
            continue
        ax_loss.plot(h.index, h["train_loss"], "--", color=color, alpha=0.7)
        ax_loss.plot(h.index, h["val_loss"], "-", color=color, label=name)
        ax_acc.plot(h.index, 100 * h["train_acc"], "--", color=color, alpha=0.7)
        ax_acc.plot(h.index, 100 * h["val_acc"], "-", color=color, label=name)
        if history.best_epoch:
            ax_loss.plot(history.best_epoch, history.best_val_loss, "o", color=color)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss (nats)", title="loss (dashed: train, solid: validation)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (dashed: train, solid: validation)")
    ax_acc.legend(fontsize=8)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion(evaluation: Evaluation, split: str = "test", title: str | None = None,
                   ax: Axes | None = None) -> Figure:
    """Row-normalised confusion matrix (% of each true class), with counts in the title."""
    conf = evaluation.confusion
    pct = 100 * conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    k = len(evaluation.classes)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.5, 1.0 + 0.65 * k), max(4.5, 0.8 + 0.6 * k)))
    else:
        fig = ax.figure
    sns.heatmap(pct, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar_kws={"label": "% of true class"},
                xticklabels=evaluation.classes, yticklabels=evaluation.classes, ax=ax, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.tick_params(axis="y", rotation=0, labelsize=7)
    ax.set_title(title or f"Confusion matrix on {split} ({conf.sum():,} images, accuracy {100 * evaluation.accuracy:.1f} %, "
                          f"balanced {100 * evaluation.balanced_accuracy:.1f} %)")
    fig.tight_layout()
    return fig


def show_misclassified(data: DataSplits, evaluation: Evaluation, split: str = "test", n: int = 16, seed: int = 0) -> Figure:
    """Up to ``n`` misclassified images (chosen at random) with 'true -> predicted (confidence)'."""
    s = data.split(split)
    wrong = np.flatnonzero(evaluation.predictions != s.y.numpy())
    rng = np.random.default_rng(seed)
    pick = rng.choice(wrong, size=min(n, len(wrong)), replace=False) if len(wrong) else []
    name = lambda k: data.classes[int(k)].replace("_", " ")  # noqa: E731
    titles = [
        f"true: {name(s.y[i])}\npred: {name(evaluation.predictions[i])} ({100 * evaluation.probabilities[i].max():.0f}%)"
        for i in pick
    ]
    return image_grid([s.x[i] for i in pick], titles, ncols=6,
                      title=f"{data.name}: {len(pick)} of {len(wrong):,} misclassified {split} images (true -> predicted)",
                      title_colors=["firebrick"] * len(pick), cell=2.2)


def show_frames(frames_bgr: Sequence[np.ndarray], titles: Sequence[str], title: str, ncols: int = 3,
                cell: float = 3.2) -> Figure:
    """OpenCV (BGR, H×W×3) frames in a grid, e.g. annotated webcam snapshots."""
    rgb = [np.ascontiguousarray(f[..., ::-1]).transpose(2, 0, 1) for f in frames_bgr]
    return image_grid(rgb, titles, ncols=ncols, title=title, cell=cell)
