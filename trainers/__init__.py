"""Trainer classes for nnU-Net (nnUNet_extTrainer points here); the logic lives in nnunetv2_micd."""
