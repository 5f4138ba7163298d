"""Trials on disk: JSON round trip that TPE cannot tell apart, pickles refused, one search per file,
and failed trials that never stop a search."""

from __future__ import annotations

import math
import pickle
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, tpe
from hyperopt.base import Domain

from helpers.tuning import search, spaces, tables, trialstore


def _analytic(params: dict) -> dict:
    opt = params["optimizer"]
    loss = (math.log10(opt["lr"]) + 2.5) ** 2 + params["dropout"] + params["batch_size"] / 1000
    return {"loss": loss, "status": STATUS_OK, "val_acc": 1 - loss / 10,
            "attachments": {"history": '{"epochs": [1]}'}}


def _next_tpe_point(trials: Trials, space: dict, seed: int = 7) -> dict:
    domain = Domain(_analytic, space)
    docs = tpe.suggest([len(trials.trials)], domain, trials, np.random.default_rng(seed).integers(2**31 - 1),
                       n_startup_jobs=3)
    return docs[0]["misc"]["vals"]


def test_json_round_trip_makes_tpe_propose_the_same_next_point(tmp_path: Path) -> None:
    space = spaces.lenet_space()
    trials = Trials()
    fmin(_analytic, space, algo=partial(tpe.suggest, n_startup_jobs=3), max_evals=6, trials=trials,
         rstate=np.random.default_rng(0), show_progressbar=False)
    path = tmp_path / "t.json"
    trialstore.save_trials(trials, path)
    loaded = trialstore.load_trials(path)
    assert path.read_text().startswith('{"format": "lenet5-portfolio-trials/2"')
    assert [t["misc"]["vals"] for t in loaded.trials] == [t["misc"]["vals"] for t in trials.trials]
    assert [t["result"]["loss"] for t in loaded.trials] == [t["result"]["loss"] for t in trials.trials]
    assert loaded.trials[0]["book_time"] == trials.trials[0]["book_time"]  # datetimes come back as datetimes
    assert loaded.trial_attachments(loaded.trials[2])["history"] == '{"epochs": [1]}'
    assert _next_tpe_point(loaded, space) == _next_tpe_point(trials, space)


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.target),))


def test_a_pickled_trials_file_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    _Boom.target = str(tmp_path / "pwned")
    for name in ("old.pkl", "renamed.json"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Boom()))
        with pytest.raises(trialstore.TrialsFileError, match="pickled trials file.*not loaded.*run the search again"):
            trialstore.load_trials(path)
    assert not (tmp_path / "pwned").exists()


def test_a_file_of_another_kind_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"trials": []}')
    with pytest.raises(trialstore.TrialsFileError, match="t.json is not a trials file"):
        trialstore.load_trials(path)
    path.write_text('{"format": "lenet5-portfolio-trials/2", "tri')
    with pytest.raises(trialstore.TrialsFileError, match="not valid JSON"):
        trialstore.load_trials(path)


HOLD_LOCK = "import sys, time; from pathlib import Path; from helpers.tuning import trialstore\n" \
            "with trialstore.locked(Path(sys.argv[1])):\n    print('ready', flush=True); time.sleep(120)\n"


def test_a_second_search_on_the_same_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(trialstore.SearchLockedError, match=f"in use by another search \\(pid {holder.pid} "):
            search.run_search(_analytic, spaces.lenet_space(), search.SearchSpec("s", "tpe", 0, 2), path,
                              progress=False)
        assert not path.exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock behind
        holder.wait(30)
    trials = search.run_search(_analytic, spaces.lenet_space(), search.SearchSpec("s", "tpe", 0, 2), path,
                               progress=False)
    assert len(trials.trials) == 2


def test_a_failed_first_trial_does_not_stop_the_search(tmp_path: Path) -> None:
    calls = []

    def objective(params: dict) -> dict:
        calls.append(1)
        if len(calls) <= 2:
            return {"status": STATUS_FAIL, "failure": "loss diverged (nan) at epoch 1"}
        return _analytic(params)

    spec = search.SearchSpec("f", "tpe", 0, 5, n_startup_jobs=2)
    trials = search.run_search(objective, spaces.lenet_space(), spec, tmp_path / "t.json", progress=False)
    statuses = [t["result"]["status"] for t in trials.trials]
    assert statuses == [STATUS_FAIL, STATUS_FAIL, STATUS_OK, STATUS_OK, STATUS_OK]
    frame = tables.trials_frame(trials, spaces.lenet_space(), "tpe")
    assert tables.best_trial(frame)["trial"] in (3, 4, 5)


def test_a_whole_budget_of_failed_trials_is_an_error_listing_the_reasons(tmp_path: Path) -> None:
    reasons = iter(["loss diverged (nan) at epoch 1", "loss diverged (inf) at epoch 2", "no epoch finished"])

    def objective(params: dict) -> dict:
        return {"status": STATUS_FAIL, "failure": next(reasons)}

    path = tmp_path / "t.json"
    with pytest.raises(search.SearchFailedError, match="all 3 trials failed.*diverged \\(inf\\).*no epoch finished"):
        search.run_search(objective, spaces.lenet_space(), search.SearchSpec("f", "random", 0, 3), path,
                          progress=False)
    assert len(trialstore.load_trials(path).trials) == 3  # the failures are kept as results
