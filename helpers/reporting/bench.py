"""Benchmark: epoch time of this project's engine vs the typical notebook pipeline."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from helpers import paths
from helpers.data import load_dataset, load_fashion_mnist
from helpers.models import NarrowBatchNorm2d, build_model
from helpers.paths import Outputs
from helpers.plumbing import describe, fast_bf16, pick_device
from helpers.reporting.runner import ALLOCATOR_ENV
from helpers.runs import Run, train_and_evaluate
from helpers.splits import Split
from helpers.stats import paired_difference
from helpers.training import TEXTBOOK, TrainConfig, augment, fit, predict_logits
from helpers.xray.weighting import ZoomViews

TARGETS = {"cpu": 1.5, "cuda": 20.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def typical_epoch(device: torch.device, batch_size: int, max_batches: int | None = None) -> tuple[float, int]:
    """Seconds and images for one epoch of the torchvision/DataLoader pipeline."""
    load_fashion_mnist()  # makes sure the .gz files are in data/ (torchvision then only extracts them)
    stats = load_fashion_mnist()
    ds = datasets.FashionMNIST(
        root=str(paths.data_dir()), train=True, download=True,
        transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(stats.mean, stats.std)]),
    )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    model = build_model(seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    images = 0
    _sync(device)
    start = time.perf_counter()
    for k, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        images += len(y)
        if max_batches is not None and k + 1 >= max_batches:
            break
    _sync(device)
    return time.perf_counter() - start, images


#: The widest LeNet-5 of the tuning notebooks' narrowed space (``tuning.SIMPSONS_SPACE``).
WIDE_LENET = {"conv_channels": (32, 64), "dense_units": (384, 192), "batchnorm": True}


def engine_epoch(device: torch.device, batch_size: int, max_batches: int | None = None,
                 channels_last: bool = False, model_options: dict | None = None) -> tuple[float, int]:
    """Seconds and images for one epoch of :func:`helpers.training.fit` of LeNet-5 (validation included)."""
    data = load_fashion_mnist()
    full_train = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]),
                       data.train.ids + data.val.ids)
    n = len(full_train) if max_batches is None else max_batches * batch_size
    data = replace(data, train=full_train.take(range(n)), val=data.test.take(range(1000)))
    cfg = TrainConfig(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=batch_size, epochs=1,
                      channels_last=channels_last)
    _sync(device)
    start = time.perf_counter()
    fit(build_model(seed=0, **(model_options or {})), data, cfg, device=device)
    _sync(device)
    return time.perf_counter() - start, n


def measure(device: torch.device, batch_size: int = 64, max_batches: int | None = None) -> dict[str, float]:
    """Warm both pipelines up, time one epoch each (or ``max_batches`` batches); returns the figures."""
    typical_epoch(device, batch_size, max_batches=20)  # warm-up: kernels, caches, torchvision extraction
    engine_epoch(device, batch_size, max_batches=20)
    t_typ, n_typ = typical_epoch(device, batch_size, max_batches)
    t_eng, n_eng = engine_epoch(device, batch_size, max_batches)
    return {"typical_s": t_typ, "typical_images": n_typ, "engine_s": t_eng, "engine_images": n_eng,
            "speedup": (t_typ / n_typ) / (t_eng / n_eng)}


def channels_last_rows(device: torch.device, batch_sizes: tuple[int, ...] = (32, 64, 256),
                       max_batches: int | None = None, adopt_at: float = 1.1,
                       model_options: dict | None = None) -> list[dict[str, float]]:
    """Engine epoch time with the default (NCHW) and the channels_last (NHWC) layout per batch size."""
    rows = []
    for bs in batch_sizes:
        engine_epoch(device, bs, max_batches=10, channels_last=True, model_options=model_options)  # warm-up
        t_nchw, n = engine_epoch(device, bs, max_batches, model_options=model_options)
        t_nhwc, _ = engine_epoch(device, bs, max_batches, channels_last=True, model_options=model_options)
        rows.append({"batch": bs, "images": n, "nchw_s": t_nchw, "nhwc_s": t_nhwc, "ratio": t_nchw / t_nhwc,
                     "adopt": t_nchw / t_nhwc >= adopt_at})
    return rows


#: The model shapes the notebooks train most, with their batch sizes: (label, model fields, input channels, image
#: size, batch). The tuned ones are the winners of the committed searches (notebooks 03 and 04), which their
#: retraining, notebook 05's checks and notebook 06's fine-tunes train again.
SHAPES = (("textbook LeNet-5, 28 px gray (Fashion-MNIST)", {}, 1, 28, 64),
          ("textbook LeNet-5, 28 px RGB (Simpsons-MNIST)", {}, 3, 28, 64),
          ("tuned 12/64, 320/96, 28 px RGB (Simpsons-MNIST)", {"conv_channels": (12, 64), "dense_units": (320, 96),
                                                               "batchnorm": True}, 3, 28, 128),
          ("tuned 32/64, 160/160, 28 px gray (Fashion-MNIST)", {"conv_channels": (32, 64), "dense_units": (160, 160),
                                                                "batchnorm": True}, 1, 28, 64),
          ("tuned 12/64, 112/96, 64 px gray (chest X-rays)", {"conv_channels": (12, 64), "dense_units": (112, 96),
                                                              "batchnorm": True}, 1, 64, 32))
TUNED, XRAY = SHAPES[2], SHAPES[4]  #: the Simpsons-MNIST and X-ray winners: most of the training time


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step (forward and backward) of ``model`` on the batch ``x``, as PyTorch counts them."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def _training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, **adamw: Any):
    """One training step on the batch ``x`` as the engine takes it (autocast, AdamW), as a function to call."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **adamw)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with record_function("optimizer step"):  # a label for :func:`step_breakdown`'s profile
            opt.step()

    return step


def nhwc_shape(shape: tuple, device: torch.device | str = "cpu"
               ) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A :data:`SHAPES` entry as the engine trains it: its model and a random batch, both channels_last."""
    _, options, channels, size, batch = shape
    model = build_model(seed=0, in_channels=channels, image_size=size, **options).to(device)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return model.to(memory_format=torch.channels_last), x, torch.randint(0, 10, (batch,), device=device)


def step_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, steps: int = 30,
              **adamw: Any) -> float:
    """Training steps per second (AdamW with ``adamw`` options, the engine's autocast), after a warm-up."""
    step = _training_step(model, x, y, precision, **adamw)
    for _ in range(5):
        step()
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(x.device)
    return steps / (time.perf_counter() - start)


#: The operators that do a LeNet-5's arithmetic (its FLOPs): convolutions and matrix products, forward and backward.
COMPUTE_OPS = ("convolution", "conv2d", "addmm", "aten::mm", "aten::bmm", "linear")


def step_breakdown(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, steps: int = 10
                   ) -> dict[str, float]:
    """Where one training step's CPU time goes (% of it): convolutions and matrix products, the optimizer, the rest."""
    step = _training_step(model, x, y, precision)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    optimizer = sum(e.cpu_time_total for e in events if e.key == "optimizer step")
    compute = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in COMPUTE_OPS))
    return {"convolutions and matrix products": 100 * compute / total, "optimizer (AdamW)": 100 * optimizer / total,
            "the rest (BatchNorm, pooling, ReLU, casts, loss)": 100 * (total - compute - optimizer) / total}


def cpu_peak() -> dict[str, float]:
    """This CPU's theoretical peaks (GFLOP/s): cores × clock × FLOP per cycle (AVX-512 FMA; AMX for bf16)."""
    cores, ghz = os.cpu_count() or 1, _clock_ghz()
    return {"fp32": cores * ghz * 64,  # two AVX-512 FMA units: 2 × 16 lanes × 2 FLOP a cycle
            "bf16": cores * ghz * (1024 if fast_bf16("cpu") else 64)}  # an AMX tile unit: 1,024 bf16 FLOP a cycle


def _clock_ghz() -> float:
    try:  # the nominal clock of /proc/cpuinfo (Linux); turbo is not counted
        text = Path("/proc/cpuinfo").read_text()
        return float(next(line.split(":")[1] for line in text.splitlines() if line.startswith("cpu MHz"))) / 1000
    except (OSError, StopIteration, ValueError):
        return float("nan")


def shape_rows(device: torch.device, steps: int = 30) -> list[dict[str, Any]]:
    """Per notebook model shape, precision and layout: images/s, GFLOP/s and the share of the CPU's peak."""
    peak, rows = cpu_peak() if device.type == "cpu" else {}, []
    for label, options, channels, size, batch in SHAPES:
        x = torch.randn(batch, channels, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        flops = step_flops(build_model(seed=0, in_channels=channels, image_size=size, **options).to(device), x, y)
        for precision in ("fp32", "bf16"):
            for layout in ("NCHW", "NHWC"):
                model = build_model(seed=0, in_channels=channels, image_size=size, **options).to(device)
                xs = x.contiguous(memory_format=torch.channels_last) if layout == "NHWC" else x
                if layout == "NHWC":
                    model = model.to(memory_format=torch.channels_last)
                rate = step_rate(model, xs, y, precision, steps)
                gflops = rate * flops / 1e9
                rows.append({"shape": label, "batch": batch, "precision": precision, "layout": layout,
                             "MFLOP/image": flops / batch / 1e6, "images/s": rate * batch, "GFLOP/s": gflops,
                             "% of peak": 100 * gflops / peak[precision] if peak else float("nan")})
    return rows


def _best_rate(work: Any, items: int, rounds: int = 3) -> float:
    """Items per second of ``work()``, the best of ``rounds`` timed calls after one warm-up."""
    work()
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = max(best, items / (time.perf_counter() - start))
    return best


def _side_by_side_worker(shape: tuple, steps: int, barrier: Any, threads: int = 1) -> float:
    """One of :func:`side_by_side_rates`' runs: on ``threads`` threads, warmed up, then timed from a shared start."""
    torch.set_num_threads(threads)
    model, x, y = nhwc_shape(shape)
    step_rate(model, x, y, "bf16", 2)
    barrier.wait()
    return step_rate(model, x, y, "bf16", steps) * len(y)


def side_by_side_rates(shape: tuple, steps: int = 30, runs: int = 2, threads: tuple[int, ...] | None = None
                       ) -> list[float]:
    """Images/s of each of ``runs`` training runs at once, one process each, on ``threads`` threads (default: one)."""
    threads = threads or (1,) * runs
    context = mp.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(len(threads), mp_context=context) as pool:
        barrier = manager.Barrier(len(threads))
        return list(pool.map(_side_by_side_worker, [shape] * len(threads), [steps] * len(threads),
                             [barrier] * len(threads), threads))


#: The 12-channel first layer of notebook 03's and 04's winners: BatchNorm's slow channels-last case.
NARROW_SHAPES = (TUNED, XRAY)


def channels_last_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its :class:`NarrowBatchNorm2d` layers back on PyTorch's channels-last kernel (before)."""
    for m in model.modules():
        if isinstance(m, NarrowBatchNorm2d):
            m.__class__ = torch.nn.BatchNorm2d  # the same parameters and buffers, the plain forward
    return model


class NCHWOutBatchNorm2d(torch.nn.BatchNorm2d):
    """:class:`NarrowBatchNorm2d` as it first was: NCHW in and out, so the max-pool after it ran on NCHW (5x slower)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous())


def nchw_out_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its :class:`NarrowBatchNorm2d` layers handing NCHW on to the layers after them (before)."""
    for m in model.modules():
        if isinstance(m, NarrowBatchNorm2d):
            m.__class__ = NCHWOutBatchNorm2d
    return model


def rate_in_subprocess(shape: tuple, steps: int, env: dict[str, str]) -> float:
    """Images/s of :func:`step_rate` on ``shape`` in a fresh Python with environment ``env`` (e.g. the allocator's)."""
    code = ("from helpers.reporting.bench import nhwc_shape, step_rate; "
            f"m, x, y = nhwc_shape({shape!r}); print(step_rate(m, x, y, 'bf16', {steps}) * len(y))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          cwd=paths.project_root())
    return float(done.stdout.split()[-1])


class GroupedLeNet(torch.nn.Module):
    """``k`` LeNet-5s of one shape as one model (grouped convolutions, batched dense layers): one step trains all
    ``k``, each on its own batch, so the per-operation overhead is paid once for ``k`` seeds (measured, not used)."""

    def __init__(self, k: int, in_channels: int, image_size: int, conv_channels: tuple[int, int],
                 dense_units: tuple[int, ...], num_classes: int = 10) -> None:
        super().__init__()
        c1, c2 = conv_channels
        self.k = k
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(k * in_channels, k * c1, 5, padding=2, groups=k), torch.nn.BatchNorm2d(k * c1),
            torch.nn.MaxPool2d(2), torch.nn.ReLU(),
            torch.nn.Conv2d(k * c1, k * c2, 5, groups=k), torch.nn.BatchNorm2d(k * c2),
            torch.nn.MaxPool2d(2), torch.nn.ReLU())
        side = (image_size // 2 - 4) // 2
        widths = [c2 * side * side, *dense_units, num_classes]
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(k, a, b) / a ** 0.5)
                                              for a, b in zip(widths, widths[1:]))
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(k, 1, b)) for b in widths[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: batch × (k · channels) × H × W, model g's batch in channel group g; returns k × batch × classes."""
        h = self.features(x)
        h = h.reshape(h.shape[0], self.k, -1).transpose(0, 1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            h = F.relu(h) if i < len(self.weights) - 1 else h
        return h


def grouped_rows(steps: int = 20, k: int = 3) -> list[dict[str, Any]]:
    """Images/s of ``k`` seeds of each tuned shape on one thread: ``k`` models stepped in turn against one
    :class:`GroupedLeNet` (bf16, channels_last, AdamW)."""
    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as in a lane
    try:
        for shape in (TUNED, SHAPES[3], XRAY):
            label, options, channels, size, batch = shape
            n = steps if size == 28 else max(2, steps // 3)
            separate = [_training_step(*nhwc_shape(shape), "bf16") for _ in range(k)]
            grouped = GroupedLeNet(k, channels, size, options["conv_channels"], options["dense_units"]
                                   ).to(memory_format=torch.channels_last)
            x = torch.randn(batch, k * channels, size, size).contiguous(memory_format=torch.channels_last)
            opt, y = torch.optim.AdamW(grouped.parameters(), lr=1e-3), torch.randint(0, 10, (k * batch,))

            def grouped_step() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = F.cross_entropy(grouped(x).float().reshape(k * batch, -1), y) * k
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            lever = f"{k} seeds at once ({label.rsplit('(', 1)[-1].rstrip(')')}, 1 thread, bf16)"
            for setting, work in ((f"{k} models in turn", lambda: [s() for _ in range(n) for s in separate]),
                                  ("one grouped model", lambda: [grouped_step() for _ in range(n)])):
                rows.append({"lever": lever, "setting": setting, "images/s": _best_rate(work, k * batch * n)})
    finally:
        torch.set_num_threads(threads)
    return rows


def lever_rows(steps: int = 30) -> list[dict[str, Any]]:
    """The other engine levers on this CPU: threads, runs side by side, BatchNorm layout, allocator, AdamW, evaluation
    batch, augmentation, compile, seeds as one grouped model."""
    rows: list[dict[str, Any]] = []
    _, options, channels, size, batch = TUNED  # notebook 03's tuned shape, the most trained one

    def model(opts: dict = options, c: int = channels, s: int = size) -> torch.nn.Module:
        return build_model(seed=0, in_channels=c, image_size=s, **opts).to(memory_format=torch.channels_last)

    def nhwc(*shape: int) -> torch.Tensor:
        return torch.randn(*shape).contiguous(memory_format=torch.channels_last)

    x, y = nhwc(batch, channels, size, size), torch.randint(0, 10, (batch,))
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        rows.append({"lever": "threads (training, tuned shape, bf16)", "setting": n,
                     "images/s": step_rate(model(), x, y, "bf16", steps) * batch})
    torch.set_num_threads(threads)
    for name, shape, n in (("tuned", TUNED, steps), ("X-ray", XRAY, max(2, steps // 3))):
        m, xs, ys = nhwc_shape(shape)
        rows.append({"lever": f"runs side by side ({name} shape, bf16)", "setting": f"one run, {threads} threads",
                     "images/s": step_rate(m, xs, ys, "bf16", n) * len(ys)})
        rows.append({"lever": f"runs side by side ({name} shape, bf16)", "setting": "two runs, 1 thread each",
                     "images/s": sum(side_by_side_rates(shape, n))})
        if name == "tuned":  # a search's trial on both threads with a lane beside it: more threads than cores
            beside = side_by_side_rates(shape, 10 * n, threads=(threads, 1))  # longer: it varies most
            rows.append({"lever": f"runs side by side ({name} shape, bf16)",
                         "setting": f"{threads} threads beside 1 thread", "images/s": sum(beside),
                         "cost": beside[0]})
    for label, options_, c, s, b in NARROW_SHAPES:
        for setting, prepare in (("channels_last (PyTorch's kernel)", channels_last_batch_norm),
                                 ("NCHW in and out (max-pool on NCHW)", nchw_out_batch_norm),
                                 ("NCHW in, channels_last out (NarrowBatchNorm2d)", lambda m: m)):
            m, xs, ys = nhwc_shape((label, options_, c, s, b))
            n = steps if s == 28 else max(2, steps // 3)
            rows.append({"lever": f"BatchNorm, 12 channels ({label.rsplit('(', 1)[-1].rstrip(')')})",
                         "setting": setting,
                         "images/s": step_rate(prepare(m), xs, ys, "bf16", n) * b})
    plain = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    for name, shape in (("tuned", TUNED), ("X-ray", XRAY)):
        for setting, env in (("glibc's defaults", plain), ("ALLOCATOR_ENV (make report)", {**plain, **ALLOCATOR_ENV})):
            rows.append({"lever": f"allocator ({name} shape, own process)", "setting": setting,
                         "images/s": max(rate_in_subprocess(shape, steps, env) for _ in range(2))})
    for name, adamw in (("for-loop (CPU default)", {"foreach": False}), ("foreach", {"foreach": True}),
                        ("fused", {"fused": True})):
        rows.append({"lever": "AdamW implementation (training, tuned shape, bf16)", "setting": name,
                     "images/s": step_rate(model(), x, y, "bf16", steps, **adamw) * batch})
    for label, opts, c, s, n in (("tuned 28 px RGB", options, channels, size, 4096), ("wide 64 px gray", WIDE_LENET, 1, 64, 1024)):
        m, xs = model(opts, c, s), nhwc(n, c, s, s)
        for b in (64, 128, 256, 2048):
            rows.append({"lever": f"evaluation batch ({label}, fp32)", "setting": b,
                         "images/s": _best_rate(lambda: predict_logits(m, xs, b), n)})
    gen = torch.Generator().manual_seed(0)
    step_ms = 1000 / step_rate(model(), x, y, "bf16", steps)
    aug_ms = 1000 / _best_rate(lambda: [augment(x, True, 2, gen) for _ in range(50)], 50)
    rows.append({"lever": "flips + shifts per batch vs the tuned step", "setting": "ms", "images/s": float("nan"),
                 "cost": aug_ms, "step": step_ms})
    zoom, xr, yr = ZoomViews(), nhwc(batch, 1, 64, 64), torch.randint(0, 2, (batch,))
    zoom.gen = gen
    zoom_ms = 1000 / _best_rate(lambda: [zoom.batch(xr, yr) for _ in range(20)], 20)
    rows.append({"lever": "X-ray zoom views (grid_sample) vs the wide step", "setting": "ms", "images/s": float("nan"),
                 "cost": zoom_ms, "step": 1000 / step_rate(model(WIDE_LENET, 1, 64), xr, yr, "bf16", steps)})
    start = time.perf_counter()
    compiled = torch.compile(model())
    step_rate(compiled, x, y, "bf16", 1)  # the first steps compile
    compile_s = time.perf_counter() - start
    for label, m in (("eager", model()), ("torch.compile (inductor)", compiled)):
        rows.append({"lever": "torch.compile (training, tuned shape, bf16)", "setting": label,
                     "images/s": step_rate(m, x, y, "bf16", steps) * batch,
                     "cost": compile_s if m is compiled else float("nan")})
    return rows + grouped_rows(max(2, steps * 2 // 3))


#: The recipes whose bfloat16 parity decides the default precision: notebook 03's tuned Simpsons-MNIST LeNet-5
#: (its winner's settings, as the committed demo model's card lists them) and notebook 02's textbook Fashion-MNIST.
PARITY_RECIPES: dict[str, tuple[str, dict, TrainConfig]] = {
    "tuned Simpsons-MNIST": ("simpsons-rgb", {"conv_channels": (24, 64), "dense_units": (256, 80), "dropout": 0.085,
                                              "batchnorm": True},
                             TrainConfig(optimizer="adam", lr=1.23e-3, weight_decay=1.29e-4, batch_size=64, epochs=40,
                                         schedule="onecycle", monitor="val_acc", hflip=True, shift=2,
                                         label_smoothing=0.1, channels_last=True)),
    "textbook Fashion-MNIST": ("fashion", {}, TrainConfig(**TEXTBOOK, epochs=15)),
}
#: bf16 becomes a recipe's default unless it is worse by the paired rule or its mean is this many points lower.
PARITY_MARGIN = 0.3


def precision_parity(seeds: tuple[int, ...] = (0, 1, 2), device: str = "cpu") -> pd.DataFrame:
    """Test accuracy (%) and training seconds of each parity recipe and seed, trained in fp32 and in bf16."""
    rows = []
    for recipe, (dataset, model, config) in PARITY_RECIPES.items():
        data = load_dataset(dataset)
        for seed in seeds:
            row = {"recipe": recipe, "seed": seed}
            for precision in ("fp32", "bf16"):
                run = Run(f"{precision}-seed{seed}", f"bench-parity-{dataset}",
                          replace(config, seed=seed, precision=precision), model, figures=False)
                result = train_and_evaluate(data, run, Outputs.for_budget("quick"), device)
                row |= {f"{precision} test %": 100 * result.test.accuracy, f"{precision} s": result.history.seconds}
            rows.append(row)
    return pd.DataFrame(rows)


def parity_decisions(table: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: bf16 − fp32 paired by seed, and whether bf16 may be its default (:data:`PARITY_MARGIN`)."""
    out = []
    for recipe, rows in table.groupby("recipe", sort=False):
        d = paired_difference(rows["fp32 test %"].tolist(), rows["bf16 test %"].tolist())
        worse = d.outcome == "a better" or d.mean < -PARITY_MARGIN
        out.append({"recipe": recipe, "bf16 − fp32": d.text(), "paired rule": d.outcome.replace("a better", "fp32 better")
                    .replace("b better", "bf16 better"), "speed-up": rows["fp32 s"].sum() / rows["bf16 s"].sum(),
                    "default": "fp32" if worse else "bf16"})
    return pd.DataFrame(out).set_index("recipe")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int,
                        help="time this many batches instead of a whole epoch (a quick check)")
    parser.add_argument("--shapes", action="store_true", help="only the per-shape throughput and GFLOP/s table")
    parser.add_argument("--levers", action="store_true", help="only the threads, runs side by side, AdamW, "
                                                              "evaluation batch, augmentation and torch.compile")
    parser.add_argument("--parity", action="store_true", help="bf16 against fp32 on the parity recipes, 3 seeds "
                                                              "each (about 30 min on 2 cores)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    steps = 30 if args.max_batches is None else max(2, min(30, args.max_batches))  # a quick check: fewer steps
    if args.shapes:
        return print_shapes(device, steps)
    if args.levers:
        return print_levers(steps)
    if args.parity:
        table = precision_parity(device=args.device if args.device != "auto" else "cpu")
        print(table.round(2).to_string(index=False))
        print(parity_decisions(table).round(2).to_string())
        return 0
    r = measure(device, args.batch_size, args.max_batches)
    target = TARGETS.get(device.type)
    print(f"device: {describe(device)}; LeNet-5, Fashion-MNIST, batch {args.batch_size}, SGD+momentum")
    print(f"{'pipeline':<46}{'images':>8}{'seconds':>10}{'images/s':>11}")
    print(f"{'typical (torchvision + DataLoader, per-item)':<46}{r['typical_images']:>8,}{r['typical_s']:>10.2f}"
          f"{r['typical_images'] / r['typical_s']:>11,.0f}")
    print(f"{'this engine (tensors on device, + val pass)':<46}{r['engine_images']:>8,}{r['engine_s']:>10.2f}"
          f"{r['engine_images'] / r['engine_s']:>11,.0f}")
    verdict = "" if target is None else f" (target >= {target:g}x: {'met' if r['speedup'] >= target else 'NOT met'})"
    print(f"speed-up per image: {r['speedup']:.2f}x{verdict}")
    for label, options, sizes in (("textbook LeNet-5", None, (32, 64, 256)),
                                  ("wide LeNet-5 (conv 32/64, dense 384/192, BatchNorm)", WIDE_LENET, (32, 64))):
        print(f"\nmemory layout, this engine, {label} (one epoch each; 'adopt' where channels_last is >= 1.1x faster):")
        print(f"{'batch':>6}{'images':>8}{'NCHW s':>9}{'NHWC s':>9}{'ratio':>8}  adopt")
        for row in channels_last_rows(device, sizes, max_batches=args.max_batches, model_options=options):
            print(f"{row['batch']:>6}{row['images']:>8,}{row['nchw_s']:>9.2f}{row['nhwc_s']:>9.2f}{row['ratio']:>7.2f}x  "
                  f"{'yes' if row['adopt'] else 'no'}")
    print_shapes(device, steps)
    return print_levers(steps) if device.type == "cpu" else 0


def print_levers(steps: int = 30) -> int:
    """Print :func:`lever_rows`: what each lever does to throughput on this CPU."""
    print(f"\nother levers on this CPU ({describe(torch.device('cpu'))}; best of 3 rounds)")
    print(f"{'lever':<50}{'setting':>26}{'images/s':>10}  cost")
    for r in lever_rows(steps):
        cost = ""
        if "step" in r:
            cost = f"{r['cost']:.2f} ms a batch against a {r['step']:.1f} ms step ({100 * r['cost'] / r['step']:.0f} %)"
        elif "beside" in str(r["setting"]):
            cost = f"of which the {r['setting'].split()[0]}-thread run {r['cost']:,.0f}"
        elif r.get("cost") == r.get("cost") and "cost" in r:
            cost = f"compiling took {r['cost']:.0f} s (less once inductor's disk cache has it)"
        rate = f"{r['images/s']:,.0f}" if r["images/s"] == r["images/s"] else "-"
        print(f"{r['lever']:<50}{str(r['setting']):>26}{rate:>10}  {cost}")
    return 0


def print_shapes(device: torch.device, steps: int = 30) -> int:
    """Print :func:`shape_rows` with the CPU's peak and how it was worked out."""
    peak = cpu_peak() if device.type == "cpu" else {}
    print(f"\nthroughput per model shape ({describe(device)}; one training step = forward + backward + AdamW, FLOPs "
          f"counted by torch.utils.flop_counter)")
    if peak:
        print(f"peak of this CPU: {os.cpu_count()} cores × {_clock_ghz():.2f} GHz (nominal) × 64 FLOP/cycle "
              f"(two AVX-512 FMA units) = {peak['fp32']:,.0f} GFLOP/s fp32; bf16 with AMX: × 1,024 FLOP/cycle = "
              f"{peak['bf16']:,.0f} GFLOP/s (upper bounds: turbo and the FMA-unit count of a VM are not read)")
    print(f"{'shape':<50}{'batch':>6}{'prec':>6}{'layout':>7}{'MFLOP/img':>10}{'img/s':>9}{'GFLOP/s':>9}{'% peak':>8}")
    for r in shape_rows(device, steps):
        print(f"{r['shape']:<50}{r['batch']:>6}{r['precision']:>6}{r['layout']:>7}{r['MFLOP/image']:>10.1f}"
              f"{r['images/s']:>9,.0f}{r['GFLOP/s']:>9.1f}{r['% of peak']:>8.2f}")
    print(f"\nwhere a bf16 channels_last training step's time goes (torch.profiler, self CPU time, % of the step)")
    for shape in SHAPES:
        shares = step_breakdown(*nhwc_shape(shape, device), "bf16", steps)
        print(f"{shape[0]:<50}" + "; ".join(f"{k} {v:.0f} %" for k, v in shares.items()))
    return 0


if __name__ == "__main__":
    import sys

    from helpers import plumbing

    sys.exit(plumbing.run(main))
