"""Where the project keeps its data and what its runs produce."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Environment variable naming a local mirror of the data sets (CI: ``../shared/data``).
MIRROR_ENV = "DATA_MIRROR"
#: Environment variable overriding the project's ``data/`` folder.
DATA_DIR_ENV = "PORTFOLIO_DATA_DIR"
#: Environment variable overriding where runs write TensorBoard logs, checkpoints and results.
OUTPUT_DIR_ENV = "PORTFOLIO_OUTPUT_DIR"

BUDGETS = ("quick", "full")


def project_root() -> Path:
    """The repository's root folder (the parent of ``helpers/``)."""
    return Path(__file__).resolve().parent.parent


#: Control characters (newline, escape, ...) a file name may hold: printed as escapes, never raw.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` safe to print: undecodable bytes as ``\\xff``, control characters as ``\\n`` / ``\\x1b``."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def visible(path: Path) -> bool:
    """False for hidden files and folders (``.DS_Store``, macOS's ``._x.jpg``, ``.ipynb_checkpoints``)."""
    return not path.name.startswith(".")


def shown(path: Path | str) -> str:
    """``path`` for a reader: relative to the project when inside it, printable even if not valid UTF-8."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError):  # a symbolic-link loop: named as given
        return printable(str(path))
    try:
        return printable(resolved.relative_to(project_root()).as_posix())
    except ValueError:
        pass
    for budget in BUDGETS:  # outputs moved elsewhere ($PORTFOLIO_OUTPUT_DIR) still read as outputs/...
        out = output_dir(budget)
        if resolved.is_relative_to(out):
            return printable((Path(out.name) / resolved.relative_to(out)).as_posix())
    return printable(str(path))


def data_dir() -> Path:
    """Folder the data sets land in: ``$PORTFOLIO_DATA_DIR`` or ``<root>/data``."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override).expanduser().resolve() if override else project_root() / "data"


def mirror_dir() -> Path | None:
    """The local mirror named by ``$DATA_MIRROR``, if set."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser().resolve() if value else None


def output_dir(budget: str = "full") -> Path:
    """Folder for what a run produces: TensorBoard ``runs/``, ``models/`` and ``results/``."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    override = os.environ.get(OUTPUT_DIR_ENV)
    base = Path(override).expanduser().resolve() if override else project_root()
    return base / ("outputs" if budget == "full" else "outputs-quick")


@dataclass(frozen=True)
class Outputs:
    """The folders one run writes to, resolved once from the budget (or any root, in tests)."""

    root: Path

    @classmethod
    def for_budget(cls, budget: str = "full") -> Outputs:
        """``outputs/`` for the full budget, ``outputs-quick/`` for the quick one (see :func:`output_dir`)."""
        return cls(output_dir(budget))

    @property
    def runs(self) -> Path:
        """TensorBoard log root: ``runs/<experiment>/<run>``."""
        return self.root / "runs"

    @property
    def models(self) -> Path:
        """Checkpoints and exported models."""
        return self.root / "models"

    @property
    def results(self) -> Path:
        """Tuning trials and cached experiment results."""
        return self.root / "results"
