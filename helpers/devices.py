"""Pick the compute device: CUDA, then Apple MPS, then CPU; overridable."""

from __future__ import annotations

import os

import torch

#: Environment variable that overrides the automatic choice (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
DEVICE_ENV = "PORTFOLIO_DEVICE"


def pick_device(preference: str | None = "auto") -> torch.device:
    """The device to train on.

    ``preference`` ``"auto"`` (or ``None``) tries ``$PORTFOLIO_DEVICE``, then CUDA, then MPS, then
    the CPU. Naming a device that is not available raises a ``RuntimeError`` that says what is.
    """
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
