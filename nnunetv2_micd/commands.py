"""Running nnU-Net's commands as a user would, with their output kept and their failures explained."""
import contextlib
import os
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

    ``on_line`` returns True to stop the command as Ctrl-C would (see :func:`_interrupt`). Returns False when the
    command was stopped so, True when it ran to its end."""
    recent = deque(maxlen=40)
    log = open(log_file, "a") if log_file is not None else None
    stopping = None

    def read(output):
        nonlocal stopping
        for line in output:
            recent.append(line)
            if log is not None:
                log.write(line)
                log.flush()
            if on_line is not None and stopping is None and on_line(line):
                stopping = _interrupt(process)

    try:
        with _sigterm_as_ctrl_c(), subprocess.Popen(
                command, env={**environment, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, pass_fds=pass_fds, cwd=cwd, process_group=0) as process:
            try:
                read(process.stdout)
            except KeyboardInterrupt:
                # the command's own process group hears neither the terminal's Ctrl-C nor a SIGTERM sent to micd:
                # stop it as Ctrl-C would, keep its last lines, then leave
                stopping = stopping or _interrupt(process)
                read(process.stdout)
                stopping.join()
                raise
    finally:
        if log is not None:
            log.close()
    if stopping is not None:
        stopping.join()
        return False
    if process.returncode != 0:
        sys.stdout.writelines(recent)
        where = f" (full output: {log_file})" if log_file is not None else ""
        raise CommandFailed(f"{' '.join(command)} failed with exit code {process.returncode}{where}")
    return True


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """While micd waits for a command, a SIGTERM (``kill``, a scheduler's stop) raises KeyboardInterrupt as Ctrl-C
    does, so that :func:`run_command` stops the command before micd ends: nnUNetv2_train, in a process group of its
    own, would otherwise train on unseen. Only then: the workers of a multiprocessing pool, forked by micd at other
    times, must keep SIGTERM's default, since the pool ends them with it.

    Ctrl-C itself is heard too, even where micd was started ignoring it (a shell script's ``micd ... &``): a command
    started meanwhile inherits its default, so that it stops at :func:`_interrupt`'s Ctrl-C instead of being killed
    a minute later, maybe while writing its checkpoint."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(process: subprocess.Popen) -> threading.Thread:
    """Ctrl-C for the command alone: an interrupted nnUNetv2_train keeps its last checkpoint. Once it has ended, or a
    minute later, everything left in its process group is killed: nnU-Net's data augmentation workers can
    outlive an interrupted training and would hold its output open for ever."""
    process.send_signal(signal.SIGINT)

    def end_process_group():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    ending = threading.Thread(target=end_process_group, daemon=True)
    ending.start()
    return ending
