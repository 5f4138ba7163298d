"""Frame sources over OpenCV's ``VideoCapture`` (the live demo itself is :mod:`helpers.webcam.live`)."""

from __future__ import annotations

import contextlib
import io
import platform
import queue
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from helpers.paths import shown, visible
from helpers.plumbing import WriteError

#: The image files the demo's folder source and the photo command read (others in a folder are not images).
PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

MAC_HINT = ("On macOS the app running Python (Terminal, iTerm, VS Code, JupyterLab's browser) needs Camera "
            "permission: System Settings > Privacy & Security > Camera; the first attempt often fails until "
            "permission is granted, then works.")
JETSON_HINT = ("On a Jetson Nano use --source csi for the ribbon-cable camera (needs JetPack's system OpenCV, "
               "built with GStreamer) or --source 0 for a USB webcam.")


def camera_hint(system: str, machine: str) -> str:
    """What to check when a camera does not open, for this platform only (``sys.platform``, ``platform.machine()``)."""
    if system == "darwin":
        return MAC_HINT
    if system.startswith("linux") and machine == "aarch64":
        return JETSON_HINT
    return "Check that a camera is connected and not in use by another program (try --source 1)."


class CameraError(RuntimeError):
    """A camera or stream that cannot be opened or stopped delivering frames."""

#: The largest image decoded at full size (about 8,000 x 6,000); a larger JPEG is decoded reduced, any other refused.
MAX_PIXELS = 50_000_000
_REDUCED = ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))


def one_line(text: object) -> str:
    """An OpenCV error text (often several lines, with source locations) as one line."""
    return " ".join(str(text).split())


def opencv_path(path: Path | str) -> str:
    """``path`` as a string OpenCV can take; ValueError for a name that is not valid UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{shown(path)}: the file name is not valid UTF-8, and OpenCV cannot open such a file; "
                         f"rename it") from None
    return text


@dataclass(frozen=True)
class Header:
    """What an image file's header says, read by Pillow without decoding the pixels."""
    size: tuple[int, int]  #: (width, height)
    frames: int = 1  #: more than 1 for an animation (GIF, APNG, WebP) or a multi-page TIFF
    orientation: int = 1  #: the EXIF orientation tag (1: upright; 6: saved on its side, as phones do)


def image_header(data: bytes) -> Header | None:
    """An image file's :class:`Header` (size, frames, EXIF orientation), or ``None`` if Pillow does not know it."""
    try:
        with warnings.catch_warnings():  # the size is judged here (MAX_PIXELS), not by Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                try:
                    orientation = int(im.getexif().get(_ORIENTATION, 1))
                except Exception:  # a damaged EXIF block: the pixels are still read, upright as stored
                    orientation = 1
                return Header(im.size, int(getattr(im, "n_frames", 1) or 1), orientation)
    except Image.DecompressionBombError as exc:  # Pillow refuses to even open very large images
        found = re.search(r"(\d+) pixels", str(exc))
        return Header((int(found.group(1)), 1) if found else (MAX_PIXELS + 1, 1))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


_ORIENTATION = 0x0112  #: the EXIF tag
#: EXIF orientation → how to turn the stored pixels upright, as a photo viewer does (Pillow's exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(np.swapaxes(a, 0, 1), 2), 8: lambda a: np.rot90(a, 1)}


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned as their EXIF ``orientation`` says (1 or unknown: unchanged)."""
    turn = _UPRIGHT.get(orientation)
    return np.ascontiguousarray(turn(image)) if turn else image


def read_image(path: Path | str, note: Callable[[str], None] | None = None) -> np.ndarray:
    """A BGR frame from an image file, read as bytes (any file name), upright; ValueError with the reason if none."""
    # ``note`` hears what is read differently from the file (an animation: its first frame only); default a warning
    path = Path(path)
    name = shown(path)
    if not path.exists():
        raise ValueError(f"{name}: " + ("a symbolic link that leads nowhere (a loop, or its target is gone)"
                                        if path.is_symlink() else "no such file"))
    if not path.is_file():
        raise ValueError(f"{name}: not a regular file (a folder, device or pipe); give an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    # keep the alpha channel (transparency is put on white below); the EXIF orientation is applied below, once
    flag = cv2.IMREAD_UNCHANGED
    header = image_header(data)
    if header is not None and header.size[0] * header.size[1] > MAX_PIXELS:
        pixels = header.size[0] * header.size[1]
        factor = next(((f, fl) for f, fl in _REDUCED if pixels / f**2 <= MAX_PIXELS), None)
        if not data.startswith(b"\xff\xd8") or factor is None:  # only JPEG decodes reduced without the full image
            raise ValueError(f"{name}: the image has {pixels / 1e6:,.0f} million pixels, over the "
                             f"{MAX_PIXELS / 1e6:.0f} million this reads; make a smaller copy of it first")
        flag = factor[1] | cv2.IMREAD_IGNORE_ORIENTATION
    try:  # quietly: a truncated file is reported once, below, not also by OpenCV's own log
        frame = _quietly(cv2.imdecode, np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        raise ValueError(f"{name}: OpenCV refused to decode it ({one_line(exc.err)})") from None
    if frame is None and flag == cv2.IMREAD_UNCHANGED:
        frame = _pillow_decode(data)  # formats OpenCV cannot read (GIF)
    if frame is None or frame.size == 0:
        raise ValueError(f"{name}: not a readable image (OpenCV could not decode its {len(data):,} bytes)")
    if header is not None and header.frames > 1:
        (note or (lambda text: warnings.warn(text, stacklevel=3)))(
            f"{name}: holds {header.frames} frames (an animation or a multi-page file); only the first is used")
    return upright(on_white(frame, name), header.orientation if header else 1)


def on_white(image: np.ndarray, name: str = "the image") -> np.ndarray:
    """A decoded image as 8-bit BGR: gray expanded, 16-bit and floating point scaled, transparency put on white."""
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype.kind == "f":  # 32-bit TIFF, Radiance .hdr: light as 0-1 (brighter for HDR), not 0-255
        finite = image[np.isfinite(image)]
        if not finite.size or finite.min() < 0:
            raise ValueError(f"{name}: its floating-point pixels are not light levels from 0 up (NaN or negative); "
                             f"save it as an 8-bit PNG or JPEG")
        top = max(1.0, float(finite.max()))  # HDR: brightest pixel → white
        image = np.clip(np.nan_to_num(image, nan=0.0) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: pixels of type {image.dtype} are not read; save it as an 8-bit PNG or JPEG")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        return (image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return image


def _pillow_decode(data: bytes) -> np.ndarray | None:
    """The first frame of an image Pillow reads and OpenCV does not (GIF), as BGRA; None if Pillow cannot either."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)
            rgba = np.asarray(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)


def write_image(path: Path | str, image: np.ndarray) -> Path:
    """Encode ``image`` by the file's suffix and write it (through bytes: any file name); OSError naming the file."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error as exc:
        raise ValueError(f"{shown(path)}: OpenCV cannot encode an image as {path.suffix!r} ({one_line(exc.err)})") from None
    if not ok:
        raise ValueError(f"{shown(path)}: OpenCV could not encode the image as {path.suffix!r}")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:  # e.g. a full disk: no empty or half frame is left behind
        with contextlib.suppress(OSError):
            path.unlink()
        raise WriteError(exc.errno, f"could not write {shown(path)} ({exc.strerror or exc})") from None
    return path


class FrameSource:
    """Yields BGR frames; :meth:`read` returns ``None`` when a finite source is exhausted."""
    name = "source"

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` (camera index, GStreamer pipeline or video file) with time limits."""
    def __init__(self, target: int | str, *, live: bool, api: int = cv2.CAP_ANY, open_timeout: float = 10.0,
                 frame_timeout: float = 3.0, properties: dict[int, float] | None = None,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture, name: str | None = None) -> None:
        self.name = name or (f"camera {target}" if live else shown(target))
        self.live, self.frame_timeout, self.frames_read = live, frame_timeout, 0
        cap = _with_timeout(lambda: _quietly(capture_factory, target, api), open_timeout)
        if cap is _TIMEOUT:
            raise CameraError(f"{self.name}: did not open within {open_timeout:g} s. {self._hints()}")
        if cap is None or not cap.isOpened():
            raise CameraError(f"{self.name}: could not be opened. {self._hints()}")
        for prop, value in (properties or {}).items():
            cap.set(prop, value)
        self.cap = cap

    def _hints(self) -> str:
        return camera_hint(sys.platform, platform.machine()) if self.live else \
            "Check the path and that OpenCV can decode the file."

    def read(self) -> np.ndarray | None:
        if not self.live:
            ok, frame = self.cap.read()
            return frame if ok else None
        result = _with_timeout(self.cap.read, self.frame_timeout)
        if result is _TIMEOUT:
            raise CameraError(f"{self.name} stopped delivering frames: none for {self.frame_timeout:g} s "
                              f"after {self.frames_read} frame(s)")
        ok, frame = result
        if not ok or frame is None:
            raise CameraError(f"{self.name} stopped delivering frames after {self.frames_read} frame(s)")
        self.frames_read += 1
        return frame

    def close(self) -> None:
        # release() can block on a dead camera too: never wait for it long
        _with_timeout(self.cap.release, 1.0)


def image_files(folder: Path) -> list[Path]:
    """A folder's images in name order: visible regular files with an image suffix (not ``._x.png``, not pipes)."""
    return sorted(p for p in Path(folder).iterdir()
                  if visible(p) and p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


class ImageFolderSource(FrameSource):
    """The images of a folder, in name order; unreadable files are skipped with a warning."""
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.name = shown(folder)
        self.files = image_files(self.folder)
        if not self.files:
            raise CameraError(f"{folder}: no images ({', '.join(sorted(PHOTO_SUFFIXES))}) in this folder")
        self._next, self.skipped = 0, 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                frame = read_image(path)
            except ValueError as exc:
                self.skipped += 1
                warnings.warn(f"skipping {exc}", stacklevel=2)
                continue
            return frame
        return None


class FallbackSource(FrameSource):
    """Reads from ``primary``; if it fails (now or later), says so and continues from the fallback."""
    def __init__(self, primary: Callable[[], FrameSource], fallback: Callable[[], FrameSource],
                 log: Callable[[str], None] = print) -> None:
        self._fallback, self._log = fallback, log
        self.used_fallback = False
        try:
            self.current = primary()
        except CameraError as exc:
            self._switch(exc)
        self.name = self.current.name

    def _switch(self, exc: CameraError) -> None:
        self.current = self._fallback()
        self.used_fallback = True
        self._log(f"{exc}\n-> falling back to {self.current.name}")

    def read(self) -> np.ndarray | None:
        try:
            return self.current.read()
        except CameraError as exc:
            if self.used_fallback:
                raise
            self.current.close()
            self._switch(exc)
            self.name = self.current.name
            return self.current.read()

    def close(self) -> None:
        self.current.close()


_TIMEOUT = object()


def _quietly(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` with OpenCV's own log silenced: a failed open is reported by CameraError instead."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return fn(*args)
    finally:
        logging.setLogLevel(level)


def _with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a daemon thread; its result, or ``_TIMEOUT`` if it did not return in time."""
    box: queue.Queue = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            box.put(("ok", fn()))
        except Exception as exc:  # surfaced in the caller's thread
            box.put(("error", exc))

    threading.Thread(target=run, daemon=True).start()
    try:
        kind, value = box.get(timeout=timeout)
    except queue.Empty:
        return _TIMEOUT
    if kind == "error":
        raise CameraError(str(value)) from value
    return value


def gstreamer_pipeline(sensor_id: int = 0, capture_width: int = 1280, capture_height: int = 720,
                       display_width: int = 640, display_height: int = 360, framerate: int = 30,
                       flip_method: int = 0) -> str:
    """The standard Jetson CSI-camera pipeline (``nvarguscamerasrc`` to BGR frames in ``appsink``)."""
    if not 0 <= flip_method <= 7:
        raise ValueError(f"flip_method must be 0..7, got {flip_method}")
    for name, value in (("capture_width", capture_width), ("capture_height", capture_height),
                        ("display_width", display_width), ("display_height", display_height), ("framerate", framerate)):
        if int(value) <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){capture_width}, height=(int){capture_height}, "
        f"framerate=(fraction){framerate}/1 ! "
        f"nvvidconv flip-method={flip_method} ! "
        f"video/x-raw, width=(int){display_width}, height=(int){display_height}, format=(string)BGRx ! "
        f"videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=1"
    )


def open_source(spec: str | int, *, fallback: str | None = None, width: int = 640, height: int = 480, fps: int = 30,
                flip: int = 0, open_timeout: float = 10.0, frame_timeout: float = 3.0,
                log: Callable[[str], None] = print) -> FrameSource:
    """Open ``spec``: a camera index (``0``), ``csi`` (Jetson), a video file or an image folder."""
    def primary() -> FrameSource:
        text = str(spec)
        if text == "csi":
            pipeline = gstreamer_pipeline(capture_width=max(width, 1280), capture_height=max(height, 720),
                                          display_width=width, display_height=height, framerate=fps, flip_method=flip)
            return CaptureSource(pipeline, live=True, api=cv2.CAP_GSTREAMER, open_timeout=open_timeout,
                                 frame_timeout=frame_timeout, name="CSI camera (GStreamer)")
        if text.isdigit():
            props = {cv2.CAP_PROP_FRAME_WIDTH: width, cv2.CAP_PROP_FRAME_HEIGHT: height, cv2.CAP_PROP_FPS: fps}
            return CaptureSource(int(text), live=True, open_timeout=open_timeout, frame_timeout=frame_timeout,
                                 properties=props)
        path = Path(text)
        if path.is_dir():
            return ImageFolderSource(path)
        if path.is_file():
            try:
                target = opencv_path(path)
            except ValueError as exc:
                raise CameraError(str(exc)) from None
            return CaptureSource(target, live=False, open_timeout=open_timeout)
        raise CameraError(f"{text!r} is neither a camera index, 'csi', a video file nor an image folder")

    if fallback is None:
        return primary()
    return FallbackSource(primary, lambda: open_source(fallback, open_timeout=open_timeout), log=log)


def snapshot_series(source: FrameSource, n: int, interval: float = 1.0, out_dir: Path | None = None) -> list[np.ndarray]:
    """Capture ``n`` stills ``interval`` seconds apart (fewer if the source ends); save as PNG if asked."""
    shots: list[np.ndarray] = []
    for i in range(n):
        if i and interval > 0:
            time.sleep(interval)
        frame = source.read()
        if frame is None:
            break
        shots.append(frame)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            write_image(Path(out_dir) / f"snapshot_{i:03d}.png", frame)
    return shots


def write_video(frames: list[np.ndarray], path: Path, fps: float = 5.0) -> Path:
    """Write BGR frames to a lossless FFV1 ``.avi`` (so pixels survive a round trip exactly)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(opencv_path(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise CameraError(f"cannot write video {path} (OpenCV lacks the FFV1 encoder)")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return Path(path)
