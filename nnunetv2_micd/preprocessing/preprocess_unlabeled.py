"""Preprocess ``imagesUnlabeled/`` with the dataset's own plans and nnU-Net's own preprocessor.

The output, ``nnUNet_preprocessed/<dataset>/<data_identifier>_unlabeled/``, uses the storage format of the labeled
data (cropping, resampling and normalisation are nnU-Net's). The segmentation file of each case holds only
nnU-Net's nonzero mask, which the training augmentation needs when the plans normalise inside that mask.

Long runs must survive interruptions, so the work is idempotent: each case is written to a scratch folder and
moved into place when complete, and the store's record (``nnunetv2_micd.preprocessing.unlabeled_store``) says what
every finished case was made from. A rerun skips finished cases, redoes missing, partial or changed ones, and
redoes everything when the plans' preprocessing settings changed.
"""
import os
import shutil
from multiprocessing import get_context
from typing import Dict, Iterable, List, Optional

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from nnunetv2.configuration import default_num_processes
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunetv2_micd.errors import DataError, MissingInputError, UsageError
from nnunetv2_micd.preprocessing.check import SPLIT_FOLDERS, check_raw_dataset, format_check
from nnunetv2_micd.preprocessing.unlabeled_store import UnlabeledStore, preprocessing_signature, source_signature

def _preprocess_case(case: str, files: List[str], store: UnlabeledStore, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict) -> str:
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    # seg_file=None: nnU-Net then stores its nonzero mask as the segmentation, exactly as for test images
    preprocessor.run_case_save(join(store.scratch, case), files, None, plans_manager, configuration_manager,
                               dataset_json)
    store.move_into_place(case)
    return case


def preprocess_unlabeled_configuration(preprocessed_dataset_folder: str, plans_manager: PlansManager,
                                       dataset_json: dict, configuration_name: str, num_processes: int,
                                       cases: Dict[str, List[str]]) -> str:
    """Brings one configuration's unlabeled folder up to date; returns the folder."""
    configuration_manager = plans_manager.get_configuration(configuration_name)
    store = UnlabeledStore.of(preprocessed_dataset_folder, configuration_manager.data_identifier)
    signature = preprocessing_signature(plans_manager, configuration_name, dataset_json)

    record = store.read_record()
    if isdir(store.folder) and (record is None or record.get("preprocessing_signature") != signature):
        print(f"{store.folder} was made with other plans settings (or by something else): redoing all cases")
        shutil.rmtree(store.folder)
        record = None
    if record is None:
        record = store.new_record(plans_manager, configuration_name, signature)
    shutil.rmtree(store.scratch, ignore_errors=True)
    os.makedirs(store.scratch)

    for stale in store.case_ids_on_disk() - set(cases):  # removed from imagesUnlabeled since
        store.remove_case(stale)
        record["cases"].pop(stale, None)
    todo = [case for case, files in cases.items()
            if record["cases"].get(case) != source_signature(files) or not store.is_complete(case)]
    for case in todo:
        store.remove_case(case)
        record["cases"].pop(case, None)
    store.write_record(record)

    print(f"{configuration_name}: {len(cases) - len(todo)} of {len(cases)} unlabeled cases already done, "
          f"preprocessing {len(todo)} into {store.folder}")
    if todo:
        arguments = [(case, cases[case], store, plans_manager, configuration_manager, dataset_json)
                     for case in todo]
        with get_context("spawn").Pool(max(1, num_processes)) as pool:
            for case in tqdm(pool.imap_unordered(_starred_preprocess_case, arguments), total=len(todo),
                             desc=f"Preprocessing unlabeled ({configuration_name})"):
                record["cases"][case] = source_signature(cases[case])
                store.write_record(record)
    os.rmdir(store.scratch)
    return store.folder


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
