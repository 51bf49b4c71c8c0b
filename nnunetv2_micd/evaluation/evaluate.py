"""``micd evaluate``: nnU-Net's evaluation plus the surface metrics that semi-supervised papers report.

nnU-Net's ``compute_metrics_on_folder2`` writes ``summary.json`` (Dice, IoU, counts) as usual; this adds
``summary_surface.json`` with the average surface distance (ASD, symmetric) and HD95 per case and class, in
millimetres from the reference image's spacing, and their means over cases.

The conventions (``CONVENTIONS``) are also written into the summary.
"""
import multiprocessing
from typing import Dict, List, Optional

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json, subfiles
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2, region_or_label_to_mask
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_micd.evaluation.surface_distance import surface_metrics

SURFACE_SUMMARY_FILE = "summary_surface.json"
CONVENTIONS = ("Per case and class: both masks empty -> ASD and HD95 undefined (null), left out of the means, as "
               "nnU-Net does with Dice; one mask empty (a missed or a hallucinated structure) -> undefined as well, "
               "since no distance exists, and counted per class as n_one_empty (its Dice is 0 in summary.json); "
               "ASD is symmetric (mean over both directions' surface distances); HD95 is the larger of the two "
               "directions' 95th percentiles; distances in mm from the reference's spacing; the ignore label is "
               "not applied to surfaces.")


def surface_metrics_of_case(reference_file: str, prediction_file: str, reader_writer_class, labels_or_regions) -> Dict:
    reader = reader_writer_class()
    reference, properties = reader.read_seg(reference_file)
    prediction, _ = reader.read_seg(prediction_file)
    spacing = properties["spacing"]
    metrics = {}
    for label in labels_or_regions:
        mask_reference = region_or_label_to_mask(reference[0], label)
        mask_prediction = region_or_label_to_mask(prediction[0], label)
        defined = mask_reference.any() and mask_prediction.any()
        distances = surface_metrics(mask_prediction, mask_reference, spacing) if defined \
            else {"ASD": None, "HD95": None}
        metrics[str(label)] = {**distances, "one_empty": bool(mask_reference.any() != mask_prediction.any())}
    return {"reference_file": reference_file, "prediction_file": prediction_file, "metrics": metrics}


def _means(cases: List[Dict], labels: List[str]) -> Dict[str, Dict]:
    means = {}
    for label in labels:
        values = {metric: [c["metrics"][label][metric] for c in cases if c["metrics"][label][metric] is not None]
                  for metric in ("ASD", "HD95")}
        means[label] = {metric: float(np.mean(v)) if v else None for metric, v in values.items()}
        means[label]["n_one_empty"] = sum(c["metrics"][label]["one_empty"] for c in cases)
    return means


def evaluate_folder(reference_folder: str, prediction_folder: str, dataset_json_file: str, plans_file: str,
                    num_processes: int = 2) -> Dict:
    """Writes nnU-Net's summary.json and summary_surface.json into the prediction folder; returns both."""
    dataset_json = load_json(dataset_json_file)
    file_ending = dataset_json["file_ending"]
    predictions = subfiles(prediction_folder, suffix=file_ending, join=False)
    if not predictions:
        raise FileNotFoundError(f"no predictions ending in {file_ending} in {prediction_folder}")
    missing = [p for p in predictions if not isfile(join(reference_folder, p))]
    if missing:
        raise FileNotFoundError(f"no reference in {reference_folder} for {missing}")
    # nnU-Net evaluates every reference
    missing = sorted(set(subfiles(reference_folder, suffix=file_ending, join=False)) - set(predictions))
    if missing:
        raise FileNotFoundError(f"no prediction in {prediction_folder} for {missing}")
    compute_metrics_on_folder2(reference_folder, prediction_folder, dataset_json_file, plans_file,
                               num_processes=num_processes)
    label_manager = PlansManager(plans_file).get_label_manager(dataset_json)
    labels = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    reader_writer = determine_reader_writer_from_dataset_json(dataset_json, join(reference_folder, predictions[0]))
    arguments = [(join(reference_folder, p), join(prediction_folder, p), reader_writer, labels) for p in predictions]
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        cases = pool.starmap(surface_metrics_of_case, arguments)
    label_keys = [str(label) for label in labels]
    means = _means(cases, label_keys)
    foreground_values = {metric: [means[k][metric] for k in label_keys if means[k][metric] is not None]
                         for metric in ("ASD", "HD95")}
    surface_summary = {"metric_per_case": cases, "mean": means,
                       "foreground_mean": {m: float(np.mean(v)) if v else None
                                           for m, v in foreground_values.items()},
                       "conventions": CONVENTIONS}
    save_json(surface_summary, join(prediction_folder, SURFACE_SUMMARY_FILE), sort_keys=False)
    return {"summary": load_json(join(prediction_folder, "summary.json")), "surface": surface_summary}


def format_table(result: Dict, class_names: Optional[Dict[str, str]] = None) -> List[str]:
    """One line per class: Dice (nnU-Net's mean), ASD and HD95 in mm, and how many cases had one mask empty."""
    summary, surface = result["summary"], result["surface"]
    lines = [f"{'class':<24} {'Dice':>7} {'ASD mm':>8} {'HD95 mm':>8} {'one empty':>10}"]

    def number(value):
        return "n/a" if value is None else f"{value:.3f}"

    for label, values in surface["mean"].items():
        name = (class_names or {}).get(label, label)
        lines.append(f"{name:<24} {number(summary['mean'][label]['Dice']):>7} {number(values['ASD']):>8} "
                     f"{number(values['HD95']):>8} {values['n_one_empty']:>10}")
    lines.append(f"{'mean':<24} {number(summary['foreground_mean']['Dice']):>7} "
                 f"{number(surface['foreground_mean']['ASD']):>8} {number(surface['foreground_mean']['HD95']):>8}")
    return lines
