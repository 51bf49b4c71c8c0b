"""`micd trainer-path` must point at the trainers for a regular install too, not only for an editable one."""
import subprocess
import sys
from pathlib import Path

from tests.conftest import run

ROOT = Path(__file__).resolve().parents[2]


def test_trainer_path_of_an_editable_install_holds_the_trainers():
    path = Path(run([sys.executable, "-m", "nnunetv2_micd.cli", "trainer-path"]).stdout.strip())
    assert path.is_absolute() and (path / "micd_trainers.py").is_file()


def test_trainer_path_of_a_regular_install_holds_the_trainers(tmp_path):
    target = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(ROOT)])
    out = subprocess.run([sys.executable, "-c", "from nnunetv2_micd.cli import trainer_path; print(trainer_path())"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target)}, check=True)
    path = Path(out.stdout.strip())
    assert path.is_relative_to(target) and (path / "micd_trainers.py").is_file()
