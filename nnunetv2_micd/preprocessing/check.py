"""``micd check-dataset``: every file of a raw dataset read completely and checked before it costs a training run.

nnU-Net's readers let some broken files through without a word: SimpleITK fills a truncated ``.nii.gz`` with zeros,
a 4D file in a one-channel dataset becomes two channels and fails later inside a preprocessing worker, and NaN voxels
stop a training hours later with a non-finite loss. Semi-supervised datasets are large, assembled from several
sources and rarely looked at case by case, so each case of every split is read here in full, in parallel, and every
problem is reported with its split, case and file.
"""
import contextlib
import gzip
import hashlib
import io
import os
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Iterable, List, Optional, Sequence, Tuple

import nibabel
import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from nnunetv2.configuration import default_num_processes
from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
from nnunetv2.paths import nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunetv2_micd.errors import DataError, MissingInputError

#: split -> (images folder, labels folder or None: the unlabeled split has no labels, none are copied there)
SPLIT_FOLDERS = {"labeled": ("imagesTr", "labelsTr"), "unlabeled": ("imagesUnlabeled", None),
                 "test": ("imagesTs", "labelsTs")}
#: file endings whose spatial dimension SimpleITK reads from the header alone
SIMPLEITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gipl", ".gipl.gz")
GEOMETRY_TOLERANCE = 1e-3  # relative, as nnU-Net's own integrity check allows for spacing


@dataclass(frozen=True)
class Case:
    split: str
    name: str
    images: Tuple[str, ...]  # one file per channel, in channel order
    label: Optional[str] = None


@dataclass(frozen=True)
class Problem:
    split: str
    case: str
    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.split} case '{self.case}' ({self.file}): {self.what}"


@dataclass(frozen=True)
class CaseReading:
    """What reading one case found, and what the checks across cases compare."""
    case: Case
    problems: Tuple[Problem, ...]
    dimension: Optional[int] = None  # spatial dimension of the stored image (2 or 3), None when unknown
    content: Optional[str] = None  # digest of the image voxels: one scan under two names has the same


@dataclass
class DatasetCheck:
    dataset: str
    cases: List[Case]
    problems: List[Problem] = field(default_factory=list)
    #: worth knowing, but no reason to stop: one scan twice within a training split (two annotations of it, say)
    warnings: List[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def cases_of(self, split: str) -> List[Case]:
        return [case for case in self.cases if case.split == split]

    def summary(self) -> str:
        counts = Counter(case.split for case in self.cases)
        checked = ", ".join(f"{counts[split]} {split}" for split in SPLIT_FOLDERS if counts[split])
        verdict = "clean" if not self.problems else \
            f"{len(self.problems)} problem(s) in {len({(p.split, p.case) for p in self.problems})} case(s)"
        warnings = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return f"{self.dataset}: {checked or 'no'} cases checked in {self.seconds:.1f} s: {verdict}{warnings}"

    def raise_if_problems(self) -> None:
        if self.problems:
            raise DataError("\n".join([*map(str, self.problems), self.summary()]))


# ---------------------------------------------------------------------------------------------------- listing

def case_file_pattern(file_ending: str) -> re.Pattern:
    """nnU-Net's image file names: ``{case}_{channel:04d}{file_ending}``."""
    return re.compile(r"(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending))


def _cases_in_folder(raw_folder: str, split: str, dataset_json: dict) -> Tuple[List[Case], List[Problem]]:
    """The cases of one split from the file names, with naming, channel and label-pairing problems."""
    images_folder, labels_folder = SPLIT_FOLDERS[split]
    file_ending, num_channels = dataset_json["file_ending"], len(dataset_json["channel_names"])
    pattern = case_file_pattern(file_ending)
    problems, channels = [], defaultdict(dict)
    for name in sorted(os.listdir(join(raw_folder, images_folder))):
        if name.startswith("."):
            continue
        match = pattern.fullmatch(name)
        if match is None:
            problems.append(Problem(split, name, join(images_folder, name),
                                    f"not named {{case}}_{{channel:04d}}{file_ending} as dataset.json's file "
                                    f"ending asks"))
            continue
        channels[match["case"]][int(match["channel"])] = join(raw_folder, images_folder, name)

    # labeled cases must have labels; test cases only where the dataset has test labels at all
    labels_expected = labels_folder is not None and (split == "labeled" or isdir(join(raw_folder, labels_folder)))
    labels = {}
    if labels_expected and isdir(join(raw_folder, labels_folder)):
        labels = {name[:-len(file_ending)]: join(raw_folder, labels_folder, name)
                  for name in os.listdir(join(raw_folder, labels_folder)) if name.endswith(file_ending)}
        for orphan in sorted(set(labels) - set(channels)):
            problems.append(Problem(split, orphan, join(labels_folder, orphan + file_ending),
                                    f"label without an image in {images_folder}"))

    cases = []
    for name, files in channels.items():
        if sorted(files) != list(range(num_channels)):
            problems.append(Problem(split, name, images_folder, f"found channels {sorted(files)}, dataset.json has "
                                                                f"{num_channels} channel(s) {list(range(num_channels))}"))
            continue
        if labels_expected and name not in labels:
            problems.append(Problem(split, name, labels_folder, f"no label {name}{file_ending} in {labels_folder}"))
        cases.append(Case(split, name, tuple(files[c] for c in range(num_channels)), labels.get(name)))
    return cases, problems


def _labeled_cases_listed_in_dataset_json(raw_folder: str, dataset_json: dict) -> Tuple[List[Case], List[Problem]]:
    """Labeled cases when dataset.json lists its files (nnU-Net's ``dataset`` key) instead of naming them."""
    problems, cases = [], []
    for name, files in get_filenames_of_train_images_and_targets(raw_folder, dataset_json).items():
        missing = [f for f in (*files["images"], files["label"]) if not isfile(f)]
        if missing:
            problems.append(Problem("labeled", name, missing[0], "listed in dataset.json but missing"))
        else:
            cases.append(Case("labeled", name, tuple(files["images"]), files["label"]))
    return cases, problems


def list_cases(raw_folder: str, dataset_json: dict) -> Tuple[List[Case], List[Problem]]:
    """Every case of the splits the dataset has, labeled, unlabeled and test."""
    cases, problems = [], []
    for split, (images_folder, _) in SPLIT_FOLDERS.items():
        if split == "labeled" and "dataset" in dataset_json:
            found = _labeled_cases_listed_in_dataset_json(raw_folder, dataset_json)
        elif isdir(join(raw_folder, images_folder)):
            found = _cases_in_folder(raw_folder, split, dataset_json)
        else:
            continue
        cases += found[0]
        problems += found[1]
    return cases, problems


# ---------------------------------------------------------------------------------------------------- one case

def _stored_voxels(path: str) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The voxels as a NIfTI file stores them, or why it holds fewer than its header promises; for other formats only
    whether a gzip stream reaches its end marker. SimpleITK reads a cut-off file without an error, filling the rest
    with zeros, and turns NaN and infinite NIfTI voxels into zeros, so neither can be seen in what it returns."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        elif path.endswith(".nii"):
            with open(path, "rb") as f:
                data = f.read()
        else:
            return None, None
    except (EOFError, OSError) as e:  # OSError covers gzip.BadGzipFile and zlib's errors
        return None, f"the file is cut off or corrupt ({type(e).__name__}: {e}); SimpleITK would fill the rest " \
                     f"with zeros"
    if not path.endswith((".nii", ".nii.gz")):
        return None, None
    header_class = nibabel.Nifti2Header if data[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c") \
        else nibabel.Nifti1Header
    try:
        header = header_class.from_fileobj(io.BytesIO(data))
    except Exception as e:  # nibabel raises several types for a malformed header
        return None, f"no valid NIfTI header ({type(e).__name__}: {e})"
    shape, dtype, offset = header.get_data_shape(), header.get_data_dtype(), header.get_data_offset()
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(data) < expected:
        return None, f"the file is cut off: {len(data)} of {expected} bytes; SimpleITK would fill the rest with zeros"
    return np.frombuffer(data, dtype, int(np.prod(shape)), offset), None


def _non_finite(voxels: np.ndarray) -> int:
    return int(voxels.size - np.isfinite(voxels).sum()) if voxels.dtype.kind in "fc" else 0


def _stored_dimension(path: str) -> Optional[int]:
    """The dimension the file stores (2, 3, or 4 for a series of volumes), from its header alone."""
    if not path.endswith(SIMPLEITK_ENDINGS):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetDimension()


def _read(read, files) -> Tuple[Optional[np.ndarray], Optional[dict], Optional[str]]:
    """nnU-Net's reader on ``files``; its printed complaints become the problem's detail."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            array, properties = read(files)
        return array, properties, None
    except Exception as e:  # the readers raise bare RuntimeErrors or library errors for a bad file
        detail = str(e).strip() or " ".join(line for line in printed.getvalue().splitlines()
                                            if line.startswith("ERROR")) or "no reason given"
        return None, None, f"cannot be read ({type(e).__name__}: {detail})"


def _image_problems(case: Case, array: np.ndarray, dimensions: Sequence[Optional[int]],
                    non_finite_stored: int) -> List[str]:
    problems = []
    num_channels = len(case.images)
    if array.shape[0] != num_channels:
        volumes = max((d for d in dimensions if d is not None), default=0) == 4
        problems.append(f"{'a 4D file: ' if volumes else ''}read as {array.shape[0]} channels, dataset.json has "
                        f"{num_channels}")
    if array.size == 0:
        return problems + ["holds no voxels"]
    non_finite = max(non_finite_stored, _non_finite(array))
    if non_finite:
        problems.append(f"{non_finite} of {array.size} voxels are NaN or infinite")
    elif array.min() == array.max():
        problems.append(f"empty: every voxel is {array.flat[0]:g}")
    return problems


def _geometry_problem(image: np.ndarray, image_properties: dict, label: np.ndarray,
                      label_properties: dict) -> Optional[str]:
    if image.shape[1:] != label.shape[1:]:
        return f"label shape {label.shape[1:]} differs from its image's {image.shape[1:]}"
    for key in ("spacing", "origin", "direction"):
        image_value = image_properties.get("sitk_stuff", image_properties).get(key)
        label_value = label_properties.get("sitk_stuff", label_properties).get(key)
        if image_value is not None and label_value is not None and not np.allclose(
                image_value, label_value, rtol=GEOMETRY_TOLERANCE, atol=GEOMETRY_TOLERANCE):
            return f"label {key} {tuple(np.round(label_value, 4))} differs from its image's " \
                   f"{tuple(np.round(image_value, 4))}"
    return None


def read_case(case: Case, reader_writer_class, label_values: Sequence[int]) -> CaseReading:
    """Reads one case in full and returns what is wrong with it (worker function)."""
    problems = []

    def add(file: str, what: str) -> None:
        problems.append(Problem(case.split, case.name, os.path.basename(file), what))

    non_finite = {}
    for file in [*case.images, *([case.label] if case.label else [])]:
        voxels, incomplete = _stored_voxels(file)
        if incomplete:
            add(file, incomplete)
        non_finite[file] = 0 if voxels is None else _non_finite(voxels)
    if problems:
        return CaseReading(case, tuple(problems))
    try:
        dimensions = [_stored_dimension(f) for f in case.images]
    except RuntimeError as e:
        add(case.images[0], f"cannot be read ({str(e).strip()})")
        return CaseReading(case, tuple(problems))

    image, image_properties, unreadable = _read(reader_writer_class().read_images, case.images)
    if unreadable:
        add(case.images[0], unreadable)
        return CaseReading(case, tuple(problems))
    for what in _image_problems(case, image, dimensions, sum(non_finite[f] for f in case.images)):
        add(case.images[0], what)
    if case.label:
        label, label_properties, unreadable = _read(reader_writer_class().read_seg, case.label)
        if unreadable:
            add(case.label, unreadable)
        elif non_finite[case.label]:
            add(case.label, f"{non_finite[case.label]} voxels are NaN or infinite")
        else:
            unexpected = sorted(set(np.unique(label).tolist()) - set(label_values))
            if unexpected:
                add(case.label, f"label values {[_plain(v) for v in unexpected]} are not among dataset.json's "
                                f"{sorted(label_values)}")
            geometry = _geometry_problem(image, image_properties, label, label_properties)
            if geometry:
                add(case.label, geometry)
    stored = {min(d, 3) for d in dimensions if d is not None}
    content = hashlib.blake2b(np.ascontiguousarray(image).tobytes() + str(image.shape).encode(),
                              digest_size=16).hexdigest()
    return CaseReading(case, tuple(problems), stored.pop() if len(stored) == 1 else None, content)


def _plain(value: float):
    return int(value) if float(value).is_integer() else value


def _read_case_naming_it(arguments) -> CaseReading:
    """Worker entry: an unexpected failure still names the case it was reading."""
    case = arguments[0]
    try:
        return read_case(*arguments)
    except Exception as e:
        raise RuntimeError(f"checking {case.split} case '{case.name}' ({', '.join(case.images)}) failed: "
                           f"{type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------------------------------- across cases

def _dimension_problems(readings: List[CaseReading]) -> List[Problem]:
    """Images whose dimension differs from the dataset's (that of most labeled images)."""
    known = [r.dimension for r in readings if r.dimension is not None]
    labeled = [r.dimension for r in readings if r.dimension is not None and r.case.split == "labeled"]
    if not known:
        return []
    dataset_dimension = Counter(labeled or known).most_common(1)[0][0]
    return [Problem(r.case.split, r.case.name, os.path.basename(r.case.images[0]),
                    f"a {r.dimension}D image in a {dataset_dimension}D dataset")
            for r in readings if r.dimension is not None and r.dimension != dataset_dimension]


def _duplicates(readings: List[CaseReading]) -> Tuple[List[Problem], List[Problem]]:
    """One scan twice: the same case id in two splits, or the same voxels under another name. Across splits it is a
    problem (a test scan that trains the model, a labeled scan also fed as unlabeled); within one training split a
    warning, since a dataset may hold two annotations of one scan (nnU-Net's folds would then split them, though)."""
    problems, warnings = [], []
    splits_of = defaultdict(list)
    for reading in readings:
        splits_of[reading.case.name].append(reading.case.split)
    for name, splits in sorted(splits_of.items()):
        if len(splits) > 1:
            problems.append(Problem(splits[-1], name, SPLIT_FOLDERS[splits[-1]][0],
                                    f"case id also in {' and '.join(splits[:-1])}: one scan in two splits"))
    first_with = {}
    for reading in readings:
        if reading.content is None:
            continue
        first = first_with.setdefault(reading.content, reading.case)
        if first is reading.case or first.name == reading.case.name:
            continue
        problem = Problem(reading.case.split, reading.case.name, os.path.basename(reading.case.images[0]),
                          f"same voxels as {first.split} case '{first.name}'")
        if first.split != reading.case.split:
            problems.append(replace(problem, what=problem.what + " (a leak between splits)"))
        else:
            warnings.append(problem)
    return problems, warnings


# ---------------------------------------------------------------------------------------------------- the check

def allowed_label_values(dataset_json: dict) -> List[int]:
    """The values a label file may hold: dataset.json's labels, including its ignore label."""
    label_manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    ignore = [] if label_manager.ignore_label is None else [label_manager.ignore_label]
    return sorted(int(value) for value in [*label_manager.all_labels, *ignore])


def check_raw_dataset(raw_folder: str, num_processes: Optional[int] = None) -> DatasetCheck:
    """Checks every case of the raw dataset in ``raw_folder``; returns what it found; problems do not raise here
    (:meth:`DatasetCheck.raise_if_problems` does)."""
    if not isfile(join(raw_folder, "dataset.json")):
        raise MissingInputError(f"{raw_folder} has no dataset.json: not an nnU-Net raw dataset")
    start = time.perf_counter()
    dataset_json = load_json(join(raw_folder, "dataset.json"))
    cases, problems = list_cases(raw_folder, dataset_json)
    check = DatasetCheck(os.path.basename(raw_folder.rstrip(os.sep)), cases, problems)
    if not cases:
        check.seconds = time.perf_counter() - start
        return check

    reader_writer_class = determine_reader_writer_from_dataset_json(dataset_json, cases[0].images[0])
    label_values = allowed_label_values(dataset_json)
    arguments = [(case, reader_writer_class, label_values) for case in cases]
    num_processes = default_num_processes if num_processes is None else num_processes
    with get_context("spawn").Pool(max(1, num_processes)) as pool:
        readings = list(tqdm(pool.imap(_read_case_naming_it, arguments, chunksize=4), total=len(arguments),
                             desc=f"Checking {check.dataset}"))
    for reading in readings:
        check.problems += reading.problems
    duplicates, check.warnings = _duplicates(readings)
    check.problems += _dimension_problems(readings) + duplicates
    check.seconds = time.perf_counter() - start
    return check


def check_dataset(dataset: str, num_processes: Optional[int] = None) -> DatasetCheck:
    """:func:`check_raw_dataset` for a dataset of ``nnUNet_raw``, by id or name."""
    return check_raw_dataset(join(nnUNet_raw.require(), maybe_convert_to_dataset_name(dataset)), num_processes)


def format_check(check: DatasetCheck) -> Iterable[str]:
    yield from map(str, check.problems)
    yield from (f"warning: {warning}" for warning in check.warnings)
    yield check.summary()
