"""Ablations of MICD: each switches off one part of the method and nothing else."""
from nnunetv2_micd.training.nnUNetTrainerMICD import nnUNetTrainerMICD


class nnUNetTrainerMICD_noMCPC(nnUNetTrainerMICD):
    config_overrides = {"weight_mcpc": 0.0}


class nnUNetTrainerMICD_noCFC(nnUNetTrainerMICD):
    config_overrides = {"weight_cfc": 0.0}


class nnUNetTrainerMICD_noCMD(nnUNetTrainerMICD):
    config_overrides = {"weight_cmd": 0.0}


class nnUNetTrainerMICD_noMask(nnUNetTrainerMICD):
    """MCPC without masking: plain cross pseudo supervision between the branches."""
    config_overrides = {"mask_ratio": 0.0}


class nnUNetTrainerMICD_homogeneous(nnUNetTrainerMICD):
    """Branch B has the same architecture as branch A (only the initialisation differs)."""
    heterogeneous_branches = False

