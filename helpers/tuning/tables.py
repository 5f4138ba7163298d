"""Tables from a search's trials: one row per trial, the best one, what the search spent, importance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, space_eval

from helpers.stats import Verdict, given
from helpers.training import TEXTBOOK, TrainConfig
from helpers.tuning.spaces import RunConfig


def trial_state(result: Mapping[str, Any]) -> str:
    """``finished``, ``stopped`` or ``failed`` for one trial result."""
    if result.get("status") != STATUS_OK:
        return "failed"
    return "stopped" if result.get("outcome") == "stopped" else "finished"


def layer_widths(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` plus numeric per-layer widths (``conv1``, ``conv2``, ``dense1``…) from ``"24/48"``-style strings."""
    out = dict(config)
    for key in ("conv", "dense"):  # a string like "24/48" is no scale
        if isinstance(out.get(key), str):
            for k, width in enumerate(out[key].split("/"), start=1):
                out[f"{key}{k}"] = int(width)
    return out


def trials_frame(trials: Trials, space: Mapping[str, Any], algo: str = "") -> pd.DataFrame:
    """One row per trial in proposal order: state, validation metrics, epochs, time and the *decoded* config."""
    rows = []
    for t in trials.trials:
        result = t["result"]
        if result.get("status") not in (STATUS_OK, STATUS_FAIL):
            continue
        vals = {k: v[0] for k, v in t["misc"]["vals"].items() if v}
        point = space_eval(space, vals)  # choice indices -> values
        row = {"trial": t["tid"] + 1, "algo": algo, "status": result["status"], "state": trial_state(result),
               "val_acc": result.get("val_acc", np.nan), "val_loss": result.get("val_loss", np.nan),
               "seconds": result.get("seconds", np.nan), "epochs": result.get("epochs", np.nan),
               "failure": result.get("failure", "")}
        row.update(layer_widths(result.get("config") or {}))
        row["n_params"] = (result.get("applied") or {}).get("n_params", np.nan)
        row["point"] = point
        rows.append(row)
    return add_running_columns(pd.DataFrame(rows))


def add_running_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``epochs_spent`` and ``best_so_far`` to a frame in proposal order (Ray's too)."""
    if not frame.empty:
        frame["epochs_spent"] = frame["epochs"].fillna(0).astype(int).cumsum()
        done = frame["val_acc"].where(frame["state"] == "finished")
        frame["best_so_far"] = done.fillna(-np.inf).cummax().replace(-np.inf, np.nan)
    return frame


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials that trained all their epochs (the only ones whose scores are comparable)."""
    return frame[frame["state"] == "finished"]


def best_trial(frame: pd.DataFrame) -> pd.Series:
    """The finished trial with the highest validation accuracy (stopped and failed trials are skipped)."""
    done = finished(frame)
    if done.empty:
        raise ValueError("no trial finished all its epochs")
    return done.loc[done["val_acc"].idxmax()]


def best_at_budget(frame: pd.DataFrame, epochs: int) -> float:
    """Best validation accuracy of the trials finished within ``epochs`` epochs spent (NaN if none)."""
    within = frame[frame["epochs_spent"] <= epochs]
    return float(within["best_so_far"].max()) if len(within) else float("nan")


def spend(frame: pd.DataFrame) -> dict[str, Any]:
    """What a search spent: trials started / stopped early / finished / failed, epochs in total, minutes."""
    states = frame["state"].value_counts() if len(frame) else pd.Series(dtype=int)
    return {"trials": len(frame), "stopped early": int(states.get("stopped", 0)),
            "finished": int(states.get("finished", 0)), "failed": int(states.get("failed", 0)),
            "epochs": int(frame["epochs"].fillna(0).sum()) if len(frame) else 0,
            "train min": round(float(frame["seconds"].fillna(0).sum()) / 60, 1) if len(frame) else 0.0}


def importance(frame: pd.DataFrame, params: Sequence[str], bins: int = 4, min_trials: int = 8) -> pd.Series:
    """Share of validation-accuracy variance each hyperparameter explains alone (η², finished trials)."""
    ok = finished(frame)
    if len(ok) < min_trials:
        return pd.Series(np.nan, index=list(params), name="variance explained")
    y = ok["val_acc"].astype(float)
    total = ((y - y.mean()) ** 2).sum()
    out = {}
    for p in params:
        x = ok[p]
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x) and x.nunique() > bins:
            x = pd.qcut(x.astype(float), bins, duplicates="drop")
        groups = y.groupby(x.astype(str), observed=True)
        between = sum(len(g) * (g.mean() - y.mean()) ** 2 for _, g in groups)
        out[p] = float(between / total) if total > 0 else 0.0
    return pd.Series(out, name="variance explained").sort_values(ascending=False)


def applied_table(trials: Trials, k: int = 6) -> pd.DataFrame:
    """For the first ``k`` trials: sampled settings beside what the optimizer and model received."""
    rows = []
    for t in trials.trials[:k]:
        r = t["result"]
        config, applied = r.get("config") or {}, r.get("applied") or {}
        rows.append({"trial": t["tid"] + 1, "sampled optimizer": config.get("optimizer"), "sampled lr": config.get("lr"),
                     "optimizer built": applied.get("class"), "lr in optimizer": applied.get("lr"),
                     "sampled batch": config.get("batch_size"), "batch used": applied.get("batch_size"),
                     "conv / dense": f"{config.get('conv')} / {config.get('dense')}",
                     "parameters": applied.get("n_params"), "state": trial_state(r)})
    return pd.DataFrame(rows)


def importance_readout(frame: pd.DataFrame, imp: pd.Series) -> str:
    """One markdown sentence on :func:`importance`'s result, or why it ranks nothing."""
    n = len(finished(frame))
    if imp.isna().all():
        return (f"**Read-out.** Only {n} trials finished all their epochs (the others were stopped early at a rung): "
                f"too few to rank hyperparameters by η², so no ranking is claimed here.")
    return (f"**Read-out.** Over {n} finished trials the hyperparameter that explains most of the spread is "
            f"**{imp.index[0]}** (η² = {imp.iloc[0]:.2f}), then **{imp.index[1]}** ({imp.iloc[1]:.2f}) and "
            f"**{imp.index[2]}** ({imp.iloc[2]:.2f}). TPE samples where it expects good results, so these are hints. "
            "η² of each: " + ", ".join(f"{name} {value:.2f}" for name, value in imp.items()) + ".")


RANKING_RULE = "η² ranking: first is supported, bottom half is refuted (no significance test)"


def ranking_claim(imp: pd.Series | None, name: str = "lr") -> Verdict:
    """Claim "``name`` matters most" from :func:`importance`, by :data:`RANKING_RULE`."""
    claim = f"{name} matters most"
    if imp is None or imp.isna().all() or name not in imp.index:
        return given(claim, "inconclusive", RANKING_RULE,
                     "no importance ranking from the tuning trials (too few finished, or none found)")
    rank = list(imp.index).index(name)
    outcome = "supported" if rank == 0 else "refuted" if rank >= len(imp) / 2 else "inconclusive"
    return given(claim, outcome, RANKING_RULE, f"{name} ranks {rank + 1} of {len(imp)} (η² = {imp[name]:.2f}); "
                                               f"first: {imp.index[0]} (η² = {imp.iloc[0]:.2f})")


def winner_table(model: Mapping[str, Any], train: Any) -> pd.DataFrame:
    """The tuned settings that differ from textbook LeNet-5: what the search changed."""
    textbook_model = {**model, "conv_channels": (6, 16), "dense_units": (120, 84), "dropout": 0.0, "batchnorm": False}
    textbook_train = TrainConfig(**{**TEXTBOOK, "epochs": train.epochs, "schedule": "none"})
    rows = []
    for (key, tuned), (_, book) in zip(RunConfig(dict(model), train).describe().items(),
                                       RunConfig(textbook_model, textbook_train).describe().items()):
        if tuned != book:
            show = [float(f"{v:.3g}") if isinstance(v, float) else v for v in (book, tuned)]
            rows.append({"setting": key, "textbook": show[0], "tuned": show[1]})
    return pd.DataFrame(rows).set_index("setting")
