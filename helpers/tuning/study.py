"""A whole tuning study on one data set: baseline, a budget-aware search, retrained winner, test once."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hyperopt import Trials

from helpers.paths import Outputs
from helpers.plumbing import describe, pick_device
from helpers.runs import (
    Run,
    RunResult,
    reload_run,
    save_best,
    save_run,
    seed_summary,
    train_and_evaluate,
    train_over_seeds,
    train_runs,
)
from helpers.splits import DataSplits
from helpers.stats import Decision, PairedDifference, binomial_interval, finding, paired_difference, seed_interval
from helpers.stats import target as stats_target
from helpers.training import TrainConfig, TrainHook, evaluate, hook_settings
from helpers.tuning.search import (
    Objective,
    Rungs,
    SearchSpec,
    TrialSetup,
    run_hooks,
    run_search,
    trial_weights,
    trials_file,
)
from helpers.tuning.spaces import (SEARCH_TRAIN, RunConfig, fingerprint, grid_points, grid_space, lenet_space,
                                   to_run_config)
from helpers.tuning.tables import finished, spend, trials_frame


@dataclass
class SearchOutcome:
    """One algorithm's finished search."""

    algo: str
    trials: Trials
    space: dict[str, Any]
    frame: pd.DataFrame
    epoch_budget: int
    experiment: str  #: where its trials and trial weights are stored (the name, plus the space's for an edited one)


@dataclass(frozen=True)
class SearchPlan:
    """How one search spends and where it samples: epoch budget, seed, TPE's start-up, space options or a grid."""

    epoch_budget: int  #: no new trial starts once the finished trials have used this many epochs
    seed: int = 0
    n_startup_jobs: int = 8  #: TPE's random start-up trials
    space_options: Mapping[str, Any] | None = None  #: :func:`~helpers.tuning.spaces.lenet_space`'s arguments
    #: an ``hp`` space of the same hyperparameters (a notebook's edited cell); None: ``lenet_space(**space_options)``
    space: Mapping[str, Any] | None = None
    grid: Mapping[str, Sequence[Any]] | None = None  #: the axes of a grid search (``algo="grid"``)
    grid_fixed: Mapping[str, Any] | None = None  #: what a grid search holds fixed


def search(setup: TrialSetup, plan: SearchPlan, progress: bool = True, quiet_loaded: bool = False) -> SearchOutcome:
    """One resumable budget-aware search over ``plan.space`` or ``lenet_space(**plan.space_options)`` (or a grid).

    The trial store keys the search by its space's :func:`~helpers.tuning.spaces.fingerprint`; a space that differs
    from the library's gets its own name (``<experiment>-space-<fingerprint>``), so an edited space starts a new
    search and the unedited one resumes its own.
    """
    grid = plan.grid if setup.algo == "grid" else None
    library = lenet_space(**(plan.space_options or {}))
    space = (grid_space(grid or {}, plan.grid_fixed or {}) if grid is not None
             else dict(plan.space) if plan.space is not None else library)
    mark = fingerprint(space)
    if grid is None and mark != fingerprint(library):
        setup = replace(setup, experiment=f"{setup.experiment}-space-{mark[:8]}")
    settings = {"base": {**asdict(setup.base), **hook_settings(setup.hooks)}, "data": setup.data.sizes(),
                "space_options": {k: list(v) for k, v in (plan.space_options or {}).items()}, "space": mark,
                **({"view_hooks": {k: hook_settings(v) for k, v in setup.view_hooks.items()}} if setup.view_hooks else {})}
    max_evals = len(grid_points(grid)) if grid is not None else 10_000  # else the epoch budget ends it
    spec = SearchSpec(setup.experiment, setup.algo, plan.seed, max_evals, plan.n_startup_jobs, extra=settings,
                      rungs=setup.rungs, epoch_budget=plan.epoch_budget)
    path = trials_file(setup.outputs.results, setup.experiment, setup.algo)
    trials = run_search(Objective(setup), space, spec, path, grid=grid, progress=progress)
    if progress and getattr(trials, "loaded_complete", False) and not quiet_loaded:
        print(f"{setup.experiment} [{setup.algo}]: {len(trials.trials)} trials loaded from {path.name} (finished "
              f"earlier, not re-run)")
    return SearchOutcome(setup.algo, trials, space, trials_frame(trials, space, setup.algo), plan.epoch_budget,
                         setup.experiment)


@dataclass
class TuningStudy:
    """Everything :func:`run_study` produced."""

    name: str
    data: DataSplits
    search_data: DataSplits
    baseline: list[RunResult]
    outcome: SearchOutcome
    best_row: pd.Series
    final_config: RunConfig
    tuned: list[RunResult]
    checkpoint: Path | None
    device: str
    checks: list[dict[str, Any]] = field(default_factory=list)  #: one row per retrain check, in order
    rejected: list[RunResult] = field(default_factory=list)  #: first-seed runs of rejected candidates
    reused: list[RunResult] = field(default_factory=list)  #: runs taken from the search's own finished trials
    #: with ``StudyConfig.view_hooks``: the baseline's runs under every view option (``baseline`` is the kept one)
    baseline_views: dict[str, list[RunResult]] = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per trial of the search (see :func:`helpers.tuning.tables.trials_frame`)."""
        return self.outcome.frame

    def spent(self) -> pd.DataFrame:
        """What the search and the retraining spent, beside what the search found."""
        s = spend(self.frame)
        runs = [r for r in self.tuned + self.baseline + self.rejected if not any(r is u for u in self.reused)]
        retrain_epochs = sum(len(r.history.epochs) for r in runs)
        retrain_min = sum(r.history.seconds for r in runs) / 60
        return pd.DataFrame([
            {"step": f"search ({self.outcome.algo}, ASHA)", **s,
             "best val acc %": round(100 * self.best_row["val_acc"], 2), "device": self.device},
            {"step": "baseline + tuned retraining (with rejected retrain checks)"
                     + (f"; {len(self.reused)} seed run(s) reused from the search, not retrained" if self.reused else ""),
             "trials": len(runs),
             "stopped early": 0, "finished": len(runs), "failed": 0, "epochs": retrain_epochs,
             "train min": round(retrain_min, 1), "best val acc %": "–", "device": self.device},  # no search here
        ]).set_index("step")

    def summary(self) -> pd.DataFrame:
        """Baseline vs tuned: validation and test accuracy mean ± sd (%) over seeds, with intervals."""
        rows = {}
        for label, runs in (("baseline (textbook LeNet-5)", self.baseline), ("tuned LeNet-5", self.tuned)):
            s = seed_summary(runs)
            n_test = len(self.data.test)
            blo, bhi = binomial_interval(round(s["test mean %"] / 100 * n_test), n_test)
            rows[label] = {**{k: round(v, 2) for k, v in s.items()}, "test 95 % CI over seeds": _ci_text([100 * r.test.accuracy for r in runs]),
                           f"test 95 % binomial CI ({n_test} images)": f"{100 * blo:.1f}–{100 * bhi:.1f}",
                           "test bal acc mean %": round(100 * sum(r.test.balanced_accuracy for r in runs) / len(runs), 2),
                           "test bal acc 95 % CI over seeds": _ci_text([100 * r.test.balanced_accuracy for r in runs])}
        return pd.DataFrame(rows).T

    def paired(self) -> PairedDifference:
        """Tuned minus baseline test accuracy (points), paired by seed."""
        return paired_difference([100 * r.test.accuracy for r in self.baseline], [100 * r.test.accuracy for r in self.tuned])

    def paired_table(self) -> pd.DataFrame:
        """Per seed: baseline and tuned test accuracy and balanced accuracy, and their differences (%)."""
        rows = []
        for b, t in zip(self.baseline, self.tuned):
            rows.append({"seed": t.train_config.seed, "baseline test %": 100 * b.test.accuracy,
                         "tuned test %": 100 * t.test.accuracy, "difference": 100 * (t.test.accuracy - b.test.accuracy),
                         "baseline bal acc %": 100 * b.test.balanced_accuracy,
                         "tuned bal acc %": 100 * t.test.balanced_accuracy})
        return pd.DataFrame(rows).set_index("seed").round(2)

    def check_table(self) -> pd.DataFrame:
        """Per candidate trial: search score, first-seed retraining on validation, :func:`retrain_verdict`."""
        if not self.checks:
            return pd.DataFrame()
        table = pd.DataFrame(self.checks)  # a "none passed" row has no trial and no scores: shown as "–"
        table["trial"] = [int(t) if pd.notna(t) else "–" for t in table["trial"]]
        table = table.set_index("trial")
        return table.astype(object).where(table.notna(), "–")

    def best_tuned(self) -> RunResult:
        """The retrained run with the best validation accuracy (the saved one)."""
        return max(self.tuned, key=lambda r: r.val.accuracy)

    def headlines(self) -> list[dict[str, str]]:
        """Baseline and tuned rows for the summary a notebook writes (:meth:`helpers.provenance.RunStamp.finish`)."""
        table, spent, paired = self.summary(), self.spent(), self.paired()
        search = spent.iloc[0]
        n_test = len(self.data.test)
        rows = []
        for label in table.index:
            r = table.loc[label]
            rows.append({"data set": self.data.name, "model": label,
                         "val acc %": f"{r['val mean %']:.2f} ± {r['val std %']:.2f}",
                         "test acc %": f"{r['test mean %']:.2f} ± {r['test std %']:.2f} (balanced {r['test bal acc mean %']:.2f})",
                         "test interval": f"{r['test 95 % CI over seeds']} over {int(r['seeds'])} seeds; "
                                          f"{r[f'test 95 % binomial CI ({n_test} images)']} binomial",
                         "spent": (f"search: {search['trials']} trials ({search['stopped early']} stopped early, "
                                   f"{search['finished']} finished), {search['epochs']} epochs, {search['train min']} min, "
                                   f"{self.device}" if label.startswith("tuned") else f"{int(r['seeds'])} runs"),
                         "note": (f"tuned − baseline {paired.text()}, paired by seed: "
                                  f"{paired.outcome.replace('b better', 'tuned better').replace('a better', 'baseline better')}"
                                  if label.startswith("tuned") else "")})
        return rows

    def target(self, threshold: float) -> Decision:
        """Is the tuned model's mean test accuracy over seeds at least ``threshold`` %? ("met" / "missed")."""
        return stats_target(f"{self.data.name}: tuned test accuracy", [100 * r.test.accuracy for r in self.tuned],
                            threshold)

    def as_finding(self, target: float, section: str) -> dict[str, str]:
        """The study's findings line: tuned test accuracy, its interval, vs baseline, and the target."""
        hit, paired = self.target(target), self.paired()
        base = 100 * float(np.mean([r.test.accuracy for r in self.baseline]))
        verdict = paired.outcome.replace("b better", "tuned better").replace("a better", "baseline better")
        return finding(f"{self.data.name}: tuned LeNet-5 (textbook baseline {base:.2f} %)", f"{hit.value:.2f} %",
                       section, interval=f"{hit.interval_text() or 'one seed'}; tuned − baseline {paired.text()}: "
                                         f"{verdict}", target=hit)


def _ci_text(values: Sequence[float]) -> str:
    lo, hi = seed_interval(values)
    return f"{lo:.1f}–{hi:.1f}" if len(values) > 1 else "one seed"


@dataclass(frozen=True)
class StudyConfig:
    """One study as the notebook describes it: its trials' and baseline's training, rungs, budget, space, seeds."""

    name: str
    rungs: Rungs  #: trials and the retrained winner train up to ``rungs.max_epochs``
    epoch_budget: int
    baseline: TrainConfig  #: the textbook recipe (``TEXTBOOK``) with its epochs and any shared protocol
    base: TrainConfig = SEARCH_TRAIN  #: what every trial and the winner train with, besides the sampled point
    seeds: Sequence[int] = (0, 1, 2)
    algo: str = "tpe"
    search_slice: Mapping[str, int] | None = None  #: search on this slice of the training pool (the winner on all)
    space_options: Mapping[str, Any] | None = None
    space: Mapping[str, Any] | None = None  #: an edited ``hp`` space (see :class:`SearchPlan`); None: the library's
    n_startup_jobs: int = 8
    checkpoint_name: str | None = None
    max_candidates: int = 3  #: finished trials that may go through the retrain check, best search score first
    hooks: Sequence[TrainHook] = ()  #: added to every run's batches, baseline included (e.g. stretched views)
    #: named view options (the space's ``views`` axis, ``space_options["views"]``) and the hooks each adds; the
    #: baseline is trained with each and keeps the one with the higher mean validation accuracy (the same rule)
    view_hooks: Mapping[str, Sequence[TrainHook]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", Rungs.of(self.rungs))  # a budget table's plain dict, or Rungs

    def trial_setup(self, data: DataSplits, outputs: Outputs, device: str | torch.device,
                    sized: Callable[[int], DataSplits] | None = None) -> TrialSetup:
        """What the search's trials share: ``base`` trained for at most the rungs' epochs, the study's hooks."""
        return TrialSetup(data, replace(self.base, epochs=self.rungs.max_epochs), self.name, self.algo, outputs,
                          self.rungs, device, sized, keep_weights=not self.search_slice, hooks=tuple(self.hooks),
                          view_hooks=dict(self.view_hooks or {}))


@dataclass
class _Candidate:
    row: pd.Series
    data: DataSplits
    config: RunConfig
    first: RunResult


def run_study(config: StudyConfig, data: DataSplits, *, outputs: Outputs, device: str | torch.device = "auto",
              sized: Callable[[int], DataSplits] | None = None) -> TuningStudy:
    """The steps in order: baseline, search, pick and check, retrain, test."""
    search_data = data.subset(**config.search_slice) if config.search_slice else data
    baseline, baseline_views = train_baseline(config, data, outputs=outputs, device=device)
    setup = config.trial_setup(search_data, outputs, device, _sliced(sized, config.search_slice))
    outcome = search(setup, SearchPlan(config.epoch_budget, n_startup_jobs=config.n_startup_jobs,
                                       space_options=config.space_options, space=config.space))
    chosen, checks, tried, reused = pick_and_check(config, data, outcome, baseline, sized, outputs=outputs, device=device)
    chosen.first.test = evaluate(chosen.first.model, chosen.data, "test", device=device)  # the accepted run: test once
    final = Run(f"tuned-t{int(chosen.row['trial'])}", f"{config.name}-final", chosen.config.train, chosen.config.model,
                hooks=_hooks(config, chosen.config))
    tuned = [chosen.first, *train_over_seeds(chosen.data, final, config.seeds[1:], outputs, device)]
    checkpoint = save_winner(config, chosen, tuned, checks, outputs)
    rejected = [c.first for c in tried if c.first is not chosen.first]
    return TuningStudy(config.name, data, search_data, baseline, outcome, chosen.row, chosen.config, tuned, checkpoint,
                       describe(pick_device(device) if not isinstance(device, torch.device) else device),
                       checks, rejected, reused, baseline_views)


def _hooks(config: StudyConfig, run: RunConfig) -> tuple[TrainHook, ...]:
    return run_hooks(config.hooks, config.view_hooks or {}, run)


def train_baseline(config: StudyConfig, data: DataSplits, *, outputs: Outputs, device: str | torch.device
                   ) -> tuple[list[RunResult], dict[str, list[RunResult]]]:
    """The textbook baseline over the seeds; with ``view_hooks``, the view option best on validation."""
    options = dict(config.view_hooks or {}) or {None: ()}
    plan = {name: [Run("baseline" if name in (None, "none") else f"baseline-{name}", f"{config.name}-final",
                       config.baseline, hooks=(*config.hooks, *hooks)).for_seed(s) for s in config.seeds]
            for name, hooks in options.items()}
    trained = iter(train_runs(data, [r for runs in plan.values() for r in runs], outputs, device))  # side by side
    runs = {name: [next(trained) for _ in seeds] for name, seeds in plan.items()}
    best = max(runs, key=lambda name: np.mean([r.val.accuracy for r in runs[name]]))
    return runs[best], ({} if None in runs else runs)


def _sliced(sized: Callable[[int], DataSplits] | None, search_slice: Mapping[str, int] | None):
    """``sized`` for the search: the data at another size, sliced like the search's (cached per size)."""
    if sized is None:
        return None
    return cache(lambda size: sized(size).subset(**search_slice) if search_slice else sized(size))


def pick_and_check(config: StudyConfig, data: DataSplits, outcome: SearchOutcome, baseline: Sequence[RunResult],
                   sized: Callable[[int], DataSplits] | None, *, outputs: Outputs, device: str | torch.device
                   ) -> tuple[_Candidate, list[dict[str, Any]], list[_Candidate], list[RunResult]]:
    """The best finished trials, retrained (first seed) until one passes :func:`retrain_verdict`."""
    baseline_val = [r.val.accuracy for r in baseline]
    candidates = finished(outcome.frame).sort_values(["val_acc", "trial"], ascending=[False, True])
    if candidates.empty:
        raise ValueError(f"{config.name}: no trial finished all its epochs; raise the epoch budget")
    tried: list[_Candidate] = []
    reused: list[RunResult] = []
    checks: list[dict[str, Any]] = []
    for _, row in candidates.head(config.max_candidates).iterrows():
        candidate = _first_seed(config, data, row, sized, reused, outcome.experiment, outputs=outputs,
                                device=device)
        first = candidate.first
        ok, why = retrain_verdict(first.val.accuracy, first.val.balanced_accuracy, baseline_val, data.num_classes)
        checks.append({"trial": int(row["trial"]), "search val acc %": round(100 * float(row["val_acc"]), 2),
                       f"retrained val acc % (seed {config.seeds[0]})": round(100 * first.val.accuracy, 2),
                       "retrained val bal acc %": round(100 * first.val.balanced_accuracy, 2),
                       "baseline val mean %": round(100 * sum(baseline_val) / len(baseline_val), 2),
                       "verdict": "accepted" if ok else "rejected", "why": why,
                       f"seed {config.seeds[0]} run": "the search's own trial (identical settings)"
                       if any(first is u for u in reused) else "retrained"})
        tried.append(candidate)
        if ok:
            return candidate, checks, tried, reused
    checks.append({"trial": None, "verdict": "none passed",
                   "why": "kept the candidate with the best retrained validation accuracy"})
    return max(tried, key=lambda c: c.first.val.accuracy), checks, tried, reused


def _first_seed(config: StudyConfig, data: DataSplits, row: pd.Series, sized: Callable[[int], DataSplits] | None,
                reused: list[RunResult], experiment: str, *, outputs: Outputs, device: str | torch.device) -> _Candidate:
    """A trial's configuration on the full split with the first seed: the search's own run if identical."""
    size = row["point"].get("image_size")
    cand_data = data if size is None or int(size) == data.image_size else sized(int(size))
    run = to_run_config(row["point"], cand_data, replace(config.base, epochs=config.rungs.max_epochs))
    trial, seed = int(row["trial"]), config.seeds[0]
    tracked = Run(f"tuned-t{trial}", f"{config.name}-final", run.train, run.model, hooks=_hooks(config, run),
                  test=False).for_seed(seed)  # test: only the accepted candidate, once
    first = None if config.search_slice else reload_run(
        trial_weights(outputs, experiment, config.algo, trial - 1), cand_data, tracked, device)
    if first is not None:
        reused.append(first)
    else:
        first = train_and_evaluate(cand_data, tracked, outputs, device)
    return _Candidate(row, cand_data, run, first)


def save_winner(config: StudyConfig, chosen: _Candidate, tuned: Sequence[RunResult], checks: list[dict[str, Any]],
                outputs: Outputs) -> Path | None:
    """The best seed's checkpoint, every seed's beside it, and the winner's settings as JSON."""
    if not config.checkpoint_name:
        return None
    checkpoint = outputs.models / f"{config.checkpoint_name}.pt"
    save_best(tuned, chosen.data, checkpoint)
    for r in tuned:
        save_run(r, chosen.data, checkpoint.with_name(f"{checkpoint.stem}-seed{r.train_config.seed}.pt"))
    checkpoint.with_suffix(".json").write_text(json.dumps(
        {"algo": config.algo, "trial": int(chosen.row["trial"]), "search_val_acc": float(chosen.row["val_acc"]),
         "model": chosen.config.model, "train": chosen.first.settings(), "retrain_checks": checks}, indent=2))
    return checkpoint


def retrain_verdict(val_acc: float, val_bal_acc: float, baseline_val_accs: Sequence[float],
                    num_classes: int, collapse_margin: float = 0.05) -> tuple[bool, str]:
    """Does a configuration retrained on the full training split hold up on validation?"""
    chance = 1 / num_classes
    base = sum(baseline_val_accs) / len(baseline_val_accs)
    if val_bal_acc <= chance + collapse_margin:
        return False, (f"collapsed: balanced accuracy {100 * val_bal_acc:.1f} % is within "
                       f"{100 * collapse_margin:g} points of chance ({100 * chance:.1f} %)")
    if val_acc < base:
        return False, f"validation accuracy {100 * val_acc:.2f} % is below the baseline's {100 * base:.2f} %"
    return True, f"validation accuracy {100 * val_acc:.2f} % ≥ the baseline's {100 * base:.2f} %"


def conclusions(study: TuningStudy, target: float | None = None) -> str:
    """Markdown bullet points computed from the study's numbers."""
    base, tuned = seed_summary(study.baseline), seed_summary(study.tuned)
    paired = study.paired()
    s = spend(study.frame)
    lines = [
        (f"- Tuning moved LeNet-5 from {base['test mean %']:.2f} ± {base['test std %']:.2f} % to "
        f"{tuned['test mean %']:.2f} ± {tuned['test std %']:.2f} % test accuracy (mean ± sd over {tuned['seeds']} "
        f"seed(s)). Paired by seed, the difference is {paired.text()}" + (", so no claim" if paired.n == 1 else ": ")
        + ("" if paired.n == 1 else {"b better": "**the tuned model is better**",
           "a better": "**the baseline is better**",
           "no clear difference": "**no clear difference**"}[paired.outcome]
           + f" (rule: {paired.rule})") + "."),
        (f"- The search ({study.outcome.algo} with ASHA early stopping) started {s['trials']} trials: "
         f"{s['stopped early']} stopped early, {s['finished']} finished, {s['failed']} failed; {s['epochs']} epochs "
         f"in {s['train min']:.1f} min of training. The configuration retrained is trial {int(study.best_row['trial'])}'s "
         f"({100 * study.best_row['val_acc']:.2f} % validation accuracy in the search)."),
    ]
    rejected = [c for c in study.checks if c["verdict"] == "rejected"]
    if rejected:
        lines.append(
            f"- The retrain check rejected {len(rejected)} configuration(s) before any test image was seen: "
            + "; ".join(f"trial {c['trial']} ({c['why']})" for c in rejected)
            + (". No candidate passed, so the one with the best retrained validation accuracy was kept."
               if study.checks[-1]["verdict"] == "none passed" else "."))
    bias = selection_bias(tuned["val mean %"] - base["val mean %"], tuned["test mean %"] - base["test mean %"])
    if bias.outcome == "selection bias":
        lines.append(
            f"- The tuned model gained {bias.reference:+.1f} points on validation but {bias.value:+.1f} on test "
            f"(rule: {bias.rule}). Two causes fit this: the search partly fitted its {len(study.search_data.val)} "
            f"validation images, or the test split differs from the training pool that validation is drawn from "
            f"(a shift that validation cannot show); the gains alone do not tell them apart.")
    if target is not None:
        hit = study.target(target)
        lines.append(f"- Target for the full budget: {hit.rule}: **{hit.outcome_text()}** ({hit.value:.2f} %, "
                     f"{hit.interval_text() or 'one seed'}).")
    return "\n".join(lines)


SELECTION_BIAS_RULE = "validation gain over the baseline > 0 and test gain below half of it"


def selection_bias(val_gain: float, test_gain: float) -> Decision:
    """Did the search fit its validation split? :data:`SELECTION_BIAS_RULE` on the val and test gains."""
    biased = val_gain > 0 and test_gain < val_gain / 2
    return Decision("selection bias", test_gain, "selection bias" if biased else "none shown", SELECTION_BIAS_RULE,
                    reference=val_gain)
