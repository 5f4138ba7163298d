"""From a camera frame to a prediction: preprocessing identical to training, top-3, annotation.

Training images are 28×28 RGB (or gray) ``uint8`` arrays scaled to 0..1 and normalised with the
training split's mean/std. A frame from OpenCV is BGR and of any size, so :func:`preprocess`
centre-crops it to a square, resizes it to the model's input size (area interpolation), converts
BGR to RGB (or to gray), then applies exactly the training normalisation stored in the checkpoint.
A 28×28 frame therefore yields exactly the tensor the training code would have built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from helpers import paths
from helpers.checkpoints import Checkpoint, CheckpointError, load_checkpoint


def center_crop_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of an (H, W[, C]) image."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frame[top : top + side, left : left + side]


def to_model_pixels(frame_bgr: np.ndarray, image_size: int, in_channels: int) -> np.ndarray:
    """Crop, resize and colour-convert a BGR frame: ``uint8`` (C, size, size), RGB or gray."""
    square = center_crop_square(frame_bgr)
    if square.shape[0] != image_size:
        square = cv2.resize(square, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if in_channels == 1:
        gray = square if square.ndim == 2 else cv2.cvtColor(square, cv2.COLOR_BGR2GRAY)
        return gray[None]
    if square.ndim == 2:
        square = cv2.cvtColor(square, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(square, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


def preprocess(frame_bgr: np.ndarray, image_size: int, in_channels: int, mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """A BGR frame as the normalised float32 (C, H, W) array the model was trained on."""
    pixels = to_model_pixels(frame_bgr, image_size, in_channels).astype(np.float32) / 255.0
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (pixels - m) / s


def to_bgr_frame(image_chw: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """A data set image (uint8 C×H×W, RGB or gray) as an OpenCV BGR frame, optionally enlarged
    ``scale`` times with nearest-neighbour (so that area resizing recovers it exactly)."""
    arr = image_chw.numpy() if isinstance(image_chw, torch.Tensor) else np.asarray(image_chw)
    frame = cv2.cvtColor(arr[0], cv2.COLOR_GRAY2BGR) if arr.shape[0] == 1 else cv2.cvtColor(arr.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
    if scale > 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(frame)


@dataclass
class Prediction:
    """Class probabilities of one frame and its top three classes."""

    probabilities: np.ndarray
    top: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]


class Predictor:
    """A trained checkpoint wrapped for frames: ``predict(frame_bgr) -> Prediction``."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.model = checkpoint.model.to(self.device).eval()
        self.classes = checkpoint.classes

    @classmethod
    def from_checkpoint(cls, path: Path, device: str | torch.device = "cpu") -> Predictor:
        """Load ``path`` (raises :class:`CheckpointError` with the reason if it is not usable)."""
        return cls(load_checkpoint(path, device), device)

    def tensor(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocessed frames as one (N, C, H, W) tensor."""
        c = self.checkpoint
        batch = np.stack([preprocess(f, c.image_size, c.in_channels, c.mean, c.std) for f in frames])
        return torch.from_numpy(batch).to(self.device)

    @torch.inference_mode()
    def predict_many(self, frames: Sequence[np.ndarray], k: int = 3) -> list[Prediction]:
        """Predictions for several frames at once."""
        probs = torch.softmax(self.model(self.tensor(frames)).float(), dim=1).cpu().numpy()
        return [self._prediction(p, k) for p in probs]

    def predict(self, frame: np.ndarray, k: int = 3) -> Prediction:
        """Top-``k`` prediction for one BGR frame."""
        return self.predict_many([frame], k)[0]

    def _prediction(self, probs: np.ndarray, k: int) -> Prediction:
        order = np.argsort(-probs)[:k]
        return Prediction(probs, [(self.classes[i], float(probs[i])) for i in order])


def annotate(frame_bgr: np.ndarray, prediction: Prediction, fps: float | None = None) -> np.ndarray:
    """A copy of the frame with the top-3 labels, confidence bars and an FPS counter drawn on it."""
    out = frame_bgr.copy()
    if out.shape[0] < 240:  # tiny frames (e.g. 28x28): enlarge so the text is readable
        scale = int(np.ceil(240 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = out.shape[:2]
    panel_w = min(w, 330)
    overlay = out.copy()
    cv2.rectangle(overlay, (0, 0), (panel_w, 30 + 26 * len(prediction.top)), (0, 0, 0), -1)
    out = cv2.addWeighted(overlay, 0.55, out, 0.45, 0)
    for i, (name, p) in enumerate(prediction.top):
        y = 24 + 26 * i
        bar = int((panel_w - 120) * p)
        color = (80, 220, 80) if i == 0 else (200, 200, 200)
        cv2.rectangle(out, (110, y - 14), (110 + bar, y + 2), color, -1)
        cv2.putText(out, f"{p * 100:5.1f}%", (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        cv2.putText(out, name.replace("_", " ")[:24], (114, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)
    if fps is not None:
        cv2.putText(out, f"{fps:4.1f} FPS", (w - 100, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def default_checkpoint(budget: str = "full") -> Path:
    """The tuned Simpsons-MNIST checkpoint (notebook 03), else the baseline one (notebook 02)."""
    models = paths.Outputs.for_budget(budget).models
    for name in ("simpsons_tuned.pt", "baseline_simpsons.pt"):
        if (models / name).exists():
            return models / name
    raise CheckpointError(
        f"no Simpsons-MNIST model in {models}: run notebook 03 (tuned model) or 02 (baseline), "
        f"e.g. `make report`, or pass --checkpoint"
    )
