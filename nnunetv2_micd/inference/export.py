"""Student A of a MICD model as an ordinary nnU-Net model folder, which plain nnU-Net predicts without this package.

Branch A is exactly the network nnU-Net plans, so only the checkpoints change: their ``network_weights`` become
student A's weights and their trainer becomes ``nnUNetTrainer``. The prediction then costs one network per patch
instead of two (at the price of the ensemble's accuracy).
"""
import os
import shutil
from typing import Sequence

import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, maybe_mkdir_p, subdirs

from nnunetv2_micd.errors import DataError, MissingInputError, UsageError

MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
PREDICTION_KEYS = ("init_args", "current_epoch", "inference_allowed_mirroring_axes")


def plain_checkpoint(micd_checkpoint: dict) -> dict:
    if "micd" not in micd_checkpoint:
        raise DataError("not a MICD checkpoint (no 'micd' entry)")
    plain = {key: micd_checkpoint[key] for key in PREDICTION_KEYS if key in micd_checkpoint}
    plain["network_weights"] = micd_checkpoint["micd"]["students"][0]
    plain["trainer_name"] = "nnUNetTrainer"
    return plain


def export_plain(micd_model_folder: str, output_folder: str, folds: Sequence[str] = None) -> str:
    """Writes the plain model folder (nnU-Net's layout: model files plus ``fold_X/checkpoint_*.pth``)."""
    if not isdir(micd_model_folder):
        raise MissingInputError(f"no model folder {micd_model_folder}")
    if os.path.abspath(micd_model_folder) == os.path.abspath(output_folder):
        raise UsageError("the plain model needs its own folder")
    available = sorted(d[len("fold_"):] for d in subdirs(micd_model_folder, prefix="fold_", join=False))
    folds = available if folds is None else [str(f) for f in folds]
    missing = [f for f in folds if f not in available]
    if missing or not folds:
        raise MissingInputError(f"fold(s) {missing or folds} not in {micd_model_folder} (found {available})")

    checkpoints = {fold: [n for n in CHECKPOINTS if isfile(join(micd_model_folder, f"fold_{fold}", n))]
                   for fold in folds}
    for fold, names in checkpoints.items():
        if not names:
            raise MissingInputError(f"fold_{fold} of {micd_model_folder} has no {' or '.join(CHECKPOINTS)}")

    maybe_mkdir_p(output_folder)
    for name in MODEL_FILES:
        if isfile(join(micd_model_folder, name)):
            shutil.copy(join(micd_model_folder, name), join(output_folder, name))
    for fold, names in checkpoints.items():
        maybe_mkdir_p(join(output_folder, f"fold_{fold}"))
        for name in names:
            checkpoint = torch.load(join(micd_model_folder, f"fold_{fold}", name), map_location="cpu",
                                    weights_only=False)
            torch.save(plain_checkpoint(checkpoint), join(output_folder, f"fold_{fold}", name))
    return output_folder
