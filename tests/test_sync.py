"""The steady-state training step never reads a tensor back to the host (a device sync).

On a GPU every such read makes Python wait for the device; on this CPU-only CI the test
counts the calls that would (item, tolist, bool/int/float conversion, cpu, numpy) during
training steps, with only host-side tensors allowed (the pack's member-to-cell map).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from colearning.config import config_from_dict
from colearning.training.data import cell_data, load_raw, make_pool
from colearning.training.plan import plain_plan
from colearning.training.setup import build_members
from colearning.training.step import Cell, Pack

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")


def _pack(n_cells: int, **train) -> Pack:
    device = torch.device("cpu")
    cells = []
    raw = None
    for seed in range(n_cells):
        config = config_from_dict({
            "seed": seed, "device": "cpu", "data": {"name": "digits"},
            "model": {"name": "small_cnn", "options": {"width": 4}},
            "ensemble": {"n_members": 2 + seed % 2}, "loss": {"beta": -0.1 * seed},
            "optim": {"grad_clip": 5.0},
            "train": {"batch_size": 128, "progress": False, **train}})
        raw = raw or load_raw(config)
        pool = make_pool(raw, device)
        cells.append(Cell(config, Path("."), cell_data(config, raw, device),
                          plain_plan(config, build_members(config, pool, device))))
    pack = Pack(cells, pool, device)
    pack.start_epoch(0, 0)
    return pack


@pytest.mark.parametrize("n_cells, on_nonfinite", [(1, "stop"), (3, "stop"), (3, "skip")])
def test_training_steps_read_nothing_back(monkeypatch, n_cells, on_nonfinite):
    pack = _pack(n_cells, on_nonfinite=on_nonfinite)
    pack.step(0)  # the first step may build caches
    allowed = {id(pack.member_inputs)}
    reads: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            if id(self) not in allowed:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for step in range(1, 4):
        pack.step(step)
    monkeypatch.undo()
    assert reads == []
