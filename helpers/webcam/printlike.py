"""Views that make a show frame look like a print or a drawing held up to the camera."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from helpers.webcam.inference import to_model_pixels
from helpers.webcam.shifts import FAMILIES, SEVERITIES, frame_rng, to_frame

SEED = 2000  #: seed of the print views (the camera views use 1000, evaluation sets 0)


def flat_background(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frame`` with the regions connected to its border (within a colour tolerance of 6-27) filled white."""
    out = frame.copy()
    h, w = out.shape[:2]
    tol = (int(rng.integers(6, 28)),) * 3
    mask = np.zeros((h + 2, w + 2), np.uint8)
    seeds = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, 0), (0, h // 2), (w - 1, h // 2)]
    for _ in range(int(rng.integers(4, 12))):  # a few more points on the top and side edges
        side = int(rng.integers(3))
        t = int(rng.integers(0, w))
        seeds.append([(t, 0), (0, t), (w - 1, t)][side])
    for x, y in seeds:
        if not mask[y + 1, x + 1]:  # not already filled
            cv2.floodFill(out, mask, (x, y), (255, 255, 255), tol, tol, 4 | cv2.FLOODFILL_FIXED_RANGE)
    return out


def posterize(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An edge-keeping blur, then 3-6 levels per colour channel."""
    step = 256 // int(rng.integers(3, 7))
    smooth = cv2.bilateralFilter(frame, 5, 40, 5).astype(np.int32)
    return np.clip(smooth // step * step + step // 2, 0, 255).astype(np.uint8)


def zoom_in(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 60-90 % of the side, resized back to the frame's size."""
    h, w = frame.shape[:2]
    s = float(rng.uniform(0.6, 0.9))
    ch, cw = int(h * s), int(w * s)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(frame[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def shrink_on_white(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frame`` scaled to 55-95 % of its height (and up to 20 % narrower) at a random place on white."""
    h, w = frame.shape[:2]
    s = float(rng.uniform(0.55, 0.95))
    nh, nw = int(h * s), int(w * s * rng.uniform(0.8, 1.0))
    canvas = np.full_like(frame, 255)
    y, x = int(rng.integers(0, h - nh + 1)), int(rng.integers(0, w - nw + 1))
    canvas[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def print_view(image_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One print-like BGR camera frame of a data set image (uint8 C×H×W), drawn from ``rng``."""
    frame = to_frame(image_chw)
    if rng.random() < 0.4:
        frame = zoom_in(frame, rng)
    flat = rng.random() < 0.8
    if flat:
        frame = flat_background(cv2.GaussianBlur(frame, (3, 3), 0), rng)
    if rng.random() < 0.4:
        frame = posterize(frame, rng)
    if flat and rng.random() < 0.5:
        frame = shrink_on_white(frame, rng)
    return frame


def print_views(images: np.ndarray | torch.Tensor, image_size: int, in_channels: int, *, copies: int = 3,
                seed: int = SEED, camera: Sequence[str] = ()) -> torch.Tensor:
    """uint8 (copies, N, C, H, W) print-like views, each seen through a ``camera`` shift if given."""
    images = np.asarray(images)
    out = np.empty((copies, len(images), in_channels, image_size, image_size), np.uint8)
    for k in range(copies):
        for i, image in enumerate(images):
            rng = frame_rng(seed, "print", k, i)
            frame = print_view(image, rng)
            if camera:
                family = camera[int(rng.integers(len(camera)))]
                frame = FAMILIES[family].apply(frame, SEVERITIES[int(rng.integers(len(SEVERITIES)))], rng)
            out[k, i] = to_model_pixels(frame, image_size, in_channels)
    return torch.from_numpy(out)
