import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_micd.dataset_conversion.synthetic import LABELS, SyntheticSpec, synthetic_case, write_synthetic_dataset
from nnunetv2_micd.demo import DATASET_NAME, Demo, DemoSettings, dice_table, plot_dice
from nnunetv2_micd.method.config import ConfigError


def test_synthetic_case_has_three_structures_of_decreasing_size():
    image, label = synthetic_case((40, 40, 40), np.random.default_rng(0))
    sizes = [np.sum(label == LABELS[name]) for name in ("large", "medium", "small")]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    assert image.dtype == np.float32
    assert image[label == LABELS["large"]].mean() > image[label == LABELS["medium"]].mean()


def test_synthetic_dataset_layout(tmp_path):
    folder = write_synthetic_dataset(str(tmp_path / "Dataset999_X"),
                                     SyntheticSpec(num_labeled=2, num_unlabeled=3, num_test=1, shape=(16, 16, 16)))
    counts = {sub: len(list((tmp_path / "Dataset999_X" / sub).iterdir()))
              for sub in ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs")}
    assert counts == {"imagesTr": 2, "labelsTr": 2, "imagesUnlabeled": 3, "imagesTs": 1, "labelsTs": 1}
    label = sitk.ReadImage(str(tmp_path / "Dataset999_X" / "labelsTr" / "synth_000.nii.gz"))
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= set(LABELS.values())
    assert folder.endswith("Dataset999_X")


def _summary(dice):
    return {"mean": {str(i + 1): {"Dice": d} for i, d in enumerate(dice)},
            "foreground_mean": {"Dice": float(np.mean(dice))}}


def test_table_and_plot(tmp_path):
    summaries = {"nnUNetTrainerBudget": _summary([0.9, 0.5, 0.1]), "nnUNetTrainerMICD": _summary([0.92, 0.6, 0.3])}
    table = dice_table(summaries).splitlines()
    assert table[0] == "| trainer | large | medium | small | mean |"
    assert table[3] == "| nnUNetTrainerMICD | 0.920 | 0.600 | 0.300 | 0.607 |"
    plot_dice(summaries, str(tmp_path / "dice.png"))
    assert (tmp_path / "dice.png").stat().st_size > 1000


def test_an_interrupted_write_of_the_demo_dataset_is_done_again(tmp_path):
    spec = SyntheticSpec(num_labeled=2, num_unlabeled=1, num_test=1, shape=(16, 16, 16))
    demo = Demo(DemoSettings(work_folder=str(tmp_path), dataset=spec))
    demo.say = lambda message: None
    demo.run = lambda command, show_progress=False: None  # nnU-Net's commands are not what is tested here
    raw = tmp_path / "nnUNet_raw" / DATASET_NAME
    (raw / "imagesTr").mkdir(parents=True)  # interrupted before anything else was written
    demo.prepare_dataset()
    assert (raw / "dataset.json").is_file() and len(list((raw / "labelsTr").iterdir())) == 2


def test_the_demo_tries_the_micd_settings_it_is_given_and_refuses_a_bad_file_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("MICD_CONFIG", str(tmp_path / "the users own.json"))  # never what the demo trains with
    assert "MICD_CONFIG" not in Demo(DemoSettings(work_folder=str(tmp_path))).environment
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"learned_class_dice": 0.5}))
    demo = Demo(DemoSettings(work_folder=str(tmp_path / "work"), method_config_file=str(config)))
    assert demo.environment["MICD_CONFIG"] == str(config)
    assert demo.method_description() == 'MICD with {"learned_class_dice": 0.5}'
    config.write_text(json.dumps({"learned_class_dice": 2}))
    with pytest.raises(ConfigError, match="learned_class_dice must be in"):
        Demo(DemoSettings(work_folder=str(tmp_path / "work"), method_config_file=str(config)))
    assert not (tmp_path / "work").exists()


def test_the_demo_trains_both_trainers_with_the_seed_it_is_given(tmp_path, monkeypatch):
    from nnunetv2_micd import demo as demo_module
    from nnunetv2_micd.cli import main
    environments = []
    monkeypatch.setattr(demo_module, "run_demo",
                        lambda settings: environments.append(demo_module.Demo(settings).environment))
    main(["demo", "-o", str(tmp_path), "--seed", "2"])
    main(["demo", "-o", str(tmp_path)])
    assert [environment["MICD_SEED"] for environment in environments] == ["2", "0"]


def test_the_cli_defaults_of_micd_demo_are_the_demo_settings():
    """The CLI keeps its imports light, so it spells the defaults out; they must not drift from DemoSettings."""
    from nnunetv2_micd.cli import build_parser

    args = build_parser().parse_args(["demo"])
    defaults = DemoSettings()
    assert (args.o, args.epochs, args.iterations, args.seed, args.config) == (
        defaults.work_folder, defaults.epochs, defaults.iterations_per_epoch, defaults.seed,
        defaults.method_config_file)
