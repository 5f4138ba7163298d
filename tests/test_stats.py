"""helpers.stats: intervals, the one paired rule, the rank test, and each verdict rule giving each of its
outcomes on constructed cases (exact numbers, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import stats


def runs(values: dict[object, list[float]], factor: str = "x", **fixed: object) -> pd.DataFrame:
    """One row per (level, seed): ``values[level][seed]`` as ``final_val_acc`` (a fraction)."""
    return pd.DataFrame([{factor: level, "seed": seed, "final_val_acc": v, **fixed}
                         for level, vs in values.items() for seed, v in enumerate(vs)])


def test_paired_has_three_outcomes() -> None:
    up = runs({"a": [0.50, 0.52, 0.51], "b": [0.60, 0.61, 0.62]})
    assert stats.paired(up, "x", "a", "b").outcome == "supported"
    assert stats.paired(up, "x", "b", "a").outcome == "refuted"
    noisy = runs({"a": [0.50, 0.60, 0.55], "b": [0.58, 0.52, 0.56]})
    v = stats.paired(noisy, "x", "a", "b")
    assert v.outcome == "inconclusive" and "95 % CI" in v.evidence
    assert stats.paired(runs({"a": [0.5], "b": [0.9]}), "x", "a", "b").outcome == "inconclusive"  # one seed


def test_pairing_uses_seeds_not_order() -> None:
    """A constant +5-point gain per seed is certain even when seeds differ a lot from each other."""
    frame = runs({"a": [0.40, 0.60, 0.80], "b": [0.45, 0.65, 0.85]})
    v = stats.paired(frame.sample(frac=1, random_state=0), "x", "a", "b")
    assert v.outcome == "supported" and "+5.00 points" in v.evidence


def test_trend_over_the_whole_sweep() -> None:
    rising = runs({1: [0.40, 0.42, 0.41], 2: [0.50, 0.49, 0.51], 4: [0.55, 0.56, 0.54], 8: [0.58, 0.60, 0.59]})
    assert stats.trend(rising, "x", [1, 2, 4, 8]).outcome == "supported"
    assert stats.trend(rising, "x", [8, 4, 2, 1]).outcome == "refuted"
    flat = runs({1: [0.50, 0.60, 0.55], 2: [0.58, 0.52, 0.56], 4: [0.54, 0.57, 0.51]})
    assert stats.trend(flat, "x", [1, 2, 4]).outcome == "inconclusive"


def test_always_is_refuted_by_one_significantly_worse_step() -> None:
    """H1 in notebook 05 had only gains, some within noise: that is supported, not refuted."""
    gains = runs({1: [0.40, 0.42, 0.41], 2: [0.50, 0.49, 0.51], 4: [0.51, 0.49, 0.53], 8: [0.53, 0.52, 0.52]})
    v = stats.trend(gains, "x", [1, 2, 4, 8], always=True)
    assert v.outcome == "supported" and len(v.parts) == 3
    dip = runs({1: [0.40, 0.42, 0.41], 2: [0.60, 0.61, 0.62], 4: [0.55, 0.56, 0.57], 8: [0.63, 0.64, 0.65]})
    v = stats.trend(dip, "x", [1, 2, 4, 8], always=True)
    assert v.outcome == "refuted" and "significantly worse" in v.evidence
    v = stats.trend(dip, "x", [1, 2, 4, 8], always=True, steps=[(1, 8)])
    assert v.outcome == "supported" and len(v.parts) == 1


def test_difference_in_differences() -> None:
    """H4: a layer that hurts on Simpsons and not on Fashion is the opposite of the hypothesis."""
    frame = pd.concat([
        runs({"LeNet-5": [0.56, 0.55, 0.58], "+ dense": [0.53, 0.52, 0.54]}, data="simpsons"),
        runs({"LeNet-5": [0.80, 0.82, 0.79], "+ dense": [0.80, 0.83, 0.79]}, data="fashion")])
    v = stats.diff_in_diff(frame, "x", "LeNet-5", "+ dense", "data", "simpsons", "fashion")
    assert v.outcome == "refuted" and "gain on simpsons -3.33" in v.evidence
    v = stats.diff_in_diff(frame, "x", "LeNet-5", "+ dense", "data", "fashion", "simpsons")
    assert v.outcome == "supported"
    same = pd.concat([runs({"a": [0.5, 0.6, 0.55], "b": [0.52, 0.61, 0.58]}, data="g1"),
                      runs({"a": [0.5, 0.6, 0.55], "b": [0.53, 0.60, 0.57]}, data="g2")])
    assert stats.diff_in_diff(same, "x", "a", "b", "data", "g1", "g2").outcome == "inconclusive"


@pytest.mark.parametrize(("outcomes", "expected"), [
    (["supported", "supported"], "supported"),
    (["supported", "inconclusive"], "partly supported"),
    (["supported", "refuted"], "refuted"),
    (["inconclusive", "refuted"], "refuted"),
    (["inconclusive", "inconclusive"], "inconclusive"),
])
def test_combine_keeps_partly_supported_only_without_counter_examples(outcomes: list[str], expected: str) -> None:
    parts = [stats.given(f"part {i}", o, "stated", "numbers") for i, o in enumerate(outcomes)]
    v = stats.combine("whole", parts)
    assert v.outcome == expected and v.parts == parts
    assert v.markdown().count("\n- ") == len(parts)


def test_given_rejects_unknown_outcomes() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        stats.given("c", "partly supported", "r", "e")


def test_held_has_three_outcomes() -> None:
    sup, ref, inc = (stats.given(f"c{k}", o, "r", "e") for k, o in enumerate(("supported", "refuted", "inconclusive")))
    assert stats.held("h", [sup, ref], [sup, ref]).outcome == "held"
    assert stats.held("h", [sup, ref], [ref, ref]).outcome == "reversed"
    assert stats.held("h", [sup, inc], [inc, inc]).outcome == "not confirmed"
    assert stats.held("h", [inc], [sup]).outcome == "not confirmed"
    with pytest.raises(ValueError):
        stats.held("h", [sup], [sup, sup])


# ----------------------------------------------------------------------------------- the one paired rule


def test_paired_difference_has_three_outcomes_by_the_t_interval() -> None:
    better = stats.paired_difference([80, 81, 79], [85, 86, 84.5])
    assert better.outcome == "b better" and better.low > 0 and better.rule == stats.PAIRED_RULE
    assert stats.paired_difference([85, 86, 84.5], [80, 81, 79]).outcome == "a better"
    assert stats.paired_difference([80, 81, 79], [81, 79, 80.5]).outcome == "no clear difference"
    assert stats.paired_difference([80], [90]).outcome == "no clear difference"  # one pair: no interval
    assert better.text() == "+5.17 points, 95 % CI +4.45 to +5.88 (n = 3 seeds)"
    assert stats.paired_difference([80], [90]).text() == "+10.00 points (one seed: no interval)"  # not "± nan"
    with pytest.raises(ValueError):
        stats.paired_difference([1, 2], [1])


def test_two_standard_errors_are_not_enough_with_three_seeds() -> None:
    """Differences 1, 2, 3: mean 2 is 3.5 s.e. from 0 (the old 2-s.e. rule said better), but t at 2 degrees of
    freedom is 4.30, so the 95 % interval (-0.48, 4.48) holds 0: no clear difference."""
    d = stats.paired_difference([80, 80, 80], [81, 82, 83])
    assert d.mean == pytest.approx(2.0) and d.mean > 2 * d.se
    assert d.low < 0 < d.high and d.outcome == "no clear difference"


def test_a_comparison_where_every_seed_ties_is_called_degenerate() -> None:
    d = stats.paired_difference([10.0, 10.0, 10.0], [10.0, 10.0, 10.0])  # both at chance in every seed
    assert d.degenerate and d.outcome == "no clear difference" and "degenerate" in d.text() and "CI" not in d.text()
    verdict = stats.paired(runs({"a": [0.1, 0.1, 0.1], "b": [0.1, 0.1, 0.1]}), "x", "a", "b")
    assert verdict.outcome == "inconclusive" and "degenerate" in verdict.evidence


# ----------------------------------------------------------------------------------- intervals and the rank test


def test_mann_whitney_verdicts() -> None:
    low, high = [0.70, 0.71, 0.72, 0.73, 0.74], [0.80, 0.81, 0.82, 0.83, 0.84]
    assert stats.mann_whitney(high, low, names=("tpe", "random")).verdict == "tpe"
    assert stats.mann_whitney(low, high, names=("tpe", "random")).verdict == "random"
    mixed = stats.mann_whitney([0.7, 0.8, 0.75, 0.72, 0.79], [0.71, 0.78, 0.76, 0.74, 0.8], names=("tpe", "random"))
    assert mixed.verdict == "inconclusive" and mixed.p > 0.05


def test_intervals() -> None:
    lo, hi = stats.binomial_interval(90, 100)
    assert lo < 0.9 < hi and hi - lo == pytest.approx(0.118, abs=0.01)
    lo2, hi2 = stats.binomial_interval(900, 1000)
    assert hi2 - lo2 < hi - lo  # more test images, narrower interval
    slo, shi = stats.seed_interval([88.0, 88.5, 89.0])
    assert slo < 88.5 < shi
    assert all(np.isnan(stats.seed_interval([88.0])))


def test_a_target_is_met_or_missed_on_the_mean_with_its_interval() -> None:
    d = stats.target("tuned", [86.0, 87.0, 88.0], 85.0)
    assert d.outcome == "met" and d.value == 87.0 and d.low < 87.0 < d.high and d.reference == 85.0
    assert "≥ 85 %" in d.rule and d.interval_text().startswith("95 % CI")
    assert stats.target("tuned", [84.0, 85.5, 85.0], 85.0).outcome == "missed"  # mean 84.83
    assert stats.target("wrong and sure", [4.0, 6.0], 5.0, at_most=True).outcome == "met"
    assert stats.target("one seed", [90.0], 85.0).interval_text() == ""


def test_selection_bias_needs_a_validation_gain_that_test_does_not_keep() -> None:
    from helpers.tuning.study import selection_bias

    assert selection_bias(6.0, 2.0).outcome == "selection bias"  # kept a third of it
    assert selection_bias(6.0, 4.0).outcome == "none shown"
    assert selection_bias(-1.0, -3.0).outcome == "none shown"  # no validation gain to lose
    assert selection_bias(6.0, 2.0).reference == 6.0



def test_a_trend_within_runs_is_decided_over_seeds_not_over_epochs() -> None:
    import pandas as pd

    # three seeds whose accuracy rises with the epoch in two seeds and falls in the third: 30 rows, 3 units
    rows = [{"seed": s, "epoch": e, "val_acc": 0.5 + (0.01 if s < 2 else -0.01) * e} for s in range(3) for e in range(1, 11)]
    frame = pd.DataFrame(rows)
    pooled = stats.trend(frame, "epoch", list(range(1, 11)), metric="val_acc")
    per_seed = stats.trend(frame, "epoch", list(range(1, 11)), metric="val_acc", per_seed=True)
    assert per_seed.outcome == "inconclusive" and "+1.00, +1.00, -1.00" in per_seed.evidence
    assert per_seed.rule == stats.TREND_SEED_RULE and pooled.rule == stats.TREND_RULE


def test_a_per_seed_correlation_interval_stays_inside_plus_minus_one() -> None:
    import re

    import pandas as pd

    # three seeds, all rising, two perfectly (ρ = +1) and one almost (ρ = +0.98): a plain t interval passes +1
    noise = [0, 0, 0, 0, 0.03, 0, 0, 0, 0, 0]
    rows = [{"seed": s, "epoch": e, "val_acc": 0.5 + 0.01 * e + (noise[e - 1] if s == 2 else 0.0)}
            for s in range(3) for e in range(1, 11)]
    verdict = stats.trend(pd.DataFrame(rows), "epoch", list(range(1, 11)), metric="val_acc", per_seed=True)
    low, high = map(float, re.search(r"95 % CI ([+-][\d.]+) to ([+-][\d.]+)", verdict.evidence).groups())
    assert -1 <= low < high <= 1 and "Fisher" in verdict.evidence
    assert verdict.outcome == "supported"


def test_a_one_part_combination_is_one_part() -> None:
    one = stats.combine("c", [stats.given("a", "supported", "r", "e")])
    two = stats.combine("c", [stats.given("a", "supported", "r", "e"), stats.given("b", "refuted", "r", "e")])
    assert one.evidence == "1 part: 1 supported" and two.evidence == "2 parts: 1 supported, 1 refuted"


def test_a_target_within_the_reproduction_band_says_so() -> None:
    near = stats.target("x", [87.5, 88.0, 87.96], 88.0)
    far = stats.target("x", [80.0, 81.0, 82.0], 88.0)
    assert near.outcome == "missed" and "within the 1.5-point band" in near.outcome_text()
    assert far.outcome_text() == "missed by 7.00 points"
    line = stats.finding("tuned", "87.82 %", "03_hyperopt_tuning.ipynb#x", interval="95 % CI", target=near)
    assert set(line) == {"finding", "value", "interval", "target", "outcome", "section"}
    assert line["target"] == near.rule and line["outcome"].startswith("missed by 0.18")


def test_beats_is_met_only_when_the_paired_rule_says_b_is_better() -> None:
    met = stats.beats("b above a", [70.0, 72.0, 71.0], [75.0, 76.5, 76.0])
    assert met.outcome == "met" and met.unit == "points" and met.value == pytest.approx(14.5 / 3)
    assert met.interval_text().startswith("95 % CI +") and met.interval_text().endswith("points")
    assert stats.beats("b above a", [75.0, 76.5, 76.0], [70.0, 72.0, 71.0]).outcome == "missed"  # a better
    assert stats.beats("b above a", [70.0, 76.0, 71.0], [74.0, 72.0, 73.0]).outcome == "missed"  # no clear difference


def test_a_target_can_carry_an_interval_over_images_instead_of_seeds() -> None:
    d = stats.target("art", [80.0, 84.0], 80.0, interval=(70.0, 90.0), where="on 50 images")
    assert (d.low, d.high, d.outcome) == (70.0, 90.0, "met") and d.rule == "mean over 2 seed(s) on 50 images ≥ 80 %"
