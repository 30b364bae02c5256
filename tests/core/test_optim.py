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


# --------------------------------------------------------------- every registered optimizer
def _torch_optimizer(name, params, lr, weight_decay):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=0.9,
                               foreach=False)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return kind(params, lr=lr, weight_decay=weight_decay, betas=(0.8, 0.99), eps=1e-6,
                foreach=False)


TORCH_BUFFERS = {"buffers": "momentum_buffer", "exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}


def _assert_equals_torch(optimizer, params, members, reference):
    """Parameters and every buffer of each member equal its own torch optimizer's."""
    state = optimizer.state_dict()
    for m in range(3):
        for k, p in enumerate(params):
            mine = members[m][k]
            torch.testing.assert_close(p[m].detach(), mine.detach(), rtol=1e-12, atol=1e-14)
            theirs = reference[m].state[mine]
            for key, torch_key in TORCH_BUFFERS.items():
                if key in state:
                    torch.testing.assert_close(state[key][k][m], theirs[torch_key],
                                               rtol=1e-12, atol=1e-14)
            if "step" in state:
                assert state["step"][m, k].item() == theirs["step"].item()


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_each_optimizer_equals_one_torch_optimizer_per_member(name):
    """Stacked over 3 members with their own learning rates and weight decays, in float64:
    equal to torch.optim's per member step for step, through a member skipped by the mask
    (its step count does not advance), a parameter without a gradient, a new learning rate,
    and a state_dict round trip into a fresh optimizer half-way."""
    from colearning.config import OptimConfig
    from colearning.optim import build_optimizer

    gen = torch.Generator().manual_seed(1)
    lr, decay = [0.1, 0.01, 0.05], [5e-3, 0.0, 1e-1]
    stacked = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64),
               torch.randn(3, 7, generator=gen, dtype=torch.float64)]
    options = OptimConfig(name=name, momentum=0.9, betas=[0.8, 0.99], eps=1e-6)
    params = [p.clone().requires_grad_() for p in stacked]
    optimizer = build_optimizer(options, params, lr=lr, weight_decay=decay)
    members = [[p[m].clone().requires_grad_() for p in stacked] for m in range(3)]
    reference = [_torch_optimizer(name, members[m], lr[m], decay[m]) for m in range(3)]
    masks = {1: [True, False, True], 3: [False, True, True], 4: [True, False, True]}
    for step in range(8):
        if step == 5:  # a schedule's new learning rates
            lr = [0.02, 0.2, 0.01]
            optimizer.set_lr(lr)
            for m in range(3):
                reference[m].param_groups[0]["lr"] = lr[m]
        if step == 4:  # resumed from the state half-way: the same numbers go on
            fresh = [p.detach().clone().requires_grad_() for p in params]
            resumed = build_optimizer(options, fresh, lr=lr, weight_decay=decay)
            resumed.load_state_dict(optimizer.state_dict())
            optimizer, params = resumed, fresh
        grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in stacked]
        unused = 1 if step == 6 else None  # no gradient at all for parameter 1
        mask = torch.tensor(masks[step]) if step in masks else None
        for k, (p, g) in enumerate(zip(params, grads, strict=True)):
            p.grad = None if k == unused else g.clone()
        if step in (1, 3):  # a skipped member's gradient may be anything, even NaN
            for p in params:
                p.grad[~mask] = float("nan")
        optimizer.step(mask)
        for m in range(3):
            if mask is not None and not mask[m]:
                continue
            for k, (p, g) in enumerate(zip(members[m], grads, strict=True)):
                p.grad = None if k == unused else g[m].clone()
            reference[m].step()
    _assert_equals_torch(optimizer, params, members, reference)


def test_adam_state_rows_of_a_cell_round_trip():
    from colearning.optim import StackedAdamW

    p = torch.randn(4, 3, requires_grad=True)
    optimizer = StackedAdamW([p], lr=0.1, weight_decay=0.01)
    p.grad = torch.randn(4, 3)
    optimizer.step(torch.tensor([True, True, False, True]))
    rows = optimizer.member_state(slice(1, 3))
    assert rows["name"] == "adamw" and rows["step"].tolist() == [[1.0], [0.0]]
    other = StackedAdamW([torch.zeros(4, 3, requires_grad=True)], lr=0.1)
    other.load_member_state(slice(0, 2), rows)
    assert torch.equal(other.exp_avg_sq[0][:2], optimizer.exp_avg_sq[0][1:3])
    assert other.steps[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_another_optimizers_state_is_refused_and_an_unnamed_one_is_sgds():
    from colearning.optim import StackedAdam

    sgd = StackedSGD([torch.zeros(2, 3, requires_grad=True)], lr=0.1, momentum=0.9)
    adam = StackedAdam([torch.zeros(2, 3, requires_grad=True)], lr=0.1)
    with pytest.raises(ConfigError, match="the optimizer state is sgd's; this run's optimizer "
                                          r"is adam \(optim.name\)"):
        adam.load_state_dict(sgd.state_dict())
    state = sgd.state_dict()
    del state["name"]  # checkpoint format 2: StackedSGD's state, unnamed
    sgd.load_state_dict({**state, "buffers": [torch.ones(2, 3)]})
    assert torch.equal(sgd.buffers[0], torch.ones(2, 3))


def test_the_registry_is_the_list_of_optimizers_and_bad_options_are_one_line():
    from colearning.config import config_from_dict
    from colearning.names import check_names
    from colearning.optim import OPTIMIZERS

    assert OPTIMIZERS.names() == ["adam", "adamw", "sgd"]
    assert OPTIMIZERS.meta("adamw")["options"] == ("betas", "eps")
    assert OPTIMIZERS.meta("adamw")["state"](None) == 2  # exp_avg, exp_avg_sq
    with pytest.raises(ConfigError, match="optim.name='rmsprop' is not valid; valid: adam, "
                                          "adamw, sgd"):
        check_names(config_from_dict({"optim": {"name": "rmsprop"}}))
    for optim, message in [({"betas": [0.9, 1.0]}, "optim.betas must be two numbers in"),
                           ({"betas": [0.9]}, "optim.betas must be two numbers in"),
                           ({"eps": 0.0}, "optim.eps must be a number > 0"),
                           ({"warmup_epochs": -1}, "optim.warmup_epochs must be >= 0")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"optim": {"name": "adam", **optim}})
