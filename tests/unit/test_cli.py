import os
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
