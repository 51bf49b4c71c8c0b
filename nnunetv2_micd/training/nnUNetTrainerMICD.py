"""MICD (masked cross pseudo consistency, cross feature consistency, cross model discrepancy) as an nnU-Net trainer.

Two heterogeneous students (nnU-Net's planned U-Net and the other U-Net family) with EMA teachers. The saved
network is a :class:`DualBranchNetwork`, so nnU-Net's predictor uses both branches without knowing about MICD.
"""
from contextlib import ExitStack
from functools import partial
from typing import Callable, List, Optional

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_micd.method.class_weighting import CLASS_WEIGHTINGS
from nnunetv2_micd.method.config import ConfigError, MICDConfig
from nnunetv2_micd.method.ema import create_ema_teacher
from nnunetv2_micd.method.learned_classes import LearnedClasses
from nnunetv2_micd.method.losses import cfc_loss, cmd_loss, exclude_classes, hard_pseudo_label, ignore_unconfident, \
    mcpc_loss
from nnunetv2_micd.method.masking import apply_mask, default_block_size, random_block_mask
from nnunetv2_micd.method.networks import DecoderFeatureRecorder, DualBranchNetwork, build_branches
from nnunetv2_micd.training.nnUNetTrainerSemiSupervised import StepLosses, first_samples, highest_resolution, \
    nnUNetTrainerSemiSupervised


class nnUNetTrainerMICD(nnUNetTrainerSemiSupervised):
    config_class = MICDConfig
    #: how often the branches' hard predictions differ on the unlabeled voxels
    diagnostic_keys = ("disagreement",)
    #: branch B is the other U-Net family (False: the same architecture as branch A)
    heterogeneous_branches = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.feature_recorders: List[DecoderFeatureRecorder] = []
        config, num_classes = self.method_config, self.label_manager.num_segmentation_heads
        weighting = CLASS_WEIGHTINGS.get(config.class_weighting)  # None: no class weights
        self.class_weights = None if weighting is None else weighting(num_classes, config.class_weight_momentum)
        self.learned_classes = None if config.learned_class_dice == 0 else \
            LearnedClasses(num_classes, num_students=2, dice_threshold=config.learned_class_dice,
                           momentum=config.class_weight_momentum)

    # ------------------------------------------------------------------ networks
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return DualBranchNetwork(*build_branches(configuration_manager, num_input_channels, num_output_channels,
                                                 enable_deep_supervision, cls.heterogeneous_branches))

    @property
    def dual_network(self) -> DualBranchNetwork:
        return self.unwrapped_network

    @property
    def students(self):
        return self.dual_network.branches

    def initialize(self):
        block_size, patch_size = self.method_config.mask_block_size, self.configuration_manager.patch_size
        if block_size is not None and len(block_size) != len(patch_size):
            raise ConfigError(f"mask_block_size {list(block_size)} does not match the {len(patch_size)}D patches "
                              f"of configuration {self.configuration_name}")
        super().initialize()
        network = self.dual_network
        network.use_branch_b.fill_(self.method_config.inference_mode != "student_a")
        if self.method_config.branch_b_init == "nnunet":  # before the teachers copy it
            branch_b = network.branches[1]
            branch_b.apply(branch_b.initialize)
        if self.method_config.uses_teachers:  # first: a deep copy would also copy the feature hooks
            self.teachers = [create_ema_teacher(branch) for branch in network.branches]
            for teacher in self.teachers:
                teacher.decoder.deep_supervision = False
        self.feature_recorders = [DecoderFeatureRecorder(branch) for branch in network.branches]

    def set_deep_supervision_enabled(self, enabled: bool):
        self.dual_network.set_deep_supervision(enabled)

    # ------------------------------------------------------------------ training step
    @property
    def masks_inputs(self) -> bool:
        """Whether a step also passes masked copies of the patches through the students (for MCPC)."""
        return self.method_config.weight_mcpc > 0 and self.method_config.mask_ratio > 0

    @property
    def teachers_predict(self) -> bool:
        """Whether a step passes the unlabeled patches through the teachers (for CMD)."""
        return self.method_config.weight_cmd > 0

    def _block_mask(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        block_size = self.method_config.mask_block_size or default_block_size(spatial)
        return random_block_mask(x.shape[0], spatial, block_size, self.method_config.mask_ratio, device=x.device)

    def compute_losses(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> StepLosses:
        """All MICD terms for one labeled and one unlabeled batch (the README's Trainers section lists them)."""
        config = self.method_config
        num_labeled = data.shape[0]
        # labeled and unlabeled patches share one forward per student: instance norm (and everything else in
        # nnU-Net's U-Nets) works per sample, so this is exactly the same as two separate forwards
        x = torch.cat((data, unlabeled))
        x_masked = apply_mask(x, self._block_mask(x)) if self.masks_inputs else None
        with ExitStack() as stack:  # CFC compares the decoder features of the passes on x
            if config.weight_cfc > 0:
                for recorder in self.feature_recorders:
                    stack.enter_context(recorder.recording())
            # one call of self.network, so that a DistributedDataParallel wrapper sees every training pass
            (output_a, masked_a), (output_b, masked_b) = self.network(x, x_masked, separate_branches=True)
        outputs = (output_a, output_b)
        logits = [highest_resolution(o) for o in outputs]
        pseudo_labels = [hard_pseudo_label(l) for l in logits]
        supervised = sum(self.loss(first_samples(o, num_labeled), target) for o in outputs)
        unsupervised = {}
        if config.weight_mcpc > 0:
            masked_logits = [highest_resolution(o) for o in (masked_a, masked_b)] if self.masks_inputs else logits
            weights_a, weights_b = (None, None) if self.class_weights is None else \
                [weights.to(x.device) for weights in self.class_weights.weights]
            targets = self._targets(pseudo_labels, logits)
            masked_logits = self._without_unlearned_classes(masked_logits, targets[::-1])  # b's labels teach a
            unsupervised["mcpc"] = mcpc_loss(*masked_logits, *targets, weights_a, weights_b)
        if config.weight_cfc > 0:
            unsupervised["cfc"] = cfc_loss(*(recorder.take() for recorder in self.feature_recorders),
                                           standardise=config.cfc_standardise)
        if self.teachers_predict:
            with torch.no_grad():
                teacher_logits = [teacher(unlabeled) for teacher in self.teachers]
            teacher_labels = self._targets([hard_pseudo_label(t) for t in teacher_logits], teacher_logits)
            if config.cmd_mode == "cross":
                teacher_labels = teacher_labels[::-1]
            student_logits = self._without_unlearned_classes([l[num_labeled:] for l in logits], teacher_labels)
            unsupervised["cmd"] = cmd_loss(*student_logits, *teacher_labels)
        unlabeled_a, unlabeled_b = (p[num_labeled:] for p in pseudo_labels)
        return StepLosses(supervised, unsupervised, {"disagreement": (unlabeled_a != unlabeled_b).float().mean()},
                          self._statistics_update([l[:num_labeled] for l in logits], highest_resolution(target),
                                                  unlabeled_b))

    def _without_unlearned_classes(self, logits: List[torch.Tensor],
                                   targets: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each student's logits for a cross-entropy against its target, without the classes that student has not
        learned from the labels yet (:mod:`nnunetv2_micd.method.learned_classes`)."""
        if self.learned_classes is None:
            return logits
        return [exclude_classes(l, t, classes) for l, t, classes in
                zip(logits, targets, self.learned_classes.not_learned())]

    def _statistics_update(self, labeled_logits: List[torch.Tensor], target: torch.Tensor,
                           unlabeled_labels_b: torch.Tensor) -> Optional[Callable[[], None]]:
        """What updates the per-class statistics once the step is taken: the class weights follow A's labeled
        predictions and B's pseudo-labels on the unlabeled patches; the learned classes both students' labeled
        predictions."""
        labels = target[:, 0].long()
        updates = []
        if self.class_weights is not None:
            updates.append(partial(self.class_weights.update, labeled_logits[0], labels, unlabeled_labels_b))
        if self.learned_classes is not None:
            updates.append(partial(self.learned_classes.update, labeled_logits, labels))
        if not updates:
            return None

        def update_all() -> None:
            for update in updates:
                update()
        return update_all

    def _targets(self, pseudo_labels: List[torch.Tensor], logits: List[torch.Tensor]) -> List[torch.Tensor]:
        """The pseudo-labels the unsupervised terms learn from: all, or only the confident ones."""
        config = self.method_config
        if config.confidence_threshold == 0:
            return pseudo_labels
        return [ignore_unconfident(labels, l, config.confidence_threshold, config.threshold_background_only)
                for labels, l in zip(pseudo_labels, logits)]

    # ------------------------------------------------------------------ checkpoints
    def inference_weights(self) -> dict:
        """The students, or the teachers when the inference mode says so."""
        network = self.dual_network
        if self.method_config.inference_mode != "teachers":
            return network.state_dict()
        weights = {f"branch_{name}.{key}": value for name, teacher in zip("ab", self.teachers)
                   for key, value in teacher.state_dict().items()}
        weights["use_branch_b"] = network.use_branch_b.clone()
        return weights

    def _statistics(self) -> dict:
        return {name: statistics for name, statistics in (("class_weights", self.class_weights),
                                                          ("learned_classes", self.learned_classes))
                if statistics is not None}

    def method_state(self) -> dict:
        return {name: statistics.state_dict() for name, statistics in self._statistics().items()}

    def load_method_state(self, state: dict) -> None:
        for name, statistics in self._statistics().items():
            statistics.load_state_dict(state[name])

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, predicting with the weights that inference will use."""
        if self.method_config.inference_mode != "teachers" or self.final_validation_left_out():
            return super().perform_actual_validation(save_probabilities)
        network = self.dual_network
        students = {k: v.clone() for k, v in network.state_dict().items()}
        network.load_state_dict(self.inference_weights())
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            network.load_state_dict(students)
