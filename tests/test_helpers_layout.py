"""The package's shape: a core that imports no wing."""

from __future__ import annotations

from helpers import stats


def test_the_core_imports_no_wing() -> None:
    """helpers/*.py (the core) never imports helpers.tuning, .xray, .webcam or .reporting; only the thin command
    modules (demo, predict, report), the entry points into their wings, are left out (budgets is plain data)."""
    import ast
    from pathlib import Path

    wings = ("helpers.tuning", "helpers.xray", "helpers.webcam", "helpers.reporting")
    core = [p for p in Path(stats.__file__).parent.glob("*.py") if p.stem not in ("demo", "predict", "report")]
    assert len(core) >= 13
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                assert not any(n.startswith(wings) for n in names), f"{path.name} imports {node.module}"


def _imports_of(path) -> set[str]:
    """The helpers modules a file imports at its top level."""
    import ast

    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("helpers")}
    return found


def test_no_import_circle_and_imports_at_the_top() -> None:
    """No circle among helpers' modules; an import inside a function only for an optional dependency, commented."""
    import ast
    from pathlib import Path

    root = Path(stats.__file__).parent
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {m: {i for i in _imports_of(p) if i in modules and i != m} for m, p in modules.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and not seen.add(n) and reaches(n, goal, seen)) for n in graph[start])

    circles = sorted(m for m in modules if reaches(m, m, set()))
    assert not circles, f"modules in an import circle: {circles}"
    optional = ("ray", "IPython", "fcntl")  # Ray is heavy; IPython only inside a notebook; fcntl not on Windows
    for name, path in modules.items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        what = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                        assert what.split(".")[0] in optional, f"{name}.{fn.name} imports {what} inside the function"
                        near = "".join(lines[max(0, node.lineno - 5):node.lineno])  # the import or a line above
                        assert "#" in near, f"{name}.{fn.name}: say why {what} is imported inside the function"


def test_every_public_function_is_typed() -> None:
    """Every public function and method of helpers has annotated parameters and a return type."""
    import ast
    from pathlib import Path

    untyped = []
    for path in Path(stats.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            functions = [node] if isinstance(node, ast.FunctionDef) else [
                n for n in node.body if isinstance(n, ast.FunctionDef)] if isinstance(node, ast.ClassDef) else []
            for fn in (f for f in functions if not f.name.startswith("_")):
                params = [a for a in fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]
                params += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
                if fn.returns is None or any(a.annotation is None for a in params):
                    untyped.append(f"{path.name}:{fn.lineno} {fn.name}")
    assert not untyped, f"public functions without type hints: {untyped}"
