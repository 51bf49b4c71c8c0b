import math

import pytest
import torch

from nnunetv2_micd.method.class_weighting import DifficultyAwareWeights, DistributionAwareWeights


def _expected_distribution_weights(counts):
    """w_c = log(max n / (n_c + 1)) + 1, scaled to sum to the number of classes."""
    raw = [math.log(max(counts) / (n + 1)) + 1 for n in counts]
    return [w * len(raw) / sum(raw) for w in raw]


@pytest.mark.parametrize("estimator", [DistributionAwareWeights, DifficultyAwareWeights])
def test_uniform_before_first_update(estimator):
    weights = estimator(4).weights
    assert weights.dtype == torch.float32 and weights.device.type == "cpu"
    assert torch.equal(weights, torch.ones(4))


@pytest.mark.parametrize("estimator", [DistributionAwareWeights, DifficultyAwareWeights])
@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=3, momentum=1.5)])
def test_rejects_bad_arguments(estimator, kwargs):
    with pytest.raises(ValueError):
        estimator(**kwargs)


def test_distribution_weights_hand_computed():
    # counts n = [3, 1, 0] over a 2D and a 3D label map; -1 and 3 lie outside [0, 3) and are ignored
    label_maps = [torch.tensor([[0, 0], [1, -1]]), torch.tensor([[[0, 3]]])]
    estimator = DistributionAwareWeights(3)
    estimator.update(label_maps)
    assert estimator.counts.tolist() == [3, 1, 0]
    # raw = [log(3/4) + 1, log(3/2) + 1, log 3 + 1] = [0.712318, 1.405465, 2.098612], sum = 4.216395
    # normalised to sum 3: [0.506820, 1.0, 1.493180]
    expected = [0.506820, 1.0, 1.493180]
    assert estimator.weights.tolist() == pytest.approx(expected, abs=1e-6)
    assert estimator.weights.tolist() == pytest.approx(_expected_distribution_weights([3, 1, 0]), rel=1e-6)
    assert estimator.weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert estimator.weights.argmin() == 0


def test_distribution_counts_follow_an_exponential_moving_average():
    estimator = DistributionAwareWeights(3, momentum=0.5)
    estimator.update([torch.tensor([[0, 0, 0, 1]])])  # first update sets n = [3, 1, 0]
    estimator.update([torch.tensor([[0, 1, 2, 2]])])  # counts [1, 1, 2] -> n = 0.5 * [3, 1, 0] + 0.5 * [1, 1, 2]
    assert estimator.counts.tolist() == [2, 1, 1]
    # raw = [log(2/3) + 1, log(2/2) + 1, 1] = [0.594535, 1, 1], sum = 2.594535 -> [0.687447, 1.156277, 1.156277]
    assert estimator.weights.tolist() == pytest.approx([0.687447, 1.156277, 1.156277], abs=1e-6)


def test_distribution_weights_stay_uniform_without_valid_voxels():
    # all voxels ignored -> n = 0, log(0) = -inf is clamped for every class alike
    estimator = DistributionAwareWeights(2)
    estimator.update([torch.full((2, 2), -1)])
    assert torch.allclose(estimator.weights, torch.ones(2))


def test_distribution_state_dict_round_trip():
    estimator = DistributionAwareWeights(3)
    restored = DistributionAwareWeights(3)
    restored.load_state_dict(estimator.state_dict())
    assert restored.counts is None

    estimator.update([torch.tensor([0, 0, 0, 1])])
    restored.load_state_dict(estimator.state_dict())
    assert torch.equal(restored.weights, estimator.weights)
    estimator.update([torch.tensor([2, 2])])
    assert not torch.equal(restored.weights, estimator.weights)  # the restored state is a copy

    with pytest.raises(ValueError):
        DistributionAwareWeights(4).load_state_dict(estimator.state_dict())


def _difficulty_batch():
    """2 x 2 image, labels [[0, 0], [1, 1]], class 2 absent.

    class 0: p = [1, 1, 0, 0.5], y = [1, 1, 0, 0]: dice = 2 * 2 / (2.5 + 2) = 8/9
    class 1: p = [0, 0, 1, 0.5], y = [0, 0, 1, 1]: dice = 2 * 1.5 / (1.5 + 2) = 6/7
    """
    probabilities = torch.tensor([[[1., 1.], [0., 0.5]],
                                  [[0., 0.], [1., 0.5]],
                                  [[0., 0.], [0., 0.]]]).unsqueeze(0)
    labels = torch.tensor([[[0, 0], [1, 1]]])
    return probabilities, labels


def test_difficulty_weights_hand_computed():
    estimator = DifficultyAwareWeights(3)
    estimator.update(*_difficulty_batch())
    assert estimator.dice.tolist() == pytest.approx([8 / 9, 6 / 7, 0.0], rel=1e-6)
    # raw = [1/9 + 0.05, 1/7 + 0.05, 1 + 0.05] = [0.161111, 0.192857, 1.05], sum = 1.403968
    # normalised to sum 3: [0.344262, 0.412097, 2.243640]
    assert estimator.weights.tolist() == pytest.approx([0.344262, 0.412097, 2.243640], abs=1e-6)


def test_difficulty_dice_follows_an_exponential_moving_average_of_present_classes():
    estimator = DifficultyAwareWeights(3, momentum=0.5)
    estimator.update(*_difficulty_batch())
    # second batch, 3D: one voxel of class 2 predicted perfectly, class 0 with p = 0.5 at its only voxel
    probabilities = torch.tensor([[0.5, 0.], [0.5, 0.], [0., 1.]]).view(1, 3, 2, 1, 1)
    labels = torch.tensor([0, 2]).view(1, 2, 1, 1)
    estimator.update(probabilities, labels)
    # class 0: batch dice 2 * 0.5 / (0.5 + 1) = 2/3, EMA 0.5 * 8/9 + 0.5 * 2/3 = 7/9
    # class 1: absent, keeps 6/7
    # class 2: first observation, dice 2 * 1 / (1 + 1) = 1 is taken as is
    assert estimator.dice.tolist() == pytest.approx([7 / 9, 6 / 7, 1.0], rel=1e-6)
    assert estimator.observed.tolist() == [True, True, True]


def test_difficulty_update_ignores_gradients_and_checks_shapes():
    probabilities, labels = _difficulty_batch()
    probabilities.requires_grad_(True)
    estimator = DifficultyAwareWeights(3)
    estimator.update(probabilities, labels)
    assert not estimator.weights.requires_grad
    with pytest.raises(ValueError):
        estimator.update(probabilities[:, :2], labels)
    with pytest.raises(ValueError):
        estimator.update(probabilities, labels[:, :1])


def test_difficulty_state_dict_round_trip():
    estimator = DifficultyAwareWeights(3, momentum=0.5)
    estimator.update(*_difficulty_batch())
    restored = DifficultyAwareWeights(3, momentum=0.5)
    restored.load_state_dict(estimator.state_dict())
    assert torch.equal(restored.weights, estimator.weights)
    assert torch.equal(restored.observed, estimator.observed)

    with pytest.raises(ValueError):
        DifficultyAwareWeights(2).load_state_dict(estimator.state_dict())


def test_the_published_dhc_weights_hand_computed():
    from nnunetv2_micd.method.class_weighting import PublishedDHCWeights
    weights = PublishedDHCWeights(3, momentum=0.5, difficulty_steps=2)
    assert [w.tolist() for w in weights.weights] == [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]  # DHC's start: C each
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 2]])
    # A predicts classes 0 and 1 right and misses class 2 (predicted as 0)
    logits_a = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 0, 1, 1, 0, 0]]), 3).float().movedim(-1, 1)
    unlabeled_b = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 2]])  # counts 6, 1, 1
    weights.update(logits_a, labels, unlabeled_b)
    # branch B: started from the labels' counts (4, 2, 2), then averaged with the pseudo-labels' (6, 1, 1)
    start = torch.tensor([0.0, math.log(2), math.log(2)]) / math.log(2) * 3
    now = torch.tensor([0.0, math.log(6), math.log(6)]) / math.log(6) * 3
    assert weights.weights[1].tolist() == pytest.approx((0.5 * start + 0.5 * now).tolist(), abs=1e-6)
    # branch A: DHC's hard Dice (2 tp + e) / (2 tp + fp + fn + 2 e) with e = 1e-8: tp (4, 2, 0), fp (2, 0, 0),
    # fn (0, 0, 2); from DHC's start of e, classes 0 and 1 rose (learning), class 2 fell (unlearning)
    e = 1e-8
    dice = torch.tensor([(8 + e) / (10 + 2 * e), (4 + e) / (4 + 2 * e), e / (2 + 2 * e)], dtype=torch.float64)
    change, ratio = dice - e, torch.log(dice / e)
    learning = 0.5 * torch.where(change > 0, change, 0) * ratio
    unlearning = 0.5 * torch.where(change <= 0, change, 0) * ratio
    raw = ((unlearning + e) / (learning + e)) ** 0.2 * (0.5 + 0.5 * (1 - dice))
    assert weights.weights[0].tolist() == pytest.approx((raw / raw.max() * 3).tolist(), rel=1e-5)
    assert weights.weights[0].argmax() == 2  # the missed class weighs most
    state = weights.state_dict()
    restored = PublishedDHCWeights(3)
    restored.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(restored.weights, weights.weights))


def test_the_simplified_dhc_weights_update_both_branches_from_one_step():
    from nnunetv2_micd.method.class_weighting import SimplifiedDHCWeights
    weights = SimplifiedDHCWeights(2)
    labels = torch.tensor([[0, 0, 1, 1]])
    logits_a = torch.tensor([[[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]]])  # A predicts class 0 everywhere
    weights.update(logits_a, labels, torch.tensor([[0, 0, 0, 1]]))
    weights_a, weights_b = weights.weights
    assert weights_a[1] > weights_a[0]  # A segments class 1 worse
    assert weights_b[1] > weights_b[0]  # class 1 is rarer (3 of 8 voxels)
    restored = SimplifiedDHCWeights(2)
    restored.load_state_dict(weights.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.weights, weights.weights))
