"""Execute the numbered notebooks (papermill) and build the report, a Jupyter Book (:mod:`helpers.reporting.book`)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import papermill
from nbconvert.preprocessors import CoalesceStreamsPreprocessor
from PIL import Image

from helpers.paths import BUDGETS, output_dir, project_root
from helpers.reporting import book


def notebook_paths(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks, in order."""
    folder = folder or project_root() / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def stored_work(outputs_root: Path) -> dict[str, int]:
    """What earlier runs left for a run to reuse: stored searches, trained runs, cached results (file counts)."""
    results, store = Path(outputs_root) / "results", Path(outputs_root) / "models" / "store"
    return {"searches": len(list(results.glob("*.json"))) if results.is_dir() else 0,
            "trained runs": len(list(store.glob("*.pt"))) if store.is_dir() else 0,
            "cached results": sum(1 for d in results.iterdir() if d.is_dir() for f in d.rglob("*") if f.is_file())
            if results.is_dir() else 0}


def record_stored(notebook: Path, before: dict[str, int]) -> None:
    """Write :func:`stored_work` as it was before the run into the executed notebook's metadata."""
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata[book.STORED_KEY] = dict(before)
    nbformat.write(nb, notebook)


#: glibc's allocator told to keep freed memory instead of handing it back to the system after every training step
#: (which then faults it in again): 5-8 % more images/s on this CPU, the same numbers (``make benchmark
#: ARGS=--levers``). Set for the notebooks' kernels unless the environment already sets them; other systems ignore it.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "10000000000",
                 "MALLOC_TOP_PAD_": "536870912"}


def execute(notebook: Path, output: Path, budget: str = "full", parameters: dict | None = None,
            timeout: int | None = None) -> Path:
    """Run ``notebook`` top to bottom into ``output`` with ``BUDGET=budget``."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}")
    params = dict(parameters or {})
    if budget != "full":
        params["BUDGET"] = budget
    output.parent.mkdir(parents=True, exist_ok=True)
    for name, value in ALLOCATOR_ENV.items():  # the kernel papermill starts inherits this process's environment
        os.environ.setdefault(name, value)
    papermill.execute_notebook(
        str(notebook), str(output), parameters=params, cwd=str(notebook.parent),
        kernel_name="python3", progress_bar=False, execution_timeout=timeout,
    )
    return output


def run_all(budget: str, report_dir: Path, only: list[str] | None = None, execute_notebooks: bool = True) -> Path:
    """Execute the notebooks and build the book; returns the path of its first page."""
    notebooks = notebook_paths()
    if only is not None:
        prefixes = [o.strip() for o in only if o.strip()]
        if not prefixes:  # `--only` alone would otherwise run every notebook at full budget
            raise ValueError("--only needs at least one notebook number, e.g. --only 03 (without --only, every "
                             "notebook runs)")
        notebooks = [p for p in notebooks if any(p.name.startswith(o) for o in prefixes)]
        if not notebooks:
            raise ValueError(f"no notebooks matched --only {' '.join(prefixes)}; the notebooks are "
                             f"{', '.join(p.name for p in notebook_paths())}")
    executed_dir = output_dir(budget) / "notebooks"
    if execute_notebooks:
        for nb_path in notebooks:
            started = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] running {nb_path.name} (BUDGET={budget!r}) ...", flush=True)
            tmp = nb_path.with_name(f".{nb_path.stem}.running.ipynb")
            before = stored_work(output_dir(budget))  # what it may reuse: said beside its run time in the book
            try:
                execute(nb_path, tmp, budget)
            except Exception:
                failed = report_dir / f"{nb_path.stem}.failed.ipynb"
                report_dir.mkdir(parents=True, exist_ok=True)
                if tmp.exists():
                    shutil.move(str(tmp), failed)
                print(f"{nb_path.name} failed; its partial run is in {failed}; the committed notebook is untouched.",
                      file=sys.stderr)
                raise
            slowest = record_timings(tmp, output_dir(budget) / "timings" / f"{nb_path.stem}.json")
            tidy(tmp)
            record_stored(tmp, before)
            skipped = skipped_datasets(tmp)
            if budget == "full" and skipped:  # finished, but without some data: not a full run
                partial = report_dir / f"{nb_path.stem}.partial.ipynb"
                report_dir.mkdir(parents=True, exist_ok=True)
                shutil.move(str(tmp), partial)
                print(f"{nb_path.name} ran without the data set(s) {', '.join(skipped)}; its run is in {partial}; the "
                      f"committed notebook is untouched (get the data with `make data`, then run it again).",
                      file=sys.stderr)
            elif budget == "full":
                tmp.replace(nb_path)
            else:
                executed_dir.mkdir(parents=True, exist_ok=True)
                shutil.move(str(tmp), executed_dir / nb_path.name)
            print(f"    done in {time.perf_counter() - started:.0f} s; slowest cells: "
                  + "; ".join(f"{t['cell']} ({t['first line']}) {t['seconds']:.0f} s" for t in slowest[:3]), flush=True)
    if budget == "full":
        rendered = notebook_paths()  # the whole report, including notebooks not re-run
    else:  # this budget's executed copies where there are some, never mixed with the committed ones
        rendered = [executed_dir / p.name for p in notebook_paths() if (executed_dir / p.name).exists()]
    index = book.build(rendered, report_dir)
    print(f"report: {index}")
    return index


def record_timings(notebook: Path, path: Path) -> list[dict]:
    """Each code cell's run time from papermill's metadata (which :func:`tidy` drops), written to ``path`` as JSON
    (where a run's time went, for the next speed-up); returned slowest first."""
    nb = nbformat.read(notebook, as_version=4)
    rows = [{"cell": index, "first line": (cell.source.splitlines() or [""])[0][:60],
             "seconds": round(float(cell.metadata.get("papermill", {}).get("duration") or 0.0), 1)}
            for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return sorted(rows, key=lambda r: -r["seconds"])


def skipped_datasets(notebook: Path) -> list[str]:
    """The data sets an executed notebook skipped because they were missing (``helpers.data.try_load``)."""
    nb = nbformat.read(notebook, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return sorted(set(re.findall(r"^SKIPPED (\S+?):", text, flags=re.MULTILINE)))


def compact_png(png: bytes, colors: int = 256) -> bytes:
    """``png`` as a palette PNG of at most ``colors`` colours when that is smaller, else unchanged."""
    with Image.open(io.BytesIO(png)) as image:
        if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
            return png
        buffer = io.BytesIO()
        palette = image.convert("RGB").quantize(colors, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        palette.save(buffer, "PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(png) else png


#: A tqdm progress bar's line, e.g. ``04-xray-w [tpe]: 100%|█████| 6/6 [00:01<00:00, 3.28epoch/s]``.
PROGRESS_BAR = re.compile(r"^.*\d+%\|[^|\n]*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?\s*\[.*$\n?", re.MULTILINE)


def without_progress_bars(text: str) -> str:
    """``text`` without tqdm's progress-bar lines (how far a loop had got: nothing a reader needs afterwards)."""
    return PROGRESS_BAR.sub("", text)


def tidy(path: Path) -> None:
    """Merge stream outputs as a terminal shows them, drop progress bars, compact PNGs, drop papermill's timings
    and paths."""
    nb = nbformat.read(path, as_version=4)
    coalesce = CoalesceStreamsPreprocessor()
    for key in ("input_path", "output_path"):  # this machine's absolute paths: not for a committed notebook
        nb.metadata.get("papermill", {}).pop(key, None)
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            coalesce.preprocess_cell(cell, {}, index)
            for output in cell.outputs:
                if output.output_type == "stream":
                    output.text = without_progress_bars(output.text)
            cell.outputs = [o for o in cell.outputs if o.output_type != "stream" or o.text.strip()]
            for output in cell.outputs:
                data = output.get("data", {})
                if "image/png" in data:
                    png = base64.b64decode(data["image/png"])
                    data["image/png"] = base64.b64encode(compact_png(png)).decode("ascii")
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=BUDGETS, default="full")
    parser.add_argument("--report-dir", type=Path, default=project_root() / "report")
    parser.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 03")
    parser.add_argument("--render-only", action="store_true",
                        help="build the book from the committed notebooks (seconds), run nothing")
    args = parser.parse_args(argv)
    run_all(args.budget, args.report_dir, args.only, execute_notebooks=not args.render_only)
    return 0


if __name__ == "__main__":
    from helpers import plumbing

    sys.exit(plumbing.run(main))
