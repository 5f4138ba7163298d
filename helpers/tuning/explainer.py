"""How TPE and ASHA decide: the figure on the tuning page (docs/TUNING.md), TPE drawn from stored trials."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from hyperopt import STATUS_OK, Trials
from hyperopt.tpe import adaptive_parzen_normal  # the estimator TPE itself uses
from matplotlib.figure import Figure

from helpers.tuning.trialstore import load_trials


def tpe_step(x: np.ndarray, loss: np.ndarray, low: float, high: float, gamma: float = 0.25,
             candidates: int = 24, seed: int = 0) -> dict[str, np.ndarray | float]:
    """TPE's next proposal for one log-uniform hyperparameter (``x`` in ln units within [``low``, ``high``]),
    with Hyperopt's own adaptive Parzen estimator: the good set, l(x), g(x), the candidates and the pick."""
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    n_good = int(np.ceil(gamma * np.sqrt(len(x))))  # Hyperopt's split: the best ⌈γ√n⌉ trials are "good"
    good = np.argsort(loss, kind="stable")[:n_good]
    grid = np.linspace(low, high, 400)

    def density(points: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        w, mu, sigma = adaptive_parzen_normal(points, 1.0, (low + high) / 2, high - low)
        pdf = (w[:, None] * np.exp(-0.5 * ((grid - mu[:, None]) / sigma[:, None]) ** 2)
               / (sigma[:, None] * np.sqrt(2 * np.pi))).sum(0)
        return pdf / np.trapezoid(pdf, grid), (w, mu, sigma)  # truncated to the range, as Hyperopt's

    l_pdf, (w, mu, sigma) = density(x[good])
    g_pdf, _ = density(np.delete(x, good))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(w), candidates, p=w / w.sum())
    drawn = np.clip(rng.normal(mu[pick], sigma[pick]), low, high)
    ratio = np.interp(drawn, grid, l_pdf) / np.interp(drawn, grid, g_pdf)
    return {"x": x, "loss": loss, "good": good, "grid": grid, "l": l_pdf, "g": g_pdf, "candidates": drawn,
            "chosen": float(drawn[np.argmax(ratio)])}


def toy_trials(n_trials: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random trials of a toy loss over ln(learning rate) in [ln 1e-4, ln 1e-2] (the tests' case)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(np.log(1e-4), np.log(1e-2), n_trials)
    return x, 0.2 + 0.08 * (x - np.log(2e-3)) ** 2 + rng.normal(0, 0.02, n_trials)


def from_trials(trials: Trials, label: str) -> tuple[np.ndarray, np.ndarray]:
    """ln(value) of the log-uniform ``label`` and the loss of every trial that reported one, in order."""
    rows = [(t["misc"]["vals"][label][0], t["result"]["loss"]) for t in trials.trials
            if t["result"].get("status") == STATUS_OK and t["misc"]["vals"].get(label)]
    return np.log([v for v, _ in rows]), np.array([loss for _, loss in rows])


def asha_curves(n_trials: int = 9, max_epochs: int = 12, rung: int = 4, keep: int = 3, seed: int = 0
                ) -> list[tuple[np.ndarray, bool]]:
    """Toy learning curves of trials arriving one by one; at the rung a trial goes on only when it is in the
    top 1/``keep`` of the trials that reached the rung so far (ASHA). Returns (curve, stopped) per trial."""
    rng = np.random.default_rng(seed)
    epochs, at_rung, out = np.arange(1, max_epochs + 1), [], []
    for _ in range(n_trials):
        curve = rng.uniform(0.5, 0.9) * (1 - np.exp(-epochs / rng.uniform(1.5, 5)))
        at_rung.append(curve[rung - 1])
        rank = sorted(at_rung, reverse=True).index(curve[rung - 1])
        stopped = rank >= int(np.ceil(len(at_rung) / keep))
        out.append((curve[:rung] if stopped else curve, stopped))
    return out


def plot_tpe_and_asha(step: dict[str, np.ndarray | float], name: str, seed: int = 0) -> Figure:
    """A TPE step (:func:`tpe_step`: trials, l and g, the proposal) for the hyperparameter ``name``, and ASHA's
    rung on toy curves, side by side."""
    t = step
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
    lr = np.exp  # the axes read in the hyperparameter's own units
    a1.scatter(lr(t["x"]), t["loss"], color="grey", label="trials")
    a1.scatter(lr(t["x"][t["good"]]), t["loss"][t["good"]], color="seagreen", s=60,
               label=f"good: best ⌈0.25·√{len(t['x'])}⌉ = {len(t['good'])}")
    a1.set(xscale="log", xlabel=f"{name} (log scale)", ylabel="loss (1 − validation accuracy)",
           title="1. Trials so far, split into good and bad")
    a1.legend(fontsize=8)
    a2.plot(lr(t["grid"]), t["l"], color="seagreen", label="l(x): density of the good trials")
    a2.plot(lr(t["grid"]), t["g"], color="firebrick", label="g(x): density of the rest")
    a2.scatter(lr(t["candidates"]), np.zeros_like(t["candidates"]), marker="|", s=80, color="black",
               label="24 candidates drawn from l")
    a2.axvline(lr(t["chosen"]), color="black", ls="--", label="proposed: largest l(x) / g(x)")
    a2.set(xscale="log", xlabel=f"{name} (log scale)", ylabel=f"density (per unit of ln {name})",
           title="2. Parzen densities and the next proposal")
    a2.legend(fontsize=8)
    for i, (curve, stopped) in enumerate(asha_curves(seed=seed)):
        a3.plot(np.arange(1, len(curve) + 1), 100 * curve, ls="--" if stopped else "-",
                color="grey" if stopped else "steelblue", marker="o" if stopped else None, markevery=[-1])
    a3.axvline(4, color="black", ls=":", label="rung (epoch 4): top third goes on")
    a3.set(xlabel="epoch", ylabel="validation accuracy (%)", title="3. ASHA: stop at the rung unless top third")
    a3.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.tuning.explainer TRIALS.json OUT.png``: the figure from a search's stored trials
    (notebook 03's full search), for its weight decay (log-uniform in [1e-6, 1e-2])."""
    trials_file, out = map(Path, argv if argv is not None else sys.argv[1:])
    trials = load_trials(trials_file)
    if trials is None:
        raise FileNotFoundError(f"{trials_file}: no stored trials (run notebook 03 first)")
    x, loss = from_trials(trials, "weight_decay")
    fig = plot_tpe_and_asha(tpe_step(x, loss, np.log(1e-6), np.log(1e-2)), "weight decay")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"wrote {out} from {len(x)} trials of {trials_file.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
