"""Verdicts on hypotheses, each by a stated rule over the runs that test them.

Runs come as a frame with one row per (configuration, seed): the factor columns, ``seed`` and the
metric. Every single claim has three outcomes:

* **supported**: the claim holds significantly;
* **refuted**: the opposite holds significantly;
* **inconclusive**: neither.

The tests: "more X helps" is a trend over the whole sweep (Spearman rank correlation over every
run, two-sided, alpha 0.05); "B beats A" is a paired comparison over the same seeds (95 % Student-t
interval of the mean difference, which must exclude 0); "the effect of B over A is larger in G1
than in G2" is a difference in differences, paired by seed, with the same interval.

"Partly supported" survives only for a hypothesis made of several claims (:func:`combine`): when
at least one claim is supported and none is refuted. One significant counter-example refutes a
general claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats as sps

from helpers.stats import seed_interval

ALPHA = 0.05
TREND_RULE = "Spearman rank correlation of the metric with the factor's level over every run; p < 0.05, two-sided"
PAIRED_RULE = "mean difference paired by seed; its 95 % Student-t interval excludes 0"
DID_RULE = "difference in differences paired by seed; its 95 % Student-t interval excludes 0"
COMBINE_RULE = ("all parts supported: supported; any part refuted: refuted; some supported, none refuted: "
                "partly supported; else inconclusive")


@dataclass
class Verdict:
    """One claim's outcome, the rule that decided it and the numbers it rests on."""

    claim: str
    outcome: str  #: supported / refuted / inconclusive (or partly supported for combined claims)
    rule: str
    evidence: str
    parts: list[Verdict] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.claim}: **{self.outcome}** ({self.evidence})"

    def markdown(self) -> str:
        """The verdict, its rule and, for a combined claim, one bullet per part."""
        lines = [f"**Verdict: {self.outcome}.** {self.evidence}.", f"*Rule: {self.rule}.*"]
        lines += [f"- {p}" for p in self.parts]
        return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if self.parts else "")


def _signed(value: float, lo: float, hi: float, n: int) -> tuple[str, str]:
    """Outcome of "value > 0" from its interval, and the evidence text."""
    if n < 2:
        return "inconclusive", f"{value:+.2f} points (one seed: no interval)"
    outcome = "supported" if lo > 0 else "refuted" if hi < 0 else "inconclusive"
    return outcome, f"{value:+.2f} points, 95 % CI {lo:+.2f} to {hi:+.2f} (n = {n} seeds)"


def _by_seed(frame: pd.DataFrame, factor: str, level: Any, metric: str) -> pd.Series:
    rows = frame[frame[factor] == level]
    if rows.empty:
        raise ValueError(f"no runs with {factor} = {level!r}")
    return rows.groupby("seed")[metric].mean() * _scale(metric)


def _scale(metric: str) -> float:
    return 100.0 if metric.endswith("acc") else 1.0


def paired(frame: pd.DataFrame, factor: str, a: Any, b: Any, *, metric: str = "final_val_acc",
           claim: str | None = None) -> Verdict:
    """Claim "``b`` beats ``a``" (on ``metric``, higher is better), paired over the seeds both ran."""
    xa, xb = _by_seed(frame, factor, a, metric), _by_seed(frame, factor, b, metric)
    d = (xb - xa).dropna()
    lo, hi = seed_interval(d.to_numpy())
    outcome, evidence = _signed(float(d.mean()), lo, hi, len(d))
    return Verdict(claim or f"{b} beats {a}", outcome, PAIRED_RULE, f"{b} − {a}: {evidence}")


def diff_in_diff(frame: pd.DataFrame, factor: str, a: Any, b: Any, group: str, g1: Any, g2: Any, *,
                 metric: str = "final_val_acc", claim: str | None = None) -> Verdict:
    """Claim "``b`` over ``a`` gains more in ``g1`` than in ``g2``": per seed (b − a in g1) − (b − a in g2)."""
    gains = []
    for g in (g1, g2):
        sub = frame[frame[group] == g]
        gains.append(_by_seed(sub, factor, b, metric) - _by_seed(sub, factor, a, metric))
    d = (gains[0] - gains[1]).dropna()
    lo, hi = seed_interval(d.to_numpy())
    outcome, evidence = _signed(float(d.mean()), lo, hi, len(d))
    return Verdict(claim or f"{b} over {a} gains more on {g1} than on {g2}", outcome, DID_RULE,
                   f"gain on {g1} {gains[0].mean():+.2f}, on {g2} {gains[1].mean():+.2f}; difference {evidence}")


def trend(frame: pd.DataFrame, factor: str, order: Sequence[Any], *, metric: str = "final_val_acc",
          claim: str | None = None, always: bool = False, steps: Sequence[tuple[Any, Any]] | None = None) -> Verdict:
    """Claim "more ``factor`` helps": Spearman correlation of ``metric`` with the position of each run's
    level in ``order`` (smallest first), over every run and seed.

    With ``always=True`` ("more always helps") every adjacent step (or each ``(fewer, more)`` pair in
    ``steps``) is also compared, paired by seed: a step that is significantly *worse* is a
    counter-example and refutes the claim; a significant positive trend with no counter-example
    supports it.
    """
    rank = {level: i for i, level in enumerate(order)}
    rows = frame[frame[factor].isin(rank)]
    rho, p = sps.spearmanr(rows[factor].map(rank), rows[metric])
    rho, p = float(rho), float(p)
    outcome = ("supported" if rho > 0 else "refuted") if p < ALPHA else "inconclusive"
    evidence = f"Spearman ρ = {rho:+.2f}, p = {p:.2g} over {len(rows)} runs"
    rule = TREND_RULE
    parts = []
    if always:
        pairs = steps if steps is not None else list(zip(order, order[1:]))
        parts = [paired(rows, factor, x, y, metric=metric, claim=f"{y} beats {x}") for x, y in pairs]
        worse = [v for v in parts if v.outcome == "refuted"]
        rule += f"; and no step ({'adjacent levels' if steps is None else 'the pairs shown'}) significantly worse ({PAIRED_RULE}), else refuted"
        if worse:
            outcome = "refuted"
            evidence += "; significantly worse: " + ", ".join(v.evidence for v in worse)
        else:
            evidence += f"; no step significantly worse ({len(parts)} compared)"
    return Verdict(claim or f"more {factor} helps", outcome, rule, evidence, parts)


def combine(claim: str, parts: Sequence[Verdict]) -> Verdict:
    """A hypothesis made of several claims, by :data:`COMBINE_RULE`."""
    outcomes = [p.outcome for p in parts]
    if not parts:
        raise ValueError("nothing to combine")
    if all(o == "supported" for o in outcomes):
        outcome = "supported"
    elif "refuted" in outcomes:
        outcome = "refuted"
    elif "supported" in outcomes:
        outcome = "partly supported"
    else:
        outcome = "inconclusive"
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in ("supported", "refuted", "inconclusive") if o in outcomes)
    return Verdict(claim, outcome, COMBINE_RULE, f"{len(parts)} parts: {counts}", list(parts))


def given(claim: str, outcome: str, rule: str, evidence: str) -> Verdict:
    """A claim decided by a rule that is not a significance test (e.g. a ranking); stated like the others."""
    if outcome not in ("supported", "refuted", "inconclusive"):
        raise ValueError(f"unknown outcome {outcome!r}")
    return Verdict(claim, outcome, rule, evidence)


def table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per hypothesis: verdict, rule and evidence."""
    return pd.DataFrame([{"hypothesis": v.claim, "verdict": v.outcome, "rule": v.rule, "evidence": v.evidence}
                         for v in verdicts])


HELD_RULE = ("each claim re-tested in the new regime: held when every claim keeps its outcome; reversed when any "
             "claim turns from supported to refuted or back; else not confirmed (an outcome became or stopped being "
             "inconclusive)")


def held(claim: str, before: Sequence[Verdict], after: Sequence[Verdict]) -> Verdict:
    """Did each claim of ``before`` keep its outcome when re-tested in another regime (``after``, same
    order)? The outcome is ``held`` / ``reversed`` / ``not confirmed`` by :data:`HELD_RULE`."""
    if len(before) != len(after) or not before:
        raise ValueError(f"need the same claims before and after, got {len(before)} and {len(after)}")
    pairs = list(zip((v.outcome for v in before), (v.outcome for v in after)))
    if all(a == b for a, b in pairs):
        outcome = "held"
    elif any({a, b} == {"supported", "refuted"} for a, b in pairs):
        outcome = "reversed"
    else:
        outcome = "not confirmed"
    evidence = "; ".join(f"{a.claim}: {a.outcome}, was {b.outcome}" for b, a in zip(before, after))
    return Verdict(claim, outcome, HELD_RULE, evidence, list(after))
