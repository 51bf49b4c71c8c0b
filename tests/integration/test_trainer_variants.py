"""Every trainer takes real training steps in-process on the session's dataset (fast: no nnUNetv2_train start-up)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_micd.method.config import ConfigError
from nnunetv2_micd.method.networks import DualBranchNetwork

PLANS = "nnUNetPlans_tiny"


@pytest.fixture
def environment(synthetic_dataset, trainer_environment, monkeypatch):
    for key in ("nnUNet_extTrainer", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(key, trainer_environment[key])
    for key, value in {"MICD_NUM_EPOCHS": "2", "MICD_ITERS_PER_EPOCH": "2", "MICD_VAL_ITERS": "1",
                       "MICD_SEED": "3"}.items():
        monkeypatch.setenv(key, value)
    return synthetic_dataset


def _trainer(dataset, name, configuration="3d_fullres"):
    return get_trainer_from_args(str(dataset["id"]), configuration, "all", name, PLANS, device=torch.device("cpu"))


def _one_step(trainer):
    trainer.on_train_start()
    try:
        return trainer.train_step(next(trainer.dataloader_train))
    finally:
        trainer.on_train_end()


def _parameters(module):
    return [p.detach().clone() for p in module.parameters()]


def _use_method_config(monkeypatch, tmp_path, content):
    """Points MICD_CONFIG at a file holding ``content``: a dict written as JSON, or the file's text as it is."""
    config = tmp_path / "config.json"
    config.write_text(content if isinstance(content, str) else json.dumps(content))
    monkeypatch.setenv("MICD_CONFIG", str(config))


@pytest.mark.parametrize("name, absent_term", [
    ("nnUNetTrainerMICD", None),
    ("nnUNetTrainerMICD_noMCPC", "loss_mcpc"),
    ("nnUNetTrainerMICD_noCFC", "loss_cfc"),
    ("nnUNetTrainerMICD_noCMD", "loss_cmd"),
    ("nnUNetTrainerMICD_noMask", None),
    ("nnUNetTrainerMICD_homogeneous", None),
])
def test_micd_trainers_take_a_step(environment, name, absent_term):
    trainer = _trainer(environment, name)
    trainer.initialize()
    teachers_before = [_parameters(t) for t in trainer.teachers]
    students_before = [_parameters(s) for s in trainer.dual_network.branches]
    outputs = _one_step(trainer)

    assert np.isfinite(outputs["loss"]) and outputs["loss_sup"] > 0
    terms = {"loss_mcpc", "loss_cfc", "loss_cmd"}
    assert terms - set(outputs) == ({absent_term} if absent_term else set())
    assert trainer.optimizer_step == 1
    for teacher, before, student, student_before in zip(trainer.teachers, teachers_before,
                                                        trainer.dual_network.branches, students_before):
        assert all(not p.requires_grad for p in teacher.parameters())
        moved = [t - b for t, b in zip(teacher.parameters(), before)]
        student_moved = [s - b for s, b in zip(student.parameters(), student_before)]
        # the teacher moved exactly 1 - decay of the way towards the updated student
        for m, s in zip(moved, student_moved):
            torch.testing.assert_close(m, (1 - trainer.method_config.ema_decay) * s)
    branch_types = [type(b).__name__ for b in trainer.dual_network.branches]
    expected_b = "PlainConvUNet" if name.endswith("homogeneous") else "ResidualEncoderUNet"
    assert branch_types == ["PlainConvUNet", expected_b]


def test_cps_is_micd_without_masking_features_teachers_and_class_weights(environment):
    trainer = _trainer(environment, "nnUNetTrainerCPS")
    trainer.initialize()
    outputs = _one_step(trainer)
    assert {"loss_mcpc", "loss_sup", "loss"} <= set(outputs) and not {"loss_cfc", "loss_cmd"} & set(outputs)
    assert trainer.teachers == []  # nothing would use them
    assert [type(b).__name__ for b in trainer.dual_network.branches] == ["PlainConvUNet", "PlainConvUNet"]
    assert trainer.method_config.mask_ratio == 0 and trainer.method_config.class_weighting == "none"


def test_mean_teacher_takes_a_step(environment):
    trainer = _trainer(environment, "nnUNetTrainerMeanTeacher")
    trainer.initialize()
    (teacher,), (student,) = trainer.teachers, trainer.students
    assert type(student).__name__ == "PlainConvUNet"  # nnU-Net's own network: plain nnU-Net predicts with it
    teacher_before, student_before = _parameters(teacher), _parameters(student)
    outputs = _one_step(trainer)
    assert np.isfinite(outputs["loss"]) and outputs["loss_sup"] > 0 and outputs["loss_consistency"] > 0
    assert not {"loss_mcpc", "loss_cfc", "loss_cmd"} & set(outputs)
    for t, tb, s, sb in zip(teacher.parameters(), teacher_before, student.parameters(), student_before):
        torch.testing.assert_close(t - tb, (1 - trainer.method_config.ema_decay) * (s - sb))


def test_mean_teacher_refuses_micd_keys(environment, tmp_path, monkeypatch):
    _use_method_config(monkeypatch, tmp_path, {"weight_cfc": 0.5})
    with pytest.raises(ConfigError, match=r"unknown MeanTeacherConfig key\(s\) \['weight_cfc'\]"):
        _trainer(environment, "nnUNetTrainerMeanTeacher")


def test_budget_trainer_honours_the_budget(environment):
    trainer = _trainer(environment, "nnUNetTrainerBudget")
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (2, 2, 1)
    assert np.isfinite(_one_step(trainer)["loss"])
    output = Path(trainer.output_folder)
    assert (output / "checkpoint_final.pth").is_file() and not list(output.glob("*.tmp"))  # renamed into place


@pytest.mark.parametrize("name, inference_mode", [("nnUNetTrainerBudget", None), ("nnUNetTrainerMICD", "ensemble"),
                                                   ("nnUNetTrainerMICD", "teachers")])
def test_final_validation_is_left_out_after_training_only(environment, monkeypatch, tmp_path, name, inference_mode):
    """MICD_FINAL_VALIDATION=0: nnUNetv2_train validates after training, which is left out, or instead of it (--val),
    which is not."""
    monkeypatch.setenv("MICD_FINAL_VALIDATION", "0")
    if inference_mode is not None:
        _use_method_config(monkeypatch, tmp_path, {"inference_mode": inference_mode})
    validated = []
    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation",
                        lambda self, save_probabilities=False: validated.append(self))
    asked_for = _trainer(environment, name)
    asked_for.initialize()  # as nnUNetv2_train --val does before it validates
    asked_for.perform_actual_validation()
    assert validated == [asked_for]
    trained = _trainer(environment, name)
    _one_step(trained)
    trained.perform_actual_validation()
    assert validated == [asked_for]


@pytest.mark.parametrize("name", ["nnUNetTrainerBudget", "nnUNetTrainerMeanTeacher"])
@pytest.mark.parametrize("rank, disabled", [(1, False), (0, True)])
def test_only_rank_0_writes_checkpoints(environment, tmp_path, name, rank, disabled):
    trainer = _trainer(environment, name)
    trainer.initialize()
    trainer.local_rank, trainer.disable_checkpointing = rank, disabled
    being_written = tmp_path / "checkpoint.pth.tmp"  # by rank 0, or left by a crash
    being_written.write_bytes(b"half a checkpoint")
    trainer.save_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert being_written.is_file() and not (tmp_path / "checkpoint.pth").exists()


def test_semi_supervised_checkpoints_hold_every_key_of_nnUNets(environment, tmp_path):
    """The semi-supervised trainers write their own checkpoint dict (nnU-Net's save_checkpoint has no hook for extra
    state): it must keep every key nnU-Net's predictor and --c read."""
    written = {}
    for name in ("nnUNetTrainerBudget", "nnUNetTrainerMeanTeacher"):
        trainer = _trainer(environment, name)
        trainer.initialize()
        trainer.save_checkpoint(str(tmp_path / f"{name}.pth"))
        written[name] = torch.load(tmp_path / f"{name}.pth", map_location="cpu", weights_only=False)
    assert set(written["nnUNetTrainerMeanTeacher"]) == set(written["nnUNetTrainerBudget"]) | {"micd"}


@pytest.mark.parametrize("name", ["nnUNetTrainerMICD", "nnUNetTrainerMeanTeacher"])
def test_pretrained_weights_reach_the_teachers(environment, tmp_path, name):
    trainer = _trainer(environment, name)
    trainer.initialize()
    weights = {k: v + 0.5 if v.is_floating_point() else v for k, v in trainer.unwrapped_network.state_dict().items()}
    torch.save({"network_weights": weights}, tmp_path / "pretrained.pth")
    maybe_load_checkpoint(trainer, False, False, str(tmp_path / "pretrained.pth"))  # nnUNetv2_train -pretrained_weights
    trainer.on_train_start()
    try:
        assert len(trainer.teachers) == len(trainer.students) > 0
        for teacher, student in zip(trainer.teachers, trainer.students):
            for (key, value), reference in zip(teacher.state_dict().items(), student.state_dict().values()):
                torch.testing.assert_close(value, reference, msg=key)
        key = next(k for k in weights if "encoder" in k and k.endswith("weight"))
        torch.testing.assert_close(trainer.unwrapped_network.state_dict()[key], weights[key])
    finally:
        trainer.on_train_end()


def test_a_model_validates_under_another_budget_but_does_not_continue(environment, monkeypatch):
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    _one_step(trainer)  # writes checkpoint_final.pth
    monkeypatch.setenv("MICD_NUM_EPOCHS", "5")
    later = _trainer(environment, "nnUNetTrainerMICD")
    later.load_checkpoint(str(Path(trainer.output_folder) / "checkpoint_final.pth"))  # as nnUNetv2_train --val does
    assert later.optimizer_step == 1
    with pytest.raises(ConfigError, match="started with another configuration.*budget.num_epochs: 2 -> 5"):
        later.on_train_start()  # as --c does next


def test_a_mask_block_of_another_dimension_stops_at_initialisation(environment, tmp_path, monkeypatch):
    _use_method_config(monkeypatch, tmp_path, {"mask_block_size": [4, 4]})
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    with pytest.raises(ConfigError, match=r"mask_block_size \[4, 4\] does not match the 3D patches of configuration "
                                          r"3d_fullres"):
        trainer.initialize()


def _zeroed_norms(network):
    """Norm layers whose scale is exactly 0: nnU-Net's initialisation zeroes the last norm of each residual block."""
    return [m for m in network.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)
            and m.weight is not None and bool(torch.all(m.weight == 0))]


def test_the_method_switches_train_and_branch_b_can_start_from_nnUNets_initialisation(environment, tmp_path,
                                                                                        monkeypatch):
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    trainer.initialize()
    assert not _zeroed_norms(trainer.dual_network.branches[1])  # PyTorch's default, as the paper
    _use_method_config(monkeypatch, tmp_path, {"branch_b_init": "nnunet", "confidence_threshold": 0.6,
                                               "cfc_standardise": True, "cmd_mode": "cross",
                                               "class_weighting": "dhc_published", "learned_class_dice": 0.5,
                                               "threshold_background_only": True})
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    trainer.initialize()
    assert _zeroed_norms(trainer.dual_network.branches[1]) and _zeroed_norms(trainer.teachers[1])
    outputs = _one_step(trainer)
    assert np.isfinite(outputs["loss"]) and all(np.isfinite(outputs[k]) for k in ("loss_mcpc", "loss_cfc", "loss_cmd"))
    assert trainer.class_weights.state["weights_b"] is not None  # DHC's published weights followed the step
    # both students' Dice on the labeled patches followed the step, and a checkpoint keeps them
    assert all(dice.observed.any() for dice in trainer.learned_classes.running_dice)
    assert set(trainer.method_state()) == {"class_weights", "learned_classes"}


def test_micd_trains_a_2d_configuration(environment):
    trainer = _trainer(environment, "nnUNetTrainerMICD", "2d")
    outputs = _one_step(trainer)
    assert np.isfinite(outputs["loss"]) and "loss_mcpc" in outputs


@pytest.mark.parametrize("mode", ["student_a", "teachers"])
def test_nnunet_predictor_uses_the_configured_inference_weights(environment, tmp_path, monkeypatch, mode):
    _use_method_config(monkeypatch, tmp_path, {"inference_mode": mode})
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    _one_step(trainer)  # writes checkpoint_final.pth

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(trainer.output_folder_base, use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth")
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    assert isinstance(network, DualBranchNetwork)
    expected = trainer.teachers if mode == "teachers" else trainer.dual_network.branches
    for loaded, source in zip(network.branches, expected):
        for (key, value), (_, reference) in zip(loaded.state_dict().items(), source.state_dict().items()):
            torch.testing.assert_close(value, reference, msg=key)
    x = torch.randn(1, 1, *trainer.configuration_manager.patch_size)
    with torch.no_grad():
        network.eval()
        both = (network.branch_a(x) + network.branch_b(x)) / 2
        torch.testing.assert_close(network(x), network.branch_a(x) if mode == "student_a" else both)


@pytest.mark.parametrize("content, message", [
    ('{"lamda_max": 1}', "unknown MICDConfig key"),
    ('{"mask_ratio": 1.5}', r"mask_ratio must be in \[0, 1\]"),
    ('{"cmd_mode": "mine"}', "cmd_mode must be one of"),
    ("not json", "cannot be read"),
])
def test_bad_configuration_stops_before_training(environment, tmp_path, monkeypatch, content, message):
    _use_method_config(monkeypatch, tmp_path, content)
    with pytest.raises(ConfigError, match=message):
        _trainer(environment, "nnUNetTrainerMICD")


def test_bad_budget_stops_before_training(environment, monkeypatch):
    monkeypatch.setenv("MICD_ITERS_PER_EPOCH", "0")
    with pytest.raises(ConfigError, match="MICD_ITERS_PER_EPOCH must be >= 1"):
        _trainer(environment, "nnUNetTrainerBudget")


def test_missing_unlabeled_data_names_the_command_to_run(environment):
    folder = environment["preprocessed"] / "nnUNetPlans_2d_unlabeled"
    hidden = folder.with_name("hidden_unlabeled")
    folder.rename(hidden)
    try:
        trainer = _trainer(environment, "nnUNetTrainerMICD", "2d")
        with pytest.raises(FileNotFoundError, match=f"micd preprocess-unlabeled -d {environment['name']} -c 2d "
                                                    f"-p {PLANS}"):
            trainer.on_train_start()
    finally:
        hidden.rename(folder)


def test_non_finite_loss_stops_without_touching_the_weights_or_the_class_weights(environment):
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    trainer.on_train_start()
    try:
        batch = next(trainer.dataloader_train)
        batch["data"][0, 0, 0, 0, 0] = float("nan")
        before = [_parameters(s) for s in trainer.dual_network.branches]
        with pytest.raises(FloatingPointError, match="non-finite loss at optimizer step 0 .* in loss_sup"):
            trainer.train_step(batch)
        for student, parameters in zip(trainer.dual_network.branches, before):
            assert all(torch.equal(p, q) for p, q in zip(student.parameters(), parameters))
        # nor its statistics: the refused step's outputs would have set the class weights
        assert not trainer.class_weights.branch_a.observed.any() and trainer.class_weights.branch_b.counts is None
    finally:
        trainer.on_train_end()


@pytest.mark.parametrize("mode", ["regions", "ignore label", "cascade"])
def test_unsupported_nnunet_modes_are_refused(environment, mode):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2_micd.training.nnUNetTrainerMICD import nnUNetTrainerMICD
    plans = load_json(environment["preprocessed"] / f"{PLANS}.json")
    dataset_json = load_json(environment["preprocessed"] / "dataset.json")
    configuration = "3d_fullres"
    if mode == "regions":
        dataset_json["labels"] = {"background": 0, "any": [1, 2, 3], "large": 1}
        dataset_json["regions_class_order"] = [1, 1]
    elif mode == "ignore label":
        dataset_json["labels"]["ignore"] = 4
    else:
        plans["configurations"]["3d_cascade"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_fullres"}
        configuration = "3d_cascade"
    plans["continue_training"] = False
    expected = {"regions": "region-based training", "ignore label": "an ignore label", "cascade": "the cascade"}
    with pytest.raises(ConfigError, match=f"does not support {expected[mode]}"):
        nnUNetTrainerMICD(plans, configuration, "all", dataset_json, torch.device("cpu"))


def test_bench_step_reports_the_ratios(environment):
    from nnunetv2_micd.benchmark.bench_step import BenchSettings, bench_step, format_results
    settings = BenchSettings(str(environment["id"]), "3d_fullres", PLANS, batch_size=1, steps=1, warmup=1)
    interrupted_training = Path(_trainer(environment, "nnUNetTrainerMICD").output_folder) / "checkpoint_latest.pth"
    interrupted_training.parent.mkdir(parents=True, exist_ok=True)
    interrupted_training.write_bytes(b"the resume point of a real training")
    results = bench_step(settings, compare=["nnUNetTrainerMeanTeacher"])
    assert interrupted_training.read_bytes() == b"the resume point of a real training"  # bench-step's own folders
    assert results["batch_size"] == 1 and results["unlabeled_batch_size"] == 1
    assert set(results["trainers"]) == {"nnUNetTrainerBudget", "nnUNetTrainerMICD", "nnUNetTrainerMeanTeacher"}
    costs = results["trainers"]
    # two students on twice the patches, their masked copies and two teachers cost more than one network's step
    assert costs["nnUNetTrainerMICD"]["seconds_per_step"] > costs["nnUNetTrainerBudget"]["seconds_per_step"]
    assert set(results["parts"]) == {"student A forward+backward, labeled+unlabeled",
                                     "student B forward+backward, labeled+unlabeled",
                                     "student A forward+backward, masked", "student B forward+backward, masked",
                                     "teacher A forward, unlabeled", "teacher B forward, unlabeled",
                                     "gradient clipping + optimizer step", "EMA updates"}
    assert 0 <= results["batch_wait"] < 1
    lines = format_results(results)
    ratio = float(next(line for line in lines if line.startswith("step / sum-of-parts: ")).split(": ")[1])
    assert 0.5 < ratio < 3
    assert any(line.startswith("step / baseline: ") for line in lines)
    assert any(line.startswith("nnUNetTrainerMeanTeacher step: ") for line in lines)


def test_bench_step_analyses_only_micd_trainers(environment):
    from nnunetv2_micd.benchmark.bench_step import BenchSettings, measure_trainer
    settings = BenchSettings(str(environment["id"]), "3d_fullres", PLANS, batch_size=1, steps=1, warmup=1)
    with pytest.raises(ValueError, match="measure nnUNetTrainerMeanTeacher with --compare"):
        measure_trainer("nnUNetTrainerMeanTeacher", settings, analyse=True)


def test_decoder_features_are_kept_only_for_the_training_pass(environment):
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    trainer.on_train_start()
    try:
        trainer.train_step(next(trainer.dataloader_train))
        trainer.on_validation_epoch_start()
        with torch.no_grad():
            trainer.validation_step(next(trainer.dataloader_val))
        assert all(recorder.features == [] for recorder in trainer.feature_recorders)
    finally:
        trainer.on_train_end()


def test_unlabeled_data_from_other_plans_settings_is_refused(environment):
    record_file = environment["preprocessed"] / "nnUNetPlans_2d_unlabeled" / "micd_unlabeled.json"
    original = record_file.read_text()
    record = json.loads(original)
    record["preprocessing_signature"] = "made with other plans"
    record_file.write_text(json.dumps(record))
    try:
        trainer = _trainer(environment, "nnUNetTrainerMICD", "2d")
        with pytest.raises(ConfigError,
                           match="preprocessed with other plans settings .* run micd preprocess-unlabeled"):
            trainer.on_train_start()
    finally:
        record_file.write_text(original)


def test_plans_without_the_configuration_are_refused(environment):
    with pytest.raises(RuntimeError, match="3d_lowres not found in plans"):
        _trainer(environment, "nnUNetTrainerMICD", "3d_lowres")


def test_a_batch_that_does_not_fit_stops_with_the_numbers(environment, monkeypatch):
    trainer = _trainer(environment, "nnUNetTrainerMICD")
    trainer.initialize()

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "compute_losses", out_of_memory)
    with pytest.raises(MemoryError, match=r"out of memory at optimizer step 0: 2 labeled \+ 2 unlabeled patches of "
                                          r"\(40, 40, 40\) voxels through 2 student\(s\), with 2 teacher\(s\)\. "
                                          r"Start a new training with a lower unlabeled_batch_size"):
        _one_step(trainer)


def test_without_unsupervised_terms_student_a_takes_nnUNets_own_steps(environment, tmp_path, monkeypatch):
    """The supervised path of the two-network trainer is nnU-Net's: from the same weights and batches, student A
    moves exactly as the labeled-only trainer's network does."""
    labeled_only = _trainer(environment, "nnUNetTrainerBudget")
    _use_method_config(monkeypatch, tmp_path, {"lambda_max": 0.0})
    micd = _trainer(environment, "nnUNetTrainerMICD")
    for trainer in (labeled_only, micd):
        trainer.on_train_start()
    try:
        student_a = micd.students[0]
        labeled_only.network.load_state_dict(student_a.state_dict())
        before = _parameters(student_a)
        for _ in range(3):
            batch = next(micd.dataloader_train)
            labeled_only.train_step(batch)
            micd.train_step(batch)
        assert any(not torch.equal(p, b) for p, b in zip(student_a.parameters(), before))
        for expected, actual in zip(labeled_only.network.parameters(), student_a.parameters()):
            torch.testing.assert_close(actual, expected)
    finally:
        for trainer in (labeled_only, micd):
            trainer.on_train_end()
