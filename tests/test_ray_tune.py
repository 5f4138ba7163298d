"""The search on Ray Tune: loopback-only local Ray, a real two-node cluster by address, resume after a kill,
and the ResultGrid in the trials-frame columns. Every Ray instance is shut down and every process ended."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import matplotlib
import psutil
import pytest

from helpers.data import load_simpsons_mnist
from helpers.paths import Outputs
from helpers.splits import DataSplits
from helpers.training import TrainConfig
from helpers.tuning import charts, ray_tune
from helpers.tuning.search import Rungs

matplotlib.use("Agg")
os.environ[ray_tune.LOCAL_BIND_ENV] = "0"  # before ray is imported anywhere in this process: loopback only
pytestmark = pytest.mark.xdist_group("notebooks")  # with notebook 07: never two Ray instances at once

BASE = TrainConfig(monitor="val_acc", seed=0)
RUNGS = Rungs(1, 3, 3)


@pytest.fixture(scope="module")
def tiny() -> DataSplits:
    return load_simpsons_mnist("rgb").subset(n_train=300, n_val=100, n_test=100)


@pytest.fixture
def ray_local():
    import ray

    yield ray_tune.connect(num_cpus=2)
    ray.shutdown()


def test_trial_resources_ask_for_a_gpu_fraction_only_when_there_is_one() -> None:
    assert ray_tune.trial_resources(1, 4, gpu=True).request() == {"cpu": 1, "gpu": 0.25}
    assert ray_tune.trial_resources(2, 4, gpu=False).request() == {"cpu": 2, "gpu": 0.0}
    with pytest.raises(ValueError):
        ray_tune.trial_resources(0)


@pytest.mark.slow
def test_local_search_binds_to_loopback_and_gives_a_trials_frame(ray_local, tiny: DataSplits, tmp_path: Path) -> None:
    import ray

    assert "local" in ray_local
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    out = Outputs(tmp_path)
    started = time.time()
    grid = ray_tune.run_ray_search(tiny, BASE, name="local", rungs=RUNGS, num_samples=4, outputs=out, n_startup_jobs=2)
    elapsed = time.time() - started
    frame = ray_tune.results_frame(grid, RUNGS, tiny, BASE)
    # the search's wall time from its trials' own reports: within the call, and at least the longest trial
    assert frame["seconds"].max() * 0.9 <= 60 * ray_tune.search_minutes(grid) <= elapsed + 2
    again = ray_tune.run_ray_search(tiny, BASE, name="local", rungs=RUNGS, num_samples=4, outputs=out, n_startup_jobs=2)
    assert ray_tune.search_minutes(again) == pytest.approx(ray_tune.search_minutes(grid))  # a resume does not shrink it
    assert list(frame["trial"]) == [1, 2, 3, 4]  # proposal order
    assert set(frame["state"]) <= {"finished", "stopped"} and (frame["state"] == "finished").any()
    assert (frame.loc[frame["state"] == "finished", "epochs"] == RUNGS.max_epochs).all()
    assert (frame.loc[frame["state"] == "stopped", "epochs"] == 1).all()  # stopped at the only rung
    assert (out.root / "ray" / "local").is_dir() and len(list((out.runs / "local").iterdir())) == 4
    best, test = ray_tune.evaluate_best(frame, tiny, out, "local")
    assert best["state"] == "finished" and best["val_acc"] == frame.loc[frame["state"] == "finished", "val_acc"].max()
    assert test.confusion.sum() == len(tiny.test)
    fig = charts.plot_optimization_history({"tpe (ray)": frame}, x="epochs_spent")
    assert fig.axes[0].get_xlabel() == "epochs spent by the search"


@pytest.mark.slow
def test_a_two_node_cluster_is_reached_by_its_address(tiny: DataSplits, tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        said = ray_tune.connect(address=cluster.address)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
        assert cluster.address in said and "2 node(s)" in said
        grid = ray_tune.run_ray_search(tiny, BASE, name="cluster", rungs=RUNGS, num_samples=2, outputs=Outputs(tmp_path),
                                    n_startup_jobs=2)
        assert len(grid) == 2 and not grid.errors
    finally:
        ray.shutdown()
        cluster.shutdown()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from helpers.tuning import ray_tune
    from helpers.data import load_simpsons_mnist
    from helpers.paths import Outputs
    from helpers.tuning.search import Rungs
    from helpers.training import TrainConfig
    data = load_simpsons_mnist("rgb").subset(n_train=300, n_val=100, n_test=100)
    ray_tune.connect(num_cpus=1)
    ray_tune.run_ray_search(data, TrainConfig(monitor="val_acc", seed=0), name="resume", rungs=Rungs(1, 3, 3), num_samples=6,
                         outputs=Outputs(Path(sys.argv[1])), n_startup_jobs=2, max_concurrent=1)
""")


def _end_processes(marker: str) -> None:
    """End every process whose command line mentions ``marker`` (the Ray services of a killed run)."""
    for p in psutil.process_iter(["pid", "cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            try:
                p.kill()
            except psutil.Error:
                pass


def _events(run_dir: Path) -> dict[str, tuple[float, int]]:
    return {f.name: (f.stat().st_mtime, f.stat().st_size) for f in run_dir.iterdir()}


def _ended(experiment: Path) -> set[str]:
    """The TensorBoard run names of the trials Ray's saved experiment state records as ended (read as JSON)."""
    ended = set()
    for f in experiment.glob("experiment_state-*.json"):
        try:
            for state, _ in json.loads(f.read_text())["trial_data"]:
                trial = json.loads(state)
                if trial["status"] == "TERMINATED":
                    ended.add(f"ray-{trial['trial_id']}")
        except (OSError, ValueError, KeyError):  # caught while Ray rewrites it: read again next time
            pass
    return ended


@pytest.mark.slow
def test_an_interrupted_search_resumes_with_restore_and_reruns_nothing_finished(ray_local, tmp_path: Path,
                                                                              tiny: DataSplits) -> None:
    script = tmp_path / "search.py"
    script.write_text(KILL_SCRIPT)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(ray_tmp)}
    env.pop(ray_tune.SNAPSHOT_ENV, None)  # the search's own snapshot period, as a user gets it
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, start_new_session=True)
    runs, experiment = tmp_path / "runs" / "resume", tmp_path / "ray" / "resume"
    try:
        deadline, third = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None:
            if third is None and runs.is_dir() and len(list(runs.iterdir())) >= 3:
                third = time.time()  # trials 1 and 2 over, trial 3 training
            if third is not None and time.time() - third >= 3.0:  # three of the search's 1-s snapshot periods
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the search must still be running when it is killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _end_processes(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    started = sorted(runs.iterdir(), key=lambda d: d.stat().st_ctime)
    over = {d.name: _events(d) for d in started[:2]}
    # with Ray's default (a snapshot at most every 10 s) trial 2 could end unsaved and run again (CI saw it)
    assert set(over) <= _ended(experiment), "trials that ended seconds before the kill must be saved as ended"

    grid = ray_tune.run_ray_search(tiny, BASE, name="resume", rungs=RUNGS, num_samples=6, outputs=Outputs(tmp_path),
                                n_startup_jobs=2, max_concurrent=1)
    assert len(grid) == 6 and not grid.errors
    names = {d.name for d in runs.iterdir()}
    expected = {f"ray-{r.metrics['trial_id']}" for r in grid}
    assert len(expected) == 6 and set(over) <= expected <= names  # one TensorBoard run per trial of the resumed search
    # plus any trial the kill cut short before Ray's saved state recorded it (Ray then starts a fresh
    # trial in its place): it began before the kill and is never one of the ended ones
    assert names - expected <= {d.name for d in started[2:]}, names - expected
    for name, files in over.items():
        assert _events(runs / name) == files, f"{name} ended before the kill and must not run again"


def test_the_snapshot_period_applies_within_the_search_and_a_users_setting_wins(monkeypatch) -> None:
    monkeypatch.delenv(ray_tune.SNAPSHOT_ENV, raising=False)
    with ray_tune.snapshot_period(1.5):
        assert os.environ[ray_tune.SNAPSHOT_ENV] == "1.5"
    assert ray_tune.SNAPSHOT_ENV not in os.environ
    monkeypatch.setenv(ray_tune.SNAPSHOT_ENV, "30")
    with ray_tune.snapshot_period(1):
        assert os.environ[ray_tune.SNAPSHOT_ENV] == "30"
    assert os.environ[ray_tune.SNAPSHOT_ENV] == "30"


def test_a_run_folder_others_can_write_is_not_restored(tmp_path: Path) -> None:
    run = tmp_path / "ray" / "search"
    run.mkdir(parents=True)
    (run / "tuner.pkl").write_bytes(b"not loaded")
    os.chmod(run, 0o755)
    os.chmod(run / "tuner.pkl", 0o644)
    ray_tune.check_restorable(run)  # this user's own run: fine
    os.chmod(run / "tuner.pkl", 0o666)
    with pytest.raises(ray_tune.UnsafeRestoreError, match="unpickle"):
        ray_tune.check_restorable(run)
