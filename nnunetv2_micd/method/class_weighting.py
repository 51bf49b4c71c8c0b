"""DHC-style class weights that counter the bias of pseudo-labels towards frequent and easy classes.

Both estimators keep running statistics on the CPU, expose them through `state_dict` / `load_state_dict` so they
can be stored in a checkpoint, and return weights that sum to the number of classes (uniform = all ones).
"""
from typing import Any, Dict, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _validate(num_classes: int, momentum: float) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")


def _sum_across_processes(statistics: torch.Tensor) -> torch.Tensor:
    """Batch statistics summed over all processes of a distributed run (unchanged otherwise), so that every
    process keeps the same running statistics and therefore the same weights."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(statistics)
    return statistics


def _normalise(raw_weights: torch.Tensor) -> torch.Tensor:
    """Scale to sum to the number of classes, so that uniform weighting is all ones."""
    return (raw_weights * (raw_weights.numel() / raw_weights.sum())).float()


class DistributionAwareWeights:
    """Weights from the class frequencies of (pseudo-)label maps: rare classes get larger weights.

    w_c ~ log(max_k n_k / (n_c + 1)) + 1, where n_c is an exponential moving average of the voxel count of class c.
    """
    minimum_weight = 1e-3

    def __init__(self, num_classes: int, momentum: float = 0.99):
        _validate(num_classes, momentum)
        self.num_classes = num_classes
        self.momentum = momentum
        self.counts: Optional[torch.Tensor] = None

    @torch.no_grad()
    def update(self, label_maps: Sequence[torch.Tensor]) -> None:
        """Add the voxel counts of `label_maps`; values outside [0, num_classes) (e.g. ignore labels) are skipped."""
        if len(label_maps) == 0:
            raise ValueError("update needs at least one label map")
        counts = torch.zeros(self.num_classes, dtype=torch.float64, device=label_maps[0].device)
        for label_map in label_maps:
            labels = label_map.detach().flatten()
            labels = labels[(labels >= 0) & (labels < self.num_classes)]
            counts += torch.bincount(labels, minlength=self.num_classes)
        counts = _sum_across_processes(counts).cpu()
        if self.counts is None:
            self.counts = counts
        else:
            self.counts = self.momentum * self.counts + (1 - self.momentum) * counts

    @property
    def weights(self) -> torch.Tensor:
        """(C,) float32 on the CPU, summing to C."""
        if self.counts is None:
            return torch.ones(self.num_classes)
        raw = torch.log(self.counts.max() / (self.counts + 1)) + 1
        # log(0) = -inf when no valid voxel has been seen yet: the clamp then makes the weights uniform
        return _normalise(raw.clamp_min(self.minimum_weight))

    def state_dict(self) -> Dict[str, Any]:
        return {"counts": None if self.counts is None else self.counts.clone()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        counts = state_dict["counts"]
        if counts is not None and tuple(counts.shape) != (self.num_classes,):
            raise ValueError(f"Expected counts of shape ({self.num_classes},), got {tuple(counts.shape)}")
        self.counts = None if counts is None else counts.detach().to("cpu", torch.float64).clone()


class DifficultyAwareWeights:
    """Weights from the student's per-class soft Dice: classes it segments poorly get larger weights.

    w_c ~ (1 - d_c) + 0.05, where d_c is an exponential moving average of the Dice of class c. Classes never seen
    in the labels keep d_c = 0, i.e. they count as hard.
    """
    weight_offset = 0.05

    def __init__(self, num_classes: int, momentum: float = 0.99):
        _validate(num_classes, momentum)
        self.num_classes = num_classes
        self.momentum = momentum
        self.dice = torch.zeros(num_classes, dtype=torch.float64)
        self.observed = torch.zeros(num_classes, dtype=torch.bool)

    @torch.no_grad()
    def update(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        """Fold in the batch Dice of each class present in `labels`.

        probabilities: softmax output (B, C, *spatial); labels: long (B, *spatial) with values in [0, C).
        """
        if probabilities.shape[1] != self.num_classes:
            raise ValueError(f"Expected {self.num_classes} channels, got {probabilities.shape[1]}")
        if probabilities.shape[:1] + probabilities.shape[2:] != labels.shape:
            raise ValueError(f"labels {tuple(labels.shape)} do not match probabilities {tuple(probabilities.shape)}")
        probabilities = probabilities.detach().float()
        one_hot = F.one_hot(labels.detach().long(), self.num_classes).movedim(-1, 1).float()
        reduce_dims = [0] + list(range(2, probabilities.ndim))
        statistics = torch.stack([(probabilities * one_hot).sum(reduce_dims), one_hot.sum(reduce_dims),
                                  probabilities.sum(reduce_dims)]).double()
        intersection, label_volume, prediction_volume = _sum_across_processes(statistics).cpu()

        present = label_volume > 0
        batch_dice = 2 * intersection / (prediction_volume + label_volume).clamp_min(1e-8)
        averaged = torch.where(self.observed, self.momentum * self.dice + (1 - self.momentum) * batch_dice,
                               batch_dice)
        self.dice = torch.where(present, averaged, self.dice)
        self.observed |= present

    @property
    def weights(self) -> torch.Tensor:
        """(C,) float32 on the CPU, summing to C."""
        return _normalise(1 - self.dice + self.weight_offset)

    def state_dict(self) -> Dict[str, Any]:
        return {"dice": self.dice.clone(), "observed": self.observed.clone()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        dice, observed = state_dict["dice"], state_dict["observed"]
        if tuple(dice.shape) != (self.num_classes,) or tuple(observed.shape) != (self.num_classes,):
            raise ValueError(f"Expected state of shape ({self.num_classes},)")
        self.dice = dice.detach().to("cpu", torch.float64).clone()
        self.observed = observed.detach().to("cpu", torch.bool).clone()
