"""The report's landing page (``report/index.html``): the page a reader opens first.

Nothing on it is typed by hand. Each notebook's last cell writes a machine-readable summary into
the notebook (:meth:`helpers.provenance.RunStamp.finish`); the page shows the headline rows of every
summary in one table (data set × model: validation and test accuracy with intervals, what the run
spent, device), then one card per notebook: its first figure as a thumbnail, its run stamp, the git
commit it ran and whether its outputs may be stale (:func:`helpers.provenance.stale`), and a link.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import nbformat

from helpers.provenance import HEADLINE_KEYS, describe_state, git_state, read_summary, stale

STYLE = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:.9em;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .5em;"
         "text-align:left;vertical-align:top}th{background:#f3f3f3}.cards{display:grid;"
         "grid-template-columns:repeat(auto-fill,minmax(20em,1fr));gap:1em}.card{border:1px solid #ddd;"
         "border-radius:6px;padding:.8em}.card img{width:100%;max-height:16em;object-fit:contain;border:1px solid #eee}.stamp{font-size:.8em;color:#555}"
         ".stale{color:#a40;font-size:.85em}.fresh{color:#276;font-size:.85em}")


def first_figure(notebook: Path) -> bytes | None:
    """The PNG bytes of a notebook's first figure, or None."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                return base64.b64decode(png)
    return None


def stamp_text(notebook: Path) -> str:
    """The run stamp a notebook printed last (``Run with BUDGET=…``), or ''."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in reversed(nb.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            if text.startswith("Run with BUDGET="):
                return text.strip()
    return ""


def headline_rows(summaries: dict[str, dict | None]) -> list[dict[str, str]]:
    """Every summary's headline rows, each with the notebook it came from, in notebook order."""
    return [{"notebook": name, **{k: str(row.get(k, "")) for k in HEADLINE_KEYS}}
            for name, summary in summaries.items() if summary for row in summary.get("headline", [])]


def _cell(value: str) -> str:
    return f"<td>{html.escape(value)}</td>"


def write_index(notebooks: Sequence[Path], out_dir: Path, titles: dict[str, str], root: Path | None = None) -> Path:
    """Write ``out_dir/index.html`` (and the thumbnails in ``out_dir/thumbs/``) for the rendered notebooks."""
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    summaries = {p.stem: read_summary(p) for p in notebooks}
    rows = headline_rows(summaries)
    table = ("<table><thead><tr><th>notebook</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in HEADLINE_KEYS)
             + "</tr></thead><tbody>" + "".join(
                 f'<tr><td><a href="{r["notebook"]}.html">{html.escape(r["notebook"][:2])}</a></td>'
                 + "".join(_cell(r[k]) for k in HEADLINE_KEYS) + "</tr>" for r in rows) + "</tbody></table>")
    missing = [p.stem for p in notebooks if not summaries[p.stem]]
    cards = []
    for p in notebooks:
        summary = summaries[p.stem]
        png = first_figure(p)
        img = ""
        if png:
            (thumbs / f"{p.stem}.png").write_bytes(png)
            img = f'<a href="{p.stem}.html"><img src="thumbs/{p.stem}.png" alt="first figure of {html.escape(p.stem)}"></a>'
        recorded = summary.get("code") if summary else None
        why = stale(p, recorded, root)
        state = (f'<div class="stale">possibly stale: {html.escape(why)}</div>' if why else
                 f'<div class="fresh">outputs from {html.escape(describe_state(recorded))}; the code it imports is unchanged since</div>')
        cards.append(f'<div class="card"><h3><a href="{p.stem}.html">{html.escape(titles.get(p.stem, p.stem))}</a></h3>'
                     f'{img}<p class="stamp">{html.escape(summary["stamp"] if summary else stamp_text(p))}</p>{state}</div>')
    note = (f"<p>No headline rows yet from {', '.join(html.escape(m) for m in missing)}: their committed runs predate "
            f"the summaries; <code>make report</code> writes them.</p>" if missing else "")
    index = out_dir / "index.html"
    index.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>LeNet-5 hyperparameter tuning portfolio</title>"
        f"<style>{STYLE}</style></head><body><h1>LeNet-5 hyperparameter tuning portfolio</h1>"
        f"<p>Numbered notebooks that load three real image data sets, train and tune LeNet-5 with Hyperopt, test "
        f"common hunches, and end with a webcam demo. Rendered from {html.escape(describe_state(git_state(root)))}. "
        f"Every number below is read from the notebooks' own summaries. Beside the report: the "
        f"<a href='../docs/MODEL_CARD.md'>model card</a> of the webcam model and the "
        f"<a href='../docs/DATASHEET.md'>data sheet</a> of the three data sets.</p><h2>Headline results</h2>{table}{note}"
        f"<h2>The notebooks</h2><div class='cards'>{''.join(cards)}</div></body></html>", encoding="utf-8")
    return index
