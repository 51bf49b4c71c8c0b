"""The commands a benchmark runs, nnU-Net's and micd's, with its work folder's nnU-Net paths; and its progress lines."""
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

from nnunetv2_micd.benchmark.work_folder import WorkFolder
from nnunetv2_micd.commands import micd_command, run_command
from nnunetv2_micd.method.config import TrainingBudget
from nnunetv2_micd.paths import trainer_path


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class BenchmarkShell:
    def __init__(self, folder: WorkFolder):
        self.folder = folder
        self.started = time.time()
        self.environment = {**os.environ, "nnUNet_raw": folder.raw, "nnUNet_preprocessed": folder.preprocessed,
                            "nnUNet_results": os.path.join(folder.path, "unused_results"),
                            "nnUNet_extTrainer": trainer_path()}
        self.environment.setdefault("nnUNet_def_n_proc", str(os.cpu_count() or 1))
        for variable in ("MICD_CONFIG", *TrainingBudget.ENVIRONMENT.values()):
            self.environment.pop(variable, None)  # the protocol alone decides

    @property
    def processes(self) -> str:
        """Worker processes for conversion, planning, preprocessing and evaluation."""
        return self.environment["nnUNet_def_n_proc"]

    def say(self, message: str) -> None:
        print(f"[micd benchmark {format_duration(time.time() - self.started)}] {message}", flush=True)

    def run(self, command: List[str], environment: Optional[Dict[str, str]] = None, log_file: Optional[str] = None,
            on_line: Optional[Callable[[str], Optional[bool]]] = None, pass_fds: Sequence[int] = ()) -> bool:
        """One of nnU-Net's commands (see :func:`run_command`)."""
        return run_command(command, environment or self.environment, log_file, on_line, pass_fds)

    def micd(self, *args, environment: Optional[Dict[str, str]] = None, log_file: Optional[str] = None) -> None:
        """Runs ``micd ARGS`` in the work folder, never in a checkout of this project that the user may stand in
        (see :func:`micd_command`)."""
        run_command(micd_command(*args), environment or self.environment, log_file, cwd=self.folder.path)
