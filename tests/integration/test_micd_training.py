"""nnUNetTrainerMICD through nnU-Net's own commands: train, get killed, resume, predict, evaluate."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_micd.method.rampup import gaussian_rampup
from tests.conftest import run

EPOCHS, ITERATIONS = 4, 8
PLANS = "nnUNetPlans_tiny"


def _budget(environment, **extra):
    return {**environment, "MICD_NUM_EPOCHS": str(EPOCHS), "MICD_ITERS_PER_EPOCH": str(ITERATIONS),
            "MICD_VAL_ITERS": "2", "MICD_SEED": "1", **extra}


def _train_command(dataset, trainer="nnUNetTrainerMICD", *extra):
    return ["nnUNetv2_train", str(dataset["id"]), "3d_fullres", "0", "-tr", trainer, "-p", PLANS, "-device", "cpu",
            *extra]


@pytest.fixture(scope="module")
def interrupted_and_resumed(synthetic_dataset, trainer_environment, nnunet_folders, tmp_path_factory):
    """Trains MICD, kills nnUNetv2_train with SIGKILL after its first checkpoint, and resumes it with --c."""
    environment = _budget(trainer_environment)
    output = nnunet_folders["nnUNet_results"] / synthetic_dataset["name"] / \
        f"nnUNetTrainerMICD__{PLANS}__3d_fullres" / "fold_0"
    process = subprocess.Popen(_train_command(synthetic_dataset), env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (output / "checkpoint_latest.pth").exists():
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint:\n{process.stderr.read()[-3000:]}")
        assert time.time() < deadline, "no checkpoint_latest.pth after 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "checkpoint_final.pth").exists(), "training finished before it could be interrupted"
    snapshot = tmp_path_factory.mktemp("interrupted") / "checkpoint_latest.pth"
    shutil.copy(output / "checkpoint_latest.pth", snapshot)
    logs_before = set(output.glob("training_log_*.txt"))
    time.sleep(1)  # nnU-Net names log files by the second

    run(_train_command(synthetic_dataset, "nnUNetTrainerMICD", "--c"), env=environment)
    resumed_log, = set(output.glob("training_log_*.txt")) - logs_before
    return {"output": output, "snapshot": snapshot, "resumed_log": resumed_log.read_text(),
            "environment": environment}


def test_resume_continues_epochs_steps_rampup_and_teachers(interrupted_and_resumed):
    saved = torch.load(interrupted_and_resumed["snapshot"], weights_only=False)
    resumed_from_epoch = saved["current_epoch"]
    assert saved["micd"]["optimizer_step"] == resumed_from_epoch * ITERATIONS
    log = interrupted_and_resumed["resumed_log"]
    assert re.search(rf": Epoch {resumed_from_epoch} *$", log, re.M) and not re.search(r": Epoch 0 *$", log, re.M)

    final = torch.load(interrupted_and_resumed["output"] / "checkpoint_final.pth", weights_only=False)
    assert final["micd"]["optimizer_step"] == EPOCHS * ITERATIONS
    config = final["micd"]["config"]["method"]
    rampup_steps = round(config["rampup_fraction"] * EPOCHS * ITERATIONS)
    expected = [gaussian_rampup((e + 1) * ITERATIONS, rampup_steps, config["lambda_max"]) for e in range(EPOCHS)]
    assert final["logging"]["unsupervised_weight"] == pytest.approx(expected)
    # the teachers were restored, not re-created from the students, so they stayed EMAs of the students
    teacher, student = final["micd"]["teachers"][0], final["micd"]["students"][0]
    assert any(not torch.equal(teacher[k], student[k]) for k in student if student[k].is_floating_point())


def test_output_folder_has_nnunet_files_and_micd_monitoring(interrupted_and_resumed):
    output = interrupted_and_resumed["output"]
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "progress_micd.png",
                 "micd_config.json", "validation/summary.json"):
        assert (output / name).is_file(), name
    effective = load_json(output / "micd_config.json")
    assert effective["budget"]["iterations_per_epoch"] == ITERATIONS
    assert effective["method"]["inference_mode"] == "ensemble"
    logged = torch.load(output / "checkpoint_final.pth", weights_only=False)["logging"]
    for key in ("loss_sup", "loss_mcpc", "loss_cfc", "loss_cmd", "disagreement"):
        assert len(logged[key]) == EPOCHS and all(v == v for v in logged[key]), key  # one finite value per epoch


def test_resume_with_another_configuration_is_refused(interrupted_and_resumed, synthetic_dataset, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"lambda_max": 0.5}')
    environment = {**interrupted_and_resumed["environment"], "MICD_CONFIG": str(config)}
    result = subprocess.run(_train_command(synthetic_dataset, "nnUNetTrainerMICD", "--c"), env=environment,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "started with another configuration" in result.stderr and "lambda_max: 0.1 -> 0.5" in result.stderr


@pytest.fixture(scope="module")
def nnunet_predictions(interrupted_and_resumed, synthetic_dataset, tmp_path_factory):
    """The test images predicted by nnUNetv2_predict with the trained MICD model."""
    predictions = tmp_path_factory.mktemp("nnunet_predictions")
    run(["nnUNetv2_predict", "-i", str(synthetic_dataset["raw"] / "imagesTs"), "-o", str(predictions),
         "-d", str(synthetic_dataset["id"]), "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMICD",
         "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1"], env=interrupted_and_resumed["environment"])
    return predictions


def test_predict_and_evaluate_with_nnunet_commands(interrupted_and_resumed, synthetic_dataset, nnunet_predictions):
    environment = interrupted_and_resumed["environment"]
    predictions = nnunet_predictions
    run(["nnUNetv2_evaluate_folder", str(synthetic_dataset["raw"] / "labelsTs"), str(predictions),
         "-djfile", str(synthetic_dataset["preprocessed"] / "dataset.json"),
         "-pfile", str(synthetic_dataset["preprocessed"] / f"{PLANS}.json"), "-np", "1"], env=environment)
    summary = load_json(predictions / "summary.json")
    assert len(summary["metric_per_case"]) == len(os.listdir(synthetic_dataset["raw"] / "labelsTs"))
    # chance level: a random labelling gives each class a Dice of about its volume fraction (< 0.05 here)
    assert summary["mean"]["1"]["Dice"] > 0.3
    assert summary["foreground_mean"]["Dice"] > 0.15


def test_exported_student_a_predicts_with_plain_nnunet(interrupted_and_resumed, synthetic_dataset, tmp_path):
    from tests.conftest import micd
    plain_model = tmp_path / "plain_model"
    micd("export-plain", "-i", interrupted_and_resumed["output"].parent, "-o", plain_model)
    checkpoint = torch.load(plain_model / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and "micd" not in checkpoint

    plain_environment = {k: v for k, v in interrupted_and_resumed["environment"].items() if k != "nnUNet_extTrainer"}
    predictions = tmp_path / "predictions"
    run(["nnUNetv2_predict_from_modelfolder", "-i", str(synthetic_dataset["raw"] / "imagesTs"),
         "-o", str(predictions), "-m", str(plain_model), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
        env=plain_environment)
    assert sorted(p.name for p in predictions.glob("*.nii.gz")) == \
        sorted(p.name for p in (synthetic_dataset["raw"] / "labelsTs").iterdir())


def test_model_zip_predicts_after_installing_elsewhere(interrupted_and_resumed, synthetic_dataset, tmp_path):
    environment = interrupted_and_resumed["environment"]
    archive = tmp_path / "model.zip"
    run(["nnUNetv2_export_model_to_zip", "-d", str(synthetic_dataset["id"]), "-o", str(archive), "-c", "3d_fullres",
         "-tr", "nnUNetTrainerMICD", "-p", PLANS, "-f", "0"], env=environment)
    elsewhere = {**environment, "nnUNet_results": str(tmp_path / "other_results")}
    run(["nnUNetv2_install_pretrained_model_from_zip", str(archive)], env=elsewhere)
    predictions = tmp_path / "predictions"
    run(["nnUNetv2_predict", "-i", str(synthetic_dataset["raw"] / "imagesTs"), "-o", str(predictions),
         "-d", str(synthetic_dataset["id"]), "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMICD",
         "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], env=elsewhere)
    assert len(list(predictions.glob("*.nii.gz"))) == len(list((synthetic_dataset["raw"] / "imagesTs").iterdir()))


def test_uncertainty_maps_come_with_nnUNets_own_prediction(interrupted_and_resumed, synthetic_dataset,
                                                           nnunet_predictions, tmp_path):
    import numpy as np
    import SimpleITK as sitk
    environment = interrupted_and_resumed["environment"]
    images = synthetic_dataset["raw"] / "imagesTs"
    model = ["-d", str(synthetic_dataset["id"]), "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainerMICD", "-p",
             PLANS]
    plain, with_maps = nnunet_predictions, tmp_path / "with_maps"
    run(["micd", "predict-uncertainty", "-i", str(images), "-o", str(with_maps), *model, "-device", "cpu"],
        env=environment)
    record = load_json(with_maps / "uncertainty.json")
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert sorted(record["cases"]) == cases and record["maps"] == ["disagreement", "entropy"]
    for case in cases:
        image = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(with_maps / f"{case}.nii.gz")))
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(plain / f"{case}.nii.gz")))
        # the two branches predicted apart and averaged are the ensemble nnU-Net predicts (up to half precision)
        assert np.mean(ours == theirs) > 0.999
        for name in record["maps"]:
            written = sitk.ReadImage(str(with_maps / "uncertainty" / f"{case}_{name}.nii.gz"))
            assert written.GetSize() == image.GetSize() and written.GetSpacing() == image.GetSpacing()
            assert written.GetOrigin() == image.GetOrigin()
            values = sitk.GetArrayFromImage(written)
            assert values.max() <= 100 and values.max() > 0  # whole percent; the branches are not identical
        summary = record["cases"][case]
        labels = load_json(synthetic_dataset["raw"] / "dataset.json")["labels"]
        assert set(summary["classes"]) == {name for name, value in labels.items() if value > 0}
        assert summary["score"] == summary["mean_disagreement"]
    # drawing a case only reads the folder, without loading torch
    show = "import sys; from nnunetv2_micd import cli; cli.main(sys.argv[1:]); print('torch' in sys.modules)"
    shown = run([sys.executable, "-c", show, "show-uncertainty", str(with_maps / "uncertainty.json"), cases[0],
                 "-images", str(images), "-o", str(tmp_path / "case.png")], env=environment)
    assert shown.stdout.strip() == "False"
    assert (tmp_path / "case.png").read_bytes().startswith(b"\x89PNG")
    # a rerun predicts nothing; suggest ranks the same cases from the same scores, highest first
    before = (with_maps / "uncertainty.json").stat().st_mtime_ns
    suggested = run(["micd", "suggest", "-i", str(images), "-o", str(with_maps), *model, "-device", "cpu", "-n", "2"],
                    env=environment)
    assert (with_maps / "uncertainty.json").stat().st_mtime_ns == before
    ranking = load_json(with_maps / "ranking.json")["ranking"]
    expected = sorted(cases, key=lambda case: (-record["cases"][case]["score"], case))
    assert [entry["case"] for entry in ranking] == expected
    assert f"   1  {expected[0]}  score" in suggested.stdout
    assert (with_maps / "ranking.csv").read_text().splitlines()[1].split(",")[:2] == ["1", expected[0]]


def test_a_shared_model_zip_predicts_what_the_trained_model_predicts(interrupted_and_resumed, synthetic_dataset,
                                                                     nnunet_predictions, tmp_path):
    """micd export-model: nnU-Net's zip layout without training state; an unpacked copy is a model folder."""
    import zipfile
    import numpy as np
    import SimpleITK as sitk
    from tests.conftest import micd
    archive, unpacked = tmp_path / "shared.zip", tmp_path / "unpacked"
    micd("export-model", "-i", interrupted_and_resumed["output"].parent, "-o", archive)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(unpacked)
    model = unpacked / synthetic_dataset["name"] / f"nnUNetTrainerMICD__{PLANS}__3d_fullres"
    shared = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert set(shared) == {"network_weights", "trainer_name", "init_args", "current_epoch",
                           "inference_allowed_mirroring_axes"}  # no optimizer state, teachers or logs
    predictions = tmp_path / "predictions"
    run(["nnUNetv2_predict_from_modelfolder", "-i", str(synthetic_dataset["raw"] / "imagesTs"),
         "-o", str(predictions), "-m", str(model), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
        env=interrupted_and_resumed["environment"])
    for reference in sorted(nnunet_predictions.glob("*.nii.gz")):
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / reference.name)))
        np.testing.assert_array_equal(ours, sitk.GetArrayFromImage(sitk.ReadImage(str(reference))))
