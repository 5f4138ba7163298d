"""Hyperopt search over LeNet-5 hyperparameters: TPE, random search and an exhaustive grid."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, rand, tpe
from hyperopt.base import miscs_update_idxs_vals, trials_from_docs
from hyperopt.exceptions import AllTrialsFailed
from tqdm import tqdm

from helpers.paths import Outputs
from helpers.provenance import git_state
from helpers.runs import Run, save_run, train_tracked
from helpers.splits import DataSplits
from helpers.training import TrainConfig, TrainHook
from helpers.tuning import cache_version
from helpers.tuning.spaces import RunConfig, grid_points, to_run_config, validate_space
from helpers.tuning.trialstore import load_trials, locked, save_trials

ALGORITHMS = ("tpe", "random", "grid")


# ----------------------------------------------------------------------------------- ASHA rungs


@dataclass(frozen=True)
class Rungs:
    """The stopping schedule: first rung after ``grace`` epochs, then every factor ``eta``, up to ``max_epochs``."""

    grace: int = 3
    eta: int = 3
    max_epochs: int = 27

    @classmethod
    def of(cls, value: Rungs | Mapping[str, int]) -> Rungs:
        """``value`` as Rungs: Rungs as they are, or the plain dict a budget table holds (grace, eta, max_epochs)."""
        return value if isinstance(value, cls) else cls(**value)

    def __post_init__(self) -> None:
        if self.grace < 1 or self.eta < 2 or self.max_epochs < self.grace:
            raise ValueError(f"need grace >= 1, eta >= 2 and max_epochs >= grace, got {self}")

    def milestones(self) -> list[int]:
        """The epochs at which a trial may be stopped (``max_epochs`` itself is the end, not a rung)."""
        out, m = [], self.grace
        while m < self.max_epochs:
            out.append(m)
            m *= self.eta
        return out

    def cutoff(self, recorded: Iterable[float]) -> float | None:
        """The accuracy a trial needs at a rung to go on, given earlier trials' values there (None: no bar yet)."""
        values = [v for v in recorded if not np.isnan(v)]
        if not values:
            return None
        return float(np.percentile(values, 100 * (1 - 1 / self.eta)))  # the top 1/eta go on, as Ray Tune's ASHA

    def stopper(self, recorded: Mapping[int, list[float]]) -> Callable[[dict[str, float]], bool]:
        """An ``on_epoch`` hook: True (stop) when an epoch is a rung and its accuracy is below the cutoff."""
        milestones = set(self.milestones())

        def should_stop(record: dict[str, float]) -> bool:
            epoch = int(record["epoch"])
            if epoch not in milestones:
                return False
            bar = self.cutoff(recorded.get(epoch, []))
            return bar is not None and record["val_acc"] < bar

        return should_stop

    def scores(self, history_epochs: list[dict[str, float]]) -> dict[int, float]:
        """A trial's validation accuracy at each rung it reached (what later trials are compared with)."""
        by_epoch = {int(e["epoch"]): float(e["val_acc"]) for e in history_epochs}
        return {m: by_epoch[m] for m in self.milestones() if m in by_epoch}


def recorded_from(results: Iterable[Mapping]) -> dict[int, list[float]]:
    """Per rung, the values of the given trial results (each with a ``rung_scores`` dict), in trial order."""
    recorded: dict[int, list[float]] = {}
    for result in results:
        for epoch, value in (result.get("rung_scores") or {}).items():
            recorded.setdefault(int(epoch), []).append(float(value))
    return recorded


# ----------------------------------------------------------------------------------- a grid as a Hyperopt algo


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
    """Run or resume a search within ``spec``'s trial and epoch budgets; Trials saved after each trial."""
    algo = _suggest_function(spec, grid)
    if isinstance(objective, Objective):  # fail fast on an unusable space, before any training
        if objective.setup.rungs != spec.rungs:
            raise ValueError(f"the objective's rungs {objective.setup.rungs} differ from the search's {spec.rungs}")
        validate_space(space, objective.setup.data, objective.setup.base)
    with locked(trials_path):
        trials = _open_trials(trials_path, spec)
        done = _finished(trials)
        complete = done >= spec.max_evals or not _budget_left(trials, spec)
        trials.loaded_complete = complete  # a finished search read back: the caller says so in one line
        progress = progress and not complete
        if done and progress:
            print(f"{spec.name} [{spec.algo}]: resuming: {done} trials ({epochs_spent(trials)} epochs) were finished "
                  f"earlier and are loaded from {trials_path.name}, not re-run")
        by_epochs = spec.epoch_budget is not None
        bar = tqdm(total=spec.epoch_budget if by_epochs else spec.max_evals,
                   initial=min(epochs_spent(trials), spec.epoch_budget) if by_epochs else done,
                   desc=f"{spec.name} [{spec.algo}]", unit="epoch" if by_epochs else "trial", disable=not progress,
                   mininterval=0, dynamic_ncols=False, ncols=100, file=sys.stdout)
        try:
            # fmin one trial at a time, saved after each: its own trials_save_file rewrites a pickle in place
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
        return partial(tpe.suggest, n_startup_jobs=spec.n_startup_jobs)  # Hyperopt's 20: ~20 trials = random
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
        # trial i draws from rng([seed, i]): fmin restarts its seed each call, so a resume would replay trial 1's point
        fmin(objective, space, algo=algo, max_evals=i + 1, trials=trials, rstate=np.random.default_rng([spec.seed, i]),
             show_progressbar=False, return_argmin=False, allow_trials_fmin=False)
    except AllTrialsFailed:  # fmin's own best-point look-up; the failed trial is recorded
        pass
    return _finished(trials) == i + 1


def _before_space_keys(stored: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether ``stored`` is ``now`` as recorded before a search's key held its space's fingerprint.

    Such a file sampled the library's space (nothing else could be searched then) and is kept under the plain
    name that only the library's space still uses, so its trials are resumed, not lost.
    """
    now = json.loads(json.dumps(now, sort_keys=True))  # as it is stored: lists, not tuples
    extra = dict(now.get("extra") or {})
    if "space" in (stored.get("extra") or {}) or extra.pop("space", None) is None:
        return False
    return stored == {**now, "extra": extra}


def _refuse(trials_path: Path, stored: dict[str, Any], spec: SearchSpec) -> None:
    """Raise :class:`SearchMismatchError`: older training code, or another search."""
    now = json.loads(json.dumps(spec.key(), sort_keys=True))
    if {k: v for k, v in stored.items() if k != "cache_version"} == {
            k: v for k, v in now.items() if k != "cache_version"}:
        raise SearchMismatchError(
            f"{trials_path} holds trials computed by older training code (cache version "
            f"{stored.get('cache_version', 0)}, now {cache_version.CACHE_VERSION}): delete it and run the search "
            f"again, so that every trial is computed by the same code"
        )
    raise SearchMismatchError(
        f"{trials_path} holds trials of another search ({json.dumps(stored, sort_keys=True)}); "
        f"use another file name or delete it to start afresh"
    )


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
        if not _before_space_keys(stored, spec.key()):
            _refuse(trials_path, stored, spec)
        trials.attachments["search_spec"] = key  # the library's space, recorded before spaces had fingerprints
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


def trial_weights(outputs: Outputs, experiment: str, algo: str, trial_index: int) -> Path:
    """The checkpoint of finished trial ``trial_index`` (0-based, as the TensorBoard run's name) of a search."""
    return outputs.models / "trials" / f"{experiment}-{algo}-trial-{trial_index:03d}.pt"


def run_hooks(hooks: Sequence[TrainHook], view_hooks: Mapping[str, Sequence[TrainHook]], run: RunConfig
              ) -> tuple[TrainHook, ...]:
    """The hooks a run trains with: the study's own, then those of the view option its point chose."""
    if run.views is None:
        return tuple(hooks)
    if run.views not in view_hooks:
        raise ValueError(f"the point chose views {run.views!r}, but the study maps only {sorted(view_hooks)} to hooks")
    return (*hooks, *view_hooks[run.views])


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares, built once: data, base training, where runs go, early stopping."""

    data: DataSplits
    base: TrainConfig  #: each trial trains ``replace(base, **point's fields)``; epochs: the most a trial may train
    experiment: str  #: the search's name (TensorBoard experiment, trials file)
    algo: str
    outputs: Outputs
    rungs: Rungs | None = None  #: early stopping across trials (ASHA); None: every trial runs all its epochs
    device: str | torch.device = "auto"
    sized: Callable[[int], DataSplits] | None = None  #: the data at another image size (a space with image_size)
    keep_weights: bool = False  #: save finished trials' weights, so the study may reuse one as a retraining run
    hooks: tuple[TrainHook, ...] = ()  #: added to every trial's batches
    view_hooks: Mapping[str, Sequence[TrainHook]] = field(default_factory=dict)  #: per ``views`` option of a point

    def __post_init__(self) -> None:
        if self.rungs is not None and self.base.epochs != self.rungs.max_epochs:  # said, never silently changed
            raise ValueError(f"a trial trains up to the rungs' {self.rungs.max_epochs} epochs, but base.epochs is "
                             f"{self.base.epochs}: pass replace(base, epochs={self.rungs.max_epochs})")

    def data_for(self, point: Mapping[str, Any]) -> DataSplits:
        """The data a point trains on (resized when the space has an ``image_size`` axis)."""
        size = point.get("image_size")
        if size is None or int(size) == self.data.image_size:
            return self.data
        if self.sized is None:
            raise ValueError(f"the space proposes image_size {size} but the search has no `sized` data provider")
        return self.sized(int(size))

    def run(self, point: Mapping[str, Any], trial_index: int) -> tuple[DataSplits, RunConfig, Run]:
        """A sampled point as the data, settings and tracked :class:`~helpers.runs.Run` of trial ``trial_index``."""
        data = self.data_for(point)
        config = to_run_config(point, data, self.base)
        run = Run(f"{self.algo}-trial-{trial_index:03d}", self.experiment, config.train, config.model,
                  hooks=run_hooks(self.hooks, self.view_hooks, config), hparams={"algo": self.algo, **config.describe()},
                  test=False, figures=False)  # a trial is scored on validation only
        return data, config, run


class Objective:
    """One Hyperopt trial: train a sampled point, report 1 − validation accuracy; stopped at a losing rung."""

    def __init__(self, setup: TrialSetup) -> None:
        self.setup, self.trial_index = setup, 0
        self.recorded: dict[int, list[float]] = {}  #: earlier trials' scores per rung (set before each trial)

    def __call__(self, point: dict[str, Any]) -> dict[str, Any]:
        setup = self.setup
        data, config, run = setup.run(point, self.trial_index)
        stopper = setup.rungs.stopper(self.recorded) if setup.rungs else None
        stopped_at: list[int] = []

        def on_epoch(record: dict[str, float]) -> bool:
            if stopper is not None and stopper(record):
                stopped_at.append(int(record["epoch"]))
                return True
            return False

        result = train_tracked(data, run, setup.outputs, setup.device, on_epoch)
        h = result.history
        applied = {"n_params": result.n_params, **h.optimizer}  # read off the objects trained
        common = {"config": config.describe(), "applied": applied, "seconds": h.seconds, "epochs": len(h.epochs),
                  "provenance": {**git_state(), "data": data.fingerprint()},
                  "attachments": {"history": json.dumps(h.to_dict())}}
        if h.diverged or not h.epochs:
            return {"status": STATUS_FAIL, "failure": h.diverged or "no epoch finished", **common}
        rung_scores = {str(k): v for k, v in setup.rungs.scores(h.epochs).items()} if setup.rungs else {}
        if stopped_at:  # scored where it stopped: at its last rung
            last = h.epochs[-1]
            return {"status": STATUS_OK, "outcome": "stopped", "loss": 1.0 - last["val_acc"], "val_acc": last["val_acc"],
                    "val_loss": last["val_loss"], "best_epoch": last["epoch"], "rung_scores": rung_scores, **common}
        if setup.keep_weights:  # a finished trial may be reused as a retraining run (helpers.tuning.study)
            weights = trial_weights(setup.outputs, setup.experiment, setup.algo, self.trial_index)
            save_run(result, data, weights, extra={"history": h.to_dict()})
        best = h.best
        return {"status": STATUS_OK, "outcome": "finished", "loss": 1.0 - best["val_acc"], "val_acc": best["val_acc"],
                "val_loss": best["val_loss"], "best_epoch": h.best_epoch, "rung_scores": rung_scores, **common}
