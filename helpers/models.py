"""LeNet-5 (configurable) and one stronger reference CNN, both rebuilt from plain config dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU,
}


class _ChannelsLastNCHWGrad(torch.autograd.Function):
    """Channels-last forward, NCHW gradient backward: the layers around stay fast, BatchNorm's backward too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class NarrowBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm on NCHW input: PyTorch's channels-last CPU backward is 10-20x slower below 16 channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x.contiguous())
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # back to channels-last for the max-pool after it (5x faster than on NCHW), the same numbers
            return _ChannelsLastNCHWGrad.apply(out)
        return out


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm2d layer, NCHW-bound below 16 channels (``make benchmark ARGS=--levers`` measures it)."""
    return NarrowBatchNorm2d(channels) if channels < 16 else nn.BatchNorm2d(channels)


@dataclass
class LeNet5Config:
    """LeNet-5: two 5×5 conv + pool blocks, dense layers, the classifier."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    conv_channels: tuple[int, ...] = (6, 16)
    dense_units: tuple[int, ...] = (120, 84)
    activation: str = "relu"
    pool: str = "max"  # "max" (modern) or "avg" (LeCun 1998 subsampling)
    dropout: float = 0.0  # after each hidden dense layer
    batchnorm: bool = False  # after each conv layer

    def __post_init__(self) -> None:
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.dense_units = tuple(int(u) for u in self.dense_units)
        if len(self.conv_channels) < 2:
            raise ValueError("LeNet-5 needs at least two conv layers "
                             "(conv_channels)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of "
                             f"{sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {self.pool!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 px, "
                             f"got {self.image_size}")


@dataclass
class ReferenceCNNConfig:
    """A stronger CNN: three conv blocks (3×3 conv, BatchNorm, ReLU; then max-pool), dropout, dense."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    convs_per_block: int = 1
    dense_units: int = 256
    dropout: float = 0.3

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)


class LeNet5(nn.Module):
    """LeNet-5 as configured by :class:`LeNet5Config`."""

    def __init__(self, config: LeNet5Config) -> None:
        super().__init__()
        self.config = config
        act = ACTIVATIONS[config.activation]
        pool = nn.MaxPool2d if config.pool == "max" else nn.AvgPool2d
        layers: list[nn.Module] = []
        channels = config.in_channels
        for i, out in enumerate(config.conv_channels):
            if i < 2:  # the two LeNet blocks: 5x5 conv (+ pool below)
                # padded on the first, as LeCun's 32-px input for 28-px MNIST
                layers.append(nn.Conv2d(channels, out, 5,
                                        padding=2 if i == 0 else 0))
            else:  # optional extra depth at the same resolution
                layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if config.batchnorm:
                layers.append(batch_norm(out))
            if i < 2 and config.activation == "relu" and config.pool == "max":
                layers += [pool(2), act()]  # max then ReLU: the same numbers as ReLU then max, on 4x fewer values
            else:
                layers += [act(), pool(2)] if i < 2 else [act()]
            channels = out
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, config.in_channels, config.image_size)
        dense: list[nn.Module] = [nn.Flatten()]
        width = flat
        for units in config.dense_units:
            dense += [nn.Linear(width, units), act()]
            if config.dropout > 0:
                dense.append(nn.Dropout(config.dropout))
            width = units
        dense.append(nn.Linear(width, config.num_classes))
        self.classifier = nn.Sequential(*dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ReferenceCNN(nn.Module):
    """The stronger reference model, to show what LeNet-5 leaves on the table."""

    def __init__(self, config: ReferenceCNNConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_channels
        for width in config.widths:
            for _ in range(config.convs_per_block):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        flat = _flat_size(self.features, config.in_channels, config.image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(flat, config.dense_units), nn.ReLU(),
            nn.Dropout(config.dropout), nn.Linear(config.dense_units, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: dict[str, tuple[type, type]] = {
    "lenet5": (LeNet5, LeNet5Config),
    "reference_cnn": (ReferenceCNN, ReferenceCNNConfig),
}


@dataclass
class ModelSpec:
    """An architecture name and its config: everything needed to rebuild a model."""

    arch: str = "lenet5"
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "config": dict(self.config)}


def build_model(arch: str = "lenet5", seed: int | None = 0, **config: Any) -> nn.Module:
    """Build ``arch`` (``'lenet5'`` or ``'reference_cnn'``) from config fields; ``seed`` fixes the initial weights."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    model_cls, config_cls = ARCHITECTURES[arch]
    if seed is not None:
        torch.manual_seed(seed)
    return model_cls(config_cls(**config))


def spec_of(model: nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` that rebuilds ``model``'s architecture."""
    for name, (model_cls, _) in ARCHITECTURES.items():
        if isinstance(model, model_cls):
            return ModelSpec(name, asdict(model.config))
    raise TypeError(f"{type(model).__name__} is not one of this project's architectures")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _flat_size(features: nn.Module, channels: int, size: int) -> int:
    was_training = features.training
    features.eval()  # eval mode: BatchNorm running statistics are not touched by the probe
    with torch.no_grad():
        out = features(torch.zeros(1, channels, size, size))
    features.train(was_training)
    if out.shape[-1] < 1:
        raise ValueError(f"input of {size}x{size} px is too small for this network")
    return int(out[0].numel())


def layer_table(model: nn.Module, channels: int, size: int) -> pd.DataFrame:
    """One row per layer: type, output shape for one ``channels``×``size``×``size`` image, parameters."""
    rows: list[dict[str, Any]] = []
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda m, i, o, name=name: rows.append(
        {"layer": name, "type": type(m).__name__, "output shape": " × ".join(map(str, o.shape[1:])),
         "parameters": sum(p.numel() for p in m.parameters() if p.requires_grad)})) for name, m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return pd.DataFrame(rows).set_index("layer")
