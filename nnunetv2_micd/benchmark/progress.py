"""Where a benchmark stands: the state of every run, and the time its unfinished runs will take."""
from typing import Dict, List, Optional

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join

from nnunetv2_micd.benchmark.protocol import RunSpec
from nnunetv2_micd.benchmark.records import changed_method_config
from nnunetv2_micd.benchmark.shell import format_duration
from nnunetv2_micd.benchmark.work_folder import WorkFolder


def _median_epoch_seconds(entry: dict) -> Optional[float]:
    """From nnU-Net's epoch times recorded with a finished run: the median leaves out epochs stretched by a machine
    that was paused or asleep, which the run's wall time keeps."""
    seconds = entry["curves"].get("epoch_seconds")
    return float(np.median(seconds)) if seconds else None


def estimated_seconds_left(results: dict, folder: WorkFolder, unfinished: List[RunSpec]) -> Optional[float]:
    """For the ``unfinished`` runs: from the finished runs of each trainer (their median epoch time, else their wall
    time; the median over the runs, so that one run on a slowed host does not stretch the others); before a trainer
    has finished once, from its measured seconds per step (training steps only, so an underestimate); unknown for a
    trainer with neither. An interrupted run counts only its epochs still to train; a finished one (trained under
    other defaults) is trained again from the start."""
    protocol = folder.protocol
    finished: Dict[str, List[float]] = {}
    for entry in results["runs"].values():
        # per step, so that a run with its own budget (another number of steps) tells the others' time too
        epoch_seconds = _median_epoch_seconds(entry)
        training = entry["train_seconds"] if epoch_seconds is None else \
            epoch_seconds * len(entry["curves"]["epoch_seconds"])
        finished.setdefault(entry["trainer"], []).append((training + entry["predict_seconds"]) / entry["steps"])
    measured = results.get("cost", {}).get("trainers", {})
    seconds = 0.0
    for run in unfinished:
        if run.trainer in finished:
            whole_run = float(np.median(finished[run.trainer])) * protocol.run_steps(run)
        elif run.trainer in measured:
            whole_run = measured[run.trainer]["seconds_per_step"] * protocol.run_steps(run)
        else:
            return None
        trained = 0 if run.name in results["runs"] else (folder.epochs_started(run) or 0)
        seconds += whole_run * (1 - trained / protocol.run_budget(run)["num_epochs"])
    return seconds


def status_lines(results: dict, folder: WorkFolder, running: Optional[dict]) -> List[str]:
    """Every run's state and the time left, for ``results`` as recorded and the benchmark ``running`` in the
    folder (see :func:`running_benchmark`), if any."""
    protocol = folder.protocol
    runs = protocol.runs
    lines, to_do = [f"protocol {protocol.name}, work folder {folder.path}: "
                    + (f"a benchmark is running here (process {running['pid'] or '?'})" if running else
                       "no benchmark is running here")], []
    for number, run in enumerate(runs, start=1):
        entry = results["runs"].get(run.name)
        changed = changed_method_config(results, protocol, run) if entry is not None else None
        started = folder.epochs_started(run) if entry is None else None
        in_progress = running is not None and running["run"] == run.name
        if entry is not None and changed is None:
            state = f"finished, mean {protocol.held_out} Dice {entry['mean_dice']:.4f}"
        elif entry is not None:
            state = f"finished under other method settings ({changed}): will be trained again"
        elif isdir(folder.run_folder(run)) and isfile(folder.final_checkpoint(run)):
            state = "trained; " + ("predicting" if in_progress else "prediction and evaluation to do")
        elif started is not None:
            state = f"training reached epoch {started + 1}/{protocol.run_budget(run)['num_epochs']}" + (
                ", running" if in_progress else ", interrupted: a restart continues there")
        elif in_progress:
            state = "starting"
        else:
            state = "not started"
        if entry is None or changed is not None:
            to_do.append(run)
        lines.append(f"run {number}/{len(runs)}: {run.describe()}: {state}")
    left = estimated_seconds_left(results, folder, to_do)
    lines.append(f"{len(runs) - len(to_do)} of {len(runs)} runs finished; time left "
                 + ("unknown" if left is None else f"about {format_duration(left)}")
                 + (f"; {len(results['superseded'])} superseded run(s) kept in {join(folder.path, 'superseded')}"
                    if results.get("superseded") else ""))
    return lines
