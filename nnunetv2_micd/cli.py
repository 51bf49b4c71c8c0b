"""The ``micd`` command: dataset tools around nnU-Net's own commands."""
import argparse
import json
import os
import sys
from typing import List, Optional

from nnunetv2_micd.errors import DataError, MicdError, UsageError
from nnunetv2_micd.paths import trainer_path

TIME_LIMIT_EXIT_CODE = 3  # micd benchmark --time-limit stopped before every run finished


def _cmd_trainer_path(args) -> None:
    print(trainer_path())


def _cmd_make_ssl_dataset(args) -> None:
    from nnunetv2_micd.dataset_conversion.ssl_split import make_ssl_dataset
    make_ssl_dataset(args.d, args.o, args.labeled, args.test, args.seed, args.overwrite, args.labeled_cases,
                     args.test_cases)


def _cmd_check_dataset(args) -> None:
    from nnunetv2_micd.preprocessing.check import check_dataset, format_check
    check = check_dataset(args.d, args.np)
    print("\n".join(format_check(check)))
    if check.problems:
        raise DataError(f"{len(check.problems)} problem(s) found; fix them before preprocessing")


def _cmd_preprocess_unlabeled(args) -> None:
    from nnunetv2_micd.preprocessing.preprocess_unlabeled import preprocess_unlabeled
    preprocess_unlabeled(args.d, args.c, args.p, args.np)


def _cmd_tiny_plans(args) -> None:
    from nnunetv2_micd.experiment_planning.tiny_plans import write_tiny_plans
    features = [int(f) for f in args.features.split(",")]
    patch_size = [int(size) for size in args.patch_size.split(",")] if args.patch_size else None
    print(write_tiny_plans(args.d, args.p, args.o, features, args.batch_size, patch_size))


def _cmd_export_model(args) -> None:
    from nnunetv2_micd.inference.export import export_model_zip
    names = export_model_zip(args.i, args.o, args.f, args.chk)
    print(f"{args.o}: {len(names)} files ({os.path.getsize(args.o) / 2 ** 20:.1f} MiB); install with "
          f"nnUNetv2_install_pretrained_model_from_zip, or unpack and use nnUNetv2_predict_from_modelfolder")


def _cmd_export_plain(args) -> None:
    from nnunetv2_micd.inference.export import export_plain
    print(export_plain(args.i, args.o, args.f))


def _cmd_demo(args) -> None:
    from nnunetv2_micd.demo import DemoSettings, run_demo
    run_demo(DemoSettings(work_folder=args.o, epochs=args.epochs, iterations_per_epoch=args.iterations,
                          seed=args.seed, method_config_file=args.config))


def _cmd_bench_step(args) -> None:
    from nnunetv2_micd.benchmark.bench_step import BenchSettings, bench_step, format_results
    os.environ.setdefault("nnUNet_extTrainer", trainer_path())
    settings = BenchSettings(args.d, args.c, args.p, args.batch_size, args.steps, args.warmup, args.f)
    results = bench_step(settings, args.tr, args.compare)
    print("\n".join(format_results(results, args.tr)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _cmd_benchmark(args) -> None:
    from nnunetv2_micd.benchmark.protocol import load_protocol
    from nnunetv2_micd.benchmark.runner import BenchmarkRunner
    protocol, path = load_protocol(args.protocol, args.source)
    print(f"protocol file: {path}")
    runner = BenchmarkRunner(protocol, args.o, args.device,
                             None if args.time_limit is None else args.time_limit * 60)
    if args.status:
        print("\n".join(runner.status()))
    else:
        runner.run_all(args.only)
        if runner.stopped_at_time_limit:
            sys.exit(TIME_LIMIT_EXIT_CODE)


def _cmd_report(args) -> None:
    from nnunetv2_micd.benchmark.report import write_report
    print(write_report(args.results, args.o))


def _cmd_compare(args) -> None:
    from nnunetv2_micd.benchmark.report import compare_runs, compare_summaries
    c = compare_runs(args.results, args.summary, args.reference) if args.results \
        else compare_summaries(args.summary, args.reference)
    print(f"{c.num_cases} cases, Dice (mean over classes) of the first minus the second: "
          f"mean {c.mean_difference:+.4f}, {c.better} better / {c.worse} worse, "
          f"Wilcoxon signed-rank p = {c.p_value:.3g} (two-sided)")


def _cmd_evaluate(args) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2_micd.evaluation.evaluate import evaluate_folder, format_literature_table, format_table
    result = evaluate_folder(args.ref, args.pred, args.djfile, args.pfile, args.np, args.literature_mm)
    names = {str(value): name for name, value in load_json(args.djfile)["labels"].items()}
    print("\n".join(format_table(result, names)))
    print()
    print("\n".join(format_literature_table(result["literature"], names)))


def _model_folder(args) -> str:
    """-m, or nnU-Net's results folder of -d, -tr, -p and -c (as nnUNetv2_predict finds it)."""
    if args.m is not None:
        return args.m
    if args.d is None:
        raise UsageError("give the model folder with -m, or the dataset with -d (and -c, -tr, -p as for "
                         "nnUNetv2_predict)")
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    return get_output_folder(args.d, args.tr, args.p, args.c)


def _folds(values: List[str]) -> tuple:
    return tuple(value if value == "all" else int(value) for value in values)


def _predict_uncertainty(args, input_folder: str, output_folder: str) -> dict:
    import torch
    from nnunetv2_micd.inference.predict_uncertainty import predict_with_uncertainty
    return predict_with_uncertainty(input_folder, output_folder, _model_folder(args), _folds(args.f), args.chk,
                                    torch.device(args.device) if args.device else None)


def _cmd_predict_uncertainty(args) -> None:
    from nnunetv2_micd.inference.uncertainty_folder import SUMMARY_FILE
    record = _predict_uncertainty(args, args.i, args.o)
    print(f"{len(record['cases'])} cases with {', '.join(record['maps'])} maps in {args.o}; per-case summary in "
          f"{os.path.join(args.o, SUMMARY_FILE)}")


def _cmd_suggest(args) -> None:
    from nnunetv2_micd.inference.suggest import group_cases, rank_cases, write_ranking
    input_folder = args.i
    if input_folder is None:
        if args.d is None:
            raise UsageError("give the images with -i, or the dataset whose imagesUnlabeled to rank with -d")
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        from nnunetv2.paths import nnUNet_raw
        from nnunetv2_micd.preprocessing.check import SPLIT_FOLDERS
        input_folder = os.path.join(nnUNet_raw.require(), maybe_convert_to_dataset_name(args.d),
                                    SPLIT_FOLDERS["unlabeled"][0])
    record = _predict_uncertainty(args, input_folder, args.o)
    cases = record["cases"] if args.group is None else group_cases(record["cases"], args.group)
    ranking = rank_cases(cases, args.diversity)
    csv_file = write_ranking(ranking, args.o, {"images": os.path.abspath(input_folder), "model": record["model"],
                                               "folds": record["folds"], "checkpoint": record["checkpoint"],
                                               "diversity": args.diversity, "group": args.group})
    for entry in ranking[:args.n]:
        print(f"{entry['rank']:4d}  {entry['case']}  score {entry['score']:.4f}")
    what = "cases" if args.group is None else f"groups of cases ({args.group})"
    print(f"ranking of {len(ranking)} {what}: {csv_file} (and ranking.json)")


def _cmd_check_uncertainty(args) -> None:
    from nnunetv2_micd.evaluation.uncertainty_quality import check_uncertainty
    result = check_uncertainty(args.uncertainty, args.summary)
    print(f"{result['cases']} cases; worst quarter by Dice: {', '.join(result['worst_quarter'])}")
    for name, values in result["scores"].items():
        print(f"{name:28s} Spearman rho with Dice {values['spearman_rho_with_dice']:+.3f} "
              f"(p = {values['spearman_p']:.3g}), AUROC for the worst quarter {values['auroc_worst_quarter']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        from nnunetv2_micd.evaluation.uncertainty_quality import plot_score_against_dice
        plot_score_against_dice(result, args.plot)


def _cmd_show_uncertainty(args) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2_micd.evaluation.uncertainty_quality import plot_case
    from nnunetv2_micd.inference.uncertainty_folder import map_file
    folder = os.path.dirname(os.path.abspath(args.uncertainty))
    record = load_json(args.uncertainty)
    ending = load_json(os.path.join(folder, "dataset.json"))["file_ending"]
    if args.case not in record["cases"]:
        raise DataError(f"case {args.case!r} is not in {args.uncertainty}")
    plot_case(os.path.join(args.images, f"{args.case}_0000{ending}"), os.path.join(folder, args.case + ending),
              {name: map_file(folder, args.case, name, ending) for name in record["maps"]},
              args.o)


def _cmd_convert(benchmark_name: str):
    def command(args) -> None:
        from nnunetv2_micd.dataset_conversion import dhc_benchmarks
        benchmark = getattr(dhc_benchmarks, benchmark_name)
        dhc_benchmarks.convert(benchmark, args.source, args.labeled, args.o, getattr(args, "ct_only", False))
    return command


def _cmd_convert_acdc(args) -> None:
    from nnunetv2_micd.dataset_conversion.acdc import convert_acdc
    convert_acdc(args.source, args.o, args.lists, args.overwrite)


def _cmd_dhc_splits(args) -> None:
    from nnunetv2_micd.dataset_conversion.dhc_benchmarks import write_dhc_splits_final
    print(write_dhc_splits_final(args.d))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="micd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("trainer-path", help="print the folder to export as nnUNet_extTrainer")
    p.set_defaults(func=_cmd_trainer_path)

    p = commands.add_parser("make-ssl-dataset",
                            help="split a fully labeled raw dataset into labeled, unlabeled and test cases")
    p.add_argument("-d", required=True, help="source dataset id or name (in nnUNet_raw)")
    p.add_argument("-o", required=True, help="new dataset: an id (named after the source) or DatasetXXX_Name")
    labeled = p.add_mutually_exclusive_group(required=True)
    labeled.add_argument("--labeled", help="number (10) or percentage (5%%) of training cases to label, drawn with "
                                           "--seed")
    labeled.add_argument("--labeled-cases", help="the cases to label: a file with one case id per line, or a "
                                                 "comma-separated list")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--test", default=None, help="number or percentage of cases held out as imagesTs/labelsTs "
                                                   "(default: the source's own imagesTs/labelsTs, if it has them)")
    test.add_argument("--test-cases", default=None,
                      help="training cases to hold out as imagesTs/labelsTs (a file or a comma-separated list), for "
                           "choosing settings without the source's own held-out cases, which are then left out")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (splits are nested for one seed)")
    p.add_argument("--overwrite", action="store_true", help="replace the new dataset if it exists")
    p.set_defaults(func=_cmd_make_ssl_dataset)

    p = commands.add_parser("check-dataset",
                            help="read every file of a raw dataset (labeled, unlabeled, test) in full and report "
                                 "broken, inconsistent or duplicated scans by case")
    p.add_argument("-d", required=True, help="dataset id or name (in nnUNet_raw)")
    p.add_argument("-np", type=int, default=None, help="worker processes (default: nnUNet_def_n_proc)")
    p.set_defaults(func=_cmd_check_dataset)

    p = commands.add_parser("preprocess-unlabeled",
                            help="check the raw dataset, then preprocess imagesUnlabeled/ with the dataset's plans "
                                 "(resumable)")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-c", nargs="+", default=["3d_fullres"], help="configurations (default: 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-np", type=int, default=None, help="worker processes (default: nnU-Net's default)")
    p.set_defaults(func=_cmd_preprocess_unlabeled)

    p = commands.add_parser("tiny-plans", help="write small-network plans over the same preprocessed data")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("-p", default="nnUNetPlans", help="source plans identifier (default: nnUNetPlans)")
    p.add_argument("-o", default="nnUNetPlans_tiny", help="name of the new plans (default: nnUNetPlans_tiny)")
    p.add_argument("--features", default="8,16,32,64", help="features per stage (default: 8,16,32,64)")
    p.add_argument("--batch-size", type=int, default=2, help="batch size (default: 2)")
    p.add_argument("--patch-size", default=None,
                   help="patch size of the configurations of its dimensionality, e.g. 128,128 for 2d (default: as "
                        "planned)")
    p.set_defaults(func=_cmd_tiny_plans)

    p = commands.add_parser("export-plain",
                            help="write student A as a plain nnUNetTrainer model folder (no micd needed to predict)")
    p.add_argument("-i", required=True,
                   help="MICD model folder (nnUNet_results/<dataset>/<trainer>__<plans>__<config>)")
    p.add_argument("-o", required=True, help="output model folder (use with nnUNetv2_predict_from_modelfolder)")
    p.add_argument("-f", nargs="+", default=None, help="folds to export (default: all found)")
    p.set_defaults(func=_cmd_export_plain)

    p = commands.add_parser("export-model",
                            help="write a trained model as an nnU-Net export zip to share, without its training state")
    p.add_argument("-i", required=True, help="model folder (nnUNet_results/<dataset>/<trainer>__<plans>__<config>)")
    p.add_argument("-o", required=True, help="the zip to write")
    p.add_argument("-f", nargs="+", default=None, help="folds to export (default: all found)")
    p.add_argument("-chk", default="checkpoint_final.pth", help="the checkpoint to share (default: %(default)s)")
    p.set_defaults(func=_cmd_export_model)

    p = commands.add_parser("demo", help="MICD against plain nnU-Net on a built-in synthetic dataset, end to end")
    p.add_argument("-o", default="micd_demo", help="work folder (default: ./micd_demo)")
    p.add_argument("--epochs", type=int, default=24, help="epochs per trainer (default: 24)")
    p.add_argument("--iterations", type=int, default=50, help="steps per epoch (default: 50)")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of both trainers (initial weights; the dataset stays the same; default: 0)")
    p.add_argument("--config", default=None,
                   help="a MICD_CONFIG JSON file with MICD settings to try (default: the method's defaults)")
    p.set_defaults(func=_cmd_demo)

    p = commands.add_parser("bench-step", help="time one MICD step, its parts and a plain nnU-Net step")
    p.add_argument("-d", required=True, help="dataset id or name (preprocessed, with unlabeled data)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", default="all", help="fold whose training cases are sampled (default: all)")
    p.add_argument("-tr", default="nnUNetTrainerMICD", help="MICD trainer or variant (default: nnUNetTrainerMICD)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the plans')")
    p.add_argument("--steps", type=int, default=10, help="timed repetitions (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default: 2)")
    p.add_argument("--compare", nargs="+", default=[], metavar="TRAINER",
                   help="also time these trainers' steps and memory (e.g. nnUNetTrainerMeanTeacher)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=_cmd_bench_step)

    p = commands.add_parser("benchmark", help="train, predict and evaluate every method of a protocol (resumable)")
    from nnunetv2_micd.benchmark.protocol import builtin_protocols
    p.add_argument("protocol", help=f"protocol file, or the name of a built-in one ({', '.join(builtin_protocols())})")
    p.add_argument("-o", required=True, help="work folder (nnU-Net folders, runs and results.json)")
    p.add_argument("--source", default=None, help="path of the source dataset, instead of the protocol's")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--only", nargs="+", default=None, metavar="METHOD",
                   help="run only the unfinished runs of these trainers (or trainer__tag, or runs by name: "
                        "trainer__labeledN__seedS), making only the datasets they use; the others wait")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="run in pieces: stop training where the next epoch would end after this many minutes "
                        "(its last checkpoint kept) and start no run after them, exiting with status "
                        f"{TIME_LIMIT_EXIT_CODE}; the same command continues. Preparing, and predicting a run whose "
                        "training ended, may go past the limit")
    p.add_argument("--status", action="store_true",
                   help="show every run's state (finished, how far its training got and whether it is running, to "
                        "do) and the time left; runs nothing")
    p.set_defaults(func=_cmd_benchmark, after_interrupt="the same command continues where it stopped")

    for benchmark, fractions, layout in (("SYNAPSE", "10%%, 20%% or 40%%", "RawData/Training/{img,label}"),
                                         ("AMOS", "2%%, 5%% or 10%%", "imagesTr, labelsTr, imagesVa, labelsVa")):
        p = commands.add_parser(f"convert-{benchmark.lower()}",
                                help=f"{benchmark.capitalize()} with DHC's semi-supervised split as an nnU-Net raw "
                                     f"dataset")
        p.add_argument("source", help=f"the download as distributed ({layout})")
        p.add_argument("--labeled", required=True, help=f"DHC's labeled fraction: {fractions}")
        p.add_argument("-o", type=int, default=None, help="dataset id (default: 720 Synapse, 730 AMOS)")
        if benchmark == "AMOS":
            p.add_argument("--ct-only", action="store_true",
                           help="leave out the MRI cases (ids >= 500) from every split")
        p.set_defaults(func=_cmd_convert(benchmark))

    p = commands.add_parser("convert-acdc", help="ACDC as the semi-supervised literature splits it (h5 layout or the "
                                                 "official NIfTI release) as an nnU-Net raw dataset")
    p.add_argument("source", help="the h5 download (data/, train.list, val.list, train_slices.list) or the NIfTI "
                                  "release (patientXXX folders)")
    p.add_argument("-o", type=int, default=800, help="dataset id (default: 800)")
    p.add_argument("--lists", default=None, help="folder of train.list, val.list (test.list, train_slices.list); "
                                                 "default: the source")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset if it exists")
    p.set_defaults(func=_cmd_convert_acdc)

    p = commands.add_parser("dhc-splits", help="write splits_final.json: train on DHC's labeled, validate on its "
                                                "eval cases (after planning)")
    p.add_argument("-d", required=True, help="dataset made by micd convert-synapse or convert-amos")
    p.set_defaults(func=_cmd_dhc_splits)

    p = commands.add_parser("evaluate", help="nnU-Net's evaluation plus ASD and HD95 per class (in mm), and Dice, "
                                             "Jaccard, HD95 and ASD as the ACDC semi-supervised papers compute them")
    p.add_argument("ref", help="folder with the reference segmentations")
    p.add_argument("pred", help="folder with the predictions (summary.json, summary_surface.json and "
                                "summary_literature.json go here)")
    p.add_argument("-djfile", required=True, help="dataset.json of the dataset")
    p.add_argument("-pfile", required=True, help="plans file of the predictions")
    p.add_argument("-np", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--literature-mm", action="store_true",
                   help="the papers' HD95 and ASD in mm from the reference's spacing (default: in voxels, as "
                        "published)")
    p.set_defaults(func=_cmd_evaluate)

    def model_options(p) -> None:
        p.add_argument("-m", default=None, help="trained model folder (else found from -d, -c, -tr and -p)")
        p.add_argument("-d", default=None, help="dataset id or name")
        p.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
        p.add_argument("-tr", default="nnUNetTrainerMICD", help="trainer (default: nnUNetTrainerMICD)")
        p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
        p.add_argument("-f", nargs="+", default=["0"], help="folds (default: 0), or all")
        p.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default: checkpoint_final.pth)")
        p.add_argument("-device", default=None, choices=("cpu", "cuda"), help="default: cuda when available")

    p = commands.add_parser("predict-uncertainty",
                            help="predict a folder as nnUNetv2_predict does, plus per-case uncertainty maps (the two "
                                 "branches' disagreement, the entropy) and uncertainty.json")
    p.add_argument("-i", required=True, help="folder of images named as nnU-Net's imagesTs")
    p.add_argument("-o", required=True, help="output folder (a rerun predicts only the cases not yet done)")
    model_options(p)
    p.set_defaults(func=_cmd_predict_uncertainty)

    p = commands.add_parser("suggest", help="rank unlabeled scans by how much labeling them should help: the "
                                            "model's uncertainty on each, optionally spread over dissimilar scans")
    p.add_argument("-i", default=None, help="folder of images (default: imagesUnlabeled of the dataset -d)")
    p.add_argument("-o", required=True, help="output folder: predictions, maps, uncertainty.json, ranking.csv/json")
    model_options(p)
    p.add_argument("-n", type=int, default=10, help="how many of the ranking to print (all are written)")
    p.add_argument("--diversity", type=float, default=0.0,
                   help="weight of the distance to scans already picked against the score (0: by score alone)")
    p.add_argument("--group", default=None,
                   help="a regular expression: cases whose ids share its match are labeled together and ranked as one "
                        "(e.g. 'patient\\d+' for ACDC's two phases per patient)")
    p.set_defaults(func=_cmd_suggest)

    p = commands.add_parser("check-uncertainty",
                            help="on labeled held-out cases: how well the uncertainty scores find the bad predictions "
                                 "(rank correlation with Dice, AUROC for the worst quarter, against predicted volume)")
    p.add_argument("uncertainty", help="uncertainty.json of micd predict-uncertainty")
    p.add_argument("summary", help="summary.json of nnUNetv2_evaluate_folder on the same predictions")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--plot", default=None, help="also draw each case's score against its Dice into this PNG file")
    p.set_defaults(func=_cmd_check_uncertainty)

    p = commands.add_parser("show-uncertainty", help="one case's slice with the most predicted foreground: image "
                                                     "and segmentation beside each uncertainty map, as a PNG")
    p.add_argument("uncertainty", help="uncertainty.json of micd predict-uncertainty (maps and segmentations beside it)")
    p.add_argument("case", help="case id")
    p.add_argument("-images", required=True, help="folder of the images that were predicted (first channel shown)")
    p.add_argument("-o", required=True, help="PNG file")
    p.set_defaults(func=_cmd_show_uncertainty)

    p = commands.add_parser("compare", help="two evaluated predictions of the same cases, or two runs of a "
                                            "benchmark, case by case (mean difference, cases better/worse, "
                                            "Wilcoxon p)")
    p.add_argument("summary", help="summary.json of the predictions to compare (from nnUNetv2_evaluate_folder); "
                                   "with --results, a run's name (<run>:student_a for its student A alone)")
    p.add_argument("reference", help="summary.json of the predictions to compare them with; with --results, a run")
    p.add_argument("--results", help="results.json of micd benchmark, to compare two of its runs by name")
    p.set_defaults(func=_cmd_compare)

    p = commands.add_parser("report", help="markdown table and pictures from a benchmark's results.json")
    p.add_argument("results", help="results.json written by micd benchmark")
    p.add_argument("-o", required=True, help="output folder for report.md and its pictures")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MicdError as e:
        # an expected failure is the user's to fix: say what is wrong, without a traceback (a bug keeps its own)
        print(f"micd {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # Ctrl-C, or a SIGTERM while an nnU-Net command runs: a stop the user asked for, not a failure to debug
        hint = getattr(args, "after_interrupt", None)
        print(f"micd {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
