import pytest
import torch
from torch import nn

from nnunetv2_micd.method.ema import create_ema_teacher, ema_update_


class _OneParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("running_mean", torch.tensor([0.0]))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_teacher_is_a_frozen_independent_copy():
    student = _OneParameter()
    teacher = create_ema_teacher(student)
    assert torch.equal(teacher.weight, student.weight)
    assert teacher.weight.data_ptr() != student.weight.data_ptr()
    assert not teacher.weight.requires_grad
    assert student.weight.requires_grad


def test_exact_update_with_decay_point_nine():
    student = _OneParameter()
    teacher = create_ema_teacher(student)
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.running_mean.fill_(0.5)
        student.num_batches_tracked.fill_(7)

    ema_update_(teacher, student, 0.9)
    # 0.9 * 1.0 + 0.1 * 3.0 = 1.2
    assert teacher.weight.item() == pytest.approx(1.2, rel=1e-6)
    assert teacher.running_mean.item() == 0.5
    assert teacher.num_batches_tracked.item() == 7

    ema_update_(teacher, student, 0.9)
    # 0.9 * 1.2 + 0.1 * 3.0 = 1.38
    assert teacher.weight.item() == pytest.approx(1.38, rel=1e-6)
    assert student.weight.item() == 3.0


def test_decay_end_points():
    student = _OneParameter()
    teacher = create_ema_teacher(student)
    with torch.no_grad():
        student.weight.fill_(3.0)
    ema_update_(teacher, student, 1.0)
    assert teacher.weight.item() == 1.0
    ema_update_(teacher, student, 0.0)
    assert teacher.weight.item() == 3.0


def test_teacher_gets_no_gradient_and_student_training_is_unaffected():
    student = _OneParameter()
    teacher = create_ema_teacher(student)
    (student(torch.tensor([2.0])) + teacher(torch.tensor([2.0]))).sum().backward()
    assert student.weight.grad.item() == 2.0
    assert teacher.weight.grad is None
    ema_update_(teacher, student, 0.9)
    assert not teacher.weight.requires_grad


@pytest.mark.parametrize("decay", [-0.1, 1.1])
def test_rejects_decay_outside_unit_interval(decay):
    student = _OneParameter()
    with pytest.raises(ValueError):
        ema_update_(create_ema_teacher(student), student, decay)


def test_rejects_different_architectures():
    with pytest.raises(ValueError):
        ema_update_(nn.Linear(1, 1), nn.Linear(1, 1, bias=False), 0.9)
