"""Camera-shift sets: what a printed or hand-drawn character looks like to a webcam, made deterministic."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

FRAME = 112  #: side of a camera frame in pixels (4 × 28): what the guide box holds before the model's resize
INTERPOLATIONS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True)
class Family:
    """One kind of camera shift: a name, what it imitates, its parameter per severity, and the function."""

    name: str
    imitates: str
    levels: tuple[str, str, str]  #: human-readable parameter at severities 1, 2, 3
    apply: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    same_draw: bool = False  #: every severity of an image uses the same random draw (only the method differs)


def background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A desk or sheet: a random flat colour with a linear light gradient and mild texture."""
    base = rng.uniform(40, 230, size=3)
    ramp = np.linspace(-1, 1, side)
    angle = rng.uniform(0, 2 * np.pi)
    grad = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])[..., None] * rng.uniform(10, 40)
    texture = rng.normal(0, 4, size=(side, side, 1))
    return np.clip(base[None, None, :] + grad + texture, 0, 255).astype(np.uint8)


def placement(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The print fills only part of the guide box, off centre, on a background."""
    side = frame.shape[0]
    lo, hi = ((0.85, 1.0), (0.7, 0.9), (0.55, 0.8))[severity - 1]
    size = int(round(side * rng.uniform(lo, hi)))
    out = background(rng, side)
    x, y = rng.integers(0, side - size + 1, size=2)
    out[y:y + size, x:x + size] = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return out


def perspective(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The print is seen at an angle: each corner moves by up to 6 / 12 / 18 % of the side."""
    side = frame.shape[0]
    d = (0.06, 0.12, 0.18)[severity - 1] * side
    src = np.float32([[0, 0], [side - 1, 0], [side - 1, side - 1], [0, side - 1]])
    dst = (src + rng.uniform(-d, d, size=(4, 2))).astype(np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(frame, m, (side, side), borderMode=cv2.BORDER_REPLICATE)


def defocus(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: a disk blur of radius 2 / 4 / 6 px on the 112-px frame."""
    r = (2, 4, 6)[severity - 1]
    disk = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    cv2.circle(disk, (r, r), r, 1.0, -1)
    return cv2.filter2D(frame, -1, disk / disk.sum(), borderType=cv2.BORDER_REPLICATE)


def motion(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A moving hand: a line blur of 7 / 13 / 21 px at a random angle."""
    n = (7, 13, 21)[severity - 1]
    kernel = np.zeros((n, n), np.float32)
    kernel[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (n, n))
    return cv2.filter2D(frame, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def lighting(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Exposure: brightness shifted and contrast scaled by up to 15 / 30 / 45 %."""
    s = (0.15, 0.30, 0.45)[severity - 1]
    contrast = 1 + rng.uniform(-s, s)
    brightness = 255 * rng.uniform(-s, s) / 1.5
    mean = frame.mean()
    return np.clip((frame.astype(np.float32) - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


def colour_temperature(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """White balance: blue and red gains moved in opposite directions by 10 / 20 / 30 % (warm or cool)."""
    t = (0.10, 0.20, 0.30)[severity - 1] * rng.choice([-1.0, 1.0])
    gains = np.array([1 - t, 1.0, 1 + t], np.float32)  # B, G, R
    return np.clip(frame.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def sensor_noise(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise: Gaussian, standard deviation 6 / 12 / 24 grey levels per channel."""
    sigma = (6, 12, 24)[severity - 1]
    return np.clip(frame.astype(np.float32) + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)


def jpeg(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """JPEG compression at quality 70 / 50 / 30."""
    q = (70, 50, 30)[severity - 1]
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def resample(frame: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A resize round trip: up 5–8× (bilinear), then to the frame with the severity's method."""
    method = list(INTERPOLATIONS.values())[severity - 1]
    small = cv2.resize(frame, (28, 28), interpolation=cv2.INTER_AREA)
    k = int(rng.integers(5, 9))
    big = cv2.resize(small, (28 * k, 28 * k), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(big, (frame.shape[1], frame.shape[0]), interpolation=method)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("placement", "print fills part of the box, off centre, on a desk or sheet", ("85–100 % of the box", "70–90 %", "55–80 %"), placement),
    Family("perspective", "print held at an angle", ("corners ±6 %", "±12 %", "±18 %"), perspective),
    Family("defocus", "camera out of focus", ("disk radius 2 px", "4 px", "6 px"), defocus),
    Family("motion", "hand or camera moving", ("7 px line", "13 px", "21 px"), motion),
    Family("lighting", "exposure, room light", ("±15 %", "±30 %", "±45 %"), lighting),
    Family("colour_temperature", "white balance, warm or cool light", ("±10 % B/R gain", "±20 %", "±30 %"), colour_temperature),
    Family("sensor_noise", "low light, small sensor", ("σ 6", "σ 12", "σ 24"), sensor_noise),
    Family("jpeg", "compressed stream or photo", ("quality 70", "50", "30"), jpeg),
    Family("resample", "resize pipelines (5–8× up, then down)", ("area", "bilinear", "nearest"), resample, same_draw=True),
)}
SEVERITIES = (1, 2, 3)


def family_table() -> pd.DataFrame:
    """The documented shift families: what each imitates and its parameter at each severity."""
    return pd.DataFrame([{"family": f.name, "imitates": f.imitates, **{f"severity {s}": f.levels[s - 1] for s in SEVERITIES}}
                         for f in FAMILIES.values()]).set_index("family")


def to_frame(image_chw: np.ndarray, side: int = FRAME) -> np.ndarray:
    """A data set image (uint8 C×H×W, RGB or gray) as a BGR frame of ``side`` px (nearest-neighbour enlarged)."""
    arr = np.asarray(image_chw)
    bgr = cv2.cvtColor(arr[0], cv2.COLOR_GRAY2BGR) if arr.shape[0] == 1 else cv2.cvtColor(arr.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(cv2.resize(bgr, (side, side), interpolation=cv2.INTER_NEAREST))


def frame_rng(seed: int, family: str, severity: int, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{family}/{severity}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def shifted_frames(images: Sequence[np.ndarray] | np.ndarray, family: str, severity: int, *, seed: int = 0,
                   indices: Sequence[int] | None = None) -> list[np.ndarray]:
    """Frames of ``images`` (uint8 C×H×W) under one shift; image ``i`` is drawn from its own seeded generator."""
    if family not in FAMILIES:
        raise ValueError(f"unknown shift family {family!r}; known: {sorted(FAMILIES)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity}")
    fam = FAMILIES[family]
    key = 0 if fam.same_draw else severity
    indices = range(len(images)) if indices is None else indices
    return [fam.apply(to_frame(np.asarray(images[k])), severity, frame_rng(seed, family, key, int(k))) for k in indices]


def frames_hash(frames: Sequence[np.ndarray]) -> str:
    """SHA-256 over the frames' pixels and shapes (to show two builds are identical)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(str(f.shape).encode())
        h.update(np.ascontiguousarray(f).tobytes())
    return h.hexdigest()


KINDS = ("empty desk", "flat colour", "uniform noise", "blurred noise", "Fashion-MNIST")
TRAIN_KINDS = ("shuffled tiles", "random shapes", "chest X-ray")
_FROM_IMAGES = ("Fashion-MNIST", "shuffled tiles", "chest X-ray")  #: kinds made from images passed in


def shuffled_tiles(image_chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image cut into a 4×4 … 7×7 grid of tiles, shuffled and re-flipped: its colours, none of its shapes."""
    frame = to_frame(image_chw)
    g = int(rng.choice([4, 7]))  # divides the 28-px grid of the source image
    t = frame.shape[0] // g
    tiles = [frame[r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(g) for c in range(g)]
    order = rng.permutation(len(tiles))
    rows = [np.concatenate([np.rot90(tiles[order[r * g + c]], int(rng.integers(4))) for c in range(g)], axis=1)
            for r in range(g)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def random_shapes(rng: np.random.Generator, side: int) -> np.ndarray:
    """One to six filled rectangles, ellipses or thick lines in random colours on a flat background."""
    out = np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (side, side, 3)).copy()
    for _ in range(int(rng.integers(1, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, side, size=4))
        kind = int(rng.integers(3))
        if kind == 0:
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, -1)
        elif kind == 1:
            cv2.ellipse(out, (x0, y0), (int(rng.integers(4, side // 2)), int(rng.integers(4, side // 2))),
                        float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            cv2.line(out, (x0, y0), (x1, y1), colour, int(rng.integers(3, 15)))
    return out


def _synthetic(kind: str, rng: np.random.Generator, side: int) -> np.ndarray:
    if kind == "empty desk":
        return background(rng, side)
    if kind == "flat colour":
        return np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (side, side, 3)).copy()
    noise = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    if kind == "uniform noise":
        return noise
    if kind == "blurred noise":
        return cv2.GaussianBlur(noise, (0, 0), sigmaX=float(rng.uniform(2, 8)))
    raise ValueError(f"unknown out-of-distribution kind {kind!r}; known: {KINDS + TRAIN_KINDS}")


def ood_frames(kind: str, n: int, *, seed: int = 0, images: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """``n`` frames of one kind without a character (image kinds take them from ``images``)."""
    if kind in _FROM_IMAGES and (images is None or len(images) < n):
        raise ValueError(f"{kind} frames need at least {n} images, got {0 if images is None else len(images)}")
    if kind in ("Fashion-MNIST", "chest X-ray"):
        return [to_frame(np.asarray(images[i])) for i in range(n)]
    if kind == "shuffled tiles":
        return [shuffled_tiles(np.asarray(images[i]), frame_rng(seed, f"ood/{kind}", 0, i)) for i in range(n)]
    if kind == "random shapes":
        return [random_shapes(frame_rng(seed, f"ood/{kind}", 0, i), FRAME) for i in range(n)]
    return [_synthetic(kind, frame_rng(seed, f"ood/{kind}", 0, i), FRAME) for i in range(n)]
