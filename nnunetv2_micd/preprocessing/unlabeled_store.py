"""The preprocessed unlabeled cases of one dataset and configuration, and the one place that knows their layout.

``nnUNet_preprocessed/<dataset>/<data_identifier>_unlabeled/`` holds each case in the storage format of the labeled
data (``CASE.b2nd``, ``CASE_seg.b2nd`` with nnU-Net's nonzero mask, ``CASE.pkl``) and ``micd_unlabeled.json``, the
record of what made it: the plans' preprocessing settings (a signature) and, per finished case, its source files'
sizes and times. ``micd preprocess-unlabeled`` writes the store; the trainers read only recorded cases and refuse a
store made with other preprocessing settings than their plans'.
"""
import hashlib
import json
import os
from typing import Dict, List, Optional, Set

import blosc2
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, load_pickle
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_micd.errors import MissingInputError

RECORD_FILE = "micd_unlabeled.json"
SCRATCH_FOLDER = ".partial"
OUTPUT_SUFFIXES = ("_seg.b2nd", ".b2nd", ".pkl")  # the .pkl is moved last: it marks a case as complete
# configuration keys that do not change the preprocessed data (tiny plans differ only in these; the patch size sets
# only how blosc2 chunks the stored arrays, not what they hold)
KEYS_WITHOUT_EFFECT_ON_DATA = ("architecture", "batch_size", "batch_dice", "patch_size")


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


class UnlabeledStore:
    def __init__(self, folder: str):
        self.folder = folder

    @classmethod
    def of(cls, preprocessed_dataset_folder: str, data_identifier: str) -> "UnlabeledStore":
        return cls(join(preprocessed_dataset_folder, data_identifier + "_unlabeled"))

    @property
    def scratch(self) -> str:
        """Where a case is written before it is moved into place."""
        return join(self.folder, SCRATCH_FOLDER)

    # ------------------------------------------------------------------ the record
    def read_record(self) -> Optional[dict]:
        record_file = join(self.folder, RECORD_FILE)
        return load_json(record_file) if isfile(record_file) else None

    def write_record(self, record: dict) -> None:
        """Atomically: an interruption leaves the previous record."""
        temporary = join(self.folder, RECORD_FILE + ".tmp")
        with open(temporary, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(temporary, join(self.folder, RECORD_FILE))

    def recorded_cases(self) -> List[str]:
        """The cases recorded as complete, which are the only ones a training reads."""
        record = self.read_record()
        if record is None:
            raise MissingInputError(f"No preprocessed unlabeled data in {self.folder}. Run micd preprocess-unlabeled.")
        if not record["cases"]:
            raise MissingInputError(f"{self.folder} holds no preprocessed cases. Run micd preprocess-unlabeled.")
        return list(record["cases"])

    def made_with(self) -> Optional[str]:
        """The preprocessing signature the store was made with (None without a record)."""
        record = self.read_record()
        return None if record is None else record.get("preprocessing_signature")

    # ------------------------------------------------------------------ the cases' files
    @staticmethod
    def case_files(folder: str, case: str) -> List[str]:
        return [join(folder, case + suffix) for suffix in OUTPUT_SUFFIXES]

    def case_ids_on_disk(self) -> Set[str]:
        names = os.listdir(self.folder)
        return {name[:-len(".pkl")] for name in names if name.endswith(".pkl")} | \
            {name[:-len("_seg.b2nd")] for name in names if name.endswith("_seg.b2nd")}

    def is_complete(self, case: str) -> bool:
        """A case is complete when all its files exist and open (a torn write does not)."""
        seg_file, data_file, properties_file = self.case_files(self.folder, case)
        if not all(isfile(f) for f in (data_file, seg_file, properties_file)):
            return False
        try:
            data, seg = blosc2.open(data_file, mode="r"), blosc2.open(seg_file, mode="r")
            load_pickle(properties_file)
            return data.shape[1:] == seg.shape[1:] and data.schunk.nbytes > 0
        except Exception:
            return False

    def remove_case(self, case: str) -> None:
        for f in self.case_files(self.folder, case):
            if isfile(f):
                os.remove(f)

    def move_into_place(self, case: str) -> None:
        """From the scratch folder, the .pkl last."""
        for scratch_file, final_file in zip(self.case_files(self.scratch, case), self.case_files(self.folder, case)):
            os.replace(scratch_file, final_file)

    def new_record(self, plans_manager: PlansManager, configuration_name: str, signature: str) -> Dict:
        return {"dataset": plans_manager.dataset_name, "configuration": configuration_name,
                "plans": plans_manager.plans_name,
                "data_identifier": plans_manager.get_configuration(configuration_name).data_identifier,
                "preprocessing_signature": signature, "cases": {}}
