"""Cross pseudo supervision as a MICD configuration: the same code path, so the comparison is like for like."""
from nnunetv2_micd.training.nnUNetTrainerMICD import nnUNetTrainerMICD


class nnUNetTrainerCPS(nnUNetTrainerMICD):
    """Cross pseudo supervision (Chen et al., 2021), a baseline at equal settings: two students of nnU-Net's
    planned architecture, each fitting the other's hard pseudo-label (every one, however unconfident) on labeled and
    unlabeled patches. No masking, features, teachers or class weights; prediction averages both students, like
    MICD's."""
    heterogeneous_branches = False
    config_overrides = {"weight_cfc": 0.0, "weight_cmd": 0.0, "mask_ratio": 0.0, "class_weighting": "none",
                        "confidence_threshold": 0.0, "inference_mode": "ensemble"}
