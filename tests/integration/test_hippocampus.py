"""The documented real-data flow on a small subset of the shared MSD Hippocampus MRI:
nnUNetv2_convert_MSD_dataset -> micd make-ssl-dataset -> nnUNetv2_plan_and_preprocess -> micd preprocess-unlabeled
-> micd tiny-plans -> nnUNetv2_train -tr nnUNetTrainerMICD -> nnUNetv2_predict -> nnUNetv2_evaluate_folder."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json

from tests.conftest import HIPPOCAMPUS, micd, run

pytestmark = pytest.mark.skipif(not HIPPOCAMPUS.is_dir(),
                                reason=f"real data not available: {HIPPOCAMPUS} is absent")

NUM_CASES, NUM_LABELED, NUM_TEST = 20, 6, 4
SOURCE_ID, SSL_ID = 604, 605


@pytest.fixture(scope="module")
def msd_subset(tmp_path_factory):
    """The first cases of the Decathlon folder, in the Decathlon's own layout."""
    subset = tmp_path_factory.mktemp("msd") / "Task04_Hippocampus"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (subset / folder).mkdir(parents=True)
    cases = sorted(p.name for p in (HIPPOCAMPUS / "imagesTr").glob("hippocampus_*.nii.gz"))[:NUM_CASES]
    for case in cases:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / case, subset / "imagesTr" / case)
        shutil.copy(HIPPOCAMPUS / "labelsTr" / case, subset / "labelsTr" / case)
    for image in (HIPPOCAMPUS / "imagesTs").glob("*.nii.gz"):
        shutil.copy(image, subset / "imagesTs" / image.name)
    dataset_json = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    dataset_json["training"] = [t for t in dataset_json["training"] if t["image"].split("/")[-1] in cases]
    dataset_json["numTraining"] = len(cases)
    (subset / "dataset.json").write_text(json.dumps(dataset_json))
    return subset


def test_real_mri_through_the_documented_flow(msd_subset, nnunet_folders, trainer_environment, tmp_path):
    run(["nnUNetv2_convert_MSD_dataset", "-i", str(msd_subset), "-overwrite_id", str(SOURCE_ID), "-np", "2"])
    micd("make-ssl-dataset", "-d", SOURCE_ID, "-o", SSL_ID, "--labeled", NUM_LABELED, "--test", NUM_TEST)
    raw = nnunet_folders["nnUNet_raw"] / f"Dataset{SSL_ID}_Hippocampus"
    assert len(list((raw / "imagesUnlabeled").iterdir())) == NUM_CASES - NUM_LABELED - NUM_TEST
    run(["nnUNetv2_plan_and_preprocess", "-d", str(SSL_ID), "-c", "3d_fullres", "-np", "2"])
    micd("preprocess-unlabeled", "-d", SSL_ID, "-c", "3d_fullres", "-np", "2")
    micd("tiny-plans", "-d", SSL_ID)

    environment = {**trainer_environment, "MICD_NUM_EPOCHS": "1", "MICD_ITERS_PER_EPOCH": "5",
                   "MICD_VAL_ITERS": "1", "MICD_SEED": "0", "MICD_FINAL_VALIDATION": "0"}  # fold all: no held-out
    run(["nnUNetv2_train", str(SSL_ID), "3d_fullres", "all", "-tr", "nnUNetTrainerMICD", "-p", "nnUNetPlans_tiny",
         "-device", "cpu"], env=environment)
    predictions = tmp_path / "predictions"
    run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(SSL_ID),
         "-c", "3d_fullres", "-f", "all", "-tr", "nnUNetTrainerMICD", "-p", "nnUNetPlans_tiny", "-device", "cpu",
         "-npp", "1", "-nps", "1"], env=environment)
    preprocessed = nnunet_folders["nnUNet_preprocessed"] / f"Dataset{SSL_ID}_Hippocampus"
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(predictions), "-djfile",
         str(preprocessed / "dataset.json"), "-pfile", str(preprocessed / "nnUNetPlans_tiny.json"), "-np", "1"])

    # a few steps teach nothing yet (the synthetic tests check learning); here: real geometry end to end
    summary = load_json(predictions / "summary.json")
    assert len(summary["metric_per_case"]) == NUM_TEST
    for reference in (raw / "labelsTs").iterdir():
        label, prediction = (sitk.ReadImage(str(f)) for f in (reference, predictions / reference.name))
        assert prediction.GetSize() == label.GetSize()
        np.testing.assert_allclose(prediction.GetSpacing(), label.GetSpacing(), rtol=1e-5)
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1, 2}


def test_the_shared_mri_passes_the_dataset_check(nnunet_folders):
    run(["nnUNetv2_convert_MSD_dataset", "-i", str(HIPPOCAMPUS), "-overwrite_id", "603", "-np", "2"])
    printed = micd("check-dataset", "-d", "603").stdout
    assert "Dataset603_Hippocampus: 200 labeled, 1 test cases checked in" in printed
    assert printed.strip().endswith("clean")
