"""The communication a sharded run adds to each training step, measured.

    python scripts/allgather_cost.py --nproc 2 [--members 2,10,50] [--batch 512] [--classes 10]

Starts ``--nproc`` processes (gloo on CPU, NCCL with --device cuda) and times, per step of
a run of N members over them, what :mod:`colearning.training.shard` exchanges: the
all-gather of the members' logits (N x B x C x 4 bytes, float32), the all-reduce of the
per-cell divergence flags and the all-reduce of the stop flag. Prints one line per N from
rank 0: median microseconds of each and of their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _measure(members: list[int], batch: int, classes: int, repeats: int, device: str) -> None:
    import torch

    from colearning.training.shard import current_shard, finish_distributed, init_from_environment

    init_from_environment(device)
    process = current_shard()
    where = torch.device("cuda") if device == "cuda" else torch.device("cpu")
    rows = []
    for n in members:
        shard = process.for_members(n)
        local = torch.randn(shard.local.stop - shard.local.start, batch, classes, device=where)
        flags = torch.zeros(1, dtype=torch.bool, device=where)
        timings: dict[str, list[float]] = {"gather": [], "flags": [], "stop": []}
        calls = (("gather", lambda s=shard, x=local: s.gather_rows(x)),
                 ("flags", lambda s=shard, f=flags: s.any(f)),
                 ("stop", lambda s=shard: s.any_host(False)))
        for k in range(repeats + 5):
            for name, call in calls:
                if where.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                call()
                if where.type == "cuda":
                    torch.cuda.synchronize()
                if k >= 5:
                    timings[name].append(time.perf_counter() - start)
        median = {name: 1e6 * statistics.median(values) for name, values in timings.items()}
        rows.append({"n_members": n, "bytes": n * batch * classes * 4, **median,
                     "total_us": sum(median.values())})
    if process.writer:
        for row in rows:
            print(json.dumps(row))
    finish_distributed()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--members", default="2,10,50")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    members = [int(n) for n in args.members.split(",")]
    if "WORLD_SIZE" in os.environ:
        _measure(members, args.batch, args.classes, args.repeats, args.device)
        return 0
    from colearning.training.launch import launch

    code, message = launch([sys.executable, __file__, *sys.argv[1:]], args.nproc)
    if message:
        print(f"allgather_cost: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
