"""Reading what the evaluations write: nnU-Net's summary.json and the literature's metrics of ``micd evaluate``."""
import os

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES


def case_name(image_file: str) -> str:
    """nnU-Net's case identifier of an image file: its name without the file ending of any nnU-Net reader
    (identifiers may contain dots, e.g. ``case.1.nii.gz``)."""
    name = os.path.basename(image_file)
    endings = [e for io_class in LIST_OF_IO_CLASSES for e in io_class.supported_file_endings if name.endswith(e)]
    return name[:-len(max(endings, key=len))] if endings else os.path.splitext(name)[0]


def dice_from_summary(summary_file: str) -> dict:
    """The Dice fields of a run (``DICE_FIELDS``) from a summary.json that nnUNetv2_evaluate_folder wrote: mean Dice
    per class, nnU-Net's foreground mean and each case's mean over the classes present in either image."""
    summary = load_json(summary_file)
    case_mean_dice = {}
    for case in summary["metric_per_case"]:
        dice = [m["Dice"] for m in case["metrics"].values() if not np.isnan(m["Dice"])]
        case_mean_dice[case_name(case["reference_file"])] = float(np.mean(dice)) if dice else None
    return {"dice": {label: float(values["Dice"]) for label, values in summary["mean"].items()},
            "mean_dice": float(summary["foreground_mean"]["Dice"]), "case_mean_dice": case_mean_dice}


def literature_from_summary(summary_file: str) -> dict:
    """From a summary_literature.json of ``micd evaluate``: per class and over classes, the mean Dice, Jaccard, HD95
    and ASD over volumes as the semi-supervised literature computes them, and the distances' unit."""
    summary = load_json(summary_file)
    return {"mean": summary["mean"], "foreground_mean": summary["foreground_mean"],
            "distance_unit": summary["distance_unit"]}
