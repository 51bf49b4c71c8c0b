"""The trainers nnU-Net finds through nnUNet_extTrainer. They are defined in the installed package, so that
nnU-Net's worker processes can unpickle them."""
from nnunetv2_micd.training.nnUNetTrainerBudget import nnUNetTrainerBudget
from nnunetv2_micd.training.nnUNetTrainerCPS import nnUNetTrainerCPS
from nnunetv2_micd.training.nnUNetTrainerMeanTeacher import nnUNetTrainerMeanTeacher
from nnunetv2_micd.training.nnUNetTrainerMICD import nnUNetTrainerMICD
from nnunetv2_micd.training.variants import (nnUNetTrainerMICD_homogeneous, nnUNetTrainerMICD_noCFC,
                                             nnUNetTrainerMICD_noCMD, nnUNetTrainerMICD_noMask,
                                             nnUNetTrainerMICD_noMCPC)

__all__ = ["nnUNetTrainerBudget", "nnUNetTrainerMICD", "nnUNetTrainerMICD_noMCPC", "nnUNetTrainerMICD_noCFC",
           "nnUNetTrainerMICD_noCMD", "nnUNetTrainerMICD_noMask", "nnUNetTrainerMICD_homogeneous",
           "nnUNetTrainerMeanTeacher", "nnUNetTrainerCPS"]
