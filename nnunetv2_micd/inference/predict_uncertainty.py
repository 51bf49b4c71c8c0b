"""``micd predict-uncertainty``: a folder of images predicted as ``nnUNetv2_predict`` would, with uncertainty maps
and a per-case summary (the folder's layout: nnunetv2_micd.inference.uncertainty_folder).

A case is done once it is in uncertainty.json: a rerun predicts only the others.
"""
import os
import shutil
from typing import Optional, Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p, save_json
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder, \
    get_identifiers_from_splitted_dataset_folder
from tqdm import tqdm

from nnunetv2_micd.errors import DataError, MissingInputError
from nnunetv2_micd.evaluation.classes import foreground_classes
from nnunetv2_micd.inference.uncertainty import UncertaintyPredictor, case_summary
from nnunetv2_micd.inference.uncertainty_folder import MAPS_FOLDER, SUMMARY_FILE, map_file


def predict_with_uncertainty(input_folder: str, output_folder: str, model_folder: str, folds: Sequence,
                             checkpoint: str = "checkpoint_final.pth", device: Optional[torch.device] = None) -> dict:
    """Predicts every case of ``input_folder`` with the model in ``model_folder``; returns the contents of
    uncertainty.json."""
    if not os.path.isdir(model_folder):
        raise MissingInputError(f"model folder {model_folder} does not exist (train it with nnUNetv2_train first)")
    dataset_json = load_json(join(model_folder, "dataset.json"))
    ending = dataset_json["file_ending"]
    identifiers = list(get_identifiers_from_splitted_dataset_folder(input_folder, ending)) \
        if os.path.isdir(input_folder) else []
    if not identifiers:
        raise DataError(f"no images named CASE_XXXX{ending} in {input_folder}")
    files = dict(zip(identifiers, create_lists_from_splitted_dataset_folder(input_folder, ending, identifiers)))
    maybe_mkdir_p(join(output_folder, MAPS_FOLDER))
    summary_file = join(output_folder, SUMMARY_FILE)
    record = {"model": os.path.abspath(model_folder), "folds": [str(f) for f in folds], "checkpoint": checkpoint,
              "cases": {}}
    if isfile(summary_file):
        previous = load_json(summary_file)
        if (previous["model"], previous["folds"], previous["checkpoint"]) == \
                (record["model"], record["folds"], record["checkpoint"]):
            record["cases"] = {c: s for c, s in previous["cases"].items() if isfile(join(output_folder, c + ending))}
            record["maps"] = previous.get("maps")
    to_do = [case for case in identifiers if case not in record["cases"]]
    if not to_do:
        return record
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    predictor = UncertaintyPredictor(model_folder, folds, checkpoint, device)
    record["maps"] = list(predictor.map_names)
    writer = predictor.predictor.plans_manager.image_reader_writer_class()
    for name in ("dataset.json", "plans.json"):
        shutil.copy(join(model_folder, name), join(output_folder, name))
    for case in tqdm(to_do, desc="predicting with uncertainty", unit="case"):
        try:
            prediction = predictor.predict_case(files[case])
        except Exception as e:
            raise DataError(f"predicting case {case!r} ({', '.join(files[case])}) failed: {e}") from e
        writer.write_seg(prediction.segmentation, join(output_folder, case + ending), prediction.properties)
        for name, values in prediction.maps.items():
            writer.write_seg(np.rint(values * 100).astype(np.uint8), map_file(output_folder, case, name, ending),
                             prediction.properties)
        spacing = prediction.properties["spacing"]
        summary = case_summary(prediction.segmentation, prediction.maps, foreground_classes(dataset_json),
                               float(np.prod(spacing)))
        record["cases"][case] = {**summary, "image_histogram": prediction.image_histogram}
        save_json(record, summary_file, sort_keys=False)  # after every case: an interruption loses one case
    return record
