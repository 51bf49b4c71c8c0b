"""Trained models out of nnU-Net's results folder, in the forms nnU-Net itself reads.

- ``micd export-plain``: student A of a MICD model as an ordinary nnU-Net model folder, which plain nnU-Net predicts
  without this package. Branch A is exactly the network nnU-Net plans, so only the checkpoints change: their
  ``network_weights`` become student A's weights and their trainer becomes ``nnUNetTrainer``. The prediction then
  costs one network per patch instead of two (at the price of the ensemble's accuracy).
- ``micd export-model``: any model of this package as a zip to share, in ``nnUNetv2_export_model_to_zip``'s layout
  (paths from nnUNet_results, so ``nnUNetv2_install_pretrained_model_from_zip`` installs it and an unpacked copy is a
  folder for ``nnUNetv2_predict_from_modelfolder``). Unlike nnU-Net's exporter it needs no
  ``validation/summary.json`` (a model evaluated on a held-out split has none), and its checkpoints keep only what
  prediction reads: the optimizer state, the method's training state (students, teachers, class weights) and the
  logs are left out. A MICD model still needs this package, with ``nnUNet_extTrainer``, to predict.
"""
import io
import os
import shutil
import zipfile
from typing import Dict, List, Sequence

import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, maybe_mkdir_p, subdirs

from nnunetv2_micd.errors import DataError, MissingInputError, UsageError

MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
PREDICTION_KEYS = ("init_args", "current_epoch", "inference_allowed_mirroring_axes")
#: what a shared fold folder holds besides its checkpoints, where training wrote them
FOLD_FILES = ("debug.json", "progress.png", "micd_config.json")


def plain_checkpoint(micd_checkpoint: dict) -> dict:
    if "micd" not in micd_checkpoint:
        raise DataError("not a MICD checkpoint (no 'micd' entry)")
    plain = {key: micd_checkpoint[key] for key in PREDICTION_KEYS if key in micd_checkpoint}
    plain["network_weights"] = micd_checkpoint["micd"]["students"][0]
    plain["trainer_name"] = "nnUNetTrainer"
    return plain


def prediction_checkpoint(checkpoint: dict) -> dict:
    """What nnU-Net's predictor reads of a checkpoint, and nothing else."""
    return {key: checkpoint[key] for key in ("network_weights", "trainer_name", *PREDICTION_KEYS) if key in checkpoint}


def _checkpoints_of_folds(model_folder: str, folds, names: Sequence[str]) -> Dict[str, List[str]]:
    """For each requested fold (default: all found), those of ``names`` it holds; refused when one holds none."""
    if not isdir(model_folder):
        raise MissingInputError(f"no model folder {model_folder}")
    available = sorted(d[len("fold_"):] for d in subdirs(model_folder, prefix="fold_", join=False))
    folds = available if folds is None else [str(f) for f in folds]
    missing = [f for f in folds if f not in available]
    if missing or not folds:
        raise MissingInputError(f"fold(s) {missing or folds} not in {model_folder} (found {available})")
    checkpoints = {fold: [n for n in names if isfile(join(model_folder, f"fold_{fold}", n))] for fold in folds}
    for fold, found in checkpoints.items():
        if not found:
            raise MissingInputError(f"fold_{fold} of {model_folder} has no {' or '.join(names)}")
    return checkpoints


def export_plain(micd_model_folder: str, output_folder: str, folds: Sequence[str] = None) -> str:
    """Writes the plain model folder (nnU-Net's layout: model files plus ``fold_X/checkpoint_*.pth``)."""
    if os.path.abspath(micd_model_folder) == os.path.abspath(output_folder):
        raise UsageError("the plain model needs its own folder")
    checkpoints = _checkpoints_of_folds(micd_model_folder, folds, CHECKPOINTS)
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


def export_model_zip(model_folder: str, output_file: str, folds: Sequence[str] = None,
                     checkpoint: str = "checkpoint_final.pth") -> List[str]:
    """Writes the zip (complete or not at all) and returns the paths it holds."""
    model_folder = os.path.abspath(model_folder)
    checkpoints = _checkpoints_of_folds(model_folder, folds, (checkpoint,))
    missing = [name for name in ("plans.json", "dataset.json") if not isfile(join(model_folder, name))]
    if missing:
        raise MissingInputError(f"{model_folder} has no {' or '.join(missing)}: not an nnU-Net model folder")
    # nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>
    prefix = f"{os.path.basename(os.path.dirname(model_folder))}/{os.path.basename(model_folder)}"
    partial = f"{output_file}.partial"
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in MODEL_FILES:
                if isfile(join(model_folder, name)):
                    archive.write(join(model_folder, name), f"{prefix}/{name}")
            for fold in checkpoints:
                fold_folder = join(model_folder, f"fold_{fold}")
                for name in FOLD_FILES:
                    if isfile(join(fold_folder, name)):
                        archive.write(join(fold_folder, name), f"{prefix}/fold_{fold}/{name}")
                saved = io.BytesIO()
                torch.save(prediction_checkpoint(torch.load(join(fold_folder, checkpoint), map_location="cpu",
                                                            weights_only=False)), saved)
                archive.writestr(f"{prefix}/fold_{fold}/{checkpoint}", saved.getvalue())
            names = archive.namelist()
        os.replace(partial, output_file)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return names
