"""Regular and editable installs: `micd trainer-path` and the benchmark's commands use the installed package."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run

ROOT = Path(__file__).resolve().parents[2]


def test_trainer_path_of_an_editable_install_holds_the_trainers():
    path = Path(run([sys.executable, "-m", "nnunetv2_micd.cli", "trainer-path"]).stdout.strip())
    assert path.is_absolute() and (path / "micd_trainers.py").is_file()


@pytest.fixture(scope="module")
def regular_install(tmp_path_factory):
    """The package installed as ``pip install .`` would, into a folder of its own (used through PYTHONPATH)."""
    target = tmp_path_factory.mktemp("regular_install")
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(ROOT)])
    return target


def test_trainer_path_of_a_regular_install_holds_the_trainers(regular_install, tmp_path):
    out = subprocess.run([sys.executable, "-c", "from nnunetv2_micd.paths import trainer_path; print(trainer_path())"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(regular_install)},
                         check=True)
    path = Path(out.stdout.strip())
    assert path.is_relative_to(regular_install) and (path / "micd_trainers.py").is_file()


def test_benchmark_runs_the_installed_micd_from_inside_a_checkout(regular_install, tmp_path):
    """``python -m`` looks in the working directory first: a user standing in this checkout must still get the
    installed package in the commands the benchmark starts (here the checkout's package would win)."""
    work, log = tmp_path / "work", tmp_path / "micd.log"
    work.mkdir()
    script = tmp_path / "start_micd.py"
    script.write_text("import sys\n"
                      "from nnunetv2_micd.benchmark.protocol import load_protocol\n"
                      "from nnunetv2_micd.benchmark.runner import BenchmarkRunner\n"
                      "protocol, _ = load_protocol('hippocampus_cpu')\n"
                      "BenchmarkRunner(protocol, sys.argv[1]).shell.micd('trainer-path', log_file=sys.argv[2])\n")
    run([sys.executable, str(script), str(work), str(log)], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(regular_install)})
    path = Path(log.read_text().strip())
    assert path.is_relative_to(regular_install), f"the benchmark ran micd from {path}, not from the installed package"
