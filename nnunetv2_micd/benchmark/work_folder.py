"""Where a benchmark keeps everything: the layout of its work folder, and what the folder records of each run.

::

    <work>/nnUNet_raw, <work>/nnUNet_preprocessed   shared by all runs (one plans file, moved to every dataset)
    <work>/runs/<run>/nnUNet_results                one results root per run: nnU-Net names its output folders
                                                    only by trainer, plans, configuration and fold
    <work>/runs/<run>/predictions                   held-out predictions and nnU-Net's summary.json
    <work>/runs/<run>/student_a                     two-student trainers: student A alone, exported as a plain
                                                    nnU-Net model, and its held-out predictions
    <work>/runs/<run>/train.log                     nnUNetv2_train's output
    <work>/results.json                             finished runs (see nnunetv2_micd.benchmark.results)
    <work>/benchmark.lock                           held while a benchmark runs (see nnunetv2_micd.benchmark.lock)
"""
import os
import re
from typing import Dict, List, Optional

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, subdirs
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

from nnunetv2_micd.benchmark.protocol import Protocol, RunSpec
from nnunetv2_micd.errors import MissingInputError
from nnunetv2_micd.evaluation.classes import foreground_classes

RESULTS_FILE = "results.json"
EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$")


class WorkFolder:
    def __init__(self, protocol: Protocol, path: str):
        self.protocol = protocol
        self.path = os.path.abspath(path)
        self.raw = join(self.path, "nnUNet_raw")
        self.preprocessed = join(self.path, "nnUNet_preprocessed")
        self.results_file = join(self.path, RESULTS_FILE)

    # ------------------------------------------------------------------ datasets
    @property
    def source_name(self) -> str:
        prefix = f"Dataset{self.protocol.values['source_dataset_id']:03d}_"
        found = subdirs(self.raw, prefix=prefix, join=False) if isdir(self.raw) else []
        if len(found) != 1:
            raise MissingInputError(f"expected one source dataset {prefix}* in {self.raw}, found {found}")
        return found[0]

    def dataset_name(self, labeled) -> str:
        return f"Dataset{self.protocol.dataset_id(labeled):03d}_{self.source_name.split('_', 1)[1]}"

    def split(self, labeled) -> Dict[str, List[str]]:
        return load_json(join(self.raw, self.dataset_name(labeled), "ssl_manifest.json"))["splits"]

    @property
    def made_labeled_counts(self) -> List:
        """The labeled counts whose datasets exist in the work folder, in the protocol's order."""
        return [labeled for labeled in self.protocol.labeled_counts
                if isfile(join(self.raw, self.dataset_name(labeled), "ssl_manifest.json"))]

    def labels(self) -> Dict[str, str]:
        """Foreground label value -> class name, as results.json records them."""
        classes = foreground_classes(load_json(join(self.raw, self.source_name, "dataset.json")))
        return {str(value): name for name, value in classes.items()}

    # ------------------------------------------------------------------ runs
    def run_folder(self, run: RunSpec) -> str:
        return join(self.path, "runs", run.name)

    def model_identifier(self, trainer: str) -> str:
        """nnU-Net's name of ``trainer``'s output folder under the protocol's plans and configuration."""
        return convert_trainer_plans_config_to_identifier(trainer, self.protocol.plans_name,
                                                          self.protocol.configuration)

    def model_folder(self, run: RunSpec) -> str:
        return join(self.run_folder(run), "nnUNet_results", self.dataset_name(run.labeled),
                    self.model_identifier(run.trainer), "fold_all")

    def final_checkpoint(self, run: RunSpec) -> str:
        return join(self.model_folder(run), "checkpoint_final.pth")

    def epochs_started(self, run: RunSpec) -> Optional[int]:
        """The last epoch (0-based) the run's training started, from train.log; None before the first. Checkpoints
        are written every epoch, so an interrupted training continues at this epoch."""
        log_file = join(self.run_folder(run), "train.log")
        if not isfile(log_file):
            return None
        with open(log_file) as f:
            epochs = [int(match.group(1)) for match in map(EPOCH_LINE.search, f) if match]
        return epochs[-1] if epochs else None
