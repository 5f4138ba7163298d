"""Where a result came from: the git commit and whether the tree was dirty, and a fingerprint of the data."""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import torch

from helpers.paths import BUDGETS, Outputs, project_root
from helpers.plumbing import describe, resolve_precision, write_atomic


def git(args: list[str], root: Path) -> str | None:
    """What ``git args`` prints in ``root`` (stripped), or None when git is missing or the command fails."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_only(source: str, transform: Callable[[ast.Module], None] | None = None) -> str:
    """``source``'s syntax tree without docstrings (``transform``ed first), as text: what a run's result depends on."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # not Python: compared as it is
        return source
    if transform is not None:
        transform(tree)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


#: what can change a result: a change here since the commit makes the tree "dirty" (notebooks and prose do not)
CODE_PATHS = ("helpers", ":(exclude)helpers/README.md", "scripts", "requirements.txt", "pyproject.toml", "Makefile")


def git_state(root: Path | None = None) -> dict[str, object]:
    """``{"commit", "dirty"}``: dirty when the code in :data:`CODE_PATHS` differs from that commit."""
    root = Path(root or project_root())
    commit = git(["rev-parse", "HEAD"], root)
    status = git(["status", "--porcelain", "--", *CODE_PATHS], root) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def describe_state(state: dict[str, object]) -> str:
    """``commit 1a2b3c4 (clean)``, ``… (with uncommitted changes)`` or ``no git commit``."""
    if not state.get("commit"):
        return "no git commit"
    return f"commit {str(state['commit'])[:7]} " + ("(with uncommitted changes)" if state.get("dirty") else "(clean)")


def fingerprint_bytes(chunks: Iterable[bytes]) -> str:
    """A short sha256 of byte chunks (16 hex digits)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


SUMMARY_MIME = "application/vnd.lenet5-portfolio.summary+json"
#: the columns of a headline row (any may be absent)
HEADLINE_KEYS = ("data set", "model", "val acc %", "test acc %", "test interval", "spent", "note")
#: the fields of one finding (:func:`helpers.stats.finding`): what the report's findings page shows
FINDING_KEYS = ("finding", "value", "interval", "target", "outcome", "section")


class RunStamp:
    """Started at the top of a notebook; :meth:`summary` says budget, device and wall time."""

    def __init__(self, budget: str, device: torch.device) -> None:
        if budget not in BUDGETS:
            raise ValueError(f"BUDGET must be one of {BUDGETS}, got {budget!r}")
        self.budget = budget
        self.device = device
        self.started = time.perf_counter()
        self.started_at = datetime.now(timezone.utc)
        self.code = git_state()  # the code this run executes: read at the start
        self.data: dict[str, str] = {}

    def uses(self, *datasets: Any) -> None:
        """Record the fingerprint of each data set the notebook reads (anything with ``fingerprint()``)."""
        for d in datasets:
            self.data[d.name] = d.fingerprint()

    def elapsed(self) -> float:
        """Seconds since the stamp was made."""
        return time.perf_counter() - self.started

    def summary(self) -> str:
        """One paragraph: budget, device, software versions, start time and wall time."""
        minutes, seconds = divmod(round(self.elapsed()), 60)
        data = "; ".join(f"{name} {fp}" for name, fp in self.data.items())
        return (
            f"Run with BUDGET={self.budget!r} on {describe(self.device)}, {platform.processor() or platform.machine()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}. "
            f"Started {self.started_at:%Y-%m-%d %H:%M} UTC; wall time {minutes} min {seconds:02d} s. "
            f"Code: {describe_state(self.code)}. Training precision where a run asks for 'auto': "
            f"{resolve_precision('auto')} (evaluation float32)." + (f" Data fingerprints: {data}." if data else "")
        )

    def finish(self, notebook: str, headline: Sequence[Mapping[str, Any]] = (), outputs: Outputs | None = None,
               findings: Sequence[Mapping[str, str]] = ()) -> None:
        """Print the stamp, write ``notebook``'s summary (file and display output); None, so it shows once."""
        unknown = {k for row in headline for k in row} - set(HEADLINE_KEYS)
        if unknown:
            raise ValueError(f"headline keys must be among {HEADLINE_KEYS}, got {sorted(unknown)}")
        if any(set(f) != set(FINDING_KEYS) for f in findings):
            raise ValueError(f"each finding needs exactly the keys {FINDING_KEYS}")
        text = self.summary()
        summary = {"notebook": notebook, "budget": self.budget, "device": describe(self.device),
                   "started": f"{self.started_at:%Y-%m-%d %H:%M} UTC", "wall_minutes": round(self.elapsed() / 60, 1),
                   "code": self.code, "data": dict(self.data), "stamp": text,
                   "headline": [{k: row[k] for k in HEADLINE_KEYS if k in row} for row in headline],
                   "findings": [dict(f) for f in findings]}
        folder = (outputs or Outputs.for_budget(self.budget)).root / "summary"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{notebook}.json", json.dumps(summary, indent=2).encode())
        print(text)
        try:  # IPython is there inside a notebook, not always in a plain script
            from IPython.display import display
            display({"text/plain": f"summary written to outputs/summary/{notebook}.json", SUMMARY_MIME: summary}, raw=True)
        except ImportError:
            pass


def read_summary(notebook: Path) -> dict | None:
    """The summary a notebook's run wrote into it (:meth:`RunStamp.finish`), or None."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if SUMMARY_MIME in data:
                value = data[SUMMARY_MIME]
                return json.loads(value) if isinstance(value, str) else dict(value)
    return None
