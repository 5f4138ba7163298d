"""From a camera frame to a prediction: preprocessing identical to training, top-3, "not sure", annotation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from helpers import paths
from helpers.checkpoints import Checkpoint, CheckpointError, check_metadata, load_checkpoint
from helpers.paths import shown
from helpers.webcam import shipped
from helpers.webcam.calibration import Calibration, calibration_path, softmax
from helpers.webcam.camera import one_line

NOT_SURE = "not sure"


def guide_box(height: int, width: int) -> tuple[int, int, int]:
    """The region that is cropped and classified: (left, top, side) of the largest centred square."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def center_crop_square(frame: np.ndarray) -> np.ndarray:
    """The guide box of an (H, W[, C]) image: its largest centred square."""
    left, top, side = guide_box(*frame.shape[:2])
    return frame[top : top + side, left : left + side]


#: How a frame becomes the square the model sees: ``crop`` its largest centred square (the live guide box),
#: or ``pad`` it to a square on white (a photo of a whole print or drawing: nothing is cut off).
FITS = ("crop", "pad")


#: The longest side an image is worked on at (larger ones are shrunk first): a 1 x 100,000 image padded to a
#: square would otherwise need 30 GB.
MAX_SIDE = 4096


def bounded(frame: np.ndarray, longest: int = MAX_SIDE) -> np.ndarray:
    """``frame`` shrunk (area-averaged, aspect kept, at least 1 px a side) so its longest side is at most ``longest``."""
    h, w = frame.shape[:2]
    if max(h, w) <= longest:
        return frame
    scale = longest / max(h, w)
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def pad_square(frame: np.ndarray, fill: int = 255) -> np.ndarray:
    """An (H, W[, C]) image centred on a square of side max(H, W) filled with ``fill`` (white), size bounded first."""
    frame = bounded(frame)
    h, w = frame.shape[:2]
    side = max(h, w)
    out = np.full((side, side) + frame.shape[2:], fill, dtype=frame.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = frame
    return out


def fit_square(frame: np.ndarray, fit: str = "crop") -> np.ndarray:
    """The square of ``frame`` the model sees, by ``fit`` (:data:`FITS`)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    return center_crop_square(frame) if fit == "crop" else pad_square(frame)


def to_model_pixels(frame_bgr: np.ndarray, image_size: int, in_channels: int, fit: str = "crop") -> np.ndarray:
    """Crop (or pad, ``fit``), resize and colour-convert a BGR frame: ``uint8`` (C, size, size), RGB or gray."""
    square = fit_square(frame_bgr, fit)
    if square.shape[0] != image_size:
        square = cv2.resize(square, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if in_channels == 1:
        gray = square if square.ndim == 2 else cv2.cvtColor(square, cv2.COLOR_BGR2GRAY)
        return gray[None]
    if square.ndim == 2:
        square = cv2.cvtColor(square, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(square, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 model pixels, (C, H, W) or (N, C, H, W), as the normalised float32 the model was trained on."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (np.asarray(pixels).astype(np.float32) / 255.0 - m) / s


def preprocess(frame_bgr: np.ndarray, image_size: int, in_channels: int, mean: Sequence[float],
               std: Sequence[float]) -> np.ndarray:
    """A BGR frame as the normalised float32 (C, H, W) array the model was trained on."""
    return normalise(to_model_pixels(frame_bgr, image_size, in_channels), mean, std)


def to_bgr_frame(image_chw: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """A data set image (uint8 C×H×W) as a BGR frame, optionally enlarged ``scale``× (nearest)."""
    arr = image_chw.numpy() if isinstance(image_chw, torch.Tensor) else np.asarray(image_chw)
    frame = cv2.cvtColor(arr[0], cv2.COLOR_GRAY2BGR) if arr.shape[0] == 1 else cv2.cvtColor(arr.transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
    if scale > 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(frame)


@dataclass
class Prediction:
    """Class probabilities of one frame, its top three classes, and whether it is confident enough."""

    probabilities: np.ndarray
    top: list[tuple[str, float]]
    sure: bool = True  #: False when the top-1 confidence is below the calibrated threshold

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]

    @property
    def shown(self) -> str:
        """What the demo says: the top-1 class, or "not sure"."""
        return self.label if self.sure else NOT_SURE


class _Base:
    """Shared by the PyTorch and ONNX predictors: preprocessing, calibration, top-k."""

    classes: list[str]
    image_size: int
    in_channels: int
    mean: Sequence[float]
    std: Sequence[float]
    calibration: Calibration | None
    fit: str = "crop"  #: how a frame becomes the model's square (:data:`FITS`); the photo command line pads

    def pixels(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Frames cropped (or padded), resized and colour-converted as the model sees them: uint8 (N, C, H, W)."""
        if not len(frames):
            return np.zeros((0, self.in_channels, self.image_size, self.image_size), np.uint8)
        return np.stack([to_model_pixels(f, self.image_size, self.in_channels, self.fit) for f in frames])

    def batch(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocessed frames as one float32 (N, C, H, W) array."""
        return normalise(self.pixels(frames), self.mean, self.std)

    def logits_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Raw logits, shape (N, classes), of model pixels (:meth:`pixels`), in chunks of 512."""
        raise NotImplementedError

    def logits_many(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Raw logits, shape (N, classes), of BGR frames (preprocessed as in training)."""
        return self.logits_pixels(self.pixels(frames))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of model pixels, temperature-scaled when calibrated."""
        probs = softmax(self.logits_pixels(pixels), self.calibration.temperature if self.calibration else 1.0)
        if not np.isfinite(probs).all():  # a damaged model: NaN is no answer (and no valid JSON either)
            raise CheckpointError("the model gave scores that are not numbers (NaN or infinite): the model file is "
                                  "damaged or was not trained by this project; export or train it again")
        return probs

    def sure(self, probs: np.ndarray) -> np.ndarray:
        """Which answers are confident enough to name a class (all of them when not calibrated)."""
        return self.calibration.sure(probs) if self.calibration else np.ones(len(probs), bool)

    def predict_many(self, frames: Sequence[np.ndarray], k: int = 3) -> list[Prediction]:
        """Predictions for several frames at once (temperature-scaled and thresholded if calibrated)."""
        probs = self.probabilities(self.pixels(frames))
        return [self.prediction(p, bool(ok), k) for p, ok in zip(probs, self.sure(probs))]

    def predict(self, frame: np.ndarray, k: int = 3) -> Prediction:
        """Top-``k`` prediction for one BGR frame."""
        return self.predict_many([frame], k)[0]

    def model_view(self, frame: np.ndarray) -> np.ndarray:
        """The guide box as the model sees it: ``image_size`` px, BGR, for the inset."""
        pixels = to_model_pixels(frame, self.image_size, self.in_channels, self.fit)
        return to_bgr_frame(pixels)

    def prediction(self, probs: np.ndarray, sure: bool, k: int = 3) -> Prediction:
        """A :class:`Prediction` from class probabilities (one frame's, or several frames' mean)."""
        order = np.argsort(-probs)[:k]
        return Prediction(probs, [(self.classes[i], float(probs[i])) for i in order], sure)


def check_calibration(calibration: Calibration | None, classes: Sequence[str], where: str) -> Calibration | None:
    """``calibration`` if its threshold can say "not sure" for these classes; CheckpointError otherwise."""
    if calibration is not None and calibration.threshold <= 1 / len(classes):
        raise CheckpointError(f"{where}: the 'not sure' threshold {calibration.threshold:g} is at or below "
                              f"1/{len(classes)}, the least a top-1 probability can be, so every answer would be "
                              f"sure; calibrate the model again (notebook 06)")
    return calibration


class Predictor(_Base):
    """A trained checkpoint wrapped for frames: ``predict(frame_bgr) -> Prediction``."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu",
                 calibration: Calibration | None = None) -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.model = checkpoint.model.to(self.device).eval()
        self.classes = checkpoint.classes
        self.image_size, self.in_channels = checkpoint.image_size, checkpoint.in_channels
        self.mean, self.std = checkpoint.mean, checkpoint.std
        self.calibration = check_calibration(calibration, self.classes, shown(calibration_path(checkpoint.path)))

    @classmethod
    def from_checkpoint(cls, path: Path, device: str | torch.device = "cpu", calibrated: bool = True) -> Predictor:
        """Load ``path`` (CheckpointError if unusable) and, if ``calibrated``, its calibration."""
        cal_file = calibration_path(path)
        calibration = Calibration.load(cal_file) if calibrated and cal_file.exists() else None
        return cls(load_checkpoint(path, device), device, calibration)

    def tensor(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocessed frames as one (N, C, H, W) tensor."""
        return torch.from_numpy(self.batch(frames)).to(self.device)

    @torch.inference_mode()
    def logits_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = [self.model(torch.from_numpy(normalise(pixels[i:i + 512], self.mean, self.std)).to(self.device))
               .float().cpu().numpy() for i in range(0, len(pixels), 512)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


class OnnxPredictor(_Base):
    """The exported ONNX model (``helpers.webcam.export``) run by OpenCV's ``dnn`` module, as on the Jetson."""

    def __init__(self, onnx_path: Path) -> None:
        onnx_path = Path(onnx_path)
        meta_path = onnx_path.with_suffix(".json")
        if not onnx_path.is_file() or not meta_path.is_file():
            raise CheckpointError(f"{shown(onnx_path)}: an ONNX model needs the file and its .json beside it; "
                                  f"make both with `python -m helpers.webcam.export`")
        where = shown(onnx_path)
        try:
            meta = json.loads(meta_path.read_bytes())
            # read as bytes: OpenCV crashes on a file name that is not valid UTF-8
            self.net = cv2.dnn.readNetFromONNX(np.frombuffer(onnx_path.read_bytes(), np.uint8))
        except (ValueError, cv2.error) as exc:
            raise CheckpointError(f"{where} is not a usable ONNX model of this project: "
                                  f"{one_line(exc.err if isinstance(exc, cv2.error) else exc)}") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{shown(meta_path)} holds a JSON {type(meta).__name__}, not the model's metadata "
                                  f"object; export the model again")
        self.meta = meta
        self.classes, self.image_size, self.in_channels, self.mean, self.std = check_metadata(
            where, meta.get("classes"), meta.get("image_size"), meta.get("in_channels"), meta.get("mean"),
            meta.get("std"))
        cal = meta.get("calibration")
        where_cal = f"the calibration in {shown(meta_path)}"
        calibration = Calibration.from_dict(cal, where_cal) if cal else None
        try:  # one blank input: does the network take the metadata's input and give one score per class?
            self.net.setInput(np.zeros((1, self.in_channels, self.image_size, self.image_size), np.float32))
            outputs = int(np.asarray(self.net.forward()).size)
        except cv2.error as exc:
            raise CheckpointError(f"{where}: the network does not take the {self.in_channels}x{self.image_size}x"
                                  f"{self.image_size} input its metadata names ({one_line(exc.err)}); export it again") from None
        check_metadata(where, self.classes, self.image_size, self.in_channels, self.mean, self.std, outputs=outputs)
        self.calibration = check_calibration(calibration, self.classes, where_cal)

    def logits_pixels(self, pixels: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(pixels), 512):
            blob = normalise(pixels[i:i + 512], self.mean, self.std)
            self.net.setInput(blob)
            out.append(self.net.forward().reshape(len(blob), -1))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)


def load_predictor(path: Path, device: str | torch.device = "cpu") -> Predictor | OnnxPredictor:
    """A :class:`Predictor` for a ``.pt`` checkpoint, an :class:`OnnxPredictor` for an ``.onnx`` file."""
    path = Path(path)
    shipped.check_loaded(path)  # the committed model: every file the loader reads, against models/SHA256SUMS
    return OnnxPredictor(path) if path.suffix == ".onnx" else Predictor.from_checkpoint(path, device)


def _text(img: np.ndarray, text: str, org: tuple[int, int], size: float, color: tuple[int, int, int],
          weight: int = 1) -> None:
    """Text with a dark outline, readable on any background (a bar, a bright frame)."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), weight + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, color, weight, cv2.LINE_AA)


def annotate(frame_bgr: np.ndarray, prediction: Prediction, fps: float | None = None,
             inset: np.ndarray | None = None, fit: str = "crop") -> np.ndarray:
    """The frame with the guide box, top-3 bars (or "not sure"), FPS and the model's view inset."""
    out = bounded(frame_bgr).copy()
    if out.shape[0] < 360:  # small frames (e.g. 112 px): enlarge so the text is readable, never past MAX_SIDE
        scale = max(1, min(int(np.ceil(360 / out.shape[0])), MAX_SIDE // out.shape[1]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = out.shape[:2]
    left, top, side = guide_box(h, w)
    right, bottom = (w - 1, h - 1) if fit == "pad" else (left + side - 1, top + side - 1)
    left, top = (0, 0) if fit == "pad" else (left, top)
    box_colour = (80, 220, 80) if prediction.sure else (0, 200, 255)
    cv2.rectangle(out, (left, top), (right, bottom), box_colour, 3)
    panel_w = min(w, 360)
    rows = len(prediction.top) + (0 if prediction.sure else 1)
    overlay = out.copy()
    cv2.rectangle(overlay, (0, 0), (panel_w, 30 + 28 * rows), (0, 0, 0), -1)
    out = cv2.addWeighted(overlay, 0.75, out, 0.25, 0)
    y0 = 26
    if not prediction.sure:
        _text(out, f"{NOT_SURE} (top {100 * prediction.confidence:.0f}%)", (8, y0), 0.7, (0, 200, 255), 2)
        y0 += 28
    for i, (name, p) in enumerate(prediction.top):
        y = y0 + 28 * i
        bar = int((panel_w - 124) * p)
        color = (80, 220, 80) if i == 0 and prediction.sure else (170, 170, 170)
        size = 0.6 if prediction.sure else 0.5  # when not sure, the top 3 stay listed, smaller
        cv2.rectangle(out, (114, y - 16), (114 + bar, y + 3), tuple(c // 2 for c in color), -1)  # a darker bar
        _text(out, f"{p * 100:5.1f}%", (8, y), size, color)
        _text(out, name.replace("_", " ")[:24], (118, y), size, (255, 255, 255))
    if inset is not None:
        k = max(1, min(h, w) // (4 * inset.shape[0]))
        big = cv2.resize(inset, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
        ih, iw = big.shape[:2]
        if ih + 10 < h and iw + 10 < w:
            out[h - ih - 5:h - 5, 5:5 + iw] = big
            cv2.rectangle(out, (4, h - ih - 6), (5 + iw, h - 4), (255, 255, 255), 1)
    if fps is not None:
        _text(out, f"{fps:4.1f} FPS", (w - 110, h - 12), 0.6, (0, 255, 255))
    return out


DEMO_CHOICE = "demo_model.json"  #: written by notebook 06 beside the models: which one the demo uses, and why


def demo_choice(budget: str = "full", shipped_model: Path | None = None) -> tuple[Path, str]:
    """The demo's model and why: notebook 06's choice on this machine, else the committed one."""
    models = paths.Outputs.for_budget(budget).models
    choice = models / DEMO_CHOICE
    if choice.is_file():
        try:
            raw = json.loads(choice.read_text())
            name, why = str(raw["checkpoint"]), str(raw["why"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{choice} is not a model choice of this project ({type(exc).__name__}: {exc}); "
                                  f"delete it or re-run notebook 06") from None
        if Path(name).name != name:
            raise CheckpointError(f"{choice} names {name!r}, not a file beside it; delete it or re-run notebook 06")
        if (models / name).is_file():
            return models / name, f"notebook 06's choice on this machine: {why}"
        lost = f"notebook 06 chose {name}, which is missing from {shown(models)} (re-run notebook 06)"
    else:
        lost = "notebook 06 has not run on this machine"
    committed = Path(shipped_model or shipped.checkpoint())
    if committed.is_file():
        return committed, f"the model committed in {shown(committed.parent)} (its README.md says how it was made; {lost})"
    raise CheckpointError(f"no demo model: {shown(committed)} is missing from this clone (restore it with "
                          f"`git checkout -- models/`) and {lost}; or pass a checkpoint with --model")


def write_demo_choice(models: Path, checkpoint: Path, why: str) -> Path:
    """Record which model (a file in ``models``) the demo uses, and why."""
    path = Path(models) / DEMO_CHOICE
    path.write_text(json.dumps({"checkpoint": Path(checkpoint).name, "why": why}, indent=2))
    return path
