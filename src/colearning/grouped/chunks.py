"""The grouped strategy's members in chunks: balanced sizes, and the stacked parameters split
along the member axis with one copy per parameter in the backward."""

from __future__ import annotations

from typing import Any

import torch


class SplitMembers(torch.autograd.Function):
    """Stacked [N, ...] -> chunks along the member axis, gradient assembled in its layout.

    One copy per parameter in the backward (not p[lo:hi], whose backward adds a zero-filled
    [N, ...] per chunk), into the parameter's own strides: torch.split's backward would
    concatenate contiguously and autograd then copy again into the channels-last kernels.
    """

    @staticmethod
    def forward(ctx: Any, stacked: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
        ctx.sizes = sizes
        ctx.geometry = (stacked.shape, stacked.stride(), stacked.dtype, stacked.device)
        return stacked.split(sizes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        shape, stride, dtype, device = ctx.geometry
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        for chunk, grad in zip(out.split(ctx.sizes), grads, strict=True):
            chunk.zero_() if grad is None else chunk.copy_(grad)
        return out, None


def chunk_sizes(n_members: int, per_chunk: int) -> list[int]:
    """Balanced chunk sizes summing to n_members, each <= per_chunk: (10, 4) -> [4, 3, 3]."""
    chunks = -(-n_members // per_chunk)
    return [n_members // chunks + (k < n_members % chunks) for k in range(chunks)]
