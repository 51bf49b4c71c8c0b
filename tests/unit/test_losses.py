import math

import pytest
import torch

from nnunetv2_micd.method.losses import (IGNORE_LABEL, cfc_loss, cmd_loss, exclude_classes, hard_pseudo_label,
                                         ignore_unconfident, mcpc_loss, standardise_channels, symmetric_kl,
                                         weighted_cross_entropy)

LOG2, LOG3 = math.log(2), math.log(3)
# two voxels with two classes, laid out as 2D (1, 2, 2, 1) or 3D (1, 2, 1, 2, 1)
SPATIAL = {2: (2, 1), 3: (1, 2, 1)}


def _logits(spatial_dims: int, voxel_logits, requires_grad: bool = False) -> torch.Tensor:
    """(1, C, *spatial) logits from a list with one list of C logits per voxel."""
    logits = torch.tensor(voxel_logits, dtype=torch.float32).T.reshape(1, -1, *SPATIAL[spatial_dims])
    return logits.requires_grad_(requires_grad)


def _target(spatial_dims: int, voxel_labels) -> torch.Tensor:
    return torch.tensor(voxel_labels).reshape(1, *SPATIAL[spatial_dims])


@pytest.mark.parametrize("dims", [2, 3])
def test_hard_pseudo_label_is_detached_argmax(dims):
    logits = _logits(dims, [[0., 1.], [2., -1.]], requires_grad=True)
    labels = hard_pseudo_label(logits)
    assert labels.dtype == torch.long
    assert labels.shape == (1, *SPATIAL[dims])
    assert labels.flatten().tolist() == [1, 0]
    assert not labels.requires_grad


@pytest.mark.parametrize("dims", [2, 3])
def test_weighted_cross_entropy_hand_computed(dims):
    # voxel 0: softmax([0, 0]) = [1/2, 1/2], target 0 -> -log(1/2) = log 2
    # voxel 1: softmax([log 3, 0]) = [3/4, 1/4], target 1 -> -log(1/4) = 2 log 2
    logits = _logits(dims, [[0., 0.], [LOG3, 0.]])
    target = _target(dims, [0, 1])
    # unweighted: (log 2 + 2 log 2) / 2 = 1.5 log 2
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(1.5 * LOG2, rel=1e-6)
    # weights [1, 3]: (1 * log 2 + 3 * 2 log 2) / (1 + 3) = 7/4 log 2
    weights = torch.tensor([1., 3.])
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx(1.75 * LOG2, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_mcpc_loss_value_and_gradient_flow(dims):
    masked_a = _logits(dims, [[0., 0.], [LOG3, 0.]], requires_grad=True)
    masked_b = _logits(dims, [[LOG3, 0.], [0., 0.]], requires_grad=True)
    logits_a = _logits(dims, [[5., 0.], [5., 0.]], requires_grad=True)  # pseudo-label [0, 0] for branch b
    logits_b = _logits(dims, [[5., 0.], [0., 5.]], requires_grad=True)  # pseudo-label [0, 1] for branch a
    # branch a vs [0, 1]: (log 2 + 2 log 2) / 2 = 1.5 log 2
    # branch b vs [0, 0]: (-log(3/4) + log 2) / 2 = (2 log 2 - log 3 + log 2) / 2 = 1.5 log 2 - 0.5 log 3
    expected = 3 * LOG2 - 0.5 * LOG3
    loss = mcpc_loss(masked_a, masked_b, hard_pseudo_label(logits_a), hard_pseudo_label(logits_b))
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    loss.backward()
    assert masked_a.grad is not None and masked_a.grad.abs().sum() > 0
    assert masked_b.grad is not None and masked_b.grad.abs().sum() > 0
    assert logits_a.grad is None and logits_b.grad is None


def test_mcpc_loss_uses_each_branch_weights():
    dims = 2
    masked_a = _logits(dims, [[0., 0.], [LOG3, 0.]])
    masked_b = _logits(dims, [[0., 0.], [LOG3, 0.]])
    pseudo_label = hard_pseudo_label(_logits(dims, [[5., 0.], [0., 5.]]))  # [0, 1] for both branches
    # branch a with weights [1, 3]: 7/4 log 2 (see weighted cross-entropy test); branch b unweighted: 1.5 log 2
    loss = mcpc_loss(masked_a, masked_b, pseudo_label, pseudo_label, class_weights_a=torch.tensor([1., 3.]))
    assert loss.item() == pytest.approx(3.25 * LOG2, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_symmetric_kl_hand_computed(dims):
    # voxel 0: p = softmax([log 3, 0]) = [3/4, 1/4], q = softmax([0, 0]) = [1/2, 1/2]
    #   KL(p||q) = 3/4 log(3/2) + 1/4 log(1/2) ~ 0.130812
    #   KL(q||p) = 1/2 log(2/3) + 1/2 log 2    ~ 0.143841
    #   symmetric: (0.130812 + 0.143841) / 2  ~ 0.137327
    # voxel 1: identical distributions -> 0; average over the two voxels ~ 0.068663
    kl_pq = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kl_qp = 0.5 * math.log(2 / 3) + 0.5 * LOG2
    expected = 0.5 * (kl_pq + kl_qp) / 2
    a = _logits(dims, [[LOG3, 0.], [1., 2.]])
    b = _logits(dims, [[0., 0.], [1., 2.]])
    assert symmetric_kl(a, b).item() == pytest.approx(expected, rel=1e-5)
    assert symmetric_kl(b, a).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(0.068663, abs=1e-6)


def test_symmetric_kl_is_invariant_to_a_constant_logit_shift():
    a = torch.randn(2, 4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    assert symmetric_kl(a, a + 10.).item() == pytest.approx(0., abs=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_cfc_loss_averages_stages_and_trains_both_branches(dims):
    # stage 0 as in the symmetric KL test (~0.068663), stage 1 has identical distributions (0)
    stage0_a = _logits(dims, [[LOG3, 0.], [1., 2.]], requires_grad=True)
    stage0_b = _logits(dims, [[0., 0.], [1., 2.]], requires_grad=True)
    stage1_a = torch.zeros(1, 3, *SPATIAL[dims], requires_grad=True)
    stage1_b = torch.zeros(1, 3, *SPATIAL[dims], requires_grad=True)
    loss = cfc_loss([stage0_a, stage1_a], [stage0_b, stage1_b])
    assert loss.item() == pytest.approx(0.068663 / 2, rel=1e-4)

    loss.backward()
    assert stage0_a.grad.abs().sum() > 0
    assert stage0_b.grad.abs().sum() > 0
    assert stage1_a.grad is not None and stage1_b.grad is not None


def test_cfc_loss_rejects_mismatched_stages():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError):
        cfc_loss([x, x], [x])
    with pytest.raises(ValueError):
        cfc_loss([x], [torch.zeros(1, 2, 4, 2)])
    with pytest.raises(ValueError):
        cfc_loss([], [])


@pytest.mark.parametrize("dims", [2, 3])
def test_cmd_loss_value_and_no_gradient_into_teachers(dims):
    student_a = _logits(dims, [[0., 0.], [LOG3, 0.]], requires_grad=True)
    student_b = _logits(dims, [[LOG3, 0.], [0., 0.]], requires_grad=True)
    teacher_a = _logits(dims, [[1., 0.], [0., 1.]], requires_grad=True)  # hard label [0, 1]
    teacher_b = _logits(dims, [[1., 0.], [1., 0.]], requires_grad=True)  # hard label [0, 0]
    # a vs [0, 1]: (log 2 + 2 log 2) / 2 = 1.5 log 2
    # b vs [0, 0]: (-log(3/4) + log 2) / 2 = 1.5 log 2 - 0.5 log 3
    # (pairing a with teacher b and b with teacher a would give 3 log 2 - log 3 instead)
    expected = 3 * LOG2 - 0.5 * LOG3
    loss = cmd_loss(student_a, student_b, hard_pseudo_label(teacher_a), hard_pseudo_label(teacher_b))
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    loss.backward()
    assert student_a.grad.abs().sum() > 0 and student_b.grad.abs().sum() > 0
    assert teacher_a.grad is None and teacher_b.grad is None


@pytest.mark.parametrize("dims", [2, 3])
def test_unconfident_pseudo_labels_are_left_out_of_the_cross_entropy(dims):
    # voxel 0: softmax([0, 0]) has top probability 1/2; voxel 1: softmax([log 3, 0]) has 3/4
    logits = _logits(dims, [[0., 0.], [LOG3, 0.]], requires_grad=True)
    labels = ignore_unconfident(hard_pseudo_label(logits), logits, threshold=0.7)
    assert labels.flatten().tolist() == [IGNORE_LABEL, 0]
    # only voxel 1 counts: -log(3/4), not the mean with voxel 0's log 2
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(LOG2 * 2 - LOG3, rel=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_unconfident_structure_pseudo_labels_can_be_kept(dims):
    # both voxels have top probability 3/4: voxel 0 calls background, voxel 1 a structure (class 1)
    logits = _logits(dims, [[LOG3, 0.], [0., LOG3]])
    labels = hard_pseudo_label(logits)
    assert ignore_unconfident(labels, logits, 0.9).flatten().tolist() == [IGNORE_LABEL, IGNORE_LABEL]
    assert ignore_unconfident(labels, logits, 0.9, background_only=True).flatten().tolist() == [IGNORE_LABEL, 1]
    assert ignore_unconfident(labels, logits, 0.7, background_only=True).flatten().tolist() == [0, 1]


def test_a_batch_without_a_confident_pseudo_label_teaches_nothing():
    logits = _logits(2, [[0., 0.], [LOG3, 0.]], requires_grad=True)
    labels = ignore_unconfident(hard_pseudo_label(logits), logits, threshold=0.9)
    loss = weighted_cross_entropy(logits, labels, torch.tensor([1., 3.]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))  # not torch's 0/0


def test_standardised_cfc_cannot_be_lowered_by_shrinking_the_features():
    torch.manual_seed(0)
    features_a, features_b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    raw = cfc_loss([features_a], [features_b])
    standardised = cfc_loss([features_a], [features_b], standardise=True)
    # features shrunk tenfold: the raw term falls a hundredfold without any alignment, the standardised one stays
    assert cfc_loss([0.1 * features_a], [0.1 * features_b]).item() < 0.02 * raw.item()
    shrunk = cfc_loss([0.1 * features_a], [0.1 * features_b], standardise=True)
    assert shrunk.item() == pytest.approx(standardised.item(), rel=1e-3)
    voxel = standardise_channels(features_a)[0, :, 1, 2]
    assert voxel.mean().item() == pytest.approx(0.0, abs=1e-6) and voxel.std(unbiased=False).item() == \
        pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_an_excluded_class_is_neither_pushed_down_nor_counted_where_it_is_not_the_target(dims):
    # three classes; class 2 (not learned yet) is excluded. Voxel 0's target is background, voxel 1's is class 2.
    logits = torch.tensor([[0., 0., LOG3], [0., 0., 0.]]).T.reshape(1, 3, *SPATIAL[dims]).requires_grad_(True)
    target = _target(dims, [0, 2])
    loss = weighted_cross_entropy(exclude_classes(logits, target, torch.tensor([False, False, True])), target)
    # voxel 0 among classes 0 and 1 only: log 2; voxel 1 keeps all three classes: log 3
    assert loss.item() == pytest.approx((LOG2 + LOG3) / 2, rel=1e-6)
    loss.backward()
    gradient = logits.grad.reshape(3, 2)
    assert gradient[2, 0] == 0 and gradient[2, 1] != 0  # class 2 is trained only where it is the target
    with_class_2 = weighted_cross_entropy(logits, target)
    assert with_class_2.item() > loss.item()  # without the exclusion voxel 0 would push class 2 down


def test_excluding_no_class_changes_nothing_and_an_ignored_voxel_stays_finite():
    logits = _logits(2, [[0., 1.], [2., 0.]])
    target = torch.tensor([[[IGNORE_LABEL], [0]]])
    assert exclude_classes(logits, target, torch.tensor([False, False])) is logits
    excluded = exclude_classes(logits, target, torch.tensor([True, True]))  # voxel 0: every class hidden
    assert weighted_cross_entropy(excluded, target).item() == pytest.approx(0.0, abs=1e-6)
