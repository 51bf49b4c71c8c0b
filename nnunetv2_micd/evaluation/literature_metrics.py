"""Dice, Jaccard, HD95 and ASD per volume and class, computed as the ACDC semi-supervised literature reports them.

Papers built on SSL4MIS (BCP, ABD, ...) compare methods on ACDC with medpy's ``dc``, ``jc``, ``hd95`` and ``asd``
per test volume and class, averaged over volumes, then over the classes (RV, Myo, LV). Their conventions differ
from nnU-Net's and from ``summary_surface.json`` (see ``CONVENTIONS``), so their published tables can only be
matched by figures computed their way, which this module does without medpy. Sources read (facts only):

- HiLab-git/SSL4MIS ``code/test_2D_fully.py``: per test volume and class, medpy's dc, hd95 and asd of the
  prediction against the reference on the whole 3D volume, without voxel spacing (distances in voxels, a step
  between slices counting 1 like a step within one); each
  figure summed over volumes and divided by their number, then the three classes' figures averaged. No guard for
  an empty mask. ``code/val_2D.py`` (validation during training) scores an empty prediction 0 Dice and 0 HD95.
- DeepMed-Lab-ECNU/BCP ``code/LA&ACDC/test_ACDC.py`` and chy-upc/ABD ``code/test_ACDC.py``: the same, with jc
  added; a class absent from the prediction scores 0 for Dice, Jaccard, HD95 and ASD alike (whatever the
  reference holds), and these zeros count in the means.
- loli/medpy ``medpy/metric/binary.py`` (hd95 since 0.4.0): a mask's surface is the mask XOR its erosion by the
  connectivity-1 structure, with scipy's default border (outside the image is background, so mask voxels on the
  image border are surface); ``asd`` is one-directional, the mean distance from the first mask's (the
  prediction's) surface voxels to the nearest surface voxel of the second; ``hd95`` is the 95th percentile
  (numpy's linear interpolation) of both directions' distances pooled together, not the larger of the two
  directions' 95th percentiles; dc and jc are 1 when both masks are empty; asd and hd95 raise on an empty mask.

The surfaces of ``surface_distance.py`` (voxels with a face neighbour outside the mask, the image border counting
as outside) are medpy's, so its distances are reused here. Distances are in voxels unless a spacing is given; the
ACDC import from the papers' h5 volumes (which carry no spacing) writes 1 mm spacing, so there the voxel figures
equal millimetres.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from nnunetv2_micd.evaluation.surface_distance import surface_distances

LITERATURE_SUMMARY_FILE = "summary_literature.json"
METRICS = ("Dice", "Jaccard", "HD95", "ASD")
EMPTY_PREDICTION_SCORES = {"Dice": 0.0, "Jaccard": 0.0, "HD95": 0.0, "ASD": 0.0}
CONVENTIONS = ("As the ACDC semi-supervised literature (SSL4MIS, BCP, ABD) computes them with medpy, per volume and "
               "class: a class absent from the prediction scores 0 for Dice, Jaccard, HD95 and ASD, also when the "
               "reference lacks it, and these zeros count in the means (counted per class as n_empty_prediction); "
               "a class predicted but absent from the reference (where the papers' code stops with an error) has "
               "Dice and Jaccard 0 and undefined (null) HD95 and ASD, left out of the means (n_empty_reference); "
               "ASD is one-directional: the mean distance from the prediction's surface voxels to the reference's "
               "surface; HD95 is the 95th percentile of both directions' surface distances pooled; surfaces are "
               "the voxels with a face neighbour outside the mask, the image border counting as outside; "
               "distances in voxels (no spacing, as the papers) unless distance_unit says mm; per class the mean "
               "over volumes, then the mean over classes; the ignore label is not applied.")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """2|P and R| / (|P| + |R|); only called with a non-empty prediction, so never 0/0."""
    overlap = np.count_nonzero(prediction & reference)
    return float(2 * overlap / (np.count_nonzero(prediction) + np.count_nonzero(reference)))


def jaccard(prediction: np.ndarray, reference: np.ndarray) -> float:
    """|P and R| / |P or R|; only called with a non-empty prediction, so never 0/0."""
    return float(np.count_nonzero(prediction & reference) / np.count_nonzero(prediction | reference))


def literature_distances(prediction: np.ndarray, reference: np.ndarray,
                         spacing: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """medpy's HD95 (both directions pooled) and one-directional ASD (prediction to reference); in voxels without
    ``spacing``. Both masks must be non-empty."""
    forward, backward = surface_distances(prediction, reference, spacing or (1.0,) * prediction.ndim)
    return {"HD95": float(np.percentile(np.concatenate((forward, backward)), 95)), "ASD": float(forward.mean())}


def literature_metrics(prediction: np.ndarray, reference: np.ndarray,
                       spacing: Optional[Sequence[float]] = None) -> Dict[str, Optional[float]]:
    """Dice, Jaccard, HD95 and ASD of one class in one volume, with the literature's empty-mask convention."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    if not prediction.any():
        return dict(EMPTY_PREDICTION_SCORES)
    overlap = {"Dice": dice(prediction, reference), "Jaccard": jaccard(prediction, reference)}
    if not reference.any():
        return {**overlap, "HD95": None, "ASD": None}
    return {**overlap, **literature_distances(prediction, reference, spacing)}


def literature_record(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> Dict:
    """:func:`literature_metrics` and which empty-mask rule applied, which :func:`class_means` counts."""
    predicted, present = bool(prediction.any()), bool(reference.any())
    return {**literature_metrics(prediction, reference, spacing), "empty_prediction": not predicted,
            "empty_reference": predicted and not present}


def mean_of_defined(values: List[Optional[float]]) -> Optional[float]:
    """The mean of the defined values; None when there are none."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def summarize_cases(cases: List[Dict], labels: List[str], metrics: Sequence[str], counted: Sequence[str],
                    conventions: str) -> Dict:
    """A summary from per-case results (``{"metrics": {label: {...}}}``): per class each metric's mean over the
    cases where it is defined and ``n_<flag>``, how many cases each flag in ``counted`` marks; over classes the mean
    of those means."""
    means = {}
    for label in labels:
        per_case = [case["metrics"][label] for case in cases]
        means[label] = {**{metric: mean_of_defined([case[metric] for case in per_case]) for metric in metrics},
                        **{f"n_{flag}": sum(case[flag] for case in per_case) for flag in counted}}
    return {"metric_per_case": cases, "mean": means,
            "foreground_mean": {metric: mean_of_defined([means[label][metric] for label in labels])
                                for metric in metrics},
            "conventions": conventions}


def summarize(cases: List[Dict], labels: List[str], distance_unit: str) -> Dict:
    """The literature's table: per class the mean over volumes, and the mean of those over classes."""
    return {**summarize_cases(cases, labels, METRICS, ("empty_prediction", "empty_reference"), CONVENTIONS),
            "distance_unit": distance_unit}
