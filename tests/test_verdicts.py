"""Each verdict rule gives each of its outcomes on constructed cases (exact numbers, no training)."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import verdicts


def runs(values: dict[object, list[float]], factor: str = "x", **fixed: object) -> pd.DataFrame:
    """One row per (level, seed): ``values[level][seed]`` as ``final_val_acc`` (a fraction)."""
    return pd.DataFrame([{factor: level, "seed": seed, "final_val_acc": v, **fixed}
                         for level, vs in values.items() for seed, v in enumerate(vs)])


def test_paired_has_three_outcomes() -> None:
    up = runs({"a": [0.50, 0.52, 0.51], "b": [0.60, 0.61, 0.62]})
    assert verdicts.paired(up, "x", "a", "b").outcome == "supported"
    assert verdicts.paired(up, "x", "b", "a").outcome == "refuted"
    noisy = runs({"a": [0.50, 0.60, 0.55], "b": [0.58, 0.52, 0.56]})
    v = verdicts.paired(noisy, "x", "a", "b")
    assert v.outcome == "inconclusive" and "95 % CI" in v.evidence
    assert verdicts.paired(runs({"a": [0.5], "b": [0.9]}), "x", "a", "b").outcome == "inconclusive"  # one seed


def test_pairing_uses_seeds_not_order() -> None:
    """A constant +5-point gain per seed is certain even when seeds differ a lot from each other."""
    frame = runs({"a": [0.40, 0.60, 0.80], "b": [0.45, 0.65, 0.85]})
    v = verdicts.paired(frame.sample(frac=1, random_state=0), "x", "a", "b")
    assert v.outcome == "supported" and "+5.00 points" in v.evidence


def test_trend_over_the_whole_sweep() -> None:
    rising = runs({1: [0.40, 0.42, 0.41], 2: [0.50, 0.49, 0.51], 4: [0.55, 0.56, 0.54], 8: [0.58, 0.60, 0.59]})
    assert verdicts.trend(rising, "x", [1, 2, 4, 8]).outcome == "supported"
    assert verdicts.trend(rising, "x", [8, 4, 2, 1]).outcome == "refuted"
    flat = runs({1: [0.50, 0.60, 0.55], 2: [0.58, 0.52, 0.56], 4: [0.54, 0.57, 0.51]})
    assert verdicts.trend(flat, "x", [1, 2, 4]).outcome == "inconclusive"


def test_always_is_refuted_by_one_significantly_worse_step() -> None:
    """H1 in notebook 05 had only gains, some within noise: that is supported, not refuted."""
    gains = runs({1: [0.40, 0.42, 0.41], 2: [0.50, 0.49, 0.51], 4: [0.51, 0.49, 0.53], 8: [0.53, 0.52, 0.52]})
    v = verdicts.trend(gains, "x", [1, 2, 4, 8], always=True)
    assert v.outcome == "supported" and len(v.parts) == 3
    dip = runs({1: [0.40, 0.42, 0.41], 2: [0.60, 0.61, 0.62], 4: [0.55, 0.56, 0.57], 8: [0.63, 0.64, 0.65]})
    v = verdicts.trend(dip, "x", [1, 2, 4, 8], always=True)
    assert v.outcome == "refuted" and "significantly worse" in v.evidence
    v = verdicts.trend(dip, "x", [1, 2, 4, 8], always=True, steps=[(1, 8)])
    assert v.outcome == "supported" and len(v.parts) == 1


def test_difference_in_differences() -> None:
    """H4: a layer that hurts on Simpsons and not on Fashion is the opposite of the hypothesis."""
    frame = pd.concat([
        runs({"LeNet-5": [0.56, 0.55, 0.58], "+ dense": [0.53, 0.52, 0.54]}, data="simpsons"),
        runs({"LeNet-5": [0.80, 0.82, 0.79], "+ dense": [0.80, 0.83, 0.79]}, data="fashion")])
    v = verdicts.diff_in_diff(frame, "x", "LeNet-5", "+ dense", "data", "simpsons", "fashion")
    assert v.outcome == "refuted" and "gain on simpsons -3.33" in v.evidence
    v = verdicts.diff_in_diff(frame, "x", "LeNet-5", "+ dense", "data", "fashion", "simpsons")
    assert v.outcome == "supported"
    same = pd.concat([runs({"a": [0.5, 0.6, 0.55], "b": [0.52, 0.61, 0.58]}, data="g1"),
                      runs({"a": [0.5, 0.6, 0.55], "b": [0.53, 0.60, 0.57]}, data="g2")])
    assert verdicts.diff_in_diff(same, "x", "a", "b", "data", "g1", "g2").outcome == "inconclusive"


@pytest.mark.parametrize(("outcomes", "expected"), [
    (["supported", "supported"], "supported"),
    (["supported", "inconclusive"], "partly supported"),
    (["supported", "refuted"], "refuted"),
    (["inconclusive", "refuted"], "refuted"),
    (["inconclusive", "inconclusive"], "inconclusive"),
])
def test_combine_keeps_partly_supported_only_without_counter_examples(outcomes: list[str], expected: str) -> None:
    parts = [verdicts.given(f"part {i}", o, "stated", "numbers") for i, o in enumerate(outcomes)]
    v = verdicts.combine("whole", parts)
    assert v.outcome == expected and v.parts == parts
    assert v.markdown().count("\n- ") == len(parts)


def test_given_rejects_unknown_outcomes() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        verdicts.given("c", "partly supported", "r", "e")


def test_held_has_three_outcomes() -> None:
    sup, ref, inc = (verdicts.given(f"c{k}", o, "r", "e") for k, o in enumerate(("supported", "refuted", "inconclusive")))
    assert verdicts.held("h", [sup, ref], [sup, ref]).outcome == "held"
    assert verdicts.held("h", [sup, ref], [ref, ref]).outcome == "reversed"
    assert verdicts.held("h", [sup, inc], [inc, inc]).outcome == "not confirmed"
    assert verdicts.held("h", [inc], [sup]).outcome == "not confirmed"
    with pytest.raises(ValueError):
        verdicts.held("h", [sup], [sup, sup])
