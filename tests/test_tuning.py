"""Hyperopt search: results inside the space, failures, resume after SIGKILL, seeds, grid, plots."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from hyperopt import STATUS_FAIL, STATUS_OK, hp
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers import runs
from helpers.data import load_simpsons_mnist
from helpers.paths import Outputs
from helpers.splits import DataSplits
from helpers.training import TEXTBOOK, TrainConfig, fit
from helpers.tuning import charts, search, spaces, tables
from helpers.tuning.search import Objective, TrialSetup

matplotlib.use("Agg")

BASE = TrainConfig(epochs=1, seed=0)


@pytest.fixture(scope="module")
def small() -> DataSplits:
    """600 train / 200 val real Simpsons-MNIST (rgb) images."""
    return load_simpsons_mnist("rgb").subset(n_train=600, n_val=200, n_test=200)


@pytest.fixture(scope="module")
def searched(small: DataSplits, tmp_path_factory):
    """A real 5-trial TPE search in which trial 2 is poisoned with NaN weights."""
    root = tmp_path_factory.mktemp("search")
    patch = pytest.MonkeyPatch()

    def poisoning_fit(model, data, config, **kw):
        if objective.trial_index == 1:
            with torch.no_grad():
                model.features[0].weight.fill_(float("nan"))
        return fit(model, data, config, **kw)

    objective = Objective(TrialSetup(small, BASE, "unit", "tpe", Outputs(root), device="cpu"))
    space = spaces.lenet_space()
    spec = search.SearchSpec("unit", "tpe", seed=0, max_evals=5, n_startup_jobs=3)
    patch.setattr(runs, "fit", poisoning_fit)  # every run trains through runs.fit
    try:
        trials = search.run_search(objective, space, spec, root / "trials.json", progress=False)
    finally:
        patch.undo()
    return trials, tables.trials_frame(trials, space, "tpe"), root


def test_search_returns_a_best_config_inside_the_space(searched) -> None:
    trials, frame, _ = searched
    assert len(frame) == 5 and list(frame["trial"]) == [1, 2, 3, 4, 5]
    best = tables.best_trial(frame)
    assert 0.1 < best["val_acc"] <= 1.0
    assert best["batch_size"] in (32, 64, 128, 256)  # values, not hp.choice indices
    conv1, conv2 = map(int, best["conv"].split("/"))
    assert conv1 in (6, 12, 24) and conv2 in (16, 32, 48)
    d1, d2 = map(int, best["dense"].split("/"))
    assert 32 <= d1 <= 384 and d1 % 16 == 0 and 16 <= d2 <= 192 and d2 % 16 == 0
    assert 0.0 <= best["dropout"] <= 0.5 and best["augment"] in ("none", "flip", "flip+shift")
    bounds = {"sgd": (3e-3, 0.3), "adam": (1e-4, 1e-2), "adamw": (1e-4, 1e-2), "rmsprop": (1e-4, 3e-3)}
    lo, hi = bounds[best["optimizer"]]
    assert lo <= best["lr"] <= hi


def test_sampled_settings_reach_the_model_and_the_optimizer(searched) -> None:
    trials, frame, _ = searched
    ok = [t for t in trials.trials if t["result"]["status"] == STATUS_OK]
    for t in ok:
        cfg, applied = t["result"]["config"], t["result"]["applied"]
        assert applied["lr"] == pytest.approx(cfg["lr"])  # read from the optimizer object itself
        assert applied["batch_size"] == cfg["batch_size"]
        assert applied["class"] == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}[cfg["optimizer"]]
    assert len({t["result"]["applied"]["n_params"] for t in ok}) > 1  # different trials, different models


def test_nan_trial_is_a_failure_and_the_search_goes_on(searched) -> None:
    trials, frame, _ = searched
    assert list(frame["status"]) == [STATUS_OK, STATUS_FAIL, STATUS_OK, STATUS_OK, STATUS_OK]
    failed = frame.iloc[1]
    assert "not finite" in failed["failure"] and math.isnan(failed["val_acc"])
    assert tables.best_trial(frame)["trial"] != 2
    assert "history" in trials.trial_attachments(trials.trials[1])


def test_every_trial_is_one_tensorboard_run_with_hparams(searched) -> None:
    trials, frame, root = searched
    runs = sorted(p for p in (root / "runs" / "unit").iterdir())
    assert [p.name for p in runs] == [f"tpe-trial-{i:03d}" for i in range(5)]
    for run, (_, row) in zip(runs, frame.iterrows()):
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        content = acc.PluginTagToContent("hparams")
        start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["algo"].string_value == "tpe"
        assert start.hparams["lr"].number_value == pytest.approx(row["lr"])  # this trial's own settings
        assert start.hparams["batch_size"].number_value == row["batch_size"]
        logged = acc.Scalars("hparam/val_acc")[0].value
        if row["status"] == STATUS_OK:
            assert logged == pytest.approx(row["val_acc"], abs=1e-6)
        else:
            assert math.isnan(logged)


def test_plots_and_table_work_on_a_real_trials_object_with_a_failure(searched) -> None:
    _, frame, _ = searched
    params = ["lr", "batch_size", "dropout", "batchnorm", "conv"]
    for fig in (
        charts.plot_optimization_history({"tpe": frame}, reference=0.3),
        charts.plot_parallel_coordinates(frame, params),
        charts.plot_param_scatter(frame, params),
    ):
        title = fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()
        assert "finished trials" in title or "Optimization history" in title
        assert fig.axes[0].get_ylabel() or fig.axes[0].get_xlabel()
    table = charts.top_table(frame, k=10)
    assert len(table) == 4 and table["val_acc_%"].is_monotonic_decreasing
    imp = tables.importance(frame, params, min_trials=4)
    assert set(imp.index) == set(params) and ((imp >= 0) & (imp <= 1 + 1e-9)).all()
    assert imp.is_monotonic_decreasing


def test_importance_finds_the_one_parameter_that_matters() -> None:
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"lr": rng.uniform(0, 1, n), "dropout": rng.uniform(0, 1, n),
                          "augment": rng.choice(["none", "flip"], n), "status": STATUS_OK, "state": "finished"})
    frame["val_acc"] = 0.5 + 0.4 * (frame["lr"] > 0.5) + rng.normal(0, 0.01, n)
    frame.loc[3, ["status", "state", "val_acc"]] = STATUS_FAIL, "failed", np.nan  # a failed trial is skipped
    imp = tables.importance(frame, ["lr", "dropout", "augment"])
    assert imp.index[0] == "lr" and imp["lr"] > 0.8 and imp["dropout"] < 0.2 and imp["augment"] < 0.2
    readout = tables.importance_readout(frame, imp)
    assert "**lr** (η² = " in readout and f"augment {imp['augment']:.2f}" in readout  # every value, no table of NaN


def _analytic(params: dict) -> dict:
    """A cheap deterministic objective for tests of the search machinery itself."""
    opt = params["optimizer"]
    loss = (math.log10(opt["lr"]) + 2.5) ** 2 + params["dropout"] + params["batch_size"] / 1000
    return {"loss": loss, "status": STATUS_OK, "val_acc": 1 - loss / 10}


def _points(trials) -> list[dict]:
    return [{k: v for k, v in t["misc"]["vals"].items() if v} for t in trials.trials]


def test_same_seed_gives_the_same_suggestions_and_resume_does_not_replay(tmp_path: Path) -> None:
    space = spaces.lenet_space()
    spec = lambda seed, n: search.SearchSpec("det", "tpe", seed=seed, max_evals=n, n_startup_jobs=3)  # noqa: E731
    a = search.run_search(_analytic, space, spec(5, 8), tmp_path / "a.json", progress=False)
    b = search.run_search(_analytic, space, spec(5, 8), tmp_path / "b.json", progress=False)
    c = search.run_search(_analytic, space, spec(6, 8), tmp_path / "c.json", progress=False)
    assert _points(a) == _points(b) and _points(a) != _points(c)
    # interrupted after 4 trials, then resumed: identical to the uninterrupted search, no replays
    search.run_search(_analytic, space, spec(5, 4), tmp_path / "d.json", progress=False)
    d = search.run_search(_analytic, space, spec(5, 8), tmp_path / "d.json", progress=False)
    assert _points(d) == _points(a)
    assert _points(d)[4] != _points(d)[0]


def test_grid_enumerates_exactly_its_subspace(tmp_path: Path) -> None:
    grid = {"lr": [1e-3, 1e-2], "batch_size": [32, 64, 128]}
    space = spaces.grid_space(grid, fixed={"optimizer": "adam", "dropout": 0.1})
    calls = []

    def objective(params):
        calls.append((params["lr"], params["batch_size"]))
        return _analytic({"optimizer": {"lr": params["lr"]}, "dropout": 0.1, "batch_size": params["batch_size"]})

    spec = search.SearchSpec("grid", "grid", seed=0, max_evals=6)
    trials = search.run_search(objective, space, spec, tmp_path / "g.json", grid=grid, progress=False)
    assert sorted(calls) == sorted((lr, bs) for lr in grid["lr"] for bs in grid["batch_size"])
    assert len(set(calls)) == 6 == len(trials.trials)
    frame = tables.trials_frame(trials, space, "grid")
    assert [p["batch_size"] for p in frame["point"]] == [32, 64, 128, 32, 64, 128]
    with pytest.raises(ValueError, match="exceeds the grid's 6 points"):
        search.run_search(objective, space, search.SearchSpec("grid", "grid", 0, 7), tmp_path / "h.json",
                          grid=grid, progress=False)


def test_invalid_space_value_fails_before_any_training(small: DataSplits, tmp_path: Path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(runs, "fit", lambda *a, **k: calls.append(1))
    objective = Objective(TrialSetup(small, BASE, "bad", "random", Outputs(tmp_path), device="cpu"))
    space = {**spaces.lenet_space(), "dropout": hp.uniform("dropout", 0.5, 1.5)}
    with pytest.raises(ValueError, match="invalid search space.*dropout"):
        search.run_search(objective, space, search.SearchSpec("bad", "random", 0, 3), tmp_path / "t.json", progress=False)
    assert calls == [] and not (tmp_path / "t.json").exists()


def test_resuming_with_another_search_is_refused(tmp_path: Path) -> None:
    space = spaces.lenet_space()
    search.run_search(_analytic, space, search.SearchSpec("s", "tpe", 0, 2), tmp_path / "t.json", progress=False)
    with pytest.raises(search.SearchMismatchError):
        search.run_search(_analytic, space, search.SearchSpec("s", "random", 0, 2), tmp_path / "t.json", progress=False)


def test_importance_ranks_nothing_from_too_few_finished_trials() -> None:
    frame = pd.DataFrame({"lr": [0.1, 0.2, 0.3, 0.4], "dropout": [0.0, 0.1, 0.2, 0.3], "state": "finished",
                          "status": STATUS_OK, "val_acc": [0.5, 0.6, 0.7, 0.8]})
    imp = tables.importance(frame, ["lr", "dropout"])
    assert imp.isna().all() and "too few" in tables.importance_readout(frame, imp)
    assert not tables.importance(frame, ["lr", "dropout"], min_trials=4).isna().any()


def test_the_ranking_claim_follows_its_rule_on_constructed_rankings() -> None:
    imp = pd.Series({"lr": 0.4, "batch_size": 0.2, "dropout": 0.1, "conv1": 0.05})
    assert tables.ranking_claim(imp, "lr").outcome == "supported"
    assert tables.ranking_claim(imp, "dropout").outcome == "refuted"  # rank 3 of 4: bottom half
    assert tables.ranking_claim(imp, "batch_size").outcome == "inconclusive"
    v = tables.ranking_claim(None, "lr")
    assert v.outcome == "inconclusive" and "too few finished" in v.evidence and v.rule == tables.RANKING_RULE


def test_winner_table_shows_only_what_the_search_changed_rounded() -> None:
    from helpers.training import TrainConfig
    from helpers.tuning.tables import winner_table

    model = {"in_channels": 3, "image_size": 28, "num_classes": 10, "conv_channels": (6, 16), "dense_units": (256, 80),
             "dropout": 0.08503523754393931, "batchnorm": False}
    table = winner_table(model, TrainConfig(optimizer="sgd", lr=0.0024633055746509373, momentum=0.9, batch_size=64, epochs=40))
    assert list(table.index) == ["lr", "dense", "dropout"]
    assert table.loc["lr", "tuned"] == 0.00246 and table.loc["dropout", "tuned"] == 0.085


def test_a_views_axis_reaches_the_run_and_its_hooks() -> None:
    from hyperopt.pyll.stochastic import sample

    from helpers.training import ViewSwap
    from helpers.tuning.search import run_hooks
    from helpers.tuning.spaces import lenet_space, space_source, to_run_config

    space = lenet_space(views=("none", "zoom"))
    point = sample(space, rng=np.random.default_rng(0))
    assert point["views"] in ("none", "zoom") and "views" not in lenet_space()
    data = load_simpsons_mnist("rgb").subset(n_train=20, n_val=10, n_test=10)
    run = to_run_config({**point, "views": "zoom"}, data, BASE)
    assert run.views == "zoom" and run.describe()["views"] == "zoom"
    assert "views" not in to_run_config({k: v for k, v in point.items() if k != "views"}, data, BASE).describe()
    base, zoom = ViewSwap(0.5), ViewSwap(0.9)
    assert run_hooks((base,), {"none": (), "zoom": (zoom,)}, run) == (base, zoom)
    with pytest.raises(ValueError, match="maps only"):
        run_hooks((base,), {"none": ()}, run)
    assert 'space["views"] = hp.choice("views"' in space_source()


def test_the_baseline_keeps_the_view_option_with_the_higher_validation_accuracy(monkeypatch) -> None:
    from types import SimpleNamespace

    from helpers.tuning import study
    from helpers.tuning.search import Rungs

    def fake(data, runs, outputs, device):  # all seeds of every view option in one call: side by side
        return [SimpleNamespace(val=SimpleNamespace(accuracy=0.8 if "zoom" in r.name else 0.7), name=r.name,
                                hooks=r.hooks) for r in runs]

    monkeypatch.setattr(study, "train_runs", fake)
    textbook = TrainConfig(**TEXTBOOK, epochs=1)
    config = study.StudyConfig("x", Rungs(1, 3, 3), 6, textbook, view_hooks={"none": (), "zoom": ("Z",)})
    kept, every = study.train_baseline(config, None, outputs=None, device="cpu")
    assert kept[0].name == "baseline-zoom-seed0" and kept[0].hooks == ("Z",) and set(every) == {"none", "zoom"}
    assert [r.name for r in kept] == [f"baseline-zoom-seed{s}" for s in config.seeds]
    plain, none = study.train_baseline(study.StudyConfig("x", Rungs(1, 3, 3), 6, textbook), None, outputs=None,
                                       device="cpu")
    assert plain[0].name == "baseline-seed0" and none == {}


def test_the_check_table_shows_a_dash_where_no_candidate_passed() -> None:
    from types import SimpleNamespace

    from helpers.tuning.study import TuningStudy

    checks = [{"trial": 1, "search val acc %": 45.34, "verdict": "rejected", "why": "collapsed"},
              {"trial": None, "verdict": "none passed", "why": "kept the best"}]
    table = TuningStudy.check_table(SimpleNamespace(checks=checks))
    assert list(table.index) == [1, "–"] and table.loc["–", "search val acc %"] == "–"
    assert table.loc[1, "search val acc %"] == 45.34 and not table.isna().any().any()
    assert TuningStudy.check_table(SimpleNamespace(checks=[])).empty


def test_the_tpe_explainer_follows_hyperopts_rules() -> None:
    import math

    import numpy as np

    from helpers.tuning import explainer

    for n in (16, 30, 100):
        step = explainer.tpe_step(*explainer.toy_trials(n), np.log(1e-4), np.log(1e-2))
        assert len(step["good"]) == math.ceil(0.25 * math.sqrt(n))  # Hyperopt's good set: ⌈γ√n⌉ trials
        assert set(step["good"]) == set(np.argsort(step["loss"])[: len(step["good"])])  # the lowest losses
        for density in (step["l"], step["g"]):
            assert np.trapezoid(density, step["grid"]) == pytest.approx(1.0)
        ratio = np.interp(step["candidates"], step["grid"], step["l"]) / np.interp(step["candidates"], step["grid"],
                                                                                   step["g"])
        assert step["chosen"] == step["candidates"][np.argmax(ratio)] and len(step["candidates"]) == 24
    curves = explainer.asha_curves(n_trials=9, max_epochs=12, rung=4, keep=3)
    assert all(len(c) == (4 if stopped else 12) for c, stopped in curves)
    assert not curves[0][1]  # the first trial to reach the rung is the top third of one
    assert 1 <= sum(not s for _, s in curves) < 9


def test_the_tpe_explainer_reads_a_log_uniform_value_from_stored_trials() -> None:
    import numpy as np
    from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

    from helpers.tuning import explainer

    trials = Trials()
    fmin(lambda p: {"loss": (np.log10(p["weight_decay"]) + 4) ** 2, "status": STATUS_OK},
         {"weight_decay": hp.loguniform("weight_decay", np.log(1e-6), np.log(1e-2))}, algo=tpe.suggest,
         max_evals=12, trials=trials, rstate=np.random.default_rng(0), show_progressbar=False)
    x, loss = explainer.from_trials(trials, "weight_decay")
    assert len(x) == 12 and np.all((np.log(1e-6) <= x) & (x <= np.log(1e-2)))
    assert loss == pytest.approx([(np.log10(np.exp(v)) + 4) ** 2 for v in x])
    step = explainer.tpe_step(x, loss, np.log(1e-6), np.log(1e-2))
    assert len(step["good"]) == 1 and step["loss"][step["good"][0]] == loss.min()
