"""``micd bench-step``: what one MICD training step costs, part by part, against one plain nnU-Net step.

One trainer after the other, each in a fresh process, on the same dataset, plans, configuration and batch size,
with warm-up and medians, so the ratios hold on a shared, noisy machine:

- the full MICD step and the nnUNetTrainerBudget step (and any other trainer's), on batches drawn beforehand (no
  data loading timed);
- every pass the method needs, timed alone however the step batches them (each student's forward+backward on the
  labeled+unlabeled patches and on their masked copies, the teacher forwards, gradient clipping with the
  optimizer step, the EMA updates) in the step's precision, so ``step / sum-of-parts`` measures overhead, not
  batching (on the CPU; a step compiled by nnU-Net on a GPU runs compiled passes, the parts do not);
- the time the step waits for batches from nnU-Net's augmentation workers, in a real loop;
- peak memory: CUDA peak allocated on a GPU, peak resident memory above the start of the step on the CPU.
"""
import itertools
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from nnunetv2_micd.benchmark.protocol import LABELED_ONLY_TRAINER
from nnunetv2_micd.benchmark.results import memory_measure
from nnunetv2_micd.errors import UsageError
from nnunetv2_micd.method.ema import ema_update_
from nnunetv2_micd.method.masking import apply_mask
from nnunetv2_micd.training.nnUNetTrainerMICD import nnUNetTrainerMICD
from nnunetv2_micd.training.nnUNetTrainerSemiSupervised import GRADIENT_CLIP_NORM

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(function: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> float:
    seconds = []
    for i in range(warmup + repeats):
        _synchronize(device)
        start = time.perf_counter()
        function()
        _synchronize(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


@contextmanager
def peak_memory(device: torch.device, result: Dict[str, float]):
    """Peak memory while the block runs: CUDA peak allocated, or resident memory sampled every 2 ms."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield
        result["bytes"] = torch.cuda.max_memory_allocated(device)
        return
    start, peak, running = _resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        running[0] = False
        sampler.join()
        result["bytes"] = max(peak[0], _resident_bytes()) - start


def _loss_of(output) -> torch.Tensor:
    outputs = output if isinstance(output, (list, tuple)) else [output]
    return sum(o.float().mean() for o in outputs)


def method_parts(trainer, data: torch.Tensor, unlabeled: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """The passes one MICD step needs (as the trainer decides them), each as a function that runs it alone, in the
    step's precision (on the students as written: a step compiled by nnU-Net runs them compiled)."""
    config = trainer.method_config
    students = trainer.dual_network.branches
    x = torch.cat((data, unlabeled))
    x_masked = apply_mask(x, trainer._block_mask(x))

    def forward_backward(student, inputs):
        def run():
            with trainer.mixed_precision():
                loss = _loss_of(student(inputs))
            loss.backward()
        return run

    def teacher_forward(teacher):
        def run():
            with torch.no_grad(), trainer.mixed_precision():
                teacher(unlabeled)
        return run

    def optimizer_step():
        for student in students:
            torch.nn.utils.clip_grad_norm_(student.parameters(), GRADIENT_CLIP_NORM)
        trainer.optimizer.step()

    def ema_updates():
        for teacher, student in zip(trainer.teachers, students):
            ema_update_(teacher, student, config.ema_decay)

    parts = {}
    for name, student in zip("AB", students):
        parts[f"student {name} forward+backward, labeled+unlabeled"] = forward_backward(student, x)
        if trainer.masks_inputs:
            parts[f"student {name} forward+backward, masked"] = forward_backward(student, x_masked)
    if trainer.teachers_predict:
        for name, teacher in zip("AB", trainer.teachers):
            parts[f"teacher {name} forward, unlabeled"] = teacher_forward(teacher)
    parts["gradient clipping + optimizer step"] = optimizer_step
    parts["EMA updates"] = ema_updates
    return parts


class _TimedIterator:
    """Wraps a batch source and adds up the time spent waiting for it."""

    def __init__(self, source):
        self.source, self.waited = source, 0.0

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.source)
        self.waited += time.perf_counter() - start
        return batch


def batch_wait_fraction(trainer, steps: int, warmup: int) -> float:
    """Share of a real training loop spent waiting for labeled and unlabeled batches."""
    labeled = _TimedIterator(trainer.dataloader_train)
    unlabeled = trainer.dataloader_unlabeled = _TimedIterator(trainer.dataloader_unlabeled)
    try:
        for _ in range(warmup):
            trainer.train_step(next(labeled))
        labeled.waited = unlabeled.waited = 0.0
        _synchronize(trainer.device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(labeled))
        _synchronize(trainer.device)
        return (labeled.waited + unlabeled.waited) / (time.perf_counter() - start)
    finally:
        trainer.dataloader_unlabeled = unlabeled.source


@contextmanager
def _environment(**variables: str):
    """Environment variables for the processes started inside (a spawned worker reads them when it starts)."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def _trainer(name: str, dataset: str, configuration: str, plans: str, batch_size: Optional[int], fold: str,
             device: torch.device):
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(dataset, configuration, fold, name, plans, device=device)
    if batch_size is not None:
        trainer.configuration_manager.configuration["batch_size"] = batch_size
    trainer.disable_checkpointing = True
    trainer.on_train_start()
    return trainer


def _time_steps(trainer, batches: List[dict], steps: int, warmup: int, device: torch.device) -> Dict[str, float]:
    """Median seconds of ``train_step`` on pre-drawn batches (unlabeled ones drawn beforehand too) and the peak
    memory meanwhile."""
    loader_unlabeled = getattr(trainer, "dataloader_unlabeled", None)
    if loader_unlabeled is not None:
        unlabeled = [{"data": next(loader_unlabeled)["data"]} for _ in range(warmup + steps)]
        trainer.dataloader_unlabeled = itertools.cycle(unlabeled)
    replay = itertools.cycle(batches)
    memory: Dict[str, float] = {}
    try:
        with peak_memory(device, memory):
            seconds = median_seconds(lambda: trainer.train_step(next(replay)), steps, warmup, device)
    finally:
        if loader_unlabeled is not None:
            trainer.dataloader_unlabeled = loader_unlabeled
    return {"seconds_per_step": seconds, "peak_memory_mib": memory["bytes"] / 2 ** 20}


@dataclass(frozen=True)
class BenchSettings:
    dataset: str
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    batch_size: Optional[int] = None
    steps: int = 10
    warmup: int = 2
    fold: str = "all"


def measure_trainer(name: str, settings: BenchSettings, analyse: bool) -> Dict:
    """One trainer's step time and memory on pre-drawn batches; with ``analyse`` also the method's parts and the
    time a real loop waits for batches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps, warmup = settings.steps, settings.warmup
    trainer = _trainer(name, settings.dataset, settings.configuration, settings.plans, settings.batch_size,
                       settings.fold, device)
    try:
        if analyse and not isinstance(trainer, nnUNetTrainerMICD):
            raise UsageError(f"the parts of a step are those of a MICD trainer; measure {name} with --compare")
        batches = [next(trainer.dataloader_train) for _ in range(warmup + steps)]
        result = {**_time_steps(trainer, batches, steps, warmup, device), "batch_size": trainer.batch_size}
        if analyse:
            unlabeled = next(trainer.dataloader_unlabeled)["data"]
            result["unlabeled_batch_size"] = unlabeled.shape[0]
            parts = method_parts(trainer, batches[0]["data"].to(device), unlabeled.to(device))
            result["parts"] = {part: median_seconds(run, steps, warmup, device) for part, run in parts.items()}
            result["batch_wait"] = batch_wait_fraction(trainer, steps, warmup)
        return result
    finally:
        trainer.on_train_end()


def bench_step(settings: BenchSettings, trainer_name: str = "nnUNetTrainerMICD", compare: Sequence[str] = ()) -> Dict:
    """Everything above for ``trainer_name``, and the step time and memory of the baseline and of every trainer in
    ``compare``. Each trainer runs in a fresh process, one after the other, so that its peak memory is its own."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: Dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else f"cpu ({torch.get_num_threads()} threads)", "trainers": {}}
    names = [LABELED_ONLY_TRAINER, trainer_name] + [c for c in compare if c not in (LABELED_ONLY_TRAINER, trainer_name)]
    for name in names:
        # nnU-Net's on_train_end removes checkpoint_latest.pth from the trainer's output folder: a scratch
        # nnUNet_results keeps that of a real training with the same dataset, plans and fold
        with tempfile.TemporaryDirectory() as scratch, _environment(nnUNet_results=scratch), \
                ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            measured = pool.submit(measure_trainer, name, settings, name == trainer_name).result()
        if name == trainer_name:
            for key in ("parts", "batch_wait", "unlabeled_batch_size"):
                results[key] = measured.pop(key)
        results["batch_size"] = measured.pop("batch_size")
        results["trainers"][name] = measured
    results["sum_of_parts"] = sum(results["parts"].values())
    return results


def format_results(results: Dict, trainer_name: str = "nnUNetTrainerMICD") -> List[str]:
    memory_name = memory_measure(results["device"])
    costs = results["trainers"]
    baseline, method = costs[LABELED_ONLY_TRAINER], costs[trainer_name]
    lines = [f"device: {results['device']}, batch size {results['batch_size']} labeled + "
             f"{results['unlabeled_batch_size']} unlabeled",
             f"{LABELED_ONLY_TRAINER} step: {baseline['seconds_per_step']:.3f} s",
             f"{trainer_name} step: {method['seconds_per_step']:.3f} s"]
    lines += [f"  {name}: {seconds:.3f} s" for name, seconds in results["parts"].items()]
    lines += [f"  sum of parts: {results['sum_of_parts']:.3f} s",
              f"step / sum-of-parts: {method['seconds_per_step'] / results['sum_of_parts']:.2f}",
              f"step / baseline: {method['seconds_per_step'] / baseline['seconds_per_step']:.2f}",
              f"batch wait: {100 * results['batch_wait']:.1f} % of step time",
              f"memory ({memory_name}): {method['peak_memory_mib']:.0f} MiB, baseline "
              f"{baseline['peak_memory_mib']:.0f} MiB, "
              f"memory / baseline: {method['peak_memory_mib'] / max(baseline['peak_memory_mib'], 1e-6):.2f}"]
    for name, cost in costs.items():
        if name not in (trainer_name, LABELED_ONLY_TRAINER):
            lines.append(f"{name} step: {cost['seconds_per_step']:.3f} s, step / baseline: "
                         f"{cost['seconds_per_step'] / baseline['seconds_per_step']:.2f}, memory {memory_name}: "
                         f"{cost['peak_memory_mib']:.0f} MiB")
    return lines
