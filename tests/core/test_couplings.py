"""Couplings and beta schedules (loss.coupling, loss.beta_schedule) against hand-built ones."""

import math

import pytest
import torch

from colearning.config import LossConfig, config_from_dict
from colearning.couplings import COUPLINGS, beta_factor, coupling_matrix
from colearning.errors import ConfigError
from colearning.losses import beta_matrix


def loss(**values):
    return LossConfig(**values)


def test_uniform_is_the_papers_coupling():
    for beta, beta_bar in ((-0.2, None), (None, -1.0), (None, None)):
        got = coupling_matrix(loss(beta=beta, beta_bar=beta_bar), 5)
        want = beta_matrix(beta, 5, beta_bar=beta_bar, dtype=torch.float64)
        torch.testing.assert_close(got, want)
    matrix = [[0.0, -0.1, 0.2], [0.3, 0.0, 0.1], [0.0, -0.5, 0.0]]
    torch.testing.assert_close(coupling_matrix(loss(beta=matrix), 3),
                               torch.tensor(matrix, dtype=torch.float64))


def test_ring_random_star_and_communities_by_hand():
    ring = coupling_matrix(loss(beta=-0.1, coupling="ring", coupling_options={"k": 1}), 5)
    want = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(5):
        want[i, (i - 1) % 5] = want[i, (i + 1) % 5] = -0.1
    torch.testing.assert_close(ring, want)
    # beta_bar per degree: 2 neighbours each -> beta_bar / 3 on each edge
    bar = coupling_matrix(loss(beta_bar=-0.9, coupling="ring"), 5)
    torch.testing.assert_close(bar, want / -0.1 * (-0.9 / 3))
    star = coupling_matrix(loss(beta_bar=-1.0, coupling="star"), 4)
    assert star[0, 1:].tolist() == [-0.25] * 3  # member 0 has 3 neighbours
    assert star[1:, 0].tolist() == [-0.5] * 3 and float(star[1:, 1:].abs().sum()) == 0
    groups = coupling_matrix(loss(coupling="communities", coupling_options={
        "groups": 2, "beta_in": 0.3, "beta_out": -0.1}), 4)
    assert groups.tolist() == [[0.0, 0.3, -0.1, -0.1], [0.3, 0.0, -0.1, -0.1],
                               [-0.1, -0.1, 0.0, 0.3], [-0.1, -0.1, 0.3, 0.0]]
    random = coupling_matrix(loss(beta=-0.2, coupling="random",
                                  coupling_options={"p": 0.5, "seed": 3}), 8)
    assert torch.equal(random, random.T) and float(random.diagonal().abs().sum()) == 0
    assert torch.equal(random, coupling_matrix(loss(beta=-0.2, coupling="random",
                                                    coupling_options={"p": 0.5, "seed": 3}), 8))
    assert set(random.unique().tolist()) <= {0.0, -0.2}


def test_bad_couplings_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown coupling 'grid'"):
        coupling_matrix(loss(coupling="grid"), 3)
    with pytest.raises(ConfigError, match="unknown option 'q' of coupling ring; valid: k"):
        coupling_matrix(loss(coupling="ring", coupling_options={"q": 1}), 3)
    with pytest.raises(ConfigError, match="beta_in and beta_out"):
        coupling_matrix(loss(beta=-0.1, coupling="communities"), 4)
    with pytest.raises(ConfigError, match="probability"):
        coupling_matrix(loss(coupling="random", coupling_options={"p": 2}), 4)


def test_schedules():
    assert [beta_factor(loss(), e, 10) for e in (0, 9)] == [1.0, 1.0]
    warm = loss(beta_schedule="warmup", beta_schedule_options={"epochs": 4})
    assert [beta_factor(warm, e, 10) for e in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert beta_factor(loss(beta_schedule="warmup"), 5, 100) == 0.5  # a tenth: 10 epochs
    cos = loss(beta_schedule="cosine")
    assert beta_factor(cos, 0, 10) == 1.0
    assert beta_factor(cos, 5, 10) == pytest.approx(0.5)
    assert beta_factor(cos, 9, 10) == pytest.approx((1 + math.cos(math.pi * 0.9)) / 2)
    step = loss(beta_schedule="step", beta_schedule_options={"every": 3, "gamma": 0.1})
    assert [beta_factor(step, e, 10) for e in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])


def test_couplings_declare_how_their_strength_is_given():
    from colearning.couplings import strength_in_options

    assert {name: COUPLINGS.meta(name)["strength"] for name in COUPLINGS} == {
        "communities": "options", "matrix": "matrix", "random": "beta", "ring": "beta",
        "star": "beta", "uniform": "beta"}
    assert strength_in_options(loss(coupling="communities"))
    assert not strength_in_options(loss(beta=[[0.0, 1.0], [1.0, 0.0]]))
    for key in ("optim.schedule", "loss.beta_schedule"):  # validated by the registry itself
        with pytest.raises(ConfigError, match="unknown schedule 'linear'; valid: constant, "
                                              "cosine, step, warmup"):
            config_from_dict({key.split(".")[0]: {key.split(".")[1]: "linear"}})


def test_one_schedule_registry_for_the_learning_rate_and_the_coupling():
    from colearning.schedules import uses_length
    from colearning.training.setup import learning_rate

    config = config_from_dict({"optim": {"lr": 0.1, "schedule": "step",
                                         "schedule_options": {"every": 3, "gamma": 0.1}},
                               "train": {"epochs": 10}})
    lrs = [learning_rate(config, e) for e in (0, 2, 3, 6)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])
    step = loss(beta_schedule="step", beta_schedule_options={"every": 3, "gamma": 0.1})
    assert [beta_factor(step, e, 10) for e in (0, 2, 3, 6)] == pytest.approx(
        [lr / 0.1 for lr in lrs])
    assert uses_length("cosine", {}) and uses_length("step", {"gamma": 0.5})
    assert not uses_length("step", {"every": 2}) and not uses_length("constant", {})
    with pytest.raises(ConfigError, match="unknown option 'q' of schedule step"):
        config_from_dict({"optim": {"schedule": "step", "schedule_options": {"q": 1}}})


def test_configs_written_before_schedule_options_still_load():
    """optim.step_size / optim.gamma (before 0.3) are the step schedule's every / gamma."""
    old = config_from_dict({"optim": {"schedule": "step", "step_size": 50, "gamma": 0.1}})
    assert old.optim.schedule_options == {"every": 50, "gamma": 0.1}
    assert config_from_dict({"optim": {"step_size": 50, "gamma": 0.1}}).optim.schedule_options \
        == {}


def test_labels_name_topology_options_schedule_and_target():
    from colearning.couplings import coupling_label

    assert coupling_label(loss(beta=-0.2)) == "uniform"
    assert coupling_label(loss(beta_bar=-1.0, divergence="js")) == "uniform"  # not a coupling
    assert coupling_label(loss(beta=[[0.0, 1.0], [1.0, 0.0]])) == "matrix"
    assert coupling_label(loss(beta_bar=-1.0, coupling="ring", coupling_options={"k": 2})) \
        == "ring(k=2)"
    assert coupling_label(loss(coupling="communities", coupling_options={
        "groups": 2, "beta_out": -0.1, "beta_in": 0.1})) == \
        "communities(beta_in=0.1,beta_out=-0.1,groups=2)"
    assert coupling_label(loss(beta=-0.1, coupling="star", beta_schedule="warmup",
                               beta_schedule_options={"epochs": 3})) == "star+warmup(epochs=3)"
    assert coupling_label(loss(beta_bar=-0.5, beta_schedule="cosine", target_js=0.2)) == \
        "uniform+cosine+js0.2"


def test_run_directory_names_carry_the_coupling_label(tmp_path):
    from colearning.config import Config
    from colearning.training.lifecycle import new_run_dir

    def name(**values):
        config = Config()
        config.ensemble.n_members = 10
        for key, value in values.items():
            setattr(config.loss, key, value)
        return new_run_dir(config, tmp_path).name.split("-", 2)[2]

    assert name(beta=-0.1) == "small_cnn-N10-b-0.1"
    assert name(beta=None, beta_bar=-0.5, coupling="ring", coupling_options={"k": 2}) == \
        "small_cnn-N10-bb-0.5-ring-k2"
    assert name(beta=None, coupling="communities",
                coupling_options={"beta_in": 0.1, "beta_out": -0.1}) == \
        "small_cnn-N10-communities-beta_in0.1-beta_out-0.1"
