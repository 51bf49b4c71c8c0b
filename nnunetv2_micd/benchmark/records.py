"""What a benchmark checks of the runs results.json already records before it adds to them: the same protocol, the
same held-out cases, and the method configuration each trainer would train with now."""
import re
import shutil
from typing import Callable, Optional

from batchgenerators.utilities.file_and_folder_operations import isdir, join, maybe_mkdir_p
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from nnunetv2_micd.benchmark.protocol import Protocol, ProtocolError, RunSpec
from nnunetv2_micd.benchmark.results import save_results
from nnunetv2_micd.benchmark.work_folder import WorkFolder
from nnunetv2_micd.paths import trainer_path


def refuse_other_protocol(results: dict, protocol: Protocol, results_file: str) -> None:
    """Runs made under other settings of the protocol must not share a table with new ones; then the recorded
    protocol becomes the present one (runs may have been added)."""
    recorded_protocol = Protocol(results["protocol"])
    mine, theirs = protocol.comparable_settings(), recorded_protocol.comparable_settings()
    changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    # a tag's settings may change until one of its runs has finished: nothing was measured under them yet
    finished_tags = {entry["method"].split("__", 1)[1] for entry in results["runs"].values()
                     if "__" in entry.get("method", "")}
    for kind, mine_by_tag, theirs_by_tag in (
            ("method_config", protocol.tagged_method_configs, recorded_protocol.tagged_method_configs),
            ("budget", protocol.tagged_budgets, recorded_protocol.tagged_budgets)):
        changed += [f"{kind} of tag {tag!r}" for tag in sorted(mine_by_tag.keys() & theirs_by_tag.keys()
                                                               & finished_tags)
                    if mine_by_tag[tag] != theirs_by_tag[tag]]
    if changed:
        raise ProtocolError(f"{results_file} holds runs made under other protocol settings "
                            f"({', '.join(changed)}); use another work folder")
    results["protocol"] = protocol.values


def check_recorded_held_out_cases(results: dict, folder: WorkFolder) -> None:
    """The datasets are rebuilt when results.json is carried to a new work folder (another machine): its runs
    must have been evaluated on the held-out cases these datasets hold."""
    made = folder.made_labeled_counts
    for name, entry in results["runs"].items():
        if entry["labeled"] in made and set(entry["case_mean_dice"]) != set(folder.split(entry["labeled"])["test"]):
            raise ProtocolError(f"{name} in {folder.results_file} was evaluated on other held-out cases than "
                                f"{folder.dataset_name(entry['labeled'])} in {folder.raw} holds; use another work "
                                f"folder")


def _trainer_class(run: RunSpec):
    trainers = trainer_path()
    return recursive_find_python_class(trainers, run.trainer, None, base_folder=trainers,
                                       cleanup_imports_from_base_folder=True)


def expected_method_config(protocol: Protocol, run: RunSpec, trainer=None) -> Optional[dict]:
    """The method configuration the run's trainer would train with now (its defaults, the protocol's settings and
    the fields a variant fixes); None for trainers without one (nnUNetTrainerBudget). ``trainer``: the run's trainer
    class when the caller has it already."""
    trainer = trainer or _trainer_class(run)
    config_class = getattr(trainer, "config_class", None)
    if config_class is None:
        return None
    return config_class.with_fixed_fields(protocol.method_config(run), f"the protocol's {run.method}",
                                          **trainer.config_overrides).to_dict()


def changed_method_config(results: dict, protocol: Protocol, run: RunSpec) -> Optional[str]:
    """For a finished run whose trainer would now train with another method configuration (its defaults changed
    since): what changed. None when nothing did; a field added since counts as the value the run trained with."""
    trainer = _trainer_class(run)
    expected = expected_method_config(protocol, run, trainer)
    if expected is None:
        return None
    recorded = trainer.config_class.as_recorded(results["runs"][run.name]["method_config"].get("method", {}))
    if recorded == expected:
        return None
    return ", ".join(f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in expected.items() if recorded.get(k) != v)


def to_train(results: dict, protocol: Protocol, run: RunSpec) -> bool:
    """Not finished, or finished under other method settings (trained again)."""
    return run.name not in results["runs"] or changed_method_config(results, protocol, run) is not None


def supersede_stale_runs(results: dict, folder: WorkFolder, say: Callable[[str], None]) -> None:
    """A finished run trained with another method configuration than its trainer's present one (defaults changed
    since) would mix configurations in one table: it is moved aside, kept, and trained again."""
    for run in [run for run in folder.protocol.runs if run.name in results["runs"]]:
        entry = results["runs"][run.name]
        changed = changed_method_config(results, folder.protocol, run)
        if changed is None:
            continue
        kept_as = f"{run.name}__{re.sub(r'[^0-9]', '', entry['finished'])[:14]}"
        say(f"{run.name} was trained with another configuration ({changed}): kept as superseded {kept_as}, "
            f"training it again")
        if isdir(folder.run_folder(run)):
            maybe_mkdir_p(join(folder.path, "superseded"))
            shutil.move(folder.run_folder(run), join(folder.path, "superseded", kept_as))
        results.setdefault("superseded", {})[kept_as] = results["runs"].pop(run.name)
        save_results(results, folder.results_file)
