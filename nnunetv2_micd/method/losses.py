"""Unsupervised MICD loss terms on logits and features of shape (B, C, *spatial), 2D or 3D."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


#: the target of a voxel that the cross-entropy leaves out (torch's default ignore index)
IGNORE_LABEL = -100


@torch.no_grad()
def hard_pseudo_label(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the channel axis, (B, *spatial) long. Detached: pseudo-labels are targets, never trained.

    The channels are moved last first: a reduction over the strided channel axis is about eight times slower on
    the CPU, and pseudo-labels are taken several times per training step.
    """
    return logits.movedim(1, -1).contiguous().argmax(dim=-1)


@torch.no_grad()
def ignore_unconfident(labels: torch.Tensor, logits: torch.Tensor, threshold: float,
                       background_only: bool = False) -> torch.Tensor:
    """``labels`` (the hard pseudo-labels of ``logits``) with :data:`IGNORE_LABEL` wherever the top class
    probability is below ``threshold``: early in training most pseudo-labels are wrong, and the confident ones
    are the likelier to be right. With ``background_only`` only background (label 0) is left out: the uncertain
    voxels lie at the structures' borders, and leaving out both sides of a border erodes the structures."""
    confidence = logits.movedim(1, -1).float().softmax(dim=-1).amax(dim=-1)
    unconfident = confidence < threshold
    if background_only:
        unconfident &= labels == 0
    return labels.masked_fill(unconfident, IGNORE_LABEL)


def exclude_classes(logits: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``logits`` (B, C, *spatial) with the classes of ``classes`` (a (C,) bool mask) taken out of the softmax
    wherever ``target`` (long, (B, *spatial)) is another class. A cross-entropy against ``target`` then neither
    pushes them down there nor counts their probability; their logits there get no gradient."""
    if not bool(classes.any()):
        return logits
    class_index = torch.arange(logits.shape[1], device=logits.device).view(1, -1, *[1] * (logits.ndim - 2))
    hidden = classes.to(logits.device).view_as(class_index) & (target.unsqueeze(1) != class_index)
    # a finite stand-in for -inf: a voxel whose every class is hidden (an ignored one) must not produce NaN
    return logits.masked_fill(hidden, torch.finfo(logits.dtype).min / 2)


def weighted_cross_entropy(logits: torch.Tensor,
                           target: torch.Tensor,
                           class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy against a long target (B, *spatial), leaving out voxels labeled :data:`IGNORE_LABEL`.

    With class weights the mean is normalised by the summed weights of the target voxels (torch's convention), so
    the loss scale does not depend on how the weights are normalised. With every voxel left out it is 0 (and no
    gradient), not torch's 0/0.
    """
    loss = F.cross_entropy(logits, target, weight=class_weights, ignore_index=IGNORE_LABEL)
    return torch.where((target != IGNORE_LABEL).any(), loss, torch.zeros_like(loss))


def mcpc_loss(masked_logits_a: torch.Tensor,
              masked_logits_b: torch.Tensor,
              pseudo_label_a: torch.Tensor,
              pseudo_label_b: torch.Tensor,
              class_weights_a: Optional[torch.Tensor] = None,
              class_weights_b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Masked cross pseudo consistency.

    Each branch's prediction on the masked input is supervised by the other branch's hard pseudo-label on the full
    input (:func:`hard_pseudo_label`; ``pseudo_label_b`` supervises branch a). Gradients reach the masked logits
    only.
    """
    return (weighted_cross_entropy(masked_logits_a, pseudo_label_b, class_weights_a)
            + weighted_cross_entropy(masked_logits_b, pseudo_label_a, class_weights_b))


def symmetric_kl(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """0.5 * (KL(p||q) + KL(q||p)) of the channel softmaxes p, q; summed over channels, averaged over batch and voxels.

    The two KL terms combine to sum((p - q) * (log p - log q)), which is evaluated on log_softmax for stability.
    """
    log_p = F.log_softmax(features_a, dim=1)
    log_q = F.log_softmax(features_b, dim=1)
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1).mean()


def standardise_channels(features: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each voxel's feature vector to zero mean and unit variance over the channels. The softmax of features whose
    scale shrinks tends to uniform, so a symmetric KL between raw features falls as both branches shrink their
    features, aligned or not; between standardised ones it does not."""
    mean = features.mean(dim=1, keepdim=True)
    variance = features.var(dim=1, unbiased=False, keepdim=True)
    return (features - mean) / torch.sqrt(variance + eps)


def cfc_loss(features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor],
             standardise: bool = False) -> torch.Tensor:
    """Cross feature consistency: symmetric KL between matching stages of the two branches, averaged over stages;
    with ``standardise`` between the features standardised per voxel (:func:`standardise_channels`).

    Both branches receive gradients, pulling their representations towards each other.
    """
    if len(features_a) != len(features_b):
        raise ValueError(f"Got {len(features_a)} stages for branch a but {len(features_b)} for branch b")
    if len(features_a) == 0:
        raise ValueError("cfc_loss needs at least one stage")
    for stage, (a, b) in enumerate(zip(features_a, features_b)):
        if a.shape != b.shape:
            raise ValueError(f"Stage {stage}: feature shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if standardise:
        features_a, features_b = ([standardise_channels(f) for f in features] for features in (features_a, features_b))
    return torch.stack([symmetric_kl(a, b) for a, b in zip(features_a, features_b)]).mean()


def cmd_loss(student_logits_a: torch.Tensor,
             student_logits_b: torch.Tensor,
             teacher_label_a: torch.Tensor,
             teacher_label_b: torch.Tensor) -> torch.Tensor:
    """Cross model discrepancy: student a (b) fits the hard pseudo-label of the teacher given for it
    (:func:`hard_pseudo_label` of the teacher's logits). No gradient reaches the teachers.
    """
    return (weighted_cross_entropy(student_logits_a, teacher_label_a)
            + weighted_cross_entropy(student_logits_b, teacher_label_b))


def softmax_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean-teacher consistency (Tarvainen & Valpola, 2017): squared difference of the class probabilities,
    averaged over every element. No gradient reaches the teacher."""
    return F.mse_loss(torch.softmax(student_logits, dim=1), torch.softmax(teacher_logits.detach(), dim=1))
