"""The report as a Jupyter Book: findings first, then the chapters, the method pages and the cards."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import nbformat
import yaml
from matplotlib.figure import Figure

from helpers import budgets
from helpers.paths import project_root, shown
from helpers.provenance import SUMMARY_MIME, read_summary
from helpers.reporting.staleness import stale
from helpers.stats import REPRODUCTION_BAND

#: Chapters whose findings the first page shows, with the heading they go under.
TOPICS = {"03": "Tuning LeNet-5", "04": "Tuning LeNet-5", "05": "Hunches, tested", "06": "The webcam model",
          "07": "Scaling out"}


def question(notebook: Path) -> str:
    """The text after ``**Question:**`` in a notebook's first cell, or ''."""
    first = nbformat.read(notebook, as_version=4).cells[0].source
    m = re.search(r"\*\*Question:\*\*\s*(.+)", first)
    return m.group(1).strip() if m else ""


def title(notebook: Path) -> str:
    """A notebook's first heading."""
    first = nbformat.read(notebook, as_version=4).cells[0].source
    return next((line.lstrip("#").strip() for line in first.splitlines() if line.startswith("#")), notebook.stem)


def finding_line(f: dict[str, str], link: str) -> str:
    """One finding as a Markdown bullet: what, number, interval, target and outcome, and where it is shown."""
    text = f"- **{f['finding']}**: {f['value']}"
    if f["interval"]:
        text += f" ({f['interval']})"
    if f["target"]:
        text += f"; target {f['target']}: **{f['outcome']}**"
    elif f["outcome"] and f["outcome"] != f["value"]:
        text += f": **{f['outcome']}**"
    return text + f". [Notebook {link.split('/')[-1][:2]}]({link})"


def _verdict(f: dict[str, str]) -> str:
    return f["outcome"] or f["value"]


def _short(f: dict[str, str], group: Sequence[dict[str, str]]) -> str:
    """A finding's name for the brief: up to its first colon (the second where a group shares it)."""
    head, _, rest = f["finding"].partition(": ")
    shared = sum(g["finding"].partition(": ")[0] == head for g in group) > 1
    head = head.split(" (")[0].split(", ")[0]
    return f"{head}: {rest.split(': ')[0].split(' (')[0]}" if shared and rest else head


def brief(notebooks: Sequence[Path]) -> list[str]:
    """One line per chapter: its targets met, each target's value and outcome, the other verdicts."""
    lines = []
    for p in notebooks:
        group = (read_summary(p) or {}).get("findings", [])
        if p.name[:2] not in TOPICS or not group:
            continue
        targets, others = [f for f in group if f["target"]], [f for f in group if not f["target"]]
        parts = []
        if targets:
            met = sum(_verdict(f).startswith("met") for f in targets)
            parts.append(f"{met} of {len(targets)} target{'s' if len(targets) > 1 else ''} met: " + "; ".join(
                f"{_short(f, group)} {f['value']} ({_verdict(f)})" for f in targets))
        if len(others) > 3:  # many verdicts (the hunches): counted
            verdicts = [_verdict(f) for f in others]
            parts.append(f"{len(others)} verdicts: " + ", ".join(
                f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts), key=lambda v: (-verdicts.count(v), v))))
        else:
            parts += [f"{_short(f, group)}" + (f" ({f['value']})" if f["value"] != _verdict(f) else "") + f": {_verdict(f)}"
                      for f in others]
        lines.append(f"- **[{title(p)}](notebooks/{p.name})**. " + ". ".join(x[0].upper() + x[1:] for x in parts) + ".")
    return lines


_TARGET = re.compile(r"([≥≤])\s*([\d.]+)\s*%")
_VALUE = re.compile(r"^\s*([\d.]+)\s*%\s*$")
_CI = re.compile(r"95 % CI ([\d.]+)\s*[–-]\s*([\d.]+)\s*%")
TARGETS_FIGURE = "targets.png"


def target_rows(notebooks: Sequence[Path]) -> list[dict[str, Any]]:
    """Every finding with a target in % (read from the summaries): chapter, name, value and its 95 % interval,
    threshold, whether at most, met."""
    rows = []
    for p in notebooks:
        for f in (read_summary(p) or {}).get("findings", []):
            t, v = _TARGET.search(f.get("target", "")), _VALUE.match(f.get("value", ""))
            if not (t and v):
                continue
            ci = _CI.search(f.get("interval", ""))
            rows.append({"chapter": p.name[:2], "finding": f["finding"], "value": float(v[1]),
                         "low": float(ci[1]) if ci else float("nan"), "high": float(ci[2]) if ci else float("nan"),
                         "threshold": float(t[2]), "at most": t[1] == "≤", "met": f["outcome"].startswith("met")})
    return rows


def plot_targets(rows: Sequence[dict[str, Any]]) -> Figure:
    """Each target in %: its value with the 95 % interval, the threshold, met (green) or missed (red)."""
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.2))
    for i, r in enumerate(rows):
        colour = "seagreen" if r["met"] else "firebrick"
        ax.plot([r["low"], r["high"]], [i, i], color=colour, lw=2, alpha=0.6)
        ax.plot(r["value"], i, "o", color=colour)
        ax.plot(r["threshold"], i, marker="<" if r["at most"] else ">", color="black", ms=7)
    names = [re.sub(r"\s*\([^)]*\)", "", r["finding"]) for r in rows]  # parentheses: detail for the list
    labels = [f"{n[:58]}{'…' if len(n) > 58 else ''} ({r['chapter']})" for n, r in zip(names, rows)]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="% (dot: value; bar: 95 % interval; arrow: target, pointing where it is met)",
           title="Every target in %: met (green) or missed (red)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def findings_page(notebooks: Sequence[Path]) -> str:
    """The book's first page, built from the summaries inside ``notebooks`` (their ``findings``)."""
    summaries = {p.name[:2]: read_summary(p) for p in notebooks}
    lines = ["# What was found", "",
             "LeNet-5 tuned with Hyperopt on three real image data sets, hunches about hyperparameters tested one at "
             "a time, and a webcam model that says *not sure* rather than a wrong name. Every number on this page is "
             "read from the summary each notebook wrote when it ran; the chapters show how it was reached.", "",
             f"**How far results reproduce.** Bit-exactly on one machine, not across machines: CPU float differences "
             f"can send a search elsewhere, and a from-scratch re-run on another machine of the same kind moved "
             f"notebook 03's means by up to {REPRODUCTION_BAND:g} points. A target met or missed by less than that is "
             f"reported as within the band, not as a finding.", "", "## In brief", "", *brief(notebooks),
             "", "Each finding in full, with its interval and a link to the section that shows it:"]
    topic = None
    for key, summary in summaries.items():
        if key not in TOPICS or not summary:
            continue
        if TOPICS[key] != topic:
            topic = TOPICS[key]
            lines += ["", f"## {topic}", ""]
        for f in summary.get("findings", []):
            page, _, anchor = f["section"].partition("#")
            lines.append(finding_line(f, f"notebooks/{page}" + (f"#{anchor}" if anchor else "")))
    missing = [p.name for p in notebooks if p.name[:2] in TOPICS and not (summaries[p.name[:2]] or {}).get("findings")]
    if missing:
        lines += ["", f"*No findings yet from {', '.join(missing)}: their runs predate findings; `make report` "
                      f"writes them.*"]
    if target_rows(notebooks):
        lines += ["", f"![Every target in %, met or missed]({TARGETS_FIGURE})", "",
                  "*Figure: every target stated in %, read from the summaries: the dot is the value, the bar its "
                  "95 % interval, the arrow the target, pointing the way it is met.*"]
    lines += ["", "## The chapters", "", "| chapter | question |", "|---|---|"]
    for p in notebooks:  # the questions' links to other chapters, as seen from the book's root
        asked = re.sub(r"\]\((\d\d_)", r"](notebooks/\1", question(p))
        lines.append(f"| [{title(p)}](notebooks/{p.name}) | {asked} |")
    return "\n".join(lines) + "\n"


def provenance_note(notebook: Path, root: Path | None = None) -> str:
    """How a chapter's outputs were made (its run stamp) and whether they may be stale (:func:`stale`)."""
    summary = read_summary(notebook)
    if not summary:
        return "```{note}\nThis chapter's outputs carry no run summary: re-run it with `make report`.\n```"
    why = stale(notebook, summary.get("code"), root)
    state = (f"**Possibly stale:** {why}." if why else
             "The code it imports is unchanged since that run.")
    return f"```{{note}}\n{summary['stamp']} {reuse_note(notebook)} {state}\n```".replace("  ", " ")


#: where an executed notebook records what earlier runs had left that it could reuse (``runner.stored_work``)
STORED_KEY = "stored_before_run"


def reuse_note(notebook: Path) -> str:
    """What the run found stored by earlier runs, so its wall time reads right (the runner's record), or ''."""
    before = nbformat.read(notebook, as_version=4).metadata.get(STORED_KEY)
    if not isinstance(before, dict):
        return ""
    if not any(before.values()):
        return "It started with nothing stored by earlier runs: everything shown was computed in this run."
    kinds = (("searches", "search"), ("trained runs", "trained run"), ("cached results", "cached result"))
    found = ", ".join(f"{n:,} {many if n != 1 else one}" for many, one in kinds if (n := int(before.get(many, 0))))
    scratch = budgets.MINUTES.get(notebook.name[:2], (None,))[0]
    return (f"It started with {found} stored by earlier runs on this machine, reused where their settings match, "
            f"so its wall time may be shorter than a run from scratch" + (f" (about {scratch} min)." if scratch else "."))


def placeholder(notebook: Path) -> nbformat.NotebookNode:
    """A page standing in for a chapter this build did not run: its title and where its committed run is."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        f"# {title(notebook)}\n\nNot run in this build: the committed chapter, with its full-budget outputs, is "
        f"`notebooks/{notebook.name}` (`make book` shows it).")])


#: The file that marks a book source folder as this project's, so that a rebuild may delete it.
MARKER = ".portfolio-book-source"


def stage(notebooks: Sequence[Path], dest: Path, root: Path | None = None) -> Path:
    """The book's source in ``dest``: config, findings page, notebooks with provenance notes, docs."""
    root = Path(root or project_root())
    if dest.exists() and any(dest.iterdir()):
        if not (dest / MARKER).is_file():  # a folder somebody else made: never deleted
            raise ValueError(f"{shown(dest)} already exists and was not made by this project's book build (no "
                             f"{MARKER} in it), so it is left as it is: choose another --report-dir, or move the "
                             f"folder away (an earlier version's build may be deleted: `rm -r {shown(dest)}`)")
        shutil.rmtree(dest)
    (dest / "notebooks").mkdir(parents=True, exist_ok=True)
    (dest / MARKER).write_text("made by helpers.reporting.book.stage; rebuilt (deleted first) on every build\n")
    shutil.copy2(root / "book" / "_config.yml", dest / "_config.yml")
    shutil.copytree(root / "docs", dest / "docs")
    given = {p.name for p in notebooks}
    missing = [p for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")) if p.name not in given]
    for path in missing:  # a partial (e.g. quick `--only 03`) build keeps every link to a chapter working
        nbformat.write(placeholder(path), dest / "notebooks" / path.name)
    toc = yaml.safe_load((root / "book" / "_toc.yml").read_text(encoding="utf-8"))
    toc["parts"][0]["chapters"] = [{"file": f"notebooks/{Path(n).stem}"} for n in sorted(given | {p.name for p in missing})]
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if SUMMARY_MIME not in o.get("data", {})]
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(provenance_note(path, root)))
        nbformat.write(nb, dest / "notebooks" / path.name)
    (dest / "index.md").write_text(findings_page(notebooks), encoding="utf-8")
    rows = target_rows(notebooks)
    if rows:
        fig = plot_targets(rows)
        fig.savefig(dest / TARGETS_FIGURE, dpi=90)
        plt.close(fig)
    return dest


def build(notebooks: Sequence[Path], out: Path, *, strict: bool = True, root: Path | None = None) -> Path:
    """Stage and build the book into ``out`` (``strict``: warnings fail); nothing runs. The first page."""
    source = stage(notebooks, out / "source", root)
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(source), "--path-output", str(out)]
    if strict:
        command += ["-W", "-n", "--keep-going"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"jupyter-book build failed:\n{tail}")
    return out / "_build" / "html" / "index.html"
