"""Hyperopt search over LeNet-5 hyperparameters: TPE, random search and an exhaustive grid.

Design choices, each answering a known Hyperopt trap:

* **Persistence.** ``fmin(trials_save_file=...)`` rewrites a pickle in place, so a kill during
  the write corrupts it, and loading a pickle can run code. :func:`run_search` calls ``fmin`` one
  trial at a time and saves the trials as JSON, atomically, after every finished trial, under an
  exclusive lock (:mod:`helpers.trialstore`). Re-running the same call resumes: finished trials are
  kept, never re-run.
* **Seeds.** ``fmin`` restarts its seed sequence on every call, so a resumed search would replay
  the first suggestions. Here trial ``i`` always draws from ``default_rng([seed, i])``: the same
  seed gives the same suggestions, and a resumed search continues exactly where it stopped.
* **TPE start-up.** TPE's first ``n_startup_jobs`` suggestions (20 by default) are random, so with
  ~20 trials TPE *is* random search. The start-up count is set explicitly (default 8).
* **Labels vs values.** ``fmin``'s ``best`` holds indices for ``hp.choice`` and floats for
  ``quniform``; every config used or shown here goes through :func:`hyperopt.space_eval` and
  :func:`to_run_config`, so batch sizes, widths and flags are real values.
* **Failures.** A diverging trial is recorded as ``STATUS_FAIL`` with its reason and has no loss;
  the search goes on (also when the first trial fails, where ``fmin`` itself would raise
  ``AllTrialsFailed``), and tables, plots and the best trial skip it. Only a whole budget of failed
  trials is an error (:class:`SearchFailedError`, listing the reasons).
* **Validation only.** The objective reports validation metrics; the test split is untouched.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, rand, space_eval, tpe
from hyperopt.base import miscs_update_idxs_vals, trials_from_docs
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.pyll import scope
from tqdm import tqdm

from helpers import cache_version
from helpers.objective import Objective, validate_space
from helpers.trialstore import load_trials, locked, save_trials

ALGORITHMS = ("tpe", "random", "grid")


# ----------------------------------------------------------------------------------- spaces


def lenet_space(conv1: Sequence[int] = (6, 12, 24), conv2: Sequence[int] = (16, 32, 48)) -> dict[str, Any]:
    """The search space over LeNet-5 and its training (conditional optimizer parameters).

    ``conv1`` / ``conv2`` are the channel counts the two conv layers may take (narrower lists
    keep trials affordable on large inputs).
    """
    log = math.log
    return {
        "optimizer": hp.choice("optimizer", [
            {"name": "sgd", "lr": hp.loguniform("sgd_lr", log(3e-3), log(0.3)),
             "momentum": hp.uniform("sgd_momentum", 0.5, 0.97)},
            {"name": "adam", "lr": hp.loguniform("adam_lr", log(1e-4), log(1e-2))},
            {"name": "adamw", "lr": hp.loguniform("adamw_lr", log(1e-4), log(1e-2))},
            {"name": "rmsprop", "lr": hp.loguniform("rmsprop_lr", log(1e-4), log(3e-3)),
             "momentum": hp.uniform("rmsprop_momentum", 0.0, 0.9)},
        ]),
        "weight_decay": hp.loguniform("weight_decay", log(1e-6), log(1e-2)),
        "batch_size": hp.choice("batch_size", [32, 64, 128, 256]),
        "conv1": hp.choice("conv1", list(conv1)),
        "conv2": hp.choice("conv2", list(conv2)),
        "dense1": scope.int(hp.quniform("dense1", 32, 384, 16)),
        "dense2": scope.int(hp.quniform("dense2", 16, 192, 16)),
        "dropout": hp.uniform("dropout", 0.0, 0.5),
        "batchnorm": hp.choice("batchnorm", [False, True]),
        "augment": hp.choice("augment", ["none", "flip", "flip+shift"]),
    }


def grid_space(grid: Mapping[str, Sequence[Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """A fully discrete space: one ``hp.choice`` per grid axis, plus fixed values."""
    space: dict[str, Any] = dict(fixed)
    for name, values in grid.items():
        space[name] = hp.choice(name, list(values))
    return space


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, int]]:
    """Every combination of the grid, as ``{label: choice index}`` in a fixed order."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(range(len(grid[n])) for n in names))]


def grid_algo(grid: Mapping[str, Sequence[Any]]) -> Callable:
    """A Hyperopt ``algo`` that proposes the grid's points in order, then stops."""
    points = grid_points(grid)

    def suggest(new_ids, domain, trials, seed):  # noqa: ARG001 (seed: the grid is not random)
        docs = []
        for offset, new_id in enumerate(new_ids):
            k = len(trials.trials) + offset
            if k >= len(points):
                break
            idxs = {label: [new_id] for label in points[k]}
            vals = {label: [index] for label, index in points[k].items()}
            misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
            miscs_update_idxs_vals([misc], idxs, vals)
            docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
        return docs

    suggest.size = len(points)  # type: ignore[attr-defined]
    return suggest


# ----------------------------------------------------------------------------------- search


@dataclass
class SearchSpec:
    """What identifies a search (stored with its trials so a resume cannot mix searches)."""

    name: str
    algo: str
    seed: int
    max_evals: int
    n_startup_jobs: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """What a resumed search must match (with the cache version, so new code never extends old trials)."""
        d = asdict(self)
        d.pop("max_evals")  # a search may be extended to more trials
        d["cache_version"] = cache_version.CACHE_VERSION
        return d


class SearchMismatchError(RuntimeError):
    """The trials file on disk belongs to a different search."""


class SearchFailedError(RuntimeError):
    """Every trial of a search's whole budget failed."""


def trials_file(results_dir: Path, name: str, algo: str) -> Path:
    """Where the trials of search ``name`` with ``algo`` are saved (JSON)."""
    return Path(results_dir) / f"{name}-{algo}.json"


def _finished(trials: Trials) -> int:
    return sum(1 for t in trials.trials if t["result"].get("status") in (STATUS_OK, STATUS_FAIL))


def run_search(
    objective: Objective | Callable[[dict], dict],
    space: Mapping[str, Any],
    spec: SearchSpec,
    trials_path: Path,
    grid: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
) -> Trials:
    """Run (or resume) a search of ``spec.max_evals`` trials; the Trials are saved after each one.

    ``spec.algo`` is ``'tpe'``, ``'random'`` or ``'grid'`` (``grid`` then gives the axes and
    ``space`` must be :func:`grid_space` of it). Returns the Trials.
    """
    algo = _suggest_function(spec, grid)
    if isinstance(objective, Objective):  # fail fast on an unusable space, before any training
        validate_space(space, objective.data, objective.base_train)
    with locked(trials_path):
        trials = _open_trials(trials_path, spec)
        done = _finished(trials)
        if done and progress:
            print(f"{spec.name} [{spec.algo}]: resuming: {done} of {spec.max_evals} trials were finished earlier and "
                  f"are loaded from {trials_path.name}, not re-run")
        bar = tqdm(total=spec.max_evals, initial=done, desc=f"{spec.name} [{spec.algo}]", unit="trial",
                   disable=not progress, mininterval=0, dynamic_ncols=False, ncols=100)
        try:
            for i in range(done, spec.max_evals):
                if not _run_trial(objective, space, algo, trials, spec, i):  # the grid ran out of points
                    break
                save_trials(trials, trials_path)
                bar.update(1)
                ok = [t["result"]["val_acc"] for t in trials.trials if t["result"].get("status") == STATUS_OK]
                if ok:
                    bar.set_postfix_str(f"best val acc {max(ok):.3f}")
        finally:
            bar.close()
    _raise_if_all_failed(trials, spec)
    return trials


def _suggest_function(spec: SearchSpec, grid: Mapping[str, Sequence[Any]] | None) -> Callable:
    """Hyperopt's ``algo`` for ``spec.algo``: TPE with its start-up count, random search, or the grid."""
    if spec.algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {ALGORITHMS}, got {spec.algo!r}")
    if spec.algo == "tpe":
        return partial(tpe.suggest, n_startup_jobs=spec.n_startup_jobs)
    if spec.algo == "random":
        return rand.suggest
    if grid is None:
        raise ValueError("a grid search needs its grid axes")
    algo = grid_algo(grid)
    if spec.max_evals > algo.size:
        raise ValueError(f"max_evals {spec.max_evals} exceeds the grid's {algo.size} points")
    return algo


def _run_trial(objective: Callable, space: Mapping[str, Any], algo: Callable, trials: Trials, spec: SearchSpec,
               i: int) -> bool:
    """Propose and run trial ``i`` (seeded by ``[spec.seed, i]``); False when no point was left to propose."""
    if isinstance(objective, Objective):
        objective.trial_index = i
    try:
        fmin(objective, space, algo=algo, max_evals=i + 1, trials=trials, rstate=np.random.default_rng([spec.seed, i]),
             show_progressbar=False, return_argmin=False, allow_trials_fmin=False)
    except AllTrialsFailed:  # fmin's own best-point look-up; the failed trial is recorded
        pass
    return _finished(trials) == i + 1


def _open_trials(trials_path: Path, spec: SearchSpec) -> Trials:
    """The saved trials of this search (finished ones only), or new empty trials."""
    trials = load_trials(trials_path)
    key = json.dumps(spec.key(), sort_keys=True)
    if trials is None:
        trials = Trials()
        trials.attachments["search_spec"] = key
        return trials
    if trials.attachments.get("search_spec") != key:
        stored = json.loads(trials.attachments.get("search_spec") or "{}")
        if {k: v for k, v in stored.items() if k != "cache_version"} == {
                k: v for k, v in spec.key().items() if k != "cache_version"}:
            raise SearchMismatchError(
                f"{trials_path} holds trials computed by older training code (cache version "
                f"{stored.get('cache_version', 0)}, now {cache_version.CACHE_VERSION}): delete it and run the search "
                f"again, so that every trial is computed by the same code"
            )
        raise SearchMismatchError(
            f"{trials_path} holds trials of another search ({trials.attachments.get('search_spec')}); "
            f"use another file name or delete it to start afresh"
        )
    finished = [t for t in trials.trials if t["result"].get("status") in (STATUS_OK, STATUS_FAIL)]
    if len(finished) < len(trials.trials):  # none are saved unfinished, but be safe: re-run them
        rebuilt = trials_from_docs(finished)
        rebuilt.attachments.update(trials.attachments)
        trials = rebuilt
    return trials


def _raise_if_all_failed(trials: Trials, spec: SearchSpec) -> None:
    results = [t["result"] for t in trials.trials]
    if len(results) >= spec.max_evals and not any(r.get("status") == STATUS_OK for r in results):
        reasons = sorted({str(r.get("failure", "no reason recorded")) for r in results})
        raise SearchFailedError(
            f"{spec.name} [{spec.algo}]: all {len(results)} trials failed. Reasons: " + "; ".join(reasons)
            + ". Narrow the search space (e.g. lower learning rates) or check the data, then run it again."
        )


# ----------------------------------------------------------------------------------- analysis


def trials_frame(trials: Trials, space: Mapping[str, Any], algo: str = "") -> pd.DataFrame:
    """One row per finished trial: status, validation metrics, time and the *decoded* config."""
    rows = []
    for t in trials.trials:
        result = t["result"]
        if result.get("status") not in (STATUS_OK, STATUS_FAIL):
            continue
        vals = {k: v[0] for k, v in t["misc"]["vals"].items() if v}
        point = space_eval(space, vals)  # choice indices -> values
        row = {"trial": t["tid"] + 1, "algo": algo, "status": result["status"],
               "val_acc": result.get("val_acc", np.nan), "val_loss": result.get("val_loss", np.nan),
               "seconds": result.get("seconds", np.nan), "epochs": result.get("epochs", np.nan),
               "failure": result.get("failure", "")}
        row.update(result.get("config") or {})
        for key in ("conv", "dense"):  # numeric layer widths too: a string like "24/48" is no scale
            if isinstance(row.get(key), str):
                for k, width in enumerate(row[key].split("/"), start=1):
                    row[f"{key}{k}"] = int(width)
        row["n_params"] = (result.get("applied") or {}).get("n_params", np.nan)
        row["point"] = point
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["best_so_far"] = frame["val_acc"].fillna(-np.inf).cummax().replace(-np.inf, np.nan)
    return frame


def best_trial(frame: pd.DataFrame) -> pd.Series:
    """The successful trial with the highest validation accuracy (failed trials are skipped)."""
    ok = frame[frame["status"] == STATUS_OK]
    if ok.empty:
        raise ValueError("no trial finished successfully")
    return ok.loc[ok["val_acc"].idxmax()]


def trials_to_reach(frame: pd.DataFrame, target: float) -> int | None:
    """How many trials the search needed until its best validation accuracy reached ``target``."""
    hit = frame.index[frame["best_so_far"] >= target - 1e-12]
    return int(frame.loc[hit[0], "trial"]) if len(hit) else None


def importance(frame: pd.DataFrame, params: Sequence[str], bins: int = 4) -> pd.Series:
    """A simple importance estimate: share of validation-accuracy variance explained by each
    hyperparameter alone (eta squared; numeric ones binned into ``bins`` quantiles)."""
    ok = frame[frame["status"] == STATUS_OK]
    y = ok["val_acc"].astype(float)
    total = ((y - y.mean()) ** 2).sum()
    out = {}
    for p in params:
        x = ok[p]
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x) and x.nunique() > bins:
            x = pd.qcut(x.astype(float), bins, duplicates="drop")
        groups = y.groupby(x.astype(str), observed=True)
        between = sum(len(g) * (g.mean() - y.mean()) ** 2 for _, g in groups)
        out[p] = float(between / total) if total > 0 else 0.0
    return pd.Series(out, name="variance explained").sort_values(ascending=False)
