"""A benchmark's datasets: the source imported and planned once, each labeled count's semi-supervised dataset made
from it and preprocessed with the source's plans. Each step is skipped when its output exists, so a resumed
benchmark starts training at once."""
import os
import shutil

from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, subdirs

from nnunetv2_micd.benchmark.protocol import ALL_LABELED, ProtocolError
from nnunetv2_micd.benchmark.shell import BenchmarkShell
from nnunetv2_micd.benchmark.work_folder import WorkFolder
from nnunetv2_micd.errors import MissingInputError


class DatasetMaker:
    def __init__(self, folder: WorkFolder, shell: BenchmarkShell):
        self.folder, self.shell, self.protocol = folder, shell, folder.protocol

    def import_source(self) -> None:
        """Both ways of importing write dataset.json last: a source folder without it is an interrupted import,
        removed and done again."""
        raw = self.folder.raw
        source_id = self.protocol.values["source_dataset_id"]
        imported = subdirs(raw, prefix=f"Dataset{source_id:03d}_")
        if any(isfile(join(folder, "dataset.json")) for folder in imported):
            return
        for folder in imported:
            self.shell.say(f"removing the interrupted import {folder}")
            shutil.rmtree(folder)
        (kind, path), = self.protocol.values["source"].items()
        path = os.path.abspath(path)
        if not isdir(path):
            raise MissingInputError(f"source {kind} {path} does not exist (give another with --source)")
        self.shell.say(f"importing the source dataset from {path}")
        if kind == "msd_task_folder":
            self.shell.run(["nnUNetv2_convert_MSD_dataset", "-i", path, "-overwrite_id", str(source_id),
                            "-np", self.shell.processes])
        elif kind == "acdc_folder":
            self.shell.micd("convert-acdc", path, "-o", source_id)
        else:
            # the training cases, and the source's held-out split only where the protocol holds those cases out:
            # a source's own test split must never reach a benchmark's training data
            target = join(raw, f"Dataset{source_id:03d}_{os.path.basename(path.rstrip('/')).split('_', 1)[-1]}")
            folders = ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if self.protocol.test_from_source else ())
            for folder in folders:
                shutil.copytree(join(path, folder), join(target, folder))
            for case_list in self.protocol.case_lists:
                if isfile(join(path, case_list)):
                    shutil.copy(join(path, case_list), target)
            shutil.copy(join(path, "dataset.json"), target)

    def plan_source(self) -> None:
        source_name = self.folder.source_name
        if isfile(join(self.folder.preprocessed, source_name, self.protocol.plans_name + ".json")):
            return
        self.shell.say(f"planning {source_name} once for every dataset of the protocol")
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (no workers)
        planning_environment = {k: v for k, v in self.shell.environment.items()
                                if not (k == "nnUNet_n_proc_DA" and v == "0")}
        self.shell.run(["nnUNetv2_plan_and_preprocess", "-d", str(self.protocol.values["source_dataset_id"]),
                        "--no_pp", "-npfp", self.shell.processes], planning_environment)
        tiny = self.protocol.values.get("tiny_plans")
        if tiny:  # what the protocol leaves out keeps micd tiny-plans' own default
            options = (["--features", ",".join(map(str, tiny["features"]))] if "features" in tiny else []) + \
                      (["--batch-size", tiny["batch_size"]] if "batch_size" in tiny else []) + \
                      (["--patch-size", ",".join(map(str, tiny["patch_size"]))] if "patch_size" in tiny else [])
            self.shell.micd("tiny-plans", "-d", source_name, *options)

    def make_dataset(self, labeled) -> None:
        """The semi-supervised dataset in nnUNet_raw (micd make-ssl-dataset), unless it exists."""
        name = self.folder.dataset_name(labeled)
        if isdir(join(self.folder.raw, name)):
            return
        self.shell.say(f"making {name} ({labeled} labeled)")
        labeled_list = self.protocol.labeled_list(labeled)
        labeled_option = ["--labeled-cases", join(self.folder.raw, self.folder.source_name, labeled_list)] \
            if labeled_list else ["--labeled", "100%" if labeled == ALL_LABELED else labeled]
        test_list = self.protocol.test_list
        test_option = [] if self.protocol.test_from_source else \
            ["--test-cases", join(self.folder.raw, self.folder.source_name, test_list)] if test_list else \
            ["--test", self.protocol.values["test_cases"]]
        self.shell.micd("make-ssl-dataset", "-d", self.folder.source_name, "-o", name, *labeled_option,
                        *test_option, "--seed", self.protocol.values["split_seed"])

    def preprocess_dataset(self, labeled) -> None:
        """The dataset preprocessed with the source's plans (labeled and unlabeled cases), unless already done."""
        name, plans = self.folder.dataset_name(labeled), self.protocol.plans_name
        configuration, processes = self.protocol.configuration, self.shell.processes
        done_marker = join(self.folder.preprocessed, name, f".micd_benchmark_{plans}_{configuration}_done")
        if isfile(done_marker):
            return
        self.shell.say(f"preprocessing {name} with the source's plans")
        # nnU-Net's trainer keeps a copy of the fingerprint, its preprocessor reads dataset.json from here (what
        # nnUNetv2_plan_and_preprocess would have written); the plans are the source's
        dataset_id = str(self.protocol.dataset_id(labeled))
        self.shell.run(["nnUNetv2_extract_fingerprint", "-d", dataset_id, "-np", processes])
        shutil.copy(join(self.folder.raw, name, "dataset.json"), join(self.folder.preprocessed, name))
        self.shell.run(["nnUNetv2_move_plans_between_datasets", "-s", self.folder.source_name, "-t", name,
                        "-sp", plans, "-tp", plans])
        self.shell.run(["nnUNetv2_preprocess", "-d", dataset_id, "-plans_name", plans, "-c", configuration,
                        "-np", processes])
        if load_json(join(self.folder.raw, name, "dataset.json"))["numUnlabeled"] > 0:
            self.shell.micd("preprocess-unlabeled", "-d", name, "-c", configuration, "-p", plans, "-np", processes)
        with open(done_marker, "w"):
            pass

    def check_nested_splits(self) -> None:
        """Every dataset must hold its labeled count, test on the same cases, and smaller labeled sets must lie
        inside larger ones (a dataset id names another labeled count once counts are added to a protocol)."""
        made = self.folder.made_labeled_counts
        splits = [self.folder.split(labeled) for labeled in made]
        for labeled, split in zip(made, splits):
            if (len(split["labeled"]) != labeled) if labeled != ALL_LABELED else bool(split["unlabeled"]):
                raise ProtocolError(f"{self.folder.dataset_name(labeled)} in {self.folder.raw} does not have "
                                    f"{labeled} labeled cases (made for another protocol?); use another work folder")
        for smaller, larger in zip(splits, splits[1:]):
            if smaller["test"] != larger["test"] or not set(smaller["labeled"]) <= set(larger["labeled"]):
                raise ProtocolError(f"the datasets in {self.folder.raw} are not nested splits with one held-out "
                                    f"split; remove them and run again")
