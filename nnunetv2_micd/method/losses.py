"""Unsupervised MICD loss terms on logits and features of shape (B, C, *spatial), 2D or 3D."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


@torch.no_grad()
def hard_pseudo_label(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the channel axis, (B, *spatial) long. Detached: pseudo-labels are targets, never trained.

    The channels are moved last first: a reduction over the strided channel axis is about eight times slower on
    the CPU, and pseudo-labels are taken several times per training step.
    """
    return logits.movedim(1, -1).contiguous().argmax(dim=-1)


def weighted_cross_entropy(logits: torch.Tensor,
                           target: torch.Tensor,
                           class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy against a long target (B, *spatial).

    With class weights the mean is normalised by the summed weights of the target voxels (torch's convention), so
    the loss scale does not depend on how the weights are normalised.
    """
    return F.cross_entropy(logits, target, weight=class_weights)


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


def cfc_loss(features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross feature consistency: symmetric KL between matching stages of the two branches, averaged over stages.

    Both branches receive gradients, pulling their representations towards each other.
    """
    if len(features_a) != len(features_b):
        raise ValueError(f"Got {len(features_a)} stages for branch a but {len(features_b)} for branch b")
    if len(features_a) == 0:
        raise ValueError("cfc_loss needs at least one stage")
    for stage, (a, b) in enumerate(zip(features_a, features_b)):
        if a.shape != b.shape:
            raise ValueError(f"Stage {stage}: feature shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.stack([symmetric_kl(a, b) for a, b in zip(features_a, features_b)]).mean()


def cmd_loss(student_logits_a: torch.Tensor,
             student_logits_b: torch.Tensor,
             teacher_logits_a: torch.Tensor,
             teacher_logits_b: torch.Tensor) -> torch.Tensor:
    """Cross model discrepancy: student a (b) fits the hard prediction of the teacher given for it.

    No gradient reaches the teachers.
    """
    return (weighted_cross_entropy(student_logits_a, hard_pseudo_label(teacher_logits_a))
            + weighted_cross_entropy(student_logits_b, hard_pseudo_label(teacher_logits_b)))


def softmax_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean-teacher consistency (Tarvainen & Valpola, 2017): squared difference of the class probabilities,
    averaged over every element. No gradient reaches the teacher."""
    return F.mse_loss(torch.softmax(student_logits, dim=1), torch.softmax(teacher_logits.detach(), dim=1))
