"""Out-of-distribution sets for ``colearn evaluate --ood``: ``held-out`` (the test images of
the classes data.classes left out), ``noise`` (synthetic) or a dataset file, as float images
[n, C, H, W] in [0, 1] of the run's channels and size.

``noise``: as many images as the run's test split, seeded; the first half uniform noise,
the rest Gaussian blobs (Gaussian noise low-passed by a Gaussian blur of sigma = size / 8,
then stretched to [0, 1] per image; after Hendrycks et al., 2019, "Deep anomaly detection
with outlier exposure"). A dataset file (``--data``'s YAML or .npz) gives its test side,
resized with ``torch.nn.functional.interpolate`` (bilinear, antialias) and converted to the
run's channels (RGB to gray by luminance, gray to RGB by repetition).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colearning.errors import ConfigError
from colearning.inference.sources import read_source, side, tag

HELD_OUT = "held-out"
NOISE = "noise"
BUILT_IN = (HELD_OUT, NOISE)
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


def set_name(ood: str) -> str:
    """The name an --ood set has in ood.csv and summary.json: ``held-out``, ``noise`` or the
    file's stem as a tag."""
    return ood if ood in BUILT_IN else tag(Path(ood).stem)


def check_ood(ood: str, has_classes: bool) -> None:
    """A one-line ConfigError unless ``ood`` is a set this run can be evaluated on."""
    if ood == HELD_OUT and not has_classes:
        raise ConfigError("--ood held-out needs a run trained on data.classes (a subset of "
                          "the dataset's classes); use noise or a data file instead")
    if ood not in BUILT_IN:
        path = Path(ood).expanduser()
        if path.suffix.lower() not in (".yaml", ".yml", ".npz"):
            raise ConfigError(f"--ood takes held-out, noise or a YAML/.npz data file, got {ood}")
        if not path.is_file():
            raise ConfigError(f"--ood data file {path} does not exist")


def noise_images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """``n`` synthetic images [n, channels, size, size] in [0, 1] (see the module)."""
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n // 2, channels, size, size, generator=generator)
    blobs = torch.randn(n - n // 2, channels, size, size, generator=generator)
    sigma = max(size / 8, 0.5)
    radius = max(1, int(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-grid**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = blobs.reshape(-1, 1, size, size)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="circular"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="circular"), kernel.view(1, 1, -1, 1))
    blobs = flat.reshape(blobs.shape)
    low = blobs.amin(dim=(1, 2, 3), keepdim=True)
    high = blobs.amax(dim=(1, 2, 3), keepdim=True)
    blobs = (blobs - low) / (high - low).clamp_min(1e-12)
    return torch.cat([uniform, blobs]).clamp(0.0, 1.0)


def fit_images(images: np.ndarray, channels: int, size: int, name: str) -> torch.Tensor:
    """uint8 images [n, c, h, w] as float [n, channels, size, size] in [0, 1]: resized
    (bilinear, antialias; said in one line on stderr) and converted to ``channels``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = (x * torch.tensor(LUMINANCE).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif x.shape[1] == 1 and channels == 3:
            x = x.repeat(1, 3, 1, 1)
        else:
            raise ConfigError(f"{name} has {x.shape[1]}-channel images; the run takes "
                              f"{channels} channels and only gray <-> RGB is converted")
    if tuple(x.shape[2:]) != (size, size):
        print(f"colearn: resizing {name} images from {x.shape[2]}x{x.shape[3]} to {size}x{size} "
              "(bilinear, antialias)", file=sys.stderr, flush=True)
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.clamp(0.0, 1.0)


def ood_images(ood: str, *, held_out: np.ndarray, n_test: int, channels: int, size: int,
               seed: int) -> torch.Tensor | np.ndarray:
    """The images of the --ood set ``ood`` (uint8 for ``held-out``, else float in [0, 1])
    for a run taking ``channels``-channel ``size`` x ``size`` images."""
    if ood == HELD_OUT:
        if not len(held_out):
            raise ConfigError("--ood held-out: the held-out classes have no test images")
        return held_out
    if ood == NOISE:
        return noise_images(n_test, channels, size, seed)
    source = read_source(ood)
    images, _ = side(source.raw, "test")
    return fit_images(images, channels, size, set_name(ood))
