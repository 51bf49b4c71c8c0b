"""Preprocess ``imagesUnlabeled/`` with the dataset's own plans and nnU-Net's own preprocessor.

The output, ``nnUNet_preprocessed/<dataset>/<data_identifier>_unlabeled/``, uses the storage format of the labeled
data (cropping, resampling and normalisation are nnU-Net's). The segmentation file of each case holds only
nnU-Net's nonzero mask, which the training augmentation needs when the plans normalise inside that mask.

Long runs must survive interruptions, so the work is idempotent: each case is written to a scratch folder and
moved into place when complete, and ``micd_unlabeled.json`` records what every finished case was made from
(the plans' preprocessing settings and the source files' sizes and times). A rerun skips finished cases, redoes
missing, partial or changed ones, and redoes everything when the plans' preprocessing settings changed.
"""
import hashlib
import json
import os
import shutil
from multiprocessing import get_context
from typing import Dict, Iterable, List, Optional

import blosc2
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, load_pickle
from nnunetv2.configuration import default_num_processes
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunetv2_micd.preprocessing.check import SPLIT_FOLDERS, check_raw_dataset, format_check
from nnunetv2_micd.errors import DataError, MissingInputError, UsageError

RECORD_FILE = "micd_unlabeled.json"
SCRATCH_FOLDER = ".partial"
OUTPUT_SUFFIXES = ("_seg.b2nd", ".b2nd", ".pkl")  # the .pkl is moved last: it marks a case as complete
# configuration keys that do not change the preprocessed data (tiny plans differ only in these; the patch size sets
# only how blosc2 chunks the stored arrays, not what they hold)
KEYS_WITHOUT_EFFECT_ON_DATA = ("architecture", "batch_size", "batch_dice", "patch_size")


def unlabeled_data_folder(preprocessed_dataset_folder: str, data_identifier: str) -> str:
    return join(preprocessed_dataset_folder, data_identifier + "_unlabeled")


def preprocessing_signature(plans_manager: PlansManager, configuration_name: str, dataset_json: dict) -> str:
    """Hash of everything in the plans and dataset.json that determines the preprocessed data."""
    configuration = {k: v for k, v in plans_manager.get_configuration(configuration_name).configuration.items()
                     if k not in KEYS_WITHOUT_EFFECT_ON_DATA}
    relevant = {
        "configuration": configuration,
        "transpose_forward": plans_manager.transpose_forward,
        "intensity_properties": plans_manager.foreground_intensity_properties_per_channel,
        "image_reader_writer": plans_manager.plans["image_reader_writer"],
        "channel_names": dataset_json["channel_names"],
        "file_ending": dataset_json["file_ending"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def source_signature(files: List[str]) -> List[List]:
    return [[os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]


def _output_files(folder: str, case: str) -> List[str]:
    return [join(folder, case + suffix) for suffix in OUTPUT_SUFFIXES]


def _is_complete(folder: str, case: str) -> bool:
    """A case is complete when all its files exist and open (a torn write does not)."""
    seg_file, data_file, properties_file = _output_files(folder, case)
    if not all(isfile(f) for f in (data_file, seg_file, properties_file)):
        return False
    try:
        data, seg = blosc2.open(data_file, mode="r"), blosc2.open(seg_file, mode="r")
        load_pickle(properties_file)
        return data.shape[1:] == seg.shape[1:] and data.schunk.nbytes > 0
    except Exception:
        return False


def _remove_case(folder: str, case: str) -> None:
    for f in _output_files(folder, case):
        if isfile(f):
            os.remove(f)


def _write_record(folder: str, record: dict) -> None:
    temporary = join(folder, RECORD_FILE + ".tmp")
    with open(temporary, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(temporary, join(folder, RECORD_FILE))


def _preprocess_case(case: str, files: List[str], output_folder: str, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict) -> str:
    scratch = join(output_folder, SCRATCH_FOLDER)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    # seg_file=None: nnU-Net then stores its nonzero mask as the segmentation, exactly as for test images
    preprocessor.run_case_save(join(scratch, case), files, None, plans_manager, configuration_manager,
                               dataset_json)
    for scratch_file, final_file in zip(_output_files(scratch, case), _output_files(output_folder, case)):
        os.replace(scratch_file, final_file)
    return case


def _case_ids_in(folder: str) -> Iterable[str]:
    return {name[:-len(".pkl")] for name in os.listdir(folder) if name.endswith(".pkl")} | \
        {name[:-len("_seg.b2nd")] for name in os.listdir(folder) if name.endswith("_seg.b2nd")}


def preprocess_unlabeled_configuration(preprocessed_dataset_folder: str, plans_manager: PlansManager,
                                       dataset_json: dict, configuration_name: str, num_processes: int,
                                       cases: Dict[str, List[str]]) -> str:
    """Brings one configuration's unlabeled folder up to date; returns the folder."""
    configuration_manager = plans_manager.get_configuration(configuration_name)
    output_folder = unlabeled_data_folder(preprocessed_dataset_folder, configuration_manager.data_identifier)
    signature = preprocessing_signature(plans_manager, configuration_name, dataset_json)

    record = load_json(join(output_folder, RECORD_FILE)) if isfile(join(output_folder, RECORD_FILE)) else None
    if isdir(output_folder) and (record is None or record.get("preprocessing_signature") != signature):
        print(f"{output_folder} was made with other plans settings (or by something else): redoing all cases")
        shutil.rmtree(output_folder)
        record = None
    if record is None:
        record = {"dataset": plans_manager.dataset_name, "configuration": configuration_name,
                  "plans": plans_manager.plans_name,
                  "data_identifier": configuration_manager.data_identifier,
                  "preprocessing_signature": signature, "cases": {}}
    shutil.rmtree(join(output_folder, SCRATCH_FOLDER), ignore_errors=True)
    os.makedirs(join(output_folder, SCRATCH_FOLDER))

    for stale in set(_case_ids_in(output_folder)) - set(cases):  # removed from imagesUnlabeled since
        _remove_case(output_folder, stale)
        record["cases"].pop(stale, None)
    todo = [case for case, files in cases.items()
            if record["cases"].get(case) != source_signature(files) or not _is_complete(output_folder, case)]
    for case in todo:
        _remove_case(output_folder, case)
        record["cases"].pop(case, None)
    _write_record(output_folder, record)

    print(f"{configuration_name}: {len(cases) - len(todo)} of {len(cases)} unlabeled cases already done, "
          f"preprocessing {len(todo)} into {output_folder}")
    if todo:
        arguments = [(case, cases[case], output_folder, plans_manager, configuration_manager, dataset_json)
                     for case in todo]
        with get_context("spawn").Pool(max(1, num_processes)) as pool:
            for case in tqdm(pool.imap_unordered(_starred_preprocess_case, arguments), total=len(todo),
                             desc=f"Preprocessing unlabeled ({configuration_name})"):
                record["cases"][case] = source_signature(cases[case])
                _write_record(output_folder, record)
    os.rmdir(join(output_folder, SCRATCH_FOLDER))
    return output_folder


def _starred_preprocess_case(arguments):
    """Worker entry: a failure names the case (its traceback from the worker follows it)."""
    case, files = arguments[:2]
    try:
        return _preprocess_case(*arguments)
    except Exception as e:
        raise RuntimeError(f"preprocessing unlabeled case '{case}' ({', '.join(files)}) failed: "
                           f"{type(e).__name__}: {e}") from e


def checked_unlabeled_cases(raw_dataset_folder: str, num_processes: int) -> Dict[str, List[str]]:
    """The unlabeled cases (id -> channel files), once ``micd check-dataset`` finds nothing wrong in any split: a
    duplicate of a test scan is found only by looking at the test scans too."""
    folder = join(raw_dataset_folder, SPLIT_FOLDERS["unlabeled"][0])
    if not isdir(folder):
        raise MissingInputError(f"{folder} does not exist. Put the unlabeled images there, named like imagesTr "
                                f"({{case}}_{{channel:04d}}{{file_ending}}).")
    check = check_raw_dataset(raw_dataset_folder, num_processes)
    check.raise_if_problems()
    cases = {case.name: list(case.images) for case in check.cases_of("unlabeled")}
    if not cases:
        raise DataError(f"{folder} holds no images")
    print("\n".join(format_check(check)))
    return cases


def preprocess_unlabeled(dataset: str, configurations: Iterable[str] = ("3d_fullres",),
                         plans_identifier: str = "nnUNetPlans", num_processes: Optional[int] = None) -> List[str]:
    """Checks the whole raw dataset first (nothing is written if a case is bad), then preprocesses each
    configuration."""
    dataset_name = maybe_convert_to_dataset_name(dataset)
    preprocessed_dataset_folder = join(nnUNet_preprocessed.require(), dataset_name)
    plans_file = join(preprocessed_dataset_folder, plans_identifier + ".json")
    if not isfile(plans_file):
        raise MissingInputError(f"No plans file {plans_file}. Run nnUNetv2_plan_and_preprocess -d {dataset} "
                                f"first (and micd tiny-plans if you asked for tiny plans).")
    plans_manager = PlansManager(plans_file)
    for configuration_name in configurations:
        if configuration_name not in plans_manager.available_configurations:
            raise UsageError(f"configuration '{configuration_name}' is not in {plans_file}; available: "
                             f"{plans_manager.available_configurations}")
    dataset_json = load_json(join(preprocessed_dataset_folder, "dataset.json"))
    num_processes = default_num_processes if num_processes is None else num_processes

    cases = checked_unlabeled_cases(join(nnUNet_raw.require(), dataset_name), num_processes)
    return [preprocess_unlabeled_configuration(preprocessed_dataset_folder, plans_manager, dataset_json, c,
                                               num_processes, cases) for c in configurations]
