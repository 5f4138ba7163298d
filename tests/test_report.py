"""The findings page, run summaries and provenance: what the report says comes from the runs themselves."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
import torch

from helpers import budgets, provenance
from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.data import load_simpsons_mnist
from helpers.models import build_model
from helpers.paths import Outputs
from helpers.provenance import SUMMARY_MIME, RunStamp, read_summary
from helpers.reporting import staleness

HEADLINE = [{"data set": "Simpsons-MNIST (rgb)", "model": "tuned LeNet-5", "val acc %": "85.62 ± 0.25",
             "test acc %": "85.18 ± 0.85", "test interval": "83.1–87.3 over 3 seeds", "spent": "14 trials, 200 epochs",
             "note": "tuned better"},
            {"data set": "Simpsons-MNIST (rgb)", "model": "baseline", "val acc %": "65.29 ± 1.44", "test acc %": "65.85"}]


def _png() -> str:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _notebook(path: Path, summary: dict | None, stamp: str = "Run with BUDGET='full' on cpu.") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {path.stem} title"))
    figure = nbformat.v4.new_code_cell("plot()", execution_count=1)
    figure.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]
    last = nbformat.v4.new_code_cell("stamp.finish()", execution_count=2)
    last.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stamp + "\n")]
    if summary is not None:
        last.outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "summary", SUMMARY_MIME: summary}))
    nb.cells += [figure, last]
    nbformat.write(nb, path)
    return path


FINDING = {"finding": "Simpsons-MNIST (rgb): tuned LeNet-5 (textbook baseline 65.98 %)", "value": "87.82 %",
           "interval": "95 % CI 86.5–89.1 %", "target": "mean over 3 seed(s) ≥ 88 %",
           "outcome": "missed by 0.18 points (within the 1.5-point band)", "section": "03_a.ipynb#the-test"}


def test_the_findings_page_shows_every_finding_with_its_link_and_each_chapter(tmp_path: Path) -> None:
    from helpers.reporting.book import findings_page

    state = provenance.git_state()
    found = _notebook(tmp_path / "03_a.ipynb", {"notebook": "03_a", "stamp": "Run with BUDGET='full' (a)", "code": state,
                                                 "headline": HEADLINE, "findings": [FINDING]})
    old = _notebook(tmp_path / "04_b.ipynb", {"notebook": "04_b", "stamp": "Run (b)", "code": state, "headline": []})
    page = findings_page([found, old])
    line = next(x for x in page.splitlines() if FINDING["finding"] in x)
    for key in ("value", "interval", "target", "outcome"):
        assert FINDING[key] in line
    assert "](notebooks/03_a.ipynb#the-test)" in line
    assert "No findings yet from 04_b.ipynb" in page and "| [03_a title](notebooks/03_a.ipynb) |" in page
    brief = page[page.index("## In brief"):page.index("Each finding")].strip().splitlines()[2:]
    assert brief == ["- **[03_a title](notebooks/03_a.ipynb)**. 0 of 1 target met: Simpsons-MNIST 87.82 % "
                     "(missed by 0.18 points (within the 1.5-point band))."]
    assert "Run with" not in page and not __import__("re").search(r"\b[0-9a-f]{7,40}\b", page)  # no stamps or hashes


def test_the_findings_page_of_the_committed_notebooks_carries_their_findings() -> None:
    from helpers.reporting.book import findings_page
    from helpers.reporting.runner import notebook_paths

    page = findings_page(notebook_paths())
    findings = [f for p in notebook_paths() if (s := read_summary(p)) for f in s.get("findings", [])]
    assert len(findings) >= 8
    for f in findings:
        assert f["finding"] in page and f["value"] in page and f["outcome"] in page
    brief = [x for x in page[page.index("## In brief"):page.index("Each finding")].splitlines() if x.startswith("- ")]
    assert 5 <= len(brief) <= 8  # the findings in brief: one line per chapter that has findings
    for f in findings:  # every target's value and outcome, in its chapter's line
        line = next(x for x in brief if f["section"].split("#")[0] in x)
        assert f["value"] in line and (f["outcome"] or f["value"]).split(";")[0] in line


def test_each_chapter_says_how_its_outputs_were_made_and_whether_they_may_be_stale(tmp_path: Path) -> None:
    from helpers.reporting.book import provenance_note, stage

    state = provenance.git_state()
    nb = _notebook(tmp_path / "03_a.ipynb", {"notebook": "03_a", "stamp": "Run with BUDGET='full' (a)", "code": state,
                                              "headline": [], "findings": [FINDING]})
    note = provenance_note(nb)
    assert "Run with BUDGET='full' (a)" in note
    assert "carry no run summary" in provenance_note(_notebook(tmp_path / "04_b.ipynb", None))
    staged = stage([nb], tmp_path / "book")
    copy = nbformat.read(staged / "notebooks" / "03_a.ipynb", as_version=4)
    assert copy.cells[1].source == note  # right after the title
    assert not [o for c in copy.cells for o in c.get("outputs", []) if SUMMARY_MIME in o.get("data", {})]
    assert (staged / "index.md").exists() and (staged / "_toc.yml").exists() and (staged / "docs" / "TUNING.md").exists()


def test_the_note_says_what_earlier_runs_had_stored_so_a_short_wall_time_reads_right(tmp_path: Path) -> None:
    from helpers.reporting import runner
    from helpers.reporting.book import provenance_note

    outputs = tmp_path / "outputs"
    assert runner.stored_work(outputs) == {"searches": 0, "trained runs": 0, "cached results": 0}
    (outputs / "results" / "05-reflections").mkdir(parents=True)
    (outputs / "models" / "store").mkdir(parents=True)
    for name in ("03-simpsons-tpe.json", "03-simpsons-tpe.json.sha256", "04-fashion-tpe.json"):
        (outputs / "results" / name).write_text("{}")
    (outputs / "results" / "05-reflections" / "h1.json").write_text("{}")
    (outputs / "models" / "store" / "ab.pt").write_bytes(b"x")
    found = runner.stored_work(outputs)
    assert found == {"searches": 2, "trained runs": 1, "cached results": 1}
    state = provenance.git_state()
    summary = {"notebook": "03_a", "stamp": "Run (a).", "code": state, "headline": [], "findings": []}
    nb = _notebook(tmp_path / "03_a.ipynb", summary)
    assert "earlier runs" not in provenance_note(nb)  # not recorded: nothing claimed
    runner.record_stored(nb, found)
    note = provenance_note(nb)
    assert "It started with 2 searches, 1 trained run, 1 cached result stored by earlier runs" in note
    assert f"may be shorter than a run from scratch (about {budgets.MINUTES['03'][0]} min)" in note
    runner.record_stored(nb, runner.stored_work(tmp_path / "empty"))
    assert "nothing stored by earlier runs: everything shown was computed in this run" in provenance_note(nb)


def test_run_stamp_finish_writes_the_summary_and_checks_its_keys(tmp_path: Path, capsys) -> None:
    stamp = RunStamp("quick", torch.device("cpu"))
    data = load_simpsons_mnist("rgb").subset(n_train=50, n_val=20, n_test=20)
    stamp.uses(data)
    assert stamp.finish("09_test", headline=HEADLINE[:1], outputs=Outputs(tmp_path)) is None  # shown once, not twice
    summary = written = json.loads((tmp_path / "summary" / "09_test.json").read_text())
    assert written["headline"] == HEADLINE[:1] and written["data"] == {data.name: data.fingerprint()}
    assert written["code"] == provenance.git_state()
    printed = capsys.readouterr().out
    assert printed.startswith("Run with BUDGET='quick'") and "Code: " in printed and data.fingerprint() in printed
    with pytest.raises(ValueError, match="headline keys"):
        stamp.finish("09_test", headline=[{"accuracy": 1}], outputs=Outputs(tmp_path))
    nb = _notebook(tmp_path / "09_test.ipynb", summary)
    assert read_summary(nb) == summary
    assert read_summary(_notebook(tmp_path / "10.ipynb", None)) is None


def test_data_fingerprint_changes_with_one_pixel() -> None:
    data = load_simpsons_mnist("rgb").subset(n_train=50, n_val=20, n_test=20)
    again = load_simpsons_mnist("rgb").subset(n_train=50, n_val=20, n_test=20)
    assert data.fingerprint() == again.fingerprint() and len(data.fingerprint()) == 16
    again.test.x[3, 0, 5, 5] ^= 1
    assert again.fingerprint() != data.fingerprint()


def test_checkpoints_record_the_code_that_saved_them(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_model(in_channels=3, seed=0), ["a"] * 10, (0.5,) * 3, (0.2,) * 3)
    assert load_checkpoint(path).provenance == provenance.git_state()


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=root,
                          capture_output=True, text=True, check=True).stdout.strip()


def _repo(root: Path, files: dict[str, str | bytes], notebooks: dict[str, str]) -> dict[str, object]:
    """A git repository at ``root`` with ``files`` and one-cell ``notebooks`` committed; its git state."""
    (root / "helpers").mkdir(parents=True)
    for name, content in files.items():
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, code in notebooks.items():
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_code_cell(code))
        nbformat.write(nb, root / name)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    return provenance.git_state(root)


def test_a_notebook_is_flagged_when_code_it_imports_changed_since_its_run(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run = _repo(root, {"helpers/a.py": "from helpers.b import f\n", "helpers/b.py": "def f():\n    return 1\n",
                       "helpers/c.py": "X = 1\n"}, {"01_x.ipynb": "from helpers import a\nimport numpy as np"})
    assert run["dirty"] is False and staleness.code_files(root / "01_x.ipynb", root) == ["helpers/a.py", "helpers/b.py"]
    assert staleness.stale(root / "01_x.ipynb", run, root) is None
    (root / "helpers" / "c.py").write_text("X = 2\n")  # not imported by the notebook
    _git(root, "commit", "-qam", "c")
    assert staleness.stale(root / "01_x.ipynb", run, root) is None
    (root / "helpers" / "b.py").write_text('def f():\n    """Now documented."""  # and commented\n    return 1\n')
    assert staleness.stale(root / "01_x.ipynb", run, root) is None  # prose only: the code that ran is the same
    (root / "helpers" / "b.py").write_text("def f():\n    return 2\n")  # imported through a
    assert provenance.git_state(root)["dirty"] is True
    assert "changed since its run" in staleness.stale(root / "01_x.ipynb", run, root) and "b" in staleness.stale(
        root / "01_x.ipynb", run, root)
    assert "predates provenance" in staleness.stale(root / "01_x.ipynb", None, root)
    _git(root, "commit", "-qam", "b")
    head = _git(root, "rev-parse", "HEAD")
    assert staleness.stale(root / "01_x.ipynb", {"commit": head, "dirty": False}, root) is None
    assert "uncommitted changes" in staleness.stale(root / "01_x.ipynb", {"commit": head, "dirty": True}, root)
    assert "not in this repository" in staleness.stale(root / "01_x.ipynb", {"commit": "0" * 40, "dirty": False}, root)


def test_a_budget_change_flags_only_the_notebook_whose_entry_changed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run = _repo(root, {"helpers/budgets.py": 'MINUTES = {"01": 1, "02": 12}\nSETTINGS = {"01": dict(n=1), "02": dict(n=2)}\n'},
                {name: "from helpers import budgets" for name in ("01_x.ipynb", "02_y.ipynb")})
    (root / "helpers" / "budgets.py").write_text('MINUTES = {"01": 1, "02": 12}\nSETTINGS = {"01": dict(n=1), "02": dict(n=3)}\n')
    _git(root, "commit", "-qam", "02's budget")
    assert staleness.stale(root / "01_x.ipynb", run, root) is None
    assert "budgets" in staleness.stale(root / "02_y.ipynb", run, root)
    (root / "helpers" / "budgets.py").write_text('MINUTES = {"01": 1, "02": 12}\nSETTINGS = {"01": dict(n=1), "02": dict(n=3)}\nX = 1\n')
    _git(root, "commit", "-qam", "shared code")
    assert "budgets" in staleness.stale(root / "01_x.ipynb", run, root)  # what is not a per-notebook entry counts for all
    run = {"commit": _git(root, "rev-parse", "HEAD").strip(), "dirty": False}
    (root / "helpers" / "budgets.py").write_text('MINUTES = {"01": 2, "02": 9}\nSETTINGS = {"01": dict(n=1), "02": dict(n=3)}\nX = 1\n')
    _git(root, "commit", "-qam", "run times measured again")
    assert staleness.stale(root / "01_x.ipynb", run, root) is None  # the run-time line is prose: no output moves
    assert staleness.stale(root / "02_y.ipynb", run, root) is None


def test_a_notebook_that_imports_no_helpers_is_not_flagged_by_other_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run = _repo(root, {"model.pt": b"\x80\x02binary"}, {"01_x.ipynb": "import numpy as np"})
    (root / "model.pt").write_bytes(b"\x80\x03other binary")  # a committed binary rewritten: not code the notebook ran
    assert staleness.stale(root / "01_x.ipynb", run, root) is None


def test_blank_screenshots_are_told_from_rendered_ones() -> None:
    import io

    from PIL import Image

    from helpers.reporting.tbshots import is_blank

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array.astype("uint8")).save(buffer, "PNG")
        return buffer.getvalue()

    import numpy as np
    white = np.full((200, 300, 3), 255)
    assert is_blank(png(white))
    spinner = white.copy()
    spinner[90:110, 140:160] = 120  # a loading spinner on an empty page
    assert is_blank(png(spinner))
    rng = np.random.default_rng(0)
    chart = white.copy()
    for k in range(40):  # lines of a chart in several colours
        chart[rng.integers(0, 200), :, :] = rng.integers(0, 255, 3)
    chart[:, 50:52] = 0
    assert not is_blank(png(chart))


def test_the_targets_figure_reads_every_target_in_percent_from_the_summaries(tmp_path: Path) -> None:
    from helpers.reporting import book

    state = provenance.git_state()
    wrong = {"finding": "Webcam: wrong and sure", "value": "4.3 %", "interval": "95 % CI 1.3–13.4 %",
             "target": "mean over 3 seed(s) ≤ 5 %", "outcome": "met", "section": "06_b.ipynb#x"}
    points = {"finding": "X-rays: tuned − baseline", "value": "+1.20 points", "interval": "95 % CI -2.0 to +4.4 points",
              "target": "tuned above baseline by the paired rule", "outcome": "missed", "section": "04_c.ipynb#y"}
    verdict = {"finding": "TPE vs random", "value": "tpe 61 %", "interval": "", "target": "", "outcome": "inconclusive",
               "section": "03_a.ipynb#z"}
    nbs = [_notebook(tmp_path / "03_a.ipynb", {"notebook": "03_a", "stamp": "s", "code": state, "headline": [],
                                              "findings": [FINDING, verdict]}),
           _notebook(tmp_path / "06_b.ipynb", {"notebook": "06_b", "stamp": "s", "code": state, "headline": [],
                                              "findings": [wrong, points]})]
    rows = book.target_rows(nbs)
    assert [(r["chapter"], r["value"], r["low"], r["high"], r["threshold"], r["at most"], r["met"]) for r in rows] == [
        ("03", 87.82, 86.5, 89.1, 88.0, False, False), ("06", 4.3, 1.3, 13.4, 5.0, True, True)]  # in %, no other
    assert "targets.png" in book.findings_page(nbs)
    staged = book.stage(nbs, tmp_path / "book")
    assert (staged / book.TARGETS_FIGURE).stat().st_size > 10_000


def test_cell_timings_are_kept_before_tidy_drops_them(tmp_path: Path) -> None:
    from helpers.reporting import runner
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# a"), nbformat.v4.new_code_cell("import x\nfit()"),
                nbformat.v4.new_code_cell("search()"), nbformat.v4.new_code_cell("")]
    nb.cells[1].metadata["papermill"] = {"duration": 12.34}
    nb.cells[2].metadata["papermill"] = {"duration": 80.0}
    path = tmp_path / "03_a.ipynb"
    nbformat.write(nb, path)
    slowest = runner.record_timings(path, tmp_path / "timings" / "03_a.json")
    assert [(t["cell"], t["first line"], t["seconds"]) for t in slowest] == [(2, "search()", 80.0),
                                                                            (1, "import x", 12.3), (3, "", 0.0)]
    assert json.loads((tmp_path / "timings" / "03_a.json").read_text())[0]["cell"] == 1  # in notebook order
    runner.tidy(path)
    assert "papermill" not in nbformat.read(path, as_version=4).cells[2].metadata
