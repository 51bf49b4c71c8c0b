"""Smaller plans over the same preprocessed data, so real nnU-Net networks train quickly on a CPU.

Only the network width (features per stage), optionally its depth, the batch size and the patch size change. Data
identifiers, spacing and normalisation stay as planned, so the tiny plans read the data that
``nnUNetv2_plan_and_preprocess`` (and ``micd preprocess-unlabeled``) already wrote.
"""
from copy import deepcopy
from typing import Optional, Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunetv2_micd.errors import MissingInputError, UsageError

TINY_PLANS = "nnUNetPlans_tiny"
DEFAULT_TINY_FEATURES = (8, 16, 32, 64)
PER_STAGE_KEYS = ("kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage")


def shrink_architecture(arch_kwargs: dict, features: Sequence[int]) -> dict:
    """Returns arch kwargs with the given features per stage. Fewer features than planned stages drop the deepest
    stages; more are cut to the planned stages (small images get shallow plans)."""
    num_stages = min(len(features), arch_kwargs["n_stages"])
    features = features[:num_stages]
    if num_stages < 3:
        # with 2 stages nnU-Net's deep-supervision loss weights all scales by 0 / 0 and every loss is NaN
        raise UsageError(f"the tiny network needs at least 3 stages for nnU-Net's deep supervision, got "
                         f"{num_stages} (features {list(features)}, {arch_kwargs['n_stages']} planned stages)")
    shrunk = deepcopy(arch_kwargs)
    shrunk["n_stages"] = num_stages
    shrunk["features_per_stage"] = [int(f) for f in features]
    for key in PER_STAGE_KEYS:
        if key in shrunk and isinstance(shrunk[key], list):
            shrunk[key] = shrunk[key][:num_stages]
    if "n_conv_per_stage_decoder" in shrunk:
        shrunk["n_conv_per_stage_decoder"] = shrunk["n_conv_per_stage_decoder"][:num_stages - 1]
    return shrunk


def smaller_patch(configuration: dict, patch_size: Sequence[int]) -> list:
    """``patch_size`` for a configuration of its dimensionality; every stage's stride must divide it."""
    arch_kwargs = configuration["architecture"]["arch_kwargs"]
    divisor = np.prod(arch_kwargs["strides"][:arch_kwargs["n_stages"]], axis=0)
    if any(size < 1 or size % d for size, d in zip(patch_size, divisor)):
        raise UsageError(f"patch size {list(patch_size)} must be a multiple of {divisor.tolist()} (the product of "
                         f"the network's strides)")
    return [int(size) for size in patch_size]


def make_tiny_plans(plans: dict, new_name: str, features: Sequence[int] = DEFAULT_TINY_FEATURES,
                    batch_size: int = 2, patch_size: Optional[Sequence[int]] = None) -> dict:
    """The plans with a smaller network and batch (and patch, in the configurations of its dimensionality)."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    tiny = deepcopy(plans)
    tiny["plans_name"] = new_name
    for configuration in tiny["configurations"].values():
        if "architecture" in configuration:
            architecture = configuration["architecture"]
            architecture["arch_kwargs"] = shrink_architecture(architecture["arch_kwargs"], features)
            if patch_size is not None and len(patch_size) == len(configuration["patch_size"]):
                configuration["patch_size"] = smaller_patch(configuration, patch_size)
        if "batch_size" in configuration:
            configuration["batch_size"] = batch_size
    return tiny


def write_tiny_plans(dataset: str, source_plans: str = "nnUNetPlans", new_name: str = TINY_PLANS,
                     features: Sequence[int] = DEFAULT_TINY_FEATURES, batch_size: int = 2,
                     patch_size: Optional[Sequence[int]] = None) -> str:
    """Writes ``nnUNet_preprocessed/<dataset>/<new_name>.json`` and returns its path."""
    dataset_folder = join(nnUNet_preprocessed.require(), maybe_convert_to_dataset_name(dataset))
    source_file = join(dataset_folder, source_plans + ".json")
    if not isfile(source_file):
        raise MissingInputError(f"No plans file {source_file}. Run nnUNetv2_plan_and_preprocess first.")
    if new_name == source_plans:
        raise UsageError("the tiny plans need a name different from the source plans")
    target_file = join(dataset_folder, new_name + ".json")
    tiny = make_tiny_plans(load_json(source_file), new_name, features, batch_size, patch_size)
    save_json(tiny, target_file, sort_keys=False)
    return target_file
