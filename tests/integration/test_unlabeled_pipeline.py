"""Unlabeled preprocessing and loading on the session's synthetic dataset, with nnU-Net's real commands."""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_micd.dataloading.unlabeled_loader import UnlabeledDataLoader, make_augmenter, nnUNetDatasetUnlabeled
from nnunetv2_micd.preprocessing.preprocess_unlabeled import _starred_preprocess_case, preprocess_unlabeled
from nnunetv2_micd.preprocessing.unlabeled_store import RECORD_FILE, UnlabeledStore
from nnunetv2_micd.errors import DataError, MissingInputError
from tests.conftest import micd


@pytest.fixture(scope="module")
def unlabeled(synthetic_dataset):
    folder = synthetic_dataset["preprocessed"] / "nnUNetPlans_3d_fullres_unlabeled"
    plans = PlansManager(str(synthetic_dataset["preprocessed"] / "nnUNetPlans.json"))
    return {**synthetic_dataset, "folder": folder, "plans": plans,
            "dataset_json": load_json(synthetic_dataset["preprocessed"] / "dataset.json")}


def _unlabeled_cases(raw):
    return sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(raw / "imagesUnlabeled"))


def test_every_case_matches_nnunet_preprocessing_of_that_image(unlabeled):
    cases = _unlabeled_cases(unlabeled["raw"])
    assert sorted(load_json(unlabeled["folder"] / RECORD_FILE)["cases"]) == cases
    configuration = unlabeled["plans"].get_configuration("3d_fullres")
    preprocessor = configuration.preprocessor_class(verbose=False)
    dataset = nnUNetDatasetUnlabeled(str(unlabeled["folder"]))
    for case in cases[:2]:
        expected, _, properties = preprocessor.run_case(
            [str(unlabeled["raw"] / "imagesUnlabeled" / f"{case}_0000.nii.gz")], None, unlabeled["plans"],
            configuration, unlabeled["dataset_json"])
        data, seg, _, stored_properties = dataset.load_case(case)
        np.testing.assert_allclose(data[:], expected, rtol=1e-6)
        assert set(np.unique(seg[:])) <= {-1, 0}  # only nnU-Net's nonzero mask, no label
        assert stored_properties["spacing"] == properties["spacing"]
    # labels of unlabeled cases must not exist anywhere in the dataset
    assert not any(case in name for case in cases for name in os.listdir(unlabeled["raw"] / "labelsTr"))


def test_rerun_skips_finished_and_redoes_broken_cases(unlabeled):
    folder = unlabeled["folder"]
    cases = _unlabeled_cases(unlabeled["raw"])
    before = {c: os.stat(folder / f"{c}.b2nd").st_mtime_ns for c in cases}
    out = micd("preprocess-unlabeled", "-d", unlabeled["id"], "-np", "1").stdout
    assert f"{len(cases)} of {len(cases)} unlabeled cases already done" in out
    assert before == {c: os.stat(folder / f"{c}.b2nd").st_mtime_ns for c in cases}

    os.remove(folder / f"{cases[0]}.pkl")  # an interrupted case
    with open(folder / f"{cases[1]}.b2nd", "r+b") as f:  # a torn write
        f.truncate(100)
    out = micd("preprocess-unlabeled", "-d", unlabeled["id"], "-np", "1").stdout
    assert f"{len(cases) - 2} of {len(cases)} unlabeled cases already done, preprocessing 2" in out
    after = {c: os.stat(folder / f"{c}.b2nd").st_mtime_ns for c in cases}
    assert [c for c in cases if after[c] != before[c]] == cases[:2]
    nnUNetDatasetUnlabeled(str(folder)).load_case(cases[1])[0][:]  # readable again


def test_changed_plans_redo_everything(unlabeled):
    preprocessed = unlabeled["preprocessed"]
    plans = load_json(preprocessed / "nnUNetPlans.json")
    plans["configurations"]["3d_fullres"]["use_mask_for_norm"] = [False]  # changes normalisation
    with open(preprocessed / "nnUNetPlans_changed.json", "w") as f:
        json.dump(plans, f)
    try:
        out = micd("preprocess-unlabeled", "-d", unlabeled["id"], "-p", "nnUNetPlans_changed", "-np", "1").stdout
        assert "redoing all cases" in out and "0 of 6" in out
    finally:  # restore what the other tests use
        os.remove(preprocessed / "nnUNetPlans_changed.json")
        out = micd("preprocess-unlabeled", "-d", unlabeled["id"], "-np", "1").stdout
        assert "redoing all cases" in out


@pytest.fixture
def scratch_raw(unlabeled, tmp_path, monkeypatch):
    """A raw copy of the dataset in its own nnUNet_raw, whose imagesUnlabeled a test may break."""
    raw = tmp_path / unlabeled["name"]
    shutil.copytree(unlabeled["raw"], raw)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    return raw / "imagesUnlabeled"


def _assert_refused(unlabeled, message, error=DataError):
    """Refused with ``message`` before anything in nnUNet_preprocessed changed."""
    def state():
        return {f: os.stat(f).st_mtime_ns for f in unlabeled["preprocessed"].rglob("*")}

    before = state()
    with pytest.raises(error, match=message):
        preprocess_unlabeled(unlabeled["id"], ["3d_fullres"], num_processes=1)
    assert state() == before


def test_wrong_channel_count_is_refused_before_any_work(unlabeled, scratch_raw):
    shutil.copy(scratch_raw / "synth_006_0000.nii.gz", scratch_raw / "synth_006_0001.nii.gz")
    _assert_refused(unlabeled, r"unlabeled case 'synth_006' \(imagesUnlabeled\): found channels \[0, 1\]")


def test_wrong_file_ending_is_refused(unlabeled, scratch_raw):
    (scratch_raw / "synth_007_0000.nii").write_bytes(b"")
    _assert_refused(unlabeled, r"synth_007_0000.nii\): not named \{case\}_\{channel:04d\}.nii.gz")


def test_a_test_image_among_the_unlabeled_ones_is_refused(unlabeled, scratch_raw):
    test_image = sorted((scratch_raw.parent / "imagesTs").iterdir())[0]
    shutil.copy(test_image, scratch_raw / test_image.name)
    case = test_image.name[:-len("_0000.nii.gz")]
    _assert_refused(unlabeled, rf"'{case}' \(imagesTs\): case id also in unlabeled: one scan in two splits")


def test_unreadable_image_is_refused(unlabeled, scratch_raw):
    (scratch_raw / "synth_008_0000.nii.gz").write_bytes(b"not an image")
    _assert_refused(unlabeled, "unlabeled case 'synth_008' .*corrupt")


def test_empty_unlabeled_folder_is_refused(unlabeled, scratch_raw):
    for f in scratch_raw.iterdir():
        f.unlink()
    _assert_refused(unlabeled, "holds no images")
    scratch_raw.rmdir()
    _assert_refused(unlabeled, "imagesUnlabeled does not exist", MissingInputError)


def _cut_in_half(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _two_volumes_in_one_file(path):
    volume = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path), True)


def _one_slice(path):
    sitk.WriteImage(sitk.ReadImage(str(path))[:, :, 5], str(path), True)


def _a_nan_voxel(path):
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    image[5, 5, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path), True)


@pytest.mark.parametrize("breaks, message", [
    (_cut_in_half, "the file is cut off"), (_two_volumes_in_one_file, "a 4D file: read as 2 channels"),
    (_one_slice, "a 2D image in a 3D dataset"), (_a_nan_voxel, "1 of .* voxels are NaN or infinite")])
def test_a_bad_scan_is_refused_naming_its_case_before_anything_is_written(unlabeled, scratch_raw, breaks, message):
    breaks(scratch_raw / "synth_009_0000.nii.gz")
    _assert_refused(unlabeled, f"unlabeled case 'synth_009' \\(synth_009_0000.nii.gz\\): {message}")


def test_a_failure_inside_a_preprocessing_worker_names_its_case(unlabeled, tmp_path):
    plans = unlabeled["plans"]
    arguments = ("synth_042", [str(tmp_path / "gone_0000.nii.gz")], UnlabeledStore(str(tmp_path)), plans,
                 plans.get_configuration("3d_fullres"), unlabeled["dataset_json"])
    with pytest.raises(RuntimeError, match=r"preprocessing unlabeled case 'synth_042' \(.*gone_0000.nii.gz\) failed"):
        _starred_preprocess_case(arguments)


def _loader(unlabeled, batch_size=2, transforms="training"):
    configuration = unlabeled["plans"].get_configuration("3d_fullres")
    patch_size = configuration.patch_size
    if transforms == "training":
        transforms = nnUNetTrainer.get_training_transforms(
            patch_size, (-0.5, 0.5), None, (0, 1, 2), False, use_mask_for_norm=configuration.use_mask_for_norm)
    label_manager = unlabeled["plans"].get_label_manager(unlabeled["dataset_json"])
    return UnlabeledDataLoader(nnUNetDatasetUnlabeled(str(unlabeled["folder"])), batch_size, patch_size,
                               patch_size, label_manager, transforms)


def test_loader_yields_augmented_unlabeled_patches(unlabeled):
    patch_size = unlabeled["plans"].get_configuration("3d_fullres").patch_size
    batch = next(_loader(unlabeled, batch_size=3))
    assert set(batch) == {"data", "keys"}
    assert batch["data"].shape == (3, 1, *patch_size) and batch["data"].dtype == torch.float32
    assert set(batch["keys"]) <= set(_unlabeled_cases(unlabeled["raw"]))

    changed = 0
    for seed in range(6):  # the same crop with and without the augmentation
        np.random.seed(seed), torch.manual_seed(seed)
        augmented = next(_loader(unlabeled, batch_size=1))
        np.random.seed(seed), torch.manual_seed(seed)
        plain = next(_loader(unlabeled, batch_size=1, transforms=None))
        assert augmented["keys"] == plain["keys"]
        changed += not torch.allclose(augmented["data"], plain["data"])
    assert changed >= 4


@pytest.mark.parametrize("num_processes", [0, 2])
def test_augmenter_workers_are_configurable(unlabeled, num_processes):
    augmenter = make_augmenter(_loader(unlabeled), num_processes)
    try:
        for _ in range(3):
            assert next(augmenter)["data"].shape[0] == 2
    finally:
        if num_processes:
            augmenter._finish()


def test_negative_worker_count_is_refused(unlabeled):
    with pytest.raises(ValueError, match=">= 0"):
        make_augmenter(_loader(unlabeled), -1)


def test_missing_preprocessed_unlabeled_data_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="micd preprocess-unlabeled"):
        nnUNetDatasetUnlabeled(str(tmp_path))
