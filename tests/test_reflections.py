"""The experiment runner's cache and the seed aggregation, on known inputs and real data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.data import load_simpsons_mnist
from helpers.paths import Outputs
from helpers.tuning import reflections
from helpers.tuning.reflections import Config, aggregate, run_experiments


@pytest.fixture(scope="module")
def tiny():
    return {"simpsons-rgb": load_simpsons_mnist("rgb").subset(n_train=200, n_val=100)}


def test_second_call_reads_the_cache_and_trains_nothing(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = [Config("a", {"lr": 1e-3}, {}, {"optimizer": "adam", "lr": 1e-3, "epochs": 1}),
               Config("b", {"lr": 3e-3}, {}, {"optimizer": "adam", "lr": 3e-3, "epochs": 1})]
    first = run_experiments(configs, (0, 1), tiny, study="t", outputs=Outputs(tmp_path), device="cpu", progress=False,
                            cache_dir=tmp_path)
    assert first.attrs["trained"] == 4 and len(list(tmp_path.glob("*.json"))) == 4
    monkeypatch.setattr(reflections, "side_by_side", None)  # all cached: read here, no lanes started
    second = run_experiments(configs, (0, 1), tiny, study="t", outputs=Outputs(tmp_path), device="cpu", progress=False,
                             cache_dir=tmp_path)
    monkeypatch.undo()
    assert second.attrs["trained"] == 0
    cols = ["label", "seed", "final_val_acc", "best_val_acc", "updates"]
    pd.testing.assert_frame_equal(first[cols], second[cols])
    # the same training under another label is a cache hit that carries the new label
    renamed = run_experiments([Config("again", {"lr": "same as a"}, {}, configs[0].train)], (0,), tiny, study="t",
                              outputs=Outputs(tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    assert renamed.attrs["trained"] == 0 and renamed.loc[0, "label"] == "again"
    assert renamed.loc[0, "final_val_acc"] == first.loc[0, "final_val_acc"]
    # a changed setting is trained afresh
    changed = run_experiments([Config("a", {"lr": 1e-3}, {}, {**configs[0].train, "batch_size": 32})], (0,), tiny,
                              study="t", outputs=Outputs(tmp_path), device="cpu", progress=False, cache_dir=tmp_path)
    assert changed.attrs["trained"] == 1


def test_aggregate_computes_mean_and_sample_std_in_percent() -> None:
    frame = pd.DataFrame({"g": ["A", "A", "A", "B", "B"], "final_val_acc": [0.5, 0.6, 0.7, 0.8, 0.8]})
    s = aggregate(frame, "g")
    assert s.loc["A", "mean"] == pytest.approx(60.0) and s.loc["A", "std"] == pytest.approx(10.0)
    assert s.loc["A", "n"] == 3 and s.loc["B", "mean"] == pytest.approx(80.0) and s.loc["B", "std"] == 0.0


def test_a_damaged_cached_result_is_reported_and_trained_again(tiny, tmp_path: Path, capsys) -> None:
    config = [Config("a", {"lr": 1e-3}, {}, {"optimizer": "adam", "lr": 1e-3, "epochs": 1})]
    first = run_experiments(config, (0,), tiny, study="t", outputs=Outputs(tmp_path), device="cpu", progress=False,
                            cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.json")
    cached.write_text(cached.read_text().replace('"final_val_acc": 0.', '"final_val_acc": 1.', 1))
    again = run_experiments(config, (0,), tiny, study="t", outputs=Outputs(tmp_path), device="cpu", progress=False,
                            cache_dir=tmp_path)
    assert again.attrs["trained"] == 1 and "does not match its checksum" in capsys.readouterr().out
    assert again.loc[0, "final_val_acc"] == first.loc[0, "final_val_acc"] < 1


def test_batchnorm_verdict_reports_a_comparison_at_chance_as_degenerate() -> None:
    import pandas as pd

    from helpers.tuning.reflections import batchnorm_verdict

    rows = []
    for seed in range(3):
        for variant, accs in (("plain", (0.30, 0.60, 0.10)), ("BatchNorm", (0.45, 0.62, 0.10))):
            for lr, acc in zip((0.005, 0.05, 0.5), accs):
                rows.append({"variant": variant, "lr": lr, "seed": seed, "final_val_acc": acc + 0.01 * seed * (variant == "BatchNorm" and lr < 0.5)})
    verdict, table = batchnorm_verdict(pd.DataFrame(rows), (0.005, 0.05, 0.5), num_classes=10)
    assert [p.claim for p in verdict.parts] == ["lr 0.005: BatchNorm beats plain"]  # lr 0.5: both at chance, left out
    assert verdict.outcome == "supported" and "lr 0.5: both at chance (10 %) in every seed" in verdict.evidence
    assert list(table.index) == ["plain", "BatchNorm"]
