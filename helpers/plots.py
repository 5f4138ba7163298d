"""Figures for data sets and training runs (matplotlib + seaborn, labelled for the HTML report)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from helpers.data import DataSplits


def to_display(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C, H, W) uint8 image as an array ``imshow`` understands (H, W) or (H, W, 3)."""
    arr = img.numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def image_grid(
    images: Sequence[torch.Tensor | np.ndarray], titles: Sequence[str], ncols: int, title: str,
    title_colors: Sequence[str] | None = None, cell: float = 1.5,
) -> Figure:
    """A grid of images with a caption above each."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (img, caption) in enumerate(zip(images, titles)):
        ax = axes.flat[k]
        arr = to_display(img)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7, color=title_colors[k] if title_colors else "black")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_samples(splits: DataSplits, split: str = "train", per_class: int = 6, seed: int = 0) -> Figure:
    """``per_class`` random images of every class, one row per class."""
    s = splits.split(split)
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for label, name in enumerate(splits.classes):
        idx = np.flatnonzero(s.y.numpy() == label)
        for i in rng.choice(idx, size=min(per_class, len(idx)), replace=False):
            images.append(s.x[i])
            titles.append(name)
    h, w = s.x.shape[-2:]
    return image_grid(images, titles, per_class, f"{splits.name}: {per_class} random {split} images per class ({h}x{w} px)")


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

