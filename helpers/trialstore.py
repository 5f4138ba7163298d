"""Hyperopt trials on disk: plain JSON (never pickle), written atomically, one search at a time.

* **JSON, not pickle.** A pickle runs code when it is loaded, so a trials file that anyone could
  have replaced would be a way into the user's machine. Hyperopt's trial documents are plain data
  (numbers, strings, lists, dicts and two datetimes), so they are stored as JSON, the datetimes as
  ISO-8601 strings, and rebuilt with Hyperopt's public ``trials_from_docs``. Pickled trials files of
  earlier versions are refused with a note on how to re-run.
* **Atomic.** Each save goes to a temporary file that is flushed, synced and renamed over the old
  one: a kill at any moment leaves either the previous or the new file, never half of one.
* **Locked.** :func:`locked` takes an exclusive ``fcntl.flock`` on ``<file>.lock`` for the whole
  search, so two searches (two notebooks, a notebook and a terminal) cannot interleave their saves
  and lose trials; the second one is told who holds the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import Trials
from hyperopt.base import trials_from_docs

from helpers.integrity import write_atomic

FORMAT = "lenet5-portfolio-trials/1"
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
    """Rebuild a :class:`hyperopt.Trials` from :func:`trials_to_json`'s output."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrialsFileError(f"{source} is not valid JSON ({exc}); move it away to start the search afresh") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TrialsFileError(f"{source} is not a trials file of this project (format {FORMAT!r} expected)")
    docs = doc["trials"]
    for trial in docs:
        for key in _TIME_KEYS:
            if isinstance(trial.get(key), str):
                trial[key] = dt.datetime.fromisoformat(trial[key])
    trials = trials_from_docs(docs)
    trials.attachments.update(doc.get("attachments", {}))
    return trials


def load_trials(path: Path) -> Trials | None:
    """The trials saved at ``path``, or ``None`` when there is no such file yet.

    A pickled file (of an earlier version of this project) is refused, never unpickled.
    """
    path = Path(path)
    if not path.exists():
        return None
    raw = path.read_bytes()
    if path.suffix == ".pkl" or raw[:1] == b"\x80":  # pickle protocol 2+ starts with 0x80
        raise TrialsFileError(
            f"{path} is a pickled trials file: it is not loaded, because unpickling can run code. "
            f"Delete it (or move it away) and run the search again; it restarts from trial 1 and saves JSON."
        )
    return trials_from_json(raw.decode("utf-8", errors="replace"), str(path))


def save_trials(trials: Trials, path: Path) -> None:
    """Write ``trials`` as JSON atomically: a crash during the write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, trials_to_json(trials).encode("utf-8"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` while the block runs (one search per trials file).

    Raises :class:`SearchLockedError` at once, naming the holder, when another process has it.
    The lock dies with its process, so a killed search never leaves a stale lock behind.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; searches there are not protected against each other
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+", encoding="utf-8") as f:
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
