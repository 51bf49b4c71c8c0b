"""``micd benchmark``: every method through the same nnU-Net pipeline, resumable, with progress.

Everything happens in one work folder, through nnU-Net's and micd's own commands::

    <work>/nnUNet_raw, <work>/nnUNet_preprocessed   shared by all runs (one plans file, moved to every dataset)
    <work>/runs/<run>/nnUNet_results                one results root per run: nnU-Net names its output folders
                                                    only by trainer, plans, configuration and fold
    <work>/runs/<run>/predictions                   test-split predictions and nnU-Net's summary.json
    <work>/runs/<run>/student_a                     two-student trainers: student A alone, exported as a plain
                                                    nnU-Net model, and its test-split predictions
    <work>/runs/<run>/train.log                     nnUNetv2_train's output
    <work>/results.json                             finished runs (see nnunetv2_micd.benchmark.results)
    <work>/benchmark.lock                           held while a benchmark runs (see nnunetv2_micd.benchmark.lock)

A run is finished once it is in results.json. Otherwise it continues where it stopped: training from
``checkpoint_latest.pth`` (``nnUNetv2_train --c``), prediction and evaluation from scratch. With a time limit the
benchmark runs in pieces: it stops training at an epoch's start when the epoch would end after the limit (the
checkpoint of the epoch before was just written) and starts no run after it; the same command continues.
"""
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, maybe_mkdir_p, \
    save_json, subdirs
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

import nnunetv2_micd
from nnunetv2_micd.benchmark.lock import WorkFolderLock, running_benchmark
from nnunetv2_micd.benchmark.protocol import ALL_LABELED, Protocol, ProtocolError, RunSpec
from nnunetv2_micd.benchmark.results import CURVE_KEYS, dice_from_summary, empty_results, literature_from_summary, \
    load_results, save_results
from nnunetv2_micd.commands import micd_command, prediction_workers, run_command
from nnunetv2_micd.errors import MissingInputError
from nnunetv2_micd.evaluation.classes import foreground_classes
from nnunetv2_micd.evaluation.literature_metrics import LITERATURE_SUMMARY_FILE
from nnunetv2_micd.method.config import TrainingBudget
from nnunetv2_micd.paths import trainer_path
from nnunetv2_micd.training.nnUNetTrainerBudget import EFFECTIVE_CONFIG_FILE

RESULTS_FILE = "results.json"
EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$")


def _format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _code_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(nnunetv2_micd.__file__)))
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        return f"{nnunetv2_micd.__version__}+{commit}"
    except (OSError, subprocess.CalledProcessError):
        return nnunetv2_micd.__version__


class BenchmarkRunner:
    def __init__(self, protocol: Protocol, work_folder: str, device: Optional[str] = None,
                 time_limit: Optional[float] = None):
        self.protocol = protocol
        self.work = os.path.abspath(work_folder)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.started = time.time()
        self.deadline = None if time_limit is None else self.started + time_limit
        self.stopped_at_time_limit = False
        self.raw = join(self.work, "nnUNet_raw")
        self.preprocessed = join(self.work, "nnUNet_preprocessed")
        self.environment = {**os.environ, "nnUNet_raw": self.raw, "nnUNet_preprocessed": self.preprocessed,
                            "nnUNet_results": join(self.work, "unused_results"),
                            "nnUNet_extTrainer": trainer_path()}
        self.environment.setdefault("nnUNet_def_n_proc", str(os.cpu_count() or 1))
        for variable in ("MICD_CONFIG", *TrainingBudget.ENVIRONMENT.values()):
            self.environment.pop(variable, None)  # the protocol alone decides
        self.results_file = join(self.work, RESULTS_FILE)
        self.results: Optional[dict] = None
        self.lock: Optional[WorkFolderLock] = None  # held by run_all

    @property
    def processes(self) -> str:
        """Worker processes for conversion, planning, preprocessing and evaluation."""
        return self.environment["nnUNet_def_n_proc"]

    # ------------------------------------------------------------------ output
    def say(self, message: str) -> None:
        print(f"[micd benchmark {_format_duration(time.time() - self.started)}] {message}", flush=True)

    def micd(self, *args, environment: Optional[Dict[str, str]] = None, log_file: Optional[str] = None) -> None:
        """Runs ``micd ARGS`` in the work folder, never in a checkout of this project that the user may stand in
        (see :func:`micd_command`)."""
        run_command(micd_command(*args), environment or self.environment, log_file, cwd=self.work)

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

    def prepare(self, runs: List[RunSpec]) -> None:
        """Source dataset and the semi-supervised datasets of ``runs``; those still to be trained on (and the cost
        measurement's) planned with one plans file and preprocessed. So ``--only`` makes no dataset its runs do not
        use, and finished runs carried to a new work folder cost no preprocessing. Each step is skipped when its
        output exists, so a resumed benchmark starts training at once."""
        for folder in (self.raw, self.preprocessed):
            maybe_mkdir_p(folder)
        self._import_source()
        if isfile(self.results_file):
            self.results = load_results(self.results_file)
            self._refuse_other_protocol(self.results["protocol"])  # and records the protocol as it is now
        else:
            self.results = empty_results(self.protocol.values, self._labels())
        cost = {self.cost_labeled} if self.cost_to_measure() else set()
        for labeled in self._in_protocol_order({run.labeled for run in runs} | cost):
            self._make_dataset(labeled)
        # before any preprocessing: datasets or results that do not belong here are refused in seconds
        self._check_nested_splits()
        self._check_recorded_held_out_cases()
        save_results(self.results, self.results_file)
        to_preprocess = self._in_protocol_order({run.labeled for run in runs if self.to_train(run)} | cost)
        if to_preprocess:
            self._plan_source()
        for labeled in to_preprocess:
            self._preprocess_dataset(labeled)

    def _in_protocol_order(self, labeled_counts) -> List:
        return [labeled for labeled in self.protocol.labeled_counts if labeled in labeled_counts]

    def _import_source(self) -> None:
        """Both ways of importing write dataset.json last: a source folder without it is an interrupted import,
        removed and done again."""
        source_id = self.protocol.values["source_dataset_id"]
        imported = subdirs(self.raw, prefix=f"Dataset{source_id:03d}_")
        if any(isfile(join(folder, "dataset.json")) for folder in imported):
            return
        for folder in imported:
            self.say(f"removing the interrupted import {folder}")
            shutil.rmtree(folder)
        (kind, path), = self.protocol.values["source"].items()
        path = os.path.abspath(path)
        if not isdir(path):
            raise MissingInputError(f"source {kind} {path} does not exist (give another with --source)")
        self.say(f"importing the source dataset from {path}")
        if kind == "msd_task_folder":
            run_command(["nnUNetv2_convert_MSD_dataset", "-i", path, "-overwrite_id", str(source_id),
                         "-np", self.processes], self.environment)
        elif kind == "acdc_folder":
            self.micd("convert-acdc", path, "-o", source_id)
        else:
            # the training cases, and the source's held-out split only where the protocol holds those cases out:
            # a source's own test split must never reach a benchmark's training data
            target = join(self.raw, f"Dataset{source_id:03d}_{os.path.basename(path.rstrip('/')).split('_', 1)[-1]}")
            folders = ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if self.protocol.test_from_source else ())
            for folder in folders:
                shutil.copytree(join(path, folder), join(target, folder))
            shutil.copy(join(path, "dataset.json"), target)

    def _plan_source(self) -> None:
        plans_file = join(self.preprocessed, self.source_name, self.protocol.plans_name + ".json")
        if isfile(plans_file):
            return
        self.say(f"planning {self.source_name} once for every dataset of the protocol")
        # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0 (no workers)
        planning_environment = {k: v for k, v in self.environment.items()
                                if not (k == "nnUNet_n_proc_DA" and v == "0")}
        run_command(["nnUNetv2_plan_and_preprocess", "-d", str(self.protocol.values["source_dataset_id"]),
                     "--no_pp", "-npfp", self.processes], planning_environment)
        tiny = self.protocol.values.get("tiny_plans")
        if tiny:  # what the protocol leaves out keeps micd tiny-plans' own default
            options = (["--features", ",".join(map(str, tiny["features"]))] if "features" in tiny else []) + \
                      (["--batch-size", tiny["batch_size"]] if "batch_size" in tiny else []) + \
                      (["--patch-size", ",".join(map(str, tiny["patch_size"]))] if "patch_size" in tiny else [])
            self.micd("tiny-plans", "-d", self.source_name, *options)

    def _make_dataset(self, labeled) -> None:
        """The semi-supervised dataset in nnUNet_raw (micd make-ssl-dataset), unless it exists."""
        name = self.dataset_name(labeled)
        if isdir(join(self.raw, name)):
            return
        self.say(f"making {name} ({labeled} labeled)")
        labeled_list = self.protocol.labeled_list(labeled)
        labeled_option = ["--labeled-cases", join(self.raw, self.source_name, labeled_list)] if labeled_list \
            else ["--labeled", "100%" if labeled == ALL_LABELED else labeled]
        test_option = [] if self.protocol.test_from_source else ["--test", self.protocol.values["test_cases"]]
        self.micd("make-ssl-dataset", "-d", self.source_name, "-o", name, *labeled_option, *test_option,
                  "--seed", self.protocol.values["split_seed"])

    def _preprocess_dataset(self, labeled) -> None:
        """The dataset preprocessed with the source's plans (labeled and unlabeled cases), unless already done."""
        name, plans = self.dataset_name(labeled), self.protocol.plans_name
        configuration = self.protocol.configuration
        done_marker = join(self.preprocessed, name, f".micd_benchmark_{plans}_{configuration}_done")
        if isfile(done_marker):
            return
        self.say(f"preprocessing {name} with the source's plans")
        # nnU-Net's trainer keeps a copy of the fingerprint, its preprocessor reads dataset.json from here (what
        # nnUNetv2_plan_and_preprocess would have written); the plans are the source's
        run_command(["nnUNetv2_extract_fingerprint", "-d", str(self.protocol.dataset_id(labeled)),
                     "-np", self.processes], self.environment)
        shutil.copy(join(self.raw, name, "dataset.json"), join(self.preprocessed, name))
        run_command(["nnUNetv2_move_plans_between_datasets", "-s", self.source_name, "-t", name, "-sp", plans,
                     "-tp", plans], self.environment)
        run_command(["nnUNetv2_preprocess", "-d", str(self.protocol.dataset_id(labeled)), "-plans_name", plans,
                     "-c", configuration, "-np", self.processes], self.environment)
        if load_json(join(self.raw, name, "dataset.json"))["numUnlabeled"] > 0:
            self.micd("preprocess-unlabeled", "-d", name, "-c", configuration, "-p", plans, "-np", self.processes)
        with open(done_marker, "w"):
            pass

    def _split(self, labeled) -> Dict[str, List[str]]:
        return load_json(join(self.raw, self.dataset_name(labeled), "ssl_manifest.json"))["splits"]

    @property
    def made_labeled_counts(self) -> List:
        """The labeled counts whose datasets exist in the work folder, in the protocol's order."""
        return [labeled for labeled in self.protocol.labeled_counts
                if isfile(join(self.raw, self.dataset_name(labeled), "ssl_manifest.json"))]

    def _check_nested_splits(self) -> None:
        """Every dataset must hold its labeled count, test on the same cases, and smaller labeled sets must lie
        inside larger ones (a dataset id names another labeled count once counts are added to a protocol)."""
        made = self.made_labeled_counts
        splits = [self._split(labeled) for labeled in made]
        for labeled, split in zip(made, splits):
            if (len(split["labeled"]) != labeled) if labeled != ALL_LABELED else bool(split["unlabeled"]):
                raise ProtocolError(f"{self.dataset_name(labeled)} in {self.raw} does not have {labeled} labeled "
                                    f"cases (made for another protocol?); use another work folder")
        for smaller, larger in zip(splits, splits[1:]):
            if smaller["test"] != larger["test"] or not set(smaller["labeled"]) <= set(larger["labeled"]):
                raise ProtocolError(f"the datasets in {self.raw} are not nested splits with one held-out split; "
                                    f"remove them and run again")

    def _check_recorded_held_out_cases(self) -> None:
        """The datasets are rebuilt when results.json is carried to a new work folder (another machine): its runs
        must have been evaluated on the held-out cases these datasets hold."""
        made = self.made_labeled_counts
        for name, entry in self.results["runs"].items():
            if entry["labeled"] in made and \
                    set(entry["case_mean_dice"]) != set(self._split(entry["labeled"])["test"]):
                raise ProtocolError(f"{name} in {self.results_file} was evaluated on other held-out cases than "
                                    f"{self.dataset_name(entry['labeled'])} in {self.raw} holds; use another work "
                                    f"folder")

    def _labels(self) -> Dict[str, str]:
        classes = foreground_classes(load_json(join(self.raw, self.source_name, "dataset.json")))
        return {str(value): name for name, value in classes.items()}

    def _refuse_other_protocol(self, recorded: dict) -> None:
        recorded_protocol = Protocol(recorded)
        mine, theirs = self.protocol.comparable_settings(), recorded_protocol.comparable_settings()
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        # a tag's settings may change until one of its runs has finished: nothing was measured under them yet
        finished_tags = {entry["method"].split("__", 1)[1] for entry in self.results["runs"].values()
                         if "__" in entry.get("method", "")}
        for kind, mine_by_tag, theirs_by_tag in (
                ("method_config", self.protocol.tagged_method_configs, recorded_protocol.tagged_method_configs),
                ("budget", self.protocol.tagged_budgets, recorded_protocol.tagged_budgets)):
            changed += [f"{kind} of tag {tag!r}" for tag in sorted(mine_by_tag.keys() & theirs_by_tag.keys()
                                                                   & finished_tags)
                        if mine_by_tag[tag] != theirs_by_tag[tag]]
        if changed:
            raise ProtocolError(f"{self.results_file} holds runs made under other protocol settings "
                                f"({', '.join(changed)}); use another work folder")
        self.results["protocol"] = self.protocol.values  # runs may have been added

    # ------------------------------------------------------------------ runs
    def run_folder(self, run: RunSpec) -> str:
        return join(self.work, "runs", run.name)

    def model_identifier(self, trainer: str) -> str:
        """nnU-Net's name of ``trainer``'s output folder under the protocol's plans and configuration."""
        return convert_trainer_plans_config_to_identifier(trainer, self.protocol.plans_name,
                                                          self.protocol.configuration)

    def model_folder(self, run: RunSpec) -> str:
        return join(self.run_folder(run), "nnUNet_results", self.dataset_name(run.labeled),
                    self.model_identifier(run.trainer), "fold_all")

    def run_environment(self, run: RunSpec) -> Dict[str, str]:
        budget = self.protocol.run_budget(run)
        training_budget = TrainingBudget(num_epochs=budget["num_epochs"],
                                         iterations_per_epoch=budget["iterations_per_epoch"],
                                         val_iterations=budget["val_iterations"], seed=run.seed,
                                         final_validation=False)  # fold 'all' would validate on its training cases
        environment = {**self.environment, "nnUNet_results": join(self.run_folder(run), "nnUNet_results"),
                       **training_budget.to_environment()}
        config = self.protocol.method_config(run)
        if config:
            config_file = join(self.run_folder(run), "method_config.json")
            maybe_mkdir_p(self.run_folder(run))
            save_json(config, config_file)
            environment["MICD_CONFIG"] = config_file
        return environment

    @property
    def trainers(self) -> List[str]:
        return sorted({run.trainer for run in self.protocol.runs})

    def cost_to_measure(self) -> bool:
        """Whether a trainer of the protocol has no measured cost (all of them, before the first run, or one added
        to the protocol since): then every trainer is measured again, since ratios hold within one measurement."""
        measured = self.results.get("cost", {}).get("trainers", {})
        return not set(self.trainers) <= set(measured)

    @property
    def cost_labeled(self):
        """The labeled count whose dataset the cost is measured on: the smallest, which has unlabeled cases."""
        return next(c for c in self.protocol.labeled_counts if c != ALL_LABELED)

    def measure_cost(self) -> None:
        """Seconds per step and peak memory of every trainer, each measured in a fresh process right after the
        other (``micd bench-step``), so that their ratios hold on a noisy machine."""
        trainers = self.trainers
        labeled = self.cost_labeled
        self.say(f"measuring seconds per step and memory of {', '.join(trainers)} ({self.protocol.cost_steps} "
                 f"steps each)")
        output = join(self.work, "cost.json")
        self.micd("bench-step", "-d", self.protocol.dataset_id(labeled), "-c", self.protocol.configuration, "-p",
                  self.protocol.plans_name, "--steps", self.protocol.cost_steps, "--compare", *trainers, "--json",
                  output, environment={**self.environment, TrainingBudget.ENVIRONMENT["seed"]: "0"},
                  log_file=join(self.work, "cost.log"))
        measured = load_json(output)
        self.results["cost"] = {"device": measured["device"], "steps": self.protocol.cost_steps,
                                "trainers": {name: measured["trainers"][name] for name in trainers}}
        save_results(self.results, self.results_file)

    def run_all(self, only: Optional[List[str]] = None) -> dict:
        """Every run of the protocol that is not finished; with ``only``, just the runs of those methods (trainer
        names, or trainer__tag)."""
        selected = self._select(only)
        maybe_mkdir_p(self.work)
        with WorkFolderLock(self.work) as self.lock:
            self.prepare(selected)
            if self.cost_to_measure():
                self.measure_cost()
            self._supersede_stale_runs()
            self._add_missing_student_a(selected)
            self._add_missing_literature(selected)
            runs = self.protocol.runs
            done = [run for run in runs if run.name in self.results["runs"]]
            own_budgets = " (but the runs with their own budget)" if any(self.protocol.tagged_budgets.values()) else ""
            self.say(f"protocol {self.protocol.name}: {len(runs)} runs, {len(done)} already finished, "
                     f"{self.protocol.total_steps} steps each{own_budgets}, on {self.device}; work folder {self.work}")
            if only:
                self.say(f"running only the runs of {', '.join(only)}")
            for number, run in enumerate(runs, start=1):
                if run.name in self.results["runs"] or run not in selected:
                    continue
                if self.deadline is not None and time.time() >= self.deadline:
                    self.stopped_at_time_limit = True
                    break
                unfinished = [r for r in runs if r.name not in self.results["runs"]]
                self.say(f"run {number}/{len(runs)}: {run.describe()} (protocol time left: "
                         f"{_format_duration(self.estimated_seconds_left(unfinished))})")
                self.lock.working_on(run.name)
                entry = self.run_one(run)
                if entry is None:
                    break
                self.results["runs"][run.name] = entry
                save_results(self.results, self.results_file)
                entry = self.results["runs"][run.name]
                self.say(f"run {number}/{len(runs)} finished: mean {self.protocol.held_out} Dice "
                         f"{entry['mean_dice']:.4f} ({_format_duration(entry['train_seconds'])} training)")
            left = [run for run in runs if run.name not in self.results["runs"]]
            why_left = "the time limit was reached: the same command continues" if self.stopped_at_time_limit \
                else "not selected"
            self.say(f"{len(runs) - len(left)} of {len(runs)} runs finished; results in {self.results_file}"
                     + (f"; {len(left)} left ({why_left})" if left else ""))
            return self.results

    def _select(self, only: Optional[List[str]]) -> List[RunSpec]:
        runs = self.protocol.runs
        if not only:
            return runs
        methods = sorted({run.method for run in runs} | {run.trainer for run in runs})
        unknown = sorted(set(only) - set(methods))
        if unknown:
            raise ProtocolError(f"--only {unknown}: the protocol's methods are {methods}")
        return [run for run in runs if run.method in only or run.trainer in only]

    def expected_method_config(self, run: RunSpec) -> Optional[dict]:
        """The method configuration the run's trainer would train with now (its defaults, the protocol's
        settings and the fields a variant fixes); None for trainers without one (nnUNetTrainerBudget)."""
        trainer = recursive_find_python_class(self.environment["nnUNet_extTrainer"], run.trainer, None,
                                              base_folder=self.environment["nnUNet_extTrainer"],
                                              cleanup_imports_from_base_folder=True)
        config_class = getattr(trainer, "config_class", None)
        if config_class is None:
            return None
        return config_class.with_fixed_fields(self.protocol.method_config(run), f"the protocol's {run.method}",
                                              **trainer.config_overrides).to_dict()

    def _supersede_stale_runs(self) -> None:
        """A finished run trained with another method configuration than its trainer's present one (defaults
        changed since) would mix configurations in one table: it is moved aside, kept, and trained again."""
        for run in [run for run in self.protocol.runs if run.name in self.results["runs"]]:
            entry = self.results["runs"][run.name]
            changed = self.changed_method_config(run)
            if changed is None:
                continue
            kept_as = f"{run.name}__{re.sub(r'[^0-9]', '', entry['finished'])[:14]}"
            self.say(f"{run.name} was trained with another configuration ({changed}): kept as superseded "
                     f"{kept_as}, training it again")
            if isdir(self.run_folder(run)):
                maybe_mkdir_p(join(self.work, "superseded"))
                shutil.move(self.run_folder(run), join(self.work, "superseded", kept_as))
            self.results.setdefault("superseded", {})[kept_as] = self.results["runs"].pop(run.name)
            save_results(self.results, self.results_file)

    def to_train(self, run: RunSpec) -> bool:
        """Not finished, or finished under other method settings (trained again)."""
        return run.name not in self.results["runs"] or self.changed_method_config(run) is not None

    def changed_method_config(self, run: RunSpec) -> Optional[str]:
        """For a finished run whose trainer would now train with another method configuration (its defaults
        changed since): what changed. None when nothing did."""
        expected = self.expected_method_config(run)
        recorded = self.results["runs"][run.name]["method_config"].get("method", {})
        if expected is None or recorded == expected:
            return None
        return ", ".join(f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in expected.items() if recorded.get(k) != v)

    def epochs_started(self, run: RunSpec) -> Optional[int]:
        """The last epoch (0-based) the run's training started, from train.log; None before the first. Checkpoints
        are written every epoch, so an interrupted training continues at this epoch."""
        log_file = join(self.run_folder(run), "train.log")
        if not isfile(log_file):
            return None
        with open(log_file) as f:
            epochs = [int(match.group(1)) for match in map(EPOCH_LINE.search, f) if match]
        return epochs[-1] if epochs else None

    @staticmethod
    def _median_epoch_seconds(entry: dict) -> Optional[float]:
        """From nnU-Net's epoch times recorded with a finished run: the median leaves out epochs stretched by a
        machine that was paused or asleep, which the run's wall time keeps."""
        seconds = entry["curves"].get("epoch_seconds")
        return float(np.median(seconds)) if seconds else None

    def estimated_seconds_left(self, unfinished: List[RunSpec]) -> Optional[float]:
        """For the ``unfinished`` runs: from the finished runs of each trainer (their median epoch time, else their
        wall time); before a trainer has finished once, from its measured seconds per step (training steps only, so
        an underestimate); unknown for a trainer with neither. An interrupted run counts only its epochs still to
        train; a finished one (trained under other defaults) is trained again from the start."""
        finished: Dict[str, List[float]] = {}
        for entry in self.results["runs"].values():
            # per step, so that a run with its own budget (another number of steps) tells the others' time too
            epoch_seconds = self._median_epoch_seconds(entry)
            training = entry["train_seconds"] if epoch_seconds is None else \
                epoch_seconds * len(entry["curves"]["epoch_seconds"])
            finished.setdefault(entry["trainer"], []).append((training + entry["predict_seconds"]) / entry["steps"])
        measured = self.results.get("cost", {}).get("trainers", {})
        seconds = 0.0
        for run in unfinished:
            if run.trainer in finished:
                whole_run = float(np.mean(finished[run.trainer])) * self.protocol.run_steps(run)
            elif run.trainer in measured:
                whole_run = measured[run.trainer]["seconds_per_step"] * self.protocol.run_steps(run)
            else:
                return None
            trained = 0 if run.name in self.results["runs"] else (self.epochs_started(run) or 0)
            seconds += whole_run * (1 - trained / self.protocol.run_budget(run)["num_epochs"])
        return seconds

    def status(self) -> List[str]:
        """What :meth:`run_all` would do now, without doing any of it: the state of every run and the time left."""
        runs = self.protocol.runs
        if isfile(self.results_file):
            self.results = load_results(self.results_file)
            self._refuse_other_protocol(self.results["protocol"])
        else:
            self.results = {"runs": {}}
        running = running_benchmark(self.work)
        lines, to_do = [f"protocol {self.protocol.name}, work folder {self.work}: "
                        + (f"a benchmark is running here (process {running['pid'] or '?'})" if running else
                           "no benchmark is running here")], []
        for number, run in enumerate(runs, start=1):
            entry = self.results["runs"].get(run.name)
            changed = self.changed_method_config(run) if entry is not None else None
            started = self.epochs_started(run) if entry is None else None
            in_progress = running is not None and running["run"] == run.name
            if entry is not None and changed is None:
                state = f"finished, mean {self.protocol.held_out} Dice {entry['mean_dice']:.4f}"
            elif entry is not None:
                state = f"finished under other method settings ({changed}): will be trained again"
            elif isdir(self.run_folder(run)) and isfile(self._final_checkpoint(run)):
                state = "trained; " + ("predicting" if in_progress else "prediction and evaluation to do")
            elif started is not None:
                state = f"training reached epoch {started + 1}/{self.protocol.run_budget(run)['num_epochs']}" + (
                    ", running" if in_progress else ", interrupted: a restart continues there")
            elif in_progress:
                state = "starting"
            else:
                state = "not started"
            if entry is None or changed is not None:
                to_do.append(run)
            lines.append(f"run {number}/{len(runs)}: {run.describe()}: {state}")
        left = self.estimated_seconds_left(to_do)
        lines.append(f"{len(runs) - len(to_do)} of {len(runs)} runs finished; time left "
                     + ("unknown" if left is None else f"about {_format_duration(left)}")
                     + (f"; {len(self.results['superseded'])} superseded run(s) kept in "
                        f"{join(self.work, 'superseded')}" if self.results.get("superseded") else ""))
        return lines

    def _add_missing_literature(self, selected: List[RunSpec]) -> None:
        """The literature's metrics for the selected finished runs recorded without them (and whose predictions and
        model are still here): an evaluation, no prediction."""
        for run in selected:
            entry = self.results["runs"].get(run.name)
            predictions = join(self.run_folder(run), "predictions")
            model = os.path.dirname(self.model_folder(run))
            if entry is None or "literature" in entry or not isdir(predictions) or not isdir(model) or \
                    not isdir(join(self.raw, self.dataset_name(run.labeled), "labelsTs")):
                continue
            self.say(f"  adding the literature's metrics to {run.name}")
            self._evaluate(run, model, predictions)
            entry["literature"] = literature_from_summary(join(predictions, LITERATURE_SUMMARY_FILE))
            save_results(self.results, self.results_file)

    def _add_missing_student_a(self, selected: List[RunSpec]) -> None:
        """Student A alone for the selected finished two-student runs that were recorded without it (and still
        have their model): a prediction, no training."""
        for run in selected:
            entry = self.results["runs"].get(run.name)
            if entry is None or "student_a" in entry or not isfile(self._final_checkpoint(run)):
                continue
            student_a = self._student_a(run)
            if student_a is not None:
                entry["student_a"] = student_a
                save_results(self.results, self.results_file)

    def run_one(self, run: RunSpec) -> Optional[dict]:
        """The run's results entry; None when the time limit stopped its training."""
        environment = self.run_environment(run)
        model_folder = self.model_folder(run)
        train_seconds = self._train(run, environment, model_folder)
        if self.stopped_at_time_limit:
            return None
        start = time.time()
        self.say(f"  predicting and evaluating the {self.protocol.held_out} split")
        predictions = self._predict_and_evaluate(run, environment, run.trainer, join(self.run_folder(run),
                                                                                     "predictions"))
        entry = self._collect(run, model_folder, predictions, train_seconds, time.time() - start)
        student_a = self._student_a(run)
        if student_a is not None:
            entry["student_a"] = student_a
        return entry

    def _final_checkpoint(self, run: RunSpec) -> str:
        return join(self.model_folder(run), "checkpoint_final.pth")

    def _student_a(self, run: RunSpec) -> Optional[dict]:
        """Test Dice of student A alone for trainers that predict with two students (None for the others).
        Student A is nnU-Net's planned network, so ``micd export-plain`` makes it a plain nnU-Net model: the
        difference to the two-student prediction is what the ensemble adds, the rest is the training's."""
        trained_with = load_json(join(self.model_folder(run), EFFECTIVE_CONFIG_FILE))
        mode = trained_with.get("method", {}).get("inference_mode")  # only two-student trainers have one
        if mode is None or mode == "student_a":  # student A's prediction is then the run's own
            return None
        self.say(f"  predicting and evaluating the {self.protocol.held_out} split with student A alone")
        folder = join(self.run_folder(run), "student_a")
        results_root = join(folder, "nnUNet_results")
        self.micd("export-plain", "-i", os.path.dirname(self.model_folder(run)), "-o",
                  join(results_root, self.dataset_name(run.labeled), self.model_identifier("nnUNetTrainer")),
                  "-f", "all")
        environment = {**self.run_environment(run), "nnUNet_results": results_root}
        predictions = self._predict_and_evaluate(run, environment, "nnUNetTrainer", join(folder, "predictions"))
        return dice_from_summary(join(predictions, "summary.json"))

    def _train(self, run: RunSpec, environment: Dict[str, str], model_folder: str) -> float:
        """Trains, or continues an interrupted training; returns the wall time of all attempts (up to the last epoch
        start an attempt that was killed had reached)."""
        timing_file = join(self.run_folder(run), "train_seconds.json")
        spent = load_json(timing_file)["seconds"] if isfile(timing_file) else 0.0
        if isfile(join(model_folder, "checkpoint_final.pth")):
            return spent
        maybe_mkdir_p(self.run_folder(run))
        command = ["nnUNetv2_train", str(self.protocol.dataset_id(run.labeled)), self.protocol.configuration, "all",
                   "-tr", run.trainer, "-p", self.protocol.plans_name, "-device", self.device]
        if isfile(join(model_folder, "checkpoint_latest.pth")):
            command.append("--c")
            self.say("  continuing the interrupted training from its last checkpoint")
        epochs = self.protocol.run_budget(run)["num_epochs"]
        start, first_epoch = time.time(), {}

        def show_progress(line: str) -> bool:
            """Shows the epoch started on ``line``; True to stop the training at the time limit."""
            match = EPOCH_LINE.search(line)
            if match is None:
                return False
            # kept up to date, so that a run killed with the benchmark still counts its time
            save_json({"seconds": spent + time.time() - start}, timing_file)
            epoch = int(match.group(1))
            first_epoch.setdefault("epoch", epoch)
            first_epoch.setdefault("time", time.time())  # the time per epoch leaves nnUNetv2_train's start-up out
            done = epoch - first_epoch["epoch"]
            epoch_seconds = (time.time() - first_epoch["time"]) / done if done else None
            if self.deadline is not None and epoch_seconds is not None and time.time() + epoch_seconds > self.deadline:
                self.say(f"  stopping at the time limit before epoch {epoch + 1}/{epochs}; the checkpoint of epoch "
                         f"{epoch} is kept")
                return True
            left = epoch_seconds * (epochs - epoch) if done else None
            self.say(f"  epoch {epoch + 1}/{epochs}, run time left {_format_duration(left)}")
            return False

        try:
            finished = run_command(command, environment, join(self.run_folder(run), "train.log"), show_progress,
                                   pass_fds=(self.lock.fileno(),))  # the folder stays locked while this training runs
            self.stopped_at_time_limit = not finished
        finally:
            save_json({"seconds": spent + time.time() - start}, timing_file)
        return spent + time.time() - start

    def _predict_and_evaluate(self, run: RunSpec, environment: Dict[str, str], trainer: str,
                              predictions: str) -> str:
        """Predicts the test split from checkpoint_final.pth of ``trainer``'s model in ``environment``'s results
        root with nnUNetv2_predict and evaluates with micd evaluate (nnU-Net's evaluation and the literature's metrics), with the labels and plans the model
        was trained with (the dataset of a finished run need not be preprocessed here); a partial prediction folder
        from an interruption is replaced; the commands' output goes to predict.log next to it."""
        name = self.dataset_name(run.labeled)
        if isdir(predictions):
            shutil.rmtree(predictions)
        log_file = join(os.path.dirname(predictions), "predict.log")
        run_command(["nnUNetv2_predict", "-i", join(self.raw, name, "imagesTs"), "-o", predictions, "-d", name,
                     "-c", self.protocol.configuration, "-p", self.protocol.plans_name, "-tr", trainer,
                     "-f", "all", "-chk", "checkpoint_final.pth", "-device", self.device,
                     *prediction_workers(self.device)],
                    environment, log_file)
        model = join(environment["nnUNet_results"], name, self.model_identifier(trainer))
        self._evaluate(run, model, predictions)
        return predictions

    def _evaluate(self, run: RunSpec, model: str, predictions: str) -> None:
        """``micd evaluate``: nnU-Net's evaluation (its summary.json, as nnUNetv2_evaluate_folder writes it) plus the
        semi-supervised literature's metrics (summary_literature.json), with the model's labels and plans."""
        self.micd("evaluate", join(self.raw, self.dataset_name(run.labeled), "labelsTs"), predictions,
                  "-djfile", join(model, "dataset.json"), "-pfile", join(model, "plans.json"), "-np", self.processes,
                  log_file=join(os.path.dirname(predictions), "predict.log"))

    def _collect(self, run: RunSpec, model_folder: str, predictions: str, train_seconds: float,
                 predict_seconds: float) -> dict:
        split = self._split(run.labeled)
        checkpoint = torch.load(join(model_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
        logged = checkpoint["logging"]  # nnU-Net's logger
        curves = {key: [float(v) for v in logged[key]] for key in CURVE_KEYS}
        curves["epoch_seconds"] = [round(end - start, 2) for start, end in zip(logged["epoch_start_timestamps"],
                                                                               logged["epoch_end_timestamps"])]
        return {
            "trainer": run.trainer, "method": run.method, "labeled": run.labeled, "seed": run.seed,
            "num_labeled": len(split["labeled"]), "num_unlabeled": len(split["unlabeled"]),
            "num_test": len(split["test"]), "dataset": self.dataset_name(run.labeled),
            "steps": self.protocol.run_steps(run), "train_seconds": round(train_seconds, 1),
            "predict_seconds": round(predict_seconds, 1), **dice_from_summary(join(predictions, "summary.json")),
            "literature": literature_from_summary(join(predictions, LITERATURE_SUMMARY_FILE)),
            "curves": curves,
            "method_config": load_json(join(model_folder, EFFECTIVE_CONFIG_FILE)),
            "code_version": _code_version(), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

