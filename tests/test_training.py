"""The training engine on a real slice of Fashion-MNIST."""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import plumbing
from helpers.data import load_fashion_mnist
from helpers.models import build_model
from helpers.splits import DataSplits, Split
from helpers.training import TrainConfig, augment, balanced_class_weights, evaluate, fit


@pytest.fixture(scope="module")
def fashion_slice() -> DataSplits:
    """2,000 train / 500 val / 1,000 test real Fashion-MNIST images (stratified)."""
    return load_fashion_mnist().subset(n_train=2000, n_val=500, n_test=1000)


def test_short_run_lowers_validation_loss_and_beats_chance(fashion_slice: DataSplits) -> None:
    result = fit(build_model(), fashion_slice, TrainConfig(optimizer="adam", lr=2e-3, epochs=3), device="cpu")
    h = result.history.frame()
    assert h["val_loss"].iloc[-1] < h["val_loss"].iloc[0] < math.log(10)
    test = evaluate(result.model, fashion_slice, "test", device="cpu")
    assert test.accuracy > 0.6  # chance is 0.1
    assert test.confusion.sum() == 1000
    assert test.accuracy == pytest.approx(np.trace(test.confusion) / 1000)
    assert test.per_class.between(0, 1).all() and len(test.per_class) == 10


def test_same_seed_gives_identical_history_on_cpu(fashion_slice: DataSplits) -> None:
    cfg = TrainConfig(optimizer="sgd", lr=0.05, epochs=2, hflip=True, shift=2, seed=7)
    runs = [fit(build_model(seed=3, dropout=0.2), fashion_slice, cfg, device="cpu").history for _ in range(2)]
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h.epochs]  # noqa: E731
    assert strip(runs[0]) == strip(runs[1])
    other = fit(build_model(seed=3, dropout=0.2), fashion_slice, TrainConfig(**{**cfg.__dict__, "seed": 8}), device="cpu")
    assert strip(other.history) != strip(runs[0])


def test_early_stopping_stops_and_restores_the_best_epoch(fashion_slice: DataSplits) -> None:
    # min_delta of a whole nat cannot be met after epoch 1, so patience 1 stops in epoch 2
    cfg = TrainConfig(optimizer="adam", lr=1e-3, epochs=10, patience=1, min_delta=1.0)
    result = fit(build_model(), fashion_slice, cfg, device="cpu")
    assert result.history.stopped_early and len(result.history.epochs) == 2 and result.history.best_epoch == 1
    val = evaluate(result.model, fashion_slice, "val", device="cpu")
    assert val.loss == pytest.approx(result.history.epochs[0]["val_loss"], rel=1e-5)


def test_diverging_run_is_stopped_and_reported(fashion_slice: DataSplits) -> None:
    result = fit(build_model(), fashion_slice, TrainConfig(optimizer="sgd", lr=1e4, epochs=5), device="cpu")
    assert result.history.diverged is not None
    assert len(result.history.epochs) < 5


def test_max_updates_caps_the_number_of_steps(fashion_slice: DataSplits) -> None:
    result = fit(build_model(), fashion_slice, TrainConfig(batch_size=100, epochs=50, max_updates=30), device="cpu")
    assert result.history.updates == 30 and len(result.history.epochs) == 2  # 20 steps per epoch


@pytest.mark.parametrize("schedule", ["step", "onecycle", "cosine"])
def test_schedules_change_the_learning_rate(fashion_slice: DataSplits, schedule: str) -> None:
    small = fashion_slice.subset(n_train=500, n_val=100)
    cfg = TrainConfig(lr=0.1, epochs=3, schedule=schedule, step_size=1, gamma=0.5)
    lrs = [e["lr"] for e in fit(build_model(), small, cfg, device="cpu").history.epochs]
    assert len(set(lrs)) == 3
    if schedule == "step":
        assert lrs == pytest.approx([0.1, 0.05, 0.025])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(fashion_slice: DataSplits, optimizer: str) -> None:
    small = fashion_slice.subset(n_train=1000, n_val=200)
    lr = 0.05 if optimizer == "sgd" else 1e-3
    h = fit(build_model(), small, TrainConfig(optimizer=optimizer, lr=lr, epochs=2), device="cpu").history
    assert h.epochs[-1]["val_acc"] > 0.3


def test_invalid_training_config_names_every_problem() -> None:
    with pytest.raises(ValueError, match="optimizer must be.*lr must be"):
        TrainConfig(optimizer="lion", lr=-1.0)


def test_augment_flips_and_shifts_each_image_by_at_most_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    assert torch.equal(augment(x, hflip=False, shift=0, gen=gen), x)
    flipped = augment(x, hflip=True, shift=0, gen=gen)
    for a, b in zip(flipped, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    shifted = augment(x.repeat(16, 1, 1, 1), hflip=False, shift=1, gen=gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    offsets = set()
    for k, img in enumerate(shifted):
        src = padded[k % 2]
        match = [(dy, dx) for dy in range(3) for dx in range(3) if torch.equal(img[0], src[0, dy:dy + 6, dx:dx + 6])]
        assert match, "every output is a translation of its input by at most 1 px"
        offsets.add(match[0])
    assert len(offsets) > 1


def test_device_falls_back_to_cpu_without_cuda_or_mps(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plumbing, "_mps_available", lambda: False)
    monkeypatch.delenv(plumbing.DEVICE_ENV, raising=False)
    assert plumbing.pick_device() == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        plumbing.pick_device("cuda")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        plumbing.pick_device("mps")


def test_device_prefers_cuda_then_mps_and_honours_the_override(monkeypatch) -> None:
    monkeypatch.delenv(plumbing.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plumbing, "_mps_available", lambda: True)
    assert plumbing.pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert plumbing.pick_device() == torch.device("cuda")
    monkeypatch.setenv(plumbing.DEVICE_ENV, "cpu")
    assert plumbing.pick_device() == torch.device("cpu")


def test_monitor_val_acc_keeps_the_most_accurate_epoch(fashion_slice: DataSplits) -> None:
    cfg = TrainConfig(optimizer="adam", lr=3e-3, epochs=4, monitor="val_acc")
    h = fit(build_model(), fashion_slice, cfg, device="cpu").history
    accs = [e["val_acc"] for e in h.epochs]
    assert h.best_epoch == 1 + accs.index(max(accs))
    assert h.optimizer["class"] == "Adam" and h.optimizer["lr"] == pytest.approx(3e-3)


@pytest.mark.slow
def test_benchmark_command_prints_both_pipelines_and_the_ratio(capsys) -> None:
    from helpers import plumbing
    from helpers.reporting import bench

    assert plumbing.run(bench.main, ["--device", "cpu", "--max-batches", "5"]) == 0
    out = capsys.readouterr().out
    assert "typical (torchvision + DataLoader, per-item)" in out and "this engine" in out
    ratio = float(out.split("speed-up per image: ")[1].split("x")[0])
    assert ratio > 0
    tables = [[line.split() for line in block.split("\n\n")[0].strip().splitlines()]
              for block in out.split("adopt\n")[1:]]  # textbook LeNet-5, then the wide one
    rows = tables[0]
    assert [int(r[0]) for r in rows] == [32, 64, 256] and all(r[-1] in ("yes", "no") for r in rows)
    assert "wide LeNet-5" in out and [int(r[0]) for r in tables[1]] == [32, 64]


def test_channels_last_trains_the_same_model_as_the_default_layout(fashion_slice) -> None:
    cfg = TrainConfig(optimizer="adam", lr=1e-3, epochs=1, batch_size=64, hflip=True, shift=2)
    a = fit(build_model(seed=0), fashion_slice, cfg, device="cpu")
    b = fit(build_model(seed=0), fashion_slice, replace(cfg, channels_last=True), device="cpu")
    assert b.model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert a.history.epochs[0]["val_acc"] == pytest.approx(b.history.epochs[0]["val_acc"], abs=0.02)


def test_class_weights_balance_the_loss_and_raise_a_rare_class_recall(fashion_slice: DataSplits) -> None:
    # a real training split where class 0 (T-shirt/top) is rare: 20 of its 200 images kept
    y = fashion_slice.train.y.numpy()
    keep = np.concatenate([np.flatnonzero(y == 0)[:20], np.flatnonzero(y != 0)])
    skewed = replace(fashion_slice, train=fashion_slice.train.take(np.sort(keep)))
    counts = torch.bincount(skewed.train.y, minlength=10).float()
    w = balanced_class_weights(skewed.train.y, 10)
    assert torch.allclose(w * counts, torch.full((10,), counts.sum() / 10))  # every class the same total weight
    assert w[0] > 5 * w[1]
    cfg = TrainConfig(optimizer="adam", lr=2e-3, epochs=2, seed=0)
    recall = {}
    for weighted in (False, True):
        model = fit(build_model(seed=0), skewed, replace(cfg, class_weights=weighted), device="cpu").model
        recall[weighted] = evaluate(model, skewed, "val", device="cpu").per_class.iloc[0]
    assert recall[True] > recall[False] + 0.1, recall
    with pytest.raises(ValueError, match=r"classes \[0\] have no image"):
        balanced_class_weights(torch.tensor([1, 2, 2]), 3)


def test_a_weighted_split_scores_as_if_its_images_were_repeated() -> None:
    gen = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randint(0, 256, (n, 1, 16, 16), generator=gen, dtype=torch.uint8),  # noqa: E731
                            torch.randint(0, 3, (n,), generator=gen), [str(i) for i in range(n)])
    train, val = split(60), split(20)
    counts = torch.randint(1, 5, (20,), generator=gen)
    weighted = DataSplits("w", ["a", "b", "c"], train, replace(val, weights=counts), split(10), (0.5,), (0.25,), "")
    repeated = replace(weighted, val=val.take(np.repeat(np.arange(20), counts.numpy())))
    runs = [fit(build_model("lenet5", seed=0, image_size=16, num_classes=3), d, TrainConfig(epochs=2, monitor="val_acc"),
                device="cpu") for d in (weighted, repeated)]
    a, b = (evaluate(r.model, d, "val", device="cpu") for r, d in zip(runs, (weighted, repeated)))
    assert [e["val_acc"] for e in runs[0].history.epochs] == [e["val_acc"] for e in runs[1].history.epochs]
    assert a.accuracy == b.accuracy and (a.confusion == b.confusion).all() and a.loss == pytest.approx(b.loss, rel=1e-5)
    assert a.confusion.sum() == counts.sum() and len(weighted.val.take([0, 1]).weights) == 2


# ----------------------------------------------------------------------------------- precision (bfloat16 on CPUs)


def test_auto_precision_is_bf16_only_where_the_cpu_runs_it_fast(monkeypatch) -> None:
    monkeypatch.delenv(plumbing.PRECISION_ENV, raising=False)
    monkeypatch.setattr(plumbing, "pick_device", lambda preference="auto": torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert TrainConfig(precision="auto").precision == "bf16"
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # private: a build may lack them
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert plumbing.fast_bf16("cpu") is False and TrainConfig(precision="auto").precision == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setenv(plumbing.PRECISION_ENV, "fp32")  # the setting that turns it off
    assert TrainConfig(precision="auto").precision == "fp32" and TrainConfig(precision="bf16").precision == "bf16"
    assert plumbing.fast_bf16("mps") is False
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_a_bf16_run_repeats_bit_exactly_and_differs_from_fp32(fashion_slice: DataSplits) -> None:
    """bfloat16 autocast runs on any x86 CPU (slowly without AMX): forced here, whatever this machine has."""
    def weights(precision: str) -> list[torch.Tensor]:
        config = TrainConfig(optimizer="adam", lr=2e-3, epochs=1, precision=precision, channels_last=True)
        result = fit(build_model(seed=0, **{"batchnorm": True}), fashion_slice, config, device="cpu")
        assert result.config.precision == precision
        return [v.clone() for v in result.model.state_dict().values()]

    first, again, fp32 = weights("bf16"), weights("bf16"), weights("fp32")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, fp32))  # autocast really was on


@pytest.mark.slow
def test_the_benchmark_counts_flops_and_states_the_cpus_peak(capsys) -> None:
    from helpers.reporting import bench

    model, x, y = build_model(seed=0), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    flops = bench.step_flops(model, x, y)
    first_conv = 2 * 6 * 24 * 24 * 25 * 8  # forward multiply-adds of conv1 alone: a lower bound
    assert flops > 3 * first_conv and all(p.grad is None for p in model.parameters())
    peak = bench.cpu_peak()
    assert peak["bf16"] >= peak["fp32"] > 0
    assert plumbing.run(bench.main, ["--device", "cpu", "--shapes", "--max-batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "peak of this CPU" in out and out.count(" bf16 ") >= 8 and "chest X-rays" in out


def test_the_step_breakdown_splits_a_step_into_shares_that_add_up() -> None:
    from helpers.reporting import bench

    model, x, y = build_model(seed=0), torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    shares = bench.step_breakdown(model, x, y, "fp32", steps=2)
    assert abs(sum(shares.values()) - 100) < 1e-6
    assert all(0 < v < 100 for v in shares.values())  # each part of a step takes some, none all of it


@pytest.mark.slow
def test_two_runs_side_by_side_both_train_from_one_start() -> None:
    from helpers.reporting import bench

    rates = bench.side_by_side_rates(bench.SHAPES[0], steps=3)  # a broken start barrier would hang, not return
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_the_batch_norm_lever_compares_the_channels_last_kernel_with_the_nchw_one() -> None:
    from helpers.models import NarrowBatchNorm2d
    from helpers.reporting import bench

    _, options, channels, size, _ = bench.NARROW_SHAPES[0]
    model = build_model(seed=0, in_channels=channels, image_size=size, **options)
    assert any(isinstance(m, NarrowBatchNorm2d) for m in model.modules())
    before = bench.channels_last_batch_norm(model).to(memory_format=torch.channels_last)
    assert not any(isinstance(m, NarrowBatchNorm2d) for m in before.modules())
    x = torch.randn(4, channels, size, size).contiguous(memory_format=torch.channels_last)
    assert before.features[1](before.features[0](x)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_a_rate_measured_in_its_own_process_is_a_rate_or_a_loud_failure() -> None:
    from helpers.reporting import bench

    assert bench.rate_in_subprocess(bench.SHAPES[0], 2, dict(os.environ)) > 0
    too_small = ("4 px", {}, 1, 4, 8)  # LeNet-5 cannot take 4-px images: the child fails, and says so
    with pytest.raises(subprocess.CalledProcessError):
        bench.rate_in_subprocess(too_small, 2, dict(os.environ))


def test_the_grouped_seeds_lever_measures_k_independent_models_of_the_tuned_size() -> None:
    from helpers.models import count_parameters
    from helpers.reporting import bench

    _, options, channels, size, _ = bench.TUNED
    k = 3
    grouped = bench.GroupedLeNet(k, channels, size, options["conv_channels"], options["dense_units"]).eval()
    single = build_model(seed=0, in_channels=channels, image_size=size, **options)
    assert count_parameters(grouped) == k * count_parameters(single)  # the same work as k models
    x = torch.randn(4, k * channels, size, size)
    out = grouped(x)
    assert out.shape == (k, 4, 10)
    changed = x.clone()
    changed[:, channels:2 * channels] += 1  # model 1's images only
    after = grouped(changed)
    assert torch.equal(after[0], out[0]) and torch.equal(after[2], out[2]) and not torch.equal(after[1], out[1])
