"""The trainers' multi-GPU code path on the CPU: two processes with the gloo backend, driven like nnU-Net's run_ddp.

nnU-Net's own launcher (``-num_gpus``) needs CUDA and NCCL; everything the trainers do under DDP (one
DistributedDataParallel call per step, this rank's share of the batch, per-rank unlabeled patches, class-weight
statistics summed over ranks, EMA teachers, checkpoints on rank 0 only) runs here the same way.
"""
import json
import os
import socket
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PLANS = "nnUNetPlans_tiny"
WORLD_SIZE = 2
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fingerprint(module: torch.nn.Module):
    return [float(p.detach().double().sum()) for p in module.parameters()]


def _worker(rank: int, port: int, trainer_name: str, dataset_id: int, environment: dict, output: str) -> None:
    os.environ.update(environment)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        from nnunetv2.run.run_training import get_trainer_from_args
        trainer = get_trainer_from_args(str(dataset_id), "3d_fullres", "all", trainer_name, PLANS,
                                        device=torch.device("cpu"))
        trainer.on_train_start()
        unlabeled_keys, source = [], trainer.dataloader_unlabeled

        def recording_loader():
            while True:
                batch = next(source)
                unlabeled_keys.append([str(k) for k in batch["keys"]])
                yield batch

        trainer.dataloader_unlabeled = recording_loader()
        outputs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(STEPS)]
        trainer.dataloader_unlabeled = source
        trainer.on_train_epoch_end(outputs)
        logged = trainer.logger.local_logger.my_fantastic_logging
        state = {"students": [_fingerprint(s) for s in trainer.students],
                 "teachers": [_fingerprint(t) for t in trainer.teachers],
                 "class_weights": [w.tolist() for w in trainer.class_weights.weights]
                 if getattr(trainer, "class_weights", None) is not None else [],
                 "unlabeled_keys": unlabeled_keys, "batch_size": trainer.batch_size,
                 "loss_sup_here": float(np.mean([o["loss_sup"] for o in outputs])),
                 "logged": {key: float(logged[key][0]) for key in ("train_losses", "loss_sup")},
                 "ddp": isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel)}
        gathered = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, state)
        trainer.on_train_end()
        if rank == 0:
            with open(output, "w") as f:
                json.dump({"ranks": gathered, "output_folder": trainer.output_folder}, f)
        dist.barrier()  # no rank leaves while another still talks to it
    finally:
        dist.destroy_process_group()
    # leave without C++ exit handlers: gloo's threads were seen to abort (SIGABRT) at interpreter exit, after all
    # the work above had finished; a failure above still raises and fails the test
    sys.stdout.flush()
    os._exit(0)


def _run_distributed(trainer_name, dataset, tmp_path, trainer_environment, timeout=600):
    output = tmp_path / "ranks.json"
    environment = {k: trainer_environment[k] for k in ("nnUNet_extTrainer", "nnUNet_n_proc_DA")}
    environment.update({"nnUNet_raw": os.environ["nnUNet_raw"],
                        "nnUNet_preprocessed": os.environ["nnUNet_preprocessed"],
                        "nnUNet_results": str(tmp_path / "results"), "MICD_NUM_EPOCHS": "1",
                        "MICD_ITERS_PER_EPOCH": str(STEPS), "MICD_VAL_ITERS": "1", "MICD_SEED": "0"})
    context = mp.start_processes(_worker, args=(_free_port(), trainer_name, dataset["id"], environment, str(output)),
                                 nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.time() + timeout
    while not context.join(timeout=5):
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the distributed {trainer_name} run did not finish in {timeout} s")
    return json.loads(output.read_text())


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerMICD", "nnUNetTrainerMeanTeacher"])
def test_two_ranks_stay_identical_and_draw_different_unlabeled_patches(trainer_name, synthetic_dataset, tmp_path,
                                                                        trainer_environment):
    result = _run_distributed(trainer_name, synthetic_dataset, tmp_path, trainer_environment)
    first, second = result["ranks"]
    assert first["ddp"] and second["ddp"]
    assert first["batch_size"] == second["batch_size"] == 1  # the plans' batch of 2, split over 2 ranks
    # students and teachers identical on both ranks after the steps (DDP averaged the gradients)
    for key in ("students", "teachers"):
        assert first[key] and len(first[key]) == len(second[key])
        for a, b in zip(first[key], second[key]):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    for a, b in zip(first["class_weights"], second["class_weights"]):  # statistics summed over the ranks
        assert a == pytest.approx(b)
    assert first["unlabeled_keys"] != second["unlabeled_keys"]  # each rank its own unlabeled patches
    # the method's terms are logged like nnU-Net's loss: the same mean over both ranks' steps on every rank
    assert first["logged"] == second["logged"]
    assert first["logged"]["loss_sup"] == pytest.approx((first["loss_sup_here"] + second["loss_sup_here"]) / 2)
    assert first["loss_sup_here"] != second["loss_sup_here"]
    folder = result["output_folder"]
    assert os.path.isfile(os.path.join(folder, "checkpoint_final.pth"))  # written once, by rank 0
