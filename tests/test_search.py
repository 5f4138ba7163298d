"""Budget-aware search: ASHA rungs, stopped-trial bookkeeping, exact resume after a kill mid-trial,
equal-epoch algorithm comparison, and the statistics its verdicts rest on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from hyperopt import STATUS_OK, hp

from helpers import runs
from helpers.data import load_simpsons_mnist
from helpers.paths import Outputs
from helpers.splits import DataSplits
from helpers.training import TEXTBOOK, TrainConfig, augment
from helpers.tuning import charts, comparison, search, spaces, study, tables, trialstore
from helpers.tuning.search import Objective, Rungs, TrialSetup, recorded_from
from helpers.tuning.spaces import parse_augment, to_run_config

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def tiny() -> DataSplits:
    """300 train / 100 val real Simpsons-MNIST (rgb) images."""
    return load_simpsons_mnist("rgb").subset(n_train=300, n_val=100, n_test=100)


# ----------------------------------------------------------------------------------- rungs


def test_rungs_milestones_and_cutoff_follow_asha() -> None:
    r = Rungs(grace=3, eta=3, max_epochs=36)
    assert r.milestones() == [3, 9, 27]
    assert r.cutoff([]) is None  # the first trial at a rung always goes on
    assert r.cutoff([0.5, 0.6, 0.7]) == pytest.approx(np.percentile([0.5, 0.6, 0.7], 100 * 2 / 3))
    stop = r.stopper({3: [0.5, 0.6, 0.7]})
    assert stop({"epoch": 3, "val_acc": 0.6}) is True  # below the top third
    assert stop({"epoch": 3, "val_acc": 0.69}) is False
    assert stop({"epoch": 4, "val_acc": 0.0}) is False  # not a rung
    assert stop({"epoch": 9, "val_acc": 0.0}) is False  # nobody recorded at 9 yet
    with pytest.raises(ValueError):
        Rungs(grace=0)


def test_recorded_values_are_rebuilt_from_stored_results_in_trial_order() -> None:
    results = [{"rung_scores": {"1": 0.3, "3": 0.5}}, {"rung_scores": {"1": 0.2}}, {"status": "fail"}]
    assert recorded_from(results) == {1: [0.3, 0.2], 3: [0.5]}


@pytest.fixture(scope="module")
def asha_search(tiny: DataSplits, tmp_path_factory):
    """A real TPE search with rungs at 1 and 3 epochs (max 9) and a 30-epoch budget."""
    root = tmp_path_factory.mktemp("asha")
    rungs = Rungs(grace=1, eta=3, max_epochs=9)
    base = TrainConfig(monitor="val_acc", seed=0, epochs=rungs.max_epochs)
    objective = Objective(TrialSetup(tiny, base, "asha", "tpe", Outputs(root), rungs, device="cpu"))
    spec = search.SearchSpec("asha", "tpe", 0, 100, n_startup_jobs=3, rungs=rungs, epoch_budget=30)
    space = spaces.lenet_space()
    trials = search.run_search(objective, space, spec, root / "t.json", progress=False)
    return trials, tables.trials_frame(trials, space, "tpe"), rungs, root


def test_a_stopped_trial_has_exactly_its_rung_epochs_and_goes_to_tpe_as_ok(asha_search) -> None:
    trials, frame, rungs, _ = asha_search
    stopped = [t for t in trials.trials if t["result"].get("outcome") == "stopped"]
    assert stopped, "with this budget some trials must be stopped early"
    for t in stopped:
        r = t["result"]
        history = json.loads(t["attachments"]["history"]) if "history" in t.get("attachments", {}) else None
        assert r["status"] == STATUS_OK and r["epochs"] in rungs.milestones()
        assert r["loss"] == pytest.approx(1 - r["val_acc"])
        last = max(int(k) for k in r["rung_scores"])
        assert last == r["epochs"] and r["val_acc"] == pytest.approx(r["rung_scores"][str(last)])
        assert history is None or len(history["epochs"]) == r["epochs"]
    assert set(frame["state"]) <= {"finished", "stopped", "failed"}
    assert (frame.loc[frame["state"] == "finished", "epochs"] == rungs.max_epochs).all()
    assert (frame.loc[frame["state"] == "stopped", "epochs"] < rungs.max_epochs).all()


def test_the_epoch_budget_ends_the_search_and_stopped_trials_are_never_best(asha_search) -> None:
    trials, frame, rungs, _ = asha_search
    assert frame["epochs_spent"].iloc[-2] < 30 <= frame["epochs_spent"].iloc[-1] + rungs.max_epochs
    assert search.epochs_spent(trials) == frame["epochs"].sum()
    best = tables.best_trial(frame)
    assert best["state"] == "finished"
    spent = tables.spend(frame)
    assert spent["trials"] == spent["stopped early"] + spent["finished"] + spent["failed"] == len(frame)
    imp = tables.importance(frame.assign(val_acc=np.where(frame["state"] == "stopped", 0.0, frame["val_acc"])),
                                  ["batch_size"])
    imp_finished_only = tables.importance(frame, ["batch_size"])
    assert imp.equals(imp_finished_only)  # stopped trials' low-fidelity scores never enter importance


def test_history_plot_draws_stopped_trials_hollow(asha_search) -> None:
    _, frame, _, _ = asha_search
    assert not (frame["state"] == "failed").any()
    fig = charts.plot_optimization_history({"tpe": frame}, x="epochs_spent")
    hollow = [c for c in fig.axes[0].collections if len(c.get_facecolors()) == 0]
    assert sum(len(c.get_offsets()) for c in hollow) == int((frame["state"] == "stopped").sum())
    assert fig.axes[0].get_xlabel() == "epochs spent by the search"


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from pathlib import Path
    from helpers.tuning import search, spaces
    from helpers.tuning.search import Objective, TrialSetup
    from helpers.training import TrainConfig
    from helpers.data import load_simpsons_mnist
    from helpers.paths import Outputs
    from helpers.tuning.search import Rungs
    data = load_simpsons_mnist("rgb").subset(n_train=300, n_val=100, n_test=100)
    rungs = Rungs(grace=1, eta=3, max_epochs=9)
    base = TrainConfig(monitor="val_acc", seed=0, epochs=rungs.max_epochs)
    obj = Objective(TrialSetup(data, base, "kill", "tpe", Outputs(Path(sys.argv[1])), rungs, device="cpu"))
    spec = search.SearchSpec("kill", "tpe", 3, 100, n_startup_jobs=3, rungs=rungs, epoch_budget=40)
    search.run_search(obj, spaces.lenet_space(), spec, Path(sys.argv[2]), progress=False)
""")


def _table(path: Path) -> list[tuple]:
    trials = trialstore.load_trials(path)
    frame = tables.trials_frame(trials, spaces.lenet_space(), "tpe")
    return [(r.trial, r.state, r.epochs, r.val_acc, str(r.point)) for r in frame.itertuples()]


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_to_the_same_table(tmp_path: Path) -> None:
    script = tmp_path / "search.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference.json"
    subprocess.run([sys.executable, str(script), str(tmp_path / "ref"), str(reference)], env=env, check=True,
                   timeout=300)

    killed = tmp_path / "killed.json"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "k"), str(killed)], env=env)
    deadline, saved = time.time() + 240, 0
    while time.time() < deadline and proc.poll() is None:
        saved = len(trialstore.load_trials(killed).trials) if killed.exists() else 0
        if saved >= 3 and (tmp_path / "k" / "runs" / "kill" / f"tpe-trial-{saved:03d}").exists():
            break  # trial `saved` has started and is not saved: kill it mid-trial
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search must still have been running when killed"
    partial = _table(killed)
    assert 3 <= len(partial) < len(_table(reference))

    subprocess.run([sys.executable, str(script), str(tmp_path / "k"), str(killed)], env=env, check=True, timeout=300)
    assert _table(killed) == _table(reference)  # configs, stop rungs and scores: as if never killed
    assert _table(killed)[: len(partial)] == partial  # finished trials kept, not re-run


# ----------------------------------------------------------------------------------- comparison


def test_comparison_at_equal_epochs_returns_one_curve_per_search_seed(tiny: DataSplits, tmp_path: Path) -> None:
    setup = TrialSetup(tiny, TrainConfig(monitor="val_acc", seed=0, epochs=3), "cmp", "tpe", Outputs(tmp_path),
                       Rungs(1, 3, 3), device="cpu")
    cmp = comparison.compare_at_equal_epochs(setup, study.SearchPlan(8, n_startup_jobs=2), (0, 1), progress=False)
    curves = cmp.curves()
    assert list(curves.columns) == ["tpe #0", "random #0", "tpe #1", "random #1"]
    assert len(curves) == 8 and curves.index[-1] == 8
    assert (curves.diff().fillna(0) >= 0).all().all()  # best so far never drops
    finals = cmp.finals()
    assert (finals["epochs"] <= 8).all() and len(finals) == 4
    assert cmp.chosen in ("tpe", "random") and "Mann-Whitney" in cmp.verdict()
    one = comparison.AlgorithmComparison(**{**vars(cmp), "frames": {k: v for k, v in cmp.frames.items() if k[1] == 0}})
    assert (one.summary()["best val acc sd %"] == "–").all()  # one search per algorithm: no sd, and no NaN shown
    assert "(one search)" in one.verdict() and "nan" not in one.verdict().lower()
    with pytest.raises(ValueError, match="below one full trial"):
        comparison.compare_at_equal_epochs(setup, study.SearchPlan(2), (0,))
    fig = charts.plot_comparison_curves(curves)
    assert len(fig.axes[0].get_lines()) == 2  # one mean line per algorithm


# ----------------------------------------------------------------------------------- richer space


def test_augmentation_names_map_onto_training_settings(tiny: DataSplits) -> None:
    assert parse_augment("flip+shift+rotate", 28) == {"hflip": True, "shift": 2, "rotate": 10.0}
    assert parse_augment("shift", 64)["shift"] == 5 and parse_augment("none", 28)["shift"] == 0
    with pytest.raises(ValueError):
        parse_augment("flip+zoom", 28)
    run = to_run_config({"augment": "flip+shift+rotate", "schedule": "cosine", "label_smoothing": 0.1,
                         "conv1": 32, "conv2": 64}, tiny, TrainConfig(epochs=2))
    assert (run.train.schedule, run.train.label_smoothing, run.train.rotate) == ("cosine", 0.1, 10.0)
    assert run.model["conv_channels"] == (32, 64) and run.describe()["augment"] == "flip+shift+rotate"


def test_rotation_is_drawn_per_image_not_per_batch() -> None:
    x = torch.zeros(2, 1, 15, 15)
    x[:, :, 7, :] = 1.0  # the same horizontal bar in both images
    out = augment(x, hflip=False, shift=0, gen=torch.Generator().manual_seed(0), rotate=30.0)
    assert not torch.allclose(out[0], out[1])  # two images in one batch, two angles
    assert not torch.allclose(out[0], x[0])


def test_image_size_axis_trains_on_data_of_that_size(tiny: DataSplits, tmp_path: Path) -> None:
    seen = []
    setup = TrialSetup(tiny, TrainConfig(epochs=1), "sz", "tpe", Outputs(tmp_path), device="cpu",
                       sized=lambda s: seen.append(s) or tiny)
    assert setup.data_for({"image_size": 28}) is tiny and not seen
    setup.data_for({"image_size": 64})
    assert seen == [64]
    with pytest.raises(ValueError, match="no `sized`"):
        replace(setup, sized=None).data_for({"image_size": 64})
    with pytest.raises(ValueError, match="up to the rungs' 3 epochs, but base.epochs is 1"):
        replace(setup, rungs=Rungs(1, 3, 3))  # a trial's length is the caller's, never changed behind it
    space = spaces.lenet_space(image_sizes=(64, 96))
    assert "image_size" in space and "image_size" not in spaces.lenet_space()


# ----------------------------------------------------------------------------------- retrain check


def test_retrain_verdict_rejects_collapse_and_runs_below_the_baseline() -> None:
    ok, why = study.retrain_verdict(0.60, 0.34, [0.70, 0.72], num_classes=3)  # one class for nearly everything
    assert not ok and why.startswith("collapsed")
    ok, why = study.retrain_verdict(0.69, 0.66, [0.70, 0.72], num_classes=3)
    assert not ok and "below the baseline's 71.00 %" in why
    ok, why = study.retrain_verdict(0.75, 0.72, [0.70, 0.72], num_classes=3)
    assert ok and "≥ the baseline's" in why


def test_a_rejected_candidate_falls_back_to_the_next_finished_trial_and_never_sees_test(
        tiny: DataSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def reject_first(val_acc, val_bal_acc, baseline, num_classes):  # noqa: ANN001, ANN202 - same signature
        calls.append(val_acc)
        return (len(calls) > 1, "rejected by the test" if len(calls) == 1 else "accepted by the test")

    monkeypatch.setattr(study, "retrain_verdict", reject_first)
    outputs = Outputs(tmp_path)
    config = study.StudyConfig("guard", Rungs(1, 3, 3), 12, TrainConfig(**TEXTBOOK, epochs=1),
                               TrainConfig(monitor="val_acc", seed=0), seeds=(0, 1), n_startup_jobs=2,
                               checkpoint_name="guard")
    s = study.run_study(config, tiny, outputs=outputs, device="cpu")
    ranked = tables.finished(s.frame).sort_values(["val_acc", "trial"], ascending=[False, True])
    assert len(ranked) >= 2, "the tiny search must finish two trials for this test"
    first, second = (int(t) for t in ranked["trial"][:2])
    assert [c["trial"] for c in s.checks] == [first, second]
    assert [c["verdict"] for c in s.checks] == ["rejected", "accepted"]
    assert int(s.best_row["trial"]) == second
    assert len(s.rejected) == 1 and s.rejected[0].test is None  # the rejected run never touched test
    assert s.rejected[0].name == f"tuned-t{first}-seed0"
    assert [r.name for r in s.tuned] == [f"tuned-t{second}-seed0", f"tuned-t{second}-seed1"]
    assert all(r.test is not None for r in s.tuned)
    epochs = s.spent().iloc[1]["epochs"]  # each candidate's seed-0 run is its search trial, not trained again
    assert len(s.reused) == 2 and s.reused[0] is s.rejected[0] and s.reused[1] is s.tuned[0]
    assert epochs == sum(len(r.history.epochs) for r in s.tuned[1:] + s.baseline)
    saved = json.loads((outputs.models / "guard.json").read_text())
    assert saved["trial"] == second and [c["verdict"] for c in saved["retrain_checks"]] == ["rejected", "accepted"]
    assert "rejected 1 configuration" in study.conclusions(s)


def test_the_searchs_finished_winner_is_reused_as_the_first_seed_and_is_the_identical_run(
        tiny: DataSplits, tmp_path: Path) -> None:
    outputs = Outputs(tmp_path)
    fp32 = {"precision": "fp32", "channels_last": False}  # the scenario this test was written on: one candidate
    config = study.StudyConfig("reuse", Rungs(1, 3, 3), 9, TrainConfig(**TEXTBOOK, epochs=1, class_weights=True, **fp32),
                               TrainConfig(monitor="val_acc", seed=0, class_weights=True, **fp32), seeds=(0, 1),
                               n_startup_jobs=2)
    s = study.run_study(config, tiny, outputs=outputs, device="cpu")
    first = s.tuned[0]
    # the protocol reaches the baseline, the search's trials (seed 0 below is a trial, reused only when its
    # settings are identical) and every retrained seed; the textbook recipe stays as it is
    assert all(r.train_config.class_weights for r in s.baseline + s.tuned)
    assert s.baseline[0].train_config.optimizer == "sgd" and s.baseline[0].train_config.lr == 0.01
    assert s.reused == [first] and s.checks[0]["seed 0 run"].startswith("the search's own trial")
    assert first.test is not None and s.tuned[1].name.endswith("seed1")
    again = runs.train_and_evaluate(tiny, runs.Run("again", "again", first.train_config, s.final_config.model),
                                    outputs, "cpu")
    assert [e["val_acc"] for e in again.history.epochs] == [e["val_acc"] for e in first.history.epochs]
    assert (again.val.accuracy, again.test.accuracy) == (first.val.accuracy, first.test.accuracy)
    assert s.spent().iloc[1]["epochs"] == sum(len(r.history.epochs) for r in s.tuned[1:] + s.baseline)
    path = search.trial_weights(outputs, "reuse", "tpe", int(s.best_row["trial"]) - 1)
    run = runs.Run("x", "e", first.train_config, s.final_config.model)
    assert runs.reload_run(path, tiny, run, "cpu") is not None
    assert runs.reload_run(path, tiny, run.for_seed(1), "cpu") is None  # another seed
    assert runs.reload_run(path, tiny.subset(n_train=200), run, "cpu") is None  # other data
    path.write_bytes(path.read_bytes()[:-8])  # damaged: trained again, never loaded
    assert runs.reload_run(path, tiny, run, "cpu") is None


#: a narrowed space of one point per choice, for searches of a few one-epoch trials
NARROW = {"batchnorm": (True,), "batch_sizes": (128,), "conv1": (12,), "conv2": (32,)}


def narrow_setup(tiny: DataSplits, tmp_path: Path, name: str) -> TrialSetup:
    """A random search of one-epoch trials on ``tiny``, stored under ``tmp_path``."""
    return TrialSetup(tiny, TrainConfig(monitor="val_acc", seed=0, epochs=1), name, "random", Outputs(tmp_path),
                      Rungs(1, 3, 1), device="cpu")


def test_stored_space_decodes_a_narrowed_search(tiny: DataSplits, tmp_path: Path) -> None:
    setup, options = narrow_setup(tiny, tmp_path, "narrow"), NARROW
    outputs = setup.outputs
    out = study.search(setup, study.SearchPlan(2, space_options=options), progress=False)
    trials = trialstore.load_trials(search.trials_file(outputs.results, "narrow", "random"))
    points = list(tables.trials_frame(trials, spaces.stored_space(trials))["point"])
    assert [p["batchnorm"] for p in points] == [p["batchnorm"] for p in out.frame["point"]] == [True, True]
    assert {(p["batch_size"], p["conv1"], p["conv2"]) for p in points} == {(128, 12, 32)}
    assert list(out.frame["batchnorm"]) == [True, True]  # what was trained
    wrong = tables.trials_frame(trials, spaces.lenet_space())["point"]  # the default space misreads indices
    assert [p["batchnorm"] for p in wrong] == [False, False] and {p["batch_size"] for p in wrong} == {32}


def test_an_edited_space_starts_its_own_search_and_the_library_space_resumes(tiny: DataSplits,
                                                                               tmp_path: Path) -> None:
    setup, options = narrow_setup(tiny, tmp_path, "edit"), NARROW
    outputs = setup.outputs
    library = spaces.lenet_space(**options)
    same = study.search(setup, study.SearchPlan(2, space_options=options, space=spaces.lenet_space(**options)),
                        progress=False)  # a cell that rebuilds the library's space is the library's search
    assert same.experiment == "edit" and search.trials_file(outputs.results, "edit", "random").exists()
    edited = dict(library, dropout=hp.uniform("dropout", 0.4, 0.5))
    assert spaces.fingerprint(edited) != spaces.fingerprint(library)
    out = study.search(setup, study.SearchPlan(2, space_options=options, space=edited), progress=False)
    assert out.experiment == f"edit-space-{spaces.fingerprint(edited)[:8]}"
    assert len(out.trials.trials) == 2 and all(0.4 <= d <= 0.5 for d in out.frame["dropout"])
    stored = trialstore.load_trials(search.trials_file(outputs.results, out.experiment, "random"))
    with pytest.raises(ValueError, match="edited space"):
        spaces.stored_space(stored)  # never decoded with the wrong space
    again = study.search(setup, study.SearchPlan(2, space_options=options), progress=False)
    assert again.trials.loaded_complete and again.experiment == "edit"
    assert list(again.frame["dropout"]) == list(same.frame["dropout"])  # resumed, not re-sampled


# ----------------------------------------------------------------------------------- one trial, one path


def test_one_trial_runs_through_at_most_five_modules_from_the_point_to_the_score(tiny: DataSplits,
                                                                                 tmp_path: Path) -> None:
    """Trace one Objective call: the helpers modules whose functions run between the sampled point and the score.

    Before the redesign: tuning.search, tuning.rungs, tuning.spaces, runs, models, training (with study and
    trialstore around the call, 8); now the rungs live in tuning.search. Plumbing (paths, plumbing, provenance,
    splits' data properties) is listed apart.
    """
    from hyperopt.pyll.stochastic import sample

    setup = TrialSetup(tiny.subset(n_train=100, n_val=50), TrainConfig(epochs=2, monitor="val_acc"), "trace", "tpe",
                       Outputs(tmp_path), Rungs(1, 3, 2), device="cpu")
    objective, point = Objective(setup), sample(spaces.lenet_space(), rng=np.random.default_rng(0))
    seen: set[str] = set()

    def profile(frame, event, arg) -> None:
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("helpers") and frame.f_code.co_name != "<module>":
            seen.add(module.removeprefix("helpers."))

    sys.setprofile(profile)
    try:
        result = objective(point)
    finally:
        sys.setprofile(None)
    assert result["status"] == STATUS_OK
    plumbing = {"paths", "plumbing", "provenance", "splits"}
    assert seen - plumbing == {"tuning.search", "tuning.spaces", "runs", "models", "training"}, sorted(seen)


def test_the_trial_path_takes_built_objects_not_long_keyword_lists() -> None:
    """From the notebook to fit, no function takes more than about six parameters (it was 19, 15, 14 and 12)."""
    import inspect

    from helpers import training
    from helpers.tuning import comparison

    path = [study.search, study.run_study, comparison.compare_at_equal_epochs, Objective.__init__, TrialSetup.run,
            spaces.to_run_config, runs.train_tracked, runs.train_and_evaluate, runs.train_over_seeds, runs.reload_run,
            training.fit, training.train_epoch, training.train_step]
    counts = {f.__qualname__: len([p for p in inspect.signature(f).parameters if p != "self"]) for f in path}
    assert max(counts.values()) <= 7, counts


def test_trials_kept_before_spaces_had_fingerprints_are_resumed_not_lost(tiny: DataSplits, tmp_path: Path) -> None:
    setup, options = narrow_setup(tiny, tmp_path, "old"), NARROW
    outputs = setup.outputs
    first = study.search(setup, study.SearchPlan(2, space_options=options), progress=False)
    path = search.trials_file(outputs.results, "old", "random")
    trials = trialstore.load_trials(path)
    spec = json.loads(trials.attachments["search_spec"])
    del spec["extra"]["space"]  # as an earlier version stored it
    trials.attachments["search_spec"] = json.dumps(spec, sort_keys=True)
    trialstore.save_trials(trials, path)
    again = study.search(setup, study.SearchPlan(2, space_options=options), progress=False)
    assert again.trials.loaded_complete and list(again.frame["dropout"]) == list(first.frame["dropout"])
    spec["extra"]["data"] = "another data set"  # a different search is still refused
    trials.attachments["search_spec"] = json.dumps(spec, sort_keys=True)
    trialstore.save_trials(trials, path)
    with pytest.raises(search.SearchMismatchError, match="another search"):
        study.search(setup, study.SearchPlan(2, space_options=options), progress=False)
