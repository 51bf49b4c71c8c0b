"""The shared ACDC data (the semi-supervised literature's h5 layout) through the documented import:
micd convert-acdc -> micd make-ssl-dataset --labeled-cases -> micd check-dataset; and a model the ACDC page ships,
predicting the imported validation volumes."""
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunetv2_micd.paths import trainer_path
from tests.conftest import ACDC, micd, run

pytestmark = pytest.mark.skipif(not ACDC.is_dir(), reason=f"real data not available: {ACDC} is absent")
BENCHMARKS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


@pytest.fixture(scope="module")
def imported(nnunet_folders):
    """``micd convert-acdc`` of the shared data into Dataset801_ACDC: its folder and what the command printed."""
    printed = micd("convert-acdc", ACDC, "-o", 801).stdout
    return nnunet_folders["nnUNet_raw"] / "Dataset801_ACDC", printed


def _header(path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _patients(cases):
    return {case.split("_")[0][len("patient"):] for case in cases}


def test_acdc_imports_with_the_literatures_split_and_passes_the_dataset_check(nnunet_folders, imported):
    source, printed = imported
    assert "140 training cases in imagesTr/labelsTr, 20 held-out cases" in printed and "1 mm" in printed
    three = (source / "labeled_3_patients.txt").read_text().split()
    seven = (source / "labeled_7_patients.txt").read_text().split()
    assert _patients(three) == {"099", "038", "050"} and len(three) == 6
    assert _patients(seven) == {"099", "038", "050", "100", "058", "021", "049"} and len(seven) == 14
    cases = json.loads((source / "acdc_manifest.json").read_text())["cases"]
    assert [len(list((source / folder).iterdir())) for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")] \
        == [140, 140, 20, 20]
    for case, origin in cases.items():
        images, labels = ("imagesTr", "labelsTr") if origin["list"] == "train.list" else ("imagesTs", "labelsTs")
        image, label = _header(source / images / f"{case}_0000.nii.gz"), _header(source / labels / f"{case}.nii.gz")
        assert image.GetSpacing() == label.GetSpacing() == (1, 1, 1) and image.GetSize() == label.GetSize()
        assert origin["from"] in ("volume", f"{image.GetSize()[2]} slices")  # slices stacked along z

    micd("make-ssl-dataset", "-d", 801, "-o", 803, "--labeled-cases", source / "labeled_3_patients.txt")
    split = json.loads((nnunet_folders["nnUNet_raw"] / "Dataset803_ACDC" / "ssl_manifest.json").read_text())["splits"]
    assert (len(split["labeled"]), len(split["unlabeled"]), len(split["test"])) == (6, 134, 20)
    val = (ACDC / "val.list").read_text().split()
    assert split["test"] == sorted(val) and not set(val) & set(split["labeled"] + split["unlabeled"])

    printed = micd("check-dataset", "-d", 803).stdout
    assert "6 labeled, 134 unlabeled, 20 test cases checked" in printed and "clean" in printed
    # the literature's copy holds one scan twice: patients 074 and 076, both unlabeled here
    assert "warning: unlabeled case 'patient076_frame01'" in printed and "patient074_frame01" in printed


def _mean_foreground_dice(prediction: Path, reference: Path) -> float:
    """nnU-Net's Dice per class (the benchmark's figures come from its evaluation), averaged over RV, Myo, LV."""
    metrics = compute_metrics(str(reference), str(prediction), SimpleITKIO(), [1, 2, 3])["metrics"]
    return float(np.mean([metrics[c]["Dice"] for c in (1, 2, 3)]))


@pytest.mark.parametrize("run_name",
                         ["nnUNetTrainerMICD__labeled6__seed0", "nnUNetTrainerMICD__tuned__labeled14__seed0"])
def test_a_shipped_model_reproduces_the_pages_validation_figures(imported, tmp_path, run_name):
    """A MICD model of acdc_cpu (the paper's settings at 3 labeled patients, today's defaults at 7), unpacked from
    its zip, predicts two validation volumes with nnU-Net's own command exactly as the benchmark recorded them."""
    with zipfile.ZipFile(BENCHMARKS / "acdc" / "models" / f"{run_name}.zip") as archive:
        archive.extractall(tmp_path / "model")
    model = next((tmp_path / "model").glob("Dataset*/nnUNetTrainerMICD__*"))
    recorded = json.loads((BENCHMARKS / "acdc_cpu" / "results.json").read_text())["runs"][run_name]["case_mean_dice"]
    source, _ = imported
    cases = sorted(recorded)[:2]
    images = tmp_path / "images"
    images.mkdir()
    for case in cases:
        (images / f"{case}_0000.nii.gz").symlink_to(source / "imagesTs" / f"{case}_0000.nii.gz")
    predictions = tmp_path / "predictions"
    run(["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(predictions), "-m", str(model),
         "-f", "all", "-device", "cpu", "-npp", "1", "-nps", "1"],
        env={**os.environ, "nnUNet_extTrainer": trainer_path()})
    for case in cases:
        dice = _mean_foreground_dice(predictions / f"{case}.nii.gz", source / "labelsTs" / f"{case}.nii.gz")
        assert dice == pytest.approx(recorded[case], abs=1e-4), case
