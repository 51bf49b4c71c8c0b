"""Plain nnU-Net on the labeled cases, with the same budget variables as the MICD trainers.

A baseline is only fair at an equal budget, and nnUNetv2_train takes no extra flags, so the budget comes from
the environment (see :class:`nnunetv2_micd.method.config.TrainingBudget`).
"""
import os
import random

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, save_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_micd.method.config import TrainingBudget

EFFECTIVE_CONFIG_FILE = "micd_config.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class nnUNetTrainerBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget = TrainingBudget.from_environment()
        self.num_epochs = self.budget.num_epochs
        self.num_iterations_per_epoch = self.budget.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.budget.val_iterations
        self.save_every = self.budget.save_every
        self.trained_in_this_process = False
        if self.budget.seed is not None:
            # every rank of a multi-GPU run draws its own patches; DDP gives all ranks rank 0's initial weights
            seed_everything(self.budget.seed + self.local_rank)

    def effective_config(self) -> dict:
        """What this run was configured with; written next to the checkpoints."""
        return {"trainer": self.__class__.__name__, "budget": self.budget.to_dict()}

    def on_train_end(self):
        super().on_train_end()
        self.trained_in_this_process = True

    def final_validation_left_out(self) -> bool:
        """MICD_FINAL_VALIDATION=0 leaves nnU-Net's validation after training out; ``nnUNetv2_train --val`` always
        validates."""
        return self.trained_in_this_process and not self.budget.final_validation

    def perform_actual_validation(self, save_probabilities: bool = False):
        if self.final_validation_left_out():
            self.print_to_log_file("Final validation left out (MICD_FINAL_VALIDATION=0)")
            return
        super().perform_actual_validation(save_probabilities)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed: a crash while saving leaves the previous
        checkpoint intact."""
        if self.local_rank != 0 or self.disable_checkpointing:
            # nnU-Net writes nothing here; a rank that renamed rank 0's half-written file would break its save
            return super().save_checkpoint(filename)
        temporary = filename + ".tmp"
        self.write_checkpoint(temporary)
        os.replace(temporary, filename)

    def write_checkpoint(self, filename: str) -> None:
        """What a checkpoint holds: nnU-Net's."""
        super().save_checkpoint(filename)

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:
            save_json(self.effective_config(), join(self.output_folder, EFFECTIVE_CONFIG_FILE), sort_keys=False)
