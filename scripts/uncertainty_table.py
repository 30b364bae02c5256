"""The table of docs/results.md, "What negative coupling buys in uncertainty", from a study run
by scripts/study.sh over configs/studies/uncertainty/*.yaml (issue 27, item 6):

    python scripts/uncertainty_table.py ~/colearning-study/uncertainty [--csv FILE]

Reads each arm's finished cells (their final weights, as train.evaluate_shift evaluated them)
and distilled students; prints mean +/- std over seeds per arm and, under each coupled arm,
its seed-paired difference to independent training (mean, and in how many pairs it rose).
Reads run directories only; never trains.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

from colearning import rundir

ARMS = (("independent", "independent"), ("kl", "KL beta_bar=-0.5"),
        ("js", "JS beta_bar=-4"), ("controller", "JS controller (0.2 nats)"))
# (column, source, key): source "run" = the cell's summary.json (final epoch), "eval" = its
# evaluation/summary.json, "student" = the distilled student's row in distill.json
COLUMNS = (
    ("accuracy %", "run", "test/ensemble_accuracy_mean"),
    ("members %", "run", "test/member_accuracy"),
    ("NLL", "eval", "calibration/ensemble_nll"),
    ("NLL (TS)", "eval", "calibration/ensemble_nll_ts"),
    ("ECE %", "eval", "calibration/ensemble_ece"),
    ("ECE (TS) %", "eval", "calibration/ensemble_ece_ts"),
    ("shift acc %", "eval", "shift/accuracy_mean"),
    ("shift ECE %", "eval", "shift/ece_mean"),
    ("s5 acc %", "eval", "shift/accuracy_s5"),
    ("s5 ECE %", "eval", "shift/ece_s5"),
    ("OOD AUROC entropy", "eval", "ood/held-out/auroc_entropy"),
    ("OOD AUROC MI", "eval", "ood/held-out/auroc_mutual_information"),
    ("student %", "student", "accuracy"),
    ("student NLL", "student", "nll"),
    ("student ECE %", "student", "ece"),
    ("student shift acc %", "student", "shift/accuracy_mean"),
)
PERCENT = {"accuracy %", "members %", "ECE %", "ECE (TS) %", "shift acc %", "shift ECE %",
           "s5 acc %", "s5 ECE %", "student %", "student ECE %", "student shift acc %"}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cell_values(cell: Path, students: Path) -> dict[str, float] | None:
    """One finished cell's values per column (None when it did not finish)."""
    run = _json(cell / rundir.SUMMARY)
    if run.get("status") != "finished":
        return None
    sources = {"run": run, "eval": _json(cell / rundir.EVALUATION / rundir.SUMMARY),
               "student": (_json(students / cell.name / "distill.json").get("rows") or {})
               .get("student") or {}}
    out = {}
    for column, source, key in COLUMNS:
        value = sources[source].get(key)
        if isinstance(value, list):  # per member: their mean
            value = statistics.fmean(value) if value else None
        if isinstance(value, (int, float)):
            out[column] = float(value) * (100 if column in PERCENT else 1)
    return out


def read_study(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """arm -> seed cell name -> column -> value."""
    arms = {}
    for arm, _ in ARMS:
        cells = sorted((root / arm / "cells").glob("*"))
        values = {c.name: v for c in cells
                  if (v := cell_values(c, root / f"{arm}-distilled")) is not None}
        if values:
            arms[arm] = values
    return arms


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    digits = 3 if max(abs(v) for v in values) < 10 else 2
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


# the columns in three tables (a Markdown page is not wide enough for one)
GROUPS = (("clean test split, before and after temperature scaling (TS)", COLUMNS[:6]),
          ("under the corruptions (mean over 17 x 5; s5: severity 5) and against the held-out "
           "classes", COLUMNS[6:12]),
          ("the distilled students (one network each)", COLUMNS[12:]))


def tables(arms: dict[str, dict[str, dict[str, float]]]) -> tuple[str, list[list[str]]]:
    """Markdown (per group of columns: mean +/- std over seeds, then the seed-paired
    differences to independent training) and the CSV rows (every column)."""
    names = dict(ARMS)
    reference = arms.get("independent", {})
    lines: list[str] = []
    for title, columns in GROUPS:
        lines += [f"{title[0].upper()}{title[1:]}:", "",
                  "| arm | seeds | " + " | ".join(c for c, _, _ in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for arm, cells in arms.items():
            values = [_mean_std([v[c] for v in cells.values() if c in v]) for c, _, _ in columns]
            lines.append(f"| {names[arm]} | {len(cells)} | " + " | ".join(values) + " |")
            if arm == "independent" or not reference:
                continue
            parts = []
            for column, _, _ in columns:
                pairs = [cells[s][column] - reference[s][column] for s in cells
                         if s in reference and column in cells[s] and column in reference[s]]
                parts.append("-" if not pairs else f"{statistics.fmean(pairs):+.3f} "
                             f"({sum(p > 0 for p in pairs)}/{len(pairs)} up)")
            lines.append("| &nbsp; vs independent | | " + " | ".join(parts) + " |")
        lines.append("")
    header = ["arm", "seeds", *[c for c, _, _ in COLUMNS]]
    rows = [[names[arm], str(len(cells)),
             *[_mean_std([v[c] for v in cells.values() if c in v]) for c, _, _ in COLUMNS]]
            for arm, cells in arms.items()]
    return "\n".join(lines), [header, *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study directory (OUT_DIR of study.sh)")
    parser.add_argument("--csv", type=Path, help="also write the per-arm table as CSV")
    args = parser.parse_args(argv)
    arms = read_study(args.study)
    if not arms:
        print(f"no finished cells under {args.study}/<arm>/cells", file=sys.stderr)
        return 1
    text, rows = tables(arms)
    print(text)
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
