"""StackedSGD against torch.optim.SGD, one optimizer per member."""

import pytest
import torch

from colearning import ConfigError
from colearning.optim import StackedSGD


def test_matches_torch_sgd_per_member_with_own_lr_and_weight_decay():
    gen = torch.Generator().manual_seed(0)
    lr, decay = [0.1, 0.01, 0.05], [5e-4, 0.0, 1e-2]
    stacked = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 7, generator=gen)]
    params = [p.clone().requires_grad_() for p in stacked]
    optimizer = StackedSGD(params, lr=lr, weight_decay=decay, momentum=0.9)
    members = [[p[m].clone().requires_grad_() for p in stacked] for m in range(3)]
    reference = [torch.optim.SGD(members[m], lr=lr[m], weight_decay=decay[m], momentum=0.9)
                 for m in range(3)]
    active = torch.tensor([True, False, True])
    for step in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in stacked]
        mask = active if step == 2 else None  # member 1 skips step 2
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step(mask)
        for m in range(3):
            if mask is not None and not mask[m]:
                continue
            for p, g in zip(members[m], grads, strict=True):
                p.grad = g[m].clone()
            reference[m].step()
    for m in range(3):
        for k, p in enumerate(params):
            # equal to rounding: StackedSGD fuses decay and learning rate per member with
            # addcmul, torch with add(alpha=...); the values differ in the last bits at most
            torch.testing.assert_close(p[m].detach(), members[m][k].detach(), rtol=1e-6,
                                       atol=1e-7)


def test_inactive_member_keeps_parameters_and_momentum_exactly():
    p = torch.ones(2, 3, requires_grad=True)
    optimizer = StackedSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(2, 3)
    optimizer.step()
    before = p.detach().clone(), optimizer.buffers[0].clone()
    p.grad = torch.full((2, 3), float("nan"))
    optimizer.step(torch.tensor([False, False]))
    assert torch.equal(p.detach(), before[0]) and torch.equal(optimizer.buffers[0], before[1])


def test_state_round_trip_per_member_rows():
    p = torch.randn(4, 3, requires_grad=True)
    optimizer = StackedSGD([p], lr=0.1, momentum=0.5)
    p.grad = torch.randn(4, 3)
    optimizer.step()
    rows = optimizer.member_state(slice(1, 3))
    other = StackedSGD([torch.zeros(4, 3, requires_grad=True)], lr=0.1, momentum=0.5)
    other.load_member_state(slice(0, 2), rows)
    assert torch.equal(other.buffers[0][:2], optimizer.buffers[0][1:3])


def test_bad_settings():
    with pytest.raises(ConfigError, match="one per member"):
        StackedSGD([torch.zeros(3, 2, requires_grad=True)], lr=[0.1, 0.2])
    with pytest.raises(ConfigError, match="non-negative"):
        StackedSGD([torch.zeros(3, 2, requires_grad=True)], lr=-0.1)
