"""Which classes each student has learned from the labels, so that the unsupervised terms leave the others alone.

Hard pseudo-labels hold only the classes the students already predict. A class they learn late (a small structure,
say) is missing from them, and a cross-entropy against them pushes that class's logits down on every unlabeled
voxel: the unsupervised terms unlearn what the labels are still teaching. Until a student's running Dice of a class
on the labeled patches reaches a threshold, that class is kept out of the student's unsupervised cross-entropies
wherever it is not the pseudo-label (:func:`nnunetv2_micd.method.losses.exclude_classes`).
"""
from typing import Any, Dict, List, Sequence

import torch

from nnunetv2_micd.method.class_weighting import RunningClassDice


class LearnedClasses:
    """Per student: the running soft Dice of each class on the labeled patches, and which classes are below
    ``dice_threshold`` (not learned yet)."""

    def __init__(self, num_classes: int, num_students: int, dice_threshold: float, momentum: float = 0.99):
        if not 0 < dice_threshold <= 1:
            raise ValueError(f"dice_threshold must be in (0, 1], got {dice_threshold}")
        self.dice_threshold = dice_threshold
        self.running_dice = [RunningClassDice(num_classes, momentum) for _ in range(num_students)]

    @torch.no_grad()
    def update(self, labeled_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        """labeled_logits: each student's logits (B, C, *spatial) on the labeled patches; labels: long (B, *spatial)."""
        if len(labeled_logits) != len(self.running_dice):
            raise ValueError(f"Expected the logits of {len(self.running_dice)} students, got {len(labeled_logits)}")
        for dice, logits in zip(self.running_dice, labeled_logits):
            dice.update(torch.softmax(logits.float(), 1), labels)

    def not_learned(self) -> List[torch.Tensor]:
        """Per student, a (C,) bool mask of the classes whose running Dice is below the threshold (every class
        before the first update)."""
        return [dice.dice < self.dice_threshold for dice in self.running_dice]

    def state_dict(self) -> List[Dict[str, Any]]:
        return [dice.state_dict() for dice in self.running_dice]

    def load_state_dict(self, state: List[Dict[str, Any]]) -> None:
        if len(state) != len(self.running_dice):
            raise ValueError(f"Expected the state of {len(self.running_dice)} students, got {len(state)}")
        for dice, student_state in zip(self.running_dice, state):
            dice.load_state_dict(student_state)
