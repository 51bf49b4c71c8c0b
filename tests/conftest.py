"""Shared fixtures: nnU-Net folders in a temporary place and one small preprocessed dataset for the whole session.

Real nnU-Net commands are slow to start, so the synthetic dataset is planned and preprocessed once and every
integration test reads it; tests that change it work on their own copy.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Keep nnU-Net's worker pools small on CI machines; must be set before nnunetv2.configuration is imported.
os.environ.setdefault("nnUNet_def_n_proc", "2")
os.environ.setdefault("nnUNet_compile", "false")

INTEGRATION_TESTS = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    """Every test under tests/integration carries the ``integration`` marker, so ``-m "not integration"`` (or
    ``tests/unit``) runs the fast part alone."""
    for item in items:
        if INTEGRATION_TESTS in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HIPPOCAMPUS = SHARED_DATA / "Task04_Hippocampus"
ACDC = SHARED_DATA / "ACDC_ssl4mis"
SYNTHETIC_ID = 900
SYNTHETIC_NAME = "Dataset900_Synthetic"


def run(command, **kwargs):
    """Runs a command as a user would, failing the test with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {result.returncode}\n"
                    f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def trainer_environment(nnunet_folders):
    """What nnUNetv2_train needs to find our trainers, with augmentation in the main process."""
    from nnunetv2_micd.paths import trainer_path
    return {**os.environ, "nnUNet_extTrainer": trainer_path(), "nnUNet_n_proc_DA": "0"}


def micd(*args, **kwargs):
    return run([sys.executable, "-m", "nnunetv2_micd.cli", *map(str, args)], **kwargs)


@pytest.fixture(scope="session")
def nnunet_folders(tmp_path_factory):
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results in a temporary folder for the whole session."""
    root = tmp_path_factory.mktemp("nnunet")
    previous = {k: os.environ.get(k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    folders = {k: root / k.split("_")[1] for k in previous}
    for key, folder in folders.items():
        folder.mkdir()
        os.environ[key] = str(folder)
    yield folders
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_dataset(nnunet_folders):
    """A synthetic dataset, planned and preprocessed (labeled and unlabeled), with tiny plans."""
    from nnunetv2_micd.dataset_conversion.synthetic import SyntheticSpec, write_synthetic_dataset
    raw = nnunet_folders["nnUNet_raw"] / SYNTHETIC_NAME
    write_synthetic_dataset(str(raw), SyntheticSpec(num_labeled=6, num_unlabeled=6, num_test=3, shape=(40, 40, 40)))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(SYNTHETIC_ID), "-c", "3d_fullres", "2d", "-np", "2"])
    micd("tiny-plans", "-d", SYNTHETIC_ID)
    micd("preprocess-unlabeled", "-d", SYNTHETIC_ID, "-c", "3d_fullres", "2d", "-np", "2")
    return {"id": SYNTHETIC_ID, "name": SYNTHETIC_NAME, "raw": raw,
            "preprocessed": nnunet_folders["nnUNet_preprocessed"] / SYNTHETIC_NAME}
