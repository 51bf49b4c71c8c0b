"""The benchmark's results file: one JSON file that holds every finished run, and nothing else is needed to report.

Schema (version 1)::

    {
      "schema_version": 1,
      "protocol": {...},                    # the protocol file's content the runs were made with
      "labels": {"1": "Anterior", ...},     # foreground label value -> class name (from dataset.json)
      "cost": {                             # optional: every trainer measured in a fresh process
        "device": "cpu (2 threads)", "steps": 10,
        "trainers": {"nnUNetTrainerMICD": {"seconds_per_step": 2.1, "peak_memory_mib": 850.0}, ...}
      },
      "runs": {
        "<method>__labeled<n>__seed<s>": {
          "trainer": str, "labeled": int | "all", "seed": int,
          "method": str,                      # optional: the trainer, with the tag of a group's own configuration
          "num_labeled": int, "num_unlabeled": int, "num_test": int, "dataset": str,
          "steps": int, "train_seconds": float, "predict_seconds": float,
          "dice": {"<label value>": float},  # mean test Dice per foreground class (nnU-Net's summary.json)
          "mean_dice": float,                 # nnU-Net's foreground mean
          "case_mean_dice": {"<case>": float | null},  # mean over classes; null: no class in either image
          "literature": {"mean": {"<label value>": {"Dice": ..., "Jaccard": ..., "HD95": ..., "ASD": ...}},
                         "foreground_mean": {...}, "distance_unit": str},  # optional: micd evaluate's metrics
          "curves": {"train_losses": [...], "val_losses": [...], "ema_fg_dice": [...],
                     "epoch_seconds": [...]},  # optional: nnU-Net's time per epoch, for the protocol's time left
          "method_config": {...},             # micd_config.json of the run
          "code_version": str, "finished": "ISO time",
          "student_a": {"dice": ..., "mean_dice": ..., "case_mean_dice": ...}  # only two-student trainers: the
                                              # same fields for student A alone (nnU-Net's planned network)
        }
      }
    }

Optional ``"superseded"`` holds, in the same form and keyed ``<run name>__<finish time>``, finished runs whose
trainer's method configuration changed afterwards (its defaults); they are kept, trained again, and not reported.

A run is in ``runs`` only once it was trained, predicted and evaluated, which is how a resumed benchmark knows
what is done. The file is replaced atomically.
"""
import json
import os
from typing import Dict, List

from nnunetv2_micd.errors import MicdError

SCHEMA_VERSION = 1
DICE_FIELDS = {"dice": dict, "mean_dice": (int, float), "case_mean_dice": dict}
RUN_FIELDS = {
    "trainer": str, "labeled": (int, str), "seed": int, "num_labeled": int, "num_unlabeled": int, "num_test": int,
    "dataset": str, "steps": int, "train_seconds": (int, float), "predict_seconds": (int, float), **DICE_FIELDS,
    "curves": dict, "method_config": dict, "code_version": str, "finished": str,
}
CURVE_KEYS = ("train_losses", "val_losses", "ema_fg_dice")


def memory_measure(device: str) -> str:
    """What ``peak_memory_mib`` of a cost measurement on ``device`` is (see ``micd bench-step``)."""
    return "peak RSS above start" if device.startswith("cpu") else "CUDA peak allocated"


class ResultsError(MicdError, ValueError):
    """A results file that does not follow the schema."""


def empty_results(protocol_values: dict, labels: Dict[str, str]) -> dict:
    return {"schema_version": SCHEMA_VERSION, "protocol": protocol_values, "labels": labels, "runs": {}}


def schema_problems(results: dict) -> List[str]:
    """Everything in ``results`` that breaks the schema above (empty when it is valid)."""
    if not isinstance(results, dict):
        return ["the results must be a JSON object"]
    problems = [f"missing key {k!r}" for k in ("schema_version", "protocol", "labels", "runs") if k not in results]
    if problems:
        return problems
    if results["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {results['schema_version']!r} is not {SCHEMA_VERSION}")
    labels = results["labels"]
    if not (isinstance(labels, dict) and labels and all(isinstance(v, str) for v in labels.values())):
        problems.append("labels must map label values to class names")
    if "cost" in results:
        problems += _cost_problems(results["cost"])
    for key in ("runs", "superseded"):
        for name, run in results.get(key, {}).items():
            problems += [f"{key}[{name!r}]: {p}" for p in _run_problems(run, labels)]
    return problems


def _cost_problems(cost) -> List[str]:
    if not (isinstance(cost, dict) and isinstance(cost.get("trainers"), dict) and {"device", "steps"} <= set(cost)):
        return ["cost must hold 'device', 'steps' and 'trainers'"]
    return [f"cost of {trainer} must give seconds_per_step and peak_memory_mib"
            for trainer, values in cost["trainers"].items()
            if not (isinstance(values, dict) and {"seconds_per_step", "peak_memory_mib"} <= set(values))]


def _run_problems(run, labels: dict) -> List[str]:
    if not isinstance(run, dict):
        return ["a run must be a JSON object"]
    problems = [f"{key} missing" for key in RUN_FIELDS if key not in run]
    problems += [f"{key} must be {kind}" for key, kind in RUN_FIELDS.items()
                 if key in run and not isinstance(run[key], kind)]
    if problems:
        return problems
    problems += _dice_problems(run, labels, run["num_test"])
    if "student_a" in run:
        problems += [f"student_a: {p}" for p in _dice_problems(run["student_a"], labels, run["num_test"])]
    if "literature" in run and not (isinstance(run["literature"], dict)
                                    and set(run["literature"].get("mean", {})) == set(labels)):
        problems.append(f"literature must give the literature's metrics of every class {sorted(labels)}")
    problems += [f"curves.{key} missing" for key in CURVE_KEYS if key not in run["curves"]]
    epoch_seconds = run["curves"].get("epoch_seconds", [])
    if not (isinstance(epoch_seconds, list) and all(isinstance(v, (int, float)) and v >= 0 for v in epoch_seconds)):
        problems.append("curves.epoch_seconds must be a list of seconds")
    return problems


def _dice_problems(values: dict, labels: dict, num_test: int) -> List[str]:
    if not isinstance(values, dict):
        return ["must be a JSON object"]
    problems = [f"{key} must be {kind}" for key, kind in DICE_FIELDS.items() if not isinstance(values.get(key), kind)]
    if problems:
        return problems
    if set(values["dice"]) != set(labels):
        problems.append(f"dice must give every class {sorted(labels)}, got {sorted(values['dice'])}")
    numbers = [*values["dice"].values(), values["mean_dice"],
               *(v for v in values["case_mean_dice"].values() if v is not None)]
    if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in numbers):
        problems.append("Dice values must be numbers in [0, 1]")
    if len(values["case_mean_dice"]) != num_test:
        problems.append(f"case_mean_dice has {len(values['case_mean_dice'])} cases, num_test is {num_test}")
    return problems


def validate(results: dict, where: str = "results") -> dict:
    problems = schema_problems(results)
    if problems:
        raise ResultsError(f"{where} does not follow the results schema: " + "; ".join(problems))
    return results


def load_results(path: str) -> dict:
    with open(path) as f:
        return validate(json.load(f), path)


def save_results(results: dict, path: str) -> None:
    """Validated, then written to a temporary file and renamed: an interruption never leaves half a file."""
    validate(results, path)
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(temporary, path)
