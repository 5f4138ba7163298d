"""The few statistics the reports rest on, and every decision made from them, each by one stated rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (one per seed); (nan, nan) for fewer than two."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    half = sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def binomial_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``correct`` out of ``n`` test images (as fractions)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = sps.norm.ppf(0.5 + level / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


#: The one rule for "B beats A", used by every study, the robust model, the X-ray targets and the reflections.
PAIRED_RULE = "mean difference paired by seed; its 95 % Student-t interval excludes 0"


@dataclass
class PairedDifference:
    """``b − a`` over the same seeds: mean, standard error, 95 % t interval, :data:`PAIRED_RULE`'s outcome."""

    mean: float
    se: float
    n: int
    low: float
    high: float
    outcome: str
    rule: str = PAIRED_RULE

    @property
    def degenerate(self) -> bool:
        """Every pair gave the same two values (e.g. both runs at chance): no evidence either way."""
        return self.n > 1 and self.se == 0 and self.mean == 0

    def text(self, unit: str = "points") -> str:
        """``+1.23 points, 95 % CI +0.10 to +2.36 (n = 3 seeds)``; the mean alone with one seed."""
        if self.n < 2:
            return f"{self.mean:+.2f} {unit} (one seed: no interval)"
        if self.degenerate:
            return f"identical in all {self.n} seeds (a degenerate comparison: no evidence either way)"
        return f"{self.mean:+.2f} {unit}, 95 % CI {self.low:+.2f} to {self.high:+.2f} (n = {self.n} seeds)"


def mean_difference(differences: Sequence[float]) -> PairedDifference:
    """:data:`PAIRED_RULE` applied to per-seed differences ``b − a`` (or differences of differences)."""
    d = np.asarray(differences, dtype=float)
    if not len(d):
        raise ValueError("need at least one paired value")
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    low, high = seed_interval(d)
    if len(d) < 2 or not (low > 0 or high < 0):
        outcome = "no clear difference"
    else:
        outcome = "b better" if low > 0 else "a better"
    return PairedDifference(mean, se, len(d), low, high, outcome)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Is ``b`` better than ``a`` (same seeds, same order)? Decided by :data:`PAIRED_RULE`."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need the same non-zero number of paired values, got {len(a)} and {len(b)}")
    return mean_difference(np.asarray(b, dtype=float) - np.asarray(a, dtype=float))


@dataclass(frozen=True)
class Decision:
    """A decision by a stated rule: value, interval, outcome and the rule's text; sentences come from it."""

    name: str
    value: float
    outcome: str
    rule: str
    low: float = float("nan")  #: the value's 95 % interval, when it has one
    high: float = float("nan")
    reference: float = float("nan")  #: what the value is compared with (a threshold, another gain)
    unit: str = "%"  #: of the value and its interval: "%" or "points" (a difference)

    def interval_text(self) -> str:
        """``95 % CI 84.1–86.3 %`` (a difference: ``95 % CI -1.2 to +3.4 points``), or '' without an interval."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return ""
        if self.unit == "points":
            return f"95 % CI {self.low:+.1f} to {self.high:+.1f} points"
        return f"95 % CI {self.low:.1f}–{self.high:.1f} {self.unit}".rstrip()

    def outcome_text(self, band: float | None = None) -> str:
        """The outcome, with its margin to the threshold and "within the band" when that is under ``band`` points."""
        band = REPRODUCTION_BAND if band is None else band
        margin = abs(self.value - self.reference)
        if not math.isfinite(margin):  # a decision without a threshold (e.g. a paired comparison)
            return self.outcome
        within = f" (within the {band:g}-point band)" if margin < band else ""
        return f"{self.outcome} by {margin:.2f} points{within}"


def target(name: str, values: Sequence[float], threshold: float, *, at_most: bool = False, unit: str = "%",
           interval: tuple[float, float] | None = None, where: str = "") -> Decision:
    """Met when the mean of ``values`` is ≥ (``at_most``: ≤) ``threshold``, with its 95 % interval."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    low, high = interval or seed_interval(x)
    met = mean <= threshold if at_most else mean >= threshold
    rule = f"mean over {len(x)} seed(s){' ' + where if where else ''} {'≤' if at_most else '≥'} {threshold:g} {unit}".rstrip()
    return Decision(name, mean, "met" if met else "missed", rule, low, high, threshold, unit)


def beats(name: str, a: Sequence[float], b: Sequence[float], reference: float = float("nan")) -> Decision:
    """Target "``b`` above ``a``" (same seeds): met when :data:`PAIRED_RULE` says b better; value b − a."""
    d = paired_difference(a, b)
    return Decision(name, d.mean, "met" if d.outcome == "b better" else "missed", d.rule, d.low, d.high, reference,
                    unit="points")


@dataclass
class RankTest:
    """Two-sided Mann-Whitney U test between two groups of repeated runs, at level ``alpha``."""

    u: float
    p: float
    alpha: float
    verdict: str  #: name of the better group, or "inconclusive"

    @property
    def rule(self) -> str:
        return (f"Mann-Whitney U on the final values, two-sided, alpha = {self.alpha:g}: the group with the higher "
                f"median wins if p < alpha, otherwise the outcome is inconclusive")


def mann_whitney(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b"),
                 alpha: float = 0.05) -> RankTest:
    """Which of two groups of repeated results is higher, by the rule in :attr:`RankTest.rule`."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least two runs per group, got {len(a)} and {len(b)}")
    u, p = sps.mannwhitneyu(a, b, alternative="two-sided")
    if p < alpha:
        verdict = names[0] if np.median(a) > np.median(b) else names[1]
    else:
        verdict = "inconclusive"
    return RankTest(float(u), float(p), alpha, verdict)


ALPHA = 0.05
TREND_RULE = "Spearman rank correlation of the metric with the factor's level over every run; p < 0.05, two-sided"
TREND_SEED_RULE = ("Spearman rank correlation of the metric with the factor's level within each seed; the mean over "
                   "seeds of Fisher's z = atanh ρ (ρ = ±1 counted one adjacent swap short), whose 95 % Student-t "
                   "interval must exclude 0 (shown as ρ)")
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


_OUTCOME = {"b better": "supported", "a better": "refuted", "no clear difference": "inconclusive"}


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
    diff = mean_difference((xb - xa).dropna().to_numpy())
    return Verdict(claim or f"{b} beats {a}", _OUTCOME[diff.outcome], PAIRED_RULE, f"{b} − {a}: {diff.text()}")


def diff_in_diff(frame: pd.DataFrame, factor: str, a: Any, b: Any, group: str, g1: Any, g2: Any, *,
                 metric: str = "final_val_acc", claim: str | None = None) -> Verdict:
    """Claim "``b`` over ``a`` gains more in ``g1`` than in ``g2``": per seed (b − a in g1) − (b − a in g2)."""
    gains = []
    for g in (g1, g2):
        sub = frame[frame[group] == g]
        gains.append(_by_seed(sub, factor, b, metric) - _by_seed(sub, factor, a, metric))
    diff = mean_difference((gains[0] - gains[1]).dropna().to_numpy())
    return Verdict(claim or f"{b} over {a} gains more on {g1} than on {g2}", _OUTCOME[diff.outcome], DID_RULE,
                   f"gain on {g1} {gains[0].mean():+.2f}, on {g2} {gains[1].mean():+.2f}; difference {diff.text()}")


def fisher_z(rho: float, n: int) -> float:
    """Fisher's z = atanh ρ of a Spearman ρ over ``n`` levels; ρ = ±1 (no z) counts as the nearest value a
    ranking of ``n`` levels can take, one adjacent swap short: ±(1 − 12 / (n (n² − 1)))."""
    n = max(n, 3)
    edge = 1 - 12 / (n * (n * n - 1))
    return float(np.arctanh(np.clip(rho, -edge, edge)))


def trend(frame: pd.DataFrame, factor: str, order: Sequence[Any], *, metric: str = "final_val_acc",
          claim: str | None = None, always: bool = False, steps: Sequence[tuple[Any, Any]] | None = None,
          per_seed: bool = False) -> Verdict:
    """Claim "more ``factor`` helps": Spearman ρ of ``metric`` with each run's level position in ``order``."""
    rank = {level: i for i, level in enumerate(order)}
    rows = frame[frame[factor].isin(rank)]
    if per_seed:  # levels of one run (e.g. its epochs) are not independent runs: one ρ per seed, decided over seeds
        groups = [g for _, g in rows.groupby("seed")]
        rhos = [float(sps.spearmanr(g[factor].map(rank), g[metric])[0]) for g in groups]
        d = mean_difference([fisher_z(r, g[factor].nunique()) for r, g in zip(rhos, groups)])  # an interval inside ±1
        outcome = _OUTCOME[d.outcome]
        mean, low, high = np.tanh([d.mean, d.low, d.high])
        evidence = (f"Spearman ρ per seed {', '.join(f'{r:+.2f}' for r in rhos)}; mean {mean:+.2f}"
                    + (f", 95 % CI {low:+.2f} to {high:+.2f} (n = {d.n} seeds, Fisher's z)" if d.n > 1
                       else " (one seed)"))
        rule = TREND_SEED_RULE
    else:
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
    return Verdict(claim, outcome, COMBINE_RULE, f"{len(parts)} part{'' if len(parts) == 1 else 's'}: {counts}", list(parts))


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
    """Did each claim of ``before`` keep its outcome in ``after``? By :data:`HELD_RULE`."""
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


#: How far one commit's results move when re-run from scratch on another machine of the same kind
#: (CPU float differences send a search elsewhere): notebook 03's baseline moved from 65.98 to 67.48 %
#: and its tuned mean from 87.82 to 86.78 %. A target met or missed by less than this is within the band.
REPRODUCTION_BAND = 1.5  # points


def finding(text: str, value: str, section: str, *, interval: str = "", target: Decision | None = None,
            outcome: str = "") -> dict[str, str]:
    """One line of the findings page: what, value, interval, target met or missed, the section showing it."""
    if target is not None:
        outcome = outcome or target.outcome_text()
    return {"finding": text, "value": value, "interval": interval,
            "target": target.rule if target is not None else "", "outcome": outcome, "section": section}
