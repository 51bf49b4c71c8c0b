"""Exponential moving average (mean teacher) copies of a network."""
import copy

import torch
from torch import nn


def create_ema_teacher(student: nn.Module) -> nn.Module:
    """Independent copy of `student` that is never trained by backprop, only by `ema_update_`."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher = decay * teacher + (1 - decay) * student for every parameter, in place; buffers are copied.

    Buffers (e.g. normalisation statistics, counters) are taken over from the student as they are not learned.
    Parameters and buffers are matched by order, not by name, so a wrapped student (DDP, torch.compile) works once
    the caller unwraps it; both modules must share the same architecture.
    """
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    teacher_params, student_params = list(teacher.parameters()), list(student.parameters())
    teacher_buffers, student_buffers = list(teacher.buffers()), list(student.buffers())
    if len(teacher_params) != len(student_params) or len(teacher_buffers) != len(student_buffers):
        raise ValueError("teacher and student must have the same parameters and buffers")

    if teacher_params:
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - decay)
    for teacher_buffer, student_buffer in zip(teacher_buffers, student_buffers):
        teacher_buffer.copy_(student_buffer)
