"""Class weights for MICD's MCPC term that counter the bias of pseudo-labels towards frequent and easy classes.

Branch A's weights follow its difficulty on the labeled patches, branch B's the class distribution (DHC, Wang & Li,
MICCAI 2023). Two versions: the default, simplified one (:class:`DifficultyAwareWeights`,
:class:`DistributionAwareWeights`), and DHC's own formulas as its code computes them (:class:`PublishedDHCWeights`).
Every estimator keeps running statistics on the CPU and exposes them through ``state_dict`` / ``load_state_dict`` so
they can be stored in a checkpoint.
"""
from typing import Any, Dict, List, Optional, Sequence

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


def _class_counts(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,) float64 voxel counts of each class in ``label_map``, on its device; values outside [0, C) (ignore
    labels) are skipped."""
    labels = label_map.detach().flatten()
    labels = labels[(labels >= 0) & (labels < num_classes)]
    return torch.bincount(labels, minlength=num_classes).double()


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
        counts = sum(_class_counts(label_map, self.num_classes) for label_map in label_maps)
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


class RunningClassDice:
    """An exponential moving average of each class's soft Dice between a student's predictions and the labels of
    the labeled patches. Classes never seen in the labels keep Dice 0."""

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

    def state_dict(self) -> Dict[str, Any]:
        return {"dice": self.dice.clone(), "observed": self.observed.clone()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        dice, observed = state_dict["dice"], state_dict["observed"]
        if tuple(dice.shape) != (self.num_classes,) or tuple(observed.shape) != (self.num_classes,):
            raise ValueError(f"Expected state of shape ({self.num_classes},)")
        self.dice = dice.detach().to("cpu", torch.float64).clone()
        self.observed = observed.detach().to("cpu", torch.bool).clone()


class DifficultyAwareWeights(RunningClassDice):
    """Weights from the student's per-class soft Dice: classes it segments poorly get larger weights.

    w_c ~ (1 - d_c) + 0.05, where d_c is the running Dice of class c (:class:`RunningClassDice`), so classes never
    seen in the labels count as hard.
    """
    weight_offset = 0.05

    @property
    def weights(self) -> torch.Tensor:
        """(C,) float32 on the CPU, summing to C."""
        return _normalise(1 - self.dice + self.weight_offset)


class SimplifiedDHCWeights:
    """Both branches' weights as :class:`DifficultyAwareWeights` (A) and :class:`DistributionAwareWeights` (B), from
    A's soft predictions on the labeled patches and the labels plus B's pseudo-labels on the unlabeled ones; each sums
    to the number of classes."""

    def __init__(self, num_classes: int, momentum: float = 0.99):
        self.branch_a = DifficultyAwareWeights(num_classes, momentum)
        self.branch_b = DistributionAwareWeights(num_classes, momentum)

    @property
    def weights(self) -> List[torch.Tensor]:
        return [self.branch_a.weights, self.branch_b.weights]

    @torch.no_grad()
    def update(self, labeled_logits_a: torch.Tensor, labels: torch.Tensor, unlabeled_labels_b: torch.Tensor) -> None:
        self.branch_a.update(torch.softmax(labeled_logits_a.float(), 1), labels)
        self.branch_b.update([labels, unlabeled_labels_b])

    def state_dict(self) -> List[Dict[str, Any]]:
        return [self.branch_a.state_dict(), self.branch_b.state_dict()]

    def load_state_dict(self, state: List[Dict[str, Any]]) -> None:
        self.branch_a.load_state_dict(state[0])
        self.branch_b.load_state_dict(state[1])


def _largest_is(raw: torch.Tensor, value: float) -> torch.Tensor:
    """``raw`` scaled so that its largest entry is ``value`` (all ``value`` when every entry is 0)."""
    largest = raw.max()
    return torch.full_like(raw, value) if largest <= 0 else raw / largest * value


class PublishedDHCWeights:
    """DHC's weights as its training code computes them (``xmed-lab/DHC``, ``code/train_dhc.py``, DiffDW and DistDW),
    each scaled so that its largest weight is the number of classes C:

    - branch A (difficulty): per class the hard Dice d of A's labeled predictions in each step (background included),
      its learning and unlearning rates (the step-to-step rises and falls of d times log of their ratio), each
      averaged over about ``difficulty_steps`` steps, and w ∝ (unlearning / learning)^(1/5) · average(1 − d);
    - branch B (distribution): w ∝ log(n_max / n_c) for the voxel counts n of B's pseudo-labels on the unlabeled
      patches, averaged over steps with ``momentum``; the most frequent class gets weight 0. DHC starts it from the
      counts of the whole labeled set; here from the first step's labeled patches.
    """
    eps = 1e-8  # DHC's

    def __init__(self, num_classes: int, momentum: float = 0.99, difficulty_steps: int = 50):
        _validate(num_classes, momentum)
        self.num_classes = num_classes
        self.momentum = momentum
        self.difficulty_momentum = (difficulty_steps - 1) / difficulty_steps
        self.state = {"last_dice": torch.full((num_classes,), self.eps, dtype=torch.float64),
                      "learning": torch.zeros(num_classes, dtype=torch.float64),
                      "unlearning": torch.zeros(num_classes, dtype=torch.float64),
                      "difficulty": torch.ones(num_classes, dtype=torch.float64),
                      "weights_a": torch.full((num_classes,), float(num_classes), dtype=torch.float64),
                      "weights_b": None}

    @property
    def weights(self) -> List[torch.Tensor]:
        weights_b = self.state["weights_b"]
        return [self.state["weights_a"].float(),
                torch.full((self.num_classes,), float(self.num_classes)) if weights_b is None else weights_b.float()]

    def _counts(self, label_map: torch.Tensor) -> torch.Tensor:
        return _sum_across_processes(_class_counts(label_map, self.num_classes)).cpu()

    def _distribution_weights(self, counts: torch.Tensor) -> torch.Tensor:
        return _largest_is(torch.log((counts.max() + self.eps) / (counts + self.eps)), self.num_classes)

    def _hard_dice(self, predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        predicted_one_hot = F.one_hot(predicted.long(), self.num_classes).flatten(0, -2).double()
        label_one_hot = F.one_hot(labels.long(), self.num_classes).flatten(0, -2).double()
        true_positives = (predicted_one_hot * label_one_hot).sum(0)
        statistics = torch.stack([true_positives, predicted_one_hot.sum(0) - true_positives,
                                  label_one_hot.sum(0) - true_positives])
        true_positives, false_positives, false_negatives = _sum_across_processes(statistics).cpu()
        return (2 * true_positives + self.eps) / (2 * true_positives + false_positives + false_negatives + 2 * self.eps)

    @torch.no_grad()
    def update(self, labeled_logits_a: torch.Tensor, labels: torch.Tensor, unlabeled_labels_b: torch.Tensor) -> None:
        state, m = self.state, self.difficulty_momentum
        dice = self._hard_dice(labeled_logits_a.argmax(1), labels)
        change, ratio = dice - state["last_dice"], torch.log(dice / state["last_dice"])
        state["learning"] = m * state["learning"] + (1 - m) * torch.where(change > 0, change, 0) * ratio
        state["unlearning"] = m * state["unlearning"] + (1 - m) * torch.where(change <= 0, change, 0) * ratio
        state["difficulty"] = m * state["difficulty"] + (1 - m) * (1 - dice)
        state["last_dice"] = dice
        trend = ((state["unlearning"] + self.eps) / (state["learning"] + self.eps)) ** (1 / 5)
        state["weights_a"] = _largest_is(trend * state["difficulty"], self.num_classes)
        if state["weights_b"] is None:
            state["weights_b"] = self._distribution_weights(self._counts(labels))
        now = self._distribution_weights(self._counts(unlabeled_labels_b))
        state["weights_b"] = self.momentum * state["weights_b"] + (1 - self.momentum) * now

    def state_dict(self) -> Dict[str, Any]:
        return {key: None if value is None else value.clone() for key, value in self.state.items()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if set(state) != set(self.state):
            raise ValueError(f"Expected the state {sorted(self.state)}, got {sorted(state)}")
        self.state = {key: None if value is None else value.detach().to("cpu", torch.float64).clone()
                      for key, value in state.items()}


#: ``class_weighting`` of the configuration -> the weights' class
CLASS_WEIGHTINGS = {"dhc": SimplifiedDHCWeights, "dhc_published": PublishedDHCWeights}
