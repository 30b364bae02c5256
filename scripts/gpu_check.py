"""The prepared GPU check: one command that measures what the README's Speed section needs.

    bash scripts/gpu_check.sh                      # a lent GPU: under 8 minutes on an H100/H200
    bash scripts/gpu_check.sh --device cpu --tiny  # the same path at toy sizes (CI runs this)

Steps, each with its own time budget, written to OUT/gpu_check.json and a Markdown summary
OUT/gpu_check.md (printed at the end):

1. the device and its measured matmul peak (fp32, bf16);
2. ``colearn bench`` of LeNet-5 at N = 1, 2, 10, 50 and VGG-9 at N = 1, 2, 7, every strategy,
   in fp32 and in bf16, and the default strategy under ``train.compile=reduce-overhead``;
3. one full CIFAR-10-sized LeNet-5 epoch at N = 50 (50,000 + 10,000 images, evaluation
   included), fp32 and bf16;
4. whether the training step synchronizes with the host (``torch.cuda.set_sync_debug_mode``);
5. a sweep of 48 LeNet-5 N = 2 cells for 2 epochs on synthetic CIFAR-10 data, packed (one
   pack), against 4 of the same cells unpacked: cells per hour and the speed-up.

Needs only PyTorch and this repository (``PYTHONPATH=src``); no dataset, no internet.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning.bench import bench, device_name, format_table


def write_synthetic_cifar10(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random images in the official CIFAR-10 python layout (cifar-10-batches-py)."""
    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    per_batch = -(-n_train // 5)
    for k in range(5):
        n = max(0, min(per_batch, n_train - k * per_batch))
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (root / f"data_batch_{k + 1}").write_bytes(pickle.dumps(batch))
    test = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n_test).tolist()}
    (root / "test_batch").write_bytes(pickle.dumps(test))
    names = [f"class{c}".encode() for c in range(10)]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return root


def sync_check(device: str, tiny: bool) -> dict[str, Any]:
    """Run a few steps of a 4-cell pack with CUDA's sync debug mode set to error."""
    from colearning.bench import synthetic_cifar
    from colearning.config import config_from_dict
    from colearning.data import RawDataset
    from colearning.training.data import cell_data, make_pool
    from colearning.training.loop import Cell, Pack
    from colearning.training.plan import plain_plan
    from colearning.training.setup import build_members

    target = torch.device(device)
    images = synthetic_cifar(2048 if not tiny else 256, 256)
    raw = RawDataset(*images, [str(c) for c in range(10)])
    pool = make_pool(raw, target)
    cells = []
    for seed in range(4):
        config = config_from_dict({"seed": seed, "device": device, "model": {"name": "lenet5"},
                                   "ensemble": {"n_members": 2}, "loss": {"beta": -0.1},
                                   "train": {"batch_size": 128, "progress": False}})
        cells.append(Cell(config, Path("."), cell_data(config, raw, target),
                          plain_plan(config, build_members(config, pool, target))))
    pack = Pack(cells, pool, target)
    pack.start_epoch(0, 0)
    pack.step(0)  # first step: caches, autotuning
    if target.type != "cuda":
        return {"checked": False, "why": "not a CUDA device"}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            pack.step(step)
        return {"checked": True, "syncs": False}
    except RuntimeError as error:
        return {"checked": True, "syncs": True, "where": str(error).splitlines()[0][:200],
                "trace": traceback.format_exc()[-2000:]}
    finally:
        torch.cuda.set_sync_debug_mode("default")


def sweep_check(device: str, tiny: bool, out: Path) -> dict[str, Any]:
    """Cells per hour of a LeNet-5 N=2 sweep, packed against unpacked."""
    from colearning.sweep import run_sweep, spec_from_dict

    n_train, n_test = (512, 256) if tiny else (50_000, 10_000)
    data = write_synthetic_cifar10(out / "data", n_train, n_test)
    cells = 4 if tiny else 48
    seeds = 2
    betas = [round(-0.01 * k, 2) for k in range(cells // seeds)]
    base = {"device": device, "data": {"name": "cifar10", "path": str(data), "split": "random",
                                       "test_size": n_test // 2 if tiny else 10_000},
            "model": {"name": "lenet5"}, "ensemble": {"n_members": 2},
            "train": {"epochs": 1 if tiny else 2, "batch_size": 128 if tiny else 512,
                      "analysis_every": 0}}
    results = {}
    for mode, grid_betas in (("packed", betas), ("unpacked", betas[: max(1, 4 // seeds)])):
        spec = spec_from_dict({"name": f"gpu_check_{mode}", "base": base,
                               "grid": {"beta": grid_betas, "seed": list(range(seeds))}})
        started = time.perf_counter()
        result = run_sweep(spec, out / f"sweep_{mode}", workers=1,
                           pack="auto" if mode == "packed" else "off",
                           pack_members=None if device == "cuda" else 10_000, progress=False)
        seconds = time.perf_counter() - started
        results[mode] = {"cells": len(result.outcomes), "seconds": round(seconds, 1),
                         "cells_per_hour": round(len(result.outcomes) * 3600 / seconds, 1),
                         "ok": result.ok}
    results["speedup"] = round(results["packed"]["cells_per_hour"]
                               / results["unpacked"]["cells_per_hour"], 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description="the prepared GPU check (see the docstring)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a CPU smoke test)")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: bench, "
                        "epoch, sync, sweep")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {"device": args.device, "tiny": args.tiny, "steps": {}}
    started = time.perf_counter()

    def stage(name: str, run: Any) -> None:
        if name in skip:
            return
        t = time.perf_counter()
        try:
            report["steps"][name] = run()
        except Exception as error:  # one failed stage must not lose the others
            report["steps"][name] = {"error": f"{type(error).__name__}: {error}"[:500],
                                     "trace": traceback.format_exc()[-3000:]}
        report["steps"][name + "_seconds"] = round(time.perf_counter() - t, 1)
        print(f"[gpu_check] {name}: {report['steps'][name + '_seconds']} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    if args.tiny:
        bench_runs = {"fp32": dict(models="lenet5", members="1,2", batch_size=32, steps=2,
                                   warmup=1, min_time=0.0, time_limit=5.0)}
        bench_runs["bf16"] = {**bench_runs["fp32"], "bf16": True, "strategies": "grouped"}
        epoch_sizes = "256,128"
    else:
        common = dict(steps=10, warmup=3, min_time=0.5, time_limit=10.0)
        bench_runs = {
            "fp32": dict(models="lenet5,vgg9,resnet20", members="1,2,7,10,50",
                         skip="lenet5:7,vgg9:10,vgg9:50,resnet20:7", **common),
            "bf16": dict(models="lenet5,vgg9", members="1,2,7,10,50",
                         skip="lenet5:7,vgg9:10,vgg9:50", bf16=True, **common),
            "compile": dict(models="lenet5,vgg9", members="1,2,7,10,50",
                            skip="lenet5:7,vgg9:10,vgg9:50", strategies="baseline,auto",
                            compile="reduce-overhead", **common),
        }
        epoch_sizes = "50000,10000"
    for name, options in bench_runs.items():
        def run_bench(options: dict[str, Any] = options, name: str = name) -> dict[str, Any]:
            data = bench(device=args.device, progress=False, **options)
            (out / f"bench_{name}.txt").write_text(format_table(data) + "\n")
            print(format_table(data), flush=True)
            return data
        stage(f"bench_{name}", run_bench)

    for precision in ("fp32", "bf16"):
        def run_epoch(precision: str = precision) -> dict[str, Any]:
            data = bench(device=args.device, models="lenet5", members="50" if not args.tiny
                         else "2", strategies="auto", steps=1, warmup=1, min_time=0.0,
                         epoch="lenet5:50" if not args.tiny else "lenet5:2",
                         epoch_size=epoch_sizes, bf16=precision == "bf16",
                         batch_size=32 if args.tiny else None, progress=False)
            return data["epochs"][0]
        stage(f"epoch_{precision}", run_epoch)
    stage("sync", lambda: sync_check(args.device, args.tiny))
    stage("sweep", lambda: sweep_check(args.device, args.tiny, out))
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    summary = markdown(report)
    (out / "gpu_check.md").write_text(summary)
    print(summary)
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The one table: device, the default strategy's throughput, the epoch, sync, sweep."""
    steps = report["steps"]
    first = next((v for k, v in steps.items() if k.startswith("bench_") and isinstance(v, dict)
                  and "device" in v), None)
    lines = [f"# GPU check on {device_name(first['device']) if first else report['device']}",
             "", f"total {report.get('total_seconds')} s", "",
             "| check | result |", "| --- | --- |"]
    for name, data in steps.items():
        if name.endswith("_seconds") or not isinstance(data, dict):
            continue
        if "error" in data:
            lines.append(f"| {name} | failed: {data['error'][:200]} |")
        elif name.startswith("bench_"):
            peak = data["device"].get("peak_gflops", {})
            best = {}
            for row in data["steps"]:
                if row.get("median_step_seconds") and (row["default"] or row["strategy"] in (
                        "baseline",)):
                    key = (row["model"], row["n_members"])
                    best.setdefault(key, {})[row["strategy"]] = row
            cells = []
            for (model, n), rows in best.items():
                engine = next((r for s, r in rows.items() if s != "baseline"), None)
                if engine:
                    speed = engine.get("speedup_vs_baseline")
                    cells.append(f"{model} N={n}: {engine['member_images_per_second']:,.0f} "
                                 f"member-img/s" + (f" ({speed:.1f}x the per-member baseline)"
                                                    if speed else ""))
            lines.append(f"| {name} (peak {peak.get('fp32', 0):,.0f} fp32 / "
                         f"{peak.get('bf16', 0):,.0f} bf16 GFLOP/s) | {'; '.join(cells)} |")
        elif name.startswith("epoch_"):
            lines.append(f"| {name} LeNet-5 N={data['n_members']} | train "
                         f"{data['train_seconds']:.2f} s + eval {data['eval_seconds']:.2f} s = "
                         f"{data['epoch_seconds']:.2f} s |")
        elif name == "sync":
            lines.append(f"| step syncs with the host | {data} |")
        elif name == "sweep":
            lines.append(f"| sweep cells/hour | packed {data['packed']['cells_per_hour']:,} "
                         f"({data['packed']['cells']} cells), unpacked "
                         f"{data['unpacked']['cells_per_hour']:,} ({data['unpacked']['cells']} "
                         f"cells): {data['speedup']}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
