"""Time the ops that bound the grouped LeNet-5 step on a CPU, one chunk of members at a time:
conv2's forward and its backward split into the two gradients, the input gradient in the
other forms oneDNN offers (checked equal to autograd's first), and conv1's max-pool
(docs/performance.md, "Where the last 1.5x would have to come from").

    python scripts/op_bound.py [--members 5] [--batch 512] [--threads 1] [--rounds 3]

Rows are timed interleaved, one call of each in turn per round, and the median of the rounds
is printed in ms per call, fp32 and bf16, as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

CL = torch.channels_last


def shapes(members: int, batch: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random tensors of one chunk: conv2's input, kernel and output gradient, conv1's map."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype).contiguous(memory_format=CL)

    return {"x": rand(batch, 6 * members, 14, 14), "w": rand(16 * members, 6, 5, 5),
            "grad": rand(batch, 16 * members, 10, 10), "map": rand(batch, 6 * members, 28, 28),
            "pooled_grad": rand(batch, 6 * members, 14, 14)}


def flipped(w: torch.Tensor, members: int) -> torch.Tensor:
    """conv2's kernels as the forward convolution that computes its input gradient."""
    out_c, in_c = w.shape[0] // members, w.shape[1]
    k = w.reshape(members, out_c, in_c, 5, 5).transpose(1, 2).flip(-1, -2)
    return k.reshape(members * in_c, out_c, 5, 5).contiguous(memory_format=CL)


def conv_backward(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, groups: int,
                  mask: list[bool]) -> tuple:
    """autograd's backward of the unpadded, stride-1 conv2d(x, w, groups=groups): the
    gradients ``mask`` selects (input, weight, bias)."""
    return torch.ops.aten.convolution_backward(grad, x, w, [w.shape[0]], [1, 1], [0, 0],
                                               [1, 1], False, [0, 0], groups, mask)


def ops(t: dict[str, torch.Tensor], members: int) -> dict[str, Callable[[], object]]:
    """Each row's call."""
    x, w, grad = t["x"], t["w"], t["grad"]
    wt = flipped(w, members)
    per_in, per_out = x.shape[1] // members, w.shape[0] // members

    def backward(mask: list[bool]) -> Callable[[], object]:
        return lambda: conv_backward(grad, x, w, members, mask)

    def per_member() -> None:
        for g in range(members):
            conv_backward(grad[:, per_out * g:per_out * (g + 1)],
                          x[:, per_in * g:per_in * (g + 1)], w[per_out * g:per_out * (g + 1)],
                          1, [True, False, False])

    pool_in = t["map"].clone().requires_grad_()

    def pool_both() -> None:
        pool_in.grad = None
        F.max_pool2d(pool_in, 2, 2).backward(t["pooled_grad"])

    return {
        "conv2 forward": lambda: F.conv2d(x, w, None, 1, 0, 1, members),
        "conv2 backward, both gradients": backward([True, True, False]),
        "input gradient alone": backward([True, False, False]),
        "weight gradient alone": backward([False, True, False]),
        "input gradient as conv_transpose2d": lambda: F.conv_transpose2d(grad, w, None, 1, 0,
                                                                          0, members),
        "input gradient as a forward convolution": lambda: F.conv2d(grad, wt, None, 1, 4, 1,
                                                                    members),
        "input gradient one member at a time": per_member,
        "max-pool forward (conv1's map)": lambda: F.max_pool2d(t["map"], 2, 2),
        "max-pool forward + backward": pool_both,
    }


def check(members: int) -> float:
    """Largest relative difference, in float64, of the input-gradient forms from autograd's."""
    t = shapes(members, 4, torch.float64)
    x, w, grad = t["x"], t["w"], t["grad"]
    reference = conv_backward(grad, x, w, members, [True, False, False])[0]
    forms = [F.conv_transpose2d(grad, w, None, 1, 0, 0, members),
             F.conv2d(grad, flipped(w, members), None, 1, 4, 1, members)]
    scale = reference.abs().max().item()
    return max((form - reference).abs().max().item() / scale for form in forms)


def measure(members: int, batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per call of every row, per precision."""
    table: dict[str, dict[str, float]] = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        calls = ops(shapes(members, batch, dtype), members)
        for call in calls.values():  # warm-up: oneDNN builds its primitives
            call()
        samples: dict[str, list[float]] = {row: [] for row in calls}
        for _ in range(rounds):
            for row, call in calls.items():
                start = time.perf_counter()
                call()
                samples[row].append((time.perf_counter() - start) * 1000)
        for row, values in samples.items():
            table.setdefault(row, {})[name] = statistics.median(values)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=5, help="members in the chunk")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.members, args.batch, args.threads, args.rounds) < 1:
        parser.error("--members, --batch, --threads and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    error = check(args.members)
    if error > 1e-10:
        raise SystemExit(f"op_bound: an input-gradient form differs from autograd's by {error:.1e}")
    print(f"input-gradient forms equal autograd's (float64, largest relative difference "
          f"{error:.1e}); {args.members} members, batch {args.batch}, {args.threads} thread(s), "
          f"torch {torch.__version__}")
    print("\n| op of a chunk, ms per call | bf16 | fp32 |\n|---|---|---|")
    for row, values in measure(args.members, args.batch, args.rounds).items():
        print(f"| {row} | {values['bf16']:.1f} | {values['fp32']:.1f} |")


if __name__ == "__main__":
    main()
