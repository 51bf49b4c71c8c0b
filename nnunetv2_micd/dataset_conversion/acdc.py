"""``micd convert-acdc``: ACDC cine MRI as the semi-supervised literature distributes it, as an nnU-Net raw dataset.

Two sources give the same case names (``patientXXX_frame01`` for end-diastole, ``patientXXX_frame02`` for
end-systole, one case per patient and cardiac phase):

- the h5 layout of SSL4MIS and the methods built on it: ``data/{case}.h5`` volumes and/or ``data/{case}_slice_K.h5``
  slices (K from 1, flat or under ``data/slices/``), datasets ``image`` and ``label``, with the lists
  ``train.list``, ``val.list`` (and ``test.list`` where present). It stores no voxel spacing, so 1 mm is written in
  every axis: nnU-Net's ``2d`` configuration then slices along the stored slice axis, and distances in mm equal
  the literature's distances in voxels;
- the official NIfTI release (``patientXXX/patientXXX_frameYY.nii.gz`` with ``..._gt.nii.gz``), which keeps the
  real spacing. It numbers a frame by its time point (``patient001_frame12``), so the ED and ES frames its
  ``Info.cfg`` names are renamed ``frame01`` and ``frame02``. Its case lists come from ``--lists`` (the h5
  download's list files); release cases that no list names are left out.

The training cases go to ``imagesTr/labelsTr``, every other listed case to ``imagesTs/labelsTs``; the literature's
labeled patients (the first patients of ``train_slices.list``, both frames each) are written as case lists for
``micd make-ssl-dataset --labeled-cases``, and 10 other training patients (both frames, drawn with seed 0) as
``tuning_patients.txt``, to hold out with ``--test-cases`` when choosing settings. The image channel is named
"cineMRI", which nnU-Net normalises with its default z-score per image: the release holds raw scanner intensities,
and the h5 layout's min-max scaling per volume depends on each volume's brightest voxel, so neither scale is
comparable across cases as it is. The dataset is built in a hidden folder and renamed when complete.
"""
import glob
import os
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

import h5py
import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunetv2_micd.dataset_conversion.ssl_split import raw_root, read_list_file, refuse_taken_id, staged_dataset_folder
from nnunetv2_micd.errors import DataError, ExistingOutputError, MissingInputError

LABELS = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
DEFAULT_DATASET_ID = 800
#: list file -> images and labels folder of its cases
LISTS = {"train.list": ("imagesTr", "labelsTr"), "val.list": ("imagesTs", "labelsTs"),
         "test.list": ("imagesTs", "labelsTs")}
SLICES_LIST = "train_slices.list"
LABELED_PATIENT_COUNTS = (3, 7)  # the literature's settings
#: training patients held out, both frames each, for choosing settings without the literature's validation patients
TUNING_PATIENTS = 10
TUNING_LIST = "tuning_patients.txt"
H5_SPACING = (1.0, 1.0, 1.0)
VOLUME_PATTERN = re.compile(r"(?P<case>patient\d{3}_frame\d{2})\.h5")
SLICE_PATTERN = re.compile(r"(?P<case>patient\d{3}_frame\d{2})_slice_(?P<index>\d+)\.h5")
#: the release's phase (in Info.cfg) -> the h5 layout's frame name
RELEASE_PHASES = {"ED": "frame01", "ES": "frame02"}


def literature_labeled_cases(slices_list: List[str], num_patients: int) -> List[str]:
    """Both frames of the first ``num_patients`` patients of ``train_slices.list`` in file order: the labeled
    cases of the literature's "3 (7) labeled patients" settings."""
    cases = [line.rsplit("_slice_", 1)[0] for line in slices_list]
    patients = list(dict.fromkeys(case.split("_")[0] for case in cases))[:num_patients]
    if len(patients) < num_patients:
        raise DataError(f"{SLICES_LIST} names only {len(patients)} patients, fewer than {num_patients}")
    return sorted({case for case in cases if case.split("_")[0] in patients})


def tuning_cases(training_cases: List[str], labeled_cases: List[str], num_patients: int, seed: int = 0) -> List[str]:
    """Both frames of ``num_patients`` training patients drawn with ``seed`` from those outside ``labeled_cases``
    (the literature's largest labeled set): a validation split for choosing settings that never touches the
    literature's validation patients. Empty when too few patients are left."""
    def patient(case: str) -> str:
        return case.split("_")[0]

    candidates = sorted({patient(c) for c in training_cases} - {patient(c) for c in labeled_cases})
    if len(candidates) < num_patients:
        return []
    chosen = {candidates[i] for i in np.random.default_rng(seed).permutation(len(candidates))[:num_patients]}
    return sorted(case for case in training_cases if patient(case) in chosen)


# ---------------------------------------------------------------------------------------------------- h5 layout

class H5Layout:
    """Cases of the h5 layout: a volume file where there is one, otherwise its slices stacked in order. Where a case
    has both, the volume is read and the slices are not compared with it (that would read the case twice)."""
    missing = "neither a volume nor slices"

    def __init__(self, source: str):
        self.data = join(source, "data")
        self.volumes: Dict[str, str] = {}
        for path in glob.glob(join(self.data, "*.h5")):
            match = VOLUME_PATTERN.fullmatch(os.path.basename(path))
            if match:
                self.volumes[match["case"]] = path
        self.slices: Dict[str, Dict[int, str]] = {}
        for folder in (self.data, join(self.data, "slices")):
            for path in glob.glob(join(folder, "*_slice_*.h5")):
                match = SLICE_PATTERN.fullmatch(os.path.basename(path))
                if match:
                    self.slices.setdefault(match["case"], {})[int(match["index"])] = path
        self.cases = set(self.volumes) | set(self.slices)

    def where(self, case: str) -> str:
        if case in self.volumes:
            return self.volumes[case]
        return join(os.path.dirname(next(iter(self.slices[case].values()))), f"{case}_slice_*.h5")

    def read(self, case: str) -> Tuple[np.ndarray, np.ndarray, str]:
        """Image and label (slices x H x W) and where they came from."""
        if case in self.volumes:
            with h5py.File(self.volumes[case], "r") as f:
                return f["image"][:], f["label"][:], "volume"
        slices = self.slices[case]
        if min(slices) < 1:
            raise DataError(f"case {case}: slice {min(slices)} ({slices[min(slices)]}); the slices count from 1")
        missing = sorted(set(range(1, max(slices) + 1)) - set(slices))
        if missing:
            raise DataError(f"case {case}: slice(s) {missing} missing between slice 1 and {max(slices)} "
                            f"({self.where(case)})")
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
    """Cases of the official release, in the given folder or its ``training``/``testing`` subfolders: the ED and ES
    frames each patient folder's ``Info.cfg`` names, with their ``_gt`` labels."""
    missing = "no frame named by an Info.cfg with its _gt label in the release"

    def __init__(self, source: str):
        self.source = source
        self.files: Dict[str, Tuple[str, str]] = {}
        for folder in (source, join(source, "training"), join(source, "testing")):
            for info in sorted(glob.glob(join(folder, "patient*", "Info.cfg"))):
                self.files.update(_release_frames(os.path.dirname(info)))
        if not self.files:
            raise MissingInputError(f"{source} is neither the h5 layout (data/ with train.list and val.list) nor the "
                                    f"NIfTI release (patientXXX/ folders with Info.cfg, or training/ and testing/ "
                                    f"holding them)")
        self.cases = set(self.files)

    def where(self, case: str) -> str:
        return " and ".join(self.files[case])

    def read(self, case: str) -> Tuple[sitk.Image, sitk.Image, str]:
        image_file, label_file = self.files[case]
        return sitk.ReadImage(image_file), sitk.ReadImage(label_file), os.path.relpath(image_file, self.source)


def _release_frames(patient_folder: str) -> Dict[str, Tuple[str, str]]:
    """Image and label files of one patient's ED and ES frames, by the h5 layout's case names; a frame without both
    files is left out (and reported missing if a list names it)."""
    info_file = join(patient_folder, "Info.cfg")
    with open(info_file) as f:
        info = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in f if ":" in line)}
    patient = os.path.basename(patient_folder)
    frames = {}
    for phase, frame in RELEASE_PHASES.items():
        if phase not in info:
            raise DataError(f"{info_file} names no {phase} frame")
        stem = join(patient_folder, f"{patient}_frame{int(info[phase]):02d}")
        if isfile(stem + ".nii.gz") and isfile(stem + "_gt.nii.gz"):
            frames[f"{patient}_{frame}"] = (stem + ".nii.gz", stem + "_gt.nii.gz")
    return frames


# ---------------------------------------------------------------------------------------------------- conversion

def _checked(case: str, image, label, where: str):
    """The case as SimpleITK images with 1 mm spacing (h5 arrays) or its own (NIfTI), refused when inconsistent."""
    if isinstance(image, np.ndarray):
        image, label = sitk.GetImageFromArray(image.astype(np.float32)), sitk.GetImageFromArray(label.astype(np.uint8))
        for volume in (image, label):
            volume.SetSpacing(H5_SPACING)
    image_array, label_array = sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(label)
    if image_array.shape != label_array.shape:
        raise DataError(f"case {case} ({where}): image shape {image_array.shape} and label shape "
                        f"{label_array.shape} differ")
    if not np.isfinite(image_array).all():
        raise DataError(f"case {case} ({where}): the image holds NaN or infinite values")
    unexpected = sorted(set(np.unique(label_array).tolist()) - set(LABELS.values()))
    if unexpected:
        raise DataError(f"case {case} ({where}): label values {unexpected} outside 0-3 (RV, Myo, LV)")
    label.CopyInformation(image)
    return image, label


def _case_lists(lists_folder: str) -> Dict[str, List[str]]:
    """The lists present; a case named twice would be written twice, or trained on and tested on."""
    lists = {name: read_list_file(join(lists_folder, name)) for name in LISTS if isfile(join(lists_folder, name))}
    for required in ("train.list", "val.list"):
        if required not in lists:
            raise MissingInputError(f"{join(lists_folder, required)} not found: the case lists of the literature's "
                                    f"split (give their folder with --lists)")
    repeated = sorted(case for case, count in Counter(c for cases in lists.values() for c in cases).items()
                      if count > 1)
    if repeated:
        raise DataError(f"cases {repeated} appear more than once in the lists of {lists_folder}")
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
    listed = {case for cases in lists.values() for case in cases}
    missing = sorted(listed - layout.cases)
    if missing:
        raise DataError(f"{len(missing)} listed case(s) of {source} have {layout.missing}: {', '.join(missing)}")
    unlisted = sorted(layout.cases - listed)

    with staged_dataset_folder(target) as staging:
        manifest = _write_cases(layout, lists, staging, source)
        manifest["left_out"] = unlisted
        slices_list = join(lists_folder or source, SLICES_LIST)
        if isfile(slices_list):
            for count in LABELED_PATIENT_COUNTS:
                cases = literature_labeled_cases(read_list_file(slices_list), count)
                with open(join(staging, f"labeled_{count}_patients.txt"), "w") as f:
                    f.write("\n".join(cases) + "\n")
            largest = literature_labeled_cases(read_list_file(slices_list), max(LABELED_PATIENT_COUNTS))
            tuning = tuning_cases(lists["train.list"], largest, TUNING_PATIENTS)
            if tuning:
                with open(join(staging, TUNING_LIST), "w") as f:
                    f.write("\n".join(tuning) + "\n")
            else:
                print(f"fewer than {TUNING_PATIENTS} training patients outside the labeled ones: no {TUNING_LIST}")
        else:
            print(f"no {SLICES_LIST} in {lists_folder or source}: the literature's labeled-patient lists are not "
                  f"written")
        save_json(manifest, join(staging, "acdc_manifest.json"), sort_keys=False)
        generate_dataset_json(staging, {0: "cineMRI"}, LABELS, len(lists["train.list"]), ".nii.gz",
                              dataset_name=name, reference="Bernard et al., IEEE TMI 37(11), 2018 (ACDC)",
                              description=f"ACDC from {source}, split as the semi-supervised literature does")
    spacing = "1 mm in every axis (the h5 layout stores no spacing)" if h5 else "the release's own"
    print(f"{name}: {len(lists['train.list'])} training cases in imagesTr/labelsTr, "
          f"{sum(len(v) for k, v in lists.items() if k != 'train.list')} held-out cases in imagesTs/labelsTs; "
          f"spacing {spacing}" + (f"; {len(unlisted)} cases of the source in no list left out" if unlisted else "")
          + f"\n  -> {target}")
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
        image, label = _checked(case, image, label, layout.where(case))
        sitk.WriteImage(image, join(folder, images, f"{case}_0000.nii.gz"), True)
        sitk.WriteImage(label, join(folder, labels, f"{case}.nii.gz"), True)
        manifest["cases"][case] = {"list": list_name, "from": origin, "spacing_xyz_mm": list(image.GetSpacing())}
    return manifest
