"""Unlabeled images in nnU-Net's raw format, and the checks they must pass before anything is written.

Convention: ``nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/`` holds ``{case}_{channel:04d}{file_ending}`` files
exactly like ``imagesTr/``, without labels.
"""
import os
import re
from multiprocessing import get_context
from typing import Dict, List, Type

from batchgenerators.utilities.file_and_folder_operations import isdir, join
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from tqdm import tqdm

UNLABELED_FOLDER = "imagesUnlabeled"


class UnlabeledDataError(ValueError):
    """Unlabeled input that nnU-Net's preprocessing would fail on or silently get wrong."""


def list_unlabeled_cases(raw_dataset_folder: str, dataset_json: dict) -> Dict[str, List[str]]:
    """Maps each case id to its channel files (sorted by channel), checking names, endings and channel counts."""
    folder = join(raw_dataset_folder, UNLABELED_FOLDER)
    if not isdir(folder):
        raise UnlabeledDataError(f"{folder} does not exist. Put the unlabeled images there, named like imagesTr "
                                 f"({{case}}_{{channel:04d}}{dataset_json['file_ending']}).")
    file_ending = dataset_json["file_ending"]
    num_channels = len(dataset_json["channel_names"])
    pattern = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending))

    channels: Dict[str, Dict[int, str]] = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue
        if not name.endswith(file_ending):
            raise UnlabeledDataError(f"{join(folder, name)}: wrong file ending, dataset.json expects '{file_ending}'")
        match = pattern.fullmatch(name)
        if match is None:
            raise UnlabeledDataError(f"{join(folder, name)}: name must be {{case}}_{{channel:04d}}{file_ending}")
        channels.setdefault(match["case"], {})[int(match["channel"])] = join(folder, name)
    if not channels:
        raise UnlabeledDataError(f"{folder} holds no images")

    test_folder = join(raw_dataset_folder, "imagesTs")
    test_cases = {match["case"] for match in map(pattern.fullmatch, os.listdir(test_folder)) if match} \
        if isdir(test_folder) else set()
    if test_cases & set(channels):
        raise UnlabeledDataError(f"unlabeled case(s) {sorted(test_cases & set(channels))} are also in {test_folder}: "
                                 f"test images must not train the model; remove them from {folder}")
    for case, files in channels.items():
        if sorted(files) != list(range(num_channels)):
            raise UnlabeledDataError(
                f"unlabeled case '{case}': found channels {sorted(files)}, dataset.json has {num_channels} channel(s) "
                f"{list(range(num_channels))}")
    return {case: [files[c] for c in range(num_channels)] for case, files in channels.items()}


def _check_readable(reader_writer_class: Type[BaseReaderWriter], case: str, files: List[str]):
    """Returns None when the case reads with nnU-Net's reader, otherwise a description of the problem."""
    try:
        reader_writer_class().read_images(files)
    except Exception as e:  # the readers raise bare RuntimeErrors or library errors; report them all by case
        detail = str(e).strip() or "channels differ in shape or spacing"
        return f"unlabeled case '{case}' cannot be read ({type(e).__name__}: {detail})"
    return None


def check_unlabeled_cases_readable(cases: Dict[str, List[str]], reader_writer_class: Type[BaseReaderWriter],
                                   num_processes: int) -> None:
    """Reads every case once with the reader nnU-Net will use; the reader also checks geometry across channels."""
    arguments = [(reader_writer_class, case, files) for case, files in cases.items()]
    with get_context("spawn").Pool(max(1, num_processes)) as pool:
        problems = [p for p in tqdm(pool.imap(_starred_check, arguments), total=len(arguments),
                                    desc="Checking unlabeled images") if p is not None]
    if problems:
        raise UnlabeledDataError("\n".join(problems))


def _starred_check(arguments):
    return _check_readable(*arguments)
