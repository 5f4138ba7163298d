#!/usr/bin/env python3
"""Live Simpsons-MNIST predictions with OpenCV's dnn module only (no PyTorch): for a Jetson Nano.

Needs only numpy and OpenCV, and runs on Python 3.6 (JetPack 4.6) with JetPack's system OpenCV
4.1.1, which is built with GStreamer and can therefore open the CSI camera (the pip wheel of
opencv-python cannot). Copy this file plus MODEL.onnx and MODEL.json (made by
``python -m helpers.webcam.export`` or notebook 06) to the Jetson and run:

    python3 webcam_onnx.py --model simpsons_tuned.onnx --source csi            # ribbon-cable camera
    python3 webcam_onnx.py --model simpsons_tuned.onnx --source 0              # USB webcam
    python3 webcam_onnx.py --model simpsons_tuned.onnx --source clip.avi --headless --out frames/

The answer shown is the mean of the last 5 frames' probabilities (``--smooth 1``: each frame alone),
restarted when the picture changes a lot, as in the laptop demo.

Keep this file standalone: it mirrors helpers.webcam.inference's preprocessing (guide box = centred square,
area resize, BGR to RGB, training mean/std), its calibration (temperature and "not sure" threshold
from MODEL.json), its overlay (guide box, model's-eye inset) and helpers.webcam.camera's GStreamer
pipeline, because the Jetson has neither PyTorch nor this project's package. Tests check both give
the same top-1 and the same "not sure" decisions.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import time

import cv2
import numpy as np


def gstreamer_pipeline(sensor_id=0, capture_width=1280, capture_height=720, display_width=640,
                       display_height=360, framerate=30, flip_method=0):
    """The standard nvarguscamerasrc pipeline ending in BGR frames for appsink."""
    return (
        "nvarguscamerasrc sensor-id={} ! "
        "video/x-raw(memory:NVMM), width=(int){}, height=(int){}, framerate=(fraction){}/1 ! "
        "nvvidconv flip-method={} ! "
        "video/x-raw, width=(int){}, height=(int){}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=1"
    ).format(sensor_id, capture_width, capture_height, framerate, flip_method, display_width, display_height)


def utf8_name(path):
    """``path`` if OpenCV can take it; SystemExit for a name that is not valid UTF-8 (OpenCV would crash on it)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise SystemExit("error: {}: the file name is not valid UTF-8, and OpenCV cannot open such a file; "
                         "rename it".format(path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")))
    return path


def read_net(onnx_path):
    """The network, read from bytes where this OpenCV can (any file name), else from the (UTF-8) path."""
    with open(onnx_path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    try:
        return cv2.dnn.readNetFromONNX(data)
    except (TypeError, cv2.error):  # an OpenCV without the buffer overload (or a damaged file: read again below)
        return cv2.dnn.readNetFromONNX(utf8_name(onnx_path))


def check_meta(meta, net, where):
    """Refuse (SystemExit, one line) metadata that does not describe the network: its input, classes, statistics."""
    def fail(what):
        return SystemExit("error: {}: {}; the model does not match its metadata, so it is not used (export it "
                          "again)".format(where, what))
    if not isinstance(meta, dict):
        raise fail("the .json holds a {}, not the metadata object".format(type(meta).__name__))
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise fail("'classes' must be a list of at least 2 names")
    try:
        size, channels = int(meta.get("image_size")), int(meta.get("in_channels"))
    except (TypeError, ValueError):
        raise fail("'image_size' and 'in_channels' must be whole numbers")
    if not 8 <= size <= 1024 or channels not in (1, 3):
        raise fail("'image_size' must be 8..1024 and 'in_channels' 1 or 3")
    for name in ("mean", "std"):
        value = meta.get(name)
        if not isinstance(value, list) or len(value) != channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value) or (
                name == "std" and min(value) <= 0):
            raise fail("'{}' must be {} finite number(s)".format(name, channels))
    cal = meta.get("calibration") or {}
    if not isinstance(cal, dict) or set(cal) - {"temperature", "threshold", "keep", "fitted_on"}:
        raise fail("'calibration' must be an object with temperature, threshold, keep and fitted_on")
    if cal:
        try:
            t, th = float(cal["temperature"]), float(cal["threshold"])
        except (KeyError, TypeError, ValueError):
            raise fail("the calibration needs a numeric temperature and threshold")
        if not (np.isfinite(t) and t > 0 and np.isfinite(th) and 0 <= th <= 1):
            raise fail("the calibration temperature must be above 0 and its threshold from 0 to 1")
    try:
        net.setInput(np.zeros((1, channels, size, size), np.float32))
        outputs = int(np.asarray(net.forward()).size)
    except cv2.error as exc:
        raise fail("the network does not take the {}x{}x{} input the metadata names ({})".format(
            channels, size, size, " ".join(str(exc.err).split())))
    if outputs != len(classes):
        raise fail("the network gives {} scores but the metadata names {} classes".format(outputs, len(classes)))


def check_sums(*files):
    """Refuse (SystemExit) files that a SHA256SUMS beside them lists with another sha256 (the committed model)."""
    sums = os.path.join(os.path.dirname(os.path.abspath(files[0])), "SHA256SUMS")
    if not os.path.isfile(sums):
        return
    with open(sums, "rb") as f:
        listed = dict(reversed(line.split("  ", 1)) for line in f.read().decode("utf-8").splitlines() if "  " in line)
    for path in files:
        name = os.path.basename(path)
        if name in listed:
            with open(path, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != listed[name]:
                    raise SystemExit("error: {} does not match its sha256 in {}: it was changed or damaged since it "
                                     "was written; copy it again".format(path, sums))


def load_model(onnx_path):
    """(cv2.dnn network, metadata dict) from MODEL.onnx and MODEL.json beside it, checked against each other."""
    meta_path = os.path.splitext(onnx_path)[0] + ".json"
    if not os.path.isfile(onnx_path):
        raise SystemExit("error: no model at {}".format(onnx_path))
    if not os.path.isfile(meta_path):
        raise SystemExit("error: {} is missing; export the model again to get it".format(meta_path))
    try:
        with open(meta_path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except ValueError as exc:
        raise SystemExit("error: {} is not valid JSON ({})".format(meta_path, exc))
    check_sums(onnx_path, meta_path)
    try:
        net = read_net(onnx_path)
    except cv2.error as exc:
        raise SystemExit("error: OpenCV cannot read {} ({})".format(onnx_path, " ".join(str(exc.err).split())))
    check_meta(meta, net, onnx_path)
    return net, meta


def write_frame(path, image):
    """Encode and write one PNG through bytes (any file name); SystemExit naming the file when it fails."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise SystemExit("error: OpenCV could not encode a frame for {}".format(path))
    try:
        with open(path, "wb") as f:
            f.write(encoded.tobytes())
    except (IOError, OSError) as exc:
        try:  # e.g. a full disk: no empty or half frame is left behind
            os.remove(path)
        except OSError:
            pass
        raise SystemExit("error: could not write {} ({})".format(path, exc.strerror or exc))


def guide_box(h, w):
    """(left, top, side) of the largest centred square: the region that is classified."""
    side = min(h, w)
    return (w - side) // 2, (h - side) // 2, side


def preprocess(frame_bgr, meta):
    """Guide-box crop, resize, colour conversion and normalisation exactly as in training: (C, H, W) float32."""
    left, top, side = guide_box(*frame_bgr.shape[:2])
    square = frame_bgr[top:top + side, left:left + side]
    size = int(meta["image_size"])
    if square.shape[0] != size:
        square = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    if int(meta["in_channels"]) == 1:
        pixels = (square if square.ndim == 2 else cv2.cvtColor(square, cv2.COLOR_BGR2GRAY))[None]
    else:
        if square.ndim == 2:
            square = cv2.cvtColor(square, cv2.COLOR_GRAY2BGR)
        pixels = cv2.cvtColor(square, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(-1, 1, 1)
    return (pixels.astype(np.float32) / 255.0 - mean) / std


def softmax(logits, temperature=1.0):
    z = logits.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(net, meta, frames):
    """Class probabilities, shape (N, classes), for a list of BGR frames (temperature-scaled if calibrated)."""
    blob = np.stack([preprocess(f, meta) for f in frames]).astype(np.float32)
    net.setInput(blob)
    cal = meta.get("calibration") or {}
    return softmax(net.forward().reshape(len(frames), -1), float(cal.get("temperature", 1.0)))


def sure(meta, probs):
    """Per row: is the top-1 confidence at or above the calibrated threshold (always True if uncalibrated)?"""
    cal = meta.get("calibration") or {}
    return probs.max(axis=1) >= float(cal.get("threshold", 0.0))


SMOOTH_WINDOW = 5  # frames averaged, as helpers.webcam.smoothing.WINDOW
SCENE_CHANGE = 0.15  # view change (0-1) that restarts the average, as helpers.webcam.smoothing.CHANGE


class Smoother(object):
    """The mean of the last frames' probabilities, restarted on a new scene (helpers.webcam.smoothing.Smoother)."""

    def __init__(self, threshold, window=SMOOTH_WINDOW, change=SCENE_CHANGE):
        if window < 1:
            raise ValueError("the window must be 1 or more frames, got {}".format(window))
        self.threshold, self.change, self.window = threshold, change, window
        self.recent = []
        self.last_view = None

    def update(self, probs, view):
        """Add one frame (probabilities, model-size view); returns (mean probabilities, sure)."""
        view = np.asarray(view, dtype=np.float32)
        if self.last_view is not None and np.abs(view - self.last_view).mean() / 255 > self.change:
            self.recent = []
        self.last_view = view
        self.recent = (self.recent + [np.asarray(probs, dtype=np.float64)])[-self.window:]
        mean = np.mean(np.stack(self.recent), axis=0)
        return mean, bool(mean.max() >= self.threshold)


def model_view(frame, meta):
    """The guide box as the model sees it (model-size BGR), for the inset."""
    left, top, side = guide_box(*frame.shape[:2])
    size = int(meta["image_size"])
    small = cv2.resize(frame[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    if int(meta["in_channels"]) == 1:
        small = cv2.cvtColor(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return small


def annotate(frame, probs, classes, fps, is_sure=True, inset=None):
    """Guide box, top-3 bars (with "not sure" above them when below the threshold), inset, FPS."""
    out = frame.copy()
    if out.shape[0] < 240:
        scale = int(np.ceil(240.0 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = out.shape[:2]
    left, top, side = guide_box(h, w)
    cv2.rectangle(out, (left, top), (left + side - 1, top + side - 1), (80, 220, 80) if is_sure else (0, 200, 255), 2)
    order = np.argsort(-probs)[:3]
    y0 = 24
    if not is_sure:
        cv2.putText(out, "not sure (top {:.0f}%)".format(100 * probs[order[0]]), (8, y0), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, (0, 200, 255), 2)
        y0 += 26
    for i, k in enumerate(order):
        y = y0 + 26 * i
        color = (80, 220, 80) if i == 0 and is_sure else (200, 200, 200)
        size = 0.5 if is_sure else 0.4
        cv2.rectangle(out, (110, y - 14), (110 + int(200 * probs[k]), y + 2), color, -1)
        cv2.putText(out, "{:5.1f}%".format(100 * probs[k]), (8, y), cv2.FONT_HERSHEY_SIMPLEX, size, color, 1)
        cv2.putText(out, classes[k].replace("_", " "), (114, y), cv2.FONT_HERSHEY_SIMPLEX, size - 0.05, (255, 255, 255), 1)
    if inset is not None:
        k = max(1, min(h, w) // (4 * inset.shape[0]))
        big = cv2.resize(inset, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
        ih, iw = big.shape[:2]
        if ih + 10 < h and iw + 10 < w:
            out[h - ih - 5:h - 5, 5:5 + iw] = big
    cv2.putText(out, "{:4.1f} FPS".format(fps), (w - 100, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 255), 1)
    return out


def _connects(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(address)
        return True
    except (OSError, socket.error):
        return False
    finally:
        s.close()


def has_display():
    """Whether a window can be opened: not on Linux unless an X11 or Wayland server answers (as helpers.plumbing)."""
    if not sys.platform.startswith("linux"):
        return True
    display = os.environ.get("DISPLAY", "")
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if number.isdigit():
        if host in ("", "unix"):
            paths = ["/tmp/.X11-unix/X" + number, "\0/tmp/.X11-unix/X" + number]
            if any(_connects(socket.AF_UNIX, p) for p in paths):
                return True
        elif host.startswith("/"):
            if _connects(socket.AF_UNIX, display):
                return True
        elif _connects(socket.AF_INET, (host, 6000 + int(number))):
            return True
    wayland = os.environ.get("WAYLAND_DISPLAY", "")
    if wayland:
        path = wayland if wayland.startswith("/") else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), wayland)
        return _connects(socket.AF_UNIX, path)
    return False


def open_capture(source, width, height, fps, flip):
    if source == "csi":
        cap = cv2.VideoCapture(gstreamer_pipeline(display_width=width, display_height=height, framerate=fps,
                                                  flip_method=flip), cv2.CAP_GSTREAMER)
    elif source.isdigit():
        cap = cv2.VideoCapture(int(source))
    else:
        cap = cv2.VideoCapture(utf8_name(source))
    if not cap.isOpened():
        hint = (" JetPack's own OpenCV (python3 from /usr/bin, not a pip wheel) is needed for the CSI camera."
                if source == "csi" else "")
        raise SystemExit("error: cannot open source {!r}.{}".format(source, hint))
    return cap


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="MODEL.onnx (MODEL.json must lie beside it)")
    parser.add_argument("--source", default="0", help="camera index, 'csi' or a video file")
    parser.add_argument("--headless", action="store_true", help="write annotated frames to --out instead of a window")
    parser.add_argument("--out", default="frames")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: never)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--flip", type=int, default=0)
    parser.add_argument("--smooth", type=int, default=SMOOTH_WINDOW,
                        help="average over the last N frames, restarted on a new scene (1: each frame alone)")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error("--smooth must be 1 or more, got {}".format(args.smooth))
    if args.max_frames < 0:
        parser.error("--max-frames must be 0 (no limit) or more, got {}".format(args.max_frames))
    if not args.headless and not has_display():
        args.headless = True  # OpenCV's window would abort the process (Qt, SIGABRT) without a reachable display
        print("no display reachable (DISPLAY / WAYLAND_DISPLAY unset, or no server answers there): running "
              "headless, frames go to {}".format(args.out))
    net, meta = load_model(args.model)
    cap = open_capture(args.source, args.width, args.height, args.fps, args.flip)
    if args.headless and not os.path.isdir(args.out):
        os.makedirs(args.out)
    count, fps, last = 0, 0.0, time.time()
    smoother = Smoother(float((meta.get("calibration") or {}).get("threshold", 0.0)), args.smooth)
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                print("source ended or stopped delivering frames after {} frames".format(count))
                break
            view = model_view(frame, meta)
            probs, is_sure = smoother.update(predict(net, meta, [frame])[0], view)
            now = time.time()
            fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if count else 1.0 / max(now - last, 1e-6)
            last = now
            shown = annotate(frame, probs, meta["classes"], fps, is_sure, view)
            if args.headless:
                write_frame(os.path.join(args.out, "frame_{:05d}.png".format(count)), shown)
            else:
                cv2.imshow("Simpsons-MNIST (q quits)", shown)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            count += 1
            if args.max_frames and count >= args.max_frames:
                break
    finally:
        cap.release()
        if not args.headless:
            cv2.destroyAllWindows()
    if count == 0:
        print("error: no frame could be read from {!r}".format(args.source), file=sys.stderr)
        return 1
    print("done: {} frames".format(count))
    return 0


def run(argv=None):
    """main() with bad input as one 'error:' line and exit code 2 (as helpers.plumbing.run; this script stands alone)."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, cv2.error) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
