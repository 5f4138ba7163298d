"""Is the test split the same population as the training pool? A LeNet-5 that tries to tell them apart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.stats as sps
import torch

from helpers.data import patient_of
from helpers.models import build_model
from helpers.splits import DataSplits, Split
from helpers.stats import Decision, finding
from helpers.training import DeviceSplit, TrainConfig, fit, predict_logits
from helpers.xray.aspect import source_aspect_ratios

#: the probe's LeNet-5: two conv + pool stages and three dense layers, two outputs (pool / test)
PROBE_MODEL = {"conv_channels": (16, 32), "dense_units": (64, 32), "batchnorm": True, "dropout": 0.2}
#: how each probe trains (:class:`helpers.training.TrainConfig`; epochs and seed are arguments)
PROBE_TRAINING = {"optimizer": "adam", "lr": 2e-3, "batch_size": 64, "hflip": True, "monitor": "val_loss"}


def separability(a: torch.Tensor, b: torch.Tensor, groups_a: Sequence[str], groups_b: Sequence[str], *,
                 folds: int = 5, epochs: int = 15, seed: int = 0,
                 device: str | torch.device | None = "auto") -> tuple[float, float, int]:
    """Out-of-fold ROC AUC of a LeNet-5 telling ``a`` from ``b``, its p-value, images per side."""
    if folds < 3:
        raise ValueError(f"need at least 3 folds (train, validation, held out), got {folds}")
    if len(a) < folds or len(b) < folds:
        raise ValueError(f"need at least {folds} images per side, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    ia, ib = rng.choice(len(a), n, replace=False), rng.choice(len(b), n, replace=False)
    x = torch.cat([a[ia], b[ib]])
    y = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
    groups = [("a", groups_a[i]) for i in ia] + [("b", groups_b[i]) for i in ib]
    unique = sorted(set(groups))
    fold_of = {g: k % folds for k, g in enumerate(unique[i] for i in rng.permutation(len(unique)))}
    fold = np.array([fold_of[g] for g in groups])
    pooled = Split(x, y, [f"{side}/{g}" for side, g in groups])
    scores = np.zeros(len(y))
    for k in range(folds):
        held, val = np.flatnonzero(fold == k), np.flatnonzero(fold == (k + 1) % folds)
        train = np.flatnonzero((fold != k) & (fold != (k + 1) % folds))
        pixels = x[train].to(torch.float64) / 255
        splits = DataSplits("domain probe", ["a", "b"], pooled.take(train), pooled.take(val), pooled.take(held),
                            tuple(pixels.mean(dim=(0, 2, 3)).tolist()), tuple(pixels.std(dim=(0, 2, 3)).tolist()),
                            source="")
        model = build_model("lenet5", seed=seed + k, in_channels=a.shape[1], image_size=a.shape[-1], num_classes=2,
                            **PROBE_MODEL)
        fitted = fit(model, splits, TrainConfig(**PROBE_TRAINING, epochs=epochs, seed=seed + k), device=device)
        held_x = DeviceSplit(splits.test, splits.mean, splits.std, torch.device(fitted.device)).x
        logits = predict_logits(fitted.model, held_x).cpu()
        scores[held] = (logits[:, 1] - logits[:, 0]).numpy()
    p = sps.mannwhitneyu(scores[n:], scores[:n], alternative="greater").pvalue
    return score_auc(scores[:n], scores[n:]), float(p), n


def aspect_matched(aspect_a: Sequence[float], aspect_b: Sequence[float], *, tolerance: float = 0.02,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of ``a`` and ``b`` with aspect ratios ≤ ``tolerance`` apart (greedy, seeded)."""
    a = np.asarray(aspect_a, dtype=float)
    b = np.asarray(aspect_b, dtype=float)
    free = np.ones(len(a), dtype=bool)
    pairs = []
    for j in np.random.default_rng(seed).permutation(len(b)):
        gap = np.where(free, np.abs(a - b[j]), np.inf)
        if len(a) and gap.min() <= tolerance:
            k = int(gap.argmin())
            free[k] = False
            pairs.append((k, int(j)))
    pairs.sort()
    return np.array([k for k, _ in pairs], dtype=int), np.array([j for _, j in pairs], dtype=int)


def score_auc(score_a: Sequence[float], score_b: Sequence[float]) -> float:
    """ROC AUC of one number as the domain classifier (NaN when a side is empty)."""
    a, b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    if not len(a) or not len(b):
        return float("nan")
    return float(sps.mannwhitneyu(b, a).statistic) / (len(a) * len(b))


def pixel_scores(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each image's mean pixel ("brightness") and pixel standard deviation ("contrast")."""
    flat = x.flatten(1).to(torch.float64) / 255
    return {"brightness": flat.mean(1).numpy(), "contrast": flat.std(1).numpy()}


@dataclass(frozen=True)
class ClassSides:
    """One class's two sides of the probe: pool and test indices, aspect ratios, matched pairs."""

    pool: list[int]
    test: list[int]
    pool_aspect: list[float]
    test_aspect: list[float]
    matched_pool: np.ndarray
    matched_test: np.ndarray


def class_sides(data: DataSplits, folder: Path, *, tolerance: float = 0.02) -> dict[str, ClassSides]:
    """:class:`ClassSides` of every class; exact-square source files left out."""
    pool_y = torch.cat([data.train.y, data.val.y]).tolist()
    pool_aspect = source_aspect_ratios(folder, list(data.train.ids) + list(data.val.ids))
    test_aspect = source_aspect_ratios(folder, data.test.ids)
    sides = {}
    for label, name in enumerate(data.classes):
        ia = [i for i, (c, r) in enumerate(zip(pool_y, pool_aspect)) if c == label and r is not None]
        ib = [i for i, (c, r) in enumerate(zip(data.test.y.tolist(), test_aspect)) if c == label and r is not None]
        aa, ab = [pool_aspect[i] for i in ia], [test_aspect[i] for i in ib]
        sides[name] = ClassSides(ia, ib, aa, ab, *aspect_matched(aa, ab, tolerance=tolerance))
    return sides


def _check_sides(data: DataSplits, sides: dict[str, ClassSides]) -> None:
    """Refuse ``sides`` not made by :func:`class_sides` from ``data``."""
    pool_y, test_y = torch.cat([data.train.y, data.val.y]), data.test.y
    for label, name in enumerate(data.classes):
        sd = sides.get(name)
        if sd is None or any(i >= len(pool_y) or pool_y[i] != label for i in sd.pool) or any(
                i >= len(test_y) or test_y[i] != label for i in sd.test):
            raise ValueError(f"the sides of class {name!r} do not belong to these data: make them with "
                             f"class_sides(data, folder) from the same data")


def pixel_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean images of ``a`` and ``b`` and their per-pixel difference in standard errors."""
    fa, fb = (x.to(torch.float64).mean(1) / 255 for x in (a, b))
    se = torch.sqrt(fa.var(0) / len(fa) + fb.var(0) / len(fb)).clamp_min(1e-9)
    return fa.mean(0).numpy(), fb.mean(0).numpy(), ((fb.mean(0) - fa.mean(0)) / se).numpy()


def plot_matched_difference(data: DataSplits, sides: dict[str, ClassSides], *, z_limit: float = 8.0,
                            title: str = "Training pool vs test, matched on aspect ratio") -> plt.Figure:
    """Per class: mean matched pool and test images and the per-pixel z of test − pool."""
    _check_sides(data, sides)
    pool_x = torch.cat([data.train.x, data.val.x])
    fig, axes = plt.subplots(len(sides), 3, figsize=(9.5, 3 * len(sides)), squeeze=False)
    for row, (name, sd) in zip(axes, sides.items()):
        pa = pool_x[[sd.pool[k] for k in sd.matched_pool]]
        tb = data.test.x[[sd.test[j] for j in sd.matched_test]]
        if len(pa) < 2:
            for ax in row:
                ax.axis("off")
            row[0].set_title(f"{name}: {len(pa)} images matched, too few for a mean", fontsize=9)
            continue
        mean_a, mean_b, z = pixel_difference(pa, tb)
        row[0].imshow(mean_a, cmap="gray", vmin=0, vmax=1)
        row[1].imshow(mean_b, cmap="gray", vmin=0, vmax=1)
        im = row[2].imshow(z, cmap="RdBu_r", vmin=-z_limit, vmax=z_limit)
        fig.colorbar(im, ax=row[2], label="test − pool (standard errors)")
        row[0].set_title(f"{name}: pool mean ({len(pa)} images)", fontsize=9)
        row[1].set_title(f"{name}: test mean ({len(tb)} images)", fontsize=9)
        row[2].set_title(f"z per pixel; |z| > 4 on {100 * np.mean(np.abs(z) > 4):.0f} % of pixels", fontsize=9)
        for ax in row:
            ax.set(xlabel="x (px of the model input)", ylabel="y (px)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_shift(data: DataSplits, sides: dict[str, ClassSides], *, seeds: Sequence[int] = (0, 1), folds: int = 5,
                epochs: int = 15, device: str | torch.device | None = "auto") -> pd.DataFrame:
    """Per class: the probe's AUC (pool vs test), its control, and what single numbers explain."""
    _check_sides(data, sides)
    pool_x = torch.cat([data.train.x, data.val.x])
    pool_ids = list(data.train.ids) + list(data.val.ids)
    pool_pixels, test_pixels = pixel_scores(pool_x), pixel_scores(data.test.x)

    def probe(ia: Sequence[int], ib: Sequence[int], halves: bool = False) -> list[tuple[float, float, int]]:
        ga, gb = [patient_of(pool_ids[i]) for i in ia], [patient_of(data.test.ids[i]) for i in ib]
        if not halves:
            return [separability(pool_x[ia], data.test.x[ib], ga, gb, folds=folds, epochs=epochs, seed=s,
                                 device=device) for s in seeds]
        patients = sorted(set(ga))
        half = set(patients[i] for i in np.random.default_rng(0).permutation(len(patients))[: len(patients) // 2])
        h1 = [i for i, g in zip(ia, ga) if g in half]
        h2 = [i for i, g in zip(ia, ga) if g not in half]
        return [separability(pool_x[h1], pool_x[h2], [patient_of(pool_ids[i]) for i in h1],
                             [patient_of(pool_ids[i]) for i in h2], folds=folds, epochs=epochs, seed=s,
                             device=device) for s in seeds]

    rows = []
    for name, sd in sides.items():
        ia, ib, aa, ab, ma, mb = sd.pool, sd.test, sd.pool_aspect, sd.test_aspect, sd.matched_pool, sd.matched_test
        shift, control = probe(ia, ib), probe(ia, ib, halves=True)
        matched = probe([ia[k] for k in ma], [ib[j] for j in mb]) if len(ma) >= folds else [(np.nan, np.nan, 0)]
        rows.append({"class": name, "images per side": shift[0][2],
                     "AUC pool vs test": np.mean([r[0] for r in shift]),
                     "AUC per seed": " / ".join(f"{r[0]:.2f}" for r in shift),
                     "largest p": max(r[1] for r in shift),
                     "control AUC (pool halves)": np.mean([r[0] for r in control]),
                     "control per seed": " / ".join(f"{r[0]:.2f}" for r in control),
                     "aspect-only AUC": score_auc(aa, ab),
                     **{f"{k}-only AUC": score_auc(pool_pixels[k][ia], test_pixels[k][ib]) for k in pool_pixels},
                     "matched per side": len(ma),
                     "matched aspect-only AUC": score_auc([aa[k] for k in ma], [ab[j] for j in mb]),
                     "AUC aspect-matched": np.mean([r[0] for r in matched]),
                     "matched largest p": max(r[1] for r in matched)})
    return pd.DataFrame(rows).set_index("class")


SHIFT_RULE = ("a class's test images are shifted from the training pool when every seed's one-sided Mann-Whitney "
              "p < {alpha} and the mean AUC exceeds the control's by more than {margin}")


def shift_decisions(table: pd.DataFrame, alpha: float = 0.05, margin: float = 0.1) -> dict[str, tuple[Decision, Decision]]:
    """Per class: *shifted* by :data:`SHIFT_RULE`, and shifted beyond the aspect ratio?"""
    rule = SHIFT_RULE.format(alpha=alpha, margin=margin)

    def meets(auc: float, p: float, control: float) -> bool:
        return p < alpha and auc - control > margin

    out = {}
    for name, r in table.iterrows():
        control = r["control AUC (pool halves)"]
        shifted = meets(r["AUC pool vs test"], r["largest p"], control)
        first = Decision(f"{name}: shifted", r["AUC pool vs test"], "shifted" if shifted else "no shift shown", rule,
                         reference=control)
        if not shifted:
            beyond = "not tested"
        elif not np.isfinite(r["AUC aspect-matched"]):
            beyond = "too few matched"
        elif meets(r["AUC aspect-matched"], r["matched largest p"], control):
            beyond = "beyond the aspect ratio"
        else:
            beyond = "not shown beyond the aspect ratio"
        out[name] = (first, Decision(f"{name}: beyond the aspect ratio", r["AUC aspect-matched"], beyond,
                                     rule + ", on images matched on aspect ratio", reference=control))
    return out


def shift_summary(table: pd.DataFrame, alpha: float = 0.05, margin: float = 0.1) -> str:
    """One line per class, built from :func:`shift_decisions`."""
    lines = [f"Rule: a class's test images are **shifted** from the training pool when every seed's one-sided "
             f"Mann-Whitney p < {alpha} and the mean AUC exceeds the control's by more than {margin}; "
             f"**beyond the aspect ratio** when the probe on aspect-matched images meets the same rule."]
    for name, (shifted, beyond) in shift_decisions(table, alpha, margin).items():
        r = table.loc[name]
        line = (f"- {name}: AUC {r['AUC pool vs test']:.2f} (seeds {r['AUC per seed']}; control {shifted.reference:.2f}), "
                f"largest p {r['largest p']:.2g}: {'**shifted**' if shifted.outcome == 'shifted' else 'no shift shown'} "
                f"({r['images per side']} images per side).")
        if beyond.outcome == "too few matched":
            line += f" Too few images match on aspect ratio ({r['matched per side']} per side) to probe beyond it."
        elif beyond.outcome != "not tested":
            line += (f" Alone, the aspect ratio scores AUC {r['aspect-only AUC']:.2f}, brightness "
                     f"{r['brightness-only AUC']:.2f}, contrast {r['contrast-only AUC']:.2f}; matched on aspect "
                     f"({r['matched per side']} images per side, aspect-only AUC {r['matched aspect-only AUC']:.2f}) "
                     f"the probe scores {r['AUC aspect-matched']:.2f}, largest p {r['matched largest p']:.2g}: "
                     + ("**beyond the aspect ratio**." if beyond.outcome == "beyond the aspect ratio"
                        else "not shown beyond the aspect ratio."))
        lines.append(line)
    order = table["AUC pool vs test"].sort_values(ascending=False)
    if len(order) > 1:
        lines.append(f"- Furthest from the training pool: {order.index[0]} (AUC {order.iloc[0]:.2f}); "
                     f"next {order.index[1]} ({order.iloc[1]:.2f}).")
    return "\n".join(lines)


def shift_finding(table: pd.DataFrame, section: str, class_name: str = "normal") -> dict[str, str]:
    """The diagnosis as a findings line: the probe's AUC against its control, and the outcome."""
    shifted, beyond = shift_decisions(table)[class_name]
    r = table.loc[class_name]
    return finding(f"X-ray diagnosis: test {class_name} images vs the training pool's (domain classifier)",
                f"AUC {r['AUC pool vs test']:.2f}", section,
                interval=f"control {shifted.reference:.2f}; on aspect-matched images {r['AUC aspect-matched']:.2f}",
                outcome=f"{shifted.outcome}; {beyond.outcome}")
