"""``micd evaluate`` on small label maps written as NIfTI: nnU-Net's summary plus surface metrics in mm, and the
semi-supervised literature's metrics in voxels."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from nnunetv2_micd.evaluation.evaluate import metrics_of_case
from nnunetv2_micd.evaluation.literature_metrics import literature_metrics
from nnunetv2_micd.evaluation.surface_distance import surface_metrics
from tests.conftest import micd

SPACING_XYZ = (0.8, 0.8, 2.0)  # SimpleITK order; numpy arrays are z, y, x


def _ball(center, radius, shape=(16, 24, 24)):
    grid = np.indices(shape).astype(float)
    return ((grid - np.array(center)[:, None, None, None]) ** 2).sum(0) <= radius ** 2


def _write(labels: np.ndarray, path):
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    reference, prediction = tmp_path / "reference", tmp_path / "prediction"
    reference.mkdir()
    prediction.mkdir()
    cases = {}
    for case, shift in (("a", 0), ("b", 2)):
        ref = np.zeros((16, 24, 24), np.uint8)
        ref[_ball((8, 8, 8), 4)] = 1
        ref[_ball((8, 16, 16), 3)] = 2
        pred = np.zeros_like(ref)
        pred[_ball((8, 8 + shift, 8), 4)] = 1
        if case == "a":
            pred[_ball((8, 16, 16), 3)] = 2  # class 2 found in case a, missed in case b
        ref[2, 2, 2] = 3 if case == "a" else 0  # class 3: present in a's reference only, never predicted
        _write(ref, reference / f"{case}.nii.gz")
        _write(pred, prediction / f"{case}.nii.gz")
        cases[case] = (ref, pred)
    return reference, prediction, cases


@pytest.fixture
def evaluated(folders, synthetic_dataset):
    """micd evaluate run once on the two cases: its output, the prediction folder and the cases' arrays."""
    reference, prediction, cases = folders
    preprocessed = synthetic_dataset["preprocessed"]
    result = micd("evaluate", reference, prediction, "-djfile", preprocessed / "dataset.json",
                  "-pfile", preprocessed / "nnUNetPlans.json", "-np", "1")
    return result, prediction, cases


def test_evaluate_adds_surface_metrics_in_millimetres(evaluated):
    result, prediction, cases = evaluated
    surface = json.loads((prediction / "summary_surface.json").read_text())
    assert (prediction / "summary.json").is_file()  # nnU-Net's own evaluation ran too
    spacing_zyx = SPACING_XYZ[::-1]
    ref_b, pred_b = cases["b"]
    per_case = {c["reference_file"].split("/")[-1]: c["metrics"] for c in surface["metric_per_case"]}
    expected = surface_metrics(pred_b == 1, ref_b == 1, spacing_zyx)
    assert per_case["b.nii.gz"]["1"]["ASD"] == pytest.approx(expected["ASD"])
    assert per_case["b.nii.gz"]["1"]["HD95"] == pytest.approx(expected["HD95"])
    assert per_case["a.nii.gz"]["1"]["ASD"] == 0  # identical masks
    # class 2 missed in case b: undefined there, counted, and the mean comes from case a alone
    assert per_case["b.nii.gz"]["2"]["ASD"] is None and per_case["b.nii.gz"]["2"]["one_empty"]
    assert surface["mean"]["2"] == {"ASD": 0.0, "HD95": 0.0, "n_one_empty": 1}
    # class 3 only in case a's reference: missed once, absent from both in case b
    assert surface["mean"]["3"] == {"ASD": None, "HD95": None, "n_one_empty": 1}
    assert surface["mean"]["1"]["ASD"] == pytest.approx(per_case["b.nii.gz"]["1"]["ASD"] / 2)
    assert "medium" in result.stdout and "HD95 mm" in result.stdout


def test_evaluate_adds_the_literature_metrics_in_voxels(evaluated):
    result, prediction, cases = evaluated
    literature = json.loads((prediction / "summary_literature.json").read_text())
    per_case = {c["reference_file"].split("/")[-1]: c["metrics"] for c in literature["metric_per_case"]}
    ref_b, pred_b = cases["b"]
    expected_b = literature_metrics(pred_b == 1, ref_b == 1)  # no spacing: the files' 0.8 x 0.8 x 2 mm are ignored
    assert {k: per_case["b.nii.gz"]["1"][k] for k in expected_b} == pytest.approx(expected_b)
    assert literature["mean"]["1"]["HD95"] == pytest.approx(expected_b["HD95"] / 2)  # case a: identical masks
    # class 2 missed in case b: zeros there, counted in the means; class 3 never predicted: zeros in both cases,
    # also in case b where the reference lacks it too
    assert literature["mean"]["2"] == {"Dice": 0.5, "Jaccard": 0.5, "HD95": 0.0, "ASD": 0.0,
                                       "n_empty_prediction": 1, "n_empty_reference": 0}
    assert literature["mean"]["3"] == {"Dice": 0.0, "Jaccard": 0.0, "HD95": 0.0, "ASD": 0.0,
                                       "n_empty_prediction": 2, "n_empty_reference": 0}
    assert literature["distance_unit"] == "voxels"
    assert "distances in voxels (= mm at the 1 mm spacing of the ACDC h5 import)" in result.stdout
    assert "HD95 vox" in result.stdout


def test_literature_distances_in_mm_follow_the_reference_spacing(folders):
    reference, prediction, cases = folders
    _, literature = metrics_of_case(str(reference / "b.nii.gz"), str(prediction / "b.nii.gz"), SimpleITKIO, [1],
                                    literature_in_mm=True)
    ref_b, pred_b = cases["b"]
    expected = literature_metrics(pred_b == 1, ref_b == 1, SPACING_XYZ[::-1])
    assert {k: literature["metrics"]["1"][k] for k in expected} == pytest.approx(expected)
    assert expected["HD95"] != literature_metrics(pred_b == 1, ref_b == 1)["HD95"]


@pytest.mark.parametrize("side", ["reference", "prediction"])
def test_evaluate_names_missing_files(folders, synthetic_dataset, side):
    reference, prediction, _ = folders
    {"reference": reference, "prediction": prediction}[side].joinpath("b.nii.gz").unlink()
    preprocessed = synthetic_dataset["preprocessed"]
    result = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "evaluate", str(reference),
                             str(prediction), "-djfile", str(preprocessed / "dataset.json"),
                             "-pfile", str(preprocessed / "nnUNetPlans.json")], capture_output=True, text=True)
    assert result.returncode == 1 and f"no {side} in" in result.stderr and "b.nii.gz" in result.stderr
