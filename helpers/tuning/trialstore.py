"""Hyperopt trials on disk: plain JSON (never pickle), written atomically, one search at a time."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import Trials
from hyperopt.base import TRIAL_KEYS, TRIAL_MISC_KEYS, InvalidTrial, trials_from_docs

from helpers.plumbing import checksum_path, write_atomic

#: Version 2 is always written with its sha256 beside it; version 1 files (older) are migrated once.
FORMAT = "lenet5-portfolio-trials/2"
_UNCHECKED = "lenet5-portfolio-trials/1"
_TIME_KEYS = ("book_time", "refresh_time")


class TrialsFileError(RuntimeError):
    """A trials file that cannot be used: not ours, damaged, or an old pickle."""


class SearchLockedError(RuntimeError):
    """Another process is running a search on the same trials file."""


def _plain(value: Any) -> Any:
    """JSON's ``default``: datetimes as ISO strings, numpy scalars and arrays as Python values."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a trials file holds plain data only, not {type(value).__name__}: {value!r}")


def trials_to_json(trials: Trials) -> str:
    """The trials' documents and text attachments as a JSON string."""
    attachments = {}
    for key, value in trials.attachments.items():
        if not isinstance(value, str):
            raise TypeError(f"attachment {key!r} is {type(value).__name__}; only text attachments are stored")
        attachments[key] = value
    return json.dumps({"format": FORMAT, "trials": list(trials.trials), "attachments": attachments},
                      default=_plain, allow_nan=True)


def trials_from_json(text: str, source: str = "trials file") -> Trials:
    """:class:`hyperopt.Trials` from :func:`trials_to_json`'s output; TrialsFileError if damaged."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrialsFileError(f"{source} is not valid JSON ({exc}); move it away to start the search afresh") from exc
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, _UNCHECKED):
        raise TrialsFileError(f"{source} is not a trials file of this project (format {FORMAT!r} expected)")

    def damaged(what: str) -> TrialsFileError:
        return TrialsFileError(f"{source} is damaged: {what}. Move it away to start the search afresh (finished "
                               f"trials in it are lost), or restore it from a backup")

    docs, attachments = doc.get("trials"), doc.get("attachments", {})
    if not isinstance(docs, list) or not all(isinstance(t, dict) for t in docs):
        raise damaged("'trials' is not a list of trial records")
    if not isinstance(attachments, dict) or not all(isinstance(v, str) for v in attachments.values()):
        raise damaged("'attachments' is not an object of text values")
    for n, trial in enumerate(docs):
        lacking = [k for k in TRIAL_KEYS if k not in trial] + [
            f"misc.{k}" for k in TRIAL_MISC_KEYS if not isinstance(trial.get("misc"), dict) or k not in trial["misc"]]
        if lacking or not isinstance(trial.get("result"), dict):
            raise damaged(f"trial {n} lacks {', '.join(lacking) or 'a result record'}")
        for key in _TIME_KEYS:
            if isinstance(trial.get(key), str):
                try:
                    trial[key] = dt.datetime.fromisoformat(trial[key])
                except ValueError:
                    raise damaged(f"trial {n}'s {key} is not a date ({trial[key]!r})") from None
    try:
        trials = trials_from_docs(docs)
    except (InvalidTrial, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise damaged(f"hyperopt refuses its trials ({type(exc).__name__}: {exc})") from None
    trials.attachments.update(attachments)
    return trials


def load_trials(path: Path) -> Trials | None:
    """The trials saved at ``path``, or ``None`` when there is no such file yet."""
    path = Path(path)
    if not path.exists():
        return None
    raw = path.read_bytes()
    if path.suffix == ".pkl" or raw[:1] == b"\x80":  # pickle protocol 2+ starts with 0x80
        raise TrialsFileError(
            f"{path} is a pickled trials file: it is not loaded, because unpickling can run code. "
            f"Delete it (or move it away) and run the search again; it restarts from trial 1 and saves JSON."
        )
    side = checksum_path(path)
    if side.exists():
        if _digest(raw) not in side.read_text().split():
            raise TrialsFileError(
                f"{path} does not match its checksum ({side.name}): it was edited or damaged since the search wrote "
                f"it, so its results are not trusted. Move both files away to start the search afresh, or restore "
                f"them from a backup")
        return trials_from_json(raw.decode("utf-8", errors="replace"), str(path))
    text = raw.decode("utf-8", errors="replace")
    trials = trials_from_json(text, str(path))
    if json.loads(text).get("format") != _UNCHECKED:  # a checked file whose checksum was deleted: not trusted
        raise TrialsFileError(
            f"{path} has no checksum beside it ({side.name}), although this version always writes one: it was "
            f"deleted, so an edit to the trials cannot be ruled out. Restore {side.name} from a backup, or move the "
            f"trials file away to start the search afresh")
    warnings.warn(f"{path} has no checksum beside it (written by an earlier version): its trials are used as they "
                  f"are, once, and the file is saved again with its sha256 in {side.name}, so a later change to it, or "
                  f"a deleted checksum, is noticed", stacklevel=2)
    save_trials(trials, path)
    return trials


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_trials(trials: Trials, path: Path) -> None:
    """Write ``trials`` as JSON atomically, with its sha256 beside it, so that a later edit is noticed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = trials_to_json(trials).encode("utf-8")
    previous = _digest(path.read_bytes()) if path.exists() else ""
    write_atomic(checksum_path(path), f"{_digest(data)}\n{previous}\n".encode())
    write_atomic(path, data)  # temp file, fsync, rename: a kill leaves the old file or the new, never half


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` while the block runs (one search per trials file)."""
    try:  # fcntl is POSIX only
        import fcntl
    except ImportError:  # Windows: no flock; searches there are not protected against each other
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    try:  # never through a link: opening a link to a user's file for writing would empty that file
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        if lock_path.is_symlink():
            raise TrialsFileError(f"{lock_path} is a symbolic link, not this project's lock file; it is not opened "
                                  f"(that would empty the file it points to). Remove the link, then run again") from None
        raise
    with open(fd, "r+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SearchLockedError(
                f"{path} is in use by another search ({holder}). Wait for it to finish or stop it, "
                f"then run this again: finished trials are kept."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                f"command: {' '.join(sys.argv)[:200]}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
