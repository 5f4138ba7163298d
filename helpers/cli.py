"""One way for every command-line entry point to fail: a clear line on stderr and a non-zero exit.

Bad input (a missing or damaged file, a wrong model file, a bad argument value) is the user's to
fix, and a traceback only hides the sentence that says how. :func:`run` prints ``error: <message>``
and exits 2 for such errors, 130 for Ctrl-C; ``HELPERS_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

#: What bad input raises here: our own errors derive from these (DataError, CheckpointError, ...).
USER_ERRORS = (OSError, ValueError, RuntimeError, KeyError)


def has_display() -> bool:
    """Whether a window can be opened: always on macOS and Windows; on Linux only with X11 or Wayland."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def complain(message: str) -> None:
    """One ``error: <message>`` line on stderr: how every entry point reports bad input."""
    print(f"error: {message}", file=sys.stderr)


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
