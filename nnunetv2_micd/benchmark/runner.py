"""``micd benchmark``: every method through the same nnU-Net pipeline, resumable, with progress.

Everything happens in one work folder (:mod:`~nnunetv2_micd.benchmark.work_folder`), through nnU-Net's and micd's
own commands. The runner orders the parts: the datasets (:mod:`~nnunetv2_micd.benchmark.datasets`), the checks of
what results.json already records (:mod:`~nnunetv2_micd.benchmark.records`), the cost measurement
(:mod:`~nnunetv2_micd.benchmark.cost`), the runs (:mod:`~nnunetv2_micd.benchmark.execution`) and the status
(:mod:`~nnunetv2_micd.benchmark.progress`).

A run is finished once it is in results.json. Otherwise it continues where it stopped: training from
``checkpoint_latest.pth`` (``nnUNetv2_train --c``), prediction and evaluation from scratch. With a time limit the
benchmark runs in pieces: it stops training at an epoch's start when the epoch would end after the limit (the
checkpoint of the epoch before was just written) and starts no run after it; the same command continues.
"""
import time
from typing import List, Optional

import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, maybe_mkdir_p

from nnunetv2_micd.benchmark import records
from nnunetv2_micd.benchmark.cost import cost_labeled, cost_to_measure, measure_cost
from nnunetv2_micd.benchmark.datasets import DatasetMaker
from nnunetv2_micd.benchmark.execution import RunExecutor
from nnunetv2_micd.benchmark.lock import WorkFolderLock, running_benchmark
from nnunetv2_micd.benchmark.progress import estimated_seconds_left, status_lines
from nnunetv2_micd.benchmark.protocol import Protocol, ProtocolError, RunSpec
from nnunetv2_micd.benchmark.results import empty_results, load_results, save_results
from nnunetv2_micd.benchmark.shell import BenchmarkShell, format_duration
from nnunetv2_micd.benchmark.work_folder import WorkFolder


class BenchmarkRunner:
    def __init__(self, protocol: Protocol, work_folder: str, device: Optional[str] = None,
                 time_limit: Optional[float] = None):
        self.protocol = protocol
        self.folder = WorkFolder(protocol, work_folder)
        self.shell = BenchmarkShell(self.folder)
        self.datasets = DatasetMaker(self.folder, self.shell)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        deadline = None if time_limit is None else self.shell.started + time_limit
        self.executor = RunExecutor(self.shell, self.device, deadline)
        self.stopped_at_time_limit = False

    def select(self, only: Optional[List[str]]) -> List[RunSpec]:
        """The protocol's runs, or with ``only`` just those of the named methods (trainer names, or
        trainer__tag) and runs (e.g. nnUNetTrainerBudget__labeled14__seed0)."""
        runs = self.protocol.runs
        if not only:
            return runs
        unknown = sorted(set(only) - {name for run in runs for name in (run.method, run.trainer, run.name)})
        if unknown:
            methods = sorted({run.method for run in runs} | {run.trainer for run in runs})
            raise ProtocolError(f"--only {unknown}: the protocol's methods are {methods}, its runs "
                                f"{[run.name for run in runs]}")
        return [run for run in runs if {run.method, run.trainer, run.name} & set(only)]

    def recorded_results(self) -> Optional[dict]:
        """results.json, checked against the protocol (whose present settings it then records); None before the
        first run."""
        if not isfile(self.folder.results_file):
            return None
        results = load_results(self.folder.results_file)
        records.refuse_other_protocol(results, self.protocol, self.folder.results_file)
        return results

    def prepare(self, runs: List[RunSpec]) -> dict:
        """The source dataset and the semi-supervised datasets of ``runs``; those still to be trained on (and the
        cost measurement's) planned with one plans file and preprocessed. So ``--only`` makes no dataset its runs
        do not use, and finished runs carried to a new work folder cost no preprocessing. Returns the results,
        saved."""
        for folder in (self.folder.raw, self.folder.preprocessed):
            maybe_mkdir_p(folder)
        self.datasets.import_source()
        results = self.recorded_results() or empty_results(self.protocol.values, self.folder.labels())
        cost = {cost_labeled(self.protocol)} if cost_to_measure(results, self.protocol) else set()
        for labeled in self._in_protocol_order({run.labeled for run in runs} | cost):
            self.datasets.make_dataset(labeled)
        # before any preprocessing: datasets or results that do not belong here are refused in seconds
        self.datasets.check_nested_splits()
        records.check_recorded_held_out_cases(results, self.folder)
        save_results(results, self.folder.results_file)
        to_preprocess = self._in_protocol_order(
            {run.labeled for run in runs if records.to_train(results, self.protocol, run)} | cost)
        if to_preprocess:
            self.datasets.plan_source()
        for labeled in to_preprocess:
            self.datasets.preprocess_dataset(labeled)
        return results

    def _in_protocol_order(self, labeled_counts) -> List:
        return [labeled for labeled in self.protocol.labeled_counts if labeled in labeled_counts]

    def run_all(self, only: Optional[List[str]] = None) -> dict:
        """Every run of the protocol that is not finished; with ``only``, just the runs of those methods."""
        selected = self.select(only)
        say = self.shell.say
        maybe_mkdir_p(self.folder.path)
        with WorkFolderLock(self.folder.path) as lock:
            results = self.prepare(selected)
            if cost_to_measure(results, self.protocol):
                measure_cost(results, self.shell)
            records.supersede_stale_runs(results, self.folder, say)
            self.executor.add_missing_student_a(results, selected)
            self.executor.add_missing_literature(results, selected)
            runs = self.protocol.runs
            done = [run for run in runs if run.name in results["runs"]]
            own_budgets = " (but the runs with their own budget)" if any(self.protocol.tagged_budgets.values()) else ""
            say(f"protocol {self.protocol.name}: {len(runs)} runs, {len(done)} already finished, "
                f"{self.protocol.total_steps} steps each{own_budgets}, on {self.device}; work folder "
                f"{self.folder.path}")
            if only:
                say(f"running only the runs of {', '.join(only)}")
            for number, run in enumerate(runs, start=1):
                if run.name in results["runs"] or run not in selected:
                    continue
                deadline = self.executor.deadline
                if deadline is not None and time.time() >= deadline:
                    self.stopped_at_time_limit = True
                    break
                unfinished = [r for r in runs if r.name not in results["runs"]]
                say(f"run {number}/{len(runs)}: {run.describe()} (protocol time left: "
                    f"{format_duration(estimated_seconds_left(results, self.folder, unfinished))})")
                lock.working_on(run.name)
                entry = self.executor.run_one(run, lock)
                if entry is None:
                    self.stopped_at_time_limit = True
                    break
                results["runs"][run.name] = entry
                save_results(results, self.folder.results_file)
                say(f"run {number}/{len(runs)} finished: mean {self.protocol.held_out} Dice "
                    f"{entry['mean_dice']:.4f} ({format_duration(entry['train_seconds'])} training)")
            left = [run for run in runs if run.name not in results["runs"]]
            why_left = "the time limit was reached: the same command continues" if self.stopped_at_time_limit \
                else "not selected"
            say(f"{len(runs) - len(left)} of {len(runs)} runs finished; results in {self.folder.results_file}"
                + (f"; {len(left)} left ({why_left})" if left else ""))
            return results

    def status(self) -> List[str]:
        """What :meth:`run_all` would do now, without doing any of it: the state of every run and the time left."""
        results = self.recorded_results() or {"runs": {}}
        return status_lines(results, self.folder, running_benchmark(self.folder.path))
