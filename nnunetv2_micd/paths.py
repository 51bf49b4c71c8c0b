"""Where this package's trainers live, for nnU-Net to find them (``nnUNet_extTrainer``)."""
import os


def trainer_path() -> str:
    """The folder that nnUNet_extTrainer must point to (shipped inside the installed package)."""
    import nnunetv2_micd.trainers
    return os.path.dirname(os.path.abspath(nnunetv2_micd.trainers.__file__))
