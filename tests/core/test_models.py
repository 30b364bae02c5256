import pytest
import torch
from torch import nn

from colearning import ConfigError, build_model


@pytest.mark.parametrize(
    "name, kwargs, shape, params",
    [
        # LeNet-5 (Table S1): 456 + 2416 + 48120 + 10164 + 850 parameters
        ("lenet5", {}, (3, 32, 32), 62006),
        # VGG-9 (Table S2) for CIFAR-100
        ("vgg9", {"num_classes": 100}, (3, 32, 32), None),
        ("small_cnn", {"in_channels": 1, "image_size": 8}, (1, 8, 8), None),
        ("mlp", {"in_channels": 1, "image_size": 8}, (1, 8, 8), 64 * 128 + 128 + 128 * 64 + 64
         + 64 * 10 + 10),
    ],
)
def test_shapes_and_sizes(name, kwargs, shape, params):
    model = build_model(name, **kwargs)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, kwargs.get("num_classes", 10))
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == params


def test_vgg9_layout():
    model = build_model("vgg9", num_classes=100)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [100]


def test_xavier_init_and_zero_bias():
    conv = build_model("lenet5")[0]
    bound = (6 / (3 * 25 + 6 * 25)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.8 * bound
    assert torch.count_nonzero(conv.bias) == 0


def test_bad_names_and_sizes():
    valid = "valid: lenet5, mlp, resnet18, resnet20, small_cnn, vgg9"
    with pytest.raises(ConfigError, match=valid):
        build_model("resnet")
    with pytest.raises(ConfigError, match="at least 8 pixels"):
        build_model("resnet18", image_size=2)
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        build_model("resnet20", width=0)
    with pytest.raises(ConfigError, match="small_cnn or mlp"):
        build_model("lenet5", image_size=8)
    with pytest.raises(ConfigError, match="positive integer"):
        build_model("mlp", num_classes=0)


@pytest.mark.parametrize("name, parameters", [("resnet20", 272_474), ("resnet18", 11_173_962)])
def test_residual_networks(name, parameters):
    """ResNet-20 (He et al.'s 0.27M, with projection shortcuts) and the CIFAR ResNet-18
    (11.2M): sizes, output shape, and the grouped strategy picked by auto."""
    from colearning import Ensemble

    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    ens = Ensemble(lambda: build_model(name, width=4, image_size=8), 2)
    assert ens.resolved_strategy(torch.device("cpu")) == "grouped"
    assert ens.resolved_strategy(torch.device("cuda")) == "grouped"
