"""``micd evaluate``: nnU-Net's evaluation plus the surface metrics that semi-supervised papers report.

nnU-Net's ``compute_metrics_on_folder2`` writes ``summary.json`` (Dice, IoU, counts) as usual; this adds
``summary_surface.json`` with the average surface distance (ASD, symmetric) and HD95 per case and class, in
millimetres from the reference image's spacing, and their means over cases, and ``summary_literature.json`` with
Dice, Jaccard, HD95 and ASD computed as the ACDC semi-supervised literature does (``literature_metrics``; in voxels,
which equal millimetres at the 1 mm spacing of the ACDC h5 import).

The conventions (``CONVENTIONS`` here and in ``literature_metrics``) are also written into the summaries.
"""
import multiprocessing
from typing import Dict, List, Optional, Tuple

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json, subfiles
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2, region_or_label_to_mask
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_micd.errors import MissingInputError
from nnunetv2_micd.evaluation.literature_metrics import LITERATURE_SUMMARY_FILE, literature_record, summarize, \
    summarize_cases
from nnunetv2_micd.evaluation.surface_distance import surface_metrics

SURFACE_SUMMARY_FILE = "summary_surface.json"
CONVENTIONS = ("Per case and class: both masks empty -> ASD and HD95 undefined (null), left out of the means, as "
               "nnU-Net does with Dice; one mask empty (a missed or a hallucinated structure) -> undefined as well, "
               "since no distance exists, and counted per class as n_one_empty (its Dice is 0 in summary.json); "
               "ASD is symmetric (mean over both directions' surface distances); HD95 is the larger of the two "
               "directions' 95th percentiles; distances in mm from the reference's spacing; the ignore label is "
               "not applied to surfaces.")


def _read_case(reference_file: str, prediction_file: str, reader_writer_class) -> Tuple:
    """Both label maps without nnU-Net's channel axis, and the reference's spacing (mm, in array axis order)."""
    reader = reader_writer_class()
    reference, properties = reader.read_seg(reference_file)
    prediction, _ = reader.read_seg(prediction_file)
    return reference[0], prediction[0], properties["spacing"]


def _surface_record(mask_prediction: np.ndarray, mask_reference: np.ndarray, spacing) -> Dict:
    """Symmetric ASD and HD95 (mm) of one class, undefined unless both masks hold it."""
    defined = mask_reference.any() and mask_prediction.any()
    distances = surface_metrics(mask_prediction, mask_reference, spacing) if defined else {"ASD": None, "HD95": None}
    return {**distances, "one_empty": bool(mask_reference.any() != mask_prediction.any())}


def metrics_of_case(reference_file: str, prediction_file: str, reader_writer_class, labels_or_regions,
                    literature_in_mm: bool = False) -> Tuple[Dict, Dict]:
    """One case, read once: its surface metrics (mm) and the literature's (voxels unless ``literature_in_mm``)."""
    reference, prediction, spacing = _read_case(reference_file, prediction_file, reader_writer_class)
    surface, literature = {}, {}
    for label in labels_or_regions:
        mask_reference = region_or_label_to_mask(reference, label)
        mask_prediction = region_or_label_to_mask(prediction, label)
        surface[str(label)] = _surface_record(mask_prediction, mask_reference, spacing)
        literature[str(label)] = literature_record(mask_prediction, mask_reference,
                                                   spacing if literature_in_mm else None)
    files = {"reference_file": reference_file, "prediction_file": prediction_file}
    return {**files, "metrics": surface}, {**files, "metrics": literature}


def _surface_summary(cases: List[Dict], label_keys: List[str]) -> Dict:
    """Means over cases per class and over classes, leaving undefined distances out."""
    return summarize_cases(cases, label_keys, ("ASD", "HD95"), ("one_empty",), CONVENTIONS)


def _paired_predictions(reference_folder: str, prediction_folder: str, file_ending: str) -> List[str]:
    """The prediction files, each with its reference; nnU-Net evaluates every reference, so none may lack one."""
    predictions = subfiles(prediction_folder, suffix=file_ending, join=False)
    if not predictions:
        raise MissingInputError(f"no predictions ending in {file_ending} in {prediction_folder}")
    missing = [p for p in predictions if not isfile(join(reference_folder, p))]
    if missing:
        raise MissingInputError(f"no reference in {reference_folder} for {missing}")
    missing = sorted(set(subfiles(reference_folder, suffix=file_ending, join=False)) - set(predictions))
    if missing:
        raise MissingInputError(f"no prediction in {prediction_folder} for {missing}")
    return predictions


def evaluate_folder(reference_folder: str, prediction_folder: str, dataset_json_file: str, plans_file: str,
                    num_processes: int = 2, literature_in_mm: bool = False) -> Dict:
    """Writes nnU-Net's summary.json, summary_surface.json and summary_literature.json into the prediction folder;
    returns all three."""
    dataset_json = load_json(dataset_json_file)
    predictions = _paired_predictions(reference_folder, prediction_folder, dataset_json["file_ending"])
    compute_metrics_on_folder2(reference_folder, prediction_folder, dataset_json_file, plans_file,
                               num_processes=num_processes)
    label_manager = PlansManager(plans_file).get_label_manager(dataset_json)
    labels = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    reader_writer = determine_reader_writer_from_dataset_json(dataset_json, join(reference_folder, predictions[0]))
    arguments = [(join(reference_folder, p), join(prediction_folder, p), reader_writer, labels, literature_in_mm)
                 for p in predictions]
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        surface_cases, literature_cases = zip(*pool.starmap(metrics_of_case, arguments))
    label_keys = [str(label) for label in labels]
    surface_summary = _surface_summary(list(surface_cases), label_keys)
    literature_summary = summarize(list(literature_cases), label_keys, "mm" if literature_in_mm else "voxels")
    save_json(surface_summary, join(prediction_folder, SURFACE_SUMMARY_FILE), sort_keys=False)
    save_json(literature_summary, join(prediction_folder, LITERATURE_SUMMARY_FILE), sort_keys=False)
    return {"summary": load_json(join(prediction_folder, "summary.json")), "surface": surface_summary,
            "literature": literature_summary}


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(result: Dict, class_names: Optional[Dict[str, str]] = None) -> List[str]:
    """One line per class: Dice (nnU-Net's mean), ASD and HD95 in mm, and how many cases had one mask empty."""
    summary, surface = result["summary"], result["surface"]
    lines = [f"{'class':<24} {'Dice':>7} {'ASD mm':>8} {'HD95 mm':>8} {'one empty':>10}"]
    for label, values in surface["mean"].items():
        name = (class_names or {}).get(label, label)
        lines.append(f"{name:<24} {_number(summary['mean'][label]['Dice']):>7} {_number(values['ASD']):>8} "
                     f"{_number(values['HD95']):>8} {values['n_one_empty']:>10}")
    lines.append(f"{'mean':<24} {_number(summary['foreground_mean']['Dice']):>7} "
                 f"{_number(surface['foreground_mean']['ASD']):>8} {_number(surface['foreground_mean']['HD95']):>8}")
    return lines


def format_literature_table(literature: Dict, class_names: Optional[Dict[str, str]] = None) -> List[str]:
    """The papers' table: Dice, Jaccard, HD95 and ASD per class and their mean over classes, and per class how many
    volumes had it missing from the prediction (scored 0 on all four, as the papers do)."""
    unit = "vox" if literature["distance_unit"] == "voxels" else "mm"
    lines = ["As the ACDC semi-supervised literature reports them (SSL4MIS, BCP, ABD conventions),",
             "distances in " + ("voxels (= mm at the 1 mm spacing of the ACDC h5 import)" if unit == "vox" else "mm"),
             f"{'class':<24} {'Dice':>7} {'Jaccard':>8} {'HD95 ' + unit:>9} {'ASD ' + unit:>8} {'pred empty':>11}"]

    def row(name: str, values: Dict, empty_predictions="") -> str:
        return (f"{name:<24} {_number(values['Dice']):>7} {_number(values['Jaccard']):>8} "
                f"{_number(values['HD95']):>9} {_number(values['ASD']):>8} {empty_predictions:>11}").rstrip()

    for label, values in literature["mean"].items():
        lines.append(row((class_names or {}).get(label, label), values, values["n_empty_prediction"]))
    lines.append(row("mean", literature["foreground_mean"]))
    return lines
