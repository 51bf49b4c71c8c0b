"""micd check-dataset on small synthetic raw datasets, each broken in one way a careless user would break it."""
import gzip
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_micd import cli
from nnunetv2_micd.preprocessing.check import check_raw_dataset
from nnunetv2_micd.dataset_conversion.synthetic import SyntheticSpec, write_synthetic_dataset
from nnunetv2_micd.errors import DataError

NAME = "Dataset950_Check"


@pytest.fixture
def raw(tmp_path, monkeypatch):
    """A clean synthetic dataset in its own nnUNet_raw: 3 labeled, 3 unlabeled, 2 test cases."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    folder = tmp_path / NAME
    write_synthetic_dataset(str(folder), SyntheticSpec(num_labeled=3, num_unlabeled=3, num_test=2, shape=(12, 14, 16)))
    return folder


def _write(array: np.ndarray, path, spacing=None) -> None:
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)


def _image(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _problems(raw):
    return [str(p) for p in check_raw_dataset(str(raw), num_processes=1).problems]


def _only_problem(raw) -> str:
    problems = _problems(raw)
    assert len(problems) == 1, problems
    return problems[0]


def test_a_clean_dataset_passes(raw, capsys):
    check = check_raw_dataset(str(raw), num_processes=1)
    assert check.problems == []
    assert [len(check.cases_of(s)) for s in ("labeled", "unlabeled", "test")] == [3, 3, 2]
    assert "3 labeled, 3 unlabeled, 2 test cases checked" in check.summary() and check.summary().endswith("clean")
    cli.main(["check-dataset", "-d", "950", "-np", "1"])  # exit status 0: no SystemExit
    assert capsys.readouterr().out.strip().endswith("clean")


def test_a_truncated_compressed_file_is_found_although_simpleitk_reads_it(raw):
    path = raw / "imagesUnlabeled" / "synth_004_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert _image(path).shape == (12, 14, 16)  # what makes it dangerous: no error, zeros instead of voxels
    assert "unlabeled case 'synth_004' (synth_004_0000.nii.gz): the file is cut off" in _only_problem(raw)


def test_a_gzip_stream_that_ends_cleanly_but_holds_too_few_voxels_is_found(raw):
    path = raw / "labelsTr" / "synth_001.nii.gz"
    with gzip.open(path) as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    assert "labeled case 'synth_001' (synth_001.nii.gz): the file is cut off" in _only_problem(raw)


def test_two_volumes_in_one_file_are_found_as_hidden_channels(raw):
    path = raw / "imagesUnlabeled" / "synth_003_0000.nii.gz"
    volume = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(path), True)
    problem = _only_problem(raw)
    assert "unlabeled case 'synth_003'" in problem and "a 4D file: read as 2 channels, dataset.json has 1" in problem


def test_a_2d_image_in_a_3d_dataset_is_found(raw):
    path = raw / "imagesUnlabeled" / "synth_005_0000.nii.gz"
    _write(_image(path)[6], path)
    assert "unlabeled case 'synth_005' (synth_005_0000.nii.gz): a 2D image in a 3D dataset" in _only_problem(raw)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_voxels_are_found(raw, value):
    path = raw / "imagesTr" / "synth_002_0000.nii.gz"
    image = _image(path)
    image[3, 4, 5:7] = value
    _write(image, path)
    assert "labeled case 'synth_002' (synth_002_0000.nii.gz): 2 of 2688 voxels are NaN or infinite" \
        in _only_problem(raw)


def test_an_empty_image_is_found(raw):
    path = raw / "imagesTs" / "synth_006_0000.nii.gz"
    _write(np.zeros((12, 14, 16), np.float32), path)
    assert "test case 'synth_006' (synth_006_0000.nii.gz): empty: every voxel is 0" in _only_problem(raw)


def test_label_values_outside_dataset_json_are_found(raw):
    path = raw / "labelsTr" / "synth_000.nii.gz"
    label = _image(path)
    label[0, 0, 0] = 7
    _write(label, path)
    assert "labeled case 'synth_000' (synth_000.nii.gz): label values [7] are not among dataset.json's [0, 1, 2, 3]" \
        in _only_problem(raw)


def test_a_label_with_another_geometry_than_its_image_is_found(raw):
    path = raw / "labelsTs" / "synth_007.nii.gz"
    _write(_image(path), path, spacing=(1.0, 1.0, 2.5))
    assert "test case 'synth_007' (synth_007.nii.gz): label spacing" in _only_problem(raw)
    _write(_image(path)[:, :, :-1], path)
    assert "label shape (12, 14, 15) differs from its image's (12, 14, 16)" in _only_problem(raw)


def test_a_test_scan_among_the_training_scans_is_found_by_id_and_by_content(raw):
    shutil.copy(raw / "imagesTs" / "synth_006_0000.nii.gz", raw / "imagesUnlabeled" / "synth_006_0000.nii.gz")
    assert "case id also in" in _only_problem(raw) and "synth_006" in _only_problem(raw)
    (raw / "imagesUnlabeled" / "synth_006_0000.nii.gz").rename(raw / "imagesUnlabeled" / "renamed_0000.nii.gz")
    problem = _only_problem(raw)
    assert problem.startswith("test case 'synth_006'") or problem.startswith("unlabeled case 'renamed'")
    assert "same voxels as" in problem and "a leak between splits" in problem


def test_one_scan_twice_within_a_training_split_is_a_warning_not_a_problem(raw, capsys):
    # two annotations of one scan, as ACDC's training patients 074 and 076 are in the semi-supervised literature's copy
    shutil.copy(raw / "imagesTr" / "synth_000_0000.nii.gz", raw / "imagesTr" / "synth_002_0000.nii.gz")
    check = check_raw_dataset(str(raw), num_processes=1)
    assert check.problems == []
    assert [str(w) for w in check.warnings] == \
        ["labeled case 'synth_002' (synth_002_0000.nii.gz): same voxels as labeled case 'synth_000'"]
    cli.main(["check-dataset", "-d", NAME, "-np", "1"])  # exit status 0
    printed = capsys.readouterr().out
    assert "warning: labeled case 'synth_002'" in printed and printed.strip().endswith("clean, 1 warning(s)")


def test_unreadable_and_misnamed_files_and_missing_labels_are_named(raw):
    (raw / "imagesUnlabeled" / "synth_004_0000.nii.gz").write_bytes(b"not an image")
    (raw / "imagesUnlabeled" / "scan.nii").write_bytes(b"")
    (raw / "labelsTr" / "synth_001.nii.gz").unlink()
    problems = _problems(raw)
    assert len(problems) == 3, problems
    assert any("unlabeled case 'synth_004'" in p and ("cut off or corrupt" in p or "cannot be read" in p)
               for p in problems)
    assert any("'scan.nii'" in p and "not named {case}_{channel:04d}.nii.gz" in p for p in problems)
    assert any("labeled case 'synth_001' (labelsTr): no label synth_001.nii.gz" in p for p in problems)


def test_the_command_lists_every_problem_and_exits_1(raw, capsys):
    for case in ("synth_003", "synth_004"):
        path = raw / "imagesUnlabeled" / f"{case}_0000.nii.gz"
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SystemExit) as stopped:
        cli.main(["check-dataset", "-d", NAME, "-np", "1"])
    assert stopped.value.code == 1
    printed = capsys.readouterr()
    assert printed.out.count("the file is cut off") == 2 and "2 problem(s) in 2 case(s)" in printed.out
    assert "micd check-dataset: error: 2 problem(s) found" in printed.err and "Traceback" not in printed.err


def test_raise_if_problems_names_every_case(raw):
    (raw / "imagesUnlabeled" / "synth_005_0000.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="unlabeled case 'synth_005'"):
        check_raw_dataset(str(raw), num_processes=1).raise_if_problems()
