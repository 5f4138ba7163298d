"""Whether a committed chapter's outputs may be stale: has the code it imports changed since its run?"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

from helpers.paths import project_root
from helpers.provenance import code_only, git


def _helpers_imported(source: str) -> set[str]:
    """Dotted names below ``helpers`` that ``source`` imports (``tuning`` and ``tuning.study``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith("helpers."):
            base = node.module.removeprefix("helpers").lstrip(".")
            if base:
                found.add(base)
            found |= {f"{base}.{a.name}".lstrip(".") for a in node.names}  # a submodule, or a name in base
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("helpers.") for a in node.names if a.name.startswith("helpers.")}
    return found


def _module_file(name: str, root: Path) -> Path | None:
    """``helpers/<a>/<b>.py`` or ``helpers/<a>/<b>/__init__.py`` for the dotted name ``a.b``, if it exists."""
    base = root / "helpers" / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def code_files(notebook: Path, root: Path | None = None) -> list[str]:
    """The ``helpers`` source files (relative to ``root``) that a notebook's code cells import, transitively."""
    root = Path(root or project_root())
    nb = nbformat.read(notebook, as_version=4)
    todo = set().union(*(_helpers_imported(c.source) for c in nb.cells if c.cell_type == "code"))
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = _module_file(name, root)
        if name in seen or path is None:
            continue
        seen[name] = path
        todo |= _helpers_imported(path.read_text(encoding="utf-8")) - set(seen)
    return sorted({p.relative_to(root).as_posix() for p in seen.values()})


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


#: Module-level names no output depends on: ``budgets.MINUTES`` feeds only the run-time line of each opening
#: (prose, checked by a test), so re-measured run times do not make a chapter stale.
PROSE_ONLY = ("MINUTES",)


def _own_entries(tree: ast.Module, notebook: str) -> None:
    """Keep only ``notebook``'s entry of each module-level dict literal keyed by notebook numbers ("01" …), and
    drop the :data:`PROSE_ONLY` names."""
    tree.body = [node for node in tree.body if not (
        isinstance(node, (ast.Assign, ast.AnnAssign))
        and {t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(t, ast.Name)} & set(PROSE_ONLY))]
    for node in tree.body:
        table = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(table, ast.Dict) and table.keys and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) and re.fullmatch(r"\d\d", k.value)
                for k in table.keys):
            kept = [(k, v) for k, v in zip(table.keys, table.values) if k.value == notebook]
            table.keys, table.values = [k for k, _ in kept], [v for _, v in kept]


def _notebook_code(source: str | None, notebook: str) -> str | None:
    """:func:`helpers.provenance.code_only` of ``source`` with only ``notebook``'s entry of per-notebook tables."""
    return None if source is None else code_only(source, lambda tree: _own_entries(tree, notebook))


def stale(notebook: Path, recorded: dict[str, object] | None, root: Path | None = None) -> str | None:
    """Why the committed outputs of ``notebook`` may not come from the code it imports now, or None."""
    root = Path(root or project_root())
    if not recorded or not recorded.get("commit"):
        return "its run recorded no git commit (it predates provenance stamps): re-run it"
    commit = str(recorded["commit"])
    files = code_files(notebook, root)
    if git(["cat-file", "-e", f"{commit}^{{commit}}"], root) is None:
        return f"its commit {commit[:7]} is not in this repository's history: re-run it"
    # no helpers imported: nothing to compare (a diff without paths would list every file, binaries too)
    changed = git(["diff", "--name-only", commit, "--", *files], root) if files else ""
    key = notebook.name[:2]
    changed = [f for f in (changed or "").splitlines()
               if _notebook_code(git(["show", f"{commit}:{f}"], root), key) != _notebook_code(_read(root / f), key)]
    if changed:
        names = ", ".join(Path(f).stem for f in changed)
        return f"code it imports changed since its run ({commit[:7]}): {names}"
    if recorded.get("dirty"):
        return f"it ran on uncommitted changes to commit {commit[:7]}"
    return None
