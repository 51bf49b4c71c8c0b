from contextlib import contextmanager
from types import SimpleNamespace

import torch

from nnunetv2_micd.benchmark.bench_step import method_parts
from nnunetv2_micd.method.config import MICDConfig
from nnunetv2_micd.method.masking import default_block_size, random_block_mask


class _RecordingNetwork(torch.nn.Conv3d):
    """Records, at every forward, whether it ran inside the trainer's precision context."""

    def __init__(self, context_state: dict):
        super().__init__(1, 2, 3, padding=1)
        self.context_state, self.calls = context_state, []

    def forward(self, x):
        self.calls.append(self.context_state["inside"])
        return super().forward(x)


def test_method_parts_run_every_pass_in_the_steps_precision():
    state = {"inside": False}

    @contextmanager
    def mixed_precision():
        state["inside"] = True
        yield
        state["inside"] = False

    students, teachers = [_RecordingNetwork(state) for _ in range(2)], [_RecordingNetwork(state) for _ in range(2)]
    trainer = SimpleNamespace(
        method_config=MICDConfig(), dual_network=SimpleNamespace(branches=students), teachers=teachers,
        optimizer=torch.optim.SGD([p for s in students for p in s.parameters()], lr=0.01),
        mixed_precision=mixed_precision, masks_inputs=True, teachers_predict=True,
        _block_mask=lambda x: random_block_mask(x.shape[0], x.shape[2:], default_block_size(x.shape[2:]), 0.5))
    parts = method_parts(trainer, torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8))
    for run in parts.values():
        run()

    assert [len(s.calls) for s in students] == [2, 2]  # labeled+unlabeled and masked copies
    assert [len(t.calls) for t in teachers] == [1, 1]
    assert all(inside for network in (*students, *teachers) for inside in network.calls)
    assert all(p.grad is not None for s in students for p in s.parameters())
