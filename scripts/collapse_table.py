"""When do members fall to chance? One row per cell of finished (or stopped) sweeps, for the
replication study's table 1 (docs/replication.md):

    python scripts/collapse_table.py ~/colearning-study/answer/table1_collapse_n2 [--csv FILE]

A member is at chance in an epoch when the run's test metrics flag it collapsed (it learned,
then fell to chance), not learned or ignoring its input (colearning.metrics' diagnostics).
Per cell: its status, epochs, the ensemble's test accuracy at the last epoch and at the
validation-selected one, the first epoch with a member at chance, the first with every member
at chance, and how many are at chance at the end. Reads run directories only; never trains.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from colearning import rundir
from colearning.errors import RunDirError

FLAGS = ("test/member_collapsed", "test/member_not_learned", "test/member_ignores_input")
HEADER = ["sweep", "cell", "status", "epochs", "accuracy % (last)", "accuracy % (val-best)",
          "first epoch, a member at chance", "first epoch, all at chance",
          "members at chance at the end"]


def at_chance(record: dict) -> list[bool]:
    """Per member: flagged collapsed, not learned or ignoring its input in this epoch."""
    flags = [record.get(key) or [] for key in FLAGS]
    size = max((len(f) for f in flags), default=0)
    return [any(bool(f[i]) for f in flags if i < len(f)) for i in range(size)]


def cell_row(sweep: Path, cell: Path) -> list[str] | None:
    try:  # the trainer's reader: a torn last line (a killed run) is not a record
        records = rundir.read_metrics(cell / rundir.METRICS)
    except (OSError, RunDirError):
        return None
    if not records:
        return None
    try:
        status = json.loads((cell / rundir.SUMMARY).read_text()).get("status", "?")
    except (OSError, ValueError):
        status = "running"
    chance = [at_chance(r) for r in records]
    epochs = [(r["epoch"], c) for r, c in zip(records, chance, strict=True)]
    first_any = next((epoch for epoch, c in epochs if any(c)), None)
    first_all = next((epoch for epoch, c in epochs if c and all(c)), None)
    scored = [r for r in records if "val/ensemble_accuracy_mean" in r]
    best = max(scored, key=lambda r: r["val/ensemble_accuracy_mean"]) if scored else None
    last = records[-1].get("test/ensemble_accuracy_mean")
    return [sweep.name, cell.name, status, str(records[-1]["epoch"]),
            "-" if last is None else f"{100 * last:.2f}",
            "-" if best is None else f"{100 * best['test/ensemble_accuracy_mean']:.2f} "
                                     f"(epoch {best['epoch']})",
            "-" if first_any is None else str(first_any),
            "-" if first_all is None else str(first_all),
            f"{sum(chance[-1])}/{len(chance[-1])}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep directories")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    rows = [row for sweep in args.sweeps for cell in sorted((sweep / "cells").glob("*"))
            if (row := cell_row(sweep, cell)) is not None]
    if not rows:
        print("no cells with metrics under " + ", ".join(map(str, args.sweeps)), file=sys.stderr)
        return 1
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            csv.writer(handle).writerows([HEADER, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
