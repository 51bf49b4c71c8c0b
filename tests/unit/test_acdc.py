"""micd convert-acdc on small stand-ins of the literature's h5 layout and of the official NIfTI release."""
import json

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_micd.dataset import acdc
from nnunetv2_micd.dataset.acdc import convert_acdc, literature_labeled_cases

SHAPE = (3, 8, 10)  # slices x H x W
TRAIN = ["patient001_frame01", "patient001_frame02", "patient002_frame01", "patient002_frame02"]
VAL = ["patient003_frame01", "patient003_frame02"]


def _case(seed):
    rng = np.random.default_rng(seed)
    return rng.random(SHAPE).astype(np.float32), rng.integers(0, 4, SHAPE).astype(np.uint8)


def _write_h5(path, image, label):
    with h5py.File(path, "w") as f:
        f["image"], f["label"] = image, label


@pytest.fixture
def raw(tmp_path, monkeypatch):
    folder = tmp_path / "nnUNet_raw"
    folder.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(folder))
    return folder


@pytest.fixture(autouse=True)
def labeled_patient_counts(monkeypatch):
    """The stand-ins have 2 training patients, the real data 70: the literature's 3 and 7 become 1 and 2."""
    monkeypatch.setattr(acdc, "LABELED_PATIENT_COUNTS", (1, 2))


@pytest.fixture
def h5_source(tmp_path):
    """Training cases as slices (flat, and under data/slices/ for one case), validation cases as volumes."""
    source = tmp_path / "ACDC"
    (source / "data" / "slices").mkdir(parents=True)
    for seed, case in enumerate(TRAIN + VAL):
        image, label = _case(seed)
        if case in VAL:
            _write_h5(source / "data" / f"{case}.h5", image, label)
            continue
        folder = source / "data" / ("slices" if case == TRAIN[-1] else "")
        for k in range(SHAPE[0]):
            _write_h5(folder / f"{case}_slice_{k + 1}.h5", image[k], label[k])
    (source / "train.list").write_text("\n".join(TRAIN) + "\n")
    (source / "val.list").write_text("\n".join(VAL) + "\n")
    slices = [f"{case}_slice_{k}" for case in ("patient002_frame01", "patient001_frame02", "patient002_frame02",
                                                "patient001_frame01") for k in (2, 1, 3)]
    (source / "train_slices.list").write_text("\n".join(slices) + "\n")
    return source


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_the_h5_layout_becomes_a_raw_dataset_with_1mm_spacing(h5_source, raw, capsys):
    target = convert_acdc(str(h5_source), 801)
    assert target == str(raw / "Dataset801_ACDC")
    for seed, case in enumerate(TRAIN + VAL):
        images, labels = ("imagesTs", "labelsTs") if case in VAL else ("imagesTr", "labelsTr")
        image, label = _case(seed)
        np.testing.assert_array_equal(_array(raw / "Dataset801_ACDC" / images / f"{case}_0000.nii.gz"), image)
        np.testing.assert_array_equal(_array(raw / "Dataset801_ACDC" / labels / f"{case}.nii.gz"), label)
        assert sitk.ReadImage(str(raw / "Dataset801_ACDC" / images / f"{case}_0000.nii.gz")).GetSpacing() == (1, 1, 1)
    dataset = json.loads((raw / "Dataset801_ACDC" / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "RV": 1, "Myo": 2, "LV": 3} and dataset["numTraining"] == 4
    manifest = json.loads((raw / "Dataset801_ACDC" / "acdc_manifest.json").read_text())
    assert manifest["cases"][TRAIN[0]] == {"list": "train.list", "from": "3 slices"}
    assert manifest["cases"][VAL[0]] == {"list": "val.list", "from": "volume"}
    assert "spacing 1 mm in every axis" in capsys.readouterr().out
    # the first patients of train_slices.list, both frames each (here 1 and 2 patients: the stand-in has 2)
    assert (raw / "Dataset801_ACDC" / "labeled_1_patients.txt").read_text().split() == TRAIN[2:]
    assert (raw / "Dataset801_ACDC" / "labeled_2_patients.txt").read_text().split() == sorted(TRAIN)
    assert not list(raw.glob(".*"))  # no staging folder left


def test_the_literatures_labeled_patients_are_the_first_of_the_slices_list_with_both_frames():
    slices = ["patient099_frame01_slice_15", "patient099_frame02_slice_1", "patient038_frame01_slice_2",
              "patient050_frame02_slice_3", "patient038_frame02_slice_1", "patient050_frame01_slice_9",
              "patient100_frame01_slice_4", "patient100_frame02_slice_4"]
    assert literature_labeled_cases(slices, 3) == ["patient038_frame01", "patient038_frame02", "patient050_frame01",
                                                   "patient050_frame02", "patient099_frame01", "patient099_frame02"]
    with pytest.raises(ValueError, match="only 4 patients"):
        literature_labeled_cases(slices, 7)


def _refused(h5_source, raw, message):
    with pytest.raises(ValueError, match=message):
        convert_acdc(str(h5_source), 801)
    assert list(raw.iterdir()) == []  # nothing half-made


def test_a_listed_case_without_data_is_refused_by_name(h5_source, raw):
    (h5_source / "val.list").write_text("\n".join(VAL + ["patient009_frame01"]) + "\n")
    _refused(h5_source, raw, "1 listed case.* neither a volume nor slices: patient009_frame01")


def test_a_missing_slice_is_refused(h5_source, raw):
    (h5_source / "data" / f"{TRAIN[0]}_slice_2.h5").unlink()
    _refused(h5_source, raw, rf"case {TRAIN[0]}: slice\(s\) \[2\] missing")


def test_slices_of_another_shape_are_refused(h5_source, raw):
    _write_h5(h5_source / "data" / f"{TRAIN[0]}_slice_3.h5", np.zeros((8, 9), np.float32), np.zeros((8, 9), np.uint8))
    _refused(h5_source, raw, rf"case {TRAIN[0]}: slice 3 has shape \(8, 9\)")


def test_label_values_outside_0_to_3_and_nan_voxels_are_refused(h5_source, raw):
    image, label = _case(100)
    label[0, 0, 0] = 4
    _write_h5(h5_source / "data" / f"{VAL[0]}.h5", image, label)
    _refused(h5_source, raw, rf"case {VAL[0]} .*label values \[4\] outside 0-3")
    image[1, 1, 1] = np.nan
    _write_h5(h5_source / "data" / f"{VAL[0]}.h5", image, label * 0)
    _refused(h5_source, raw, rf"case {VAL[0]} .*NaN")


def test_the_nifti_release_keeps_its_spacing_and_the_case_names(h5_source, raw, tmp_path):
    release = tmp_path / "database"
    for seed, case in enumerate(TRAIN + VAL + ["patient004_frame01"]):  # patient004: in no list
        patient = release / ("testing" if case in VAL else "training") / case.split("_")[0]
        patient.mkdir(parents=True, exist_ok=True)
        for array, suffix in zip(_case(seed), ("", "_gt")):
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing((1.5, 1.5, 10.0))
            sitk.WriteImage(volume, str(patient / f"{case}{suffix}.nii.gz"))
    convert_acdc(str(release), 802, lists_folder=str(h5_source))
    image = sitk.ReadImage(str(raw / "Dataset802_ACDC" / "imagesTr" / f"{TRAIN[1]}_0000.nii.gz"))
    assert image.GetSpacing() == (1.5, 1.5, 10.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _case(1)[0])
    assert sorted(p.name for p in (raw / "Dataset802_ACDC" / "labelsTs").iterdir()) == \
        [f"{case}.nii.gz" for case in VAL]
    assert (raw / "Dataset802_ACDC" / "labeled_2_patients.txt").read_text().split() == TRAIN
