"""What every semi-supervised trainer of this package shares, so that the methods differ only in their losses.

nnU-Net keeps everything it does: planning, the labeled loader and augmentation, Dice+CE with deep supervision,
the optimizer and schedule, validation, checkpoint selection and sliding-window inference. This base class adds
the unlabeled loader (same patch size and augmentation), the ramp-up of the unsupervised weight, EMA teachers,
one training step (autocast, one grad scaler, gradient clipping per student, a non-finite-loss stop) and
checkpoints that carry the method's training state. A method implements :meth:`compute_losses`; the step weights
its terms as the configuration's ``term_weights`` declare them, refuses a non-finite loss, then takes the backward
pass, the optimizer step, the EMA updates and the method's statistics updates, in that order.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2_micd.dataloading.unlabeled_loader import UnlabeledDataLoader, make_augmenter, nnUNetDatasetUnlabeled
from nnunetv2_micd.preprocessing.unlabeled_store import UnlabeledStore, preprocessing_signature
from nnunetv2_micd.errors import MissingInputError
from nnunetv2_micd.method.config import ConfigError, SemiSupervisedConfig
from nnunetv2_micd.method.ema import ema_update_
from nnunetv2_micd.method.rampup import gaussian_rampup
from nnunetv2_micd.training.micd_logger import MICDLocalLogger
from nnunetv2_micd.training.nnUNetTrainerBudget import nnUNetTrainerBudget

GRADIENT_CLIP_NORM = 12  # nnU-Net's


def highest_resolution(output: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


def first_samples(output: Union[torch.Tensor, List[torch.Tensor]], n: int):
    """The first ``n`` samples of an output, per deep-supervision scale when there are several."""
    return [o[:n] for o in output] if isinstance(output, (list, tuple)) else output[:n]


@dataclass
class StepLosses:
    """One step's losses as a method computes them, unweighted."""
    #: nnU-Net's loss on the labeled patches (summed over the students)
    supervised: torch.Tensor
    #: each unsupervised term switched on, by its name in the configuration's ``term_weights``
    unsupervised: Dict[str, torch.Tensor]
    #: logged, never trained on
    diagnostics: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: updates statistics from this step's outputs; called only once the step has been taken
    update_statistics: Optional[Callable[[], None]] = None


class nnUNetTrainerSemiSupervised(nnUNetTrainerBudget):
    config_class = SemiSupervisedConfig
    #: configuration fields fixed by a trainer variant (MICD_CONFIG may still change the others)
    config_overrides: Dict = {}
    #: the method's :attr:`StepLosses.diagnostics`, logged per epoch after its loss terms and λ(t)
    diagnostic_keys: Tuple[str, ...] = ()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp and not torch.cuda.is_available():
            # nnU-Net's DDP assumes one GPU per process; without CUDA (a gloo process group) every process trains
            # on the CPU
            self.device, self.grad_scaler = torch.device("cpu"), None
        self.method_config = self.config_class.from_environment(**self.config_overrides)
        self._refuse_unsupported_modes()
        self.logger.local_logger = MICDLocalLogger(self.log_keys)
        self.teachers: List[nn.Module] = []
        self.optimizer_step = 0
        self.dataloader_unlabeled = None
        self.resumed_config = None  # the effective configuration of a loaded checkpoint

    def _refuse_unsupported_modes(self) -> None:
        unsupported = [name for name, present in (("region-based training", self.label_manager.has_regions),
                                                  ("an ignore label", self.label_manager.has_ignore_label),
                                                  ("the cascade", self.is_cascaded)) if present]
        if unsupported:
            raise ConfigError(f"{self.__class__.__name__} does not support {' or '.join(unsupported)}")

    @property
    def log_keys(self) -> Tuple[str, ...]:
        """What the method logs per epoch next to nnU-Net's keys (means of the train_step outputs, plus λ(t)); terms
        switched off are logged as NaN."""
        terms = tuple(f"loss_{name}" for name in self.method_config.term_weights())
        return ("loss_sup", *terms, "unsupervised_weight", *self.diagnostic_keys)

    def effective_config(self) -> dict:
        return {**super().effective_config(), "method": self.method_config.to_dict()}

    def initialize(self):
        """nnU-Net's, except that the DistributedDataParallel wrapper is made here: nnU-Net gives it CUDA device
        ids, which a CPU (gloo) process group cannot take. Batch split and loss are nnU-Net's."""
        distributed, self.is_ddp = self.is_ddp, False
        try:
            super().initialize()
        finally:
            self.is_ddp = distributed
        if distributed:
            self._set_batch_size_and_oversample()  # this rank's share of the global batch
            self.loss = self._build_loss()
            if self.device.type == "cuda":
                self.network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
            self.network = DDP(self.network, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    @property
    def unwrapped_network(self) -> nn.Module:
        """The network without DDP or torch.compile wrappers."""
        network = self.network.module if self.is_ddp else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    @property
    def students(self) -> Tuple[nn.Module, ...]:
        """The networks trained by backpropagation, each with its teacher at the same index in :attr:`teachers`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data
    def on_train_start(self):
        if self.resumed_config is not None:  # before any worker starts
            self._refuse_changed_config(self.resumed_config)
        self._check_unlabeled_data()
        super().on_train_start()
        if self.optimizer_step == 0:
            # nnUNetv2_train -pretrained_weights loads them into the students after initialize() made the teachers
            for teacher, student in zip(self.teachers, self.students):
                teacher.load_state_dict(student.state_dict())
        self.print_to_log_file(f"{self.config_class.__name__}:", self.method_config.to_dict(), add_timestamp=False)

    @property
    def unlabeled_store(self) -> UnlabeledStore:
        return UnlabeledStore.of(self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier)

    def _check_unlabeled_data(self) -> None:
        """The unlabeled data must exist and come from these plans' preprocessing settings."""
        store = self.unlabeled_store
        folder = store.folder
        dataset = self.plans_manager.dataset_name
        command = (f"micd preprocess-unlabeled -d {dataset} -c {self.configuration_name} "
                   f"-p {self.plans_manager.plans_name}")
        try:
            nnUNetDatasetUnlabeled(folder)
        except FileNotFoundError as e:
            raise MissingInputError(f"{e} For this training: put the unlabeled images in nnUNet_raw/{dataset}/"
                                    f"imagesUnlabeled and run {command}") from None
        if store.made_with() != preprocessing_signature(self.plans_manager, self.configuration_name, self.dataset_json):
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
        batch_size = self.method_config.unlabeled_batch_size or self.batch_size
        loader = UnlabeledDataLoader(nnUNetDatasetUnlabeled(self.unlabeled_store.folder), batch_size, initial_patch_size,
                                     patch_size, self.label_manager, transforms)
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
        return round(self.method_config.rampup_fraction * self.budget.total_steps)

    @property
    def unsupervised_weight(self) -> float:
        return gaussian_rampup(self.optimizer_step, self.rampup_steps, self.method_config.lambda_max)

    def compute_losses(self, data: torch.Tensor, target, unlabeled: torch.Tensor) -> StepLosses:
        """Every term for one labeled and one unlabeled batch."""
        raise NotImplementedError

    def weighted_loss(self, losses: StepLosses) -> torch.Tensor:
        """What is minimised: the supervised loss plus λ(t) times the weighted unsupervised terms."""
        weights = self.method_config.term_weights()
        unsupervised = sum(weights[name] * value for name, value in losses.unsupervised.items())
        return losses.supervised + self.unsupervised_weight * unsupervised

    def mixed_precision(self):
        """Autocast on CUDA, as nnU-Net's own train_step; full precision on other devices."""
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        unlabeled = next(self.dataloader_unlabeled)["data"].to(self.device, non_blocking=True)

        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self.mixed_precision():
                losses = self.compute_losses(data, target, unlabeled)
                loss = self.weighted_loss(losses)
            self._refuse_non_finite(loss, losses)
            if self.grad_scaler is not None:
                self.grad_scaler.scale(loss).backward()
                self.grad_scaler.unscale_(self.optimizer)
            else:
                loss.backward()
        except torch.cuda.OutOfMemoryError:
            raise MemoryError(self._out_of_memory_message(data, unlabeled)) from None
        for student in self.students:
            torch.nn.utils.clip_grad_norm_(student.parameters(), GRADIENT_CLIP_NORM)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        for teacher, student in zip(self.teachers, self.students):
            ema_update_(teacher, student, self.method_config.ema_decay)
        if losses.update_statistics is not None:
            losses.update_statistics()
        self.optimizer_step += 1
        logged = {"loss": loss, **self._loss_terms(losses), **losses.diagnostics}
        return {key: value.detach().cpu().numpy() for key, value in logged.items()}

    @staticmethod
    def _loss_terms(losses: StepLosses) -> Dict[str, torch.Tensor]:
        return {"loss_sup": losses.supervised, **{f"loss_{name}": value for name, value in losses.unsupervised.items()}}

    def _out_of_memory_message(self, data: torch.Tensor, unlabeled: torch.Tensor) -> str:
        """What did not fit, with the numbers and the ways to make it fit."""
        in_use = ""
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            in_use = (f"; {(total - free) / 2 ** 30:.1f} of {total / 2 ** 30:.1f} GiB in use, peak allocated "
                      f"{torch.cuda.max_memory_allocated(self.device) / 2 ** 30:.1f} GiB")
        return (f"out of memory at optimizer step {self.optimizer_step}: {data.shape[0]} labeled + "
                f"{unlabeled.shape[0]} unlabeled patches of {tuple(data.shape[2:])} voxels through "
                f"{len(self.students)} student(s), with {len(self.teachers)} teacher(s){in_use}. Start a new training "
                f"with a lower unlabeled_batch_size in MICD_CONFIG or with smaller plans (a smaller batch, or "
                f"nnUNetv2_plan_experiment -gpu_memory_target); --c continues only with the same settings.")

    def _refuse_non_finite(self, loss: torch.Tensor, losses: StepLosses) -> None:
        """Stops before a non-finite loss reaches the weights or the statistics (one host sync per step)."""
        if bool(torch.isfinite(loss)):
            return
        terms = [k for k, v in self._loss_terms(losses).items() if not bool(torch.isfinite(v))]
        raise FloatingPointError(
            f"non-finite loss at optimizer step {self.optimizer_step} (epoch {self.current_epoch}) in "
            f"{', '.join(terms) or 'the weighted sum'}; the weights were not updated. Continue from the last "
            f"checkpoint with --c (with new patches); if it happens again, start a new training with a lower "
            f"lambda_max in MICD_CONFIG.")

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        means = {key: float(np.mean([output[key] for output in train_outputs])) for key in self.log_keys
                 if key in train_outputs[0]}
        if self.is_ddp:  # like nnU-Net's loss: the mean over every rank's steps (each rank takes as many)
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, means)
            means = {key: float(np.mean([rank_means[key] for rank_means in gathered])) for key in means}
        for key in self.log_keys:
            # terms switched off by an ablation are logged as NaN, so every list keeps one value per epoch
            value = self.unsupervised_weight if key == "unsupervised_weight" else means.get(key, float("nan"))
            self.logger.log(key, value, self.current_epoch)

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            self.logger.local_logger.plot_method_png(self.output_folder)

    # ------------------------------------------------------------------ checkpoints
    def inference_weights(self) -> dict:
        """What ``network_weights`` holds, the network nnU-Net's predictor will use."""
        return self.unwrapped_network.state_dict()

    def method_state(self) -> dict:
        """Training state of the method beyond students, teachers and the step counter."""
        return {}

    def load_method_state(self, state: dict) -> None:
        pass

    def write_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint keys (what its predictor and --c read) plus the method's training state under
        ``micd``."""
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
                "students": [student.state_dict() for student in self.students],
                "teachers": [teacher.state_dict() for teacher in self.teachers],
                "optimizer_step": self.optimizer_step,
                **self.method_state(),
            },
        }
        torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        if not isinstance(filename_or_checkpoint, str):
            raise TypeError(f"{self.__class__.__name__} checkpoints are loaded from their file path")
        # on the CPU: nnU-Net loads the file once more onto the device
        state = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False).get("micd")
        if state is None:
            raise ConfigError(f"{filename_or_checkpoint} is not a checkpoint of {self.__class__.__name__}")
        # a continued training must keep it (checked when training starts); validating (--val) need not
        self.resumed_config = state["config"]
        super().load_checkpoint(filename_or_checkpoint)
        for module, weights in zip((*self.students, *self.teachers), (*state["students"], *state["teachers"])):
            module.load_state_dict(weights)
        self.optimizer_step = state["optimizer_step"]
        self.load_method_state(state)

    def _refuse_changed_config(self, saved: dict) -> None:
        """A resumed run must continue the same method and schedule (ramp-up and EMA depend on both)."""
        current = self.effective_config()
        keys = ("num_epochs", "iterations_per_epoch")
        changed = [f"method.{k}: {v!r} -> {current['method'].get(k)!r}" for k, v in saved["method"].items()
                   if current["method"].get(k) != v]
        changed += [f"budget.{k}: {saved['budget'][k]!r} -> {current['budget'][k]!r}" for k in keys
                    if saved["budget"][k] != current["budget"][k]]
        if saved["trainer"] != current["trainer"]:
            changed.append(f"trainer: {saved['trainer']} -> {current['trainer']}")
        if changed:
            raise ConfigError("this run was started with another configuration; continue it with the same "
                              "MICD_CONFIG and budget, or start a new run. Changed: " + "; ".join(changed))
