"""``micd demo``, the README's first command, end to end at a budget of a few steps.

The demo drives nnU-Net's own commands in its work folder; this checks that every stage ran (plans, unlabeled
preprocessing, both trainings, prediction of every test volume, evaluation), that the table and the picture are
written, and that the user's own nnU-Net folders are left alone.
"""
import json
import os

from nnunetv2_micd.dataset_conversion.synthetic import SyntheticSpec
from nnunetv2_micd.demo import DATASET_NAME, TRAINERS
from nnunetv2_micd.experiment_planning.tiny_plans import TINY_PLANS
from tests.conftest import micd


def test_demo_runs_the_whole_pipeline(tmp_path, nnunet_folders):
    work = tmp_path / "demo"
    environment = {**os.environ, "nnUNet_n_proc_DA": "2"}
    result = micd("demo", "-o", work, "--epochs", "1", "--iterations", "2", env=environment)

    preprocessed = work / "nnUNet_preprocessed" / DATASET_NAME
    assert (preprocessed / f"{TINY_PLANS}.json").is_file()
    assert len(list((preprocessed / "nnUNetPlans_3d_fullres_unlabeled").iterdir())) > 0
    num_test = SyntheticSpec().num_test
    for trainer in TRAINERS:
        model = work / "nnUNet_results" / DATASET_NAME / f"{trainer}__{TINY_PLANS}__3d_fullres" / "fold_all"
        assert (model / "checkpoint_final.pth").is_file()
        summary = json.loads((work / "predictions" / trainer / "summary.json").read_text())
        assert len(summary["metric_per_case"]) == num_test
        # the table shows what nnU-Net's evaluation of this trainer's predictions says
        table = (work / "demo_results.md").read_text()
        row = next(line for line in table.splitlines() if line.startswith(f"| {trainer} |"))
        assert row.rstrip(" |").endswith(f"| {summary['foreground_mean']['Dice']:.3f}")
    assert (work / "demo_dice.png").stat().st_size > 0
    assert "done" in result.stdout
    for folder in nnunet_folders.values():  # the session's nnU-Net folders stand for the user's
        assert not (folder / DATASET_NAME).exists()
