import pytest

from nnunetv2_micd.experiment_planning.tiny_plans import make_tiny_plans, shrink_architecture

ARCH = {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320], "kernel_sizes": [[3, 3, 3]] * 5,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4, "n_conv_per_stage": [2] * 5, "n_conv_per_stage_decoder": [2] * 4}


def test_fewer_features_drop_the_deepest_stages():
    tiny = shrink_architecture(ARCH, [8, 16, 32])
    assert tiny["n_stages"] == 3 and tiny["features_per_stage"] == [8, 16, 32]
    assert tiny["strides"] == ARCH["strides"][:3] and tiny["n_conv_per_stage_decoder"] == [2, 2]
    assert ARCH["n_stages"] == 5  # the source is not modified


def test_more_features_than_stages_are_cut_to_the_plans():
    tiny = shrink_architecture({**ARCH, "n_stages": 3}, [8, 16, 32, 64])
    assert tiny["features_per_stage"] == [8, 16, 32]


def test_plans_keep_data_identifier_and_get_new_name_and_batch_size():
    plans = {"plans_name": "nnUNetPlans", "configurations": {
        "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2,
                       "architecture": {"arch_kwargs": ARCH}},
        "3d_cascade_fullres": {"inherits_from": "3d_fullres"}}}
    tiny = make_tiny_plans(plans, "nnUNetPlans_tiny", [8, 16, 32, 64], batch_size=4)
    configuration = tiny["configurations"]["3d_fullres"]
    assert tiny["plans_name"] == "nnUNetPlans_tiny"
    assert configuration["data_identifier"] == "nnUNetPlans_3d_fullres" and configuration["batch_size"] == 4
    assert configuration["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 16, 32, 64]
    assert tiny["configurations"]["3d_cascade_fullres"] == {"inherits_from": "3d_fullres"}
    with pytest.raises(ValueError, match="batch size"):
        make_tiny_plans(plans, "x", batch_size=0)


def test_fewer_than_three_stages_are_refused():
    # nnU-Net's deep-supervision loss is NaN with a single output scale
    with pytest.raises(ValueError, match="at least 3 stages"):
        shrink_architecture(ARCH, [4, 8])


def test_a_smaller_patch_applies_to_the_configurations_of_its_dimensionality():
    arch_2d = {**ARCH, "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4}
    plans = {"plans_name": "nnUNetPlans", "configurations": {
        "2d": {"patch_size": [256, 224], "batch_size": 12, "architecture": {"arch_kwargs": arch_2d}},
        "3d_fullres": {"patch_size": [16, 160, 128], "batch_size": 2, "architecture": {"arch_kwargs": ARCH}}}}
    tiny = make_tiny_plans(plans, "nnUNetPlans_tiny", [8, 16, 32, 64], batch_size=4, patch_size=[128, 96])
    assert tiny["configurations"]["2d"]["patch_size"] == [128, 96]  # 4 stages: strides multiply to 8
    assert tiny["configurations"]["3d_fullres"]["patch_size"] == [16, 160, 128]
    with pytest.raises(ValueError, match=r"multiple of \[8, 8\]"):
        make_tiny_plans(plans, "x", [8, 16, 32, 64], patch_size=[128, 100])
