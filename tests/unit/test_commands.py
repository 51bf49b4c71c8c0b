import os
import signal
import subprocess
import sys
import time

import pytest

from nnunetv2_micd.commands import run_command

TRAINING_WITH_A_WORKER = """
import signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c",
                           "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"])
try:
    print(worker.pid, flush=True)
    time.sleep(600)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def _has_ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waits only for its parent's wait
    except FileNotFoundError:
        return True


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while not _has_ended(pid) and time.time() < deadline:
        time.sleep(0.1)
    return _has_ended(pid)


def test_a_stopped_command_leaves_no_worker_behind_and_returns_at_once(tmp_path):
    """nnUNetv2_train's augmentation workers survive its Ctrl-C and keep its output open: the stop must end them."""
    lines = []

    def stop_after_the_worker_started(line):
        lines.append(line)
        return True

    started = time.time()
    log_file = tmp_path / "train.log"
    finished = run_command([sys.executable, "-c", TRAINING_WITH_A_WORKER], dict(os.environ), str(log_file),
                           on_line=stop_after_the_worker_started)
    assert not finished
    assert time.time() - started < 30  # not the minute's grace given to a command that ignores Ctrl-C
    assert log_file.read_text().split() == lines[0].split() + ["interrupted"]  # stopped as Ctrl-C would
    worker = int(lines[0])
    assert _ends_within(worker, seconds=5)


def test_a_command_that_ends_by_itself_runs_to_its_end():
    lines = []
    finished = run_command([sys.executable, "-c", "print('one'); print('two')"], dict(os.environ),
                           on_line=lambda line: lines.append(line.strip()))
    assert finished and lines == ["one", "two"]


MICD_RUNNING_A_TRAINING = """
import os, sys
from nnunetv2_micd.commands import run_command
run_command([sys.executable, "-c", sys.argv[2]], dict(os.environ), sys.argv[1],
            on_line=lambda line: print(line, end="", flush=True))
"""


def _ignore_ctrl_c():
    """As a shell script starts ``micd ... &``: the background job and what it starts ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started_ignoring_ctrl_c", [False, True])
def test_a_terminated_micd_stops_its_command_as_ctrl_c_would(tmp_path, started_ignoring_ctrl_c):
    """``kill`` or a scheduler's stop ends micd: the training in its own process group must not train on unseen."""
    log_file = tmp_path / "train.log"
    micd = subprocess.Popen([sys.executable, "-c", MICD_RUNNING_A_TRAINING, str(log_file), TRAINING_WITH_A_WORKER],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=_ignore_ctrl_c if started_ignoring_ctrl_c else None)
    worker = int(micd.stdout.readline())
    micd.send_signal(signal.SIGTERM)
    micd.wait(timeout=30)
    assert log_file.read_text().split() == [str(worker), "interrupted"]  # the training heard it, as Ctrl-C
    assert _ends_within(worker, seconds=5)


def test_sigterm_keeps_its_default_outside_a_command():
    """The workers of a multiprocessing pool inherit micd's handlers, and the pool's exit ends them with SIGTERM: a
    handler left behind can make them swallow it, and the pool then waits for them for ever."""
    from nnunetv2_micd import cli
    before = signal.getsignal(signal.SIGTERM)
    cli.main(["trainer-path"])
    assert run_command([sys.executable, "-c", "pass"], dict(os.environ))
    assert signal.getsignal(signal.SIGTERM) is before
