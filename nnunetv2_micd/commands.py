"""Running nnU-Net's commands as a user would, with their output kept and their failures explained."""
import signal
import subprocess
import sys
import threading
from collections import deque
from typing import Callable, Dict, List, Optional, Sequence

from nnunetv2_micd.errors import MicdError


class CommandFailed(MicdError, RuntimeError):
    """One of nnU-Net's commands exited with an error; its output says why."""


def micd_command(*args) -> List[str]:
    """``micd ARGS`` with this interpreter, so that it needs no ``micd`` on PATH. Run it outside a checkout of this
    project: ``python -m`` looks in the working directory first and would take the checkout's package instead of
    the installed one."""
    return [sys.executable, "-m", "nnunetv2_micd.cli", *map(str, args)]


def prediction_workers(device: str) -> List[str]:
    """nnUNetv2_predict's worker arguments on ``device``. On the CPU, workers would share the network's cores and
    each spends seconds importing nnU-Net first, so prediction runs in one process (nnU-Net's sequential mode);
    beside a GPU, one worker preprocesses the next case while another exports the last."""
    return ["-npp", "0", "-nps", "0"] if device == "cpu" else ["-npp", "1", "-nps", "1"]


def run_command(command: List[str], environment: Dict[str, str], log_file: Optional[str] = None,
                on_line: Optional[Callable[[str], Optional[bool]]] = None, pass_fds: Sequence[int] = (),
                cwd: Optional[str] = None) -> bool:
    """Runs ``command`` (in ``cwd`` if given), passing every output line to ``on_line`` and appending it to
    ``log_file``; ``pass_fds`` stay open in the command. On failure the last lines are printed and
    :class:`CommandFailed` names the command.

    ``on_line`` returns True to stop the command as Ctrl-C would (an interrupted nnUNetv2_train keeps its last
    checkpoint; its data augmentation workers end with it); the command is killed if it has not ended a minute
    later. Returns False when the command was stopped so, True when it ran to its end."""
    recent = deque(maxlen=40)
    log = open(log_file, "a") if log_file is not None else None
    killer = threading.Timer(60, lambda: process.kill())
    killer.daemon = True
    try:
        with subprocess.Popen(command, env={**environment, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, pass_fds=pass_fds, cwd=cwd) as process:
            for line in process.stdout:
                recent.append(line)
                if log is not None:
                    log.write(line)
                    log.flush()
                if on_line is not None and killer.ident is None and on_line(line):
                    process.send_signal(signal.SIGINT)
                    killer.start()
    finally:
        killer.cancel()
        if log is not None:
            log.close()
    if killer.ident is not None:  # stopped on request
        return False
    if process.returncode != 0:
        sys.stdout.writelines(recent)
        where = f" (full output: {log_file})" if log_file is not None else ""
        raise CommandFailed(f"{' '.join(command)} failed with exit code {process.returncode}{where}")
    return True
