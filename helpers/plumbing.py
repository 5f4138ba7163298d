"""What every entry point shares: one error path, the device, files written atomically with a checksum."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

#: What bad input raises here: our own errors derive from these (DataError, CheckpointError, ...).
USER_ERRORS = (OSError, ValueError, RuntimeError, KeyError)


def has_display() -> bool:
    """Whether a window can be opened: always on macOS and Windows; on Linux only with a reachable X11 or Wayland."""
    if not sys.platform.startswith("linux"):
        return True
    # a DISPLAY that names no running server makes Qt abort the whole process (SIGABRT) when OpenCV opens a window
    return _x11_reachable(os.environ.get("DISPLAY", "")) or _wayland_reachable(os.environ.get("WAYLAND_DISPLAY", ""))


def _connects(family: int, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(address)
        except OSError:
            return False
    return True


def _x11_reachable(display: str) -> bool:
    """Whether an X server answers at ``display`` (``:0``, ``:1.0``, ``host:10.0``, ``unix:0``)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):  # a local server: its socket, named or in Linux's abstract namespace
        return any(_connects(socket.AF_UNIX, path) for path in
                   (f"/tmp/.X11-unix/X{number}", f"\0/tmp/.X11-unix/X{number}"))
    if host.startswith("/"):  # a socket path (e.g. /tmp/launch-x/org.xquartz:0)
        return _connects(socket.AF_UNIX, display)
    return _connects(socket.AF_INET, (host, 6000 + int(number)))


def _wayland_reachable(name: str) -> bool:
    """Whether a Wayland compositor answers at ``$WAYLAND_DISPLAY`` (a socket in ``$XDG_RUNTIME_DIR``)."""
    if not name:
        return False
    path = name if name.startswith("/") else os.path.join(os.environ.get("XDG_RUNTIME_DIR", ""), name)
    return _connects(socket.AF_UNIX, path)


def complain(message: str, prefix: str = "error: ") -> None:
    """One ``error: <message>`` line on stderr: how every entry point reports bad input (or a note, by ``prefix``)."""
    print(f"{prefix}{message}", file=sys.stderr)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and turn bad input into one ``error:`` line; returns the exit code."""
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("HELPERS_DEBUG"):
            raise
        complain(str(exc))
        return 2


#: Environment variable that overrides the automatic choice (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
DEVICE_ENV = "PORTFOLIO_DEVICE"


def pick_device(preference: str | None = "auto") -> torch.device:
    """The device to train on."""
    if preference in (None, "auto"):
        preference = os.environ.get(DEVICE_ENV) or "auto"
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available; {available()}")
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(f"device {preference!r} requested but Apple MPS is not available; {available()}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available() -> str:
    """A one-line description of the devices this machine offers."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return "available: " + ", ".join(found)


def describe(device: torch.device) -> str:
    """Human description, e.g. ``'cuda (NVIDIA H100 80GB HBM3)'`` or ``'cpu (2 threads)'``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


#: How training computes: ``bf16`` (bfloat16 autocast: AMX / AVX512-BF16 CPUs, CUDA), ``fp32``, or ``auto``: bf16
#: where it runs fast, else fp32. Evaluation, the predictors and the ONNX export are always float32.
PRECISIONS = ("auto", "bf16", "fp32")
#: Environment variable that overrides ``auto`` for every run (``fp32`` turns bfloat16 off), read when a config is made.
PRECISION_ENV = "PORTFOLIO_PRECISION"


def fast_bf16(device_type: str) -> bool:
    """Whether bfloat16 autocast trains fast here: a CPU with AMX or AVX512-BF16, or a CUDA GPU with bf16."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False  # MPS: not measured, so float32
    try:  # private functions of torch.cpu (lscpu's amx_tile / avx512_bf16): absent in some builds, then float32
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(requested: str) -> str:
    """``bf16`` or ``fp32``: what a run asking for ``requested`` computes in on this machine's default device."""
    if requested == "auto":
        requested = os.environ.get(PRECISION_ENV) or "auto"
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (${PRECISION_ENV} too), got {requested!r}")
    if requested != "auto":
        return requested
    try:
        device_type = pick_device("auto").type
    except RuntimeError:  # a $PORTFOLIO_DEVICE this machine lacks: reported when a run picks its device
        device_type = "cpu"
    return "bf16" if fast_bf16(device_type) else "fp32"


class WriteError(OSError):
    """A file that could not be written: its text names the file and the reason, without ``[Errno N]``."""

    def __str__(self) -> str:
        return str(self.strerror)


class ChecksumError(RuntimeError):
    """A file does not match the checksum written beside it (or has none)."""


def checksum_path(path: Path) -> Path:
    """Where the checksum of ``path`` is kept: ``<name>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a synced temporary file and a rename: never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: leave no temporary file behind, and name the file
        tmp.unlink(missing_ok=True)
        raise WriteError(exc.errno, f"could not write {path} ({exc.strerror or exc}); the previous file, if any, is "
                                 f"unchanged") from exc


def write_checked(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, then its sha256 to ``<path>.sha256``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    write_atomic(checksum_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())
    return path


def read_checked(path: Path) -> bytes:
    """The bytes of ``path`` if they match ``<path>.sha256``; else :class:`ChecksumError` saying why."""
    path = Path(path)
    data = path.read_bytes()
    side = checksum_path(path)
    if not side.exists():
        raise ChecksumError(f"{path} has no checksum file beside it ({side.name}): written by an older version "
                            f"or by an interrupted save")
    expected = side.read_text().strip()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ChecksumError(f"{path} does not match its checksum ({side.name}): the file was altered or damaged")
    return data


def remove_checked(path: Path) -> None:
    """Delete a file written by :func:`write_checked` and its checksum (missing ones are fine)."""
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
