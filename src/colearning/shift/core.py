"""The corruption registry and :func:`corrupt`, the one public entry point."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from colearning.errors import ConfigError
from colearning.registry import Registry

from .ops import Random

FAMILIES = ("noise", "blur", "weather", "digital")
SEVERITIES = (1, 2, 3, 4, 5)

# name -> f(images [B, C, H, W] float, parameter of the severity, Random) -> images (any
# range: corrupt() clips to [0, 1]). Metadata: family, description (one line), severities
# (the 5 parameters, severity 1 first), random (whether the seed matters) and monotone
# (whether the mean change to an image grows with the severity: some of the paper's
# tables do not, and each such entry's docstring says how).
CORRUPTIONS: Registry[Callable[[Tensor, Any, Random], Tensor]] = Registry("corruption")


def corruption(name: str, *, family: str, description: str, severities: Sequence[Any],
               random: bool = True, monotone: bool = True
               ) -> Callable[[Callable[[Tensor, Any, Random], Tensor]],
                             Callable[[Tensor, Any, Random], Tensor]]:
    """Register a corruption with its 5 severity parameters (see :data:`CORRUPTIONS`)."""
    if family not in FAMILIES or len(severities) != len(SEVERITIES):
        raise ValueError(f"corruption {name!r}: family must be one of {FAMILIES} and "
                         f"severities must have {len(SEVERITIES)} entries")
    return CORRUPTIONS.register(name, family=family, description=description,
                                severities=tuple(severities), random=random,
                                monotone=monotone)


def _check_images(images: Any) -> Tensor:
    if not isinstance(images, Tensor):
        raise ConfigError(f"images must be a torch tensor [B, C, H, W], got "
                          f"{type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[1] not in (1, 3) or min(shape[2:], default=0) < 2:
        raise ConfigError(f"images must have shape [B, C, H, W] with C = 1 or 3 and "
                          f"H, W >= 2, got {shape}")
    if not images.is_floating_point():
        raise ConfigError(f"images must be floats in [0, 1], got dtype {images.dtype} "
                          f"(divide uint8 images by 255)")
    if images.numel():
        low, high = (float(v) for v in images.aminmax())
        if not (low >= 0.0 and high <= 1.0):  # NaN fails too
            raise ConfigError(f"images must lie in [0, 1], got values in [{low}, {high}]")
    return images


def corrupt(images: Tensor, name: str, severity: int, seed: int = 0) -> Tensor:
    """Corrupted copy of ``images [B, C, H, W]`` (floats in [0, 1], C = 1 or 3): the same
    shape, dtype, device and range.

    ``name`` is a :data:`CORRUPTIONS` entry (its docstring says what it does), ``severity``
    1 (mild) to 5 (strong), with the parameters of CIFAR-10-C (Hendrycks & Dietterich,
    2019) where they transfer. The random draws derive from ``seed`` and ``name`` only, so
    a call is reproducible; they depend on the batch's shape too, so corrupt a split in
    one call (or always in the same chunks) to reproduce it exactly.

    >>> import torch
    >>> x = torch.rand(2, 3, 32, 32)
    >>> y = corrupt(x, "gaussian_noise", severity=3, seed=0)
    >>> y.shape, bool(torch.equal(y, corrupt(x, "gaussian_noise", 3, seed=0)))
    (torch.Size([2, 3, 32, 32]), True)
    """
    function = CORRUPTIONS.get(name)
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ConfigError(f"severity must be an int from 1 to 5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an int, got {seed!r}")
    images = _check_images(images)
    if images.shape[0] == 0:
        return images.clone()
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    rng = Random(seed, name, work.device, work.dtype)
    parameter = CORRUPTIONS.meta(name)["severities"][severity - 1]
    with torch.no_grad():
        out = function(work, parameter, rng)
    return out.clamp(0.0, 1.0).to(images.dtype)
