"""What a reader of the committed notebooks sees in their prose and code, checked without running them.

Every result figure in prose must be computed (a typed number drifts); openings are short and say how long a
run takes; code cells are short; every mention of another notebook is a link; every notebook ends with what it
taught and things to try; notebook 05's written reflections match the verdicts computed beside them.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import nbformat
import pytest

from helpers import budgets
from helpers.reporting.runner import notebook_paths

NOTEBOOKS = notebook_paths()
#: A result figure: a number followed by %, "points", "s" or "min", or a ± value.
FIGURE = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?\s*(?:%|points?\b|s\b|min\b|minutes\b)|\d\s*±\s*\d")
#: Settings and targets that prose may state (each is fixed before a run, not a result of it).
ALLOWED = {"95 %": "the confidence level of every interval",
           "60 %": "notebook 06's right-and-sure target on drawings", "65 %": "notebook 04's normal-recall target",
           "80 %": "notebook 04's X-ray accuracy target and notebook 06's top-1 target on drawings", "5 %": "notebook 06's wrong-and-sure target on drawings",
           "90 %": "notebook 06's 'not sure' target and calibration setting", "1 point": "notebook 06's clean-accuracy target"}
MAX_OPENING_WORDS = 200  # words of prose before the first output a reader sees
MAX_CODE_LINES = 15  # "code cells at most about 15 lines": statements, imports aside
MAX_LINE = 80  # characters: the book shows code at about this width and cuts the rest


def cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def prose_texts(path: Path) -> list[tuple[int, str]]:
    """(cell index, text) of every markdown cell, and of every string literal in a code cell."""
    out = []
    for i, cell in enumerate(cells(path)):
        if cell.cell_type == "markdown":
            out.append((i, cell.source))
        elif cell.cell_type == "code":
            out += [(i, node.value) for node in ast.walk(ast.parse(cell.source))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return out


def typed_figures(text: str) -> list[str]:
    """Result figures typed into ``text``: matches of :data:`FIGURE` outside :data:`ALLOWED` and the run-time line."""
    text = "\n".join(line for line in text.splitlines() if not line.startswith("**Run time**"))
    return [m.group(0) for m in FIGURE.finditer(text) if m.group(0) not in ALLOWED]


def test_the_figure_check_finds_typed_results_and_spares_settings() -> None:
    assert typed_figures("the tuned model reached 87.82 % on test") == ["87.82 %"]
    assert typed_figures("paired +21.83 points, 70.66 ± 2.06") == ["+21.83 points", "6 ± 2"]
    assert typed_figures("a trial took 226 s, the search 16.5 min") == ["226 s", "16.5 min"]
    assert typed_figures("its 95 % Student-t interval; target ≥ 80 %") == []
    assert typed_figures("LeNet-5 with 6/16 channels, 120/84 units, 28×28 px") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_holds_no_typed_result_figures(path: Path) -> None:
    found = [(i, f) for i, text in prose_texts(path) for f in typed_figures(text)]
    assert not found, f"{path.name}: typed result figures (compute them, or add a setting to ALLOWED): {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_opening_is_short_and_says_how_long_a_run_takes(path: Path) -> None:
    opening = []
    for cell in cells(path):
        if cell.cell_type == "code" and cell.get("outputs"):
            break
        if cell.cell_type == "markdown":
            opening.append(cell.source)
    text = "\n".join(opening)
    words = len(re.sub(r"\|[^\n]*\|", "", text).split())  # a table of the data sets is not prose
    assert words <= MAX_OPENING_WORDS, f"{path.name}: {words} words of prose before the first output"
    assert budgets.run_time(path.name[:2]) in text, f"{path.name}: the run-time line differs from helpers.budgets"
    assert re.search(r"\*\*Question:\*\*", text) and re.search(r"\*\*Plan\.?\*\*", text), path.name
    assert not re.search(r"\bissue \d+|the run before", text, re.IGNORECASE), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_code_cells_are_short_and_their_lines_fit_the_book(path: Path) -> None:
    def statements(source: str) -> int:  # a statement wrapped to fit 80 characters still counts once
        ends = sum(1 for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.NEWLINE)
        return ends - sum(1 for line in source.splitlines() if re.match(r"(from \S+ )?import ", line))

    code = [(i, c.source) for i, c in enumerate(cells(path)) if c.cell_type == "code"]
    long = [(i, statements(s)) for i, s in code if statements(s) > MAX_CODE_LINES]
    assert not long, f"{path.name}: code cells over {MAX_CODE_LINES} statements: {long}"
    wide = [(i, line) for i, s in code for line in s.splitlines() if len(line) > MAX_LINE]
    assert not wide, f"{path.name}: {len(wide)} code lines over {MAX_LINE} characters (the book cuts them): {wide[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_mention_of_another_notebook_is_a_link(path: Path) -> None:
    names = {p.name[:2]: p.name for p in NOTEBOOKS}
    bare = []
    for cell in cells(path):
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"\[([^\]]*)\]\(([^)]*)\)", lambda m: "" if m.group(2).split("#")[0] in names.values() else m.group(0),
                      cell.source)  # drop links to notebooks, then look for what is left
        bare += re.findall(r"\bnotebooks? \d\d\b", text, re.IGNORECASE)
    links = [t for c in cells(path) if c.cell_type == "markdown" for t in re.findall(r"\]\(([^)#]+\.ipynb)", c.source)]
    assert not bare, f"{path.name}: notebooks named without a link: {bare}"
    assert set(links) <= set(names.values()), f"{path.name}: links to notebooks that do not exist: {set(links) - set(names.values())}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_ends_with_what_we_learned_and_things_to_try(path: Path) -> None:
    nb = cells(path)
    at = next((i for i, c in enumerate(nb) if c.cell_type == "markdown" and "## What we learned" in c.source), None)
    assert at is not None, f"{path.name}: no 'What we learned' section"
    learned = nb[at + 1]
    shown = "".join(o.get("data", {}).get("text/markdown", "") for o in learned.get("outputs", []))
    # 3-6: notebook 04 states its three ways of choosing, one bullet each
    assert learned.cell_type == "code" and 3 <= shown.count("\n- ") + shown.startswith("- ") <= 6, \
        f"{path.name}: 'What we learned' should be 3-6 computed bullets, got {shown[:300]!r}"
    tries = next((c.source for c in nb[at:] if c.cell_type == "markdown" and "**Things to try" in c.source), "")
    block = tries.split("**Things to try", 1)[1].split("\n\n")[0] if tries else ""
    assert 2 <= block.count("\n- ") <= 3, f"{path.name}: 2-3 things to try, got {block[:200]!r}"


def test_reflections_state_the_verdicts_computed_beside_them() -> None:
    path = next(p for p in NOTEBOOKS if p.name.startswith("05_"))
    nb = cells(path)
    checked = 0
    for i, cell in enumerate(nb):
        m = re.match(r"\*\*Reflection on (H\w+)\*\* \(written for the verdicts? (.*?)\)\.", cell.source)
        if cell.cell_type != "markdown" or not m:
            continue
        written = re.findall(r"\*([a-z ]+)\*", m.group(2))
        computed = []
        for prev in reversed(nb[:i]):
            if prev.cell_type == "code":
                text = "".join(o.get("data", {}).get("text/markdown", "") for o in prev.get("outputs", []))
                computed = re.findall(r"\*\*Verdict: ([a-z ]+)\.\*\*", text)
                if computed:
                    break
        assert computed == written, f"{m.group(1)}: the reflection was written for {written}, the run says {computed}"
        checked += 1
    assert checked >= 8, f"only {checked} reflections found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_has_a_caption_line(path: Path) -> None:
    missing = []
    for i, cell in enumerate(cells(path)):
        if cell.cell_type != "code":
            continue
        figures = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        captions = [line for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                    for line in o.get("text", "").splitlines() if line.startswith("Figure: ")]
        if figures and not captions:
            missing.append(i)
    assert not missing, f"{path.name}: cells whose figures have no 'Figure: ...' caption line: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_bookkeeping_cell_is_hidden_in_the_book(path: Path) -> None:
    last = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"][-1]
    assert "stamp.finish" in last.source  # the run stamp is shown once, in the chapter's opening note
    assert "remove-cell" in last.metadata.get("tags", [])


@pytest.mark.parametrize("number", ["03", "04", "06"])
def test_written_reflections_name_outcomes_the_outputs_show(number: str) -> None:
    path = next(p for p in NOTEBOOKS if p.name.startswith(number))
    nb = cells(path)
    shown = " ".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
                     for c in nb if c.cell_type == "code" for o in c.get("outputs", []))
    found = [re.match(r"\*\*Reflection\*\* \(written for the outcomes (.*?)\)\. ", c.source)
             for c in nb if c.cell_type == "markdown"]
    found = [m for m in found if m]
    assert found, f"{path.name}: no written reflection"
    for m in found:
        bold = re.findall(r"\*\*(.+?)\*\*", shown)  # the outcomes the outputs state, in bold
        for outcome in re.findall(r"\*([^*]+)\*", m.group(1)):
            assert any(outcome in b for b in bold), f"{path.name}: written for *{outcome}*, which no output shows"
