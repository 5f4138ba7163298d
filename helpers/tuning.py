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
import torch
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, rand, space_eval, tpe
from hyperopt.base import miscs_update_idxs_vals, trials_from_docs
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.pyll import scope
from hyperopt.pyll.stochastic import sample
from tqdm import tqdm

from helpers.data import DataSplits
from helpers.models import build_model, count_parameters
from helpers.tracking import RunTracker
from helpers.training import TrainConfig, fit
from helpers.trialstore import load_trials, locked, save_trials

ALGORITHMS = ("tpe", "random", "grid")
MODEL_KEYS = ("conv_channels", "dense_units", "dropout", "batchnorm", "activation", "pool")


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


# ----------------------------------------------------------------------------------- configs


@dataclass
class RunConfig:
    """A sampled point turned into what training needs: model kwargs and a TrainConfig."""

    model: dict[str, Any]
    train: TrainConfig

    def describe(self) -> dict[str, Any]:
        """Flat, readable dict of the settings (for tables)."""
        t = self.train
        return {
            "optimizer": t.optimizer, "lr": t.lr, "momentum": t.momentum if t.optimizer in ("sgd", "rmsprop") else None,
            "weight_decay": t.weight_decay, "batch_size": t.batch_size,
            "conv": "/".join(map(str, self.model["conv_channels"])), "dense": "/".join(map(str, self.model["dense_units"])),
            "dropout": self.model.get("dropout", 0.0), "batchnorm": self.model.get("batchnorm", False),
            "augment": "flip+shift" if t.hflip and t.shift else "flip" if t.hflip else "shift" if t.shift else "none",
        }


def to_run_config(params: Mapping[str, Any], data: DataSplits, base_train: Mapping[str, Any]) -> RunConfig:
    """Map a point of the space (after ``space_eval``) onto model kwargs and a TrainConfig.

    ``base_train`` holds the settings the search does not vary (epochs, patience, seed, ...).
    Raises ``ValueError`` for values the model or the optimizer cannot use.
    """
    opt = params.get("optimizer", {"name": "sgd"})
    if isinstance(opt, str):
        opt = {"name": opt}
    augment = params.get("augment", "none")
    if augment not in ("none", "flip", "shift", "flip+shift"):
        raise ValueError(f"augment must be none / flip / shift / flip+shift, got {augment!r}")
    train_kwargs = dict(base_train)
    train_kwargs.update(
        optimizer=opt["name"], lr=float(opt.get("lr", params.get("lr", base_train.get("lr", 0.01)))),
        momentum=float(opt.get("momentum", base_train.get("momentum", 0.9))),
        weight_decay=float(params.get("weight_decay", base_train.get("weight_decay", 0.0))),
        batch_size=int(params.get("batch_size", base_train.get("batch_size", 64))),
        hflip="flip" in augment, shift=2 if "shift" in augment else 0,
    )
    model = {
        "in_channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes,
        "conv_channels": tuple(int(c) for c in params.get("conv", (params.get("conv1", 6), params.get("conv2", 16)))),
        "dense_units": tuple(int(u) for u in params.get("dense", (params.get("dense1", 120), params.get("dense2", 84)))),
        "dropout": float(params.get("dropout", 0.0)), "batchnorm": bool(params.get("batchnorm", False)),
    }
    for key in ("activation", "pool"):
        if key in params:
            model[key] = params[key]
    if min(model["conv_channels"] + model["dense_units"]) < 1:
        raise ValueError(f"layer widths must be positive, got {model['conv_channels']} / {model['dense_units']}")
    build_model(seed=None, **model)  # validates the model config (raises ValueError)
    return RunConfig(model, TrainConfig(**train_kwargs))


def validate_space(space: Mapping[str, Any], data: DataSplits, base_train: Mapping[str, Any],
                   n_samples: int = 50, seed: int = 0) -> None:
    """Sample the space and check every sample maps to a valid config, before any training.

    Raises ``ValueError`` naming the offending sample.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_samples):
        point = sample(space, rng=rng)
        try:
            to_run_config(point, data, base_train)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"invalid search space: the point {point} is not usable: {exc}") from exc


# ----------------------------------------------------------------------------------- objective


class Objective:
    """Trains one configuration and reports its validation result to Hyperopt.

    Each trial is logged to TensorBoard as ``runs/<experiment>/<algo>-trial-NNN`` with its
    hyperparameters (HParams dashboard). A diverging trial returns ``STATUS_FAIL`` with the reason.
    The result records what the model and optimizer actually received (parameter count, the
    optimizer's learning rate), so it can be shown that the search changes the trained model.
    """

    def __init__(self, data: DataSplits, base_train: Mapping[str, Any], experiment: str, algo: str,
                 budget: str = "full", device: str | torch.device = "auto", runs_root: Path | None = None,
                 train_fn: Callable = fit) -> None:
        self.data, self.base_train, self.experiment, self.algo = data, dict(base_train), experiment, algo
        self.budget, self.device, self.runs_root, self.train_fn = budget, device, runs_root, train_fn
        self.trial_index = 0

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        run = to_run_config(params, self.data, self.base_train)
        model = build_model(seed=run.train.seed, **run.model)
        tracker = RunTracker(self.experiment, f"{self.algo}-trial-{self.trial_index:03d}", self.budget, self.runs_root)
        try:
            result = self.train_fn(model, self.data, run.train, device=self.device, tracker=tracker)
            h = result.history
            applied = {"n_params": count_parameters(result.model), **h.optimizer}  # read off the objects trained
            hparams = {"algo": self.algo, **run.describe()}
            if h.diverged or not h.epochs:
                tracker.log_hparams(hparams, {"val_acc": float("nan"), "val_loss": float("nan")})
                return {"status": STATUS_FAIL, "failure": h.diverged or "no epoch finished",
                        "config": run.describe(), "applied": applied, "seconds": h.seconds,
                        "attachments": {"history": json.dumps(h.to_dict())}}
            best = h.best
            tracker.log_hparams(hparams, {"val_acc": best["val_acc"], "val_loss": best["val_loss"]})
            return {
                "status": STATUS_OK, "loss": 1.0 - best["val_acc"], "val_acc": best["val_acc"],
                "val_loss": best["val_loss"], "epochs": len(h.epochs), "best_epoch": h.best_epoch,
                "seconds": h.seconds, "config": run.describe(), "applied": applied,
                "attachments": {"history": json.dumps(h.to_dict())},
            }
        finally:
            tracker.close()


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
        d = asdict(self)
        d.pop("max_evals")  # a search may be extended to more trials
        return d


class SearchMismatchError(RuntimeError):
    """The trials file on disk belongs to a different search."""


class SearchFailedError(RuntimeError):
    """Every trial of a search's whole budget failed."""


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
    if spec.algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {ALGORITHMS}, got {spec.algo!r}")
    if spec.algo == "tpe":
        algo = partial(tpe.suggest, n_startup_jobs=spec.n_startup_jobs)
    elif spec.algo == "random":
        algo = rand.suggest
    else:
        if grid is None:
            raise ValueError("a grid search needs its grid axes")
        algo = grid_algo(grid)
        if spec.max_evals > algo.size:
            raise ValueError(f"max_evals {spec.max_evals} exceeds the grid's {algo.size} points")

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
                if isinstance(objective, Objective):
                    objective.trial_index = i
                try:
                    fmin(objective, space, algo=algo, max_evals=i + 1, trials=trials,
                         rstate=np.random.default_rng([spec.seed, i]), show_progressbar=False,
                         return_argmin=False, allow_trials_fmin=False)
                except AllTrialsFailed:  # fmin's own best-point look-up; the failed trial is recorded
                    pass
                if _finished(trials) != i + 1:  # the grid ran out of points
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


def _open_trials(trials_path: Path, spec: SearchSpec) -> Trials:
    """The saved trials of this search (finished ones only), or new empty trials."""
    trials = load_trials(trials_path)
    key = json.dumps(spec.key(), sort_keys=True)
    if trials is None:
        trials = Trials()
        trials.attachments["search_spec"] = key
        return trials
    if trials.attachments.get("search_spec") != key:
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


def history_of(trials: Trials, tid: int) -> dict[str, Any]:
    """The training history stored as an attachment of trial ``tid`` (0-based)."""
    trial = next(t for t in trials.trials if t["tid"] == tid)
    return json.loads(trials.trial_attachments(trial)["history"])


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


# ----------------------------------------------------------------------------------- comparisons


@dataclass
class SearchOutcome:
    """One algorithm's finished search."""

    algo: str
    trials: Trials
    space: dict[str, Any]
    frame: pd.DataFrame


def trials_file(results_dir: Path, name: str, algo: str) -> Path:
    """Where the trials of search ``name`` with ``algo`` are saved (JSON)."""
    return Path(results_dir) / f"{name}-{algo}.json"


def compare_algorithms(
    data: DataSplits, base_train: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], grid_fixed: Mapping[str, Any],
    *, name: str, n_trials: int | None = None, algos: Sequence[str] = ("grid", "random", "tpe"), seed: int = 0,
    n_startup_jobs: int = 8, budget: str = "full", device: str | torch.device = "auto",
    results_dir: Path | None = None, progress: bool = True, space_options: Mapping[str, Any] | None = None,
) -> dict[str, SearchOutcome]:
    """Run grid, random and TPE searches at the same budget (the grid's size unless given).

    TPE and random search use ``lenet_space(**space_options)``. Trials are saved to
    ``<results_dir>/<name>-<algo>.json`` after every trial, so re-running resumes; TensorBoard
    runs go to ``runs/<name>/<algo>-trial-NNN``.
    """
    from helpers import paths  # local: keeps the module importable without touching the disk

    results_dir = Path(results_dir) if results_dir is not None else paths.results_dir(budget)
    n_trials = n_trials or len(grid_points(grid))
    settings = {"base_train": dict(base_train), "data": data.sizes(), "space_options": {k: list(v) for k, v in (space_options or {}).items()}, "grid": {k: list(map(str, v)) for k, v in grid.items()},
                "grid_fixed": {k: str(v) for k, v in grid_fixed.items()}, "n_trials": n_trials}
    out = {}
    for algo in algos:
        algo_space = grid_space(grid, grid_fixed) if algo == "grid" else lenet_space(**(space_options or {}))
        objective = Objective(data, base_train, name, algo, budget=budget, device=device)
        spec = SearchSpec(name, algo, seed, n_trials, n_startup_jobs, extra=settings)
        path = trials_file(results_dir, name, algo)
        if progress and not path.exists() and path.with_suffix(".pkl").exists():
            print(f"{path.with_suffix('.pkl').name}: trials pickled by an earlier version are not loaded (unpickling "
                  f"can run code); this search starts afresh into {path.name}. Delete the .pkl file when it is done.")
        trials = run_search(objective, algo_space, spec, path,
                            grid=grid if algo == "grid" else None, progress=progress)
        out[algo] = SearchOutcome(algo, trials, algo_space, trials_frame(trials, algo_space, algo))
    return out


def comparison_table(outcomes: Mapping[str, SearchOutcome], reference_algo: str = "grid") -> pd.DataFrame:
    """Per algorithm: trials, failures, best validation accuracy, and trials needed to reach the
    reference algorithm's best validation accuracy."""
    target = outcomes[reference_algo].frame["val_acc"].max()
    rows = []
    for algo, o in outcomes.items():
        f = o.frame
        reached = trials_to_reach(f, target)
        rows.append({
            "algorithm": algo, "trials": len(f), "failed": int((f["status"] != STATUS_OK).sum()),
            "best val acc %": round(100 * f["val_acc"].max(), 2),
            f"trials to reach {reference_algo} best ({100 * target:.2f} %)": reached if reached is not None else f"not in {len(f)}",
            "search time min": round(f["seconds"].sum() / 60, 1),
        })
    return pd.DataFrame(rows).set_index("algorithm")


def best_overall(outcomes: Mapping[str, SearchOutcome]) -> tuple[str, pd.Series]:
    """(algorithm, trial row) of the highest validation accuracy across all searches."""
    algo, row = max(((a, best_trial(o.frame)) for a, o in outcomes.items()), key=lambda ar: ar[1]["val_acc"])
    return algo, row
