"""Files this project writes and later trusts: atomic writes with a sha256 checksum beside them.

A data cache, a checkpoint or a cached experiment result with one flipped byte can still load,
with wrong values. Every such file is written with :func:`write_checked` (temporary file, fsync,
rename; then ``<name>.sha256`` beside it) and read back with :func:`read_checked`, which returns the
bytes only when they match their checksum.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


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
    """Write ``data`` to ``path`` through a synced temporary file and a rename: a kill at any moment
    leaves either the previous file or the new one, never half of one."""
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
