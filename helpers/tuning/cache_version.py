"""The version of everything cached from training: Hyperopt trials files and the reflections cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers.provenance import code_only

# 7: the run store's path in one place, the longest runs first (the same numbers); 6: independent runs and
# searches side by side, one thread each (helpers.lanes); 5: narrow BatchNorm hands channels-last on (the same
# numbers); 4: BatchNorm below 16 channels on NCHW input; 3: evaluation in batches of 128; 2: bfloat16
#: Part of every trials-file and reflections-cache key: bump it when training code changes.
CACHE_VERSION = 7
#: The modules whose code determines a cached result, as paths under ``helpers/`` (the search's point-to-run
#: mapping in ``tuning/spaces.py`` included).
CACHED_MODULES = ("models.py", "training.py", "runs.py", "tuning/spaces.py", "tuning/search.py")
#: :func:`sources_hash` of those modules when CACHE_VERSION was last set.
SOURCES_HASH = "21a84cc4e15ae2d7"  # the run store's path in one place, the longest runs first


def sources_hash(modules: tuple[str, ...] = CACHED_MODULES) -> str:
    """A hash of the code (not comments or docstrings) of each file ``helpers/<path>``."""
    folder = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0" + code_only((folder / name).read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:16]
