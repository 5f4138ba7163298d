"""The few statistics the reports rest on: intervals over seeds and test images, paired differences,
and a rank test between two sets of repeated runs. Each returns its numbers and the rule it applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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


@dataclass
class PairedDifference:
    """``b − a`` over the same seeds: mean, standard error and the rule's verdict."""

    mean: float
    se: float
    n: int
    verdict: str  #: "b better", "a better" or "no clear difference"

    @property
    def rule(self) -> str:
        return "a difference counts when its mean is more than 2 standard errors of the paired differences from 0"

    def text(self) -> str:
        """``+1.23 ± 0.45 points (s.e., n = 3)``, or the mean alone when one pair gives no standard error."""
        if self.n > 1:
            return f"{self.mean:+.2f} ± {self.se:.2f} points (s.e., n = {self.n})"
        return f"{self.mean:+.2f} points (one seed: no standard error)"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Paired comparison of two runs per seed (same seeds, same order): is ``b − a`` beyond 2 s.e.?"""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"need the same non-zero number of paired values, got {len(a)} and {len(b)}")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    mean = float(d.mean())
    if not math.isfinite(se):
        verdict = "no clear difference"  # one pair: no error bar, no claim
    elif mean > 2 * se:
        verdict = "b better"
    elif mean < -2 * se:
        verdict = "a better"
    else:
        verdict = "no clear difference"
    return PairedDifference(mean, se, len(d), verdict)


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
