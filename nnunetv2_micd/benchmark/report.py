"""``micd report``: the results file as a markdown table and pictures that people read.

- ``report.md``: mean ± std Dice on the held-out (test or validation) cases over seeds, per class and averaged,
  per method and labeled count; the gap each semi-supervised method closes between the labeled-only baseline and
  the fully supervised model; seconds per step and peak memory as ratios to the baseline; and each method against
  the baseline case by case (same labeled cases and seed), which separates a small gain from case-to-case noise
  better than a difference of means;
- ``label_efficiency.png``: mean Dice against the number of labeled cases, one line per method;
- ``per_class.png``: Dice per class and method at every labeled count;
- ``training_curves.png``: training loss and nnU-Net's pseudo-Dice (on the labeled training cases) per epoch.
"""
import os
from collections import defaultdict
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from scipy.stats import t as student_t, wilcoxon

from nnunetv2_micd.benchmark.protocol import ALL_LABELED, LABELED_ONLY_TRAINER, Protocol
from nnunetv2_micd.benchmark.results import load_results, memory_measure
from nnunetv2_micd.evaluation.summaries import dice_from_summary
from nnunetv2_micd.errors import DataError, UsageError
from nnunetv2_micd.plotting import grouped_bars, plt, save_figure
from nnunetv2_micd.tables import markdown_table

UPPER_BOUND = "fully supervised"
STUDENT_A = ", student A alone"
STUDENT_A_NOTE = (" Trainers with two students predict with both; the rows 'student A alone' are the same runs "
                  "predicting with student A, nnU-Net's planned network, alone: the difference is what the "
                  "two-network ensemble adds at inference, the rest is what the training gives one network.")

Group = Tuple[str, object]  # (method: the trainer with its tag, labeled)


def group_runs(results: dict, with_student_a: bool = False) -> Dict[Group, List[dict]]:
    """Finished runs by (method, labeled), seeds together; the upper bound is filed as its own method. With
    ``with_student_a``, two-student runs predicted by student A alone form a method of their own."""
    groups: Dict[Group, List[dict]] = defaultdict(list)
    for run in results["runs"].values():
        method = UPPER_BOUND if run["labeled"] == ALL_LABELED else run.get("method", run["trainer"])
        groups[(method, run["labeled"])].append(run)
        if with_student_a and "student_a" in run:
            groups[(method + STUDENT_A, run["labeled"])].append({**run, **run["student_a"]})
    return dict(groups)


def _held_out(results: dict) -> str:
    return Protocol(results["protocol"]).held_out


def _mean_std(values: List[float]) -> Tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(values: List[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def _upper_bound_dice(groups: Dict[Group, List[dict]]) -> Optional[float]:
    runs = groups.get((UPPER_BOUND, ALL_LABELED))
    return float(np.mean([r["mean_dice"] for r in runs])) if runs else None


def gap_closed(groups: Dict[Group, List[dict]], trainer: str, labeled) -> Optional[float]:
    """(method − labeled-only) / (fully supervised − labeled-only), on mean Dice averaged over seeds."""
    upper = _upper_bound_dice(groups)
    baseline = groups.get((LABELED_ONLY_TRAINER, labeled))
    method = groups.get((trainer, labeled))
    if upper is None or not baseline or not method:
        return None
    baseline_dice = np.mean([r["mean_dice"] for r in baseline])
    if upper <= baseline_dice:
        return None  # no gap to close: the budget is too small for the comparison to mean anything
    return float((np.mean([r["mean_dice"] for r in method]) - baseline_dice) / (upper - baseline_dice))


def _ordered_groups(groups: Dict[Group, List[dict]]) -> List[Group]:
    def key(group: Group):
        trainer, labeled = group
        return (labeled == ALL_LABELED, labeled if labeled != ALL_LABELED else 0, trainer != LABELED_ONLY_TRAINER,
                trainer)
    return sorted(groups, key=key)


def dice_table(results: dict) -> str:
    labels = results["labels"]
    groups = group_runs(results, with_student_a=True)
    rows = []
    for trainer, labeled in _ordered_groups(groups):
        runs = groups[(trainer, labeled)]
        gap = None if trainer in (LABELED_ONLY_TRAINER, UPPER_BOUND) else gap_closed(groups, trainer, labeled)
        rows.append([trainer, str(runs[0]["num_labeled"]), str(len(runs)),
                     *[_cell([r["dice"][value] for r in runs]) for value in labels],
                     _cell([r["mean_dice"] for r in runs]), "" if gap is None else f"{100 * gap:.0f} %"])
    return markdown_table(["method", "labeled", "seeds", *labels.values(), "mean Dice", "gap closed"], rows)


def paired_differences(groups: Dict[Group, List[dict]], method: str, labeled) -> Tuple[int, Dict[str, float]]:
    """Per test case, the method's mean Dice minus the labeled-only baseline's, averaged over the seeds both have
    at this labeled count (``groups`` from :func:`group_runs`); returns (number of paired seeds, {case: difference})."""
    def by_seed(name):
        return {r["seed"]: r["case_mean_dice"] for r in groups.get((name, labeled), [])}
    method_runs, baseline_runs = by_seed(method), by_seed(LABELED_ONLY_TRAINER)
    seeds = sorted(method_runs.keys() & baseline_runs.keys())
    differences = defaultdict(list)
    for seed in seeds:
        for case, dice in method_runs[seed].items():
            if dice is not None and baseline_runs[seed].get(case) is not None:
                differences[case].append(dice - baseline_runs[seed][case])
    return len(seeds), {case: float(np.mean(values)) for case, values in differences.items()}


def seed_differences(groups: Dict[Group, List[dict]], method: str, labeled) -> List[float]:
    """Per training seed both have at this labeled count: the method's mean Dice minus the labeled-only baseline's."""
    baseline = {r["seed"]: r["mean_dice"] for r in groups.get((LABELED_ONLY_TRAINER, labeled), [])}
    return [r["mean_dice"] - baseline[r["seed"]] for r in sorted(groups.get((method, labeled), []),
                                                                 key=lambda r: r["seed"]) if r["seed"] in baseline]


def seed_interval(differences: List[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """Student-t interval of the mean seed-paired difference: the seeds, not the cases, are the independent repeats
    of a training, so this is the interval a gain over the baseline must clear. None below two seeds."""
    if len(differences) < 2:
        return None
    mean, sd = float(np.mean(differences)), float(np.std(differences, ddof=1))
    half = float(student_t.ppf(0.5 + level / 2, len(differences) - 1)) * sd / np.sqrt(len(differences))
    return mean - half, mean + half


class PairedComparison(NamedTuple):
    """Per-case differences of one model against another on the same test cases."""
    num_cases: int
    mean_difference: float
    better: int
    worse: int
    p_value: float  # two-sided Wilcoxon signed-rank test; 1.0 when every difference is zero

    @classmethod
    def of(cls, differences: Dict[str, float]) -> "PairedComparison":
        values = np.array(list(differences.values()))
        p_value = float(wilcoxon(values).pvalue) if np.any(values != 0) else 1.0
        return cls(len(values), float(values.mean()), int((values > 0).sum()), int((values < 0).sum()), p_value)


def compare_case_dice(cases: Dict[str, Optional[float]], reference: Dict[str, Optional[float]], name: str,
                      reference_name: str) -> PairedComparison:
    """Two models' Dice (mean over classes) on the same held-out cases, case by case: the first minus the second, as
    the report compares a method with the baseline."""
    if cases.keys() != reference.keys():
        only = sorted(cases.keys() ^ reference.keys())
        raise DataError(f"{name} and {reference_name} evaluate different cases (in only one of "
                        f"them: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''})")
    differences = {case: dice - reference[case] for case, dice in cases.items()
                   if dice is not None and reference[case] is not None}
    if not differences:
        raise DataError(f"{name} and {reference_name} have no case with a class to compare")
    return PairedComparison.of(differences)


def compare_summaries(summary_file: str, reference_summary_file: str) -> PairedComparison:
    """Two predictions of the same test cases, each evaluated by nnUNetv2_evaluate_folder."""
    cases, reference = (dice_from_summary(f)["case_mean_dice"] for f in (summary_file, reference_summary_file))
    return compare_case_dice(cases, reference, summary_file, reference_summary_file)


def run_case_dice(results: dict, name: str) -> Dict[str, Optional[float]]:
    """Per-case Dice of the run ``name`` in a results file; ``<run>:student_a`` for its student A alone."""
    run_name, _, part = name.partition(":")
    run = results["runs"].get(run_name)
    if run is None:
        raise UsageError(f"no run {run_name!r} in the results file; its runs: {', '.join(sorted(results['runs']))}")
    if not part:
        return run["case_mean_dice"]
    if part != "student_a" or "student_a" not in run:
        raise UsageError(f"{name}: a run has only ':student_a' after its name, for a two-student trainer's run")
    return run["student_a"]["case_mean_dice"]


def compare_runs(results_file: str, name: str, reference_name: str) -> PairedComparison:
    """Two runs of a benchmark's results file (see :func:`run_case_dice` for the names)."""
    results = load_results(results_file)
    return compare_case_dice(run_case_dice(results, name), run_case_dice(results, reference_name), name,
                             reference_name)


def paired_table(results: dict) -> str:
    rows = []
    groups = group_runs(results, with_student_a=True)
    for trainer, labeled in _ordered_groups(groups):
        if trainer in (LABELED_ONLY_TRAINER, UPPER_BOUND):
            continue
        seeds, differences = paired_differences(groups, trainer, labeled)
        if not differences:
            continue
        comparison = PairedComparison.of(differences)
        interval = seed_interval(seed_differences(groups, trainer, labeled))
        rows.append([trainer, str(groups[(trainer, labeled)][0]["num_labeled"]), str(seeds),
                     f"{comparison.mean_difference:+.4f}", f"{comparison.better} / {comparison.worse}",
                     f"{comparison.p_value:.3g}",
                     "one seed: none" if interval is None else f"{interval[0]:+.4f} to {interval[1]:+.4f}"])
    if not rows:
        return "No method has a seed in common with the labeled-only baseline yet."
    return markdown_table(["method", "labeled", "paired seeds", "mean Δ Dice per case", "cases better / worse",
                           "Wilcoxon p (two-sided)", "95 % interval over seeds"], rows)


def cost_table(results: dict) -> str:
    cost = results.get("cost")
    if not cost or LABELED_ONLY_TRAINER not in cost["trainers"]:
        return "No cost measurement in the results file."
    baseline = cost["trainers"][LABELED_ONLY_TRAINER]
    memory_name = memory_measure(cost["device"])
    rows = [[trainer, f"{values['seconds_per_step']:.3f}",
             f"{values['seconds_per_step'] / baseline['seconds_per_step']:.2f}", f"{values['peak_memory_mib']:.0f}",
             f"{values['peak_memory_mib'] / max(baseline['peak_memory_mib'], 1e-6):.2f}"]
            for trainer, values in sorted(cost["trainers"].items(), key=lambda item: item[1]["seconds_per_step"])]
    return (f"Measured on {cost['device']} by `micd bench-step`: each trainer in a fresh process, one after the "
            f"other, median of {cost['steps']} steps on batches drawn beforehand; memory is the {memory_name} of "
            f"the training steps.\n\n"
            + markdown_table(["method", "seconds per step", "× baseline", "peak memory (MiB)", "× baseline"], rows))


def plot_label_efficiency(results: dict, filename: str) -> None:
    """On a log axis of labeled cases (a fully supervised count far to the right would squeeze the others into a
    corner), each method's points shifted a little sideways so that their error bars stay apart."""
    groups = group_runs(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    trainers = sorted({t for t, labeled in groups if labeled != ALL_LABELED})
    for index, trainer in enumerate(trainers):
        points = sorted((runs[0]["num_labeled"], [r["mean_dice"] for r in runs])
                        for (t, labeled), runs in groups.items() if t == trainer)
        shift = 1 + 0.02 * (index - (len(trainers) - 1) / 2)
        means, stds = zip(*[_mean_std(p[1]) for p in points])
        ax.errorbar([p[0] * shift for p in points], means, yerr=stds, marker="o", capsize=3, label=trainer)
    upper = _upper_bound_dice(groups)
    if upper is not None:
        ax.axhline(upper, color="k", linestyle="--", label=f"{UPPER_BOUND} "
                                                           f"({groups[(UPPER_BOUND, ALL_LABELED)][0]['num_labeled']})")
    ax.set_xscale("log")
    ax.margins(x=0.15)
    counts = sorted({runs[0]["num_labeled"] for (t, labeled), runs in groups.items() if labeled != ALL_LABELED})
    ax.set_xticks(counts, [str(count) for count in counts])  # the labeled counts trained, not a fractional axis
    ax.minorticks_off()
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel(f"mean {_held_out(results)} Dice")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, filename)


def plot_per_class(results: dict, filename: str) -> None:
    groups = group_runs(results)
    ordered = _ordered_groups(groups)
    statistics = {name: [_mean_std([r["dice"][value] for r in groups[g]]) for g in ordered]
                  for value, name in results["labels"].items()}
    grouped_bars(filename, [f"{t}\n{groups[(t, l)][0]['num_labeled']} labeled" for t, l in ordered],
                 {name: [m for m, _ in values] for name, values in statistics.items()},
                 {name: [s for _, s in values] for name, values in statistics.items()},
                 ylabel=f"{_held_out(results)} Dice", zoom=True)


def plot_training_curves(results: dict, filename: str) -> None:
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    runs = sorted(results["runs"].items())
    colours = plt.cm.tab20(np.linspace(0, 1, 20))  # one colour per run up to 20, then a dashed second round
    for index, (name, run) in enumerate(runs):
        label = f"{run.get('method', run['trainer'])}, {run['num_labeled']} labeled, seed {run['seed']}"
        style = {"color": colours[index % 20], "linestyle": "-" if index < 20 else "--", "linewidth": 1}
        loss_ax.plot(run["curves"]["train_losses"], label=label, **style)
        dice_ax.plot(run["curves"]["ema_fg_dice"], label=label, **style)
    loss_ax.set_ylabel("training loss (supervised + weighted unsupervised)")
    dice_ax.set_ylabel("nnU-Net's pseudo-Dice (EMA), labeled training cases")
    for ax in (loss_ax, dice_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    dice_ax.legend(fontsize=6)
    save_figure(fig, filename)


PICTURES = {
    "label_efficiency.png": (plot_label_efficiency,
                             "Mean {held_out} Dice against the number of labeled cases (log axis, each method shifted "
                             "a little sideways), mean ± standard deviation over seeds; a dashed line marks the fully "
                             "supervised model once it is trained."),
    "per_class.png": (plot_per_class, "Dice per class on the {held_out} cases, mean ± standard deviation over seeds."),
    "training_curves.png": (plot_training_curves,
                            "Left: what each trainer minimises, per epoch. Two-student trainers add both students' "
                            "supervised losses, so compare the shapes of the curves, not their levels. Right: "
                            "nnU-Net's pseudo-Dice on the cases it checks each epoch; with fold `all` these are "
                            "the labeled training cases, so it shows convergence, not generalisation."),
}


def _own_budgets(protocol: dict) -> str:
    """The runs trained at another number of steps than the protocol's, as the report's text names them."""
    protocol = Protocol(protocol)
    own = {tag: protocol.tag_budget(tag) for tag, budget in protocol.tagged_budgets.items() if budget}
    return "".join(f" (`{tag}` runs: {budget['num_epochs']} × {budget['iterations_per_epoch']})"
                   for tag, budget in own.items())


def write_report(results_file: str, output_folder: str) -> str:
    """Writes report.md and its pictures; returns the path of report.md."""
    results = load_results(results_file)
    if not results["runs"]:
        raise UsageError(f"{results_file} holds no finished run yet")
    os.makedirs(output_folder, exist_ok=True)
    for filename, (plot, _) in PICTURES.items():
        plot(results, os.path.join(output_folder, filename))
    protocol, held_out = results["protocol"], _held_out(results)
    budget = protocol["budget"]
    finished = len(results["runs"])
    superseded = len(results.get("superseded", {}))
    left_out = f" ({superseded} trained under earlier method defaults left out)" if superseded else ""
    text = "\n".join([
        f"# Benchmark {protocol['name']}", "",
        protocol.get("description", ""), "",
        f"{finished} finished run{'' if finished == 1 else 's'}{left_out}; every trainer trained for "
        f"{budget['num_epochs']} × {budget['iterations_per_epoch']} steps{_own_budgets(protocol)} on fold `all` of "
        f"its labeled cases and "
        f"predicted the {next(iter(results['runs'].values()))['num_test']} {held_out} cases from "
        f"`checkpoint_final.pth`. "
        f"Dice on them from nnU-Net's evaluation; mean ± sample standard deviation over seeds. Gap closed: "
        f"(method − {LABELED_ONLY_TRAINER}) / ({UPPER_BOUND} − {LABELED_ONLY_TRAINER}) at the same labeled cases."
        + (STUDENT_A_NOTE if any("student_a" in run for run in results["runs"].values()) else ""),
        "", dice_table(results), "",
        "## Case by case against the labeled-only baseline", "",
        f"Per {held_out} case: the method's Dice (mean over classes) minus {LABELED_ONLY_TRAINER}'s at the same "
        f"labeled cases, averaged over the seeds both were trained with; the Wilcoxon signed-rank test asks "
        f"whether these differences are centred on zero. It captures case-to-case variation, not training-seed "
        f"variation: the last column does, a Student-t interval of the mean Dice difference over the seeds both were "
        f"trained with (each seed paired with the baseline's of the same seed). A gain is resolved when that "
        f"interval excludes zero, not when the Wilcoxon p is small.", "", paired_table(results), "",
        "## Cost per training step", "", cost_table(results), "",
        "## Pictures", "", *[f"![{name[:-4]}]({name})\n\n{caption.format(held_out=held_out)}\n"
                            for name, (_, caption) in PICTURES.items()]])
    report = os.path.join(output_folder, "report.md")
    with open(report, "w") as f:
        f.write(text)
    return report
