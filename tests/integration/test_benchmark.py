"""``micd benchmark`` and ``micd report`` end to end on a tiny synthetic protocol, including an interruption."""
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from nnunetv2_micd.benchmark.protocol import load_protocol
from nnunetv2_micd.benchmark.results import load_results, schema_problems
from nnunetv2_micd.benchmark.records import expected_method_config
from nnunetv2_micd.dataset_conversion.synthetic import SyntheticSpec, write_synthetic_dataset
from tests.conftest import micd

TRAINERS = ["nnUNetTrainerBudget", "nnUNetTrainerMICD", "nnUNetTrainerMeanTeacher", "nnUNetTrainerCPS"]
PROTOCOL = {
    "protocol_version": 1,
    "name": "synthetic_test",
    "description": "A tiny synthetic protocol.",
    "source_dataset_id": 801,
    "first_dataset_id": 810,
    "test_cases": 3,
    "split_seed": 0,
    "configuration": "3d_fullres",
    "tiny_plans": {"features": [4, 8, 16], "batch_size": 2},
    "budget": {"num_epochs": 3, "iterations_per_epoch": 2, "val_iterations": 1},
    "cost_steps": 1,
    "method_configs": {"nnUNetTrainerMICD": {"rampup_fraction": 0.5}},
    "runs": [
        {"trainers": TRAINERS, "labeled": [2], "seeds": [0]},
        {"trainers": ["nnUNetTrainerBudget"], "labeled": ["all"], "seeds": [0]},
    ],
}


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("protocol")
    source = folder / "Dataset801_SyntheticSource"
    write_synthetic_dataset(str(source), SyntheticSpec(num_labeled=9, num_unlabeled=0, num_test=2, shape=(24, 24, 24)))
    path = folder / "protocol.json"
    path.write_text(json.dumps({**PROTOCOL, "source": {"nnunet_raw_folder": str(source)}}))
    return path


def _benchmark(protocol_file, work):
    return subprocess.Popen([sys.executable, "-m", "nnunetv2_micd.cli", "benchmark", str(protocol_file), "-o",
                             str(work), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "nnUNet_n_proc_DA": "0"},
                            start_new_session=True)


def _kill_with_its_trainings(process):
    """SIGKILL, as a crash would end them: the benchmark, and each nnUNetv2_train it started in a process group of
    its own, which a kill of the benchmark's group alone would leave training on."""
    with open(f"/proc/{process.pid}/task/{process.pid}/children") as children:
        trainings = [int(pid) for pid in children.read().split()]
    for group in [process.pid] + trainings:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait()


def _interrupt_during_a_training(process, work, timeout=600):
    """SIGKILLs the benchmark and its nnUNetv2_train once some unfinished run has a checkpoint_latest.pth."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        results = work / "results.json"
        finished = json.loads(results.read_text())["runs"] if results.is_file() else {}
        for checkpoint in (work / "runs").glob("*/nnUNet_results/*/*/fold_all/checkpoint_latest.pth"):
            run = checkpoint.parts[-6]
            if run not in finished and not (checkpoint.parent / "checkpoint_final.pth").exists():
                _kill_with_its_trainings(process)
                return run, set(finished)
        if process.poll() is not None:
            pytest.fail("the benchmark ended before it could be interrupted:\n" + process.stdout.read()[-3000:])
        time.sleep(0.2)
    pytest.fail("no training reached its first checkpoint in time")


def _while_running(protocol_file, process, work, timeout=300):
    """``--status`` and a second benchmark in the same work folder, once the first holds its lock."""
    lock = work / "benchmark.lock"
    deadline = time.time() + timeout
    while not (lock.is_file() and lock.stat().st_size):
        if process.poll() is not None or time.time() > deadline:
            pytest.fail("the benchmark did not take its work folder's lock")
        time.sleep(0.1)
    status = micd("benchmark", protocol_file, "-o", work, "--status").stdout
    second = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "benchmark", str(protocol_file), "-o",
                             str(work)], capture_output=True, text=True)
    return status, second


@pytest.fixture(scope="module")
def finished_benchmark(protocol_file, nnunet_folders, tmp_path_factory):
    """Runs the protocol, kills it during a training, and runs it again to the end."""
    work = tmp_path_factory.mktemp("benchmark")
    first = _benchmark(protocol_file, work)
    status_while_running, second_benchmark = _while_running(protocol_file, first, work)
    interrupted_run, finished_before = _interrupt_during_a_training(first, work)
    status_after_interruption = micd("benchmark", protocol_file, "-o", work, "--status").stdout
    before = load_results(str(work / "results.json"))
    past_time_limit = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "benchmark", str(protocol_file),
                                      "-o", str(work), "--device", "cpu", "--time-limit", "0"],
                                     capture_output=True, text=True)
    second = _benchmark(protocol_file, work)
    try:
        output, _ = second.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        _kill_with_its_trainings(second)
        pytest.fail("the resumed benchmark did not finish in 20 minutes:\n" + second.communicate()[0][-3000:])
    assert second.returncode == 0, output[-4000:]
    return {"work": work, "output": output, "interrupted": interrupted_run, "finished_before": finished_before,
            "results_before": before, "results": load_results(str(work / "results.json")), "first_pid": first.pid,
            "status_while_running": status_while_running, "second_benchmark": second_benchmark,
            "status_after_interruption": status_after_interruption, "past_time_limit": past_time_limit}


def test_every_run_is_trained_predicted_and_evaluated(finished_benchmark, protocol_file):
    results = finished_benchmark["results"]
    names = {f"{t}__labeled2__seed0" for t in TRAINERS} | {"nnUNetTrainerBudget__labeledall__seed0"}
    assert set(results["runs"]) == names
    assert schema_problems(results) == []
    for run in results["runs"].values():
        assert run["num_test"] == 3 and len(run["case_mean_dice"]) == 3
        assert run["steps"] == 6 and len(run["curves"]["train_losses"]) == 3
        assert len(run["curves"]["epoch_seconds"]) == 3
        literature = run["literature"]  # the literature's metrics, from the same predictions as the Dice above
        assert set(literature["mean"]) == set(results["labels"]) and literature["distance_unit"] == "voxels"
        assert sum(run["curves"]["epoch_seconds"]) <= run["train_seconds"]  # the epochs lie within the training
        expected_labeled = 6 if run["labeled"] == "all" else run["labeled"]
        assert run["num_labeled"] == expected_labeled and run["num_unlabeled"] == 6 - expected_labeled
        assert (finished_benchmark["work"] / "runs" / f"{run['trainer']}__labeled{run['labeled']}__seed0" /
                "predictions" / "summary.json").is_file()
    source = finished_benchmark["work"] / "nnUNet_raw" / "Dataset801_SyntheticSource"
    assert sorted(p.name for p in source.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]  # no test cases
    # two-student trainers are also predicted with student A alone, as a plain nnU-Net model
    assert {run["trainer"] for run in results["runs"].values() if "student_a" in run} == {"nnUNetTrainerMICD",
                                                                                          "nnUNetTrainerCPS"}
    for trainer in ("nnUNetTrainerMICD", "nnUNetTrainerCPS"):
        student_a = finished_benchmark["work"] / "runs" / f"{trainer}__labeled2__seed0" / "student_a"
        assert (student_a / "predictions" / "summary.json").is_file()
        assert len(list(student_a.glob("nnUNet_results/*/nnUNetTrainer__*/fold_all/checkpoint_final.pth"))) == 1
    # the held-out split is predicted, on the CPU in one process; nnU-Net's validation on fold 'all' (the
    # training cases) is left out
    for run_folder in (finished_benchmark["work"] / "runs").iterdir():
        assert "Running in non-multiprocessing mode" in (run_folder / "predict.log").read_text()
        assert "Final validation left out (MICD_FINAL_VALIDATION=0)" in (run_folder / "train.log").read_text()
        assert not list((run_folder / "nnUNet_results").glob("*/*/fold_all/validation"))
    micd_run = results["runs"]["nnUNetTrainerMICD__labeled2__seed0"]
    assert micd_run["method_config"]["method"]["rampup_fraction"] == 0.5  # the protocol's method config
    assert micd_run["method_config"]["budget"]["seed"] == 0
    assert set(results["cost"]["trainers"]) == set(TRAINERS)
    # what a resumed benchmark expects of a finished run is what the trainers recorded (nothing is redone)
    protocol = load_protocol(str(protocol_file))[0]
    expected = {run.name: expected_method_config(protocol, run) for run in protocol.runs}
    assert sum(config is not None for config in expected.values()) == 3  # MICD, Mean Teacher, CPS
    assert all(config is None or results["runs"][name]["method_config"]["method"] == config
               for name, config in expected.items())


def test_an_interrupted_benchmark_continues_where_it_stopped(finished_benchmark):
    before, after = finished_benchmark["results_before"], finished_benchmark["results"]
    for name in finished_benchmark["finished_before"]:
        assert after["runs"][name] == before["runs"][name]  # skipped, not redone
    assert "continuing the interrupted training from its last checkpoint" in finished_benchmark["output"]
    assert re.search(r"epoch 3/3, run time left \d+:\d\d:\d\d\n", finished_benchmark["output"])  # progress shown
    log = (finished_benchmark["work"] / "runs" / finished_benchmark["interrupted"] / "train.log").read_text()
    assert log.count("Epoch 0\n") == 1  # the second attempt started from the checkpoint, not from epoch 0


def test_a_benchmark_past_its_time_limit_starts_no_run_and_says_how_to_continue(finished_benchmark):
    stopped = finished_benchmark["past_time_limit"]
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert "left (the time limit was reached: the same command continues)" in stopped.stdout
    assert "run 1/" not in stopped.stdout and "epoch" not in stopped.stdout


def test_one_benchmark_at_a_time_and_status_tells_whether_one_is_running(finished_benchmark, protocol_file):
    work, pid = finished_benchmark["work"], finished_benchmark["first_pid"]
    assert f"a benchmark is running here (process {pid})" in finished_benchmark["status_while_running"]
    second = finished_benchmark["second_benchmark"]
    assert second.returncode == 1
    assert f"another micd benchmark (process {pid}) is running in {work}" in second.stderr
    after = finished_benchmark["status_after_interruption"]
    assert "no benchmark is running here" in after
    run, = [run for run in load_protocol(str(protocol_file))[0].runs if run.name == finished_benchmark["interrupted"]]
    interrupted, = [line for line in after.splitlines() if f": {run.describe()}: " in line]
    assert interrupted.endswith(("interrupted: a restart continues there", "prediction and evaluation to do"))


def test_a_finished_benchmark_run_again_redoes_nothing(finished_benchmark, protocol_file):
    result = micd("benchmark", protocol_file, "-o", finished_benchmark["work"], "--only", "nnUNetTrainerBudget",
                  env={**os.environ, "nnUNet_n_proc_DA": "0"})
    assert "running only the runs of nnUNetTrainerBudget" in result.stdout
    assert "5 of 5 runs finished" in result.stdout and "superseded" not in result.stdout
    assert load_results(str(finished_benchmark["work"] / "results.json")) == finished_benchmark["results"]


def test_student_a_is_added_to_a_finished_run_recorded_without_it(finished_benchmark, protocol_file):
    results_file = finished_benchmark["work"] / "results.json"
    results = json.loads(results_file.read_text())
    del results["runs"]["nnUNetTrainerCPS__labeled2__seed0"]["student_a"]
    results_file.write_text(json.dumps(results))
    environment = {**os.environ, "nnUNet_n_proc_DA": "0"}
    other_runs_only = micd("benchmark", protocol_file, "-o", finished_benchmark["work"], "--only",
                           "nnUNetTrainerBudget", env=environment)
    assert "with student A alone" not in other_runs_only.stdout  # --only: the other runs wait
    result = micd("benchmark", protocol_file, "-o", finished_benchmark["work"], env=environment)
    assert result.stdout.count("with student A alone") == 1 and "finished: mean test Dice" not in result.stdout
    assert load_results(str(results_file)) == finished_benchmark["results"]  # the same prediction again


def test_results_carried_to_a_new_work_folder_resume_there(finished_benchmark, protocol_file, tmp_path):
    """Another machine: the datasets are made again from the source and nothing finished is trained again (or
    preprocessed for), but only if the recorded runs were evaluated on the held-out cases the new datasets hold."""
    recorded = json.loads((finished_benchmark["work"] / "results.json").read_text())
    moved = copy.deepcopy(recorded)
    run = moved["runs"]["nnUNetTrainerBudget__labeled2__seed0"]
    run["case_mean_dice"] = {f"other_{case}": dice for case, dice in run["case_mean_dice"].items()}
    (tmp_path / "results.json").write_text(json.dumps(moved))
    environment = {**os.environ, "nnUNet_n_proc_DA": "0"}
    refused = subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "benchmark", str(protocol_file), "-o",
                              str(tmp_path)], capture_output=True, text=True, env=environment)
    assert refused.returncode == 1
    assert "nnUNetTrainerBudget__labeled2__seed0" in refused.stderr and "other held-out cases" in refused.stderr
    assert not list((tmp_path / "nnUNet_preprocessed").glob("Dataset81*"))  # refused before preprocessing
    (tmp_path / "results.json").write_text(json.dumps(recorded))
    result = micd("benchmark", protocol_file, "-o", tmp_path, env=environment)
    assert "5 runs, 5 already finished" in result.stdout and "5 of 5 runs finished" in result.stdout
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "nnUNet_preprocessed").iterdir())  # nothing to train, so nothing preprocessed
    assert load_results(str(tmp_path / "results.json"))["runs"] == recorded["runs"]


def _benchmark_with_changed_protocol(change, finished_benchmark, protocol_file, tmp_path):
    changed = json.loads(protocol_file.read_text())
    change(changed)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    return subprocess.run([sys.executable, "-m", "nnunetv2_micd.cli", "benchmark", str(path), "-o",
                           str(finished_benchmark["work"])], capture_output=True, text=True)


def test_a_changed_protocol_is_refused(finished_benchmark, protocol_file, tmp_path):
    def longer(protocol):
        protocol["budget"]["num_epochs"] = 4
    result = _benchmark_with_changed_protocol(longer, finished_benchmark, protocol_file, tmp_path)
    assert result.returncode == 1
    assert "other protocol settings (budget)" in result.stderr


def test_a_dataset_made_for_another_labeled_count_is_refused(finished_benchmark, protocol_file, tmp_path):
    def three_labeled(protocol):
        protocol["runs"][0]["labeled"] = [3]  # Dataset810 now stands for 3 labeled cases, but holds 2
    result = _benchmark_with_changed_protocol(three_labeled, finished_benchmark, protocol_file, tmp_path)
    assert result.returncode == 1
    assert "does not have 3 labeled cases" in result.stderr


def test_report_writes_table_and_pictures(finished_benchmark, tmp_path):
    micd("report", finished_benchmark["work"] / "results.json", "-o", tmp_path)
    report = (tmp_path / "report.md").read_text()
    dice_part, rest = report.split("## Case by case against the labeled-only baseline")
    paired_part, cost_part = rest.split("## Cost per training step")
    table = [line for line in dice_part.splitlines() if line.startswith("| ")]
    assert table[0] == "| method | labeled | seeds | large | medium | small | mean Dice | gap closed |"
    rows = [(row.split(" | ")[0][2:], row.split(" | ")[1]) for row in table[1:]]
    assert rows == [("nnUNetTrainerBudget", "2"), ("nnUNetTrainerCPS", "2"),
                    ("nnUNetTrainerCPS, student A alone", "2"), ("nnUNetTrainerMICD", "2"),
                    ("nnUNetTrainerMICD, student A alone", "2"),
                    ("nnUNetTrainerMeanTeacher", "2"), ("fully supervised", "6")]
    paired = [row.split(" | ")[:3] for row in paired_part.splitlines() if row.startswith("| nnUNet")]
    assert paired == [["| nnUNetTrainerCPS", "2", "1"], ["| nnUNetTrainerCPS, student A alone", "2", "1"],
                      ["| nnUNetTrainerMICD", "2", "1"], ["| nnUNetTrainerMICD, student A alone", "2", "1"],
                      ["| nnUNetTrainerMeanTeacher", "2", "1"]]
    cost_rows = {line.split(" | ")[0][2:]: line for line in cost_part.splitlines() if line.startswith("| nnUNet")}
    assert set(cost_rows) == set(TRAINERS)
    assert cost_rows["nnUNetTrainerBudget"].split(" | ")[2] == "1.00"  # ratios to the baseline
    for picture in ("label_efficiency.png", "per_class.png", "training_curves.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({picture})" in report
