"""Would training on images like the test ones close the gap? Half of one class's test patients swapped in.

When a class's test images are a population of their own (:mod:`helpers.xray.domain_shift`), more tuning on
validation drawn from the training pool cannot be expected to help; images like the test ones in training
might. This module checks that claim directly, at the price of part of the test split:

* :func:`swap_in` moves ``share`` of one class's test *patients* (whole patients, seeded) out of the test
  split and builds two training splits of equal size and class counts: **pool only** is the training split
  as it is, **swapped** has the moved test images in place of as many random training images of that class;
* :func:`train_arms` trains one configuration on both, over the same seeds (validation is the pool's in
  both, so each run picks its epoch exactly as the reported models do; the pool-only arm can reuse the
  reported models themselves, which were trained on exactly that training split);
* :func:`swap_table` and :func:`swap_verdict` compare them on the test images left, paired by seed.

Both arms are scored on the same remaining test images, which no run trained on. The experiment spends
part of the test split, so it comes after the reported test evaluation and changes none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from helpers.data import patient_of
from helpers.paths import Outputs
from helpers.runs import RunResult, recall_table, train_and_evaluate
from helpers.splits import DataSplits, Split, grouped_stratified_split
from helpers.stats import Verdict, paired
from helpers.training import evaluate, hook_settings

#: names of the two arms, in the order :func:`swap_in` returns them
ARMS = ("pool only", "swapped")


def _concat(a: Split, b: Split) -> Split:
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), list(a.ids) + list(b.ids))


def swap_in(data: DataSplits, class_name: str, *, share: float = 0.5, seed: int = 0) -> tuple[DataSplits, DataSplits]:
    """(pool only, swapped): ``data`` with ``share`` of ``class_name``'s test patients moved out of the test
    split; *swapped* trains on them in place of as many random training images of the class, *pool only* on
    the training split as it is. Validation, the test images left and normalisation (the pool's) are the
    same in both, and so are the training split's size and class counts.

    ``data`` must not carry training views yet (add them to each arm afterwards): the moved images have none."""
    if class_name not in data.classes:
        raise ValueError(f"unknown class {class_name!r}; the classes are {data.classes}")
    if data.train.views is not None:
        raise ValueError("swap_in needs data without training views; add them to each arm afterwards "
                         "(e.g. helpers.xray.aspect.with_stretch_views)")
    label = data.classes.index(class_name)
    in_test = np.flatnonzero(data.test.y.numpy() == label)
    if len(in_test) < 2:
        raise ValueError(f"need at least 2 test images of {class_name!r}, got {len(in_test)}")
    groups = [patient_of(data.test.ids[i]) for i in in_test]
    _, moved_at = grouped_stratified_split(np.zeros(len(in_test), dtype=int), groups, share, seed)
    moved = in_test[moved_at]
    in_train = np.flatnonzero(data.train.y.numpy() == label)
    if len(moved) > len(in_train):
        raise ValueError(f"{len(moved)} test images to swap in but only {len(in_train)} training images of "
                         f"{class_name!r} to replace")
    dropped = np.random.default_rng(seed).choice(in_train, len(moved), replace=False)
    kept = data.train.take(np.setdiff1d(np.arange(len(data.train)), dropped))
    test = data.test.take(np.setdiff1d(np.arange(len(data.test)), moved))
    note = (f"{len(moved)} {class_name} test images ({len(set(groups[i] for i in moved_at))} patients) moved out of "
            f"the test split")
    return (replace(data, test=test, note=f"{note}; training split as it is (pool only)"),
            replace(data, train=_concat(kept, data.test.take(moved)), test=test,
                    note=f"{note}; they replace {len(dropped)} random {class_name} training images (swapped)"))


def train_arms(arms: Sequence[DataSplits], run: RunResult, seeds: Sequence[int], *, experiment: str,
               outputs: Outputs, device: str | torch.device = "auto",
               pool_runs: Sequence[RunResult] | None = None) -> dict[str, list[RunResult]]:
    """``run``'s model and training settings trained on each arm of :func:`swap_in` once per seed, scored on
    the arm's test split (the images left); ``{arm name: runs in seed order}``.

    ``pool_runs``: runs already trained with those settings on the pool-only arm's training split, one per
    seed in order (the reported tuned models): they are scored on the images left instead of trained again."""
    trained = {}
    for name, d in zip(ARMS, arms):
        if name == ARMS[0] and pool_runs is not None:
            for r, s in zip(pool_runs, seeds, strict=True):
                if (r.train_config != replace(run.train_config, seed=s) or r.model_config != run.model_config
                        or hook_settings(r.hooks) != hook_settings(run.hooks)):
                    raise ValueError(f"run {r.name!r} was not trained with the given settings and seed {s}")
            trained[name] = [replace(r, test=evaluate(r.model, d, "test", device=device)) for r in pool_runs]
            continue
        trained[name] = [train_and_evaluate(d, replace(run.train_config, seed=s),
                                            name=f"swap-{name.replace(' ', '-')}-seed{s}", experiment=experiment,
                                            model_config=run.model_config, outputs=outputs, device=device,
                                            hooks=run.hooks)
                         for s in seeds]
    return trained


def swap_table(runs: dict[str, list[RunResult]]) -> pd.DataFrame:
    """Per arm and run: test images left, accuracy, balanced accuracy and every class's recall there, in %
    (:func:`helpers.runs.recall_table` of each arm)."""
    return pd.concat({name: recall_table(results) for name, results in runs.items()}, names=["arm", "run"])


def swap_verdict(runs: dict[str, list[RunResult]], class_name: str, *, noun: str = "images") -> str:
    """Markdown: the claim "training on test-like ``class_name`` ``noun`` raises its recall on the other test
    patients' images" (``noun``: what the data set's images are, e.g. "X-rays"), decided by the project's
    paired rule (:func:`helpers.stats.paired`: swapped − pool only by seed, 95 % t interval), with the
    same paired difference of balanced accuracy beside it."""
    if [r.train_config.seed for r in runs[ARMS[0]]] != [r.train_config.seed for r in runs[ARMS[1]]]:
        raise ValueError("the two arms must be trained on the same seeds, in the same order")
    frame = pd.DataFrame([{"arm": arm, "seed": r.train_config.seed, "balanced": 100 * r.test.balanced_accuracy,
                           "recall": 100 * float(r.test.per_class[class_name])} for arm in ARMS for r in runs[arm]])
    mean = frame.groupby("arm").mean()
    claim = (f"training on test-like {class_name} {noun} raises the {class_name} recall on the other test "
             f"patients' images")
    v = paired(frame, "arm", *ARMS, metric="recall", claim=claim)
    b = paired(frame, "arm", *ARMS, metric="balanced")
    evidence = (f"{class_name.capitalize()} recall {mean.loc[ARMS[0], 'recall']:.1f} % pool only, "
                f"{mean.loc[ARMS[1], 'recall']:.1f} % swapped; {v.evidence}. Balanced accuracy on the same images: "
                f"{mean.loc[ARMS[0], 'balanced']:.1f} % and {mean.loc[ARMS[1], 'balanced']:.1f} %; {b.evidence}")
    return f"**Claim:** {claim}. " + Verdict(claim, v.outcome, v.rule, evidence).markdown()
