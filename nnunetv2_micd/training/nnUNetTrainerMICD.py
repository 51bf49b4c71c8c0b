"""MICD (masked cross pseudo consistency, cross feature consistency, cross model discrepancy) as an nnU-Net trainer.

Everything nnU-Net does stays nnU-Net's: planning, the labeled loader and augmentation, Dice+CE with deep
supervision, the optimizer and schedule, validation, checkpoint selection and sliding-window inference. This
class adds the second branch, the EMA teachers, the unlabeled loader and the three unsupervised terms.
"""
import os
from typing import Dict, List, Union

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch._dynamo import OptimizedModule

from nnunetv2_micd.dataloading.unlabeled_loader import UnlabeledDataLoader, make_augmenter, nnUNetDatasetUnlabeled
from nnunetv2_micd.dataset.preprocess_unlabeled import RECORD_FILE, preprocessing_signature, unlabeled_data_folder
from nnunetv2_micd.method.class_weighting import DifficultyAwareWeights, DistributionAwareWeights
from nnunetv2_micd.method.config import ConfigError, MICDConfig
from nnunetv2_micd.method.ema import create_ema_teacher, ema_update_
from nnunetv2_micd.method.losses import cfc_loss, cmd_loss, hard_pseudo_label, mcpc_loss
from nnunetv2_micd.method.masking import apply_mask, default_block_size, random_block_mask
from nnunetv2_micd.method.networks import DecoderFeatureRecorder, DualBranchNetwork, build_branches
from nnunetv2_micd.method.rampup import gaussian_rampup
from nnunetv2_micd.training.micd_logger import MICD_LOG_KEYS, MICDLocalLogger
from nnunetv2_micd.training.nnUNetTrainerBudget import nnUNetTrainerBudget

GRADIENT_CLIP_NORM = 12  # nnU-Net's


def _highest_resolution(output: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


def _first(output: Union[torch.Tensor, List[torch.Tensor]], n: int):
    return [o[:n] for o in output] if isinstance(output, (list, tuple)) else output[:n]


class nnUNetTrainerMICD(nnUNetTrainerBudget):
    #: branch B is the other U-Net family (False: the same architecture as branch A)
    heterogeneous_branches = True
    #: configuration fields fixed by a trainer variant (MICD_CONFIG may still change the others)
    config_overrides: Dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.micd_config = MICDConfig.from_environment(**self.config_overrides)
        self._refuse_unsupported_modes()
        self.logger.local_logger = MICDLocalLogger()
        self.teachers: List[nn.Module] = []
        self.feature_recorders: List[DecoderFeatureRecorder] = []
        self.class_weights_a = DifficultyAwareWeights(self.label_manager.num_segmentation_heads,
                                                      self.micd_config.class_weight_momentum)
        self.class_weights_b = DistributionAwareWeights(self.label_manager.num_segmentation_heads,
                                                        self.micd_config.class_weight_momentum)
        self.optimizer_step = 0
        self.dataloader_unlabeled = None

    def _refuse_unsupported_modes(self) -> None:
        unsupported = [name for name, present in (("region-based training", self.label_manager.has_regions),
                                                  ("an ignore label", self.label_manager.has_ignore_label),
                                                  ("the cascade", self.is_cascaded),
                                                  ("multi-GPU training (-num_gpus > 1)", self.is_ddp)) if present]
        if unsupported:
            raise ConfigError(f"{self.__class__.__name__} does not support {' or '.join(unsupported)}")

    def effective_config(self) -> dict:
        return {**super().effective_config(), "method": self.micd_config.to_dict()}

    # ------------------------------------------------------------------ networks
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return DualBranchNetwork(*build_branches(configuration_manager, num_input_channels, num_output_channels,
                                                 enable_deep_supervision, cls.heterogeneous_branches))

    @property
    def dual_network(self) -> DualBranchNetwork:
        network = self.network.module if self.is_ddp else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def initialize(self):
        super().initialize()
        network = self.dual_network
        network.use_branch_b.fill_(self.micd_config.inference_mode != "student_a")
        # teachers first: a deep copy would also copy the feature hooks
        self.teachers = [create_ema_teacher(branch) for branch in network.branches]
        for teacher in self.teachers:
            teacher.decoder.deep_supervision = False
        self.feature_recorders = [DecoderFeatureRecorder(branch) for branch in network.branches]

    def set_deep_supervision_enabled(self, enabled: bool):
        self.dual_network.set_deep_supervision(enabled)

    # ------------------------------------------------------------------ data
    def on_train_start(self):
        self._check_unlabeled_data()  # before any worker starts
        super().on_train_start()
        self.print_to_log_file("MICD configuration:", self.micd_config.to_dict(), add_timestamp=False)

    @property
    def unlabeled_folder(self) -> str:
        return unlabeled_data_folder(self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier)

    def _check_unlabeled_data(self) -> None:
        """The unlabeled data must exist and come from these plans' preprocessing settings."""
        folder = self.unlabeled_folder
        dataset = self.plans_manager.dataset_name
        command = (f"micd preprocess-unlabeled -d {dataset} -c {self.configuration_name} "
                   f"-p {self.plans_manager.plans_name}")
        try:
            nnUNetDatasetUnlabeled(folder)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} For this training: put the unlabeled images in nnUNet_raw/{dataset}/"
                                    f"imagesUnlabeled and run {command}") from None
        made_with = load_json(join(folder, RECORD_FILE))["preprocessing_signature"]
        if made_with != preprocessing_signature(self.plans_manager, self.configuration_name, self.dataset_json):
            raise ConfigError(f"the unlabeled data in {folder} was preprocessed with other plans settings than "
                              f"{self.plans_manager.plans_name} ({self.configuration_name}); run {command}")

    def get_dataloaders(self):
        dataloader_train, dataloader_val = super().get_dataloaders()
        self.dataloader_unlabeled = self._build_unlabeled_dataloader()
        return dataloader_train, dataloader_val

    def _build_unlabeled_dataloader(self):
        """Same patch size and training augmentation as the labeled loader, without deep-supervision targets."""
        patch_size = self.configuration_manager.patch_size
        rotation, do_dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(patch_size, rotation, None, mirror_axes, do_dummy_2d,
                                                  use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
                                                  foreground_labels=self.label_manager.foreground_labels)
        batch_size = self.micd_config.unlabeled_batch_size or self.batch_size
        loader = UnlabeledDataLoader(nnUNetDatasetUnlabeled(self.unlabeled_folder), batch_size, initial_patch_size, patch_size,
                                     self.label_manager, transforms)
        augmenter = make_augmenter(loader, get_allowed_n_proc_DA(), pin_memory=self.device.type == "cuda")
        next(augmenter)
        return augmenter

    def on_train_end(self):
        super().on_train_end()
        if isinstance(self.dataloader_unlabeled, NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()

    # ------------------------------------------------------------------ training step
    @property
    def rampup_steps(self) -> int:
        return round(self.micd_config.rampup_fraction * self.budget.total_steps)

    @property
    def unsupervised_weight(self) -> float:
        return gaussian_rampup(self.optimizer_step, self.rampup_steps, self.micd_config.lambda_max)

    def _block_mask(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        block_size = self.micd_config.mask_block_size or default_block_size(spatial)
        if len(block_size) != len(spatial):
            raise ConfigError(f"mask_block_size {block_size} does not match the {len(spatial)}D patches")
        return random_block_mask(x.shape[0], spatial, block_size, self.micd_config.mask_ratio, device=x.device)

    def compute_losses(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> Dict[str, torch.Tensor]:
        """All MICD terms for one labeled and one unlabeled batch (see docs/MICD_METHOD.md of the project)."""
        config = self.micd_config
        students = self.dual_network.branches
        num_labeled = data.shape[0]
        # labeled and unlabeled patches share one forward per student: instance norm (and everything else in
        # nnU-Net's U-Nets) works per sample, so this is exactly the same as two separate forwards
        x = torch.cat((data, unlabeled))
        outputs, features = [], []
        for student, recorder in zip(students, self.feature_recorders):
            with recorder.recording():
                outputs.append(student(x))
            features.append(recorder.take())
        logits = [_highest_resolution(o) for o in outputs]
        losses = {"loss_sup": sum(self.loss(_first(o, num_labeled), target) for o in outputs)}

        if config.weight_mcpc > 0:
            if config.mask_ratio > 0:
                x_masked = apply_mask(x, self._block_mask(x))
                masked_logits = [_highest_resolution(student(x_masked)) for student in students]
            else:
                masked_logits = logits
            weights_a, weights_b = ((self.class_weights_a.weights.to(x.device),
                                     self.class_weights_b.weights.to(x.device))
                                    if config.class_weighting == "dhc" else (None, None))
            losses["loss_mcpc"] = mcpc_loss(*masked_logits, *logits, weights_a, weights_b)
        if config.weight_cfc > 0:
            losses["loss_cfc"] = cfc_loss(*features)
        if config.weight_cmd > 0:
            with torch.no_grad():
                teacher_logits = [teacher(unlabeled) for teacher in self.teachers]
            if config.cmd_mode == "cross":
                teacher_logits = teacher_logits[::-1]
            losses["loss_cmd"] = cmd_loss(logits[0][num_labeled:], logits[1][num_labeled:], *teacher_logits)

        weight = self.unsupervised_weight
        unsupervised = sum(getattr(config, "weight_" + key[len("loss_"):]) * value
                           for key, value in losses.items() if key != "loss_sup")
        losses["loss"] = losses["loss_sup"] + weight * unsupervised
        pseudo_labels_unlabeled = [hard_pseudo_label(l[num_labeled:]) for l in logits]
        self._update_class_weights(logits[0][:num_labeled], target, pseudo_labels_unlabeled[1])
        losses["disagreement"] = (pseudo_labels_unlabeled[0] != pseudo_labels_unlabeled[1]).float().mean()
        return losses

    @torch.no_grad()
    def _update_class_weights(self, labeled_logits_a: torch.Tensor, target,
                              unlabeled_pseudo_labels_b: torch.Tensor) -> None:
        """Difficulty for A from its soft Dice on the labeled patches; class frequencies for B from the labels and
        B's own pseudo-labels on the unlabeled patches."""
        if self.micd_config.class_weighting != "dhc":
            return
        labels = _highest_resolution(target)[:, 0].long()
        self.class_weights_a.update(torch.softmax(labeled_logits_a.float(), 1), labels)
        self.class_weights_b.update([labels, unlabeled_pseudo_labels_b])

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        unlabeled = next(self.dataloader_unlabeled)["data"].to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            losses = self.compute_losses(data, target, unlabeled)
        self._refuse_non_finite(losses)
        students = self.dual_network.branches
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses["loss"]).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            losses["loss"].backward()
        for student in students:
            torch.nn.utils.clip_grad_norm_(student.parameters(), GRADIENT_CLIP_NORM)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        for teacher, student in zip(self.teachers, students):
            ema_update_(teacher, student, self.micd_config.ema_decay)
        self.optimizer_step += 1
        return {key: value.detach().cpu().numpy() for key, value in losses.items()}

    def _refuse_non_finite(self, losses: Dict[str, torch.Tensor]) -> None:
        """Stops before a non-finite loss reaches the weights (one host sync per step)."""
        if bool(torch.isfinite(losses["loss"])):
            return
        terms = [k for k, v in losses.items() if k.startswith("loss_") and not bool(torch.isfinite(v))]
        raise FloatingPointError(
            f"non-finite loss at optimizer step {self.optimizer_step} (epoch {self.current_epoch}) in "
            f"{', '.join(terms) or 'the weighted sum'}; the weights were not updated. Continue from the last "
            f"checkpoint with --c, or lower lambda_max or the learning rate if it happens again.")

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        for key in MICD_LOG_KEYS:
            if key == "unsupervised_weight":
                value = self.unsupervised_weight
            else:  # terms switched off by an ablation are logged as NaN, so every list keeps one value per epoch
                value = float(np.mean([output[key] for output in train_outputs])) if key in train_outputs[0] \
                    else float("nan")
            self.logger.log(key, value, self.current_epoch)

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            self.logger.local_logger.plot_micd_png(self.output_folder)

    # ------------------------------------------------------------------ checkpoints
    def inference_weights(self) -> dict:
        """What ``network_weights`` holds: the students, or the teachers when the inference mode says so."""
        network = self.dual_network
        if self.micd_config.inference_mode != "teachers":
            return network.state_dict()
        weights = {f"branch_{name}.{key}": value for name, teacher in zip("ab", self.teachers)
                   for key, value in teacher.state_dict().items()}
        weights["use_branch_b"] = network.use_branch_b.clone()
        return weights

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint keys (what its predictor and --c read) plus the MICD training state, written to a
        temporary file and renamed, so a crash while saving leaves the previous checkpoint intact."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": self.inference_weights(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "micd": {
                "config": self.effective_config(),
                "students": [student.state_dict() for student in self.dual_network.branches],
                "teachers": [teacher.state_dict() for teacher in self.teachers],
                "class_weights": [self.class_weights_a.state_dict(), self.class_weights_b.state_dict()],
                "optimizer_step": self.optimizer_step,
            },
        }
        temporary = filename + ".tmp"
        torch.save(checkpoint, temporary)
        os.replace(temporary, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError("MICD checkpoints are loaded from their file path")
        micd_state = torch.load(filename_or_checkpoint, map_location=self.device, weights_only=False).get("micd")
        if micd_state is None:
            raise ConfigError(f"{filename_or_checkpoint} is not a MICD checkpoint")
        self._refuse_changed_config(micd_state["config"])
        super().load_checkpoint(filename_or_checkpoint)
        for module, state in zip((*self.dual_network.branches, *self.teachers),
                                 (*micd_state["students"], *micd_state["teachers"])):
            module.load_state_dict(state)
        self.class_weights_a.load_state_dict(micd_state["class_weights"][0])
        self.class_weights_b.load_state_dict(micd_state["class_weights"][1])
        self.optimizer_step = micd_state["optimizer_step"]

    def _refuse_changed_config(self, saved: dict) -> None:
        """A resumed run must continue the same method and schedule (ramp-up and EMA depend on both)."""
        current = self.effective_config()
        keys = ("num_epochs", "iterations_per_epoch")
        changed = [f"method.{k}: {v!r} -> {current['method'][k]!r}" for k, v in saved["method"].items()
                   if current["method"].get(k) != v]
        changed += [f"budget.{k}: {saved['budget'][k]!r} -> {current['budget'][k]!r}" for k in keys
                    if saved["budget"][k] != current["budget"][k]]
        if saved["trainer"] != current["trainer"]:
            changed.append(f"trainer: {saved['trainer']} -> {current['trainer']}")
        if changed:
            raise ConfigError("this run was started with another configuration; resume with the same "
                              "MICD_CONFIG and budget or start a new run. Changed: " + "; ".join(changed))

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, predicting with the weights that inference will use."""
        if self.micd_config.inference_mode != "teachers":
            return super().perform_actual_validation(save_probabilities)
        network = self.dual_network
        students = {k: v.clone() for k, v in network.state_dict().items()}
        network.load_state_dict(self.inference_weights())
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            network.load_state_dict(students)
