"""Per-channel statistics of uint8 images, and batched random crop + flip on the device."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from colearning.errors import ConfigError


def channel_stats(x: np.ndarray | Iterable[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 [n, C, H, W] scaled to [0, 1].

    ``x`` may also be an iterable of such chunks (one split's images read piece by piece).
    """
    chunks = [x] if isinstance(x, np.ndarray) else x
    total = squares = None
    count = 0
    for part in chunks:
        if part.dtype != np.uint8 or part.ndim != 4:
            raise ConfigError(
                f"channel_stats expects uint8 [n, C, H, W], got {part.dtype} {list(part.shape)}"
            )
        if total is None:
            total, squares = np.zeros(part.shape[1], np.int64), np.zeros(part.shape[1], np.int64)
        # Exact integer sums over chunks: no float copy of the whole array, and faster than
        # bincount (docs/performance.md).
        for start in range(0, len(part), 2048):
            chunk = part[start : start + 2048].astype(np.int32)
            total += chunk.sum(axis=(0, 2, 3), dtype=np.int64)
            squares += np.einsum("nchw,nchw->c", chunk, chunk, dtype=np.int64)
        count += part.shape[0] * part.shape[2] * part.shape[3]
    if not count:
        raise ConfigError("channel_stats needs at least one image, got an empty array")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return [float(m) / 255 for m in mean], [float(s) / 255 for s in std]


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """Random crop and horizontal flip of float [B, C, H, W] -> [B, C, H, W], on x's device.

    Each image is zero-padded by ``padding`` on every side and cropped back to H x W at its
    own offset (dy, dx), each uniform in [0, 2 * padding]; with ``flip`` it is then mirrored
    left-right with probability 1/2. Draw order from ``generator``: dy [B], dx [B], then
    flip [B] (0/1). Crop and flip are one batched gather; padding=0 and flip=False return
    ``x`` itself.
    """
    if x.ndim != 4:
        raise ConfigError(f"augment_batch expects [B, C, H, W], got shape {list(x.shape)}")
    if padding < 0:
        raise ConfigError(f"padding must be >= 0, got {padding}")
    if generator.device.type != x.device.type:
        raise ConfigError(
            f"the generator is on {generator.device} but the images are on {x.device}; "
            "create it with torch.Generator(device=x.device)"
        )
    if padding == 0 and not flip:
        return x
    batch, _, height, width = x.shape
    device = x.device
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
        size = (batch,)
        dy = torch.randint(0, 2 * padding + 1, size, generator=generator, device=device)
        dx = torch.randint(0, 2 * padding + 1, size, generator=generator, device=device)
    else:
        dy = dx = torch.zeros(batch, dtype=torch.long, device=device)
    rows = dy[:, None] + torch.arange(height, device=device)  # [B, H]
    columns = torch.arange(width, device=device).expand(batch, width)  # [B, W]
    if flip:
        mirrored = torch.randint(0, 2, (batch,), generator=generator, device=device).bool()
        columns = torch.where(mirrored[:, None], columns.flip(1), columns)
    columns = dx[:, None] + columns
    index = torch.arange(batch, device=device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=device)[None, :, None, None]
    return x[index, channel, rows[:, None, :, None], columns[:, None, None, :]]
