"""The aspect-ratio shortcut of square inputs, measured and trained away.

A loader that resizes every image to a square squashes a wide image more than a narrow one. When
the source images' aspect ratio differs by class (in the chest X-ray training split the originals
of normal lungs are 1.2 : 1, those with pneumonia 1.5 : 1), the squash itself becomes a class cue
that a CNN can learn instead of the lungs. This module

* tabulates the source aspect ratios per split and class (:func:`source_aspects`),
* stores horizontally stretched and squashed copies of the training images as *views*
  (:func:`with_stretch_views`), which training swaps in per image with probability
  the :class:`~helpers.training.ViewSwap` hook of ``fit`` (the same mechanism as the webcam model's camera views),
* measures how a model's accuracy and per-class recall move when the validation images are
  stretched or squashed (:func:`stretch_recall`, :func:`compare_stretch`), and
* retrains a run without the views, all else equal, as the ablation (:func:`without_views`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from PIL import Image

from helpers.paths import Outputs
from helpers.runs import RunResult, train_and_evaluate
from helpers.splits import DataSplits
from helpers.training import ViewSwap, evaluate

#: Width factors of the stored views: log-spaced in [1 / 1.25, 1.25], the identity left out. The
#: range covers the 1.25x gap between the classes' median aspect ratios in the X-ray training split.
STRETCHES = (0.8, 0.86, 0.93, 1.07, 1.16, 1.25)
#: Width factors of the stretch check (:func:`stretch_recall`): the views' range, with the identity.
CHECK_FACTORS = (0.8, 0.9, 1.0, 1.12, 1.25)


def stretch(images: torch.Tensor, factor: float) -> torch.Tensor:
    """uint8 images (N, C, H, W) with their content's width times ``factor`` (height and size kept).

    Squashing (``factor`` < 1) fills the sides by reflection, so no black bars appear that a
    model could learn as the mark of a view; stretching crops the sides."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    if factor == 1:
        return images.clone()
    x = images.float()
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def with_stretch_views(data: DataSplits, factors: Sequence[float] = STRETCHES) -> DataSplits:
    """``data`` with one stretched view of every training image per factor (``Split.views``)."""
    views = torch.stack([stretch(data.train.x, f) for f in factors])
    return replace(data, train=replace(data.train, views=views))


def source_sizes(folder: Path, ids: Sequence[str]) -> list[tuple[int, int]]:
    """(width, height) of each source file ``ids`` (relative to ``folder``), read from the file headers."""
    sizes = []
    for image_id in ids:
        with Image.open(Path(folder) / image_id) as im:
            sizes.append(im.size)
    return sizes


def source_aspect_ratios(folder: Path, ids: Sequence[str]) -> list[float | None]:
    """Width / height of each source file ``ids`` (relative to ``folder``); None for a file stored as an
    exact square (in the X-ray mirror: the re-encoded 224 x 224 copies, and one test original), which
    carries no aspect ratio of its own."""
    return [w / h if w != h else None for w, h in source_sizes(folder, ids)]


def source_aspects(data: DataSplits, folder: Path, splits: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """Width / height of the source files of ``splits`` (ids relative to ``folder``) per class; square
    files (:func:`source_aspect_ratios`) are counted apart ("square files")."""
    rows = []
    for name in splits:
        split = data.split(name)
        for ratio, label in zip(source_aspect_ratios(folder, split.ids), split.y.tolist()):
            rows.append({"class": data.classes[label], "aspect": np.nan if ratio is None else ratio})
    df = pd.DataFrame(rows)
    table = df.groupby("class", sort=False)["aspect"].agg(
        images="size", **{"square files": lambda a: int(a.isna().sum())}, **{"with aspect": "count"},
        **{"median width/height": "median"}, **{"IQR low": lambda a: a.quantile(0.25)},
        **{"IQR high": lambda a: a.quantile(0.75)})
    return table.reindex([c for c in data.classes if c in table.index]).round(2)


def stretch_recall(model: torch.nn.Module, data: DataSplits, factors: Sequence[float] = CHECK_FACTORS,
                   split: str = "val", device: str | torch.device = "auto") -> pd.DataFrame:
    """Accuracy, balanced accuracy and per-class recall (%) of ``model`` on ``split`` with every
    image's width times each factor (1.0: the images as they are), one row per factor."""
    rows = {}
    for f in factors:
        stretched = replace(data.split(split), x=stretch(data.split(split).x, f))
        ev = evaluate(model, replace(data, **{split: stretched}), split, device=device)
        rows[f] = {"accuracy %": 100 * ev.accuracy, "balanced %": 100 * ev.balanced_accuracy,
                   **{f"recall {c} %": 100 * float(r) for c, r in ev.per_class.items()}}
    table = pd.DataFrame.from_dict(rows, orient="index").round(1)
    table.index.name = "width factor"
    return table


def compare_stretch(models: Mapping[str, torch.nn.Module], data: DataSplits,
                    factors: Sequence[float] = CHECK_FACTORS, split: str = "val",
                    device: str | torch.device = "auto") -> pd.DataFrame:
    """:func:`stretch_recall` of several models, one block of rows per model (index: model, width factor)."""
    return pd.concat({name: stretch_recall(m, data, factors, split, device) for name, m in models.items()},
                     names=["model", "width factor"])


def without_views(run: RunResult, data: DataSplits, *, experiment: str, outputs: Outputs,
                  device: str | torch.device = "auto") -> RunResult:
    """``run`` retrained with the same model, settings and seed but no stretched views
    (no :class:`~helpers.training.ViewSwap` hook): the ablation that shows what the views change. Its test
    split is reported. Other hooks (e.g. zoom views) are kept."""
    return train_and_evaluate(data, run.train_config, name=f"{run.name}-no-views", experiment=experiment,
                              model_config=run.model_config, outputs=outputs, device=device,
                              hooks=tuple(h for h in run.hooks if not isinstance(h, ViewSwap)))


def stretch_summary(table: pd.DataFrame) -> str:
    """One sentence per model of :func:`compare_stretch`: the range of balanced accuracy and of the
    first class's recall over the width factors."""
    first = [c for c in table.columns if c.startswith("recall ")][0]
    factors = table.index.get_level_values("width factor")
    lines = []
    for name, block in table.groupby(level="model", sort=False):
        bal, rec = block["balanced %"], block[first]
        lines.append(f"- {name}: balanced accuracy {bal.min():.1f}–{bal.max():.1f} %, {first.removesuffix(' %')} "
                     f"{rec.min():.1f}–{rec.max():.1f} % over width factors {factors.min():g}–{factors.max():g} "
                     f"(spread {bal.max() - bal.min():.1f} and {rec.max() - rec.min():.1f} points).")
    return "\n".join(lines)


def plot_stretch(table: pd.DataFrame, title: str) -> plt.Figure:
    """Balanced accuracy (solid) and the first class's recall (dashed) against the width factor, per model."""
    first = [c for c in table.columns if c.startswith("recall ")][0]
    long = table.reset_index().melt(id_vars=["model", "width factor"], value_vars=["balanced %", first],
                                    var_name="measure", value_name="percent")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="width factor", y="percent", hue="model", style="measure", markers=True, ax=ax)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="width factor applied to the validation images (1 = as loaded)", ylabel="percent of images",
           title=title)
    fig.tight_layout()
    return fig
