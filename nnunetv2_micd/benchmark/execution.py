"""One benchmark run from start to results entry: nnUNetv2_train (continued from its last checkpoint after an
interruption, stopped at an epoch's start by a time limit), then nnUNetv2_predict on the held-out split and
``micd evaluate``; for two-student trainers also student A alone."""
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, maybe_mkdir_p, \
    save_json

import nnunetv2_micd
from nnunetv2_micd.benchmark.lock import WorkFolderLock
from nnunetv2_micd.benchmark.protocol import RunSpec
from nnunetv2_micd.benchmark.results import CURVE_KEYS, save_results
from nnunetv2_micd.benchmark.shell import BenchmarkShell, format_duration
from nnunetv2_micd.benchmark.work_folder import EPOCH_LINE
from nnunetv2_micd.commands import prediction_workers
from nnunetv2_micd.evaluation.literature_metrics import LITERATURE_SUMMARY_FILE
from nnunetv2_micd.evaluation.summaries import dice_from_summary, literature_from_summary
from nnunetv2_micd.method.config import TrainingBudget
from nnunetv2_micd.training.nnUNetTrainerBudget import EFFECTIVE_CONFIG_FILE


def code_version() -> str:
    """The package version, and the git commit when running from a checkout."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(nnunetv2_micd.__file__)))
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        return f"{nnunetv2_micd.__version__}+{commit}"
    except (OSError, subprocess.CalledProcessError):
        return nnunetv2_micd.__version__


class RunExecutor:
    def __init__(self, shell: BenchmarkShell, device: str, deadline: Optional[float] = None):
        self.shell, self.folder, self.protocol = shell, shell.folder, shell.folder.protocol
        self.device = device
        self.deadline = deadline

    def run_environment(self, run: RunSpec) -> Dict[str, str]:
        """nnU-Net's paths with the run's own results root, its budget and its method configuration."""
        budget = self.protocol.run_budget(run)
        training_budget = TrainingBudget(num_epochs=budget["num_epochs"],
                                         iterations_per_epoch=budget["iterations_per_epoch"],
                                         val_iterations=budget["val_iterations"], seed=run.seed,
                                         final_validation=False)  # fold 'all' would validate on its training cases
        run_folder = self.folder.run_folder(run)
        environment = {**self.shell.environment, "nnUNet_results": join(run_folder, "nnUNet_results"),
                       **training_budget.to_environment()}
        config = self.protocol.method_config(run)
        if config:
            config_file = join(run_folder, "method_config.json")
            maybe_mkdir_p(run_folder)
            save_json(config, config_file)
            environment["MICD_CONFIG"] = config_file
        return environment

    def run_one(self, run: RunSpec, lock: WorkFolderLock) -> Optional[dict]:
        """The run's results entry; None when the time limit stopped its training. The training holds ``lock``."""
        environment = self.run_environment(run)
        train_seconds, finished = self.train(run, environment, lock)
        if not finished:
            return None
        start = time.time()
        self.shell.say(f"  predicting and evaluating the {self.protocol.held_out} split")
        predictions = self._predict_and_evaluate(run, environment, run.trainer,
                                                 join(self.folder.run_folder(run), "predictions"))
        entry = self._collect(run, predictions, train_seconds, time.time() - start)
        student_a = self.student_a(run)
        if student_a is not None:
            entry["student_a"] = student_a
        return entry

    def train(self, run: RunSpec, environment: Dict[str, str], lock: WorkFolderLock) -> Tuple[float, bool]:
        """Trains, or continues an interrupted training. Returns the wall time of all attempts (up to the last epoch
        start an attempt that was killed had reached) and whether the training finished (False: the time limit
        stopped it)."""
        run_folder, model_folder = self.folder.run_folder(run), self.folder.model_folder(run)
        timing_file = join(run_folder, "train_seconds.json")
        spent = load_json(timing_file)["seconds"] if isfile(timing_file) else 0.0
        if isfile(join(model_folder, "checkpoint_final.pth")):
            return spent, True
        maybe_mkdir_p(run_folder)
        command = ["nnUNetv2_train", str(self.protocol.dataset_id(run.labeled)), self.protocol.configuration, "all",
                   "-tr", run.trainer, "-p", self.protocol.plans_name, "-device", self.device]
        if isfile(join(model_folder, "checkpoint_latest.pth")):
            command.append("--c")
            self.shell.say("  continuing the interrupted training from its last checkpoint")
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
                self.shell.say(f"  stopping at the time limit before epoch {epoch + 1}/{epochs}; the checkpoint of "
                               f"epoch {epoch} is kept")
                return True
            left = epoch_seconds * (epochs - epoch) if done else None
            self.shell.say(f"  epoch {epoch + 1}/{epochs}, run time left {format_duration(left)}")
            return False

        try:
            # the folder stays locked while this training runs, even if the benchmark is killed alone
            finished = self.shell.run(command, environment, join(run_folder, "train.log"), show_progress,
                                      pass_fds=(lock.fileno(),))
        finally:
            save_json({"seconds": spent + time.time() - start}, timing_file)
        return spent + time.time() - start, finished

    def student_a(self, run: RunSpec) -> Optional[dict]:
        """Held-out Dice of student A alone for trainers that predict with two students (None for the others).
        Student A is nnU-Net's planned network, so ``micd export-plain`` makes it a plain nnU-Net model: the
        difference to the two-student prediction is what the ensemble adds, the rest is the training's."""
        trained_with = load_json(join(self.folder.model_folder(run), EFFECTIVE_CONFIG_FILE))
        mode = trained_with.get("method", {}).get("inference_mode")  # only two-student trainers have one
        if mode is None or mode == "student_a":  # student A's prediction is then the run's own
            return None
        self.shell.say(f"  predicting and evaluating the {self.protocol.held_out} split with student A alone")
        folder = join(self.folder.run_folder(run), "student_a")
        results_root = join(folder, "nnUNet_results")
        self.shell.micd("export-plain", "-i", os.path.dirname(self.folder.model_folder(run)), "-o",
                        join(results_root, self.folder.dataset_name(run.labeled),
                             self.folder.model_identifier("nnUNetTrainer")), "-f", "all")
        environment = {**self.run_environment(run), "nnUNet_results": results_root}
        predictions = self._predict_and_evaluate(run, environment, "nnUNetTrainer", join(folder, "predictions"))
        return dice_from_summary(join(predictions, "summary.json"))

    def add_missing_student_a(self, results: dict, selected: List[RunSpec]) -> None:
        """Student A alone for the selected finished two-student runs that were recorded without it (and still
        have their model): a prediction, no training."""
        for run in selected:
            entry = results["runs"].get(run.name)
            if entry is None or "student_a" in entry or not isfile(self.folder.final_checkpoint(run)):
                continue
            student_a = self.student_a(run)
            if student_a is not None:
                entry["student_a"] = student_a
                save_results(results, self.folder.results_file)

    def add_missing_literature(self, results: dict, selected: List[RunSpec]) -> None:
        """The literature's metrics for the selected finished runs recorded without them (and whose predictions and
        model are still here): an evaluation, no prediction."""
        for run in selected:
            entry = results["runs"].get(run.name)
            predictions = join(self.folder.run_folder(run), "predictions")
            model = os.path.dirname(self.folder.model_folder(run))
            if entry is None or "literature" in entry or not isdir(predictions) or not isdir(model) or \
                    not isdir(join(self.folder.raw, self.folder.dataset_name(run.labeled), "labelsTs")):
                continue
            self.shell.say(f"  adding the literature's metrics to {run.name}")
            self._evaluate(run, model, predictions)
            entry["literature"] = literature_from_summary(join(predictions, LITERATURE_SUMMARY_FILE))
            save_results(results, self.folder.results_file)

    def _predict_and_evaluate(self, run: RunSpec, environment: Dict[str, str], trainer: str,
                              predictions: str) -> str:
        """Predicts the held-out split from checkpoint_final.pth of ``trainer``'s model in ``environment``'s
        results root with nnUNetv2_predict and evaluates it (:meth:`_evaluate`). The dataset of a finished run need
        not be preprocessed here; a partial prediction folder from an interruption is replaced; the commands'
        output goes to predict.log next to it."""
        name = self.folder.dataset_name(run.labeled)
        if isdir(predictions):
            shutil.rmtree(predictions)
        self.shell.run(["nnUNetv2_predict", "-i", join(self.folder.raw, name, "imagesTs"), "-o", predictions,
                        "-d", name, "-c", self.protocol.configuration, "-p", self.protocol.plans_name, "-tr", trainer,
                        "-f", "all", "-chk", "checkpoint_final.pth", "-device", self.device,
                        *prediction_workers(self.device)],
                       environment, join(os.path.dirname(predictions), "predict.log"))
        self._evaluate(run, join(environment["nnUNet_results"], name, self.folder.model_identifier(trainer)),
                       predictions)
        return predictions

    def _evaluate(self, run: RunSpec, model: str, predictions: str) -> None:
        """``micd evaluate``: nnU-Net's evaluation (its summary.json, as nnUNetv2_evaluate_folder writes it) plus the
        semi-supervised literature's metrics (summary_literature.json), with the model's labels and plans."""
        self.shell.micd("evaluate", join(self.folder.raw, self.folder.dataset_name(run.labeled), "labelsTs"),
                        predictions, "-djfile", join(model, "dataset.json"), "-pfile", join(model, "plans.json"),
                        "-np", self.shell.processes, log_file=join(os.path.dirname(predictions), "predict.log"))

    def _collect(self, run: RunSpec, predictions: str, train_seconds: float, predict_seconds: float) -> dict:
        split = self.folder.split(run.labeled)
        model_folder = self.folder.model_folder(run)
        checkpoint = torch.load(join(model_folder, "checkpoint_final.pth"), map_location="cpu", weights_only=False)
        logged = checkpoint["logging"]  # nnU-Net's logger
        curves = {key: [float(v) for v in logged[key]] for key in CURVE_KEYS}
        curves["epoch_seconds"] = [round(end - start, 2) for start, end in zip(logged["epoch_start_timestamps"],
                                                                               logged["epoch_end_timestamps"])]
        return {
            "trainer": run.trainer, "method": run.method, "labeled": run.labeled, "seed": run.seed,
            "num_labeled": len(split["labeled"]), "num_unlabeled": len(split["unlabeled"]),
            "num_test": len(split["test"]), "dataset": self.folder.dataset_name(run.labeled),
            "steps": self.protocol.run_steps(run), "train_seconds": round(train_seconds, 1),
            "predict_seconds": round(predict_seconds, 1), **dice_from_summary(join(predictions, "summary.json")),
            "literature": literature_from_summary(join(predictions, LITERATURE_SUMMARY_FILE)),
            "curves": curves,
            "method_config": load_json(join(model_folder, EFFECTIVE_CONFIG_FILE)),
            "code_version": code_version(), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
