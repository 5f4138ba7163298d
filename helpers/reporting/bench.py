"""Benchmark: epoch time of this project's engine vs the typical notebook pipeline."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from helpers import paths
from helpers.data import load_fashion_mnist
from helpers.models import build_model
from helpers.plumbing import describe, pick_device
from helpers.splits import Split
from helpers.training import TrainConfig, fit

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batches", type=int, help="time this many batches instead of a whole epoch (a quick check)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
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
    return 0


if __name__ == "__main__":
    import sys

    from helpers import plumbing

    sys.exit(plumbing.run(main))
