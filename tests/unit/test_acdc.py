"""micd convert-acdc on small stand-ins of the literature's h5 layout and of the official NIfTI release."""
import json

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_micd.dataset_conversion import acdc
from nnunetv2_micd.dataset_conversion.acdc import convert_acdc, literature_labeled_cases, tuning_cases
from nnunetv2_micd.errors import DataError, ExistingOutputError, MissingInputError

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
    assert manifest["cases"][TRAIN[0]] == {"list": "train.list", "from": "3 slices", "spacing_xyz_mm": [1, 1, 1]}
    assert manifest["cases"][VAL[0]] == {"list": "val.list", "from": "volume", "spacing_xyz_mm": [1, 1, 1]}
    assert manifest["left_out"] == []
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


def test_the_tuning_patients_lie_outside_every_labeled_set_and_come_with_both_frames(h5_source, raw, monkeypatch):
    training = [f"patient{p:03d}_frame0{f}" for p in range(1, 21) for f in (1, 2)]
    labeled = [case for case in training if case.startswith(("patient003", "patient007"))]
    chosen = tuning_cases(training, labeled, 5)
    patients = sorted({case.split("_")[0] for case in chosen})
    assert len(patients) == 5 and len(chosen) == 10 and not set(chosen) & set(labeled)
    assert chosen == tuning_cases(training, labeled, 5) != tuning_cases(training, labeled, 5, seed=1)
    assert tuning_cases(training, labeled, 19) == []  # only 18 patients outside the labeled ones
    monkeypatch.setattr(acdc, "LABELED_PATIENT_COUNTS", (1,))
    monkeypatch.setattr(acdc, "TUNING_PATIENTS", 1)
    convert_acdc(str(h5_source), 801)
    # the stand-in's other training patient, never a validation patient
    assert (raw / "Dataset801_ACDC" / "tuning_patients.txt").read_text().split() == TRAIN[:2]


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
    _refused(h5_source, raw, rf"case {VAL[0]} \(.*{VAL[0]}.h5\): label values \[4\] outside 0-3")
    image[1, 1, 1] = np.nan
    _write_h5(h5_source / "data" / f"{VAL[0]}.h5", image, label * 0)
    _refused(h5_source, raw, rf"case {VAL[0]} \(.*{VAL[0]}.h5\): the image holds NaN")


def test_slices_count_from_1(h5_source, raw):
    _write_h5(h5_source / "data" / f"{TRAIN[0]}_slice_0.h5", *_case(0))
    _refused(h5_source, raw, rf"case {TRAIN[0]}: slice 0 .*count from 1")


def test_a_volume_is_read_rather_than_the_slices_of_the_same_case(h5_source, raw):
    image, label = _case(50)
    for k in range(SHAPE[0]):
        _write_h5(h5_source / "data" / f"{VAL[0]}_slice_{k + 1}.h5", image[k], label[k])
    convert_acdc(str(h5_source), 801)
    np.testing.assert_array_equal(_array(raw / "Dataset801_ACDC" / "imagesTs" / f"{VAL[0]}_0000.nii.gz"),
                                  _case(len(TRAIN))[0])
    manifest = json.loads((raw / "Dataset801_ACDC" / "acdc_manifest.json").read_text())
    assert manifest["cases"][VAL[0]]["from"] == "volume"


def test_a_case_in_two_lists_is_refused(h5_source, raw):
    (h5_source / "val.list").write_text("\n".join(VAL + [TRAIN[0]]) + "\n")
    _refused(h5_source, raw, rf"cases \['{TRAIN[0]}'\] appear more than once in the lists")


def test_an_existing_dataset_is_replaced_only_when_asked(h5_source, raw):
    convert_acdc(str(h5_source), 801)
    (raw / "Dataset801_ACDC" / "stale.txt").write_text("from an earlier run")
    with pytest.raises(ExistingOutputError, match="--overwrite"):
        convert_acdc(str(h5_source), 801)
    convert_acdc(str(h5_source), 801, overwrite=True)
    assert not (raw / "Dataset801_ACDC" / "stale.txt").exists()


def test_a_folder_of_neither_layout_is_refused(tmp_path, raw):
    with pytest.raises(MissingInputError, match="neither the h5 layout .* nor the NIfTI release"):
        convert_acdc(str(tmp_path), 801)


FRAMES = {"patient001": (1, 12), "patient002": (1, 7), "patient003": (1, 15), "patient004": (1, 9)}  # ED, ES


def _write_release(release, flat=False, without=None):
    """The release's layout: frames named by their time point, ED and ES in Info.cfg, a 4D file without labels;
    validation patients under testing/, the others (patient004 in no list) under training/, unless flat."""
    for seed, case in enumerate(TRAIN + VAL + ["patient004_frame01", "patient004_frame02"]):
        patient, frame = case.split("_")
        folder = release / ("" if flat else "testing" if case in VAL else "training") / patient
        folder.mkdir(parents=True, exist_ok=True)
        ed, es = FRAMES[patient]
        (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\n")
        (folder / f"{patient}_4d.nii.gz").write_bytes(b"not read")
        if case == without:
            continue
        release_case = f"{patient}_frame{(ed if frame == 'frame01' else es):02d}"
        for array, suffix in zip(_case(seed), ("", "_gt")):
            volume = sitk.GetImageFromArray(array)
            volume.SetSpacing((1.5, 1.5, 10.0))
            sitk.WriteImage(volume, str(folder / f"{release_case}{suffix}.nii.gz"))


def test_the_nifti_release_keeps_its_spacing_and_gets_the_h5_case_names(h5_source, raw, tmp_path, capsys):
    release = tmp_path / "database"
    _write_release(release)
    convert_acdc(str(release), 802, lists_folder=str(h5_source))
    dataset = raw / "Dataset802_ACDC"
    for seed, case in enumerate(TRAIN + VAL):
        images = "imagesTs" if case in VAL else "imagesTr"
        image = sitk.ReadImage(str(dataset / images / f"{case}_0000.nii.gz"))
        assert image.GetSpacing() == (1.5, 1.5, 10.0)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _case(seed)[0])
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == [f"{case}.nii.gz" for case in VAL]
    manifest = json.loads((dataset / "acdc_manifest.json").read_text())
    assert manifest["cases"]["patient001_frame02"] == {"list": "train.list",
                                                       "from": "training/patient001/patient001_frame12.nii.gz",
                                                       "spacing_xyz_mm": [1.5, 1.5, 10.0]}
    assert manifest["left_out"] == ["patient004_frame01", "patient004_frame02"]
    assert "2 cases of the source in no list left out" in capsys.readouterr().out
    assert (dataset / "labeled_2_patients.txt").read_text().split() == TRAIN


def test_a_listed_case_the_release_lacks_is_refused(h5_source, raw, tmp_path):
    release = tmp_path / "patients"  # the folder holding the patient folders
    _write_release(release, flat=True, without=VAL[1])
    with pytest.raises(DataError, match=f"1 listed case.* no frame named by an Info.cfg with its _gt label in the "
                                        f"release: {VAL[1]}"):
        convert_acdc(str(release), 802, lists_folder=str(h5_source))
    assert list(raw.iterdir()) == []
