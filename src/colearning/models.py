"""Member architectures, built by name: ``build_model("lenet5", num_classes=10)``.

Every model is built from standard layers (a ``nn.Sequential`` chain, or residual blocks
that torch.fx traces), so the ensemble engine can run N of them as one wide network
(grouped convolutions, batched matmuls; :mod:`colearning.grouped`). Weights are
Xavier-initialized as in the paper (Supplementary, "training details"), residual
networks included, so every architecture starts from the same rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from colearning.errors import ConfigError
from colearning.plugins import import_user_module
from colearning.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", key="model.name")


def register_model(name: str, **meta: object) -> Callable[[Any], Any]:
    """A decorator registering ``builder(num_classes, in_channels, image_size, **options)``
    as model ``name`` (``meta``: e.g. ``augment=True``, ``batch_size=256``, the paper recipe
    the trainer and ``colearn bench`` follow)."""
    return MODELS.register(name, **meta)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder of model ``name``: a registered name, or an import path
    ``"package.module:factory"`` to a callable taking num_classes, in_channels, image_size
    and the model options (so a model in the user's own file works in every process without
    registering it). One-line ConfigError when it cannot be found."""
    if ":" not in name:
        return MODELS.get(name)
    module, _, attribute = name.partition(":")
    try:
        builder = getattr(import_user_module(module), attribute)
    except Exception as error:  # noqa: BLE001 - whatever the import raised: one line
        detail = " ".join(str(error).split())[:160]
        raise ConfigError(f"model.name={name!r}: cannot import it ({type(error).__name__}"
                          f"{': ' + detail if detail else ''}); give a registered model or "
                          "an importable package.module:factory") from None
    if not callable(builder):
        raise ConfigError(f"model.name={name!r} is not callable")
    return builder


def model_meta(name: str) -> dict[str, Any]:
    """A model's registry metadata ({} for an import path)."""
    return {} if ":" in name else MODELS.meta(name)


def xavier_init(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every conv/linear layer; BN at (1, 0)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    **kwargs: object,
) -> nn.Module:
    """One member network by registry name; lists the valid names when ``name`` is unknown.

    >>> build_model("lenet5")(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels),
                       ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {key} must be a positive integer, got {value!r}")
    builder = model_builder(name)
    check_model_options(name, kwargs)
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"the builder returned a {type(model).__name__}, not an nn.Module")
        return xavier_init(model)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as error:
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise ConfigError(f"model {name} cannot be built with model.options {kwargs}: "
                          f"{detail}") from None


def check_model_options(name: str, options: dict[str, object]) -> None:
    """ConfigError when model.options names a keyword the model's builder does not take."""
    builder = model_builder(name)
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builder without a signature: it will say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    fixed = {"num_classes", "in_channels", "image_size"}
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    valid = [k for k, p in parameters.items() if k not in fixed and p.kind in named]
    for key in options:
        if key in fixed:
            raise ConfigError(f"model.options.{key} is set from the data; remove it")
        if key not in valid:
            raise ConfigError(f"model {name} takes no option {key!r}; its options: "
                              f"{', '.join(valid) or 'none'}")


@MODELS.register("lenet5", augment=False, batch_size=512)  # paper Supp.
def lenet5(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5 of paper Table S1: conv 6-16-120 (5x5), FC 84, ReLU, 2x2 max-pooling."""
    after_pools = ((image_size - 4) // 2 - 4) // 2  # spatial size entering Conv3
    if after_pools < 1:
        raise ConfigError(
            f"lenet5 needs images of at least 14x14 pixels, got {image_size}; "
            "use model.name=small_cnn or mlp for smaller images"
        )
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        # Conv3 spans the whole remaining map (5x5 at 32 pixels), giving 120 1x1 features.
        nn.Conv2d(16, 120, after_pools), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


VGG9_PLAN: Sequence[int | str] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@MODELS.register("vgg9", augment=True, batch_size=256)  # paper Supp.
def vgg9(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """VGG-9 of paper Table S2: eight 3x3 conv+BN+ReLU layers, five max-pools, one FC."""
    if image_size % 32 != 0:
        raise ConfigError(f"vgg9 needs an image size divisible by 32, got {image_size}")
    layers: list[nn.Module] = []
    channels = in_channels
    for step in VGG9_PLAN:
        if step == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, int(step), 3, padding=1), nn.BatchNorm2d(int(step)),
                       nn.ReLU()]
            channels = int(step)
    side = image_size // 32
    layers += [nn.Flatten(), nn.Linear(channels * side * side, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: relu(bn2(conv2(relu(bn1(conv1 x)))) + short x).

    The shortcut is the identity, or a 1x1 convolution with BatchNorm where the block
    changes the width or the resolution (He et al. 2016's "option B").
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style residual network: 3x3 stem (no max-pool), stages of basic blocks (the
    first block of every stage after the first halves the resolution), global average
    pooling, one linear layer."""

    def __init__(self, stages: Sequence[tuple[int, int]], num_classes: int,
                 in_channels: int) -> None:
        super().__init__()
        width = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        for stage, (channels, n_blocks) in enumerate(stages):
            for index in range(n_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(width, channels, stride))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def _resnet_stages(name: str, image_size: int, width: int, depths: Sequence[int]
                   ) -> list[tuple[int, int]]:
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"{name} width must be a positive integer, got {width!r}")
    if image_size < 2 ** (len(depths) - 1):
        raise ConfigError(f"{name} needs images of at least {2 ** (len(depths) - 1)} pixels "
                          f"(it halves them {len(depths) - 1} times), got {image_size}")
    return [(width * 2 ** k, depth) for k, depth in enumerate(depths)]


@MODELS.register("resnet20")
def resnet20(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016, Sec. 4.2): 3 stages of 3 basic blocks with
    16-32-64 channels (``width`` sets the first), 0.27M parameters at width 16; projection
    shortcuts where the shape changes."""
    return ResNet(_resnet_stages("resnet20", image_size, width, (3, 3, 3)), num_classes,
                  in_channels)


@MODELS.register("resnet18")
def resnet18(num_classes: int, in_channels: int, image_size: int, width: int = 64) -> nn.Module:
    """ResNet-18, CIFAR variant: 3x3 stem without max-pooling, 4 stages of 2 basic blocks
    with 64-128-256-512 channels (``width`` sets the first), 11.2M parameters."""
    return ResNet(_resnet_stages("resnet18", image_size, width, (2, 2, 2, 2)), num_classes,
                  in_channels)


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, in_channels: int, image_size: int, width: int = 16) -> nn.Module:
    """A two-conv network for tiny images (e.g. 8x8 digits): conv-ReLU-pool twice, one FC."""
    if image_size < 4:
        raise ConfigError(f"small_cnn needs images of at least 4x4 pixels, got {image_size}")
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * side * side, num_classes),
    )


@MODELS.register("mlp")
def mlp(
    num_classes: int, in_channels: int, image_size: int, hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
) -> nn.Module:
    """A ReLU multilayer perceptron on flattened inputs (tabular or tiny images); ``dropout``
    (a probability) after every hidden layer when > 0."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"mlp dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for size in hidden:
        layers += [nn.Linear(width, int(size)), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        width = int(size)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
