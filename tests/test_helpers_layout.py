"""The package's shape: a core that imports no wing."""

from __future__ import annotations

from helpers import stats


def test_the_core_imports_no_wing() -> None:
    """helpers/*.py (the core) never imports helpers.tuning, .xray, .webcam or .reporting; the thin command
    modules (demo, predict, report) are the entry points into their wings and budgets is the notebooks' table of
    settings; they are left out."""
    import ast
    from pathlib import Path

    wings = ("helpers.tuning", "helpers.xray", "helpers.webcam", "helpers.reporting")
    core = [p for p in Path(stats.__file__).parent.glob("*.py") if p.stem not in ("demo", "predict", "report", "budgets")]
    assert len(core) >= 13
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                assert not any(n.startswith(wings) for n in names), f"{path.name} imports {node.module}"
