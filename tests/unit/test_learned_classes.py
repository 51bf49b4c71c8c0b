import pytest
import torch

from nnunetv2_micd.method.learned_classes import LearnedClasses


def _logits_for(labels: torch.Tensor, num_classes: int, scale: float = 20.) -> torch.Tensor:
    """Logits (B, C, *spatial) whose softmax is (almost) the one-hot of ``labels``."""
    return torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 1).float() * scale


def test_a_class_counts_as_learned_once_its_running_dice_reaches_the_threshold():
    learned = LearnedClasses(num_classes=3, num_students=2, dice_threshold=0.5, momentum=0.0)
    assert all(mask.tolist() == [True, True, True] for mask in learned.not_learned())  # before any label
    labels = torch.tensor([[[0, 0, 1, 1]]])  # class 2 absent from these patches
    wrong = torch.zeros_like(labels)  # student b predicts background everywhere
    learned.update([_logits_for(labels, 3), _logits_for(wrong, 3)], labels)
    student_a, student_b = learned.not_learned()
    assert student_a.tolist() == [False, False, True]  # class 2 never seen: not learned
    assert student_b.tolist() == [False, True, True]  # class 1 missed: Dice 0


def test_learned_classes_survive_a_checkpoint():
    learned = LearnedClasses(num_classes=2, num_students=2, dice_threshold=0.9)
    labels = torch.tensor([[[0, 1]]])
    learned.update([_logits_for(labels, 2)] * 2, labels)
    restored = LearnedClasses(num_classes=2, num_students=2, dice_threshold=0.9)
    restored.load_state_dict(learned.state_dict())
    assert [m.tolist() for m in restored.not_learned()] == [m.tolist() for m in learned.not_learned()]
    with pytest.raises(ValueError, match="2 students, got 1"):
        restored.load_state_dict(learned.state_dict()[:1])


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold):
    with pytest.raises(ValueError, match="dice_threshold must be in"):
        LearnedClasses(num_classes=2, num_students=2, dice_threshold=threshold)
