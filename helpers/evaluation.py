"""A trained model on one split: accuracy, loss, per-class recall, balanced accuracy, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.devices import pick_device
from helpers.splits import DataSplits
from helpers.training import DeviceSplit, loss_and_accuracy, predict_logits


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
    loss, acc = loss_and_accuracy(logits, ds.y)
    pred = logits.argmax(1).cpu().numpy()
    true = ds.y.cpu().numpy()
    k = data.num_classes
    confusion = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / confusion.sum(axis=1)
    return Evaluation(
        accuracy=acc, loss=loss, per_class=pd.Series(per_class, index=data.classes, name="accuracy"),
        confusion=confusion, predictions=pred, probabilities=torch.softmax(logits, 1).cpu().numpy(),
        classes=list(data.classes),
    )
