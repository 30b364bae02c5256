"""What a sweep would cost on this machine, from a sweep that already ran here (packed).

    python scripts/study_cost.py --measured sweeps/couplings_divergence_n10 \
        configs/studies/replication/*.yaml

The measured sweep gives a throughput: the work its cells did (members x epochs completed x
images, a training image counting 1 and an evaluated one 1/3, the share of a forward pass
in a training step) per core-second of its packs (each pack's wall time, summed: the local
backend gives every worker an equal share of the cores, ``--measured-cores`` in all, as
with ``-j CORES``). Each sweep
config is then the same work measure over its cells at their full epochs, divided by that
throughput: core-hours, and hours on ``--cores`` such cores. An estimate that assumes the same
model and device; a GPU has to be measured itself (scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from colearning import rundir
from colearning.config import read_yaml
from colearning.sweep.layout import CELLS
from colearning.sweep.spec import load_spec

EVAL_WEIGHT = 1 / 3


def images(config: dict[str, Any]) -> float:
    """Work units of one member-epoch of a run config: training images + 1/3 evaluated."""
    data = config["data"]
    if data["train_size"] is None or data["test_size"] is None:
        raise SystemExit(f"study_cost: give data.train_size and data.test_size in the config "
                         f"({data['name']} uses its full splits otherwise)")
    train = data["train_size"] - data["val_size"]
    return train + EVAL_WEIGHT * (data["val_size"] + data["test_size"])


def throughput(sweep_dir: Path, cores: int) -> tuple[float, float]:
    """(work units per core-second, core-seconds) of a finished sweep directory."""
    packs: dict[str, float] = {}
    work = 0.0
    for cell in sorted((sweep_dir / CELLS).iterdir()):
        config = read_yaml(cell / rundir.CONFIG)
        if not (cell / rundir.SUMMARY).exists():  # failed or never ran: no measured time
            continue
        epochs = len(rundir.read_jsonl(cell / rundir.METRICS))
        work += config["ensemble"]["n_members"] * epochs * images(config)
        summary = json.loads((cell / rundir.SUMMARY).read_text())
        pack = (cell / "packs.jsonl").read_text().splitlines()[0] \
            if (cell / "packs.jsonl").exists() else str(cell)
        packs[pack] = max(packs.get(pack, 0.0), summary["wall_seconds"])
    workers = min(cores, len(packs))
    core_seconds = sum(packs.values()) * cores / workers
    return work / core_seconds, core_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measured", required=True, type=Path, help="a finished sweep dir")
    parser.add_argument("--measured-cores", type=int, default=2,
                        help="cores the measured sweep ran on (with -j that many)")
    parser.add_argument("--cores", type=int, default=2, help="cores to estimate hours for")
    parser.add_argument("configs", nargs="+", type=Path, help="sweep configs to estimate")
    args = parser.parse_args()
    rate, spent = throughput(args.measured, args.measured_cores)
    print(f"measured: {args.measured} ({spent / 3600:.2f} core-hours, {rate:,.0f} image-units "
          f"per core-second)")
    print("| sweep | cells | member-epochs | core-hours | hours on "
          f"{args.cores} cores |\n|---|---|---|---|---|")
    for path in args.configs:
        cells = load_spec(path).cells()
        member_epochs = sum(c.config["ensemble"]["n_members"] * c.config["train"]["epochs"]
                            for c in cells)
        work = sum(c.config["ensemble"]["n_members"] * c.config["train"]["epochs"]
                   * images(c.config) for c in cells)
        hours = work / rate / 3600
        print(f"| {path.stem} | {len(cells)} | {member_epochs:,} | {hours:,.1f} | "
              f"{hours / args.cores:,.1f} |")


if __name__ == "__main__":
    main()
