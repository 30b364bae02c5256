"""Cells per hour of a LeNet-5 sweep, packed against unpacked, on this machine.

    python scripts/pack_throughput.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --cells 12 --epochs 2 --device cpu --workers 2 --out /tmp/pack_throughput

Runs the same sweep (LeNet-5, N=2, the paper's recipe, betas x seeds) twice into fresh
directories: ``--pack off`` (one cell per worker at a time, as before packs) and ``--pack``
(default auto), then prints wall time, cells per hour and the speed-up, and checks that the
two give the same final accuracies (to float rounding).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from colearning.sweep import run_sweep, spec_from_dict
from colearning.sweep.table import read_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 JPEG archive or folder")
    parser.add_argument("--cells", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--pack", default="auto")
    parser.add_argument("--pack-members", type=int, default=None)
    parser.add_argument("--out", default="/tmp/pack_throughput")
    args = parser.parse_args()

    seeds = 2
    betas = [round(-0.05 * k, 2) for k in range(max(1, args.cells // seeds))]
    spec = spec_from_dict({
        "name": "pack_throughput",
        "base": {
            "device": args.device,
            "data": {"name": "imagefolder", "path": str(Path(args.data).resolve()),
                     "split": "random", "train_size": args.train_size, "test_size": 10000},
            "model": {"name": "lenet5"},
            "ensemble": {"n_members": 2},
            "optim": {"lr": 0.01},
            "train": {"epochs": args.epochs, "batch_size": 512, "analysis_every": 0},
        },
        "grid": {"beta": betas, "seed": list(range(seeds))},
    })
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    pack = args.pack if args.pack in ("auto", "off") else int(args.pack)
    timings = {}
    for mode in ("off", pack):
        target = out / f"pack-{mode}"
        started = time.perf_counter()
        result = run_sweep(spec, target, workers=args.workers, pack=mode,
                           pack_members=args.pack_members, progress=False)
        seconds = time.perf_counter() - started
        assert result.ok, [o for o in result.outcomes if o.status != "finished"]
        cells = len(result.outcomes)
        timings[str(mode)] = {"cells": cells, "seconds": round(seconds, 1),
                              "cells_per_hour": round(cells * 3600 / seconds, 1)}
        print(f"--pack {mode}: {cells} cells in {seconds:.1f} s = "
              f"{cells * 3600 / seconds:.1f} cells/hour", flush=True)
    rows = {m: read_csv(out / f"pack-{m}" / "results.csv") for m in ("off", pack)}
    worst = max(abs(a["test/ensemble_accuracy_mean"] - b["test/ensemble_accuracy_mean"])
                for a, b in zip(rows["off"], rows[pack], strict=True))
    speedup = timings["off"]["seconds"] / timings[str(pack)]["seconds"]
    print(f"speed-up {speedup:.2f}x; largest |accuracy difference| packed vs unpacked: "
          f"{worst:.2e}")
    print(json.dumps({"timings": timings, "speedup": round(speedup, 2),
                      "max_accuracy_difference": worst}))


if __name__ == "__main__":
    main()
