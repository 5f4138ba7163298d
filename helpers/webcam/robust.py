"""The robust variant of the tuned LeNet-5: camera-shift views, outlier exposure, and what it gains."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from helpers.checkpoints import Checkpoint, CheckpointError
from helpers.paths import Outputs, shown
from helpers.runs import Run, RunResult, train_runs
from helpers.splits import DataSplits
from helpers.stats import Decision, beats, finding, paired_difference
from helpers.training import DeviceSplit, TrainConfig, TrainHook, ViewSwap
from helpers.webcam import art, shifts
from helpers.webcam.calibration import Calibration, calibration_path, expected_calibration_error, reliability
from helpers.webcam.inference import Predictor, to_model_pixels
from helpers.webcam.shifts import FAMILIES, SEVERITIES, frame_rng, shifted_frames, to_frame

SEEN = ("placement", "defocus", "lighting", "sensor_noise", "jpeg", "resample")  #: trained on
HELD_OUT = ("perspective", "motion", "colour_temperature")  #: never trained on: each is a cousin of a seen family
COPIES = 3  #: camera views stored per training image
TRAIN_SEED = 1000  #: seed of the training views and outliers; the evaluation sets use seed 0 (other images too)


def family_groups() -> dict[str, tuple[str, ...]]:
    """``{"seen": SEEN, "held out": HELD_OUT}``, for tables."""
    return {"seen": SEEN, "held out": HELD_OUT}


def camera_views(images: np.ndarray | torch.Tensor, image_size: int, in_channels: int, *,
                 families: Sequence[str] = SEEN, copies: int = COPIES, seed: int = TRAIN_SEED) -> torch.Tensor:
    """uint8 (copies, N, C, H, W): each image under a random camera shift, as the demo sees it."""
    images = np.asarray(images)
    out = np.empty((copies, len(images), in_channels, image_size, image_size), np.uint8)
    for k in range(copies):
        for i, image in enumerate(images):
            pick = frame_rng(seed, "views", k, i)
            fam = families[int(pick.integers(len(families)))]
            sev = SEVERITIES[int(pick.integers(len(SEVERITIES)))]
            frame = FAMILIES[fam].apply(to_frame(image), sev, frame_rng(seed + 1 + k, fam, sev, i))
            out[k, i] = to_model_pixels(frame, image_size, in_channels)
    return torch.from_numpy(out)


def outlier_images(n_per_kind: int, image_size: int, in_channels: int, *, sources: Mapping[str, np.ndarray],
                   kinds: Sequence[str] = shifts.TRAIN_KINDS, seed: int = TRAIN_SEED) -> dict[str, torch.Tensor]:
    """uint8 (n, C, H, W) images without a character per training kind, as the model sees them."""
    out = {}
    for kind in kinds:
        frames = shifts.ood_frames(kind, n_per_kind, seed=seed, images=sources.get(kind))
        out[kind] = torch.from_numpy(np.stack([to_model_pixels(f, image_size, in_channels) for f in frames]))
    return out


def robust_data(data: DataSplits, views: torch.Tensor, outliers: torch.Tensor) -> DataSplits:
    """``data`` with views of its training images (copies, N, C, H, W) and outlier images attached."""
    if views.shape[1] != len(data.train):
        raise ValueError(f"{views.shape[1]} views per copy for {len(data.train)} training images")
    return replace(data, train=replace(data.train, views=views), outliers=outliers)


@dataclass(frozen=True)
class Extras:
    """What the recipes may add, built once: camera views, print-like views (on white, on cards), outliers."""
    camera: torch.Tensor
    prints: torch.Tensor
    outliers: Mapping[str, torch.Tensor]
    card_prints: torch.Tensor | None = None  #: print-like views on cards of any colour (``Recipe.cards``)

    def for_recipe(self, data: DataSplits, recipe: Recipe) -> DataSplits:
        """``data`` with the views and outlier kinds ``recipe`` asks for."""
        prints = self.card_prints if recipe.cards else self.prints
        if prints is None or recipe.print_copies > len(prints):
            built = 0 if prints is None else len(prints)
            raise ValueError(f"the recipe asks for {recipe.print_copies} print views per image"
                             f"{' on cards' if recipe.cards else ''}, {built} were built")
        missing = [k for k in recipe.outlier_kinds if k not in self.outliers]
        if missing:
            raise ValueError(f"no outlier images of kind(s) {missing}; built: {list(self.outliers)}")
        views = torch.cat([self.camera, prints[:recipe.print_copies]])
        return robust_data(data, views, torch.cat([self.outliers[k] for k in recipe.outlier_kinds]))


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure's loss: cross-entropy of softmax(logits) with the uniform distribution."""
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


class OutlierExposure(TrainHook):
    """A hook appending ``share`` × batch images without a character, with ``weight`` × that loss."""
    def __init__(self, weight: float, share: float = 0.5) -> None:
        if weight <= 0 or not 0 < share <= 4:
            raise ValueError(f"outlier_weight must be > 0 and outlier_share in (0, 4], got {weight}, {share}")
        self.weight, self.share = weight, share

    def settings(self) -> dict[str, Any]:
        return {"outlier_weight": self.weight, "outlier_share": self.share}

    def start(self, data: DataSplits, train: DeviceSplit, device: torch.device, gen: torch.Generator) -> None:
        if data.outliers is None or not len(data.outliers):
            raise ValueError("OutlierExposure needs outlier images (DataSplits.outliers: robust_data)")
        super().start(data, train, device, gen)
        self.outliers = data.outliers.to(device)  # uint8, normalised per step

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pick = torch.randint(0, len(self.outliers), (max(1, round(self.share * len(idx))),), device=xb.device,
                             generator=self.gen)
        return torch.cat([xb, self.train.normalise(self.outliers[pick])])

    def extra_loss(self, out: torch.Tensor) -> torch.Tensor:
        return self.weight * uniform_cross_entropy(out)


@dataclass(frozen=True)
class Recipe:
    """How the tuned model is fine-tuned into its robust variant (fixed in advance, not tuned on test)."""
    epochs: int = 10
    lr_factor: float = 0.5  #: fine-tuning peak learning rate = the tuned one × this
    view_prob: float = 0.5
    outlier_weight: float = 0.5  #: as in Hendrycks et al. (2019)
    outlier_share: float = 0.5
    print_copies: int = 0  #: print-like views per image, beside the :data:`COPIES` camera views
    cards: bool = False  #: the print-like views put the character on cards of any colour, not only on white
    outlier_kinds: tuple[str, ...] = shifts.TRAIN_KINDS  #: the kinds of outlier images in each batch

    def train_config(self, tuned: Mapping[str, object], seed: int) -> TrainConfig:
        base = {k: v for k, v in tuned.items() if k in TrainConfig.__dataclass_fields__}
        return TrainConfig(**{**base, "epochs": self.epochs, "lr": float(base["lr"]) * self.lr_factor, "seed": seed,
                              "monitor": "val_acc", "patience": None})

    def hooks(self) -> tuple[TrainHook, ...]:
        """Camera views swapped in and outlier exposure, as :func:`helpers.training.fit`'s hooks."""
        return (ViewSwap(self.view_prob), OutlierExposure(self.outlier_weight, self.outlier_share))


PRINT_COPIES = 3  #: print-like views per training image (:mod:`helpers.webcam.printlike`), beside the camera views
_NO_SHAPES = ("shuffled tiles", "chest X-ray")  #: the training outliers without "random shapes"


def recipes(epochs: int, longer: int) -> dict[str, Recipe]:
    """Notebook 06's candidates A-E, one change at a time (outlier kinds, print views, epochs, cards)."""
    d = Recipe(epochs=longer, view_prob=0.75, print_copies=PRINT_COPIES, outlier_kinds=_NO_SHAPES)
    return {"A": Recipe(epochs=epochs, view_prob=0.75), "B": Recipe(epochs=epochs, view_prob=0.75, outlier_kinds=_NO_SHAPES),
            "C": replace(d, epochs=epochs), "D": d, "E": replace(d, cards=True)}


def fine_tune(data: DataSplits, tuned: Sequence[Checkpoint], recipe: Recipe, *, outputs: Outputs,
              device: str | torch.device = "auto", experiment: str = "06-robust",
              checkpoint_stem: str = "simpsons_robust") -> list[RunResult]:
    """One robust run per tuned checkpoint (its seed and weights), saved; test evaluated once."""
    runs, checkpoints = _fine_tune_runs(tuned, recipe, outputs, experiment, checkpoint_stem)
    return train_runs(data, runs, outputs, device, checkpoints)  # side by side on a CPU


def _fine_tune_runs(tuned: Sequence[Checkpoint], recipe: Recipe, outputs: Outputs, experiment: str,
                    checkpoint_stem: str) -> tuple[list[Run], list[Path]]:
    """:func:`fine_tune`'s runs, one per tuned checkpoint, and where each is saved."""
    runs, checkpoints = [], []
    for ck in tuned:
        seed = int(ck.train_config["seed"])
        config = recipe.train_config(ck.train_config, seed)
        runs.append(Run(f"robust-seed{seed}", experiment, config, ck.model_config, hooks=tuple(recipe.hooks()),
                        init_state=ck.model.state_dict()))  # fine-tuned from the tuned seed's weights
        checkpoints.append(outputs.models / f"{checkpoint_stem}-seed{seed}.pt")
    return runs, checkpoints


def group_accuracy(table: pd.DataFrame, families: Sequence[str]) -> float:
    """Mean accuracy (%) over every severity of ``families`` in a :func:`helpers.webcam.robust.shift_report` table."""
    rows = table[table.index.get_level_values("family").isin(list(families))]
    if rows.empty:
        raise ValueError(f"no rows for families {list(families)}")
    return float(rows["accuracy %"].mean())


def per_seed(tables: Mapping[str, Sequence[pd.DataFrame]], seeds: Sequence[int]) -> pd.DataFrame:
    """Clean, seen-family and held-out-family accuracy (%) per model and seed."""
    rows = []
    for model, per in tables.items():
        for seed, t in zip(seeds, per):
            rows.append({"model": model, "seed": seed, "clean %": float(t.loc[("clean", 0), "accuracy %"]),
                         "seen families %": group_accuracy(t, SEEN), "held-out families %": group_accuracy(t, HELD_OUT)})
    return pd.DataFrame(rows).set_index(["model", "seed"]).round(2)


GAP_RULE = "the variant closes ≥ 50 % of the base's clean-to-shifted gap on the seen families (means over seeds)"
CLEAN_RULE = "the variant's clean test accuracy is at most 1 point below the base's (mean paired difference ≥ −1)"
OOD_TARGET = 90.0  #: % of frames without a character the demo's model should answer "not sure" on
OOD_RULE = ("'not sure' on ≥ {target:g} % of frames without a character (mean over seeds), with a threshold that keeps "
            "≥ 90 % of correct validation predictions confident")


def shift_targets(seeds_table: pd.DataFrame, base: str = "tuned", variant: str = "robust") -> list[Decision]:
    """The three camera-shift targets of ``variant`` against ``base``, each by its rule."""
    b, v = seeds_table.loc[base], seeds_table.loc[variant]
    gap = b["clean %"].mean() - b["seen families %"].mean()
    closed = 100 * (v["seen families %"].mean() - b["seen families %"].mean()) / gap if gap > 0 else float("nan")
    clean = paired_difference(list(b["clean %"]), list(v["clean %"]))
    return [
        Decision("seen families: share of the clean-to-shifted gap closed", closed,
                 "met" if closed >= 50 else "missed", GAP_RULE, reference=50.0),
        beats("held-out families: accuracy gain", list(b["held-out families %"]), list(v["held-out families %"]),
              reference=0.0),
        Decision("clean test accuracy: variant − base", clean.mean, "met" if clean.mean >= -1 else "missed",
                 CLEAN_RULE, clean.low, clean.high, reference=-1.0, unit="points"),
    ]


def value_text(d: Decision) -> str:
    """A target's value as the table and the findings show it: a share, or a difference in points."""
    if d.unit == "%":
        return f"{d.value:.1f} %" if np.isfinite(d.value) else "no gap (the base is no worse on the seen families)"
    return f"{d.value:+.2f} points"


def compare(seeds_table: pd.DataFrame, base: str = "tuned", variant: str = "robust") -> pd.DataFrame:
    """:func:`shift_targets` as a table: each target with its value, its rule and whether it is met."""
    return pd.DataFrame([{"target": d.name, "value": ", ".join(filter(None, [value_text(d), d.interval_text()]))
                          + (" (one seed: no interval)" if d.unit == "points" and not d.interval_text() else ""),
                          "rule": d.rule, "met": d.outcome == "met"}
                         for d in shift_targets(seeds_table, base, variant)]).set_index("target")


def ood_target(ood: pd.DataFrame, calib: pd.DataFrame, model: str = "robust", target: float = OOD_TARGET) -> Decision:
    """Does ``model`` say "not sure" on ≥ ``target`` % of frames without a character? (:data:`OOD_RULE`)"""
    rate = float(ood["all not sure %"].groupby(level="model").mean()[model])
    kept = float(calib["val correct kept confident %"].groupby(level="model").min()[model])
    return Decision(f"{model}: 'not sure' on frames without a character", rate,
                    "met" if rate >= target and kept >= 90 else "missed", OOD_RULE.format(target=target), reference=target)


def tuned_checkpoints(models: Path, seeds: Sequence[int], stem: str = "simpsons_tuned") -> list[Path]:
    """The tuned model's checkpoint of every seed (written by notebook 03); a clear error if one is missing."""
    found = [Path(models) / f"{stem}-seed{s}.pt" for s in seeds]
    missing = [p.name for p in found if not p.is_file()]
    if missing:
        raise CheckpointError(f"missing {', '.join(missing)} in {shown(models)}: notebook 06 compares the tuned model "
                              f"of notebook 03 with its robust variant seed by seed; run notebook 03 first "
                              f"(`make report` runs them in order)")
    return found


def calibrated(paths: Sequence[Path], val_set: ShiftSet, keep: float = 0.90) -> list[Predictor]:
    """A predictor per checkpoint, calibrated on ``val_set``'s clean frames, saved beside it."""
    out = []
    for path in paths:
        predictor = Predictor.from_checkpoint(path, calibrated=False)
        predictor.calibration = calibrate(predictor, val_set, keep)
        predictor.calibration.save(calibration_path(path))
        out.append(predictor)
    return out


def calibration_table(models: Mapping[str, Sequence[Predictor]], val_set: ShiftSet) -> pd.DataFrame:
    """Per model and seed: temperature, threshold, and the share of correct validation predictions kept confident."""
    rows = []
    for name, predictors in models.items():
        for p in predictors:
            probs = p.probabilities(val_set.pixels[("clean", 0)])
            correct = probs.argmax(1) == val_set.labels
            rows.append({"model": name, "seed": int(p.checkpoint.train_config["seed"]),
                         "temperature": round(p.calibration.temperature, 3),
                         "not-sure threshold %": round(100 * p.calibration.threshold, 1),
                         "val correct kept confident %": round(100 * p.calibration.sure(probs[correct]).mean(), 2),
                         "val not sure %": round(100 * (~p.calibration.sure(probs)).mean(), 2)})
    return pd.DataFrame(rows).set_index(["model", "seed"])


def reports(models: Mapping[str, Sequence[Predictor]], shift_set: ShiftSet) -> dict[str, list[pd.DataFrame]]:
    """:func:`helpers.webcam.robust.shift_report` tables of every model and seed on one shift set."""
    return {name: [shift_report(p, shift_set)[0] for p in predictors] for name, predictors in models.items()}


def mean_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The element-wise mean of several seeds' shift-report tables."""
    return sum(tables[1:], tables[0].copy()) / len(tables)


def choose_for_demo(val_reports: Mapping[str, Sequence[pd.DataFrame]], models: Mapping[str, Sequence[Predictor]],
                    val_set: ShiftSet, art_dev: art.ArtStudy | None = None) -> tuple[Path, str]:
    """The demo's model: the variant best on validation over all shifts; of its seeds, the one
    :func:`helpers.webcam.art.seed_on_dev` picks on the art dev half (else the best on clean validation)."""
    score = {name: float(np.mean([group_accuracy(t, FAMILIES) for t in tables])) for name, tables in val_reports.items()}
    best = max(score, key=score.get)
    others = ", ".join(f"{n} {v:.2f} %" for n, v in score.items() if n != best)
    variant = (f"{best} model: mean accuracy over all {len(FAMILIES) * len(SEVERITIES)} camera shifts on "
               f"{val_set.name} {score[best]:.2f} % (vs {others})")
    if art_dev is not None:
        path, seed_why = art.seed_on_dev(art_dev, [p.checkpoint.path for p in models[best]])
        return path, f"{variant}; of its seeds, {path.stem}, {art.SEED_RULE} ({seed_why})"
    seed_scores = [float(t.loc[("clean", 0), "accuracy %"]) for t in val_reports[best]]
    k = int(np.argmax(seed_scores))
    return models[best][k].checkpoint.path, (
        f"{variant}; seed {int(models[best][k].checkpoint.train_config['seed'])} has the best clean validation "
        f"accuracy ({seed_scores[k]:.2f} %)")


def ood_table(models: Mapping[str, Sequence[Predictor]], frames: Mapping[str, Sequence[np.ndarray]]) -> pd.DataFrame:
    """Per model and seed: the "not sure" rate (%) on each kind of frame without a character, and on all."""
    rows = []
    for name, predictors in models.items():
        for p in predictors:
            rep = ood_report(p, frames)
            rows.append({"model": name, "seed": int(p.checkpoint.train_config["seed"]),
                         **{f"{kind} not sure %": rep.loc[kind, "not sure %"] for kind in rep.index}})
    return pd.DataFrame(rows).set_index(["model", "seed"])


def camera_conclusions(targets: pd.DataFrame, ood: pd.DataFrame, calib: pd.DataFrame, seeds: pd.DataFrame,
                why: str, ood_target_pct: float = OOD_TARGET) -> str:
    """The notebook's conclusions, built from the decisions (:func:`shift_targets`, :func:`ood_target`)."""
    by_model = seeds.groupby(level="model").mean()
    kept = calib["val correct kept confident %"].groupby(level="model").min()
    lines = [f"- **Targets** ({len(seeds.loc['robust'])} seeds, test split): "
             + "; ".join(f"{t}: {r['value']} ({'met' if r['met'] else 'not met'}, rule {r['rule']})"
                         for t, r in targets.iterrows()) + "."]
    lines.append(f"- **Accuracy** (means over seeds): tuned {by_model.loc['tuned', 'clean %']:.2f} % clean, "
                 f"{by_model.loc['tuned', 'seen families %']:.2f} % on seen and {by_model.loc['tuned', 'held-out families %']:.2f} % "
                 f"on held-out shifts; robust {by_model.loc['robust', 'clean %']:.2f} %, "
                 f"{by_model.loc['robust', 'seen families %']:.2f} % and {by_model.loc['robust', 'held-out families %']:.2f} %.")
    decided = [ood_target(ood, calib, m, ood_target_pct) for m in kept.index]
    lines.append("- **\"Not sure\" on frames without a character** (mean over seeds, threshold keeping ≥ 90 % of correct "
                 "validation predictions confident; lowest share kept: " + ", ".join(f"{m} {kept[m]:.1f} %" for m in kept.index)
                 + "): " + ", ".join(f"{m} {d.value:.1f} % ({'meets' if d.outcome == 'met' else 'misses'} the "
                                     f"{ood_target_pct:.0f} % target)" for m, d in zip(kept.index, decided)) + ".")
    lines.append(f"- **The demo uses** the {why}.")
    return "\n".join(lines)


def demo_headlines(seeds_table: pd.DataFrame, ood: pd.DataFrame, device: str, spent: str) -> list[dict[str, str]]:
    """Tuned and robust rows for the summary: clean, seen and held-out accuracy, "not sure" rate."""
    rows = []
    for model in seeds_table.index.get_level_values("model").unique():
        t = seeds_table.loc[model]
        sd = lambda c: f" ± {t[c].std(ddof=1):.2f}" if len(t) > 1 else ""  # noqa: E731
        rows.append({"data set": "Simpsons-MNIST (rgb) through a camera", "model": f"{model} LeNet-5",
                     "test acc %": f"{t['clean %'].mean():.2f}{sd('clean %')} clean",
                     "test interval": f"{len(t)} seeds",
                     "spent": spent if model == "robust" else "notebook 03",
                     "note": f"seen shifts {t['seen families %'].mean():.2f} %, held-out shifts "
                             f"{t['held-out families %'].mean():.2f} %, 'not sure' on frames without a character "
                             f"{ood.loc[model, 'all not sure %'].mean():.1f} % ({device})"})
    return rows


def shift_recall_table(models: Mapping[str, Sequence[Predictor]], shift_set: ShiftSet, classes: Sequence[str]) -> pd.DataFrame:
    """Per class: recall (%) of each model on the clean frames and on all shifted frames pooled, mean over seeds."""
    cols = {}
    labels = shift_set.labels
    for name, predictors in models.items():
        for kind, keys in (("clean", [("clean", 0)]), ("all shifts", [k for k in shift_set.pixels if k[0] != "clean"])):
            per_seed = []
            for p in predictors:
                hits = np.concatenate([p.logits_pixels(shift_set.pixels[k]).argmax(1) == labels for k in keys])
                y = np.tile(labels, len(keys))
                per_seed.append([100 * hits[y == c].mean() for c in range(len(classes))])
            cols[(name, kind)] = np.mean(per_seed, axis=0)
    return pd.DataFrame(cols, index=pd.Index(list(classes), name="class")).round(1)


RECIPE_RULE = ("among the recipes whose clean validation accuracy is at most 1 point below the tuned model's, which "
               "close at least half of its clean-to-shifted gap on the seen families of the validation shift set and "
               "which name a wrong character confidently on at most 5 % of the art set's dev half, plain and on "
               "coloured cards alike, the highest share right and sure on that half (padded framing; mean of plain and "
               "on cards); without the art set, the largest share of the gap closed")


def choose_recipe(data: DataSplits, extras: Extras, first: Checkpoint, recipes: Mapping[str, Recipe], val_set: ShiftSet,
                  *, art_dev: Sequence[Any] | None = None, outputs: Outputs, device: str | torch.device = "auto",
                  stem: str = "simpsons_robust") -> tuple[str, pd.DataFrame, RunResult]:
    """Fine-tune the first seed with each recipe; choose by :data:`RECIPE_RULE` (validation, art dev)."""
    tuned = shift_report(Predictor(first), val_set)[0]
    t_clean, t_seen = float(tuned.loc[("clean", 0), "accuracy %"]), group_accuracy(tuned, SEEN)
    planned = [_fine_tune_runs([first], recipe, outputs, f"06-robust-{name}", f"{stem}-{name}")
               for name, recipe in recipes.items()]  # per recipe: ([its run], [its checkpoint])
    trained = train_runs([extras.for_recipe(data, recipe) for recipe in recipes.values()],  # side by side on a CPU
                         [runs[0] for runs, _ in planned], outputs, device, [saves[0] for _, saves in planned])
    rows, runs = [], {}
    for name, run in zip(recipes, trained, strict=True):
        predictor = Predictor.from_checkpoint(run.checkpoint, calibrated=False)
        table = shift_report(predictor, val_set)[0]
        clean, seen = float(table.loc[("clean", 0), "accuracy %"]), group_accuracy(table, SEEN)
        runs[name] = run
        row = {"recipe": name, "epochs run": len(run.history.epochs), "val clean %": round(clean, 2), "val seen families %": round(seen, 2),
               "val gap closed %": round(100 * (seen - t_seen) / (t_clean - t_seen), 1),
               "clean within 1 point": clean >= t_clean - 1}
        if art_dev:
            predictor.calibration = calibrate(predictor, val_set)
            rates = art.art_table(art.score_art(predictor, art_dev, "pad"), by=("on",))
            for key, r in rates.iterrows():
                on = key[0] if isinstance(key, tuple) else key  # art_table's index holds tuples
                prefix = "art dev" if on == "plain" else "art dev on cards"
                row.update({f"{prefix} {k}": r[k] for k in ("top-1 %", "right and sure %", "wrong and sure %")})
            row["art dev right and sure, mean %"] = float(rates["right and sure %"].mean())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("recipe")
    if art_dev:
        wrong = [c for c in table if c.endswith("wrong and sure %")]
        eligible = table[table["clean within 1 point"] & (table["val gap closed %"] >= 50)
                         & (table[wrong] <= 5).all(axis=1)]
        score = "art dev right and sure, mean %"
    else:
        eligible, score = table[table["clean within 1 point"]], "val gap closed %"
    chosen = str((eligible if len(eligible) else table)[score].idxmax())
    table["chosen"] = table.index == chosen
    return chosen, table, runs[chosen]


@dataclass(frozen=True)
class ShiftSet:
    """A split under every camera shift, as model pixels (uint8 N×C×H×W per (family, severity))."""
    name: str  #: e.g. "test split, 2,000 images"
    labels: np.ndarray
    pixels: dict[tuple[str, int], np.ndarray]
    seed: int

    @classmethod
    def build(cls, name: str, images: np.ndarray, labels: np.ndarray, image_size: int, in_channels: int, *,
              seed: int = 0, families: Sequence[str] | None = None) -> ShiftSet:
        """Frames of every family × severity (:func:`helpers.webcam.shifts.shifted_frames`, ``seed``), as the model sees them."""
        images = np.asarray(images)
        to_pixels = lambda frames: np.stack([to_model_pixels(f, image_size, in_channels) for f in frames])  # noqa: E731
        pixels = {("clean", 0): to_pixels([to_frame(x) for x in images])}
        for fam in families or FAMILIES:
            for sev in SEVERITIES:
                pixels[(fam, sev)] = to_pixels(shifted_frames(images, fam, sev, seed=seed))
        return cls(name, np.asarray(labels), pixels, seed)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(f for f, _ in self.pixels if f != "clean"))

    def __len__(self) -> int:
        return len(self.labels)


def _row(probs: np.ndarray, labels: np.ndarray, predictor: Any) -> dict[str, float]:
    sure = predictor.sure(probs)
    correct = probs.argmax(1) == labels
    return {"images": len(labels), "accuracy %": 100 * correct.mean(),
            "ECE %": 100 * expected_calibration_error(probs, labels),
            "mean confidence %": 100 * probs.max(1).mean(), "not sure %": 100 * (~sure).mean(),
            "wrong and sure %": 100 * (~correct & sure).mean()}


def shift_report(predictor: Any, shift_set: ShiftSet) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per (family, severity) plus clean, and reliability tables of clean and all shifts."""
    labels = shift_set.labels
    rows, pooled_p = [], []
    curves: dict[str, pd.DataFrame] = {}
    for (fam, sev), pixels in shift_set.pixels.items():
        p = predictor.probabilities(pixels)
        rows.append({"family": fam, "severity": sev, **_row(p, labels, predictor)})
        if fam == "clean":
            curves["clean"] = reliability(p, labels)
        else:
            pooled_p.append(p)
    curves["all shifts"] = reliability(np.concatenate(pooled_p), np.tile(labels, len(pooled_p)))
    return pd.DataFrame(rows).set_index(["family", "severity"]), curves


def by_family(table: pd.DataFrame, groups: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Mean over severities per family (and the clean row), optionally with a ``group`` column."""
    out = table.groupby(level="family", sort=False).mean(numeric_only=True).drop(columns="images")
    if groups:
        out.insert(0, "group", [next((g for g, fams in groups.items() if f in fams), "") for f in out.index])
    return out.round(2)


def resample_flips(predictor: Any, shift_set: ShiftSet) -> float:
    """Share (%) of images whose top-1 class differs between the area, bilinear and nearest round trips."""
    tops = [predictor.logits_pixels(shift_set.pixels[("resample", s)]).argmax(1) for s in SEVERITIES]
    return float(100 * np.mean((tops[0] != tops[1]) | (tops[0] != tops[2])))


def ood_report(predictor: Any, frames: Mapping[str, Sequence[np.ndarray]]) -> pd.DataFrame:
    """Per kind of frame without a character: how many, and the share answered "not sure"."""
    rows = []
    for kind, fs in frames.items():
        p = predictor.probabilities(predictor.pixels(fs))
        sure = predictor.sure(p)
        rows.append({"kind": kind, "frames": len(fs), "not sure %": 100 * (~sure).mean(),
                     "mean confidence %": 100 * p.max(1).mean()})
    out = pd.DataFrame(rows).set_index("kind")
    total = sum(len(fs) for fs in frames.values())
    out.loc["all"] = [total, float((out["not sure %"] * out["frames"]).sum() / total),
                      float((out["mean confidence %"] * out["frames"]).sum() / total)]
    out["frames"] = out["frames"].astype(int)
    return out.round(2)


def calibrate(predictor: Any, shift_set: ShiftSet, keep: float = 0.90) -> Calibration:
    """Temperature and "not sure" threshold fitted on the clean frames of ``shift_set`` (the validation split)."""
    return Calibration.fit(predictor.logits_pixels(shift_set.pixels[("clean", 0)]), shift_set.labels,
                           shift_set.name, keep)


def latency_ms(predictor: Any, frames: Sequence[np.ndarray], repeats: int = 1) -> float:
    """Median milliseconds to predict one frame at a time (preprocessing included), as the live loop does."""
    times = []
    for _ in range(repeats):
        for f in frames:
            start = time.perf_counter()
            predictor.predict(f)
            times.append(time.perf_counter() - start)
    return float(1000 * np.median(times))


def agreement(answers: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Per front end: frames with the same top-1 and "not sure" as the first (``answers``)."""
    (ref_name, (ref_top, ref_sure)), *_ = answers.items()
    rows = [{"front end": name, "frames": len(top), f"same top-1 as {ref_name}": int((np.asarray(top) == ref_top).sum()),
             f"same 'not sure' as {ref_name}": int((np.asarray(sure) == ref_sure).sum())}
            for name, (top, sure) in answers.items()]
    return pd.DataFrame(rows).set_index("front end")


def findings(seeds_table: pd.DataFrame, ood: pd.DataFrame, calib: pd.DataFrame, section: str) -> list[dict[str, str]]:
    """The robust model's four targets as lines of the report's findings page."""
    return [finding(f"Robust webcam model: {d.name}", value_text(d), section, target=d, outcome=d.outcome,
                    interval=d.interval_text() or ("one seed" if d.unit == "points" else ""))
            for d in shift_targets(seeds_table) + [ood_target(ood, calib)]]


def latency_table(predictors: Mapping[str, Any], frames: Sequence[np.ndarray], repeats: int = 3) -> pd.DataFrame:
    """Median ms per frame of each predictor on this CPU, and the unmeasured Jetson Nano row."""
    rows = [{"path": name, "device": "this machine's CPU", "median ms per frame": f"{latency_ms(p, frames, repeats):.2f}"}
            for name, p in predictors.items()]
    rows.append({"path": "ONNX via OpenCV dnn (scripts/webcam_onnx.py)", "device": "Jetson Nano",
                 "median ms per frame": "unmeasured (no Jetson here)"})
    return pd.DataFrame(rows).set_index("path")
