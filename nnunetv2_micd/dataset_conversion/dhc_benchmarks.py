"""Synapse (BTCV) and AMOS as nnU-Net raw datasets with DHC's semi-supervised splits (the MICD paper's benchmarks).

The split lists in ``dhc_splits/`` are copied from the DHC repository (``xmed-lab/DHC``, commit
``3a09c3401053f8536b1cbf4397601e277563e8e9``, folders ``synapse_data/splits`` and ``amos_data/splits``); that
commit is the only revision of those files there is, so it is the one these converters follow. DHC's
``labeled_20p``/``unlabeled_20p`` for AMOS are not shipped: they overlap the eval cases and miss 44 training
cases, and the paper does not use them.

A converted dataset holds, in nnU-Net's layout:

- ``imagesTr``/``labelsTr``: DHC's labeled cases **and** its eval cases (nnU-Net validates on the eval cases
  through ``splits_final.json``, written by ``micd dhc-splits`` once the dataset is planned);
- ``imagesUnlabeled``: DHC's unlabeled cases, without labels;
- ``imagesTs``/``labelsTs``: DHC's test cases, never used for training in any form;
- ``dhc_split.json``: which case went where, and the source commit.
"""
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, maybe_mkdir_p, \
    save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_micd.dataset_conversion.ssl_split import raw_root, read_list_file, refuse_taken_id, staged_dataset_folder
from nnunetv2_micd.errors import DataError, ExistingOutputError, MissingInputError, UsageError

SPLITS_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dhc_splits")
DHC_COMMIT = "3a09c3401053f8536b1cbf4397601e277563e8e9"
MANIFEST_FILE = "dhc_split.json"
FIRST_MRI_AMOS_ID = 500  # AMOS22: ids below are CT, from 500 on MRI

SYNAPSE_LABELS = {"background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4,
                  "esophagus": 5, "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9,
                  "portal and splenic veins": 10, "pancreas": 11, "right adrenal gland": 12,
                  "left adrenal gland": 13}
AMOS_LABELS = {"background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4,
               "esophagus": 5, "liver": 6, "stomach": 7, "aorta": 8, "inferior vena cava": 9, "pancreas": 10,
               "right adrenal gland": 11, "left adrenal gland": 12, "duodenum": 13, "bladder": 14,
               "prostate/uterus": 15}


@dataclass(frozen=True)
class Benchmark:
    name: str
    labeled_fractions: Tuple[str, ...]  # the percentages DHC published splits for
    labels: Dict[str, int]
    default_id: int


SYNAPSE = Benchmark("synapse", ("10%", "20%", "40%"), SYNAPSE_LABELS, 720)
AMOS = Benchmark("amos", ("2%", "5%", "10%"), AMOS_LABELS, 730)


def _read_list(benchmark: str, name: str) -> List[str]:
    return read_list_file(join(SPLITS_FOLDER, benchmark, name + ".txt"))


def dhc_split(benchmark: Benchmark, labeled: str) -> Dict[str, List[str]]:
    """DHC's ids for one labeled fraction: labeled, unlabeled, eval and test, checked for leakage."""
    if labeled not in benchmark.labeled_fractions:
        raise UsageError(f"DHC published {benchmark.name} splits for {', '.join(benchmark.labeled_fractions)} "
                         f"labeled, not {labeled}")
    suffix = labeled.rstrip("%") + "p"
    split = {"labeled": _read_list(benchmark.name, "labeled_" + suffix),
             "unlabeled": _read_list(benchmark.name, "unlabeled_" + suffix),
             "eval": _read_list(benchmark.name, "eval"), "test": _read_list(benchmark.name, "test")}
    train = set(_read_list(benchmark.name, "train"))
    if set(split["labeled"]) | set(split["unlabeled"]) != train or set(split["labeled"]) & set(split["unlabeled"]):
        raise DataError(f"DHC's {benchmark.name} {labeled} lists do not partition its training cases")
    for held_out in ("eval", "test"):
        if train & set(split[held_out]):
            raise DataError(f"DHC's {benchmark.name} {held_out} cases overlap its training cases")
    if set(split["eval"]) & set(split["test"]):
        raise DataError(f"DHC's {benchmark.name} eval and test cases overlap")
    return split


def _synapse_files(source: str) -> Dict[str, Tuple[str, str]]:
    """DHC id ('0001') -> (image, label) in the BTCV download's RawData/Training/{img,label} layout."""
    training = join(source, "RawData", "Training")
    if not isdir(join(training, "img")) or not isdir(join(training, "label")):
        raise MissingInputError(f"{source} is not the Synapse/BTCV download: expected "
                                f"RawData/Training/img/imgXXXX.nii.gz and RawData/Training/label/labelXXXX.nii.gz")
    files = {}
    for name in sorted(os.listdir(join(training, "img"))):
        if name.startswith("img") and name.endswith(".nii.gz"):
            case = name[len("img"):-len(".nii.gz")]
            files[case] = (join(training, "img", name), join(training, "label", f"label{case}.nii.gz"))
    return files


def _amos_files(source: str) -> Dict[str, Tuple[str, str]]:
    """DHC id ('amos_0001') -> (image, label) in the AMOS22 layout (imagesTr/labelsTr, imagesVa/labelsVa)."""
    if not all(isdir(join(source, f)) for f in ("imagesTr", "labelsTr", "imagesVa", "labelsVa")):
        raise MissingInputError(f"{source} is not the AMOS22 download: expected imagesTr, labelsTr, imagesVa and "
                                f"labelsVa")
    files = {}
    for images, labels in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for name in sorted(os.listdir(join(source, images))):
            if name.endswith(".nii.gz"):
                files[name[:-len(".nii.gz")]] = (join(source, images, name), join(source, labels, name))
    return files


def _case_name(benchmark: Benchmark, dhc_id: str) -> str:
    return f"synapse_{dhc_id}" if benchmark is SYNAPSE else dhc_id


def _check_labels(files: Dict[str, Tuple[str, str]], cases: List[str], allowed: Dict[str, int]) -> None:
    """Every label map that will be copied holds only the benchmark's label values; the error names the case."""
    allowed_values = set(allowed.values())
    for case in cases:
        label_file = files[case][1]
        if not isfile(label_file):
            raise MissingInputError(f"case {case}: label file {label_file} is missing")
        values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(label_file))).tolist())
        unexpected = sorted(values - allowed_values)
        if unexpected:
            raise DataError(f"case {case}: label values {unexpected} in {label_file} are not among "
                            f"{sorted(allowed_values)}")


def convert(benchmark: Benchmark, source: str, labeled: str, target_id: Optional[int] = None,
            ct_only: bool = False) -> str:
    """Writes the nnU-Net raw dataset (staged in a hidden folder and renamed at the end); returns its folder."""
    split = dhc_split(benchmark, labeled)
    if ct_only and benchmark is not AMOS:
        raise UsageError("only AMOS mixes CT and MRI; --ct-only applies to it alone")
    if ct_only:
        split = {k: [c for c in v if int(c.split("_")[-1]) < FIRST_MRI_AMOS_ID] for k, v in split.items()}
    dataset_id = target_id or benchmark.default_id
    suffix = labeled.rstrip("%") + "p" + ("_CT" if ct_only else "")
    name = f"Dataset{dataset_id:03d}_{benchmark.name.capitalize()}{suffix}"
    target = join(raw_root(), name)
    if isdir(target):
        raise ExistingOutputError(f"{target} already exists; remove it or choose another id with -o")
    refuse_taken_id(name)
    files = _synapse_files(source) if benchmark is SYNAPSE else _amos_files(source)
    missing = sorted(c for ids in split.values() for c in ids if c not in files)
    if missing:
        raise MissingInputError(f"{len(missing)} cases of DHC's {benchmark.name} split are not in {source}: "
                                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}")
    labeled_cases = split["labeled"] + split["eval"]
    _check_labels(files, labeled_cases + split["test"], benchmark.labels)

    with staged_dataset_folder(target) as staging:
        for folder, cases, with_labels in (("Tr", labeled_cases, True), ("Unlabeled", split["unlabeled"], False),
                                           ("Ts", split["test"], True)):
            maybe_mkdir_p(join(staging, "images" + folder))
            if with_labels:
                maybe_mkdir_p(join(staging, "labels" + folder))
            for case in cases:
                image, label = files[case]
                shutil.copy(image, join(staging, "images" + folder, f"{_case_name(benchmark, case)}_0000.nii.gz"))
                if with_labels:
                    shutil.copy(label, join(staging, "labels" + folder, f"{_case_name(benchmark, case)}.nii.gz"))
        # "CT": nnU-Net normalises with the labeled cases' CT statistics, for AMOS's MRI cases too, as DHC's
        # fixed CT window did (see --ct-only)
        generate_dataset_json(staging, {0: "CT"}, benchmark.labels, len(labeled_cases), ".nii.gz",
                              dataset_name=name, reference="DHC semi-supervised splits, xmed-lab/DHC@" + DHC_COMMIT,
                              license="see the dataset's own licence", converted_by="micd convert-" + benchmark.name,
                              numUnlabeled=len(split["unlabeled"]), numTest=len(split["test"]))
        save_json({"benchmark": benchmark.name, "labeled_fraction": labeled, "ct_only": ct_only,
                   "dhc_commit": DHC_COMMIT, "case_names": {k: [_case_name(benchmark, c) for c in v]
                                                            for k, v in split.items()}},
                  join(staging, MANIFEST_FILE), sort_keys=False)
    print(f"{name}: {len(split['labeled'])} labeled + {len(split['eval'])} eval (validation) cases in imagesTr, "
          f"{len(split['unlabeled'])} unlabeled, {len(split['test'])} test\n  -> {target}\n"
          f"next: nnUNetv2_plan_and_preprocess -d {dataset_id} -c 3d_fullres, then micd dhc-splits -d {dataset_id}")
    return target


def write_dhc_splits_final(dataset: str) -> str:
    """nnU-Net's splits_final.json with one fold: train on DHC's labeled cases, validate on its eval cases."""
    name = maybe_convert_to_dataset_name(dataset)
    manifest_file = join(raw_root(), name, MANIFEST_FILE)
    if not isfile(manifest_file):
        raise MissingInputError(f"{manifest_file} not found: {name} was not made by micd convert-synapse or "
                                f"convert-amos")
    preprocessed = join(nnUNet_preprocessed.require(), name)
    if not isdir(preprocessed):
        raise MissingInputError(f"{preprocessed} not found: run nnUNetv2_plan_and_preprocess -d {name} first")
    cases = load_json(manifest_file)["case_names"]
    target = join(preprocessed, "splits_final.json")
    save_json([{"train": cases["labeled"], "val": cases["eval"]}], target)
    return target
