"""Every numbered notebook runs top to bottom in the quick budget, and the report renders."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from helpers import data, paths, plots
from helpers.reporting.runner import compact_png, execute, notebook_paths, tidy

NOTEBOOKS = notebook_paths()


def test_notebooks_exist_in_order() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names and names[0].startswith("01_")
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)]


@pytest.mark.xdist_group("notebooks")
def test_grouped_tests_share_a_worker(request: pytest.FixtureRequest) -> None:
    # --dist loadgroup sends a group to one worker by suffixing its node ids; pytest 9.2 silently drops the suffix
    # (pytest-dev/pytest-xdist#1386) and the notebook runs then spread over both workers, each without the others'
    # models
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@notebooks"), request.node.nodeid


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")  # one worker, in order: notebook 06 uses the models of 03
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_budget(notebook: Path, tmp_path: Path) -> None:
    quick = paths.Outputs.for_budget("quick")
    if notebook.name.startswith("06_") and not (quick.models / "simpsons_tuned-seed0.pt").exists():
        execute(NOTEBOOKS[2], tmp_path / "03.ipynb", budget="quick")  # run alone: make the tuned model it needs
    if notebook.name.startswith("07_") and not (quick.results / "03-simpsons-tpe.json").exists():
        execute(NOTEBOOKS[2], tmp_path / "03.ipynb", budget="quick")  # its table sets notebook 03's search beside it
    if notebook.name.startswith("05_") and not (quick.models / "simpsons_tuned.json").exists():
        execute(NOTEBOOKS[2], tmp_path / "03.ipynb", budget="quick")  # H3c re-tests at notebook 03's tuned settings
    out = execute(notebook, tmp_path / notebook.name, budget="quick")  # papermill raises on an error cell
    kept = quick.root / "notebooks"  # for the book's test below
    kept.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out, kept / notebook.name)
    nb = nbformat.read(out, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    # the notebook states how it was run, and it was the quick budget
    assert "Run with BUDGET='quick'" in "".join(o.get("text", "") for o in code[-1].outputs)
    assert not [o for o in code[-1].outputs if o.output_type == "execute_result"], "the summary is shown twice"
    assert not stderr_outputs(nb), (notebook.name, stderr_outputs(nb))  # red blocks in the report
    tables = html_tables(nb)
    for table in tables:  # every percentage shown is a number in range
        for col in [c for c in table.columns if "%" in c and "gap" not in c]:
            values = pd.to_numeric(table[col], errors="coerce").dropna()
            assert values.between(0, 100).all() and np.isfinite(values).all(), (notebook.name, col, list(values))
    assert not nan_shown(nb, tables), (notebook.name, nan_shown(nb, tables))  # a reader sees "–" or a reason
    shapes = [(len(t), tuple(t.columns)) for t in tables]
    for rows, must_have in EXPECTED_TABLES[notebook.name[:2]]:
        assert any(n == rows and set(must_have) <= set(cols) for n, cols in shapes), (notebook.name, must_have, shapes)
    if notebook.name.startswith("05_"):
        verdicts = next(t for t in tables if "verdict" in t.columns)["verdict"]
        assert set(verdicts) <= {"supported", "partly supported", "refuted", "inconclusive", "held", "reversed",
                                 "not confirmed"}


#: Per notebook: (rows, columns) of tables its quick run must show (all data sets are on this machine).
EXPECTED_TABLES = {
    "01": [(3, ["images", "mean", "std"])] * 3,
    "02": [(6, ["data set", "model", "val acc %", "val bal acc %", "test acc %", "test bal acc %"]),
           (2, ["accuracy %", "balanced acc %", "recall normal %", "recall bacterial %", "recall viral %"])],
    "03": [(3, ["searches", "best val acc mean %", "best val acc sd %", "epochs mean"]),
           (2, ["trials", "stopped early", "finished", "failed", "epochs", "train min", "device"]),
           (2, ["val mean %", "test mean %", "test 95 % CI over seeds", "test bal acc mean %"]),
           (1, ["baseline test %", "tuned test %", "difference"])],
    "04": [(2, ["trials", "stopped early", "finished", "failed", "epochs", "train min", "device"])] * 2
          + [(2, ["val mean %", "test mean %", "test 95 % CI over seeds", "test bal acc mean %"])] * 2,
    "05": [(10, ["hypothesis", "verdict", "evidence"])],
    "06": [(3, ["value", "rule", "met"]),
           (3, ["frames", "same top-1 as PyTorch", "same 'not sure' as PyTorch"])],
    "07": [(2, ["trials", "stopped early", "finished", "epochs", "minutes", "best val acc %", "test acc %"])],
}


def stderr_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """The text of every stderr stream and of every output that reads as a Python warning."""
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            if output.get("name") == "stderr" or "Warning:" in text:
                texts.append(text[:200])
    return texts


def nan_shown(nb: nbformat.NotebookNode, tables: list[pd.DataFrame]) -> list[str]:
    """Table cells and markdown outputs that show a bare NaN to the reader."""
    cells = [f"{table.columns[j]}: {v}" for table in tables for row in table.itertuples(index=False)
             for j, v in enumerate(row) if str(v).lower() == "nan"]
    prose = [text[:200] for cell in nb.cells for output in cell.get("outputs", [])
             for text in [output.get("data", {}).get("text/markdown", "")] if re.search(r"\bnan\b", text, re.I)]
    return cells + prose


def html_tables(nb: nbformat.NotebookNode) -> list[pd.DataFrame]:
    """The pandas tables a notebook displayed, read back from their HTML (index as the first column)."""
    tables = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            html = output.get("data", {}).get("text/html", "")
            if "<table" not in html:
                continue
            table = BeautifulSoup(html, "html.parser").find("table")
            header = [th.get_text(strip=True) for th in table.find("thead").find("tr").find_all("th")]
            rows = [[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in table.find("tbody").find_all("tr")]
            width = max([len(header)] + [len(r) for r in rows])
            header = [h or f"col{i}" for i, h in enumerate(header + [""] * (width - len(header)))]
            tables.append(pd.DataFrame([r + [""] * (width - len(r)) for r in rows], columns=header))
    return tables


def test_committed_notebooks_carry_a_full_run() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        counts = [c.execution_count for c in code]
        assert None not in counts and counts == sorted(counts), f"{path.name} not run top to bottom"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{path.name} has errors"
        stamp = "".join(o.get("text", "") for o in code[-1].outputs)
        assert "Run with BUDGET='full'" in stamp, f"{path.name} lacks its full-budget run stamp"
        assert not stderr_outputs(nb), f"{path.name} shows stderr or warnings: {stderr_outputs(nb)}"
        assert not nan_shown(nb, html_tables(nb)), f"{path.name} shows NaN: {nan_shown(nb, html_tables(nb))}"


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")  # after the quick runs above, on the same worker
def test_the_book_builds_offline_from_the_quick_notebooks_with_every_link_resolving(tmp_path: Path) -> None:
    from helpers.provenance import read_summary
    from helpers.reporting import book

    executed = paths.Outputs.for_budget("quick").root / "notebooks"
    for notebook in NOTEBOOKS:  # those the quick runs above left, else run now
        if not (executed / notebook.name).exists():
            execute(notebook, executed / notebook.name, budget="quick")
    notebooks = [executed / p.name for p in NOTEBOOKS]
    index = book.build(notebooks, tmp_path / "report", strict=True)  # Sphinx warnings are errors
    html_dir = index.parent
    page = BeautifulSoup(index.read_text(), "html.parser").get_text(" ")
    findings = [f for p in notebooks for f in (read_summary(p) or {}).get("findings", [])]
    assert len(findings) >= 8
    for f in findings:  # every number on the first page is the summary's
        assert " ".join(f["value"].split()) in " ".join(page.split()), f
    assert all((html_dir / "notebooks" / f"{p.stem}.html").exists() for p in NOTEBOOKS)
    assert (html_dir / "search.html").exists() and (html_dir / "docs" / "MODEL_CARD.html").exists()
    broken = []
    for html in html_dir.rglob("*.html"):
        soup = BeautifulSoup(html.read_text(), "html.parser")
        for a in soup.find_all("a", href=True):
            href = a["href"]
            if re.match(r"[a-z]+:", href) or href.startswith("#") and len(href) == 1:
                continue
            target, _, anchor = href.partition("#")
            path = (html.parent / target).resolve() if target else html
            if not path.exists():
                broken.append(f"{html.relative_to(html_dir)} -> {href}")
            elif anchor and path.suffix == ".html" and not BeautifulSoup(path.read_text(), "html.parser").find(id=anchor):
                broken.append(f"{html.relative_to(html_dir)} -> {href} (no such section)")
    assert not broken, broken[:20]


def test_a_partial_build_stages_every_chapter_so_links_resolve(tmp_path: Path) -> None:
    import yaml

    from helpers.reporting import book

    source = book.stage([NOTEBOOKS[2]], tmp_path / "source")  # e.g. `--budget quick --only 03`
    toc = yaml.safe_load((source / "_toc.yml").read_text())
    assert [c["file"] for c in toc["parts"][0]["chapters"]] == [f"notebooks/{p.stem}" for p in NOTEBOOKS]
    staged = {p.name: nbformat.read(source / "notebooks" / p.name, as_version=4) for p in NOTEBOOKS}
    assert len(staged[NOTEBOOKS[2].name].cells) > 10  # the one given, with its provenance note
    placeholder = staged[NOTEBOOKS[0].name]
    assert len(placeholder.cells) == 1 and "Not run in this build" in placeholder.cells[0].source
    assert placeholder.cells[0].source.startswith(f"# {book.title(NOTEBOOKS[0])}")


def test_tidy_drops_progress_bars_and_keeps_the_rest(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()", execution_count=1)
    bar = "search [tpe]: {:>3}%|{}| {}/2 [00:01<00:00,  3.28epoch/s, trials 3, best val acc 0.441]"
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\r" + bar.format(0, " " * 10, 0)),
                    nbformat.v4.new_output("stream", name="stderr", text="\r" + bar.format(50, "█" * 5 + " " * 5, 1)),
                    nbformat.v4.new_output("stream", name="stderr", text="\r" + bar.format(100, "█" * 10, 2) + "\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="data: 100 | 50 % of it\ndone\n")]
    cell.metadata["papermill"] = {"duration": 1.0}
    nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    tidy(path)
    out = nbformat.read(path, as_version=4).cells[0]
    assert [o.text for o in out.outputs] == ["data: 100 | 50 % of it\ndone\n"]
    assert "papermill" not in out.metadata


def test_compact_png_shrinks_a_real_figure_without_visible_change() -> None:
    fig = plots.show_samples(data.load_simpsons_mnist("rgb").subset(n_train=200, n_val=50, n_test=50), per_class=3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = buffer.getvalue()
    small = compact_png(png)
    assert len(small) < 0.7 * len(png)
    before = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    after = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=int)
    assert before.shape == after.shape
    assert np.abs(before - after).mean() < 6  # a few levels of 255 in the photos: not visible at this size


def test_compact_png_leaves_transparent_images_alone() -> None:
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 128))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert compact_png(buffer.getvalue()) == buffer.getvalue()


def test_finish_writes_findings_and_refuses_malformed_ones(tmp_path: Path) -> None:
    import json

    import torch

    from helpers import stats
    from helpers.provenance import RunStamp

    stamp = RunStamp("quick", torch.device("cpu"))
    line = stats.finding("tuned", "87.82 %", "03_hyperopt_tuning.ipynb#x", target=stats.target("t", [87.0, 88.0], 88.0))
    stamp.finish("99_test", outputs=paths.Outputs(tmp_path), findings=[line])
    written = json.loads((tmp_path / "summary" / "99_test.json").read_text())
    assert written["findings"] == [line]
    with pytest.raises(ValueError, match="keys"):
        stamp.finish("99_test", outputs=paths.Outputs(tmp_path), findings=[{"finding": "x"}])
