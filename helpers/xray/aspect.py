"""The aspect-ratio shortcut of square inputs, and the stretched copies that train it away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from helpers.splits import DataSplits

#: Width factors of the stored views: log-spaced in [1 / 1.25, 1.25], the identity left out. The
#: range covers the 1.25x gap between the classes' median aspect ratios in the X-ray training split.
STRETCHES = (0.8, 0.86, 0.93, 1.07, 1.16, 1.25)


def stretch(images: torch.Tensor, factor: float) -> torch.Tensor:
    """uint8 images (N, C, H, W) with their content's width times ``factor`` (height and size kept)."""
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
    """Width / height of each source file; None for an exact square (no ratio of its own)."""
    return [w / h if w != h else None for w, h in source_sizes(folder, ids)]
