"""Runs side by side (helpers.lanes): one thread each, results in order and independent of the number of lanes."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import torch

from helpers import lanes, runs
from helpers.data import load_fashion_mnist
from helpers.paths import Outputs
from helpers.splits import DataSplits
from helpers.training import TrainConfig

CPU = torch.device("cpu")


def test_the_lane_count_follows_the_setting_and_never_exceeds_the_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lanes.LANES_ENV, "3")
    assert lanes.lane_count(10) == 3 and lanes.lane_count(2) == 2
    monkeypatch.delenv(lanes.LANES_ENV)
    assert lanes.lane_count(10) == torch.get_num_threads()
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(lanes.LANES_ENV, bad)
        with pytest.raises(ValueError, match="PORTFOLIO_LANES.*whole number"):
            lanes.lane_count(4)


@pytest.mark.parametrize("count", ["1", "2"])
def test_every_job_runs_on_one_thread_and_results_come_back_in_order(monkeypatch: pytest.MonkeyPatch,
                                                                       count: str) -> None:
    monkeypatch.setenv(lanes.LANES_ENV, count)
    before = torch.get_num_threads()
    assert lanes.side_by_side(torch.get_num_threads, [(), (), ()], CPU) == [lanes.LANE_THREADS] * 3
    assert lanes.side_by_side(int, [("3",), ("1",), ("2",)], CPU) == [3, 1, 2]
    assert torch.get_num_threads() == before  # the caller's own thread count is left as it was


def test_a_failed_job_raises_its_own_error_after_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lanes.LANES_ENV, "2")
    with pytest.raises(ValueError, match="invalid literal"):
        lanes.side_by_side(int, [("3",), ("not a number",), ("2",)], CPU)


def test_the_lanes_are_kept_between_calls_and_a_dead_one_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lanes.LANES_ENV, "2")
    lanes.close_lanes()

    def lane_pids() -> set[int]:  # one lane may have taken every job of a call, so ask for the processes themselves
        return {p.pid for p in mp.active_children()}

    first = set(lanes.side_by_side(os.getpid, [(), (), (), ()], CPU))
    kept = lane_pids()
    assert os.getpid() not in first and first <= kept
    assert set(lanes.side_by_side(os.getpid, [(), ()], CPU)) <= kept  # no new processes to wait for
    with pytest.raises(BrokenProcessPool):
        lanes.side_by_side(os._exit, [(3,), (3,)], CPU)  # a lane dies (as when the system kills it)
    after = set(lanes.side_by_side(os.getpid, [(), ()], CPU))
    assert after and not after & kept  # new lanes
    renewed = lane_pids()
    lanes.close_lanes()
    assert not set(lanes.side_by_side(os.getpid, [(), ()], CPU)) & renewed


def test_the_longest_jobs_start_first_and_results_come_back_in_job_order(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    class Recorder:  # stands in for the lanes' processes: runs each job as it is handed over
        def submit(self, fn, work, job):
            started.append(pickle.loads(job)[0])
            future = Future()
            future.set_result(fn(work, job))
            return future

    monkeypatch.setenv(lanes.LANES_ENV, "2")
    monkeypatch.setattr(lanes, "_lanes", lambda count: Recorder())
    assert lanes.side_by_side(str, [("a",), ("b",), ("c",), ("d",)], CPU, costs=[1, 5, 3, 5]) == ["a", "b", "c", "d"]
    assert started == ["b", "d", "c", "a"]  # longest first, ties in job order
    started.clear()
    lanes.side_by_side(str, [("a",), ("b",)], CPU)
    assert started == ["a", "b"]  # no costs: in job order


def test_a_lane_leaves_an_interrupt_to_its_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lanes.LANES_ENV, "2")  # a kernel's shutdown signals its lanes too: they must not print tracebacks
    assert lanes.side_by_side(signal.getsignal, [(signal.SIGINT,)] * 2, CPU) == [signal.SIG_IGN] * 2
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the caller's own handler untouched


def test_the_callers_thread_count_is_back_after_one_lane() -> None:
    before = torch.get_num_threads()
    with lanes.one_thread():
        assert torch.get_num_threads() == lanes.LANE_THREADS
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def tiny() -> DataSplits:
    return load_fashion_mnist().subset(n_train=600, n_val=200, n_test=200)


def _weights(result: runs.RunResult) -> torch.Tensor:
    return torch.cat([v.detach().float().flatten() for v in result.model.state_dict().values()])


@pytest.mark.slow
def test_runs_give_the_same_weights_in_two_lanes_as_in_one(tiny: DataSplits, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = runs.Run("lanes", "lanes-test", TrainConfig(optimizer="adam", lr=2e-3, epochs=2), test=False, figures=False)
    trained = {}
    for count in ("2", "1"):  # separate stores: each trains afresh
        monkeypatch.setenv(lanes.LANES_ENV, count)
        trained[count] = runs.train_over_seeds(tiny, run, [0, 1], Outputs(tmp_path / count), CPU)
    assert [r.name for r in trained["2"]] == ["lanes-seed0", "lanes-seed1"]
    for a, b in zip(trained["2"], trained["1"], strict=True):
        assert torch.equal(_weights(a), _weights(b))  # the lanes decide how many at once, never a result
    assert not torch.equal(_weights(trained["2"][0]), _weights(trained["2"][1]))  # two seeds, two runs
    again = runs.train_over_seeds(tiny, run, [0, 1], Outputs(tmp_path / "2"), CPU)  # read back from the store
    assert all(torch.equal(_weights(a), _weights(b)) for a, b in zip(again, trained["2"], strict=True))


def test_a_runs_key_names_the_threads_it_trains_on(tiny: DataSplits) -> None:
    run = runs.Run("r", "e", TrainConfig(epochs=1))
    with lanes.one_thread():
        one = runs.run_key(tiny, run)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert runs.run_key(tiny, run) != one  # weights trained on 2 threads are not those of 1
    finally:
        torch.set_num_threads(before)


def test_the_callers_tensors_stay_where_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs travel by value: a NumPy view of the caller's data still reads that data afterwards."""
    monkeypatch.setenv(lanes.LANES_ENV, "2")
    labels = torch.arange(1000)
    view = labels.numpy()  # e.g. a shift set's labels, taken from a split's tensor
    assert lanes.side_by_side(torch.sum, [(labels,), (labels[:10],)], CPU) == [torch.tensor(499500), torch.tensor(45)]
    assert not labels.is_shared() and (view == range(1000)).all()
