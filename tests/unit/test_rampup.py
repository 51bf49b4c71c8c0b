import math

import pytest

from nnunetv2_micd.method.rampup import gaussian_rampup


def test_start_value_is_max_times_exp_minus_five():
    # t = 0: 2 * exp(-5 * 1^2) = 2 * 0.006738 = 0.013476
    assert gaussian_rampup(0, 100, 2.0) == pytest.approx(2.0 * math.exp(-5), rel=1e-12)
    assert gaussian_rampup(0, 100, 2.0) == pytest.approx(0.013476, abs=1e-6)


def test_midpoint_value():
    # t = 1/2: 2 * exp(-5 * 0.25) = 2 * exp(-1.25) = 2 * 0.286505 = 0.573010
    assert gaussian_rampup(50, 100, 2.0) == pytest.approx(0.573010, abs=1e-6)


def test_reaches_and_holds_max_value():
    assert gaussian_rampup(100, 100, 2.0) == 2.0
    assert gaussian_rampup(1000, 100, 2.0) == 2.0


def test_negative_step_counts_as_start():
    assert gaussian_rampup(-10, 100, 2.0) == gaussian_rampup(0, 100, 2.0)


@pytest.mark.parametrize("rampup_steps", [0, -5])
def test_no_rampup_returns_max_value(rampup_steps):
    assert gaussian_rampup(0, rampup_steps, 0.3) == 0.3


def test_is_monotonically_increasing():
    values = [gaussian_rampup(step, 10, 1.0) for step in range(11)]
    assert all(a < b for a, b in zip(values, values[1:]))
