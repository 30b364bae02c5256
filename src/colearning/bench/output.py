"""The report: its JSON (what was measured, on what, with which settings; where it is
written) and its plain-text table."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from colearning.bench.build import uses_channels_last
from colearning.bench.device import device_info, device_name
from colearning.bench.records import (
    BETA_BAR,
    UNSTEADY_SPREAD,
    EpochResult,
    Settings,
    StepResult,
)
from colearning.errors import ConfigError

SCHEMA_VERSION = 1


# ------------------------------------------------------------------------- JSON
def report(rows: Sequence[StepResult], epoch_rows: Sequence[EpochResult],
           device: torch.device, settings: Settings,
           peak: dict[str, float] | None = None, *, keep_freed_memory: bool = False
           ) -> dict[str, Any]:
    """The JSON-ready report: device (with its measured matmul peak), settings (with
    whether malloc kept freed memory: :func:`colearning.environment.retain_freed_memory`),
    one dict per step row and per epoch."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": {**device_info(device), "peak_gflops": peak or {}},
        "settings": {**asdict(settings), "beta_bar": BETA_BAR,
                     "channels_last": uses_channels_last(settings, device),
                     "cudnn_benchmark": device.type == "cuda",
                     "keep_freed_memory": keep_freed_memory},
        "units": {
            "images_per_second": "training images per second (B / step time); every member "
                                 "sees each image",
            "member_images_per_second": "N * B / step time: images summed over members",
            "gflops_per_second": "counted matmul/conv FLOPs of forward + backward / step time",
            "fraction_of_peak": "median over the timing rounds of this row's GFLOP/s over "
                                "the matmul peak (fp32, or bf16 with --bf16) probed in the "
                                "same round, beside it",
            "peak_gflops": "median of the matmul peak probed beside this row's steps",
            "peak_memory_mib": "cuda: max allocated; cpu: peak resident set of the process",
        },
        "steps": [asdict(r) for r in rows],
        "epochs": [asdict(r) for r in epoch_rows],
    }


def output_path(out: str | Path) -> Path:
    """Where ``--out`` writes the JSON, checked before any timing: a directory (an existing
    one, or a path ending in /) gets ``bench.json`` inside; the folder must be writable."""
    path = Path(out)
    if str(out).endswith(("/", os.sep)) or path.is_dir():
        path = path / "bench.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot create {path.parent} ({error.strerror}); "
                          "give a writable path") from None
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write {path}; give a writable file path")
    return path


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


# ------------------------------------------------------------------------- the table
def _fraction(fraction: float | None, unsteady: bool) -> str:
    """'of peak' as a percentage, marked ~ (the peak moved) and ! (over 100%: an error)."""
    if fraction is None:
        return "-"
    return f"{100 * fraction:.0f}%" + ("~" if unsteady else "") + ("!" if fraction > 1 else "")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(data: dict[str, Any]) -> str:
    """The report as a plain-text table (``*`` marks the strategy ``auto`` picks)."""
    info, settings = data["device"], data["settings"]
    extras = [name for name, on in (("bf16", settings["bf16"]),
                                    (f"compile={settings['compile']}", settings["compile"]),
                                    ("channels-last", settings["channels_last"]),
                                    ("malloc keeps freed memory",
                                     settings.get("keep_freed_memory")),
                                    (f"sgd={settings['sgd']}", settings["sgd"] != "default"))
              if on]
    lines = [f"colearn bench on {device_name(info)}, torch {info['torch_version']}"
             + (f" [{', '.join(extras)}]" if extras else "")]
    header = ("model", "N", "batch", "strategy", "ms/step", "min-max ms", "img/s",
              "member-img/s", "vs base", "GFLOP/s", "of peak", "peak MiB")
    widths = (7, 3, 5, 10, 9, 13, 8, 12, 8, 8, 7, 9)
    lines.append("  ".join(h.rjust(w) if i > 3 or i == 1 else h.ljust(w)
                           for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for r in data["steps"]:
        name = r["strategy"] + ("*" if r["default"] else "")
        if r["strategy"] == "auto":
            name = f"auto={r['resolved_strategy']}"
        if r["error"]:
            cells = [r["error"]]
        else:
            speedup = r["speedup_vs_baseline"]
            fraction = r.get("fraction_of_peak")
            low, high = 1000 * r["min_step_seconds"], 1000 * r["max_step_seconds"]
            cells = [("~" if r.get("unsteady") else "")
                     + _number(1000 * r["median_step_seconds"], 1), f"{low:.1f}-{high:.1f}",
                     _number(r["images_per_second"]), _number(r["member_images_per_second"]),
                     "-" if speedup is None else f"{speedup:.2f}x",
                     _number(r["gflops_per_second"], 1),
                     _fraction(fraction, r.get("peak_unsteady", False)),
                     _number(r["peak_memory_mib"])]
        row = [r["model"].ljust(widths[0]), str(r["n_members"]).rjust(widths[1]),
               str(r["batch_size"]).ljust(widths[2]), name.ljust(widths[3])]
        row += cells if r["error"] else [c.rjust(w) for c, w in zip(cells, widths[4:],
                                                                     strict=True)]
        lines.append("  ".join(row))
    lines.append("* the strategy auto picks here. img/s: training images per second (each seen "
                 "by all N members); member-img/s = N x img/s;")
    lines.append(f"  medians over at least {settings['steps']} timed steps and "
                 f"{settings['min_time']:g} s per row after {settings['warmup']} warm-up, "
                 "strategies interleaved; ~ marks a row whose (max - min) / median exceeds "
                 f"{100 * UNSTEADY_SPREAD:.0f}%;")
    peak = info.get("peak_gflops") or {}
    lines.append("  GFLOP/s from counted matmul/conv FLOPs of forward + backward; 'of peak': "
                 "median of each step over the matmul peak probed in the same round"
                 + (f" (at the start: {peak['fp32']:,.1f} GFLOP/s fp32, {peak['bf16']:,.1f} "
                    "bf16)" if peak else "") + ";")
    lines.append(f"  ~ after it: the peak itself moved by more than {100 * UNSTEADY_SPREAD:.0f}% "
                 "during the row; ! after it: above 100%, which only a measurement error "
                 "gives (a load that changed between a step and its probe).")
    for e in data["epochs"]:
        lines.append(
            f"epoch {e['model']} N={e['n_members']} ({e['resolved_strategy']}, batch "
            f"{e['batch_size']}, {e['train_images']:,} + {e['test_images']:,} images"
            f"{', augmented' if e['augment'] else ''}): train {e['train_seconds']:.2f} s + "
            f"eval {e['eval_seconds']:.2f} s = {e['epoch_seconds']:.2f} s "
            f"(+ data upload {e['data_seconds']:.2f} s); "
            f"{_number(e['member_images_per_second'])} member-img/s; peak "
            f"{_number(e['peak_memory_mib'])} MiB")
    return "\n".join(lines)
