"""micd convert-synapse / convert-amos on stand-in downloads laid out like the originals, then nnU-Net planning,
preprocessing (labeled and unlabeled) and DHC's validation split."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_micd.dataset_conversion.dhc_benchmarks import AMOS, SYNAPSE, dhc_split
from tests.conftest import micd, run


def _ids(benchmark):
    split = dhc_split(benchmark, benchmark.labeled_fractions[0])
    return split["labeled"] + split["unlabeled"] + split["eval"] + split["test"]


def _write_case(image_file: Path, label_file: Path, labels, seed: int, shape=(12, 16, 16)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for value in labels:
        z, y, x = rng.integers(0, np.array(shape) - 2)
        label[z:z + 3, y:y + 3, x:x + 3] = value
    image = (label * 20 + rng.normal(0, 5, shape)).astype(np.float32)
    for array, path in ((image, image_file), (label, label_file)):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((0.8, 0.8, 2.5))
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(itk, str(path))


@pytest.fixture(scope="module")
def synapse_download(tmp_path_factory):
    root = tmp_path_factory.mktemp("synapse")
    training = root / "RawData" / "Training"
    for i, case in enumerate(_ids(SYNAPSE)):
        _write_case(training / "img" / f"img{case}.nii.gz", training / "label" / f"label{case}.nii.gz",
                    (1 + i % 13, 1 + (i + 5) % 13), seed=i)
    return root


@pytest.fixture(scope="module")
def amos_download(tmp_path_factory):
    root = tmp_path_factory.mktemp("amos")
    split = dhc_split(AMOS, "2%")
    test = set(split["test"])
    for i, case in enumerate(_ids(AMOS)):
        images, labels = ("imagesVa", "labelsVa") if case in test else ("imagesTr", "labelsTr")
        _write_case(root / images / f"{case}.nii.gz", root / labels / f"{case}.nii.gz", (1 + i % 15,), seed=i,
                    shape=(8, 12, 12))
    (root / "dataset.json").write_text(json.dumps({"name": "AMOS", "labels": {}}))
    return root


def _cases(folder: Path, suffix="_0000.nii.gz"):
    return sorted(p.name[:-len(suffix)] for p in folder.glob("*" + suffix))


def test_synapse_converts_plans_and_validates_on_dhcs_eval_cases(synapse_download, nnunet_folders):
    micd("convert-synapse", synapse_download, "--labeled", "20%", "-o", 721)
    raw = nnunet_folders["nnUNet_raw"] / "Dataset721_Synapse20p"
    split = dhc_split(SYNAPSE, "20%")
    names = {k: sorted(f"synapse_{c}" for c in v) for k, v in split.items()}
    assert _cases(raw / "imagesTr") == sorted(names["labeled"] + names["eval"])
    assert _cases(raw / "labelsTr", ".nii.gz") == _cases(raw / "imagesTr")
    assert _cases(raw / "imagesUnlabeled") == names["unlabeled"] and not (raw / "labelsUnlabeled").exists()
    assert _cases(raw / "imagesTs") == names["test"] == _cases(raw / "labelsTs", ".nii.gz")
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["labels"]["left adrenal gland"] == 13 and len(dataset_json["labels"]) == 14
    assert dataset_json["numTraining"] == 8 and dataset_json["channel_names"] == {"0": "CT"}
    other_fraction = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "convert-synapse",
                                     str(synapse_download), "--labeled", "10%", "-o", "721"],
                                    capture_output=True, text=True)
    assert other_fraction.returncode == 1 and "Dataset721_Synapse20p already uses id 721" in other_fraction.stderr

    run(["nnUNetv2_plan_and_preprocess", "-d", "721", "-c", "3d_fullres", "-np", "2"])
    micd("preprocess-unlabeled", "-d", 721, "-c", "3d_fullres", "-np", "2")
    splits_file = Path(micd("dhc-splits", "-d", 721).stdout.strip())
    splits = json.loads(splits_file.read_text())
    assert splits == [{"train": [f"synapse_{c}" for c in split["labeled"]],
                       "val": [f"synapse_{c}" for c in split["eval"]]}]
    preprocessed = nnunet_folders["nnUNet_preprocessed"] / "Dataset721_Synapse20p"
    assert len(list((preprocessed / "nnUNetPlans_3d_fullres").glob("*.b2nd"))) >= 8
    assert len(list((preprocessed / "nnUNetPlans_3d_fullres_unlabeled").glob("*.b2nd"))) >= 16


def test_amos_converts_with_and_without_mri_and_preprocesses(amos_download, nnunet_folders):
    micd("convert-amos", amos_download, "--labeled", "5%", "-o", 731)
    raw = nnunet_folders["nnUNet_raw"] / "Dataset731_Amos5p"
    assert len(_cases(raw / "imagesTr")) == 10 + 24 and len(_cases(raw / "imagesUnlabeled")) == 206
    assert len(_cases(raw / "imagesTs")) == 120
    run(["nnUNetv2_plan_and_preprocess", "-d", "731", "-c", "3d_fullres", "-np", "2"])
    micd("preprocess-unlabeled", "-d", 731, "-c", "3d_fullres", "-np", "2")
    splits = json.loads(Path(micd("dhc-splits", "-d", 731).stdout.strip()).read_text())
    assert len(splits[0]["train"]) == 10 and len(splits[0]["val"]) == 24
    micd("convert-amos", amos_download, "--labeled", "5%", "-o", 732, "--ct-only")
    ct_only = nnunet_folders["nnUNet_raw"] / "Dataset732_Amos5p_CT"
    every_case = [c for folder in ("imagesTr", "imagesUnlabeled", "imagesTs") for c in _cases(ct_only / folder)]
    assert every_case and all(int(c[len("amos_"):]) < 500 for c in every_case)
    assert len(_cases(ct_only / "imagesTs")) == 100  # AMOS22's validation release holds 20 MRI cases


def test_unexpected_label_values_name_the_case(synapse_download, tmp_path, nnunet_folders):
    bad = tmp_path / "synapse"
    shutil.copytree(synapse_download, bad)
    case = dhc_split(SYNAPSE, "40%")["labeled"][0]
    label_file = bad / "RawData" / "Training" / "label" / f"label{case}.nii.gz"
    label = sitk.ReadImage(str(label_file))
    array = sitk.GetArrayFromImage(label)
    array[0, 0, 0] = 14
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(label)
    sitk.WriteImage(broken, str(label_file))
    result = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "convert-synapse", str(bad), "--labeled",
                             "40%", "-o", "722"], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"case {case}: label values [14]" in result.stderr
    assert not (nnunet_folders["nnUNet_raw"] / "Dataset722_Synapse40p").exists()  # nothing half-written
