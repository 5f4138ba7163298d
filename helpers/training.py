"""The training engine: ``fit`` and ``evaluate`` on tensors that live on the device."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from helpers.plumbing import PRECISIONS, pick_device, resolve_precision
from helpers.splits import DataSplits, Split

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
#: The textbook LeNet-5 recipe (SGD with momentum, lr 0.01, batches of 64): every baseline trains with it.
TEXTBOOK: dict[str, Any] = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)
SCHEDULES = ("none", "step", "onecycle", "cosine")



@dataclass(frozen=True)
class TrainConfig:
    """Everything that controls one training run (all plain values: loggable as hyperparameters)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD and RMSprop
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    schedule: str = "none"  # none | step | onecycle | cosine
    step_size: int = 5  # StepLR: epochs between decays
    gamma: float = 0.1  # StepLR: decay factor
    patience: int | None = None  # early stopping: epochs without improvement of `monitor`; None = off
    min_delta: float = 0.0  # improvement of `monitor` that resets patience
    monitor: str = "val_loss"  # what picks the best epoch and drives early stopping: val_loss or val_acc
    hflip: bool = False  # random horizontal flips
    shift: int = 0  # random translations of up to this many pixels
    rotate: float = 0.0  # random rotations of up to this many degrees (drawn per image)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    class_weights: bool = False  # weight the loss by inverse class frequency in the training split (balanced_class_weights)
    seed: int = 0
    max_updates: int | None = None  # stop after this many optimizer steps (fixed-update budgets)
    # auto | bf16 | fp32 (PRECISIONS), stored resolved. auto: bf16 where it is fast; `make benchmark --parity`
    # found no difference to fp32 for notebook 03's tuned and notebook 02's textbook recipes (3 seeds each)
    precision: str = "auto"
    channels_last: bool = True  # NHWC layout: 1.15-1.75x faster for every notebook shape here (`make benchmark`)
    diverge_factor: float = 10.0  # training loss above this × chance-level loss counts as divergence

    def __post_init__(self) -> None:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1 or int(self.batch_size) != self.batch_size:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.shift < 0:
            problems.append(f"shift must be >= 0, got {self.shift}")
        if not 0 <= self.rotate <= 45:
            problems.append(f"rotate must be in [0, 45] degrees, got {self.rotate}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.monitor not in ("val_loss", "val_acc"):
            problems.append(f"monitor must be 'val_loss' or 'val_acc', got {self.monitor!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))
        # resolved once, so settings, checkpoints, trial keys and caches record what was computed, not "auto"
        object.__setattr__(self, "precision", resolve_precision(self.precision))
        object.__setattr__(self, "batch_size", int(self.batch_size))  # frozen: a config is changed by replace()
        object.__setattr__(self, "epochs", int(self.epochs))


@dataclass
class History:
    """Per-epoch metrics of a run and how it ended."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf  #: validation loss of the best epoch
    stopped_early: bool = False
    diverged: str | None = None  #: why the run was stopped as diverging, or None
    updates: int = 0
    seconds: float = 0.0
    optimizer: dict[str, Any] = field(default_factory=dict)  #: what the optimizer object was built with


    def frame(self) -> pd.DataFrame:
        """One row per epoch: train/val loss and accuracy, learning rate, seconds."""
        return pd.DataFrame(self.epochs).set_index("epoch") if self.epochs else pd.DataFrame()

    @property
    def best(self) -> dict[str, float]:
        """The metrics of the best epoch (by the run's ``monitor``)."""
        return next((e for e in self.epochs if e["epoch"] == self.best_epoch), {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """What :func:`fit` returns: the model (best weights loaded) and its history."""

    model: nn.Module
    history: History
    config: TrainConfig
    device: str


class DeviceSplit:
    """A split on the device as normalised float tensors (built once per run)."""

    def __init__(self, split: Split, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        self.m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.x = self.normalise(split.x.to(device))
        self.y = split.y.to(device)
        self.weights = None if split.weights is None else split.weights.to(device)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels as the normalised float32 the model sees (training-split statistics)."""
        return (pixels.to(torch.float32) / 255.0 - self.m) / self.s

    def __len__(self) -> int:
        return len(self.y)


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named by ``config`` over ``model``'s parameters."""
    params = model.parameters()
    fused = {"fused": True} if device.type == "cuda" else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **fused)
    return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _make_schedule(opt: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """(scheduler, steps per update: 'batch' or 'epoch') for ``config.schedule``."""
    total = config.epochs * steps_per_epoch
    if config.max_updates:
        total = min(total, config.max_updates)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, config.step_size, config.gamma), "epoch"
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total + 1), "batch"
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), "batch"
    return None, "none"


def augment(x: torch.Tensor, hflip: bool, shift: int, gen: torch.Generator, rotate: float = 0.0) -> torch.Tensor:
    """Random flips, rotations (≤ ``rotate`` degrees) and translations, drawn per image, on the device."""
    n, _, h, w = x.shape
    if rotate > 0:
        angle = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * math.radians(rotate)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    if hflip:
        flip = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if shift > 0:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n, 1), device=x.device, generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n, 1), device=x.device, generator=gen)
        rows = (torch.arange(h, device=x.device).view(1, -1) + dy).view(n, 1, h, 1).expand(-1, x.shape[1], -1, w + 2 * shift)
        padded = padded.gather(2, rows)
        cols = (torch.arange(w, device=x.device).view(1, -1) + dx).view(n, 1, 1, w).expand(-1, x.shape[1], h, -1)
        x = padded.gather(3, cols)
    return x


class TrainHook:
    """What a wing adds to :func:`fit`'s batches: ``start``, ``batch``, ``extra_loss``; ``settings`` recorded."""

    def settings(self) -> dict[str, Any]:
        return {}

    def start(self, data: DataSplits, train: DeviceSplit, device: torch.device, gen: torch.Generator) -> None:
        self.train, self.gen = train, gen

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return xb

    def extra_loss(self, out: torch.Tensor) -> torch.Tensor | None:
        return None


class ViewSwap(TrainHook):
    """Swap each training image, with probability ``prob``, for one of its stored views (``Split.views``)."""

    def __init__(self, prob: float) -> None:
        if not 0 < prob <= 1:
            raise ValueError(f"view_prob must be in (0, 1], got {prob}")
        self.prob = prob

    def settings(self) -> dict[str, Any]:
        return {"view_prob": self.prob}

    def start(self, data: DataSplits, train: DeviceSplit, device: torch.device, gen: torch.Generator) -> None:
        if data.train.views is None:
            raise ValueError("ViewSwap needs views of the training images (Split.views: "
                             "helpers.webcam.robust.robust_data, helpers.xray.aspect.with_stretch_views)")
        super().start(data, train, device, gen)
        self.views = data.train.views.to(device)  # uint8, (K, N, C, H, W)

    def batch(self, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n = len(idx)
        use = torch.rand(n, device=xb.device, generator=self.gen) < self.prob
        k = torch.randint(0, self.views.shape[0], (n,), device=xb.device, generator=self.gen)
        return torch.where(use.view(-1, 1, 1, 1), self.train.normalise(self.views[k, idx]), xb)


def hook_settings(hooks: Sequence[TrainHook]) -> dict[str, Any]:
    """The settings of every hook of a run, as one flat dict (recorded beside its TrainConfig)."""
    return {k: v for h in hooks for k, v in h.settings().items()}


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast for a ``bf16`` run (matrix products and convolutions in bf16, losses in float32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


#: Images per evaluation batch: small enough to stay in the CPU's cache (``make benchmark ARGS=--levers``: 128
#: evaluates 1.2-1.4× faster than 2,048 on this 2-core CPU, for the tuned 28-px and the 64-px X-ray LeNet-5).
EVAL_BATCH = 128


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch: int = EVAL_BATCH) -> torch.Tensor:
    """The model's logits for ``x`` in batches, in float32 (every reported accuracy is computed this way)."""
    model.eval()
    outs = [model(x[i : i + batch]).float() for i in range(0, len(x), batch)]
    return torch.cat(outs) if outs else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
                      ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; with integer ``weights``, as if image i were repeated weights[i] times."""
    if weights is None:
        return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
    w = weights.to(torch.float32)
    loss = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
    return loss.item(), ((logits.argmax(1) == y).float() * w).sum().div(w.sum()).item()


@dataclass
class Optimisation:
    """What changes the weights in one run: optimizer, learning-rate schedule, seeded generator, loss weights."""

    optimizer: torch.optim.Optimizer
    scheduler: Any | None  #: a torch LR scheduler, or None for a constant learning rate
    per_batch: bool  #: the schedule steps after every batch (one-cycle, cosine), else after every epoch (step)
    gen: torch.Generator  #: batch order and augmentation, seeded by the run's seed
    class_weights: torch.Tensor | None = None  #: cross-entropy weight per class (``config.class_weights``)

    def settings(self, batch_size: int) -> dict[str, Any]:
        """What the optimizer object was really built with (recorded in the history)."""
        group = self.optimizer.param_groups[0]
        return {"class": type(self.optimizer).__name__,
                "lr": float(group.get("max_lr", group.get("initial_lr", group["lr"]))),  # one-cycle rewrites lr
                "weight_decay": float(group["weight_decay"]), "batch_size": batch_size,
                **({"momentum": float(group["momentum"])} if "momentum" in group else {})}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: full batches only (the remainder waits for the next permutation)."""
    return max(1, n_train // batch_size) if n_train > batch_size else 1


def make_optimisation(model: nn.Module, config: TrainConfig, n_train: int, device: torch.device,
                      gen: torch.Generator, class_weights: torch.Tensor | None = None) -> Optimisation:
    """The optimizer and schedule ``config`` names for ``model``, for ``n_train`` training images."""
    opt = make_optimizer(model, config, device)
    scheduler, unit = _make_schedule(opt, config, steps_per_epoch(n_train, config.batch_size))
    return Optimisation(opt, scheduler, unit == "batch", gen, class_weights)


def train_epoch(model: nn.Module, train: DeviceSplit, config: TrainConfig, optim: Optimisation, history: History,
                hooks: Sequence[TrainHook] = ()) -> tuple[float, float]:
    """One pass over a seeded permutation of ``train``; returns (mean loss, accuracy)."""
    model.train()
    n, bs = len(train), config.batch_size
    perm = torch.randperm(n, device=train.x.device, generator=optim.gen)
    loss_sum = torch.zeros((), device=train.x.device)  # summed on the device: no sync per batch
    correct = torch.zeros((), device=train.x.device, dtype=torch.long)
    seen = 0
    for step in range(steps_per_epoch(n, bs)):
        idx = perm[step * bs : (step + 1) * bs] if n > bs else perm
        xb, yb = train.x[idx], train.y[idx]
        loss, logits = train_step(model, xb, yb, idx, config, optim, hooks)
        history.updates += 1
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
        seen += len(yb)
        if step % 50 == 49 and not torch.isfinite(loss_sum):  # diverged: the epoch's loss says so, stop early
            break
        if config.max_updates and history.updates >= config.max_updates:
            break
    if optim.scheduler is not None and not optim.per_batch:
        optim.scheduler.step()
    return (loss_sum / max(seen, 1)).item(), correct.item() / max(seen, 1)


def train_step(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, config: TrainConfig,
               optim: Optimisation, hooks: Sequence[TrainHook] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch (hooks, augmentation, loss, backward, step); returns (loss, logits)."""
    n_in = len(yb)
    for hook in hooks:  # views swapped in, outliers appended after the n_in images
        xb = hook.batch(xb, idx)
    if config.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    if config.hflip or config.shift or config.rotate:
        xb = augment(xb, config.hflip, config.shift, optim.gen, config.rotate)
    with _autocast(xb.device, config.precision):
        out = model(xb).float()  # one pass over images and appended rows: BatchNorm sees both
        logits = out[:n_in]
        loss = F.cross_entropy(logits, yb, weight=optim.class_weights, label_smoothing=config.label_smoothing)
        for hook in hooks:
            extra = hook.extra_loss(out[n_in:]) if len(out) > n_in else None
            if extra is not None:
                loss = loss + extra
    optim.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optim.optimizer.step()
    if optim.scheduler is not None and optim.per_batch:
        optim.scheduler.step()
    return loss, logits


class BestEpoch:
    """The best epoch so far by ``config.monitor``, its weights, and whether early stopping's patience ran out."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model, self.config = model, config
        self.state = copy.deepcopy(model.state_dict())  # the untrained weights, until an epoch improves
        self.score, self.wait = math.inf, 0  # lower is better: val_loss, or -val_acc

    def update(self, record: dict[str, float], history: History) -> bool:
        """Keep the weights if ``record`` improves on the best; True when patience has run out."""
        score = record["val_loss"] if self.config.monitor == "val_loss" else -record["val_acc"]
        if score < self.score - self.config.min_delta:
            self.score, self.wait = score, 0
            history.best_val_loss, history.best_epoch = record["val_loss"], int(record["epoch"])
            self.state = copy.deepcopy(self.model.state_dict())
            return False
        self.wait += 1
        return self.config.patience is not None and self.wait >= self.config.patience


def fit(model: nn.Module, data: DataSplits, config: TrainConfig, device: str | torch.device | None = "auto",
        on_epoch: Callable[[dict[str, float]], bool | None] | None = None, tracker: Any | None = None,
        hooks: Sequence[TrainHook] = ()) -> FitResult:
    """Train ``model`` on ``data.train``, validate on ``data.val`` each epoch; never touches test."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    torch.manual_seed(config.seed)  # dropout masks
    gen = torch.Generator(device=device).manual_seed(config.seed)  # batch order and augmentation
    # the splits live on the device as normalised floats, moved once: no DataLoader, no copy inside the loop
    train, val = DeviceSplit(data.train, data.mean, data.std, device), DeviceSplit(data.val, data.mean, data.std, device)
    for hook in hooks:
        hook.start(data, train, device, gen)
    _place(model, config, device, train, val)
    weights = balanced_class_weights(data.train.y, data.num_classes).to(device) if config.class_weights else None
    optim = make_optimisation(model, config, len(train), device, gen, weights)
    history = History(optimizer=optim.settings(config.batch_size))
    best, started = BestEpoch(model, config), time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        t0, lr_now = time.perf_counter(), optim.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_epoch(model, train, config, optim, history, hooks)
        history.diverged = _divergence(train_loss, epoch, config, math.log(data.num_classes))
        if history.diverged:
            break
        val_loss, val_acc = loss_and_accuracy(predict_logits(model, val.x), val.y, val.weights)
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                  "val_acc": val_acc, "lr": lr_now, "seconds": time.perf_counter() - t0}
        history.epochs.append(record)
        if tracker is not None:
            tracker.log_epoch(record)
        stop_requested = bool(on_epoch(record)) if on_epoch is not None else False  # e.g. a losing ASHA rung
        if not math.isfinite(val_loss):
            history.diverged = f"validation loss not finite in epoch {epoch}"
            break
        history.stopped_early = best.update(record, history) or stop_requested
        if history.stopped_early or (config.max_updates and history.updates >= config.max_updates):
            break
    model.load_state_dict(best.state)  # the best epoch's weights, not the last epoch's
    history.seconds = time.perf_counter() - started
    return FitResult(model, history, config, str(device))


def _place(model: nn.Module, config: TrainConfig, device: torch.device, *splits: DeviceSplit) -> None:
    """Move ``model`` to ``device``, in channels-last layout (with the splits' images) when ``config`` asks."""
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
        for split in splits:
            split.x = split.x.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Loss weight ``n / (num_classes * n_c)`` per class: as if the training split were balanced."""
    counts = torch.bincount(torch.as_tensor(labels).long().cpu(), minlength=num_classes).float()
    if (counts == 0).any():
        missing = [c for c in range(num_classes) if counts[c] == 0]
        raise ValueError(f"class_weights needs every class in the training split; classes {missing} have no image")
    return counts.sum() / (num_classes * counts)


def _divergence(train_loss: float, epoch: int, config: TrainConfig, chance_loss: float) -> str | None:
    """Why a training loss counts as divergence (not finite, or far above chance level), else None."""
    if math.isfinite(train_loss) and train_loss <= config.diverge_factor * chance_loss:
        return None
    why = "not finite" if not math.isfinite(train_loss) else f"> {config.diverge_factor:g} x chance level {chance_loss:.3g}"
    return f"training loss {train_loss:.4g} in epoch {epoch} ({why})"


@dataclass
class Evaluation:
    """Accuracy, loss, per-class accuracy and confusion matrix on one split."""

    accuracy: float
    loss: float
    per_class: pd.Series  #: accuracy (recall) per class
    confusion: np.ndarray  #: rows = true class, columns = predicted class
    predictions: np.ndarray
    probabilities: np.ndarray
    classes: list[str]

    @property
    def balanced_accuracy(self) -> float:
        """Mean of the per-class recalls: what accuracy means when the classes are unbalanced."""
        return float(np.nanmean(self.per_class.to_numpy(dtype=float)))


def evaluate(
    model: nn.Module, data: DataSplits, split: str = "test", device: str | torch.device | None = "auto",
) -> Evaluation:
    """Accuracy, loss, per-class accuracy and confusion matrix of ``model`` on one split."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    model.to(device)
    ds = DeviceSplit(data.split(split), data.mean, data.std, device)
    logits = predict_logits(model, ds.x)
    loss, acc = loss_and_accuracy(logits, ds.y, ds.weights)
    pred = logits.argmax(1).cpu().numpy()
    true = ds.y.cpu().numpy()
    k = data.num_classes
    counts = None if ds.weights is None else ds.weights.cpu().numpy()  # a weighted split: each image counted so often
    confusion = np.bincount(true * k + pred, weights=counts, minlength=k * k).astype(np.int64).reshape(k, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / confusion.sum(axis=1)
    return Evaluation(
        accuracy=acc, loss=loss, per_class=pd.Series(per_class, index=data.classes, name="accuracy"),
        confusion=confusion, predictions=pred, probabilities=torch.softmax(logits, 1).cpu().numpy(),
        classes=list(data.classes),
    )
