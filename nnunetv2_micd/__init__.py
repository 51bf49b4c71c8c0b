"""Semi-supervised segmentation (MICD) as an nnU-Net v2 extension."""

__version__ = "0.1.0"
