#!/usr/bin/env python
"""Does labeling the patients ``micd suggest`` picks help more than labeling patients picked at random?

At ``acdc_cpu``'s 3 labeled patients: ``micd suggest`` ranks the unlabeled patients with a MICD model trained on
those 3; the top ``--patients`` are added to the labeled set, and so are ``--patients`` drawn at random (``--draws``
times, seeded); each labeled set trains labeled-only nnU-Net at ``acdc_cpu``'s plans and budget through ``micd
benchmark`` (one small protocol per pick, so each pick is a resumable benchmark of its own) and is evaluated on
the validation patients. Everything that decides the outcome is written to OUT as soon as it exists (the ranking,
the picks, each pick's results.json, the comparison), and a rerun skips what OUT already holds.

    scripts/suggest_vs_random.py ACDC_WORK MODEL -o OUT [--work FOLDER]

ACDC_WORK is a work folder of ``micd benchmark acdc_cpu`` (its source imported and its 3-patient dataset made),
MODEL a MICD model folder trained at 3 labeled patients (e.g. an unpacked ``docs/benchmarks/acdc/models`` zip).
"""
import argparse
import json
import os
import shutil
import subprocess

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, maybe_mkdir_p, save_json

from nnunetv2_micd.benchmark.protocol import BUILTIN_FOLDER
from nnunetv2_micd.benchmark.report import compare_case_dice
from nnunetv2_micd.commands import micd_command
from nnunetv2_micd.paths import trainer_path
from nnunetv2_micd.plotting import grouped_bars

SOURCE = "Dataset800_ACDC"
THREE_PATIENTS = "labeled_3_patients.txt"
SMALL_DATASET = "Dataset810_ACDC"
PATIENT_PATTERN = r"patient\d+"
TRAINER = "nnUNetTrainerBudget"
THREE_PATIENTS_RUN = f"{TRAINER}__labeled6__seed0"  # acdc_cpu's run on the 3 patients alone, at the same seed


def micd(*args: str) -> None:
    subprocess.run(micd_command(*args), check=True, env={**os.environ, "nnUNet_extTrainer": trainer_path()})


def suggest(acdc_work: str, model: str, work: str, out: str) -> list:
    """The model's ranking of the unlabeled patients (the mean score of a patient's two frames)."""
    ranking_file = join(out, "suggest", "ranking.json")
    if not isfile(ranking_file):
        images = join(acdc_work, "nnUNet_raw", SMALL_DATASET, "imagesUnlabeled")
        output = join(work, "suggest")
        micd("suggest", "-i", images, "-o", output, "-m", model, "-f", "all", "-device", "cpu",
             "--group", PATIENT_PATTERN)
        maybe_mkdir_p(join(out, "suggest"))
        for name in ("ranking.json", "ranking.csv", "uncertainty.json"):
            shutil.copy(join(output, name), join(out, "suggest", name))
    return load_json(ranking_file)["ranking"]


def choose_picks(ranking: list, patients: int, draws: int, seed: int) -> dict:
    """Pick name -> the patients it adds: the top of the ranking, and seeded random draws from the same patients."""
    candidates = sorted(entry["case"] for entry in ranking)
    rng = np.random.default_rng(seed)
    picks = {"suggested": [entry["case"] for entry in ranking[:patients]]}
    for draw in range(1, draws + 1):
        picks[f"random{draw}"] = sorted(rng.choice(candidates, patients, replace=False).tolist())
    return picks


def pick_protocol(name: str, list_file: str, labeled: int, source: str) -> dict:
    """acdc_cpu's plans and budget, one labeled-only run on this pick's labeled cases."""
    acdc_cpu = load_json(join(BUILTIN_FOLDER, "acdc_cpu.json"))
    return {"protocol_version": acdc_cpu["protocol_version"], "name": f"acdc_cpu_pick_{name}",
            "description": f"acdc_cpu's labeled-only run with the labeled cases of {list_file}",
            "source": {"nnunet_raw_folder": source},
            **{key: acdc_cpu[key] for key in ("source_dataset_id", "test_cases", "held_out", "split_seed",
                                             "configuration", "tiny_plans", "budget", "cost_steps")},
            "first_dataset_id": 820, "labeled_lists": {str(labeled): list_file},
            "runs": [{"trainers": [TRAINER], "labeled": [labeled], "seeds": [0]}]}


def train_pick(name: str, patients: list, acdc_work: str, work: str, out: str) -> dict:
    results_file = join(out, name, "results.json")
    if isfile(results_file):
        return load_json(results_file)
    source = join(acdc_work, "nnUNet_raw", SOURCE)
    with open(join(source, THREE_PATIENTS)) as f:
        cases = [line.strip() for line in f if line.strip()]
    cases += [f"{patient}_{frame}" for patient in patients for frame in ("frame01", "frame02")]
    list_file = f"labeled_pick_{name}.txt"
    with open(join(source, list_file), "w") as f:  # micd benchmark reads it from the source it imports
        f.write("\n".join(cases) + "\n")
    maybe_mkdir_p(join(out, name))
    protocol_file = join(out, name, "protocol.json")
    save_json(pick_protocol(name, list_file, len(cases), source), protocol_file, sort_keys=False)
    micd("benchmark", protocol_file, "-o", join(work, name), "--device", "cpu")
    shutil.copy(join(work, name, "results.json"), results_file)
    return load_json(results_file)


def only_run(results: dict) -> dict:
    (run,) = results["runs"].values()
    return run


def compare(picks: dict, results: dict) -> dict:
    """Mean validation Dice of every pick, and the suggested pick against each random one, case by case."""
    suggested = only_run(results["suggested"])["case_mean_dice"]
    comparison = {"picks": {name: {"patients": patients, "mean_dice": only_run(results[name])["mean_dice"]}
                            for name, patients in picks.items()}}
    for name in picks:
        if name != "suggested":
            c = compare_case_dice(suggested, only_run(results[name])["case_mean_dice"], "suggested", name)
            comparison[f"suggested_minus_{name}"] = c._asdict()
    return comparison


def plot_picks(results: dict, three_patients: dict, filename: str) -> None:
    """Validation Dice per class of every labeled set, beside the 3 patients alone."""
    runs = {"3 patients": three_patients, **{f"+ {name}": only_run(r) for name, r in results.items()}}
    labels = next(iter(results.values()))["labels"]
    series = {name: [run["dice"][value] for run in runs.values()] for value, name in labels.items()}
    series["mean"] = [run["mean_dice"] for run in runs.values()]
    grouped_bars(filename, list(runs), series, ylabel="validation Dice", zoom=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("acdc_work", help="work folder of micd benchmark acdc_cpu")
    parser.add_argument("model", help="MICD model folder trained at 3 labeled patients")
    parser.add_argument("-o", required=True, help="folder for the ranking, the picks and every result")
    parser.add_argument("--work", default="suggest_vs_random_work", help="folder for the trainings")
    parser.add_argument("--patients", type=int, default=2, help="patients added to the labeled set")
    parser.add_argument("--draws", type=int, default=3, help="random picks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random picks")
    args = parser.parse_args()
    picks_file = join(args.o, "picks.json")
    if isfile(picks_file):
        picks = load_json(picks_file)
    else:
        picks = choose_picks(suggest(args.acdc_work, args.model, args.work, args.o), args.patients, args.draws,
                             args.seed)
        maybe_mkdir_p(args.o)
        save_json(picks, picks_file, sort_keys=False)
    results = {name: train_pick(name, patients, args.acdc_work, args.work, args.o) for name, patients in picks.items()}
    comparison = compare(picks, results)
    three_patients = load_json(join(args.acdc_work, "results.json"))["runs"][THREE_PATIENTS_RUN]
    comparison["three_patients_mean_dice"] = three_patients["mean_dice"]
    save_json(comparison, join(args.o, "comparison.json"), sort_keys=False)
    plot_picks(results, three_patients, join(args.o, "comparison.png"))
    print(json.dumps(comparison, indent=1))


if __name__ == "__main__":
    main()
