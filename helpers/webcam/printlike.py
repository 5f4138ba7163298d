"""Views that make a show frame look like a print or a drawing held up to the camera."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from helpers.webcam.inference import to_model_pixels
from helpers.webcam.shifts import FAMILIES, SEVERITIES, background, frame_rng, to_frame

SEED = 2000  #: seed of the print views (the camera views use 1000, evaluation sets 0)


def border_mask(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The regions connected to ``frame``'s border within a colour tolerance of 6-27 (bool, H×W): its flat
    background, with the character left out."""
    work = frame.copy()
    h, w = work.shape[:2]
    tol = (int(rng.integers(6, 28)),) * 3
    mask = np.zeros((h + 2, w + 2), np.uint8)
    seeds = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, 0), (0, h // 2), (w - 1, h // 2)]
    for _ in range(int(rng.integers(4, 12))):  # a few more points on the top and side edges
        side = int(rng.integers(3))
        t = int(rng.integers(0, w))  # along the top edge; scaled to the height on the side edges
        seeds.append([(t, 0), (0, t * h // w), (w - 1, t * h // w)][side])
    for x, y in seeds:
        if not mask[y + 1, x + 1]:  # not already filled
            cv2.floodFill(work, mask, (x, y), (255, 255, 255), tol, tol, 4 | cv2.FLOODFILL_FIXED_RANGE)
    return mask[1:-1, 1:-1].astype(bool)


def flat_background(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``frame`` with its :func:`border_mask` filled white."""
    out = frame.copy()
    out[border_mask(frame, rng)] = 255
    return out


def card_surface(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A surface behind a held-up character: white paper, a flat card colour, textured paper or a blurred
    desk (BGR, H×W×3)."""
    kind = rng.choice(["white", "card", "paper", "desk"], p=[0.25, 0.35, 0.2, 0.2])
    if kind == "desk":
        return cv2.GaussianBlur(background(rng, max(h, w))[:h, :w], (0, 0), float(rng.uniform(2, 6)))
    if kind == "white":
        colour = np.full(3, rng.uniform(225, 255))
    elif kind == "card":  # any hue, from pastel to strong, light to mid-dark
        hsv = np.uint8([[[rng.uniform(0, 180), rng.uniform(50, 230), rng.uniform(110, 255)]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)
    else:
        colour = rng.uniform(120, 250, 3)
    surface = np.broadcast_to(colour, (h, w, 3)).astype(np.float64)
    if kind == "paper":  # fibres: a fine noise, smoothed a little
        surface = surface + cv2.GaussianBlur(rng.normal(0, 12, (h, w, 1)), (0, 0), 0.8)[..., None]
    return np.clip(surface, 0, 255).astype(np.uint8)


def held_light(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The light a card held up to a camera gets: a brightness gradient across it and a soft shadow at one edge."""
    h, w = frame.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * np.linspace(-1, 1, w)[None, :] + np.sin(angle) * np.linspace(-1, 1, h)[:, None]
    light = 1 + ramp * rng.uniform(0.05, 0.2)
    edge = int(rng.integers(4))
    depth = rng.uniform(0.1, 0.3) * (w if edge < 2 else h)
    dist = [np.arange(w)[None, :], np.arange(w)[::-1][None, :], np.arange(h)[:, None], np.arange(h)[::-1][:, None]][edge]
    light = light * (1 - rng.uniform(0.2, 0.45) * np.clip(1 - dist / depth, 0, 1))
    return np.clip(frame.astype(np.float64) * light[..., None], 0, 255).astype(np.uint8)


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


def shrink_on_white(frame: np.ndarray, rng: np.random.Generator, surface: np.ndarray | None = None) -> np.ndarray:
    """``frame`` scaled to 55-95 % of its height (and up to 20 % narrower) at a random place on white (or on
    ``surface``)."""
    h, w = frame.shape[:2]
    s = float(rng.uniform(0.55, 0.95))
    nh, nw = int(h * s), int(w * s * rng.uniform(0.8, 1.0))
    canvas = np.full_like(frame, 255) if surface is None else surface.copy()
    y, x = int(rng.integers(0, h - nh + 1)), int(rng.integers(0, w - nw + 1))
    canvas[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return canvas


def print_view(image_chw: np.ndarray, rng: np.random.Generator, cards: bool = False) -> np.ndarray:
    """One print-like BGR camera frame of a data set image (uint8 C×H×W), drawn from ``rng``; with ``cards``,
    the character stands on a card of any colour, textured paper or a blurred desk, lit as a held-up card."""
    frame = to_frame(image_chw)
    if rng.random() < 0.4:
        frame = zoom_in(frame, rng)
    flat = rng.random() < 0.8
    surface = card_surface(rng, *frame.shape[:2]) if cards else None  # one card behind the character
    if flat:
        frame = cv2.GaussianBlur(frame, (3, 3), 0)
        if surface is not None:
            mask = border_mask(frame, rng)
            frame[mask] = surface[mask]
        else:
            frame = flat_background(frame, rng)
    if rng.random() < 0.4:
        frame = posterize(frame, rng)
    if flat and rng.random() < 0.5:
        frame = shrink_on_white(frame, rng, surface)
    return held_light(frame, rng) if cards else frame


def print_views(images: np.ndarray | torch.Tensor, image_size: int, in_channels: int, *, copies: int = 3,
                seed: int = SEED, camera: Sequence[str] = (), cards: bool = False) -> torch.Tensor:
    """uint8 (copies, N, C, H, W) print-like views (on cards of any colour with ``cards``), each seen through a
    ``camera`` shift if given."""
    images = np.asarray(images)
    out = np.empty((copies, len(images), in_channels, image_size, image_size), np.uint8)
    for k in range(copies):
        for i, image in enumerate(images):
            rng = frame_rng(seed, "print-card" if cards else "print", k, i)
            frame = print_view(image, rng, cards)
            if camera:
                family = camera[int(rng.integers(len(camera)))]
                frame = FAMILIES[family].apply(frame, SEVERITIES[int(rng.integers(len(SEVERITIES)))], rng)
            out[k, i] = to_model_pixels(frame, image_size, in_channels)
    return torch.from_numpy(out)
