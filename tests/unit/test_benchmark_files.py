"""Protocol files and the results schema, without running anything."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunetv2_micd.benchmark.protocol import Protocol, ProtocolError, builtin_protocols, load_protocol
from nnunetv2_micd.benchmark.records import expected_method_config, supersede_stale_runs
from nnunetv2_micd.benchmark.report import gap_closed, group_runs
from nnunetv2_micd.benchmark.results import ResultsError, empty_results, load_results, save_results, \
    schema_problems, validate

LABELS = {"1": "Anterior", "2": "Posterior"}


def _run(trainer="nnUNetTrainerBudget", labeled=10, seed=0, mean_dice=0.8):
    return {"trainer": trainer, "labeled": labeled, "seed": seed, "num_labeled": 160 if labeled == "all" else labeled,
            "num_unlabeled": 150, "num_test": 2, "dataset": "Dataset611_Hippocampus", "steps": 4000,
            "train_seconds": 1.0, "predict_seconds": 1.0, "dice": {"1": mean_dice, "2": mean_dice},
            "mean_dice": mean_dice, "case_mean_dice": {"a": mean_dice, "b": None},
            "curves": {"train_losses": [1.0], "val_losses": [1.0], "ema_fg_dice": [0.5]}, "method_config": {},
            "code_version": "0.1.0", "finished": "2026-11-25T00:00:00+00:00"}


def _results(*runs):
    results = empty_results({"name": "test"}, LABELS)
    for run in runs:
        results["runs"][f"{run['trainer']}__labeled{run['labeled']}__seed{run['seed']}"] = run
    return results


def test_builtin_protocol_loads_and_runs_the_headline_first():
    protocol, path = load_protocol("hippocampus_cpu")
    assert path.endswith("hippocampus_cpu.json")
    runs = protocol.runs
    first = {(r.trainer, r.labeled, r.seed) for r in runs[:3]}
    assert first == {("nnUNetTrainerBudget", 10, 0), ("nnUNetTrainerBudget", "all", 0), ("nnUNetTrainerMICD", 10, 0)}
    assert len(runs) == len({r.name for r in runs})  # each run once
    assert {r.seed for r in runs if r.labeled == 10 and r.trainer == "nnUNetTrainerMICD"} == {0, 1, 2}
    assert protocol.labeled_counts == [5, 10, 20, "all"]
    assert [protocol.dataset_id(c) for c in protocol.labeled_counts] == [610, 611, 612, 613]


@pytest.mark.parametrize("change, message", [
    ({"protocol_version": 2}, "protocol_version 2 is not supported"),
    ({"budget": {"num_epochs": 1}}, "budget must give positive integers"),
    ({"source": {"zip": "x"}}, "source must be one of"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"held_out": "val"}, "held_out must be one of"),
    ({"runs": [{"trainers": ["nnUNetTrainerMICD"], "labeled": ["all"], "seeds": [0]}]}, "need unlabeled cases"),
    ({"runs": [{"trainers": ["nnUNetTrainerMICD"], "labeled": [0], "seeds": [0]}]}, "positive integers"),
    ({"runs": [{"trainers": ["nnUNetTrainerBudget"], "labeled": ["all"], "seeds": [0]}]}, "labeled count below"),
])
def test_bad_protocols_are_refused_with_the_reason(tmp_path, change, message):
    _assert_refused_when_changed("hippocampus_cpu", tmp_path, change, message)


def _assert_refused_when_changed(builtin: str, tmp_path, change: dict, message: str) -> None:
    protocol, _ = load_protocol(builtin)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**protocol.values, **change}))
    with pytest.raises(ProtocolError, match=message):
        load_protocol(str(bad))


def test_unknown_protocol_names_the_builtin_ones():
    with pytest.raises(FileNotFoundError, match="hippocampus_cpu_tuning"):
        load_protocol("no_such_protocol")


@pytest.mark.parametrize("name", builtin_protocols())
def test_every_builtin_protocol_is_valid(name):
    protocol, path = load_protocol(name)
    assert protocol.values["name"] == name


def test_the_ablation_protocol_holds_out_the_tuning_protocols_validation_cases_and_keeps_the_rules():
    tuning, ablation = (load_protocol(f"hippocampus_cpu_{name}")[0] for name in ("tuning", "ablation"))
    same = ("source", "test_cases", "held_out", "split_seed", "configuration", "tiny_plans", "budget")
    assert {key: ablation.values[key] for key in same} == {key: tuning.values[key] for key in same}
    assert ablation.labeled_counts == [5]


def test_the_gpu_protocol_is_the_cpu_headline_with_nnUNets_default_width():
    cpu, gpu = (load_protocol(f"hippocampus_{name}")[0] for name in ("cpu", "gpu"))
    same = ("source", "source_dataset_id", "test_cases", "split_seed", "configuration", "budget")
    assert {key: gpu.values[key] for key in same} == {key: cpu.values[key] for key in same}
    assert gpu.values["tiny_plans"] == {**cpu.values["tiny_plans"], "features": [32, 64, 128, 256]}
    assert gpu.labeled_counts == [10, "all"]
    assert [run.name for run in gpu.runs] == [  # evidence first: one seed of both, the upper bound, a second seed
        "nnUNetTrainerBudget__labeled10__seed0", "nnUNetTrainerMICD__labeled10__seed0",
        "nnUNetTrainerBudget__labeledall__seed0",
        "nnUNetTrainerBudget__labeled10__seed1", "nnUNetTrainerMICD__labeled10__seed1"]


PUBLISHED_RESULTS = sorted(str(path) for path in (Path(__file__).parents[2] / "docs").glob("**/results.json"))


@pytest.mark.parametrize("path", PUBLISHED_RESULTS)
def test_published_results_follow_the_schema_and_their_protocol(path):
    results = load_results(path)
    protocol = Protocol(results["protocol"])
    runs = {run.name: run for run in protocol.runs}
    assert set(results["runs"]) <= set(runs)
    assert all(recorded["steps"] == protocol.run_steps(runs[name]) for name, recorded in results["runs"].items())


@pytest.mark.parametrize("path", [path for path in PUBLISHED_RESULTS
                                  if load_results(path)["protocol"]["name"] in builtin_protocols()])
def test_published_runs_are_what_their_builtin_protocol_trains_now(path):
    """A change of a default must not retrain a published run unnoticed: its protocol pins what the run trained
    with (method_configs), or the run is superseded (moved aside by micd benchmark, to be trained again)."""
    from nnunetv2_micd.benchmark.records import changed_method_config
    results = load_results(path)
    protocol, _ = load_protocol(results["protocol"]["name"])
    runs = {run.name: run for run in protocol.runs}
    changed = {name: changed_method_config(results, protocol, runs[name]) for name in results["runs"]}
    assert {name: change for name, change in changed.items() if change is not None} == {}


def test_valid_results_pass_the_schema(tmp_path):
    results = _results(_run(), _run("nnUNetTrainerMICD"))
    assert schema_problems(results) == []
    save_results(results, str(tmp_path / "results.json"))
    assert json.loads((tmp_path / "results.json").read_text()) == results


@pytest.mark.parametrize("breaks, message", [
    (lambda r: r.pop("labels"), "missing key 'labels'"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"].pop("mean_dice"), "mean_dice missing"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"]["dice"].pop("2"), "dice must give every class"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"].update(mean_dice=1.5), "numbers in \\[0, 1\\]"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"].update(num_test=3), "case_mean_dice has 2"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"]["curves"].pop("ema_fg_dice"), "curves.ema_fg"),
    (lambda r: r["runs"]["nnUNetTrainerBudget__labeled10__seed0"]["curves"].update(epoch_seconds=[1.0, "2"]),
     "curves.epoch_seconds"),
    (lambda r: r.update(cost={"device": "cpu", "steps": 10, "trainers": {"x": {}}}), "cost of x"),
    (lambda r: r.update(cost={"device": "cpu", "trainers": {}}), "cost must hold 'device', 'steps'"),
])
def test_broken_results_are_refused(tmp_path, breaks, message):
    results = _results(_run())
    breaks(results)
    with pytest.raises(ResultsError, match=message):
        validate(results)
    with pytest.raises(ResultsError):
        save_results(results, str(tmp_path / "results.json"))
    assert not (tmp_path / "results.json").exists()


def test_gap_closed_is_the_share_of_the_distance_to_full_supervision():
    groups = group_runs(_results(_run(mean_dice=0.80), _run(seed=1, mean_dice=0.82),
                                 _run("nnUNetTrainerMICD", mean_dice=0.85),
                                 _run(labeled="all", mean_dice=0.91)))
    # baseline 0.81 (mean over seeds), upper bound 0.91: MICD closes (0.85 - 0.81) / 0.10
    assert gap_closed(groups, "nnUNetTrainerMICD", 10) == pytest.approx(0.4)


def test_gap_closed_is_undefined_when_full_supervision_is_not_better():
    groups = group_runs(_results(_run(mean_dice=0.85), _run("nnUNetTrainerMICD", mean_dice=0.86),
                                 _run(labeled="all", mean_dice=0.84)))
    assert gap_closed(groups, "nnUNetTrainerMICD", 10) is None


def test_results_are_not_modified_by_validation():
    results = _results(_run())
    before = copy.deepcopy(results)
    validate(results)
    assert results == before


def _protocol_with(tmp_path, groups, method_configs=None):
    protocol, _ = load_protocol("hippocampus_cpu")
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps({**protocol.values, "runs": groups, "method_configs": method_configs or {}}))
    return load_protocol(str(path))[0]


def test_a_group_may_run_its_own_method_configuration(tmp_path):
    protocol = _protocol_with(tmp_path, [
        {"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]},
        {"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0], "tag": "lambda0.3",
         "method_config": {"lambda_max": 0.3}},
    ], {"nnUNetTrainerMICD": {"rampup_fraction": 0.5}})
    default, tagged = protocol.runs
    assert (default.name, tagged.name) == ("nnUNetTrainerMICD__labeled10__seed0",
                                           "nnUNetTrainerMICD__lambda0.3__labeled10__seed0")
    assert protocol.method_config(default) == {"rampup_fraction": 0.5}
    assert protocol.method_config(tagged) == {"rampup_fraction": 0.5, "lambda_max": 0.3}


@pytest.mark.parametrize("group, message", [
    ({"tag": "x"}, "needs a 'tag'"),
    ({"method_config": {"lambda_max": 0.3}}, "needs a 'tag'"),
    ({"tag": "a/b", "method_config": {}}, "needs a 'tag'"),
])
def test_bad_tags_are_refused(tmp_path, group, message):
    with pytest.raises(ProtocolError, match=message):
        _protocol_with(tmp_path, [{"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0], **group}])


def test_one_tag_names_one_configuration(tmp_path):
    group = {"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0], "tag": "a"}
    with pytest.raises(ProtocolError, match="names another method_config"):
        _protocol_with(tmp_path, [{**group, "method_config": {"lambda_max": 0.3}},
                                  {**group, "method_config": {"lambda_max": 0.5}}])


def test_a_group_may_train_for_its_own_number_of_steps(tmp_path):
    protocol = _protocol_with(tmp_path, [
        {"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]},
        {"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0], "tag": "equal-compute",
         "budget": {"num_epochs": 280}}])
    budget, micd, equal_compute = protocol.runs
    assert equal_compute.name == "nnUNetTrainerBudget__equal-compute__labeled10__seed0"
    assert protocol.run_steps(budget) == protocol.run_steps(micd) == 40 * 100
    assert protocol.run_budget(equal_compute) == {**protocol.budget, "num_epochs": 280}
    assert protocol.run_steps(equal_compute) == 28000 and protocol.method_config(equal_compute) == {}
    with pytest.raises(ProtocolError, match="budget gives positive integers"):
        _protocol_with(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0], "tag": "x",
                                   "budget": {"num_epochs": 0}}])


def test_the_acdc_protocols_take_the_literatures_labeled_patients_and_hold_out_its_validation_patients():
    for name in ("acdc_cpu", "acdc_gpu"):
        protocol, _ = load_protocol(name)
        assert protocol.test_from_source and protocol.configuration == "2d"
        assert protocol.labeled_list(6) == "labeled_3_patients.txt"
        assert protocol.labeled_list(14) == "labeled_7_patients.txt" and protocol.labeled_list("all") is None
    cpu, _ = load_protocol("acdc_cpu")

    def seeds_at_3_patients(trainer):
        return {run.seed for run in cpu.runs if run.trainer == trainer and run.labeled == 6 and not run.tag}

    assert seeds_at_3_patients("nnUNetTrainerBudget") == seeds_at_3_patients("nnUNetTrainerMICD") == {0, 1, 2}
    equal_compute = next(run for run in cpu.runs if run.tag == "equal-compute")
    # labeled-only at MICD's cost in seconds: the step-cost ratio the benchmark measured (with its workers)
    cost = json.loads((Path(__file__).parents[2] / "docs" / "benchmarks" / "acdc_cpu" / "results.json").read_text())
    seconds = {trainer: values["seconds_per_step"] for trainer, values in cost["cost"]["trainers"].items()}
    ratio = seconds["nnUNetTrainerMICD"] / seconds["nnUNetTrainerBudget"]
    assert cpu.run_steps(equal_compute) == round(ratio) * cpu.total_steps
    # and MICD as long, to ask whether it still gains when labeled-only nnU-Net has trained that long
    long_micd = next(run for run in cpu.runs if run.tag == "long")
    assert (long_micd.trainer, long_micd.labeled, long_micd.seed) == ("nnUNetTrainerMICD", 6, equal_compute.seed)
    assert cpu.run_steps(long_micd) == cpu.run_steps(equal_compute)


@pytest.mark.parametrize("change, message", [
    ({"test_cases": 2.5}, "test_cases must be an integer >= 0, 'source' or a case list file of the source"),
    ({"test_cases": 20}, "acdc_folder source has its own held-out patients"),
    ({"labeled_lists": {"three": "x.txt"}}, "labeled_lists must map labeled counts"),
])
def test_bad_acdc_settings_are_refused(tmp_path, change, message):
    _assert_refused_when_changed("acdc_cpu", tmp_path, change, message)


def _make_ssl_dataset_commands(tmp_path, protocol_name, labeled_counts):
    """The micd make-ssl-dataset commands a runner of the ACDC protocol gives for ``labeled_counts``, and the
    source dataset's folder."""
    from nnunetv2_micd.benchmark.runner import BenchmarkRunner
    runner = BenchmarkRunner(load_protocol(protocol_name)[0], str(tmp_path / "work"))
    source = tmp_path / "work" / "nnUNet_raw" / "Dataset800_ACDC"
    source.mkdir(parents=True)
    commands = []
    runner.shell.say = lambda text: None
    runner.shell.micd = lambda *args, **kwargs: commands.append([str(a) for a in args])
    for labeled in labeled_counts:
        runner.datasets.make_dataset(labeled)
    return commands, str(source)


def test_labeled_lists_and_the_sources_held_out_split_reach_make_ssl_dataset(tmp_path):
    commands, source = _make_ssl_dataset_commands(tmp_path, "acdc_cpu", [6, "all"])
    assert commands[0][:5] == ["make-ssl-dataset", "-d", "Dataset800_ACDC", "-o", "Dataset810_ACDC"]
    assert commands[0][5:7] == ["--labeled-cases", f"{source}/labeled_3_patients.txt"]
    assert commands[1][5:7] == ["--labeled", "100%"]
    assert not any("--test" in command for command in commands)  # the source's validation patients stay held out


def test_the_acdc_tuning_protocol_holds_out_training_patients_and_never_the_validation_patients(tmp_path):
    protocol, _ = load_protocol("acdc_cpu_tuning")
    assert protocol.held_out == "validation" and not protocol.test_from_source
    assert protocol.test_list == "tuning_patients.txt" and protocol.labeled_list(6) == "labeled_3_patients.txt"
    (command,), source = _make_ssl_dataset_commands(tmp_path, "acdc_cpu_tuning", [6])
    assert command[command.index("--test-cases") + 1] == f"{source}/tuning_patients.txt"
    assert command[command.index("--labeled-cases") + 1] == f"{source}/labeled_3_patients.txt"
    # every tagged run is MICD at the literature's 3 labeled patients and switches one setting, but two: 'combined'
    # sets together switches that single runs measured, 'confident0.9-background' adds a flag to the threshold's run
    tagged = [run for run in protocol.runs if run.tag]
    own = protocol.tagged_method_configs
    assert all(run.trainer == "nnUNetTrainerMICD" and run.labeled == 6 for run in tagged)
    single = {tag: config for tag, config in own.items() if len(config) == 1}
    assert set(own) - set(single) == {"combined", "confident0.9-background"}
    measured = [item for config in single.values() for item in config.items()]
    assert all(item in measured for item in own["combined"].items())
    assert own["confident0.9-background"] == {**own["confident0.9"], "threshold_background_only": True}


def _runner(tmp_path, groups):
    from nnunetv2_micd.benchmark.runner import BenchmarkRunner
    return BenchmarkRunner(_protocol_with(tmp_path, groups), str(tmp_path / "work"))


def test_an_interrupted_import_of_the_source_is_done_again(tmp_path):
    from nnunetv2_micd.benchmark.runner import BenchmarkRunner
    source = tmp_path / "Dataset900_Tiny"
    for folder in ("imagesTr", "labelsTr"):
        (source / folder).mkdir(parents=True)
        (source / folder / "case_000.nii.gz").write_bytes(b"not read here")
    (source / "dataset.json").write_text("{}")
    protocol, _ = load_protocol("hippocampus_cpu")
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps({**protocol.values, "source": {"nnunet_raw_folder": str(source)}}))
    runner = BenchmarkRunner(load_protocol(str(path))[0], str(tmp_path / "work"))
    runner.shell.say = lambda text: None
    target = tmp_path / "work" / "nnUNet_raw" / f"Dataset{protocol.values['source_dataset_id']:03d}_Tiny"
    (target / "imagesTr").mkdir(parents=True)  # killed while copying: no labels, no dataset.json
    (target / "imagesTr" / "half_copied.nii.gz").write_bytes(b"")

    runner.datasets.import_source()

    assert sorted(p.name for p in target.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    assert [p.name for p in (target / "imagesTr").iterdir()] == ["case_000.nii.gz"]
    (source / "labelsTr" / "case_000.nii.gz").unlink()
    runner.datasets.import_source()  # a finished import is kept as it is
    assert (target / "labelsTr" / "case_000.nii.gz").is_file()


@pytest.mark.parametrize("processes", [None, "5"])
def test_planning_and_import_use_nnUNet_def_n_proc_processes(tmp_path, monkeypatch, processes):
    """One process per core unless nnUNet_def_n_proc says otherwise: a GPU machine's cores preprocess faster."""
    if processes is None:
        monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    else:
        monkeypatch.setenv("nnUNet_def_n_proc", processes)
    commands = []
    source = tmp_path / "Task04_Tiny"
    source.mkdir()
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0]}])
    runner.protocol.values["source"] = {"msd_task_folder": str(source)}
    runner.shell.run = lambda command, *args, **kwargs: commands.append(command)
    runner.shell.say = runner.shell.micd = lambda *args, **kwargs: None
    raw = tmp_path / "work" / "nnUNet_raw"
    raw.mkdir(parents=True)

    runner.datasets.import_source()
    (raw / "Dataset004_Tiny").mkdir()  # what the conversion would have made
    runner.datasets.plan_source()

    expected = processes or str(os.cpu_count())
    convert, plan = commands
    assert convert[0] == "nnUNetv2_convert_MSD_dataset" and convert[convert.index("-np") + 1] == expected
    assert plan[0] == "nnUNetv2_plan_and_preprocess" and plan[plan.index("-npfp") + 1] == expected


def _preparing_runner(tmp_path, monkeypatch, cost_measured=True, all_finished=False):
    """A runner whose dataset making, planning and preprocessing only record what they were asked to do."""
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [5, 10],
                                 "seeds": [0]},
                                {"trainers": ["nnUNetTrainerBudget"], "labeled": ["all"], "seeds": [0]}])
    source = tmp_path / "work" / "nnUNet_raw" / "Dataset004_Hippocampus"
    source.mkdir(parents=True)
    (source / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "Anterior": 1, "Posterior": 2}}))
    cases = [f"case_{i:03d}" for i in range(20)]
    calls = {"made": [], "planned": 0, "preprocessed": []}

    def make_dataset(labeled):  # what micd make-ssl-dataset writes that the runner reads: nested splits
        calls["made"].append(labeled)
        count = 16 if labeled == "all" else labeled
        manifest = {"splits": {"labeled": cases[:count], "unlabeled": cases[count:16], "test": cases[16:]}}
        folder = source.parent / runner.folder.dataset_name(labeled)
        folder.mkdir(exist_ok=True)
        (folder / "ssl_manifest.json").write_text(json.dumps(manifest))

    def plan_source():
        calls["planned"] += 1

    monkeypatch.setattr(runner.datasets, "make_dataset", make_dataset)
    monkeypatch.setattr(runner.datasets, "preprocess_dataset", calls["preprocessed"].append)
    monkeypatch.setattr(runner.datasets, "plan_source", plan_source)
    results = empty_results(runner.protocol.values, LABELS)
    if cost_measured:
        cost = {"seconds_per_step": 1.0, "peak_memory_mib": 100.0}
        results["cost"] = {"device": "cpu", "steps": 10, "trainers": {"nnUNetTrainerBudget": cost,
                                                                       "nnUNetTrainerMICD": cost}}
    for run in runner.protocol.runs if all_finished else []:  # evaluated on the test cases of the datasets above
        entry = {**_run(run.trainer, run.labeled), "case_mean_dice": {case: 0.8 for case in cases[16:]},
                 "num_test": 4}
        entry["method_config"]["method"] = expected_method_config(runner.protocol, run)
        results["runs"][run.name] = entry
    save_results(results, runner.folder.results_file)
    return runner, calls


@pytest.mark.parametrize("cost_measured", [False, True])
def test_only_the_datasets_that_the_selected_runs_and_the_cost_need_are_made(tmp_path, monkeypatch, cost_measured):
    """``--only`` on a limited stretch of compute: no time spent preprocessing datasets its runs do not use."""
    runner, calls = _preparing_runner(tmp_path, monkeypatch, cost_measured)
    made = calls["made"]
    runner.prepare(runner.select(["nnUNetTrainerBudget"])[-1:])  # the upper bound
    assert made == (["all"] if cost_measured else [5, "all"])  # the cost is measured on the smallest count
    runner.prepare(runner.select(["nnUNetTrainerMICD"]))
    assert made[-2:] == [5, 10] and made.count(5) == 1 + (not cost_measured)
    assert runner.folder.made_labeled_counts == [5, 10, "all"] and calls["preprocessed"] == made


def test_finished_runs_carried_to_a_new_work_folder_need_no_preprocessing(tmp_path, monkeypatch):
    """Their datasets are made (to check the held-out cases, and for student A's prediction), not planned or
    preprocessed: only a run trained again needs that."""
    runner, calls = _preparing_runner(tmp_path, monkeypatch, all_finished=True)
    runner.prepare(runner.protocol.runs)
    assert calls == {"made": [5, 10, "all"], "planned": 0, "preprocessed": []}

    (tmp_path / "changed").mkdir()
    runner, calls = _preparing_runner(tmp_path / "changed", monkeypatch, all_finished=True)
    results = load_results(runner.folder.results_file)
    results["runs"]["nnUNetTrainerMICD__labeled10__seed0"]["method_config"]["method"]["lambda_max"] = 0.5
    save_results(results, runner.folder.results_file)
    runner.prepare(runner.protocol.runs)
    assert calls == {"made": [5, 10, "all"], "planned": 1, "preprocessed": [10]}  # trained again, on 10


def test_a_trainer_added_to_the_protocol_has_every_cost_measured_again(tmp_path):
    from nnunetv2_micd.benchmark.cost import cost_to_measure
    protocol = _protocol_with(tmp_path, [{"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [10],
                                          "seeds": [0]}])
    results = _results()
    assert cost_to_measure(results, protocol)
    cost = {"seconds_per_step": 1.0, "peak_rss_mib": 100.0}
    results["cost"] = {"device": "cpu", "steps": 10,
                       "trainers": {"nnUNetTrainerBudget": cost, "nnUNetTrainerMICD": cost}}
    assert not cost_to_measure(results, protocol)
    protocol = _protocol_with(tmp_path, [{"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerCPS"],
                                          "labeled": [10], "seeds": [0]}])
    assert cost_to_measure(results, protocol)


def test_time_left_leaves_out_epochs_stretched_by_a_pause(tmp_path):
    from nnunetv2_micd.benchmark.progress import estimated_seconds_left
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0, 1]}])
    _, to_do = runner.protocol.runs
    epochs = runner.protocol.budget["num_epochs"]
    # a finished run whose wall time holds an hour the machine was paused, in its second epoch
    finished = _run()
    finished.update(train_seconds=3600.0 + 10.0 * epochs, predict_seconds=20.0)
    finished["curves"]["epoch_seconds"] = [3610.0 if e == 1 else 10.0 for e in range(epochs)]
    results = _results(finished)
    assert estimated_seconds_left(results, runner.folder, [to_do]) == pytest.approx(10.0 * epochs + 20.0)
    del finished["curves"]["epoch_seconds"]  # recorded without epoch times: the wall time
    assert estimated_seconds_left(_results(finished), runner.folder, [to_do]) == \
        pytest.approx(3600.0 + 10.0 * epochs + 20.0)


def test_time_left_is_not_stretched_by_one_run_on_a_slowed_host(tmp_path):
    from nnunetv2_micd.benchmark.progress import estimated_seconds_left
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0, 1, 2, 3]}])
    to_do = runner.protocol.runs[-1]
    epochs = runner.protocol.budget["num_epochs"]
    finished = []
    for seed, epoch_seconds in enumerate((10.0, 11.0, 30.0)):  # seed 2 trained while the host ran 3 times slower
        run = {**_run(seed=seed), "train_seconds": epoch_seconds * epochs, "predict_seconds": 0.0}
        run["curves"]["epoch_seconds"] = [epoch_seconds] * epochs
        finished.append(run)
    results = _results(*finished)
    assert estimated_seconds_left(results, runner.folder, [to_do]) == pytest.approx(11.0 * epochs)


def test_a_changed_configuration_of_a_tag_is_refused_on_resume(tmp_path):
    group = {"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0], "tag": "a"}
    from nnunetv2_micd.benchmark.records import refuse_other_protocol
    recorded = _protocol_with(tmp_path, [{**group, "method_config": {"lambda_max": 0.3}}])
    protocol = _protocol_with(tmp_path, [{**group, "method_config": {"lambda_max": 0.5}}])
    # no run of tag 'a' has finished: its settings may still change
    refuse_other_protocol(empty_results(recorded.values, LABELS), protocol, "results.json")
    finished = {**_results({**_run("nnUNetTrainerMICD"), "method": "nnUNetTrainerMICD__a"}),
                "protocol": recorded.values}
    with pytest.raises(ProtocolError, match="method_config of tag 'a'"):
        refuse_other_protocol(finished, protocol, "results.json")
    protocol = _protocol_with(tmp_path, [{**group, "method_config": {"lambda_max": 0.3}},
                                         {**group, "tag": "b", "method_config": {"lambda_max": 0.5}}])
    refuse_other_protocol(finished, protocol, "results.json")  # a tag added to the protocol is fine


def test_only_selects_the_runs_of_the_named_methods(tmp_path):
    runner = _runner(tmp_path, [
        {"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [10], "seeds": [0, 1]},
        {"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0], "tag": "l3",
         "method_config": {"lambda_max": 0.3}},
    ])
    assert {r.name for r in runner.select(["nnUNetTrainerBudget"])} == {
        "nnUNetTrainerBudget__labeled10__seed0", "nnUNetTrainerBudget__labeled10__seed1"}
    assert [r.name for r in runner.select(["nnUNetTrainerMICD__l3"])] == ["nnUNetTrainerMICD__l3__labeled10__seed0"]
    assert len(runner.select(["nnUNetTrainerMICD"])) == 3  # a trainer's name takes its tagged runs too
    assert [r.name for r in runner.select(["nnUNetTrainerBudget__labeled10__seed1", "nnUNetTrainerMICD__l3"])] == [
        "nnUNetTrainerBudget__labeled10__seed1", "nnUNetTrainerMICD__l3__labeled10__seed0"]  # in the protocol's order
    assert runner.select(None) == runner.protocol.runs
    with pytest.raises(ProtocolError, match="the protocol's methods are"):
        runner.select(["nnUNetTrainerMICDX"])


def test_a_run_trained_under_other_defaults_is_kept_aside_and_redone(tmp_path):
    runner = _runner(tmp_path, [
        {"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD", "nnUNetTrainerCPS"], "labeled": [10], "seeds": [0]},
    ])
    budget, micd_run, cps = runner.protocol.runs
    current = {run: {"trainer": run.trainer, "budget": {}, "method": expected_method_config(runner.protocol, run)}
               for run in (micd_run, cps)}
    assert current[cps]["method"]["mask_ratio"] == 0.0  # the variant's fixed fields are part of it
    stale = {**current[micd_run], "method": {**current[micd_run]["method"], "lambda_max": 0.05}}
    results = _results({**_run(), "method_config": {"trainer": "nnUNetTrainerBudget", "budget": {}}},
                       {**_run("nnUNetTrainerMICD"), "method_config": stale},
                       {**_run("nnUNetTrainerCPS"), "method_config": current[cps]})
    runner.folder.results_file = str(tmp_path / "results.json")
    (tmp_path / "work" / "runs" / micd_run.name).mkdir(parents=True)
    (tmp_path / "work" / "runs" / micd_run.name / "train.log").write_text("old")

    supersede_stale_runs(results, runner.folder, lambda text: None)

    assert set(results["runs"]) == {budget.name, cps.name}
    (kept_as, entry), = results["superseded"].items()
    assert kept_as == f"{micd_run.name}__20261125000000" and entry["method_config"] == stale
    assert (tmp_path / "work" / "superseded" / kept_as / "train.log").read_text() == "old"
    assert not (tmp_path / "work" / "runs" / micd_run.name).exists()
    assert schema_problems(json.loads((tmp_path / "results.json").read_text())) == []


def test_a_run_recorded_before_a_setting_existed_is_not_trained_again(tmp_path):
    from nnunetv2_micd.benchmark.records import changed_method_config
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]}])
    (run,) = runner.protocol.runs
    current = expected_method_config(runner.protocol, run)
    earlier = {key: value for key, value in current.items() if key != "learned_class_dice"}
    results = _results({**_run("nnUNetTrainerMICD"), "method_config": {"method": earlier}})
    assert changed_method_config(results, runner.protocol, run) is None  # it trained as the default does now
    results["runs"][run.name]["method_config"]["method"]["learned_class_dice"] = 0.5
    assert changed_method_config(results, runner.protocol, run) == "learned_class_dice 0.5 -> 0.0"


def test_a_run_recorded_before_a_setting_existed_is_trained_again_if_it_is_not_set_as_that_run_trained(tmp_path):
    from nnunetv2_micd.benchmark.records import changed_method_config
    group = [{"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]}]
    protocol = _protocol_with(tmp_path, group, {"nnUNetTrainerMICD": {"confidence_threshold": 0.9}})
    (run,) = protocol.runs
    earlier = {key: value for key, value in expected_method_config(protocol, run).items()
               if key != "confidence_threshold"}  # it learned from every pseudo-label: there was no threshold
    results = _results({**_run("nnUNetTrainerMICD"), "method_config": {"method": earlier}})
    assert changed_method_config(results, protocol, run) == "confidence_threshold 0.0 -> 0.9"


def test_pinning_the_value_a_run_trained_with_keeps_it_when_a_default_changes(tmp_path):
    from nnunetv2_micd.benchmark.records import changed_method_config, refuse_other_protocol
    group = [{"trainers": ["nnUNetTrainerMICD"], "labeled": [10], "seeds": [0]}]
    recorded = _protocol_with(tmp_path, group)
    (run,) = recorded.runs
    expected = expected_method_config(recorded, run)
    trained = {**expected, "confidence_threshold": 0.5}  # the default then
    results = {**_results({**_run("nnUNetTrainerMICD"), "method_config": {"method": trained}}),
               "protocol": recorded.values}
    default = expected["confidence_threshold"]
    assert changed_method_config(results, recorded, run) == f"confidence_threshold 0.5 -> {default}"
    pinned = _protocol_with(tmp_path, group, {"nnUNetTrainerMICD": {"confidence_threshold": 0.5}})
    refuse_other_protocol(results, pinned, "results.json")  # the same runs, not another protocol
    assert changed_method_config(results, pinned, run) is None
    other = _protocol_with(tmp_path, group, {"nnUNetTrainerMICD": {"confidence_threshold": 0.7}})
    assert changed_method_config(results, other, run) == "confidence_threshold 0.5 -> 0.7"  # trained again


def test_report_leaves_superseded_runs_out_and_says_so(tmp_path):
    from nnunetv2_micd.benchmark.report import write_report
    results = _results(_run(mean_dice=0.8), _run("nnUNetTrainerMICD", mean_dice=0.82))
    results["protocol"] = load_protocol("hippocampus_cpu")[0].values
    results["superseded"] = {"nnUNetTrainerMICD__labeled10__seed0__20261125000000":
                             _run("nnUNetTrainerMICD", mean_dice=0.123)}
    save_results(results, str(tmp_path / "results.json"))
    report = open(write_report(str(tmp_path / "results.json"), str(tmp_path / "report"))).read()
    assert "2 finished runs (1 trained under earlier method defaults left out)" in report
    assert "0.8200" in report and "0.1230" not in report
    assert "the 2 test cases" in report and "Mean test Dice against" in report


def test_report_counts_a_single_finished_run_in_the_singular(tmp_path):
    from nnunetv2_micd.benchmark.report import write_report
    results = _results(_run(mean_dice=0.8))
    results["protocol"] = load_protocol("hippocampus_cpu")[0].values
    save_results(results, str(tmp_path / "results.json"))
    report = open(write_report(str(tmp_path / "results.json"), str(tmp_path / "report"))).read()
    assert "1 finished run; every trainer" in report


def test_a_tuning_protocol_calls_its_held_out_cases_validation_cases(tmp_path):
    from nnunetv2_micd.benchmark.report import write_report
    protocol = load_protocol("hippocampus_cpu_tuning")[0]
    assert protocol.held_out == "validation"
    results = _results(_run(mean_dice=0.8), _run("nnUNetTrainerMICD", mean_dice=0.82))
    results["protocol"] = protocol.values
    save_results(results, str(tmp_path / "results.json"))
    report = open(write_report(str(tmp_path / "results.json"), str(tmp_path / "report"))).read()
    assert "the 2 validation cases" in report and "Per validation case" in report
    assert "Mean validation Dice against" in report and "Dice per class on the validation cases" in report
    assert " test case" not in report and "test Dice" not in report
    assert "validation cases; with fold `all`" not in report  # nnU-Net's own per-epoch check is not the held-out one


def _with_cases(run, seed, cases):
    return {**run, "seed": seed, "num_test": len(cases), "case_mean_dice": cases}


def test_paired_differences_match_seeds_and_cases():
    from nnunetv2_micd.benchmark.report import paired_differences
    baseline, method = _run(), _run("nnUNetTrainerMICD")
    results = _results(_with_cases(baseline, 0, {"a": 0.8, "b": 0.7, "c": None}),
                       _with_cases(baseline, 1, {"a": 0.6, "b": 0.7, "c": 0.5}),
                       _with_cases(method, 0, {"a": 0.9, "b": 0.6, "c": 0.4}),
                       _with_cases(method, 1, {"a": 0.7, "b": 0.7, "c": 0.6}),
                       _with_cases(method, 2, {"a": 0.0, "b": 0.0, "c": 0.0}))  # seed 2 has no baseline
    seeds, differences = paired_differences(group_runs(results), "nnUNetTrainerMICD", 10)
    assert seeds == 2
    assert differences == pytest.approx({"a": 0.1, "b": -0.05, "c": 0.1})  # c: seed 1 only


def test_paired_table_finds_a_consistent_gain_and_no_gain():
    from nnunetv2_micd.benchmark.report import paired_table
    cases = {f"case{i}": 0.5 + 0.02 * i for i in range(10)}
    results = _results(_with_cases(_run(), 0, cases),
                       _with_cases(_run("nnUNetTrainerMICD"), 0, {c: d + 0.01 for c, d in cases.items()}),
                       _with_cases(_run("nnUNetTrainerCPS"), 0, dict(cases)))
    rows = {row.split(" | ")[0][2:]: row.split(" | ") for row in paired_table(results).splitlines()[2:]}
    assert rows["nnUNetTrainerMICD"][3:5] == ["+0.0100", "10 / 0"]
    assert float(rows["nnUNetTrainerMICD"][5].rstrip(" |")) < 0.01  # ten of ten cases better
    assert rows["nnUNetTrainerCPS"][3:7] == ["+0.0000", "0 / 0", "1", "one seed: none |"]


def _with_student_a(run, mean_dice):
    return {**run, "student_a": {"dice": {"1": mean_dice, "2": mean_dice}, "mean_dice": mean_dice,
                                 "case_mean_dice": {"a": mean_dice, "b": None}}}


def test_student_a_alone_is_validated_and_reported_as_its_own_method(tmp_path):
    from nnunetv2_micd.benchmark.report import dice_table, paired_table
    results = _results(_run(mean_dice=0.80), _with_student_a(_run("nnUNetTrainerMICD", mean_dice=0.86), 0.82),
                       _run(labeled="all", mean_dice=0.90))
    save_results(results, str(tmp_path / "results.json"))  # valid
    rows = {row.split(" | ")[0][2:]: row.rstrip(" |").split(" | ") for row in dice_table(results).splitlines()[2:]}
    assert rows["nnUNetTrainerMICD"][5:7] == ["0.8600", "60 %"]
    assert rows["nnUNetTrainerMICD, student A alone"][5:7] == ["0.8200", "20 %"]
    assert "nnUNetTrainerMICD, student A alone" in paired_table(results)
    # the plots show what users get: without with_student_a, no student-A group
    assert set(group_runs(results)) == {("nnUNetTrainerBudget", 10), ("nnUNetTrainerMICD", 10),
                                        ("fully supervised", "all")}
    broken = copy.deepcopy(results)
    broken["runs"]["nnUNetTrainerMICD__labeled10__seed0"]["student_a"]["case_mean_dice"] = {"a": 0.8}
    assert schema_problems(broken) == ["runs['nnUNetTrainerMICD__labeled10__seed0']: student_a: case_mean_dice "
                                       "has 1 cases, num_test is 2"]


def _summary_file(path, per_case):
    """A summary.json as nnUNetv2_evaluate_folder writes it; ``per_case``: {case: (Dice class 1, Dice class 2)}."""
    cases = [{"reference_file": f"/ref/{case}.nii.gz", "prediction_file": f"/pred/{case}.nii.gz",
              "metrics": {"1": {"Dice": d1}, "2": {"Dice": d2}}} for case, (d1, d2) in per_case.items()]
    mean = {label: {"Dice": float(np.nanmean([c["metrics"][label]["Dice"] for c in cases]))} for label in ("1", "2")}
    summary = {"metric_per_case": cases, "mean": mean,
               "foreground_mean": {"Dice": float(np.mean([m["Dice"] for m in mean.values()]))}}
    path.write_text(json.dumps(summary))  # NaN for a class absent from both images, as nnU-Net writes it
    return str(path)


def test_dice_from_summary_averages_each_case_over_the_classes_present(tmp_path):
    from nnunetv2_micd.evaluation.summaries import dice_from_summary
    nan = float("nan")
    fields = dice_from_summary(_summary_file(tmp_path / "summary.json",
                                             {"a": (0.8, 0.6), "b": (0.9, nan), "c": (nan, nan)}))
    assert fields["case_mean_dice"] == pytest.approx({"a": 0.7, "b": 0.9, "c": None})
    assert fields["dice"] == pytest.approx({"1": 0.85, "2": 0.6})
    assert fields["mean_dice"] == pytest.approx(0.725)


@pytest.mark.parametrize("image_file, expected", [("/ref/hippocampus_001.nii.gz", "hippocampus_001"),
                                                  ("/ref/case.1.nii.gz", "case.1"), ("/ref/case.2.nii", "case.2"),
                                                  ("ref/slice.3.png", "slice.3"), ("a.b.tiff", "a.b")])
def test_case_name_removes_only_the_file_ending(image_file, expected):
    from nnunetv2_micd.evaluation.summaries import case_name
    assert case_name(image_file) == expected


def test_micd_compare_tests_two_predictions_case_by_case(tmp_path, capsys):
    from scipy.stats import wilcoxon
    from nnunetv2_micd.cli import main
    nan = float("nan")
    reference = {f"case{i}": (0.5 + 0.03 * i, 0.6) for i in range(8)}
    better = {**{c: (d1 + 0.02 * (i % 3), d2) for i, (c, (d1, d2)) in enumerate(reference.items())},
              "case7": (0.4, 0.6), "case6": (nan, nan)}  # two equal, one worse, one without a class
    files = [_summary_file(tmp_path / f"{name}.json", cases) for name, cases in (("a", better), ("b", reference))]
    main(["compare", *files])
    differences = [0.01 * (i % 3) for i in range(6)]  # class 2 is equal, so the case mean moves by half of class 1
    expected_p = wilcoxon(differences + [(0.4 - 0.71) / 2]).pvalue
    assert capsys.readouterr().out.strip() == (
        f"7 cases, Dice (mean over classes) of the first minus the second: mean "
        f"{(sum(differences) - 0.155) / 7:+.4f}, 4 better / 1 worse, Wilcoxon signed-rank p = {expected_p:.3g} "
        f"(two-sided)")
    # cases that are in one file only are named, not silently dropped
    other = _summary_file(tmp_path / "other.json", {**reference, "case9": (0.5, 0.5)})
    with pytest.raises(SystemExit):
        main(["compare", files[0], other])
    assert "evaluate different cases (in only one of them: case9)" in capsys.readouterr().err


def test_micd_compare_tests_two_runs_of_a_results_file(tmp_path, capsys):
    from nnunetv2_micd.cli import main
    cases = {f"case{i}": 0.5 + 0.02 * i for i in range(6)}
    micd = _with_cases(_run("nnUNetTrainerMICD"), 0, {c: d + 0.01 for c, d in cases.items()})
    micd["student_a"] = {"dice": micd["dice"], "mean_dice": micd["mean_dice"],
                         "case_mean_dice": {**cases, "case0": 0.4}}
    results_file = str(tmp_path / "results.json")
    save_results(_results(_with_cases(_run(), 0, cases), micd), results_file)

    main(["compare", "--results", results_file, "nnUNetTrainerMICD__labeled10__seed0",
          "nnUNetTrainerBudget__labeled10__seed0"])
    assert "6 cases, Dice (mean over classes) of the first minus the second: mean +0.0100, 6 better / 0 worse" \
        in capsys.readouterr().out
    main(["compare", "--results", results_file, "nnUNetTrainerMICD__labeled10__seed0:student_a",
          "nnUNetTrainerBudget__labeled10__seed0"])
    assert "mean -0.0167, 0 better / 1 worse, Wilcoxon signed-rank p = 1 " in capsys.readouterr().out
    for name, message in (("nnUNetTrainerCPS__labeled10__seed0", "no run 'nnUNetTrainerCPS__labeled10__seed0'"),
                          ("nnUNetTrainerBudget__labeled10__seed0:student_a", "only ':student_a' after its name")):
        with pytest.raises(SystemExit):
            main(["compare", "--results", results_file, name, "nnUNetTrainerBudget__labeled10__seed0"])
        assert message in capsys.readouterr().err


def test_time_left_comes_from_finished_runs_then_from_measured_steps(tmp_path):
    from nnunetv2_micd.benchmark.progress import estimated_seconds_left
    runner = _runner(tmp_path, [
        {"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD", "nnUNetTrainerCPS"], "labeled": [10],
         "seeds": [0, 1]},
    ])
    steps = runner.protocol.total_steps
    results = _results({**_run(), "train_seconds": 100.0, "predict_seconds": 20.0})
    unfinished = [run for run in runner.protocol.runs if run.name not in results["runs"]]
    assert estimated_seconds_left(results, runner.folder, unfinished) is None  # nothing known of MICD and CPS
    results["cost"] = {"device": "cpu", "steps": 10, "trainers": {
        "nnUNetTrainerBudget": {"seconds_per_step": 0.01, "peak_memory_mib": 1.0},
        "nnUNetTrainerMICD": {"seconds_per_step": 0.1, "peak_memory_mib": 1.0},
        "nnUNetTrainerCPS": {"seconds_per_step": 0.05, "peak_memory_mib": 1.0}}}
    # Budget seed 1 like its finished seed 0; MICD and CPS (two seeds each) from their step times
    assert estimated_seconds_left(results, runner.folder, unfinished) == pytest.approx(120 + 2 * (0.1 + 0.05) * steps)


def test_status_tells_each_run_s_state_and_counts_only_the_epochs_left(tmp_path, capsys):
    from nnunetv2_micd.cli import main
    groups = [{"trainers": ["nnUNetTrainerBudget", "nnUNetTrainerMICD"], "labeled": [10], "seeds": [0, 1]}]
    runner = _runner(tmp_path, groups)
    runs = {run.name: run for run in runner.protocol.runs}
    micd0 = runs["nnUNetTrainerMICD__labeled10__seed0"]
    stale = {"trainer": micd0.trainer, "budget": {},
             "method": {**expected_method_config(runner.protocol, micd0), "lambda_max": 0.05}}
    results = _results({**_run(), "train_seconds": 100.0, "predict_seconds": 20.0, "mean_dice": 0.8123},
                       {**_run("nnUNetTrainerMICD"), "method_config": stale})
    results["protocol"] = runner.protocol.values
    work = tmp_path / "work"
    (work / "nnUNet_raw" / f"Dataset{runner.protocol.values['source_dataset_id']:03d}_Hippocampus").mkdir(parents=True)
    save_results(results, str(work / "results.json"))
    interrupted = work / "runs" / "nnUNetTrainerBudget__labeled10__seed1"
    interrupted.mkdir(parents=True)
    (interrupted / "train.log").write_text("2026-11-26 09:00:00: Epoch 0\nloss\n2026-11-26 09:05:00: Epoch 3\n")
    (work / "runs" / micd0.name).mkdir()
    (work / "runs" / micd0.name / "train.log").write_text("2026-11-25 09:00:00: Epoch 39\n")  # trained again, whole

    lines = runner.status()

    epochs = runner.protocol.budget["num_epochs"]
    assert lines[0].endswith(": no benchmark is running here")
    assert lines[1:5] == [
        "run 1/4: nnUNetTrainerBudget, 10 labeled, seed 0: finished, mean test Dice 0.8123",
        "run 2/4: nnUNetTrainerMICD, 10 labeled, seed 0: finished under other method settings (lambda_max 0.05 -> "
        "0.1): will be trained again",
        f"run 3/4: nnUNetTrainerBudget, 10 labeled, seed 1: training reached epoch 4/{epochs}, interrupted: a "
        f"restart continues there",
        "run 4/4: nnUNetTrainerMICD, 10 labeled, seed 1: not started",
    ]
    # the stale MICD run and MICD seed 1 whole (2 s each, from the finished MICD run), Budget seed 1 from epoch 3 on
    seconds_left = 2 * 2.0 + 120 * (1 - 3 / epochs)
    hours, rest = divmod(int(seconds_left), 3600)
    assert lines[5] == f"1 of 4 runs finished; time left about {hours}:{rest // 60:02d}:{rest % 60:02d}"
    main(["benchmark", str(tmp_path / "protocol.json"), "-o", str(work), "--status"])
    assert "training reached epoch 4/" in capsys.readouterr().out
    assert not (work / "nnUNet_preprocessed").exists()  # nothing was run


def test_one_benchmark_at_a_time_per_work_folder_and_status_names_its_run(tmp_path, capsys):
    from nnunetv2_micd.benchmark.lock import WorkFolderLock, running_benchmark
    from nnunetv2_micd.cli import main
    runner = _runner(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10], "seeds": [0, 1]}])
    work = tmp_path / "work"
    (work / "nnUNet_raw" / f"Dataset{runner.protocol.values['source_dataset_id']:03d}_Hippocampus").mkdir(parents=True)
    first, second = runner.protocol.runs
    for run in (first, second):
        (work / "runs" / run.name).mkdir(parents=True)
    (work / "runs" / first.name / "train.log").write_text("2026-11-26 09:00:00: Epoch 2\n")
    epochs = runner.protocol.budget["num_epochs"]

    with WorkFolderLock(str(work)) as lock:
        lock.working_on(second.name)
        assert running_benchmark(str(work)) == {"pid": os.getpid(), "run": second.name}
        starting = runner.status()
        (work / "runs" / second.name / "train.log").write_text("2026-11-26 09:00:00: Epoch 2\n")
        lines = runner.status()
        with pytest.raises(SystemExit):  # a second benchmark in the same folder is refused before it does anything
            main(["benchmark", str(tmp_path / "protocol.json"), "-o", str(work)])
        assert f"another micd benchmark (process {os.getpid()}) is running in {work}" in capsys.readouterr().err
        assert not (work / "nnUNet_preprocessed").exists()
        # a training started under the lock keeps the folder locked, even once the benchmark itself is gone
        training = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock.fileno(),))

    assert starting[2].endswith(": starting")
    assert lines[0].endswith(f": a benchmark is running here (process {os.getpid()})")
    assert lines[1].endswith(f"training reached epoch 3/{epochs}, interrupted: a restart continues there")
    assert lines[2].endswith(f"training reached epoch 3/{epochs}, running")
    assert lines[3] == "0 of 2 runs finished; time left unknown"  # no finished run, no measured cost
    assert running_benchmark(str(work)) is not None
    training.kill()
    training.wait()
    assert running_benchmark(str(work)) is None  # released once the last holder is gone
    assert runner.status()[2].endswith(", interrupted: a restart continues there")


def test_a_lock_being_written_is_read_as_held_by_an_unknown_process(tmp_path):
    from nnunetv2_micd.benchmark.lock import WorkFolderLock, running_benchmark
    with WorkFolderLock(str(tmp_path)) as lock:
        (tmp_path / "benchmark.lock").write_text('{"pid": 12')  # caught half-way through working_on
        assert running_benchmark(str(tmp_path)) == {"pid": None, "run": None}
        lock.working_on("run")
        assert running_benchmark(str(tmp_path)) == {"pid": os.getpid(), "run": "run"}


FAKE_TRAINING = """#!{python}
import sys, time
try:
    for epoch in range({epochs}):
        print(f"2026-12-04 00:00:00.000000: Epoch {{epoch}}", flush=True)
        time.sleep({epoch_seconds})
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""


def _train_with_a_stand_in(tmp_path, time_limit, epochs, epoch_seconds):
    """The runner's training step with a stand-in for nnUNetv2_train that prints nnU-Net's epoch lines (the real
    command is stopped so in the GPU benchmark; here only the runner's decisions are under test)."""
    from nnunetv2_micd.benchmark.lock import WorkFolderLock
    from nnunetv2_micd.benchmark.runner import BenchmarkRunner
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    stand_in = bin_folder / "nnUNetv2_train"
    stand_in.write_text(FAKE_TRAINING.format(python=sys.executable, epochs=epochs, epoch_seconds=epoch_seconds))
    stand_in.chmod(0o755)
    runner = BenchmarkRunner(_protocol_with(tmp_path, [{"trainers": ["nnUNetTrainerBudget"], "labeled": [10],
                                                        "seeds": [0]}]), str(tmp_path / "work"), "cpu",
                             time_limit=time_limit)
    runner.shell.environment["PATH"] = f"{bin_folder}{os.pathsep}{os.environ['PATH']}"
    run = runner.protocol.runs[0]
    os.makedirs(os.path.join(runner.folder.raw, "Dataset004_Hippocampus"))  # the model folder is named after it
    with WorkFolderLock(runner.folder.path) as lock:
        seconds, finished = runner.executor.train(run, runner.executor.run_environment(run), lock)
    log = (Path(runner.folder.run_folder(run)) / "train.log").read_text()
    return finished, seconds, log


def test_a_time_limit_stops_the_training_at_the_start_of_an_epoch_that_would_end_after_it(tmp_path):
    finished, seconds, log = _train_with_a_stand_in(tmp_path, time_limit=1.5, epochs=50, epoch_seconds=0.3)
    assert not finished
    assert log.rstrip().endswith("interrupted")  # stopped as Ctrl-C would, so nnU-Net keeps its last checkpoint
    epochs_started = log.count(": Epoch ")
    assert 3 <= epochs_started <= 6  # the epoch that would have ended after 1.5 s was stopped at its start
    assert seconds < 3.0


def test_without_reaching_the_time_limit_the_training_runs_to_its_end(tmp_path):
    finished, _, log = _train_with_a_stand_in(tmp_path, time_limit=600, epochs=4, epoch_seconds=0.05)
    assert finished
    assert log.count(": Epoch ") == 4 and log.rstrip().endswith("finished")


def test_the_seed_level_interval_pairs_each_seed_with_the_baselines_and_needs_two_seeds():
    from nnunetv2_micd.benchmark.report import seed_differences, seed_interval
    runs = [_run("nnUNetTrainerBudget", 10, seed, 0.80) for seed in (0, 1, 2)] + \
        [_run("nnUNetTrainerMICD", 10, seed, 0.80 + gain) for seed, gain in ((2, 0.03), (0, 0.01), (1, 0.02), (3, 0.5))]
    groups = group_runs(_results(*runs))
    differences = seed_differences(groups, "nnUNetTrainerMICD", 10)
    assert differences == pytest.approx([0.01, 0.02, 0.03])  # seed 3 has no baseline to pair with
    low, high = seed_interval(differences)
    half = 4.302653 * 0.01 / np.sqrt(3)  # Student t, 2 degrees of freedom, 97.5 %
    assert (low, high) == pytest.approx((0.02 - half, 0.02 + half))
    assert low < 0 < high  # three consistent gains of 1 to 3 points still do not resolve a gain
    assert seed_interval([0.01]) is None


def test_the_label_efficiency_axis_shows_the_labeled_counts_and_keeps_the_methods_apart(monkeypatch):
    from nnunetv2_micd.benchmark import report
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, filename: figures.append(fig))
    report.plot_label_efficiency(_results(_run("nnUNetTrainerBudget", 6), _run("nnUNetTrainerMICD", 6),
                                          _run("nnUNetTrainerBudget", 14), _run("nnUNetTrainerMICD", 14),
                                          _run("nnUNetTrainerBudget", "all", mean_dice=0.9)), "unused.png")
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [6, 14]  # the fully supervised count is the dashed line, not a tick
    budget, micd = (container.lines[0].get_xdata() for container in ax.containers)  # errorbar's data lines
    assert all(b < m for b, m in zip(budget, micd))  # shifted sideways, so their error bars cannot overlap
