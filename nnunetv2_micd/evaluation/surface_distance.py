"""Surface distances between two binary masks, in millimetres, from the voxel spacing.

The surface of a mask is its voxels with at least one face neighbour outside the mask. Distances run from every
surface voxel of one mask to the nearest surface voxel of the other, found with one Euclidean distance transform
per direction on the box around both masks (exact: every surface voxel lies inside that box), so full CT volumes
cost little more than their organs.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the image border counts as outside): medpy's surface,
    the mask XOR its erosion by the connectivity-1 structure, which ``literature_metrics`` relies on."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _bounding_box(*masks: np.ndarray) -> Tuple[slice, ...]:
    """The box around both masks with one voxel to spare, so that surfaces found inside it are the true ones."""
    union = np.logical_or.reduce(masks)
    return tuple(slice(max(int(indices.min()) - 1, 0), min(int(indices.max()) + 2, size))
                 for indices, size in zip(np.nonzero(union), union.shape))


def surface_distances(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every surface voxel of ``prediction`` to the surface of ``reference``, and back.
    Both masks must be non-empty."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    if prediction.shape != reference.shape or len(spacing) != prediction.ndim:
        raise ValueError(f"masks of shapes {prediction.shape} and {reference.shape} with spacing {tuple(spacing)} "
                         f"do not match")
    if not prediction.any() or not reference.any():
        raise ValueError("surface distances need two non-empty masks")
    # a 2D image, as nnU-Net reads it (1, y, x): along a single-voxel axis every voxel would count as surface
    singleton_axes = tuple(axis for axis, size in enumerate(prediction.shape) if size == 1)
    if singleton_axes and len(singleton_axes) < prediction.ndim:
        prediction, reference = prediction.squeeze(singleton_axes), reference.squeeze(singleton_axes)
        spacing = [s for axis, s in enumerate(spacing) if axis not in singleton_axes]
    box = _bounding_box(prediction, reference)
    surface_prediction, surface_reference = surface(prediction[box]), surface(reference[box])
    to_reference = ndimage.distance_transform_edt(~surface_reference, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface_prediction, sampling=spacing)
    return to_reference[surface_prediction], to_prediction[surface_reference]


def surface_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """ASD, the mean over both directions' surface distances (symmetric), and HD95, the larger of the two
    directions' 95th percentiles, from one pass of :func:`surface_distances`."""
    forward, backward = surface_distances(prediction, reference, spacing)
    return {"ASD": float(np.concatenate((forward, backward)).mean()),
            "HD95": float(max(np.percentile(forward, 95), np.percentile(backward, 95)))}
