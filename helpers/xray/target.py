"""A labelled sample of the X-ray test domain: a dev half of the test split to choose on, a final half to report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from helpers.data import patient_of
from helpers.paths import Outputs
from helpers.runs import Run, RunResult, train_over_seeds, train_runs
from helpers.splits import DataSplits, grouped_stratified_split
from helpers.stats import binomial_interval, paired_difference
from helpers.training import Evaluation, evaluate
from helpers.tuning.search import run_hooks
from helpers.tuning.spaces import to_run_config
from helpers.tuning.study import StudyConfig, TuningStudy

#: The test split is halved by patient, stratified by class, with this seed: fixed before anything is scored.
SPLIT_SEED = 0
DEV_SHARE = 0.5
#: How the dev half chooses, written before the dev half is scored.
DEV_RULE = ("the candidate with the highest balanced accuracy on the dev half (mean over its seeds; the first "
            "listed on a tie); the baseline's view option by the same rule")
#: The three ways of choosing that the final half compares, and what each ranks by.
CHOOSERS = {
    "pool validation": "plain validation accuracy (validation drawn from the training pool, unweighted)",
    "weighted validation": "the study's choice: the search's best trial by importance-weighted validation that "
                           "passes the retrain check (the baseline: its view option with the higher weighted score)",
    "dev half": DEV_RULE,
}


def split_test(data: DataSplits, share: float = DEV_SHARE, seed: int = SPLIT_SEED) -> tuple[DataSplits, DataSplits]:
    """``data`` twice, its test split cut by patient and stratified by class: (dev view, final view)."""
    groups = [patient_of(i) for i in data.test.ids]
    final_idx, dev_idx = grouped_stratified_split(data.test.y.numpy(), groups, share, seed)

    def view(idx: np.ndarray, half: str) -> DataSplits:
        note = f"test split: its {half} half ({len(idx):,} of {len(data.test):,} images, by patient)"
        return replace(data, test=data.test.take(idx), note=f"{data.note} {note}".strip())

    return view(dev_idx, "dev"), view(final_idx, "final")


def split_table(dev: DataSplits, final: DataSplits) -> pd.DataFrame:
    """Images and patients per class in each half (no patient is in both)."""
    rows = {}
    for half, d in (("dev", dev), ("final", final)):
        y, patients = d.test.y.numpy(), np.array([patient_of(i) for i in d.test.ids])
        rows[f"{half} images"] = [int((y == k).sum()) for k in range(d.num_classes)] + [len(y)]
        rows[f"{half} patients"] = [len(set(patients[y == k])) for k in range(d.num_classes)] + [len(set(patients))]
    return pd.DataFrame(rows, index=pd.Index([*dev.classes, "all"], name="class"))


@dataclass
class Candidate:
    """One configuration the dev half may choose: its runs (first seed first) and how to train more seeds."""

    name: str
    results: list[RunResult]
    run: Run | None = None  #: None for a baseline option (its seeds are all trained already)


def tuned_candidates(config: StudyConfig, study: TuningStudy, data: DataSplits, outputs: Outputs,
                     device: str | torch.device) -> list[Candidate]:
    """The retrain check's trials, each with every view option, trained on the full pool (first seed)."""
    frame = study.frame.set_index("trial")
    trials = [int(c["trial"]) for c in study.checks if c["trial"] is not None]
    names, runs = [], []
    for trial in trials:
        for views in config.view_hooks or {}:
            point = {**frame.loc[trial, "point"], "views": views}
            rc = to_run_config(point, data, replace(config.base, epochs=config.rungs.max_epochs))
            runs.append(Run(f"tuned-t{trial}-{views}", f"{config.name}-final", rc.train, rc.model,
                            hooks=run_hooks(config.hooks, config.view_hooks or {}, rc), test=False))
            names.append(f"trial {trial}, views {views}")
    firsts = train_runs(data, [r.for_seed(config.seeds[0]) for r in runs], outputs, device)  # side by side
    return [Candidate(name, [first], run) for name, first, run in zip(names, firsts, runs, strict=True)]


def baseline_candidates(study: TuningStudy) -> list[Candidate]:
    """The baseline's view options, each over all seeds."""
    return [Candidate(f"baseline, views {views}", list(runs)) for views, runs in study.baseline_views.items()]


def _normal_recall(ev: Evaluation) -> float:
    return float(ev.per_class.iloc[0])  # class 0 is "normal"


def score_candidates(candidates: Sequence[Candidate], plain: DataSplits, dev: DataSplits,
                     device: str | torch.device) -> pd.DataFrame:
    """Per candidate (mean over its seeds): pool and weighted validation accuracy; accuracy, balanced accuracy
    and normal recall on the dev half."""
    rows = []
    for c in candidates:
        on_dev = [evaluate(r.model, dev, "test", device=device) for r in c.results]
        rows.append({"candidate": c.name, "seeds": len(c.results),
                     "pool val acc %": 100 * np.mean([evaluate(r.model, plain, "val", device=device).accuracy
                                                      for r in c.results]),
                     "weighted val acc %": 100 * np.mean([r.val.accuracy for r in c.results]),
                     "dev acc %": 100 * np.mean([e.accuracy for e in on_dev]),
                     "dev bal acc %": 100 * np.mean([e.balanced_accuracy for e in on_dev]),
                     "dev normal recall %": 100 * np.mean([_normal_recall(e) for e in on_dev])})
    return pd.DataFrame(rows).set_index("candidate")


def choose(scores: pd.DataFrame, weighted: str | None = None) -> dict[str, str]:
    """What each way of choosing (:data:`CHOOSERS`) picks from ``scores``; ``weighted``: the study's own pick."""
    return {"pool validation": str(scores["pool val acc %"].idxmax()),
            "weighted validation": weighted if weighted is not None else str(scores["weighted val acc %"].idxmax()),
            "dev half": str(scores["dev bal acc %"].idxmax())}


def with_seeds(candidate: Candidate, data: DataSplits, seeds: Sequence[int], outputs: Outputs,
               device: str | torch.device) -> list[RunResult]:
    """The candidate's runs over ``seeds``: the first seed's run as trained, the others trained now."""
    if candidate.run is None or len(candidate.results) >= len(seeds):
        return candidate.results
    return [*candidate.results, *train_over_seeds(data, candidate.run, seeds[len(candidate.results):], outputs, device)]


def score_final(results: Sequence[RunResult], final: DataSplits, device: str | torch.device) -> None:
    """Each accepted run's test evaluation on the final half (``result.test``), computed once."""
    for r in results:
        if r.test is None or len(r.test.predictions) != len(final.test):
            r.test = evaluate(r.model, final, "test", device=device)


def final_table(arms: Mapping[str, tuple[str, Sequence[RunResult], str, Sequence[RunResult]]],
                n_images: int) -> pd.DataFrame:
    """Per way of choosing, its tuned and baseline picks on the final half: means over seeds with Wilson
    intervals over the ``n_images`` final images, and tuned − baseline paired by seed."""
    rows = []
    for way, (tuned_name, tuned, base_name, base) in arms.items():
        acc = [100 * r.test.accuracy for r in tuned]
        normal = [100 * _normal_recall(r.test) for r in tuned]
        n_normal = int((np.asarray(tuned[0].test.confusion)[0]).sum())
        diff = paired_difference([100 * r.test.accuracy for r in base], acc)
        rows.append({"chosen by": way, "tuned pick": tuned_name, "baseline pick": base_name, "seeds": len(tuned),
                     "tuned acc %": np.mean(acc), "acc 95 % (Wilson)": _wilson(np.mean(acc), n_images),
                     "tuned bal acc %": 100 * np.mean([r.test.balanced_accuracy for r in tuned]),
                     "normal recall %": np.mean(normal), "recall 95 % (Wilson)": _wilson(np.mean(normal), n_normal),
                     "baseline acc %": 100 * np.mean([r.test.accuracy for r in base]),
                     "tuned − baseline": diff.text()})
    return pd.DataFrame(rows).set_index("chosen by").round(2)


def _wilson(percent: float, n: int) -> str:
    lo, hi = binomial_interval(round(percent / 100 * n), n)
    return f"{100 * lo:.1f} to {100 * hi:.1f}"

