"""The cost the benchmark records beside its runs: every trainer's seconds per step and peak memory, measured one
right after the other (``micd bench-step``), since ratios hold only within one measurement on a noisy machine."""
from typing import List

from batchgenerators.utilities.file_and_folder_operations import join, load_json

from nnunetv2_micd.benchmark.protocol import ALL_LABELED, Protocol
from nnunetv2_micd.benchmark.results import save_results
from nnunetv2_micd.benchmark.shell import BenchmarkShell
from nnunetv2_micd.method.config import TrainingBudget


def protocol_trainers(protocol: Protocol) -> List[str]:
    return sorted({run.trainer for run in protocol.runs})


def cost_to_measure(results: dict, protocol: Protocol) -> bool:
    """Whether a trainer of the protocol has no measured cost (all of them, before the first run, or one added to
    the protocol since): then every trainer is measured again."""
    measured = results.get("cost", {}).get("trainers", {})
    return not set(protocol_trainers(protocol)) <= set(measured)


def cost_labeled(protocol: Protocol):
    """The labeled count whose dataset the cost is measured on: the smallest, which has unlabeled cases."""
    return next(c for c in protocol.labeled_counts if c != ALL_LABELED)


def measure_cost(results: dict, shell: BenchmarkShell) -> None:
    folder, protocol = shell.folder, shell.folder.protocol
    trainers = protocol_trainers(protocol)
    shell.say(f"measuring seconds per step and memory of {', '.join(trainers)} ({protocol.cost_steps} steps each)")
    output = join(folder.path, "cost.json")
    shell.micd("bench-step", "-d", protocol.dataset_id(cost_labeled(protocol)), "-c", protocol.configuration,
               "-p", protocol.plans_name, "--steps", protocol.cost_steps, "--compare", *trainers, "--json", output,
               environment={**shell.environment, TrainingBudget.ENVIRONMENT["seed"]: "0"},
               log_file=join(folder.path, "cost.log"))
    measured = load_json(output)
    results["cost"] = {"device": measured["device"], "steps": protocol.cost_steps,
                       "trainers": {name: measured["trainers"][name] for name in trainers}}
    save_results(results, folder.results_file)
