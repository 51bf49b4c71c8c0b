"""``micd convert-acdc``: ACDC cine MRI as the semi-supervised literature distributes it, as an nnU-Net raw dataset.

Two sources give the same case names (``patientXXX_frameYY``, one case per patient and cardiac phase):

- the h5 layout of SSL4MIS and the methods built on it: ``data/{case}.h5`` volumes and/or ``data/{case}_slice_K.h5``
  slices (K from 1, flat or under ``data/slices/``), datasets ``image`` and ``label``, with the lists
  ``train.list``, ``val.list`` (and ``test.list`` where present). It stores no voxel spacing, so 1 mm is written in
  every axis: nnU-Net's ``2d`` configuration then slices along the stored slice axis, and distances in mm equal
  the literature's distances in voxels;
- the official NIfTI release (``patientXXX/{case}.nii.gz`` with ``{case}_gt.nii.gz``), which keeps the real spacing;
  its case lists come from ``--lists`` (the h5 download's list files).

The training cases go to ``imagesTr/labelsTr``, every other listed case to ``imagesTs/labelsTs``; the literature's
labeled patients (the first patients of ``train_slices.list``, both frames each) are written as case lists for
``micd make-ssl-dataset --labeled-cases``. The dataset is built in a hidden folder and renamed when complete.
"""
import glob
import os
import re
import shutil
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunetv2_micd.dataset.ssl_split import raw_root, refuse_taken_id
from nnunetv2_micd.errors import DataError, ExistingOutputError, MissingInputError

LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
DEFAULT_DATASET_ID = 800
#: list file -> images and labels folder of its cases
LISTS = {"train.list": ("imagesTr", "labelsTr"), "val.list": ("imagesTs", "labelsTs"),
         "test.list": ("imagesTs", "labelsTs")}
SLICES_LIST = "train_slices.list"
LABELED_PATIENT_COUNTS = (3, 7)  # the literature's settings
H5_SPACING = (1.0, 1.0, 1.0)
SLICE_PATTERN = re.compile(r"(?P<case>patient\d{3}_frame\d{2})_slice_(?P<index>\d+)\.h5")


def read_list(path: str) -> List[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def literature_labeled_cases(slices_list: List[str], num_patients: int) -> List[str]:
    """Both frames of the first ``num_patients`` patients of ``train_slices.list`` in file order: the labeled
    cases of the literature's "3 (7) labeled patients" settings."""
    cases = [line.rsplit("_slice_", 1)[0] for line in slices_list]
    patients = list(dict.fromkeys(case.split("_")[0] for case in cases))[:num_patients]
    if len(patients) < num_patients:
        raise DataError(f"{SLICES_LIST} names only {len(patients)} patients, fewer than {num_patients}")
    return sorted({case for case in cases if case.split("_")[0] in patients})


# ---------------------------------------------------------------------------------------------------- h5 layout

class H5Layout:
    """Cases of the h5 layout: a volume file where there is one, otherwise its slices stacked in order."""

    def __init__(self, source: str):
        self.data = join(source, "data")
        if not isdir(self.data):
            raise MissingInputError(f"{source} has no data/ folder: not the h5 layout of the semi-supervised "
                                    f"literature (data/*.h5 with train.list and val.list)")
        self.slices: Dict[str, Dict[int, str]] = {}
        for folder in (self.data, join(self.data, "slices")):
            for path in glob.glob(join(folder, "*_slice_*.h5")):
                match = SLICE_PATTERN.fullmatch(os.path.basename(path))
                if match:
                    self.slices.setdefault(match["case"], {})[int(match["index"])] = path

    def has(self, case: str) -> bool:
        return isfile(join(self.data, case + ".h5")) or case in self.slices

    def read(self, case: str) -> Tuple[np.ndarray, np.ndarray, str]:
        """Image and label (slices x H x W) and where they came from."""
        volume = join(self.data, case + ".h5")
        if isfile(volume):
            with h5py.File(volume, "r") as f:
                return f["image"][:], f["label"][:], "volume"
        slices = self.slices[case]
        missing = sorted(set(range(1, max(slices) + 1)) - set(slices))
        if missing:
            raise DataError(f"case {case}: slice(s) {missing} missing between slice 1 and {max(slices)}")
        images, labels = [], []
        for index in range(1, len(slices) + 1):
            with h5py.File(slices[index], "r") as f:
                images.append(f["image"][:])
                labels.append(f["label"][:])
            if images[-1].shape != images[0].shape:
                raise DataError(f"case {case}: slice {index} has shape {images[-1].shape}, slice 1 "
                                f"{images[0].shape} ({slices[index]})")
        return np.stack(images), np.stack(labels), f"{len(slices)} slices"


# ---------------------------------------------------------------------------------------------------- NIfTI release

class NiftiRelease:
    """Cases of the official release: ``patientXXX/patientXXX_frameYY.nii.gz`` and ``..._gt.nii.gz``, in the
    given folder or its ``training``/``testing`` subfolders."""

    def __init__(self, source: str):
        self.files = {}
        for folder in (source, join(source, "training"), join(source, "testing")):
            for label in glob.glob(join(folder, "patient*", "patient*_frame*_gt.nii.gz")):
                case = os.path.basename(label)[:-len("_gt.nii.gz")]
                self.files[case] = (label[:-len("_gt.nii.gz")] + ".nii.gz", label)

    def has(self, case: str) -> bool:
        return case in self.files

    def read(self, case: str) -> Tuple[sitk.Image, sitk.Image, str]:
        image_file, label_file = self.files[case]
        return sitk.ReadImage(image_file), sitk.ReadImage(label_file), "NIfTI"


# ---------------------------------------------------------------------------------------------------- conversion

def _checked(case: str, image, label, source_name: str):
    """The case as SimpleITK images with 1 mm spacing (h5 arrays) or its own (NIfTI), refused when inconsistent."""
    if isinstance(image, np.ndarray):
        image, label = sitk.GetImageFromArray(image.astype(np.float32)), sitk.GetImageFromArray(label.astype(np.uint8))
        for volume in (image, label):
            volume.SetSpacing(H5_SPACING)
    image_array, label_array = sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(label)
    if image_array.shape != label_array.shape:
        raise DataError(f"case {case} ({source_name}): image shape {image_array.shape} and label shape "
                        f"{label_array.shape} differ")
    if not np.isfinite(image_array).all():
        raise DataError(f"case {case} ({source_name}): the image holds NaN or infinite values")
    unexpected = sorted(set(np.unique(label_array).tolist()) - set(LABELS.values()))
    if unexpected:
        raise DataError(f"case {case} ({source_name}): label values {unexpected} outside 0-3 (RV, Myo, LV)")
    label.CopyInformation(image)
    return image, label


def _case_lists(lists_folder: str) -> Dict[str, List[str]]:
    lists = {name: read_list(join(lists_folder, name)) for name in LISTS if isfile(join(lists_folder, name))}
    for required in ("train.list", "val.list"):
        if required not in lists:
            raise MissingInputError(f"{join(lists_folder, required)} not found: the case lists of the literature's "
                                    f"split (give their folder with --lists)")
    return lists


def convert_acdc(source: str, dataset_id: int = DEFAULT_DATASET_ID, lists_folder: Optional[str] = None,
                 overwrite: bool = False) -> str:
    """Writes ``Dataset{id}_ACDC`` into nnUNet_raw and returns its folder."""
    source = os.path.abspath(source)
    h5 = isdir(join(source, "data"))
    layout = H5Layout(source) if h5 else NiftiRelease(source)
    lists = _case_lists(lists_folder or source)
    name = f"Dataset{dataset_id:03d}_ACDC"
    target = join(raw_root(), name)
    if isdir(target) and not overwrite:
        raise ExistingOutputError(f"{target} already exists; remove it, choose another id with -o or use --overwrite")
    if not isdir(target):
        refuse_taken_id(name)
    missing = sorted(case for cases in lists.values() for case in cases if not layout.has(case))
    if missing:
        raise DataError(f"{len(missing)} listed case(s) of {source} have neither a volume nor slices: "
                        f"{', '.join(missing)}")

    staging = join(raw_root(), f".{name}.partial-{os.getpid()}")
    os.makedirs(staging)
    try:
        manifest = _write_cases(layout, lists, staging, source)
        slices_list = join(lists_folder or source, SLICES_LIST)
        if isfile(slices_list):
            for count in LABELED_PATIENT_COUNTS:
                cases = literature_labeled_cases(read_list(slices_list), count)
                with open(join(staging, f"labeled_{count}_patients.txt"), "w") as f:
                    f.write("\n".join(cases) + "\n")
        else:
            print(f"no {SLICES_LIST} in {lists_folder or source}: the literature's labeled-patient lists are not "
                  f"written")
        save_json(manifest, join(staging, "acdc_manifest.json"), sort_keys=False)
        generate_dataset_json(staging, {0: "cineMRI"}, LABELS, len(lists["train.list"]), ".nii.gz",
                              dataset_name=name, reference="Bernard et al., IEEE TMI 37(11), 2018 (ACDC)",
                              description=f"ACDC from {source}, split as the semi-supervised literature does")
        if isdir(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    finally:
        if isdir(staging):
            shutil.rmtree(staging)
    spacing = "1 mm in every axis (the h5 layout stores no spacing)" if h5 else "the release's own"
    print(f"{name}: {len(lists['train.list'])} training cases in imagesTr/labelsTr, "
          f"{sum(len(v) for k, v in lists.items() if k != 'train.list')} held-out cases in imagesTs/labelsTs; "
          f"spacing {spacing}\n  -> {target}")
    return target


def _write_cases(layout, lists: Dict[str, List[str]], folder: str, source: str) -> dict:
    for images, labels in set(LISTS.values()):
        os.makedirs(join(folder, images), exist_ok=True)
        os.makedirs(join(folder, labels), exist_ok=True)
    manifest = {"source": source, "spacing": "1 mm (h5 layout)" if isinstance(layout, H5Layout) else "NIfTI's own",
                "cases": {}}
    listed = [(list_name, case) for list_name, cases in lists.items() for case in cases]
    for list_name, case in tqdm(listed, desc="Converting ACDC"):
        images, labels = LISTS[list_name]
        image, label, origin = layout.read(case)
        image, label = _checked(case, image, label, source)
        sitk.WriteImage(image, join(folder, images, f"{case}_0000.nii.gz"), True)
        sitk.WriteImage(label, join(folder, labels, f"{case}.nii.gz"), True)
        manifest["cases"][case] = {"list": list_name, "from": origin}
    return manifest
