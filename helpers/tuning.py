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
* **Budget-aware.** With :class:`~helpers.rungs.Rungs` a trial trains for up to ``max_epochs`` and
  is stopped at a rung where it falls behind earlier trials (ASHA); a stopped trial goes to TPE as
  ``STATUS_OK`` with ``loss = 1 − val_acc`` at that rung. ``epoch_budget`` caps the epochs of a
  whole search, so algorithms are compared at equal total epochs rather than equal trials.
* **Validation only.** The objective reports validation metrics; the test split is untouched.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, rand, tpe
from hyperopt.base import miscs_update_idxs_vals, trials_from_docs
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.pyll import scope
from tqdm import tqdm

from helpers import cache_version
from helpers.objective import Objective, validate_space
from helpers.rungs import Rungs, recorded_from
from helpers.trialstore import load_trials, locked, save_trials

ALGORITHMS = ("tpe", "random", "grid")


# ----------------------------------------------------------------------------------- spaces


AUGMENTS = ("none", "flip", "shift", "flip+shift", "flip+shift+rotate")


#: Simpsons-MNIST's space (notebooks 03 and 07): :func:`lenet_space` narrowed where earlier runs point
#: (notebook 03 says why): BatchNorm on, batches of at most 128, conv layers of at least 12 / 32
#: channels, dense layers of at least 128 / 64 units, flips always in the augmentation.
SIMPSONS_SPACE: dict[str, tuple] = {
    "batchnorm": (True,), "batch_sizes": (32, 64, 128), "conv1": (12, 24, 32), "conv2": (32, 48, 64),
    "dense1": (128, 384), "dense2": (64, 192), "augments": ("flip", "flip+shift", "flip+shift+rotate"),
}


def lenet_space(conv1: Sequence[int] = (6, 12, 24, 32), conv2: Sequence[int] = (16, 32, 48, 64),
                augments: Sequence[str] = AUGMENTS, image_sizes: Sequence[int] | None = None,
                batch_sizes: Sequence[int] = (32, 64, 128, 256), batchnorm: Sequence[bool] = (False, True),
                dense1: Sequence[int] = (32, 384), dense2: Sequence[int] = (16, 192)) -> dict[str, Any]:
    """The search space over LeNet-5 and its training (conditional optimizer parameters).

    ``conv1`` / ``conv2`` are the channel counts the two conv layers may take, ``augments`` the
    augmentation choices (see :func:`helpers.objective.parse_augment`), ``image_sizes`` (optional) the
    input sizes in pixels, ``batch_sizes`` and ``batchnorm`` the values those may take, ``dense1`` /
    ``dense2`` the (low, high) range of the dense layers' units (steps of 16). The defaults are the
    wide space; a notebook may narrow it where earlier runs point (and says so). The model stays
    LeNet-5: two conv + pool stages and three dense layers.
    """
    log = math.log
    for name, (low, high) in (("dense1", dense1), ("dense2", dense2)):
        if not 16 <= low <= high:
            raise ValueError(f"{name} needs 16 <= low <= high, got {(low, high)}")
    space = {
        "optimizer": hp.choice("optimizer", [
            {"name": "sgd", "lr": hp.loguniform("sgd_lr", log(3e-3), log(0.3)),
             "momentum": hp.uniform("sgd_momentum", 0.5, 0.97)},
            {"name": "adam", "lr": hp.loguniform("adam_lr", log(1e-4), log(1e-2))},
            {"name": "adamw", "lr": hp.loguniform("adamw_lr", log(1e-4), log(1e-2))},
            {"name": "rmsprop", "lr": hp.loguniform("rmsprop_lr", log(1e-4), log(3e-3)),
             "momentum": hp.uniform("rmsprop_momentum", 0.0, 0.9)},
        ]),
        "schedule": hp.choice("schedule", ["onecycle", "cosine"]),
        "weight_decay": hp.loguniform("weight_decay", log(1e-6), log(1e-2)),
        "batch_size": hp.choice("batch_size", [int(b) for b in batch_sizes]),
        "conv1": hp.choice("conv1", list(conv1)),
        "conv2": hp.choice("conv2", list(conv2)),
        "dense1": scope.int(hp.quniform("dense1", dense1[0], dense1[1], 16)),
        "dense2": scope.int(hp.quniform("dense2", dense2[0], dense2[1], 16)),
        "dropout": hp.uniform("dropout", 0.0, 0.5),
        "batchnorm": hp.choice("batchnorm", [bool(b) for b in batchnorm]),
        "label_smoothing": hp.choice("label_smoothing", [0.0, 0.05, 0.1]),
        "augment": hp.choice("augment", list(augments)),
    }
    if image_sizes:
        space["image_size"] = hp.choice("image_size", [int(v) for v in image_sizes])
    return space


def stored_space(trials: Trials) -> dict[str, Any]:
    """The space a saved search sampled from: :func:`lenet_space` with the ``space_options`` its spec
    recorded (a narrowed space decodes its ``hp.choice`` indices differently from the default one)."""
    spec = json.loads(trials.attachments.get("search_spec") or "{}")
    options = (spec.get("extra") or {}).get("space_options") or {}
    return lenet_space(**options)


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
    rungs: Rungs | None = None  #: early stopping across trials (ASHA rungs); None: every trial runs all its epochs
    epoch_budget: int | None = None  #: no new trial starts once the finished trials have used this many epochs

    def key(self) -> dict[str, Any]:
        """What a resumed search must match (with the cache version, so new code never extends old trials)."""
        d = asdict(self)
        d.pop("max_evals")  # a search may be extended to more trials or epochs
        d.pop("epoch_budget")
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


def epochs_spent(trials: Trials) -> int:
    """Epochs trained by all finished trials together (stopped and failed ones included)."""
    return sum(int(t["result"].get("epochs") or 0) for t in trials.trials
               if t["result"].get("status") in (STATUS_OK, STATUS_FAIL))


def _budget_left(trials: Trials, spec: SearchSpec) -> bool:
    return spec.epoch_budget is None or epochs_spent(trials) < spec.epoch_budget


def run_search(
    objective: Objective | Callable[[dict], dict],
    space: Mapping[str, Any],
    spec: SearchSpec,
    trials_path: Path,
    grid: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
) -> Trials:
    """Run (or resume) a search of up to ``spec.max_evals`` trials and ``spec.epoch_budget`` epochs; the
    Trials are saved after each trial.

    With ``spec.rungs`` each trial learns, before it starts, the rung values of the trials before it
    (:mod:`helpers.rungs`), so early stopping is reproduced exactly on resume.

    ``spec.algo`` is ``'tpe'``, ``'random'`` or ``'grid'`` (``grid`` then gives the axes and
    ``space`` must be :func:`grid_space` of it). Returns the Trials.
    """
    algo = _suggest_function(spec, grid)
    if isinstance(objective, Objective):  # fail fast on an unusable space, before any training
        if objective.rungs != spec.rungs:
            raise ValueError(f"the objective's rungs {objective.rungs} differ from the search's {spec.rungs}")
        validate_space(space, objective.data, objective.base_train)
    with locked(trials_path):
        trials = _open_trials(trials_path, spec)
        done = _finished(trials)
        if done and progress:
            print(f"{spec.name} [{spec.algo}]: resuming: {done} trials ({epochs_spent(trials)} epochs) were finished "
                  f"earlier and are loaded from {trials_path.name}, not re-run")
        by_epochs = spec.epoch_budget is not None
        bar = tqdm(total=spec.epoch_budget if by_epochs else spec.max_evals,
                   initial=min(epochs_spent(trials), spec.epoch_budget) if by_epochs else done,
                   desc=f"{spec.name} [{spec.algo}]", unit="epoch" if by_epochs else "trial", disable=not progress,
                   mininterval=0, dynamic_ncols=False, ncols=100, file=sys.stdout)
        try:
            for i in range(done, spec.max_evals):
                if not _budget_left(trials, spec):
                    break
                if isinstance(objective, Objective):
                    objective.recorded = recorded_from(t["result"] for t in trials.trials)
                before = epochs_spent(trials)
                if not _run_trial(objective, space, algo, trials, spec, i):  # the grid ran out of points
                    break
                save_trials(trials, trials_path)
                bar.update(min(epochs_spent(trials), spec.epoch_budget) - min(before, spec.epoch_budget) if by_epochs else 1)
                ok = [t["result"]["val_acc"] for t in trials.trials if t["result"].get("status") == STATUS_OK]
                if ok:
                    bar.set_postfix_str(f"trials {i + 1}, best val acc {max(ok):.3f}")
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
    if "search_spec" not in trials.attachments:
        raise SearchMismatchError(f"{trials_path} does not record which search made its trials (no 'search_spec'), "
                                  f"so they cannot be resumed: move it away to start the search afresh")
    if trials.attachments.get("search_spec") != key:
        try:
            stored = json.loads(trials.attachments["search_spec"])
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            raise SearchMismatchError(f"{trials_path}: its 'search_spec' is not a search description; move the file "
                                      f"away to start the search afresh")
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
    if (len(results) >= spec.max_evals or not _budget_left(trials, spec)) and not any(r.get("status") == STATUS_OK for r in results):
        reasons = sorted({str(r.get("failure", "no reason recorded")) for r in results})
        raise SearchFailedError(
            f"{spec.name} [{spec.algo}]: all {len(results)} trials failed. Reasons: " + "; ".join(reasons)
            + ". Narrow the search space (e.g. lower learning rates) or check the data, then run it again."
        )
