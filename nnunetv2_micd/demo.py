"""``micd demo``: the whole pipeline on a built-in synthetic dataset, MICD against plain nnU-Net at equal budget.

Everything runs through nnU-Net's own commands, in nnU-Net folders inside the demo's work folder (the user's
nnUNet_raw, nnUNet_preprocessed and nnUNet_results are not touched).
"""
import json
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json, maybe_mkdir_p

from nnunetv2_micd.commands import micd_command, prediction_workers, run_command
from nnunetv2_micd.dataset_conversion.synthetic import LABELS, SyntheticSpec, write_synthetic_dataset
from nnunetv2_micd.experiment_planning.tiny_plans import TINY_PLANS
from nnunetv2_micd.method.config import MICDConfig, TrainingBudget
from nnunetv2_micd.paths import trainer_path
from nnunetv2_micd.plotting import grouped_bars
from nnunetv2_micd.tables import markdown_table

DATASET_ID = 999
DATASET_NAME = f"Dataset{DATASET_ID}_MICDDemo"
TRAINERS = ("nnUNetTrainerBudget", "nnUNetTrainerMICD")
# lines of nnU-Net's output that show how a training run progresses
PROGRESS_MARKERS = ("Epoch ", "train_loss", "Pseudo dice", "Epoch time", "Mean Validation Dice")


@dataclass(frozen=True)
class DemoSettings:
    work_folder: str = "micd_demo"
    epochs: int = 24
    iterations_per_epoch: int = 50
    seed: int = 0
    dataset: SyntheticSpec = SyntheticSpec()
    #: a MICD_CONFIG file for MICD's settings; None: the method's defaults
    method_config_file: Optional[str] = None


class Demo:
    def __init__(self, settings: DemoSettings):
        self.settings = settings
        self.started = time.time()
        self.root = os.path.abspath(settings.work_folder)
        self.folders = {key: join(self.root, key) for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        self.predictions = join(self.root, "predictions")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        budget = TrainingBudget(num_epochs=settings.epochs, iterations_per_epoch=settings.iterations_per_epoch,
                                val_iterations=5, seed=settings.seed,
                                final_validation=False)  # the test volumes are predicted instead
        self.environment = {**os.environ, **self.folders, "nnUNet_extTrainer": trainer_path(),
                            **budget.to_environment()}
        self.environment.setdefault("nnUNet_def_n_proc", "2")
        self.environment.pop("MICD_CONFIG", None)  # the defaults, unless settings say otherwise
        self.method_config = MICDConfig()
        if settings.method_config_file is not None:
            # read now, so that a bad file stops the demo before any work, not after the labeled-only training
            self.method_config = MICDConfig.from_file(settings.method_config_file)
            self.environment["MICD_CONFIG"] = os.path.abspath(settings.method_config_file)

    def method_description(self) -> str:
        """MICD's settings where they differ from its defaults."""
        defaults = MICDConfig().to_dict()
        changed = {key: value for key, value in self.method_config.to_dict().items() if value != defaults[key]}
        return "MICD with its default settings" if not changed else f"MICD with {json.dumps(changed)}"

    def say(self, message: str) -> None:
        minutes, seconds = divmod(int(time.time() - self.started), 60)
        print(f"[micd demo {minutes:02d}:{seconds:02d}] {message}", flush=True)

    def run(self, command: List[str], show_progress: bool = False) -> None:
        """Runs a command in the work folder (see :func:`micd_command`), showing its progress lines."""
        def show(line: str) -> None:
            if show_progress and any(marker in line for marker in PROGRESS_MARKERS):
                print("    " + line.rstrip(), flush=True)
        run_command(command, self.environment, on_line=show, cwd=self.root)

    def prepare_dataset(self) -> None:
        for folder in self.folders.values():
            maybe_mkdir_p(folder)
        raw = join(self.folders["nnUNet_raw"], DATASET_NAME)
        spec = self.settings.dataset
        if not os.path.isfile(join(raw, "dataset.json")):  # written last: without it, an interrupted write
            self.say(f"writing the synthetic dataset: {spec.num_labeled} labeled, {spec.num_unlabeled} unlabeled, "
                     f"{spec.num_test} test volumes of {spec.shape}")
            write_synthetic_dataset(raw, spec)
        self.say("nnUNetv2_plan_and_preprocess")
        self.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"])
        self.say("micd tiny-plans and micd preprocess-unlabeled")
        self.run(micd_command("tiny-plans", "-d", DATASET_ID))
        self.run(micd_command("preprocess-unlabeled", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "2"))

    def train_predict_evaluate(self, trainer: str) -> Dict:
        settings = self.settings
        self.say(f"nnUNetv2_train {trainer}: {settings.epochs} epochs x {settings.iterations_per_epoch} steps "
                 f"on {self.device}")
        self.run(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "all", "-tr", trainer, "-p", TINY_PLANS,
                  "-device", self.device], show_progress=True)
        raw = join(self.folders["nnUNet_raw"], DATASET_NAME)
        output = join(self.predictions, trainer)
        self.say(f"nnUNetv2_predict and nnUNetv2_evaluate_folder ({trainer})")
        self.run(["nnUNetv2_predict", "-i", join(raw, "imagesTs"), "-o", output, "-d", str(DATASET_ID),
                  "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", TINY_PLANS, "-device", self.device,
                  *prediction_workers(self.device)])
        preprocessed = join(self.folders["nnUNet_preprocessed"], DATASET_NAME)
        self.run(["nnUNetv2_evaluate_folder", join(raw, "labelsTs"), output, "-djfile",
                  join(preprocessed, "dataset.json"), "-pfile", join(preprocessed, TINY_PLANS + ".json"), "-np", "2"])
        return load_json(join(output, "summary.json"))


def _foreground_classes() -> List[Tuple[str, str]]:
    """(name, key in nnU-Net's summary.json) of every foreground class."""
    return [(name, str(value)) for name, value in LABELS.items() if value > 0]


def dice_table(summaries: Dict[str, Dict]) -> str:
    """Markdown table of the test Dice per class and averaged over the foreground classes."""
    classes = _foreground_classes()
    rows = [[trainer, *(f"{summary['mean'][key]['Dice']:.3f}" for _, key in classes),
             f"{summary['foreground_mean']['Dice']:.3f}"] for trainer, summary in summaries.items()]
    return markdown_table(["trainer", *(name for name, _ in classes), "mean"], rows)


def plot_dice(summaries: Dict[str, Dict], filename: str) -> None:
    classes = _foreground_classes()
    grouped_bars(filename, [name for name, _ in classes],
                 {trainer: [summary["mean"][key]["Dice"] for _, key in classes]
                  for trainer, summary in summaries.items()})


def run_demo(settings: DemoSettings = DemoSettings()) -> Dict[str, Dict]:
    demo = Demo(settings)
    demo.say(f"labeled-only nnU-Net against {demo.method_description()}")
    demo.prepare_dataset()
    summaries = {trainer: demo.train_predict_evaluate(trainer) for trainer in TRAINERS}
    table = dice_table(summaries)
    figure = join(os.path.abspath(settings.work_folder), "demo_dice.png")
    plot_dice(summaries, figure)
    with open(join(os.path.abspath(settings.work_folder), "demo_results.md"), "w") as f:
        f.write(f"Test Dice on {settings.dataset.num_test} synthetic volumes, {settings.dataset.num_labeled} "
                f"labeled and {settings.dataset.num_unlabeled} unlabeled training volumes, "
                f"{settings.epochs * settings.iterations_per_epoch} steps each; {demo.method_description()}:"
                f"\n\n{table}\n")
    demo.say("done")
    print("\n" + table + f"\n\nplot: {figure}\n")
    return summaries
