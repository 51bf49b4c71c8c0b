"""Seconds per training step of nnUNetTrainerMICD and nnUNetTrainerBudget, measured in one process.

Both trainers use the same dataset, plans, configuration and batch size; augmentation runs in the main process
(nnUNet_n_proc_DA=0) and is timed separately, so the figures are the network work of one step. Medians after
warm-up; the ratio is what matters on a shared, noisy machine.

    python scripts/benchmark_step_time.py -d 999 -p nnUNetPlans_tiny [-c 3d_fullres] [--steps 20] [--warmup 3]
"""
import argparse
import os
import statistics
import time

import torch


def time_steps(trainer_name: str, dataset: str, configuration: str, plans: str, steps: int, warmup: int) -> dict:
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(dataset, configuration, "all", trainer_name, plans, device=torch.device("cpu"))
    trainer.on_train_start()
    unlabeled = getattr(trainer, "dataloader_unlabeled", None)
    batches = [(next(trainer.dataloader_train), next(unlabeled) if unlabeled else None)
               for _ in range(steps + warmup)]
    if unlabeled is not None:  # replay the prepared unlabeled batches so loading is not timed
        queue = iter([u for _, u in batches])
        trainer.dataloader_unlabeled = queue
    seconds = []
    for i, (batch, _) in enumerate(batches):
        start = time.perf_counter()
        trainer.train_step(batch)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    trainer.dataloader_unlabeled = unlabeled
    trainer.on_train_end()
    return {"median": statistics.median(seconds), "batch_size": trainer.batch_size}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", required=True)
    parser.add_argument("-p", default="nnUNetPlans_tiny")
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    os.environ["nnUNet_n_proc_DA"] = "0"
    from nnunetv2_micd.cli import trainer_path
    os.environ["nnUNet_extTrainer"] = trainer_path()
    results = {name: time_steps(name, args.d, args.c, args.p, args.steps, args.warmup)
               for name in ("nnUNetTrainerBudget", "nnUNetTrainerMICD")}
    for name, result in results.items():
        print(f"{name}: {result['median']:.3f} s/step (batch size {result['batch_size']}, "
              f"median of {args.steps}, {torch.get_num_threads()} threads)")
    print(f"MICD / Budget: {results['nnUNetTrainerMICD']['median'] / results['nnUNetTrainerBudget']['median']:.2f}")


if __name__ == "__main__":
    main()
