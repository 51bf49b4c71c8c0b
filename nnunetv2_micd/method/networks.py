"""The two MICD branches, and the one module that nnU-Net saves, loads and predicts with.

nnU-Net's predictor rebuilds a network with the trainer's ``build_network_architecture`` and loads
``checkpoint['network_weights']`` strictly, without ever seeing the MICD configuration. So the saved network is a
:class:`DualBranchNetwork` holding exactly what prediction needs (two branches) plus its inference mode as a
buffer; teachers, optimizer and training state are saved under other checkpoint keys.
"""
from contextlib import contextmanager
from typing import List, Optional, Tuple, Union

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

from nnunetv2_micd.errors import UsageError

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
NNUNET_CONVS_PER_STAGE = 2  # what nnU-Net plans for a PlainConvUNet stage


def heterogeneous_architecture(class_name: str, arch_kwargs: dict) -> Tuple[str, dict]:
    """Branch B: the other U-Net family with the same stages (strides, kernels, features) as branch A."""
    kwargs = dict(arch_kwargs)
    short_name = class_name.split(".")[-1]
    if short_name == "PlainConvUNet":
        # a residual block holds two convolutions, so half as many blocks keeps the depth comparable
        kwargs["n_blocks_per_stage"] = [max(1, (n + 1) // 2) for n in kwargs.pop("n_conv_per_stage")]
        return RESIDUAL_UNET, kwargs
    if short_name == "ResidualEncoderUNet":
        n_stages = len(kwargs.pop("n_blocks_per_stage"))
        for key in ("block", "bottleneck_channels", "stem_channels"):
            kwargs.pop(key, None)
        kwargs["n_conv_per_stage"] = [NNUNET_CONVS_PER_STAGE] * n_stages
        return PLAIN_UNET, kwargs
    raise UsageError(f"MICD builds its second branch for PlainConvUNet or ResidualEncoderUNet plans, "
                     f"not for {class_name}")


def build_branches(configuration_manager: ConfigurationManager, num_input_channels: int, num_output_channels: int,
                   deep_supervision: bool, heterogeneous: bool = True) -> Tuple[nn.Module, nn.Module]:
    """Branch A is nnU-Net's planned network with nnU-Net's initialisation. Branch B is the other U-Net family
    (or the same one, for the homogeneous ablation) with PyTorch's default initialisation, so the branches differ
    in architecture, initial weights and the random draw."""
    class_name = configuration_manager.network_arch_class_name
    arch_kwargs = configuration_manager.network_arch_init_kwargs
    requires_import = configuration_manager.network_arch_init_kwargs_req_import
    branch_a = get_network_from_plans(class_name, arch_kwargs, requires_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=deep_supervision)
    if heterogeneous:
        class_name, arch_kwargs = heterogeneous_architecture(class_name, arch_kwargs)
    requires_import = [k for k in requires_import if k in arch_kwargs]
    branch_b = get_network_from_plans(class_name, arch_kwargs, requires_import, num_input_channels,
                                      num_output_channels, allow_init=False, deep_supervision=deep_supervision)
    return branch_a, branch_b


Output = Union[torch.Tensor, List[torch.Tensor]]


def average_outputs(a: Output, b: Output) -> Output:
    """Mean of two outputs, per deep-supervision scale when there are several."""
    if isinstance(a, (list, tuple)):
        return [(i + j) / 2 for i, j in zip(a, b)]
    return (a + b) / 2


class DualBranchNetwork(nn.Module):
    """Two segmentation networks predicting together: the average of their logits, or branch A alone."""

    def __init__(self, branch_a: nn.Module, branch_b: nn.Module, use_branch_b: bool = True):
        super().__init__()
        self.branch_a = branch_a
        self.branch_b = branch_b
        # a buffer, so the saved weights carry the inference mode to nnU-Net's predictor
        self.register_buffer("use_branch_b", torch.tensor(use_branch_b))

    @property
    def branches(self) -> Tuple[nn.Module, nn.Module]:
        return self.branch_a, self.branch_b

    def set_deep_supervision(self, enabled: bool) -> None:
        for branch in self.branches:
            branch.decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor, masked: Optional[torch.Tensor] = None,
                separate_branches: bool = False) -> Union[Output, Tuple]:
        """Prediction: the branches' average (or branch A alone). With ``separate_branches``: every branch's output
        on ``x`` and, when given, on ``masked`` as ((a, a_masked), (b, b_masked)), all passes on ``x`` first.

        Training passes go through this one call so that a DistributedDataParallel wrapper sees them."""
        if separate_branches:
            outputs = [branch(x) for branch in self.branches]
            masked_outputs = [branch(masked) if masked is not None else None for branch in self.branches]
            return tuple(zip(outputs, masked_outputs))
        output_a = self.branch_a(x)
        if not self.use_branch_b:
            return output_a
        return average_outputs(output_a, self.branch_b(x))


class DecoderFeatureRecorder:
    """Records the output of every decoder stage of a U-Net for the first forward pass inside :meth:`recording`
    (the features CFC compares), so later passes (masked copies), validation and inference keep nothing."""

    def __init__(self, network: nn.Module):
        self.features: List[torch.Tensor] = []
        self._active = False
        self._num_stages = len(network.decoder.stages)
        for stage in network.decoder.stages:
            stage.register_forward_hook(self._record)

    def _record(self, module, inputs, output) -> None:
        if self._active and len(self.features) < self._num_stages:
            self.features.append(output)

    @contextmanager
    def recording(self):
        """Records during the block; the features are then in :attr:`features`, deepest decoder stage first."""
        self.features, self._active = [], True
        try:
            yield self
        finally:
            self._active = False

    def take(self) -> List[torch.Tensor]:
        """The recorded features, released from the recorder."""
        features, self.features = self.features, []
        return features

