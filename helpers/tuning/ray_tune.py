"""The LeNet-5 search on Ray Tune: Hyperopt proposes, ASHA stops, Ray schedules, on a laptop or a cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import TqdmWarning

from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.paths import Outputs
from helpers.runs import Run, train_tracked
from helpers.splits import DataSplits
from helpers.training import Evaluation, TrainConfig, evaluate
from helpers.tuning import search, spaces, tables, trialstore
from helpers.tuning.search import Rungs
from helpers.tuning.spaces import lenet_space, to_run_config
from helpers.tuning.tables import add_running_columns, best_trial, layer_widths

if TYPE_CHECKING:  # Ray is imported only where a run needs it (it takes seconds)
    from ray.tune import ResultGrid

LOCAL_BIND_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  #: "0" before Ray starts: bind to 127.0.0.1
SNAPSHOT_ENV = "TUNE_GLOBAL_CHECKPOINT_S"  #: Ray Tune's experiment-state snapshot period, read when a search starts
TRIAL_DIR = re.compile(r"_([0-9a-f]{8})_(\d+)_")  #: Tune's trial folder: <trainable>_<trial id>_<proposal no.>_<config>


class RayStateError(RuntimeError):
    """An interrupted Ray run whose saved state is damaged: it cannot be resumed."""


class UnsafeRestoreError(RuntimeError):
    """An interrupted Ray run whose state files others could have written: not restored."""


def check_restorable(path: Path, levels_up: int = 2) -> None:
    """Refuse to restore ``path`` unless this user owns it and nobody else can write it or where it points."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = Path(path)

    def refuse(f: Path, why: str) -> UnsafeRestoreError:
        return UnsafeRestoreError(f"{f} {why}, and resuming the Ray run in {path} would unpickle its state: not "
                                  f"resumed. Delete or move {path} to start the search afresh.")

    def check(f: Path, st: os.stat_result) -> None:
        if (uid is not None and st.st_uid != uid) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise refuse(f, "is writable by other users or belongs to another user")

    for folder in list(path.parents)[:levels_up]:
        check(folder, folder.stat())
    for f in [path, *path.rglob("*")]:
        st = f.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = f.resolve()
            if not target.exists():
                raise refuse(f, f"is a link to {target}, which does not exist")
            check(target, target.stat())
            check(target.parent, target.parent.stat())
        else:
            check(f, st)


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks Ray for."""
    cpus: float = 1.0
    gpus: float = 0.0

    def request(self) -> dict[str, float]:
        """The ``tune.with_resources`` request."""
        return {"cpu": self.cpus, "gpu": self.gpus}


def trial_resources(cpus_per_trial: float = 1.0, trials_per_gpu: int = 4, gpu: bool | None = None) -> TrialResources:
    """CPUs per trial and, with a GPU, ``1/trials_per_gpu`` of it so several LeNets share it."""
    if cpus_per_trial <= 0 or trials_per_gpu < 1:
        raise ValueError(f"need cpus_per_trial > 0 and trials_per_gpu >= 1, got {cpus_per_trial}, {trials_per_gpu}")
    gpu = torch.cuda.is_available() if gpu is None else gpu
    return TrialResources(cpus_per_trial, 1.0 / trials_per_gpu if gpu else 0.0)


def connect(address: str | None = None, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray bound to 127.0.0.1."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ[LOCAL_BIND_ENV] = "0"  # read when ray is first imported: loopback addresses only
    # Ray says at import, in a notebook without ipywidgets, that rich output needs them (an INFO line on
    # stderr in every report), and imports tqdm.auto, which warns about the same: neither is news here
    logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
    # and, as a WARNING, that token authentication is on by default (it is: nothing to act on here)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        # Ray here, not at the top: it takes seconds to import, and only notebook 07 needs it
        import ray
        import ray.tune  # noqa: F401

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="warning")
        else:  # the node address too, in case ray was imported before the variable was set
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="warning", _node_ip_address="127.0.0.1")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    where = ", ".join(sorted({n["NodeManagerAddress"] for n in nodes}))
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"Ray {ray.__version__}: {'cluster at ' + address if address else 'local'}; {len(nodes)} node(s) at {where}, {cpus:g} CPUs"


def _trial(config: dict[str, Any], *, data: DataSplits, base: TrainConfig, experiment: str, outputs_root: str,
           device: str, threads: int) -> None:
    """One Ray trial: the point through the project's tracked-training path, every epoch reported to Tune."""
    from ray import tune  # heavy and optional: imported where a Ray run needs it

    torch.set_num_threads(threads)
    run, max_epochs = to_run_config(config, data, base), base.epochs
    trial_id = tune.get_context().get_trial_id()

    last: list[dict[str, float]] = []

    def report(record: dict[str, float]) -> bool:
        if int(record["epoch"]) < max_epochs:
            tune.report(_metrics(record))
        else:  # the last epoch is reported after the weights are saved: Tune ends the trial at that report
            last.append(record)
        return False  # ASHA stops the trial from outside

    outputs = Outputs(Path(outputs_root))
    tracked = Run(f"ray-{trial_id}", experiment, run.train, run.model, hparams={"algo": "tpe (ray)", **run.describe()},
                  test=False, figures=False)
    result = train_tracked(data, tracked, outputs, device, on_epoch=report)
    if result.history.diverged:  # an errored trial: Hyperopt skips it, the results table shows it as failed
        raise RuntimeError(f"trial {trial_id} diverged: {result.history.diverged}")
    if last and result.val is not None:  # ran all its epochs: keep its best-epoch weights for the test report
        save_checkpoint(trial_checkpoint(outputs, experiment, trial_id), result.model, data.classes, data.mean,
                        data.std, train_config=asdict(run.train), metrics={"val_acc": result.val.accuracy})
    if last:
        tune.report(_metrics(last[0]))


def _metrics(record: dict[str, float]) -> dict[str, float]:
    return {k: record[k] for k in ("val_acc", "val_loss", "epoch", "seconds")}


def trial_checkpoint(outputs: Outputs, name: str, trial_id: str) -> Path:
    """Where a finished Ray trial's weights are saved (on the node that ran it)."""
    return outputs.models / "ray" / name / f"{trial_id}.pt"


def evaluate_best(frame: pd.DataFrame, data: DataSplits, outputs: Outputs, name: str) -> tuple[pd.Series, Evaluation]:
    """The finished trial with the best validation accuracy and its one evaluation on the test split."""
    best = best_trial(frame)
    checkpoint = load_checkpoint(trial_checkpoint(outputs, name, best["trial_id"]))
    return best, evaluate(checkpoint.model, data, "test", device="cpu")


@contextmanager
def snapshot_period(seconds: float) -> Iterator[None]:
    """Ray Tune saves its state at most every ``seconds`` within the block (unless the user set it)."""
    before = os.environ.get(SNAPSHOT_ENV)
    if before is None:
        os.environ[SNAPSHOT_ENV] = f"{seconds:g}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SNAPSHOT_ENV, None)


def run_ray_search(
    data: DataSplits, base: TrainConfig, *, name: str, rungs: Rungs | Mapping[str, int], num_samples: int,
    outputs: Outputs, seed: int = 0, n_startup_jobs: int = 8, max_concurrent: int = 2, resources: TrialResources | None = None,
    space_options: Mapping[str, Any] | None = None, device: str = "cpu", snapshot_s: float = 1.0,
) -> ResultGrid:
    """Run (or, if ``outputs/ray/<name>`` holds an interrupted run, resume) the search; returns the ``ResultGrid``."""
    # Ray here, not at the top: it takes seconds to import, and only notebook 07 needs it
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.hyperopt import HyperOptSearch

    rungs, resources = Rungs.of(rungs), resources or trial_resources()
    storage = (Path(outputs.root) / "ray").resolve()
    threads = max(1, int(resources.cpus))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, data=data, base=replace(base, epochs=rungs.max_epochs),  # a trial's most
                             experiment=name, outputs_root=str(Path(outputs.root).resolve()), device=device,
                             threads=threads),
        resources.request())
    path = storage / name
    if path.exists():  # before Ray looks inside: links, owners and write bits
        check_restorable(path)
    if tune.Tuner.can_restore(str(path)):
        try:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=True)
        except Exception as exc:  # a damaged or dangling state file: whatever Ray raises, the remedy is the same
            raise RayStateError(f"the saved state of the interrupted Ray run in {path} cannot be read "
                                f"({type(exc).__name__}); delete or move {path} to start the search afresh") from None
    else:
        search = ConcurrencyLimiter(
            HyperOptSearch(space=lenet_space(**(space_options or {})), metric="val_acc", mode="max",
                           n_initial_points=n_startup_jobs, random_state_seed=seed),
            max_concurrent=max_concurrent)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=rungs.max_epochs, grace_period=rungs.grace,
                                  reduction_factor=rungs.eta)
        tuner = tune.Tuner(trainable,
                           tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=search,
                                                       scheduler=scheduler, num_samples=num_samples),
                           run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0))
    with snapshot_period(snapshot_s), _no_rich_display():
        return tuner.fit()


@contextlib.contextmanager
def _no_rich_display() -> Iterator[None]:
    """Ray Tune's Jupyter reporter displays an HTML object even with ``verbose=0``: an empty box in a notebook."""
    try:  # IPython is there inside a notebook, not always in a plain script
        from IPython.utils.capture import capture_output
    except ImportError:
        yield
        return
    with capture_output(stdout=False, stderr=False, display=True):
        yield


def search_minutes(grid: ResultGrid) -> float:
    """Wall time of the search from the trials' own reports (first start to last report), in minutes."""
    starts, ends = [], []
    for result in grid:
        m = result.metrics_dataframe
        if m is None or not len(m) or "timestamp" not in m:
            continue
        starts.append(float(m["timestamp"].iloc[0] - m["time_this_iter_s"].iloc[0]))
        ends.append(float(m["timestamp"].iloc[-1]))
    return (max(ends) - min(starts)) / 60 if starts else 0.0


def results_frame(grid: ResultGrid, rungs: Rungs | Mapping[str, int], data: DataSplits, base: TrainConfig,
                  algo: str = "tpe (ray)") -> pd.DataFrame:
    """The ``ResultGrid`` in :func:`helpers.tuning.tables.trials_frame`'s columns, numbered in proposal order."""
    rungs, rows = Rungs.of(rungs), []
    for result in grid:
        metrics = result.metrics_dataframe
        epochs = int(metrics["training_iteration"].max()) if metrics is not None and len(metrics) else 0
        state = "failed" if result.error or not epochs else "finished" if epochs >= rungs.max_epochs else "stopped"
        scored = (metrics.loc[metrics["val_acc"].idxmax()] if state == "finished" else metrics.iloc[-1]) if epochs else {}
        match = TRIAL_DIR.search(Path(result.path).name)
        if match is None:
            raise ValueError(f"unexpected Ray trial folder name: {Path(result.path).name}")
        trial_id, index = match.group(1), int(match.group(2))
        run = to_run_config(result.config, data, replace(base, epochs=rungs.max_epochs))
        rows.append({"trial": index, "trial_id": trial_id, "algo": algo,
                     "status": "fail" if state == "failed" else "ok", "state": state,
                     "val_acc": scored.get("val_acc", np.nan), "val_loss": scored.get("val_loss", np.nan),
                     "seconds": float(metrics["seconds"].sum()) if epochs else np.nan, "epochs": epochs,
                     **layer_widths(run.describe()), "point": result.config})
    frame = pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)
    return add_running_columns(frame)


def beside_notebook03(outputs: Outputs, ray_frame: pd.DataFrame, ray_minutes: float, best: pd.Series,
                      test_acc: float) -> pd.DataFrame:
    """What notebook 03's search and this Ray search each spent and found (03's row once it has run)."""
    rows = []
    path = search.trials_file(outputs.results, "03-simpsons", "tpe")
    if path.exists():
        trials = trialstore.load_trials(path)
        nb03 = tables.trials_frame(trials, spaces.stored_space(trials), "tpe")
        tuned = outputs.models / "simpsons_tuned.pt"
        test03 = load_checkpoint(tuned).metrics.get("seeds_test mean %") if tuned.exists() else None
        minutes03 = nb03["seconds"].sum() / 60  # trials ran one after another: close to the search's wall time
        rows.append({"search": "notebook 03: Hyperopt, one process", **tables.spend(nb03), "minutes": round(minutes03, 1),
                     "epochs per min": round(nb03["epochs"].sum() / minutes03, 1),
                     "best val acc %": round(100 * tables.best_trial(nb03)["val_acc"], 2),
                     "test acc %": round(test03, 2) if test03 is not None else None})
    rows.append({"search": "notebook 07: Ray Tune, 2 trials at once", **tables.spend(ray_frame),
                 "minutes": round(ray_minutes, 1), "epochs per min": round(ray_frame["epochs"].sum() / ray_minutes, 1),
                 "best val acc %": round(100 * best["val_acc"], 2), "test acc %": round(100 * test_acc, 2)})
    return pd.DataFrame(rows).set_index("search")
