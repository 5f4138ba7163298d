"""Each notebook's settings at the two budgets, in one table, so that a notebook's setup cell stays short."""

from __future__ import annotations

from typing import Any, TypeVar

from helpers.paths import BUDGETS

#: notebook → (full-budget minutes, quick-budget minutes) on the 2-core development CPU, in a slow phase of it (the
#: same work has run 1.6 times faster on a fast day: docs/RUNNING.md)
MINUTES: dict[str, tuple[int, int]] = {"01": (1, 1), "02": (5, 1), "03": (25, 2), "04": (35, 2), "05": (15, 1),
                                       "06": (11, 1), "07": (7, 1)}


def _asha(grace: int, eta: int, max_epochs: int) -> dict[str, int]:
    """ASHA rungs as plain data (helpers.tuning.search.Rungs.of reads them): this table imports no wing."""
    return {"grace": grace, "eta": eta, "max_epochs": max_epochs}


_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "01": dict(quick=dict(per_class=3), full=dict(per_class=6)),
    "02": dict(
        quick=dict(slice=dict(n_train=1000, n_val=300, n_test=500), lenet_epochs={"fashion": 2, "simpsons": 2, "xray": 2},
                   ref_epochs={"fashion": 1, "simpsons": 1, "xray": 1}),
        full=dict(slice=None, lenet_epochs={"fashion": 15, "simpsons": 20, "xray": 20},
                  ref_epochs={"fashion": 6, "simpsons": 15, "xray": 5})),
    "03": dict(
        quick=dict(slice=dict(n_train=600, n_val=200, n_test=300), plain=dict(n_train=300, n_val=200), plain_trials=3,
                   plain_epochs=1, proxy=dict(n_train=300), proxy_rungs=_asha(1, 3, 3), proxy_epochs=6, proxy_startup=2,
                   search_seeds=(0, 1), rungs=_asha(1, 3, 3), epoch_budget=6, startup=2, baseline_epochs=1, seeds=(0,),
                   grid={"lr": [1e-3, 3e-3]}),
        full=dict(slice=None, plain=dict(n_train=2000, n_val=800), plain_trials=12, plain_epochs=4,
                  proxy=dict(n_train=2000), proxy_rungs=_asha(1, 3, 9), proxy_epochs=60, proxy_startup=4,
                  search_seeds=(0, 1, 2, 3, 4), rungs=_asha(14, 3, 40), epoch_budget=400, startup=6, baseline_epochs=20,
                  seeds=(0, 1, 2), grid={"lr": [1e-3, 3e-3], "conv": [(6, 16), (24, 48)], "batchnorm": [False, True]})),
    "04": dict(
        quick=dict(
            fashion=dict(slice=dict(n_train=1000, n_val=300, n_test=500), search_slice=dict(n_train=500, n_val=200),
                         rungs=_asha(1, 3, 3), epoch_budget=6, baseline_epochs=3, seeds=(0,), startup=2),
            xray=dict(slice=dict(n_train=240, n_val=60, n_test=90), search_slice=dict(n_train=120), rungs=_asha(1, 3, 3),
                      epoch_budget=6, baseline_epochs=1, seeds=(0,), startup=2, shift=dict(seeds=(0,), epochs=1), weights_epochs=1)),
        full=dict(
            fashion=dict(slice=None, search_slice=dict(n_train=6000, n_val=2000), rungs=_asha(2, 3, 12), epoch_budget=150,
                         baseline_epochs=12, seeds=(0, 1, 2), startup=6),  # trials and winner: the baseline's 12 epochs
            xray=dict(slice=None, search_slice=dict(n_train=2000), rungs=_asha(2, 3, 18), epoch_budget=90,
                      baseline_epochs=18, seeds=(0, 1, 2), startup=6, shift=dict(seeds=(0,), epochs=15), weights_epochs=15))),
    "05": dict(
        quick=dict(slice=dict(n_train=300, n_val=100), seeds=(0,), epochs=1, long_epochs=3, updates=5,
                   regime=dict(slice=dict(n_train=300, n_val=100), seeds=(0,), epochs=1)),
        full=dict(slice=dict(n_train=3000), seeds=(0, 1, 2), epochs=10, long_epochs=40, updates=300,
                  regime=dict(slice=None, seeds=(0, 1), epochs=None))),  # regime check: the tuned epochs
    "06": dict(
        quick=dict(slice=dict(n_train=600, n_val=100, n_test=100), seeds=(0,),
                   recipes=dict(epochs=1, longer=2),
                   outliers_per_kind=100, ood_per_kind=20, parity_images=10, video_images=20, fps_frames=20),
        full=dict(slice=None, seeds=(0, 1, 2), recipes=dict(epochs=15, longer=25),
                  outliers_per_kind=2400, ood_per_kind=200, parity_images=100, video_images=200, fps_frames=200)),
    "07": dict(
        quick=dict(slice=dict(n_train=400, n_val=200, n_test=300), rungs=_asha(1, 3, 3), num_samples=4, startup=2),
        full=dict(slice=None, rungs=_asha(14, 3, 40), num_samples=8, startup=4)),
}


T = TypeVar("T")


def choose(budget: str, quick: T, full: T) -> T:
    """The settings for ``budget`` (``"quick"`` for tests, ``"full"`` for the report)."""
    if budget not in BUDGETS:
        raise ValueError(f"BUDGET must be one of {BUDGETS}, got {budget!r}")
    return quick if budget == "quick" else full


def settings(notebook: str, budget: str) -> dict[str, Any]:
    """The settings of ``notebook`` ("01" … "07") at ``budget`` ("quick" or "full")."""
    return choose(budget, **_SETTINGS[notebook])


def run_time(notebook: str) -> str:
    """One line for a notebook's opening: how long it runs at each budget, and how to switch."""
    full, quick = MINUTES[notebook]
    return (f"**Run time** on a 2-core CPU: about {full} min with `BUDGET = \"full\"` (the report), about {quick} min "
            f"with `BUDGET = \"quick\"` (small slices, to check that everything runs): set it in the first code cell. "
            f"A GPU is picked automatically.")
