"""A benchmark protocol: what to compare, on which data, at which budget, in a small versioned JSON file.

Example (the built-in protocols in ``nnunetv2_micd/benchmark/protocols/`` are complete ones)::

    {
      "protocol_version": 1,
      "name": "hippocampus_cpu",
      "source": {"msd_task_folder": "../shared/data/Task04_Hippocampus"},
      "source_dataset_id": 4,
      "first_dataset_id": 610,
      "test_cases": 40,
      "split_seed": 0,
      "configuration": "3d_fullres",
      "tiny_plans": {"features": [8, 16, 32, 64], "batch_size": 2},
      "budget": {"num_epochs": 40, "iterations_per_epoch": 100, "val_iterations": 5},
      "method_configs": {"nnUNetTrainerMICD": {"lambda_max": 0.1}},
      "cost_steps": 10,
      "runs": [
        {"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]},
        {"trainers": ["nnUNetTrainerBudget"], "labeled": ["all"], "seeds": [0]}
      ]
    }

A group may carry its own ``method_config`` (updating the protocol's ``method_configs`` for its trainers) and/or
``budget`` (updating the protocol's) with a ``tag`` that names it; the tag becomes part of the run's name, so one
protocol can compare configurations of one trainer (e.g. when choosing hyper-parameters on a validation split), or
a trainer at another number of steps (labeled-only training for as long as a two-network method takes).

``source`` is an MSD task folder (converted with ``nnUNetv2_convert_MSD_dataset``), an nnU-Net raw dataset folder
(``{"nnunet_raw_folder": ...}``, whose training cases are copied) or ACDC as the semi-supervised literature
distributes it (``{"acdc_folder": ...}``, imported with ``micd convert-acdc``); relative paths are taken from the
current directory.
Every labeled count gets its own dataset (``first_dataset_id`` upwards, in increasing order, ``"all"`` last: every
non-test case labeled, the fully supervised upper bound), all made from one seeded split so that labeled sets are
nested and the test cases are the same. ``labeled_lists`` names, for a labeled count, a file of the imported source
dataset that lists its labeled cases instead (``{"6": "labeled_3_patients.txt"}``: the literature's patients).
Runs are expanded group by group (seeds, then labeled counts, then trainers) and executed in that order, so the runs
that give evidence early go first. ``test_cases`` is the number of held-out cases, ``"source"`` for the source's
own held-out split (ACDC's validation patients), or a file of the imported source that lists the training cases to
hold out instead (``"tuning_patients.txt"``: the source's own held-out cases are then left out altogether);
``"held_out": "validation"`` names them so in logs and reports of a protocol that chooses hyper-parameters (default
``"test"``).
"""
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

from nnunetv2_micd.errors import MicdError, MissingInputError
from nnunetv2_micd.experiment_planning.tiny_plans import TINY_PLANS

PROTOCOL_VERSION = 1
ALL_LABELED = "all"
BUILTIN_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocols")
SOURCE_KINDS = ("msd_task_folder", "nnunet_raw_folder", "acdc_folder")
#: ``test_cases`` value that keeps the source's own held-out split (imagesTs/labelsTs) as every dataset's test split
SOURCE_HELD_OUT = "source"
LABELED_ONLY_TRAINER = "nnUNetTrainerBudget"  # the only trainer of the harness that needs no unlabeled cases
BUDGET_KEYS = ("num_epochs", "iterations_per_epoch", "val_iterations")
TAGGED_KEYS = ("method_config", "budget")  # what a tagged group may set for its own runs
REQUIRED_KEYS = ("protocol_version", "name", "source", "source_dataset_id", "first_dataset_id", "test_cases",
                 "split_seed", "configuration", "budget", "runs")
OPTIONAL_KEYS = ("tiny_plans", "method_configs", "cost_steps", "description", "held_out", "labeled_lists")
HELD_OUT_NAMES = ("test", "validation")

TAG_PATTERN = re.compile(r"[A-Za-z0-9.-]+")

Labeled = Union[int, str]


class ProtocolError(MicdError, ValueError):
    """A protocol file that cannot be run."""


@dataclass(frozen=True)
class RunSpec:
    trainer: str
    labeled: Labeled
    seed: int
    #: names a group's own method configuration or budget (e.g. "lambda0.3"); empty for the protocol's
    tag: str = ""

    @property
    def method(self) -> str:
        """The trainer, and the tag when the run has its own method configuration or budget."""
        return f"{self.trainer}__{self.tag}" if self.tag else self.trainer

    @property
    def name(self) -> str:
        """Also the run's folder name: nnU-Net's own folder names do not tell seeds or labeled counts apart."""
        return f"{self.method}__labeled{self.labeled}__seed{self.seed}"

    def describe(self) -> str:
        labeled = "all labeled" if self.labeled == ALL_LABELED else f"{self.labeled} labeled"
        return f"{self.method}, {labeled}, seed {self.seed}"


@dataclass(frozen=True)
class Protocol:
    values: dict

    @property
    def name(self) -> str:
        return self.values["name"]

    @property
    def configuration(self) -> str:
        return self.values["configuration"]

    @property
    def plans_name(self) -> str:
        return TINY_PLANS if self.values.get("tiny_plans") else "nnUNetPlans"

    @property
    def budget(self) -> Dict[str, int]:
        return self.values["budget"]

    @property
    def total_steps(self) -> int:
        return self.budget["num_epochs"] * self.budget["iterations_per_epoch"]

    @property
    def method_configs(self) -> Dict[str, dict]:
        return self.values.get("method_configs", {})

    @property
    def cost_steps(self) -> int:
        return self.values.get("cost_steps", 10)

    @property
    def held_out(self) -> str:
        """What the held-out cases are to the reader: "test", or "validation" when the protocol chooses settings."""
        return self.values.get("held_out", "test")

    @property
    def runs(self) -> List[RunSpec]:
        """Every run once, in execution order."""
        runs: List[RunSpec] = []
        for group in self.values["runs"]:
            for seed in group["seeds"]:
                for labeled in group["labeled"]:
                    for trainer in group["trainers"]:
                        spec = RunSpec(trainer, labeled, seed, group.get("tag", ""))
                        if spec not in runs:
                            runs.append(spec)
        return runs

    @property
    def tagged_method_configs(self) -> Dict[str, dict]:
        """Tag -> the method configuration of the groups that carry it."""
        return {g["tag"]: g.get("method_config", {}) for g in self.values["runs"] if "tag" in g}

    @property
    def tagged_budgets(self) -> Dict[str, dict]:
        """Tag -> the budget of the groups that carry it (e.g. labeled-only training at a two-network method's
        cost in seconds, for a comparison at equal compute)."""
        return {g["tag"]: g.get("budget", {}) for g in self.values["runs"] if "tag" in g}

    def method_config(self, run: RunSpec) -> dict:
        """MICD_CONFIG of a run: the protocol's for its trainer, updated by its group's own."""
        own = self.tagged_method_configs.get(run.tag, {})
        return {**self.method_configs.get(run.trainer, {}), **own}

    def tag_budget(self, tag: str) -> Dict[str, int]:
        """The protocol's budget, updated by that of the groups tagged ``tag``."""
        return {**self.budget, **self.tagged_budgets.get(tag, {})}

    def run_budget(self, run: RunSpec) -> Dict[str, int]:
        return self.tag_budget(run.tag)

    def run_steps(self, run: RunSpec) -> int:
        budget = self.run_budget(run)
        return budget["num_epochs"] * budget["iterations_per_epoch"]

    @property
    def labeled_counts(self) -> List[Labeled]:
        """Every labeled count of the protocol, increasing, the upper bound last."""
        counts = {run.labeled for run in self.runs}
        return sorted(c for c in counts if c != ALL_LABELED) + ([ALL_LABELED] if ALL_LABELED in counts else [])

    @property
    def test_from_source(self) -> bool:
        """Whether the held-out cases are the source's own (imagesTs/labelsTs) rather than drawn from its cases."""
        return self.values["test_cases"] == SOURCE_HELD_OUT

    @property
    def test_list(self) -> Optional[str]:
        """The file of the source dataset naming the training cases to hold out, when the protocol gives one."""
        test_cases = self.values["test_cases"]
        return test_cases if isinstance(test_cases, str) and test_cases != SOURCE_HELD_OUT else None

    def labeled_list(self, labeled: Labeled) -> Optional[str]:
        """The file of the source dataset naming the labeled cases of ``labeled``, when the protocol gives one
        (the literature's labeled patients); otherwise they are drawn with the split seed."""
        return self.values.get("labeled_lists", {}).get(str(labeled))

    @property
    def case_lists(self) -> List[str]:
        """Every file of the source dataset that the protocol names (labeled and held-out cases)."""
        return list(self.values.get("labeled_lists", {}).values()) + ([self.test_list] if self.test_list else [])

    def dataset_id(self, labeled: Labeled) -> int:
        return self.values["first_dataset_id"] + self.labeled_counts.index(labeled)

    def comparable_settings(self) -> dict:
        """Everything that changes what a finished run means; results made under other settings must not mix.
        A trainer's method configuration is compared run by run instead (what it trains with follows from its
        defaults too: nnunetv2_micd.benchmark.records), so that pinning the values a run trained with keeps it."""
        return {k: v for k, v in self.values.items() if k not in ("runs", "description", "cost_steps", "source",
                                                                   "held_out", "method_configs")}


def _check(values: dict) -> None:
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in values]
    unknown = sorted(set(values) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    problems += [f"unknown key {k!r}" for k in unknown]
    if problems:
        raise ProtocolError("; ".join(problems))
    if values["protocol_version"] != PROTOCOL_VERSION:
        problems.append(f"protocol_version {values['protocol_version']!r} is not supported "
                        f"(this version of micd reads {PROTOCOL_VERSION})")
    source = values["source"]
    if not (isinstance(source, dict) and len(source) == 1 and next(iter(source)) in SOURCE_KINDS):
        problems.append(f"source must be one of {[{k: 'path'} for k in SOURCE_KINDS]}, got {source!r}")
    for key in ("source_dataset_id", "first_dataset_id"):
        if not (isinstance(values[key], int) and 1 <= values[key] <= 999):
            problems.append(f"{key} must be a dataset id in [1, 999], got {values[key]!r}")
    if not (isinstance(values["split_seed"], int) and values["split_seed"] >= 0):
        problems.append(f"split_seed must be an integer >= 0, got {values['split_seed']!r}")
    test_cases = values["test_cases"]
    if not (isinstance(test_cases, str) and test_cases or isinstance(test_cases, int) and not
            isinstance(test_cases, bool) and test_cases >= 0):
        problems.append(f"test_cases must be an integer >= 0, {SOURCE_HELD_OUT!r} or a case list file of the source, "
                        f"got {test_cases!r}")
    if "acdc_folder" in source and not isinstance(test_cases, str):
        problems.append(f"an acdc_folder source has its own held-out patients: test_cases must be "
                        f"{SOURCE_HELD_OUT!r} (or a list of training patients to hold out instead)")
    lists = values.get("labeled_lists", {})
    if not (isinstance(lists, dict) and all(key.isdigit() and int(key) >= 1 and isinstance(file, str)
                                            for key, file in lists.items())):
        problems.append(f"labeled_lists must map labeled counts (\"6\") to files of the source dataset, got "
                        f"{lists!r}")
    budget = values["budget"]
    if not (isinstance(budget, dict) and set(budget) == set(BUDGET_KEYS)
            and all(isinstance(v, int) and v >= 1 for v in budget.values())):
        problems.append(f"budget must give positive integers for exactly {list(BUDGET_KEYS)}, got {budget!r}")
    tiny = values.get("tiny_plans")
    if tiny is not None and not (isinstance(tiny, dict) and set(tiny) <= {"features", "batch_size", "patch_size"}):
        problems.append(f"tiny_plans must be null or hold 'features', 'batch_size' and/or 'patch_size', got {tiny!r}")
    if values.get("held_out", "test") not in HELD_OUT_NAMES:
        problems.append(f"held_out must be one of {list(HELD_OUT_NAMES)}, got {values['held_out']!r}")
    if not isinstance(values.get("method_configs", {}), dict):
        problems.append("method_configs must map trainer names to MICD_CONFIG objects")
    problems += _run_group_problems(values["runs"])
    if problems:
        raise ProtocolError("; ".join(problems))


def _run_group_problems(groups) -> List[str]:
    if not isinstance(groups, list) or not groups:
        return ["runs must be a non-empty list of groups"]
    problems, tags = [], {}
    for i, group in enumerate(groups):
        lists = ("trainers", "labeled", "seeds")
        if not (isinstance(group, dict) and set(lists) <= set(group) <= {*lists, "tag", *TAGGED_KEYS}
                and all(isinstance(group[k], list) and group[k] for k in lists)):
            problems.append(f"runs[{i}] must hold non-empty lists 'trainers', 'labeled' and 'seeds', and "
                            f"optionally a 'method_config' and/or 'budget' with its 'tag'")
            continue
        own = {key: group[key] for key in TAGGED_KEYS if key in group}
        if ("tag" in group) != bool(own) or not (
                "tag" not in group or (isinstance(group["tag"], str) and TAG_PATTERN.fullmatch(group["tag"])
                                       and all(isinstance(value, dict) for value in own.values()))):
            problems.append(f"runs[{i}]: a group's own 'method_config' or 'budget' (objects) needs a 'tag' (letters, "
                            f"digits, '.', '-') that names it, and a tag needs one of them")
        elif "tag" in group and tags.setdefault(group["tag"], own) != own:
            problems.append(f"runs[{i}]: tag {group['tag']!r} names another method_config or budget in an earlier "
                            f"group")
        elif "budget" in group and not (set(group["budget"]) <= set(BUDGET_KEYS) and all(
                isinstance(v, int) and v >= 1 for v in group["budget"].values())):
            problems.append(f"runs[{i}]: a group's budget gives positive integers for some of {list(BUDGET_KEYS)}")
        for labeled in group["labeled"]:
            if labeled != ALL_LABELED and not (isinstance(labeled, int) and labeled >= 1):
                problems.append(f"runs[{i}]: labeled counts are positive integers or {ALL_LABELED!r}, "
                                f"got {labeled!r}")
        if not all(isinstance(s, int) and s >= 0 for s in group["seeds"]):
            problems.append(f"runs[{i}]: seeds must be integers >= 0")
        if ALL_LABELED in group["labeled"]:
            needing_unlabeled = [t for t in group["trainers"] if t != LABELED_ONLY_TRAINER]
            if needing_unlabeled:
                problems.append(f"runs[{i}]: {needing_unlabeled} need unlabeled cases, which {ALL_LABELED!r} "
                                f"leaves none of")
    if not problems and all(labeled == ALL_LABELED for group in groups for labeled in group["labeled"]):
        problems.append(f"runs: at least one group needs a labeled count below {ALL_LABELED!r}")
    return problems


def builtin_protocols() -> List[str]:
    return sorted(f[:-len(".json")] for f in os.listdir(BUILTIN_FOLDER) if f.endswith(".json"))


def protocol_path(name_or_path: str) -> str:
    """A protocol file, or the name of a built-in one."""
    if os.path.isfile(name_or_path):
        return name_or_path
    builtin = os.path.join(BUILTIN_FOLDER, name_or_path + ".json")
    if os.path.isfile(builtin):
        return builtin
    raise MissingInputError(f"no protocol file {name_or_path!r}; built-in protocols: {builtin_protocols()}")


def load_protocol(name_or_path: str, source_override: Optional[str] = None) -> Tuple[Protocol, str]:
    """The protocol and the file it came from; ``source_override`` replaces the source's path."""
    path = protocol_path(name_or_path)
    try:
        with open(path) as f:
            values = json.load(f)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ProtocolError(f"{path} must hold a JSON object")
    _check(values)
    if source_override is not None:
        kind = next(iter(values["source"]))
        values = {**values, "source": {kind: source_override}}
    return Protocol(values), path
