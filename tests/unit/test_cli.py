import os
import subprocess
import sys

import pytest

from nnunetv2_micd import cli
from nnunetv2_micd.commands import run_command


def test_a_failed_command_is_reported_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_cmd_trainer_path",
                        lambda args: run_command([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ)))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["trainer-path"])
    assert stopped.value.code == 1
    error = capsys.readouterr().err
    assert "micd trainer-path: error: " in error and "failed with exit code 3" in error


def test_a_program_error_keeps_its_traceback(monkeypatch):
    def program_error(args):
        raise RuntimeError("The size of tensor a (4) must match the size of tensor b (5)")

    monkeypatch.setattr(cli, "_cmd_trainer_path", program_error)
    with pytest.raises(RuntimeError, match="size of tensor a"):
        cli.main(["trainer-path"])


def test_a_value_error_from_a_bug_keeps_its_traceback_and_an_expected_one_is_one_line(monkeypatch, capsys):
    from nnunetv2_micd.errors import DataError

    def bug(args):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setattr(cli, "_cmd_trainer_path", bug)
    with pytest.raises(ValueError, match="could not be broadcast"):
        cli.main(["trainer-path"])

    def bad_scan(args):
        raise DataError("unlabeled case 'scan_7' (scan_7_0000.nii.gz): the file is cut off")

    monkeypatch.setattr(cli, "_cmd_trainer_path", bad_scan)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["trainer-path"])
    assert stopped.value.code == 1
    assert capsys.readouterr().err == "micd trainer-path: error: unlabeled case 'scan_7' (scan_7_0000.nii.gz): the " \
                                      "file is cut off\n"


def test_an_interrupted_command_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    from nnunetv2_micd.benchmark import runner

    def stopped_by_the_user(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.BenchmarkRunner, "run_all", stopped_by_the_user)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["benchmark", "hippocampus_cpu", "-o", str(tmp_path / "work")])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.splitlines()[-1] == \
        "micd benchmark: interrupted; the same command continues where it stopped"

    monkeypatch.setattr(cli, "_cmd_trainer_path", stopped_by_the_user)
    with pytest.raises(SystemExit):
        cli.main(["trainer-path"])
    assert capsys.readouterr().err == "micd trainer-path: interrupted\n"


def test_micd_works_without_posix_file_locks_and_benchmark_says_it_needs_them(monkeypatch, tmp_path, capsys):
    # Windows has no fcntl: micd must still import and serve the user's workflow (trainer-path first)
    without_fcntl = "import sys; sys.modules['fcntl'] = None; from nnunetv2_micd import cli; cli.main(['trainer-path'])"
    printed = subprocess.run([sys.executable, "-c", without_fcntl], capture_output=True, text=True, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == cli.trainer_path()

    from nnunetv2_micd.benchmark import lock
    monkeypatch.setattr(lock, "fcntl", None)
    for status in ([], ["--status"]):
        with pytest.raises(SystemExit):
            cli.main(["benchmark", "hippocampus_cpu", "-o", str(tmp_path / "work"), *status])
        assert "micd benchmark: error: micd benchmark needs POSIX file locks" in capsys.readouterr().err
    assert not (tmp_path / "work" / "nnUNet_raw").exists()
