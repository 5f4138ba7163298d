"""The README and the docs pages say what the runs say: no typed figure that the summaries do not hold, no lab log."""

from __future__ import annotations

import re

from helpers import budgets
from helpers.paths import project_root
from helpers.provenance import read_summary
from helpers.reporting.runner import notebook_paths

ROOT = project_root()
README = ROOT / "README.md"
#: pages that are current documentation (the run log keeps history, with its commits and dates)
PAGES = [README, *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "RUN_LOG.md")]
COMMIT = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
HISTORY = re.compile(r"the run before|an earlier run|issue \d+", re.I)
FIGURE = re.compile(r"[-+−]?\d[\d,]*\.\d+(?=\s*(?:%|points?\b))")  # a decimal result figure


def summaries_text() -> str:
    """Everything the committed notebooks' summaries and the committed model's card say, as one string."""
    parts = []
    for path in notebook_paths():
        summary = read_summary(path) or {}
        parts += [str(v) for row in summary.get("headline", []) for v in row.values()]
        parts += [str(v) for f in summary.get("findings", []) for v in f.values()]
    parts.append((ROOT / "models" / "card.json").read_text())  # the committed model's card, from the same full run
    return " ".join(parts).replace("−", "-")


def test_readme_is_a_page_a_newcomer_reads_in_two_minutes() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 10_000, f"README is {len(text.encode())} bytes"
    for needed in ("make book", "make report", "make test", "report/_build/html/index.html", "## What was found"):
        assert needed in text, needed


def test_readme_and_docs_hold_no_lab_log() -> None:
    for page in PAGES:
        text = page.read_text()
        found = COMMIT.findall(text) + DATE.findall(text) + HISTORY.findall(text)
        assert not found, f"{page.name}: {found[:5]} (history belongs in docs/RUN_LOG.md)"


def test_every_result_figure_in_the_readme_is_one_the_summaries_hold() -> None:
    held = summaries_text()
    figures = FIGURE.findall(README.read_text())
    assert len(figures) >= 8, figures
    missing = [f for f in figures if f.replace("−", "-").lstrip("+") not in held]
    assert not missing, f"README figures no summary holds: {missing}"


def test_the_budget_table_states_the_budgets_and_the_measured_run_times() -> None:
    text = (ROOT / "docs" / "RUNNING.md").read_text()
    rows = dict(re.findall(r"^\| (\d\d) [^|]*\| (.*) \|$", text, re.M))
    for path in notebook_paths():
        key = path.name[:2]
        summary = read_summary(path)
        assert key in rows, f"no budget row for notebook {key}"
        budget, measured = [c.strip() for c in rows[key].split("|")[:2]]
        assert budget == f"{budgets.MINUTES[key][0]} min", (key, budget)
        assert measured.startswith(f"{summary['wall_minutes']:g} min"), (key, measured, summary["wall_minutes"])


def test_the_readme_runs_the_demo_right_after_setup_with_the_committed_model() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The webcam demo"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    commands = [line.split("#")[0].strip() for line in block if line.strip()]
    assert commands[0] == "make setup" and "make report" not in " ".join(commands), commands
    assert any("-m helpers.demo" in c for c in commands) and any("-m helpers.predict" in c for c in commands)
    assert (ROOT / "models" / "simpsons_demo.pt").is_file() and "models/" in section
