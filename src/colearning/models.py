"""Member architectures, built by name: ``build_model("lenet5", num_classes=10)``.

Every model is a plain ``nn.Sequential`` chain of standard layers, so the ensemble engine
can run N of them as one wide network (grouped convolutions, batched matmuls). Weights
are Xavier-initialized as in the paper (Supplementary, "training details").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from colearning.errors import ConfigError
from colearning.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


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
    model = MODELS.get(name)(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs
    )
    return xavier_init(model)


@MODELS.register("lenet5")
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


@MODELS.register("vgg9")
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
