"""The shared ACDC data (the semi-supervised literature's h5 layout) through the documented import:
micd convert-acdc -> micd make-ssl-dataset --labeled-cases -> micd check-dataset."""
import json

import pytest
import SimpleITK as sitk

from tests.conftest import ACDC, micd

pytestmark = pytest.mark.skipif(not ACDC.is_dir(), reason=f"real data not available: {ACDC} is absent")


def _header(path):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _patients(cases):
    return {case.split("_")[0][len("patient"):] for case in cases}


def test_acdc_imports_with_the_literatures_split_and_passes_the_dataset_check(nnunet_folders):
    printed = micd("convert-acdc", ACDC, "-o", 801).stdout
    assert "140 training cases in imagesTr/labelsTr, 20 held-out cases" in printed and "1 mm" in printed
    source = nnunet_folders["nnUNet_raw"] / "Dataset801_ACDC"
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
