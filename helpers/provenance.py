"""Where a result came from: the git commit and whether the tree was dirty, a fingerprint of the data,
and which committed notebooks ran older code than the one they import now.

Run stamps (:mod:`helpers.runinfo`), checkpoints (:mod:`helpers.checkpoints`) and every Hyperopt
trial (:mod:`helpers.objective`) record :func:`git_state`; the stamps also record the fingerprint of
each data set a notebook used (:meth:`helpers.splits.DataSplits.fingerprint`). :func:`stale`
compares a notebook's recorded commit with the current tree, for the ``helpers`` modules the
notebook imports (directly or through other helpers), and says why its outputs may be out of date.
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterable
from pathlib import Path

import nbformat

from helpers.paths import project_root


def _git(args: list[str], root: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: what can change a result: a change here since the commit makes the tree "dirty" (notebooks and prose do not)
CODE_PATHS = ("helpers", "scripts", "requirements.txt", "pyproject.toml", "Makefile")


def git_state(root: Path | None = None) -> dict[str, object]:
    """``{"commit": sha or None, "dirty": bool or None}``; dirty when the code (:data:`CODE_PATHS`:
    changed, new or deleted files there) differs from that commit."""
    root = Path(root or project_root())
    commit = _git(["rev-parse", "HEAD"], root)
    status = _git(["status", "--porcelain", "--", *CODE_PATHS], root) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def describe_state(state: dict[str, object]) -> str:
    """``commit 1a2b3c4 (clean)``, ``… (with uncommitted changes)`` or ``no git commit``."""
    if not state.get("commit"):
        return "no git commit"
    return f"commit {str(state['commit'])[:7]} " + ("(with uncommitted changes)" if state.get("dirty") else "(clean)")


def _helpers_imported(source: str) -> set[str]:
    """Names of the ``helpers`` modules that Python source imports."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "helpers":
                found |= {a.name for a in node.names}
            elif node.module.startswith("helpers."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    return found


def code_files(notebook: Path, root: Path | None = None) -> list[str]:
    """The ``helpers/*.py`` files (relative to ``root``) that a notebook's code cells import, transitively."""
    root = Path(root or project_root())
    nb = nbformat.read(notebook, as_version=4)
    todo = set().union(*(_helpers_imported(c.source) for c in nb.cells if c.cell_type == "code"))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        path = root / "helpers" / f"{name}.py"
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo |= _helpers_imported(path.read_text(encoding="utf-8")) - seen
    return sorted(f"helpers/{n}.py" for n in seen)


def stale(notebook: Path, recorded: dict[str, object] | None, root: Path | None = None) -> str | None:
    """Why the committed outputs of ``notebook`` may not come from the code it imports now, or None.

    ``recorded`` is the git state its run stamp recorded (:func:`git_state`), None if it has none.
    """
    root = Path(root or project_root())
    if not recorded or not recorded.get("commit"):
        return "its run recorded no git commit (it predates provenance stamps): re-run it"
    commit = str(recorded["commit"])
    files = code_files(notebook, root)
    changed = _git(["diff", "--name-only", commit, "--", *files], root)
    if changed is None:
        return f"its commit {commit[:7]} is not in this repository's history: re-run it"
    if changed:
        names = ", ".join(Path(f).stem for f in changed.splitlines())
        return f"code it imports changed since its run ({commit[:7]}): {names}"
    if recorded.get("dirty"):
        return f"it ran on uncommitted changes to commit {commit[:7]}"
    return None


def fingerprint_bytes(chunks: Iterable[bytes]) -> str:
    """A short sha256 of byte chunks (16 hex digits)."""
    import hashlib

    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]
