"""A small synthetic 3D dataset that behaves like a real segmentation task.

Each volume holds a body of soft tissue with three structures of different size (one of them small) at random
positions, with noise, a smooth bias field and a random intensity scale, so that intensity normalisation,
patch sampling and the small-structure problem all matter as they do on real scans. Written in nnU-Net's raw
format (with ``imagesUnlabeled/`` for the unlabeled cases) so the whole pipeline runs on it unchanged.
"""
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

LABELS = {"background": 0, "large": 1, "medium": 2, "small": 3}


@dataclass(frozen=True)
class SyntheticSpec:
    num_labeled: int = 6
    num_unlabeled: int = 24
    num_test: int = 8
    shape: Tuple[int, int, int] = (32, 32, 32)
    spacing: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0


def _ellipsoid(grid: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((grid - center[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1


def synthetic_case(shape: Tuple[int, int, int], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair; image float32, label uint8 with the values of LABELS."""
    shape_arr = np.array(shape, dtype=float)
    grid = np.indices(shape).astype(np.float32)
    body = _ellipsoid(grid, shape_arr / 2, shape_arr * rng.uniform(0.40, 0.46, 3))
    label = np.zeros(shape, dtype=np.uint8)
    image = np.where(body, 1.0, 0.0).astype(np.float32)

    # structures: (label, radius as a fraction of the volume, intensity relative to tissue)
    structures = ((LABELS["large"], 0.17, 2.0), (LABELS["medium"], 0.12, 0.35), (LABELS["small"], 0.07, 2.8))
    for value, radius_fraction, intensity in structures:
        radii = shape_arr * radius_fraction * rng.uniform(0.8, 1.25, 3)
        for _ in range(100):  # place inside the body without overlapping earlier structures
            center = shape_arr / 2 + rng.uniform(-0.22, 0.22, 3) * shape_arr
            mask = _ellipsoid(grid, center, radii)
            if not np.any(mask & (label > 0)) and np.all(body[mask]):
                break
        label[mask & (label == 0)] = value
        image[mask] = intensity * rng.uniform(0.85, 1.15)

    bias = 1 + 0.25 * np.sin(grid[0] / shape[0] * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi))
    image = image * bias + rng.normal(0, 0.25, shape).astype(np.float32) * body
    image = image * rng.uniform(50, 400) + rng.uniform(0, 20)  # scanner-like arbitrary scale and offset
    image[~body] = 0
    return image.astype(np.float32), label


def _write(array: np.ndarray, spacing, path: str) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(img, path)


def write_synthetic_dataset(raw_dataset_folder: str, spec: SyntheticSpec = SyntheticSpec()) -> str:
    """Writes imagesTr/labelsTr, imagesUnlabeled, imagesTs/labelsTs and dataset.json; returns the folder."""
    rng = np.random.default_rng(spec.seed)
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs"):
        maybe_mkdir_p(join(raw_dataset_folder, sub))
    splits = (("Tr", "labelsTr", spec.num_labeled), ("Unlabeled", None, spec.num_unlabeled),
              ("Ts", "labelsTs", spec.num_test))
    case_index = 0
    for image_suffix, label_folder, count in splits:
        for _ in range(count):
            image, label = synthetic_case(spec.shape, rng)
            case = f"synth_{case_index:03d}"
            _write(image, spec.spacing, join(raw_dataset_folder, f"images{image_suffix}", f"{case}_0000.nii.gz"))
            if label_folder is not None:
                _write(label, spec.spacing, join(raw_dataset_folder, label_folder, f"{case}.nii.gz"))
            case_index += 1
    generate_dataset_json(raw_dataset_folder, {0: "MRI"}, LABELS, spec.num_labeled, ".nii.gz",
                          dataset_name=os.path.basename(raw_dataset_folder),
                          description="Synthetic structures of three sizes in noisy tissue (nnunetv2-micd)",
                          license="CC0", converted_by="nnunetv2_micd.dataset_conversion.synthetic")
    return raw_dataset_folder
