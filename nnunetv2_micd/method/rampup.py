"""Ramp-up schedule for the weight of the unsupervised losses."""
import math


def gaussian_rampup(step: int, rampup_steps: int, max_value: float) -> float:
    """max_value * exp(-5 * (1 - t)^2) with t = step / rampup_steps clipped to [0, 1].

    Pseudo-labels are poor early in training, so their loss weight starts near zero (max_value * exp(-5)) and
    reaches max_value after `rampup_steps`. rampup_steps <= 0 disables the ramp-up.
    """
    if rampup_steps <= 0:
        return float(max_value)
    progress = min(max(step, 0), rampup_steps) / rampup_steps
    return float(max_value * math.exp(-5.0 * (1.0 - progress) ** 2))
