"""Derive a semi-supervised nnU-Net raw dataset from a fully labeled one.

Only some training cases keep their labels (imagesTr/labelsTr). The remaining training images go to
imagesUnlabeled/ without labels and an optional held-out split goes to imagesTs/labelsTs. Splits are nested: for a
fixed seed and test size a smaller labeled set is a subset of a larger one, so label-budget sweeps compare like with
like and always evaluate on the same test cases.
"""
import copy
import math
import os
import re
import shutil
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, maybe_mkdir_p, \
    save_json
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets, maybe_convert_to_dataset_name
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

import nnunetv2_micd
from nnunetv2_micd.preprocessing.check import SPLIT_FOLDERS, case_file_pattern
from nnunetv2_micd.errors import DataError, ExistingOutputError, MissingInputError, UsageError

DATASET_NAME_PATTERN = re.compile(r"Dataset(\d{3})_(\S+)")


@contextmanager
def staged_dataset_folder(target_folder: str) -> Iterator[str]:
    """A hidden sibling folder to write a dataset into, renamed to ``target_folder`` (replacing it) when the block
    completes and removed when it fails, so that an interrupted run leaves no half-made dataset behind."""
    staging = join(os.path.dirname(target_folder), f".{os.path.basename(target_folder)}.partial-{os.getpid()}")
    os.makedirs(staging)
    try:
        yield staging
        if isdir(target_folder):
            shutil.rmtree(target_folder)
        os.rename(staging, target_folder)
    finally:
        if isdir(staging):
            shutil.rmtree(staging)


def raw_root() -> str:
    """nnUNet_raw, read at call time so that the current environment is honoured."""
    return nnUNet_raw.require()


def parse_count(text: str, total: int) -> int:
    """Number of cases selected by '10' or '5%' (of total). Percentages round half up, but never down to 0."""
    spec = text.strip()
    if spec.endswith('%'):
        percentage = _parse_number(spec[:-1], float, text)
        if not 0 < percentage <= 100:
            raise UsageError(f"{text!r} is not a percentage in (0%, 100%].")
        count = max(1, math.floor(total * percentage / 100 + 0.5))
    else:
        count = _parse_number(spec, int, text)
    if count <= 0:
        raise UsageError(f"{text!r} selects no cases; at least 1 is required.")
    if count > total:
        raise UsageError(f"{text!r} asks for {count} cases but only {total} are available.")
    return count


def _parse_number(spec: str, number_type: type, text: str) -> Union[int, float]:
    try:
        return number_type(spec)
    except ValueError:
        raise UsageError(f"Cannot parse {text!r} as a number of cases. Use an integer such as '10' or a "
                         f"percentage such as '5%'.") from None


def resolve_target_name(target: str, source_name: str) -> str:
    """Full dataset name for target ('601' borrows the source's name). Refuses ids nnU-Net could not resolve."""
    target = target.strip()
    if target.isdigit() and len(target) <= 3:
        target = f"Dataset{int(target):03d}_{_name_without_prefix(source_name)}"
    match = DATASET_NAME_PATTERN.fullmatch(target)
    if match is None:
        raise UsageError(f"Target {target!r} is neither a dataset id (e.g. '601') nor a name like "
                         f"'Dataset601_Name'.")
    if target == source_name:
        raise UsageError(f"Target {target} is the source dataset itself.")
    refuse_taken_id(target)
    return target


def refuse_taken_id(dataset_name: str) -> None:
    """nnU-Net resolves a dataset id to a single name across nnUNet_raw, nnUNet_preprocessed and nnUNet_results."""
    dataset_id = int(DATASET_NAME_PATTERN.fullmatch(dataset_name).group(1))
    others = [str(name) for name in find_candidate_datasets(dataset_id) if name != dataset_name]
    if others:
        raise UsageError(f"Cannot create {dataset_name}: {', '.join(others)} already uses id {dataset_id:03d} (in "
                         f"nnUNet_raw, nnUNet_preprocessed or nnUNet_results) and nnU-Net could not tell them apart. "
                         f"Pick another id.")


def _name_without_prefix(dataset_name: str) -> str:
    match = DATASET_NAME_PATTERN.fullmatch(dataset_name)
    if match is None:
        raise UsageError(f"{dataset_name!r} is not a dataset name like 'Dataset004_Hippocampus'.")
    return match.group(2)


def plan_ssl_split(case_ids: Sequence[str], num_labeled: int, num_test: int, seed: int) -> Dict[str, List[str]]:
    """Nested split from one seeded permutation: test cases come first, labeled cases next, the rest is
    unlabeled. The test split therefore never depends on num_labeled and labeled sets grow by appending."""
    ordered = sorted(case_ids)
    if len(set(ordered)) != len(ordered):
        raise UsageError("Case ids must be unique.")
    if num_labeled < 1 or num_test < 0:
        raise UsageError(f"Need at least 1 labeled case and no negative test size, got num_labeled={num_labeled}, "
                         f"num_test={num_test}.")
    if num_labeled + num_test > len(ordered):
        raise UsageError(f"{num_labeled} labeled + {num_test} test cases exceed the {len(ordered)} available.")
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    test, training_pool = shuffled[:num_test], shuffled[num_test:]
    return {
        'labeled': sorted(training_pool[:num_labeled]),
        'unlabeled': sorted(training_pool[num_labeled:]),
        'test': sorted(test),
    }


def read_list_file(path: str) -> List[str]:
    """The ids of a list file: one per line, blank lines and ``#`` comments ignored."""
    with open(path) as f:
        lines = [line.split('#', 1)[0].strip() for line in f]
    return [line for line in lines if line]


def read_case_list(text_or_file: str) -> List[str]:
    """Case ids from a file (as :func:`read_list_file`) or a comma-separated list."""
    if isfile(text_or_file):
        cases = read_list_file(text_or_file)
    else:
        cases = [item.strip() for item in text_or_file.split(',') if item.strip()]
    if not cases:
        raise UsageError(f"{text_or_file!r} names no case (a file with one case id per line, or a comma-separated "
                         f"list)")
    return cases


def _named_cases(named: Sequence[str], known: Sequence[str], role: str) -> List[str]:
    """``named`` checked against the source's training cases ``known``."""
    duplicates = sorted({case for case in named if list(named).count(case) > 1})
    unknown = sorted(set(named) - set(known))
    problems = ([f"{unknown} are not training cases of the source"] if unknown else []) + \
        ([f"{duplicates} are listed twice"] if duplicates else [])
    if problems:
        raise DataError(f"{role} cases " + "; ".join(problems))
    return list(named)


def split_with_labeled_cases(case_ids: Sequence[str], labeled_cases: Sequence[str]) -> Dict[str, List[str]]:
    """The given cases labeled, every other training case unlabeled (users often know which scans they have
    labeled; the literature publishes its labeled patients)."""
    labeled = _named_cases(labeled_cases, case_ids, "labeled")
    return {'labeled': sorted(labeled), 'unlabeled': sorted(set(case_ids) - set(labeled)), 'test': []}


def make_ssl_dataset(source: Union[str, int], target: str, labeled: Optional[str] = None,
                     test: Optional[str] = None, seed: int = 0, overwrite: bool = False,
                     labeled_cases: Optional[str] = None, test_cases: Optional[str] = None) -> str:
    """Create a semi-supervised copy of a fully labeled raw dataset and return its folder.

    ``labeled`` counts (or is a percentage of) the training cases left after the test split, drawn with ``seed``;
    ``labeled_cases`` names them instead (a file or a comma-separated list). ``test`` refers to all cases; without
    it, a source's own held-out split (imagesTs with labelsTs) is kept as the test split. ``test_cases`` names
    training cases to hold out instead, and leaves the source's own held-out split out of the dataset altogether
    (choosing hyper-parameters on a split of the training cases, never on the held-out ones). The dataset is built
    in a hidden sibling folder and renamed at the end, so an interrupted run leaves no half-made dataset behind.
    """
    if (labeled is None) == (labeled_cases is None):
        raise UsageError("give either a number of labeled cases (--labeled) or their list (--labeled-cases)")
    source_name = _existing_source_dataset(source)
    source_folder = join(raw_root(), source_name)
    target_name = resolve_target_name(str(target), source_name)
    target_folder = join(raw_root(), target_name)
    if isdir(target_folder) and not overwrite:
        raise ExistingOutputError(f"{target_folder} already exists. Use --overwrite (overwrite=True) to replace "
                                  f"it.")

    if test is not None and test_cases is not None:
        raise UsageError("give either a number of test cases (--test) or their list (--test-cases)")
    source_json = load_json(join(source_folder, 'dataset.json'))
    cases = _labeled_cases(source_folder, source_json)
    held_out = _held_out_cases(source_folder, source_json, cases) if test_cases is None else {}
    chosen_test = [] if test_cases is None else _named_cases(read_case_list(test_cases), list(cases), "test")
    training = [case for case in cases if case not in set(chosen_test)]
    if held_out and test is not None:
        raise UsageError(f"{source_name} has its own held-out split ({len(held_out)} cases in imagesTs with "
                         f"labelsTs): leave out --test to keep it as the test split")
    if labeled_cases is not None and test is not None:
        raise UsageError("--test does not combine with --labeled-cases: hold the test cases out in the source's "
                         "imagesTs/labelsTs, or draw the labeled cases with --labeled")
    if labeled_cases is not None:
        labeled_list = read_case_list(labeled_cases)
        also_test = sorted(set(labeled_list) & set(chosen_test))
        if also_test:
            raise DataError(f"cases {also_test} are listed both as labeled and as test cases")
        split = split_with_labeled_cases(training, labeled_list)
    else:
        num_test = 0 if test is None else parse_count(test, len(training))
        num_labeled = _parse_labeled_count(labeled, len(training) - num_test)
        split = plan_ssl_split(training, num_labeled, num_test, seed)
    if chosen_test:
        split['test'] = sorted(chosen_test)
    if held_out:
        split['test'] = sorted(held_out)
        cases = {**cases, **held_out}
    _refuse_classes_absent_from_test(split['test'], cases, source_json)
    manifest = {
        'source_dataset': source_name,
        'target_dataset': target_name,
        'seed': seed,
        'labeled_spec': labeled,
        'labeled_cases_given': labeled_cases,
        'test_spec': "the source's imagesTs/labelsTs" if held_out else test,
        'test_cases_given': test_cases,
        'splits': split,
        'nnunetv2_micd_version': nnunetv2_micd.__version__,
    }

    with staged_dataset_folder(target_folder) as staging_folder:
        _write_ssl_dataset(staging_folder, cases, split, source_json)
        save_json(manifest, join(staging_folder, 'ssl_manifest.json'), sort_keys=False)
    _print_summary(source_name, target_folder, split, f"seed {seed}" if labeled_cases is None else "labeled as given")
    _remove_stale_folds(target_name)
    return target_folder


def _remove_stale_folds(dataset_name: str) -> None:
    """nnU-Net keeps an existing splits_final.json: after --overwrite its folds would still hold the old labeled
    cases."""
    splits_file = join(nnUNet_preprocessed.require(), dataset_name, "splits_final.json") \
        if nnUNet_preprocessed.is_set() else None
    if splits_file is not None and isfile(splits_file):
        os.remove(splits_file)
        print(f"  removed {splits_file} (the folds of the replaced split); run nnUNetv2_plan_and_preprocess again")


def _existing_source_dataset(source: Union[str, int]) -> str:
    name = maybe_convert_to_dataset_name(source)
    if not isfile(join(raw_root(), name, 'dataset.json')):
        raise MissingInputError(f"Source dataset {name} with a dataset.json not found in {raw_root()}.")
    return name


def _labeled_cases(source_folder: str, source_json: dict) -> Dict[str, dict]:
    """Image files and label file per training case. Every case must be labeled: the split decides who keeps one."""
    if 'dataset' not in source_json and not isdir(join(source_folder, 'labelsTr')):
        raise MissingInputError(f"{source_folder} has no labelsTr folder; the source must be fully labeled.")
    found = get_filenames_of_train_images_and_targets(source_folder, copy.deepcopy(source_json))
    cases = {str(case): files for case, files in found.items()}
    if not cases:
        raise MissingInputError(f"{source_folder} contains no training cases.")
    unlabeled = sorted(case for case, files in cases.items() if not isfile(files['label']))
    if unlabeled:
        raise MissingInputError(f"{source_folder} must be fully labeled, but these cases have no label file: "
                                f"{unlabeled}")
    return cases


def _held_out_cases(source_folder: str, source_json: dict, training_cases: Dict[str, dict]) -> Dict[str, dict]:
    """The source's own held-out cases with labels (imagesTs and labelsTs), as image and label files per case;
    refused when one of them is also a training case."""
    images_folder, labels_folder = join(source_folder, 'imagesTs'), join(source_folder, 'labelsTs')
    if isdir(images_folder) and not isdir(labels_folder):
        print(f"{images_folder} is not copied: without labelsTs its images cannot serve as test cases")
    if not (isdir(images_folder) and isdir(labels_folder)):
        return {}
    file_ending = source_json['file_ending']
    pattern = case_file_pattern(file_ending)
    images: Dict[str, Dict[int, str]] = {}
    for name in sorted(os.listdir(images_folder)):
        match = pattern.fullmatch(name)
        if match:
            images.setdefault(match['case'], {})[int(match['channel'])] = join(images_folder, name)
    unlabeled = sorted(case for case in images if not isfile(join(labels_folder, case + file_ending)))
    if unlabeled:
        raise DataError(f"held-out cases {unlabeled} of {images_folder} have no label in {labels_folder}")
    leaked = sorted(set(images) & set(training_cases))
    if leaked:
        raise DataError(f"cases {leaked} are both training cases and held-out cases (imagesTs) of {source_folder}")
    return {case: {'images': [files[c] for c in sorted(files)], 'label': join(labels_folder, case + file_ending)}
            for case, files in images.items()}


def _refuse_classes_absent_from_test(test: List[str], cases: Dict[str, dict], source_json: dict) -> None:
    """A class in no test case has no test Dice: nnU-Net's evaluation gives it, and the mean over classes, NaN."""
    if not test:
        return
    reader = determine_reader_writer_from_dataset_json(source_json, cases[test[0]]['label'])()
    present = set()
    for case in test:
        present.update(np.unique(reader.read_seg(cases[case]['label'])[0]).tolist())
    absent = []
    for name, value in source_json['labels'].items():
        values = set(value) if isinstance(value, (list, tuple)) else {value}  # a region is a union of labels
        if name != 'ignore' and values != {0} and not values & present:
            absent.append(f"{name} ({value})")
    if absent:
        raise DataError(f"None of the {len(test)} test cases holds {', '.join(absent)}: its test Dice would be "
                        f"undefined (NaN). Choose another --seed or more --test cases.")


def _parse_labeled_count(labeled: str, num_available: int) -> int:
    try:
        return parse_count(labeled, num_available)
    except ValueError as e:
        raise UsageError(f"Invalid labeled size ({num_available} training cases remain after the test split): "
                         f"{e}") from None


def _write_ssl_dataset(folder: str, cases: Dict[str, dict], split: Dict[str, List[str]], source_json: dict) -> None:
    file_ending = source_json['file_ending']
    for split_name, (images_subfolder, labels_subfolder) in SPLIT_FOLDERS.items():
        if split_name == 'test' and not split['test']:
            continue
        images_folder = join(folder, images_subfolder)
        labels_folder = None if labels_subfolder is None else join(folder, labels_subfolder)
        for created in (images_folder, labels_folder):
            if created is not None:
                maybe_mkdir_p(created)
        for case in split[split_name]:
            _copy_case(case, cases[case], file_ending, images_folder, labels_folder)
    save_json(_ssl_dataset_json(source_json, split), join(folder, 'dataset.json'), sort_keys=False)


def _copy_case(case: str, files: dict, file_ending: str, images_folder: str, labels_folder: Optional[str]) -> None:
    """Copies (no hard links, users may edit files) into nnU-Net's {case}_{channel:04d} naming."""
    for channel, image in enumerate(files['images']):
        shutil.copy2(image, join(images_folder, f"{case}_{channel:04d}{file_ending}"))
    if labels_folder is not None:
        shutil.copy2(files['label'], join(labels_folder, case + file_ending))


def _ssl_dataset_json(source_json: dict, split: Dict[str, List[str]]) -> dict:
    """Source's dataset.json with numTraining counting labeled cases only. Files now follow the folder layout,
    so an explicit 'dataset' file listing of the source is dropped."""
    dataset_json = copy.deepcopy(source_json)
    dataset_json.pop('dataset', None)
    dataset_json['numTraining'] = len(split['labeled'])
    dataset_json['numUnlabeled'] = len(split['unlabeled'])
    dataset_json['numTest'] = len(split['test'])
    return dataset_json


def _print_summary(source_name: str, target_folder: str, split: Dict[str, List[str]], how: str) -> None:
    print(f"Created semi-supervised dataset from {source_name} ({how}): {len(split['labeled'])} labeled, "
          f"{len(split['unlabeled'])} unlabeled, {len(split['test'])} test cases\n  -> {target_folder}")
