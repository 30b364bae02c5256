"""Images from outside a run, checked and prepared exactly as the run's training fed its own.

A run's members take float32 images [B, C, H, W]: pixels scaled to [0, 1], then, when the
run had data.normalize, standardized per channel by its training split's mean and std
(:func:`colearning.training.data.gather`). ``inputs`` is what a checkpoint records of that
(``Ensemble.inputs`` after :func:`colearning.load_ensemble`): num_classes, in_channels,
image_size, mean and std.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from colearning.errors import ConfigError

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tensor(images: Any) -> torch.Tensor:
    """``images`` (a numpy array or torch tensor) as a tensor sharing its memory where it can."""
    if isinstance(images, torch.Tensor):
        return images.detach()
    if isinstance(images, np.ndarray):
        if images.dtype.kind not in "biuf":
            raise ConfigError(f"images must be uint8 (0..255) or float (0..1), got a numpy "
                              f"array of {images.dtype}")
        # torch cannot share a read-only array (a np.load mmap, a broadcast view)
        return torch.from_numpy(images if images.flags.writeable else images.copy())
    raise ConfigError(f"images must be a numpy array or a torch tensor, got "
                      f"{type(images).__name__}")


def check_images(images: Any, inputs: dict[str, Any],
                 channels_last: bool | None = None) -> torch.Tensor:
    """``images`` [B, C, H, W] or [B, H, W, C] (uint8 0..255, or float in [0, 1]) as a view
    [B, C, H, W] in their own dtype, after checking them against the run's ``inputs``.

    ``channels_last``: None detects the layout from the run's channel count; True or False
    says it (needed only when both layouts fit, as for 3x3 images of 3 channels).
    """
    x = as_tensor(images)
    channels, size = inputs["in_channels"], inputs["image_size"]
    want = f"[B, {channels}, {size}, {size}] or [B, {size}, {size}, {channels}]"
    if x.dtype != torch.uint8 and x.dtype not in FLOATS:
        raise ConfigError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}; "
                          "convert them (e.g. images.astype('uint8'))")
    if x.dim() != 4:
        hint = "; a single image needs a batch axis (images[None])" if x.dim() == 3 else ""
        raise ConfigError(f"images must be a batch {want}, got shape {list(x.shape)}{hint}")
    first = tuple(x.shape[1:]) == (channels, size, size)
    last = tuple(x.shape[1:]) == (size, size, channels)
    if channels_last is None:
        if first and last:
            raise ConfigError(f"images {list(x.shape)} fit both {want}; say which with "
                              "channels_last=True or False")
        if not (first or last):
            raise ConfigError(_mismatch(x, channels, size, want))
        channels_last = last
    elif not (last if channels_last else first):
        layout = want.split(" or ")[1 if channels_last else 0]
        raise ConfigError(f"images must be {layout} (channels_last={channels_last}), got "
                          f"{list(x.shape)}")
    if x.dtype != torch.uint8 and x.numel():
        low, high = x.min(), x.max()  # NaN in, NaN out: refused below
        if not (torch.isfinite(low) and torch.isfinite(high) and low >= 0 and high <= 1):
            raise ConfigError(f"float images must lie in [0, 1], got values in [{low.item():g}, "
                              f"{high.item():g}]; divide 0..255 pixels by 255 or pass uint8")
    return x.permute(0, 3, 1, 2) if channels_last else x


def _mismatch(x: torch.Tensor, channels: int, size: int, want: str) -> str:
    """Why images of shape ``x.shape`` fit neither layout, and what to do."""
    shape = list(x.shape)
    for found, spatial in ((shape[1], shape[2:]), (shape[3], shape[1:3])):
        if found == channels:
            return (f"images are {spatial[0]}x{spatial[1]} but the run's members take "
                    f"{size}x{size} images; resize them to {want}")
    return (f"images {shape} have neither {channels} channels first nor last; the run's "
            f"members take {want}")


def prepare(batch: torch.Tensor, inputs: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Float32 [b, C, H, W] on ``device`` from a checked batch (:func:`check_images`), as the
    run's training gathered its own: pixels / 255 for uint8, then (x - mean) / std per channel
    when the run normalized."""
    x = batch.to(device)
    # float32 input may be the caller's own memory: everything below is out of place
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if inputs.get("mean") is not None:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(inputs["mean"], dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(inputs["std"], dtype=torch.float32, device=device).view(shape)
        x = (x - mean) / std
    return x.contiguous()
