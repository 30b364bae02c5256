"""Table S5: ways to grow a trained ensemble of N by M members, against from-scratch runs.

    spec = load_table_s5_spec("configs/sweeps/tableS5_cpu_jpeg.yaml")
    run_table_s5(spec, "sweeps/tableS5")       # colearning.expand.table_run: trains the cells
    print(format_table_s5(table_s5("sweeps/tableS5")))

This module reads and tabulates (reports build on it and never train);
:mod:`colearning.expand.table_run` trains the cells.

A Table S5 file is a sweep file (``name``, ``base_config``/``base``, ``overrides``,
``seeds``; see :mod:`colearning.sweep.spec`) plus the experiment::

    n_members: 10     # N, the trained ensemble that is grown
    add: 5            # M, new members
    beta: -0.07       # loss.beta (Eq. 1 as written) of the coupled runs
    epochs: 150       # E: the base run, each expansion and "same budget"; double budget = 2E
    margin: 0         # boost: k-m..k+m correct old votes, k = N/2

Per seed the cells are, in order: ``base`` (N members, beta, E epochs), ``freeze0`` and
``freeze`` (add-freeze with beta 0 and beta), ``retrain`` (add-retrain, beta, E more
epochs), ``boost`` (M independent members on the border samples), ``scratch`` and
``scratch2x`` (N+M members from scratch, E and 2E epochs). The expansions grow the base
cell of their seed, so they share its split. Layout: ``table_s5.yaml`` (the resolved
spec), ``cells/<method>_seed<k>/`` (run directories), ``table_s5.csv``, ``table_s5.txt``
and ``report.html``. Running again continues: finished cells are skipped, interrupted ones
resume from their checkpoints, failed ones are retried.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colearning import rundir
from colearning.config import read_yaml
from colearning.errors import ConfigError, RunDirError
from colearning.metrics.statistics import mean_std
from colearning.sweep.layout import CELLS, cell_status
from colearning.sweep.spec import spec_from_dict
from colearning.sweep.table import to_csv

SPEC_FILE = "table_s5.yaml"
EXPERIMENT_KEYS = ("n_members", "add", "beta", "epochs", "margin")
METHODS = ("base", "freeze0", "freeze", "retrain", "boost", "scratch", "scratch2x")
# Paper Table S5 and Supp. text (boost): LeNet-5 on CIFAR-10, N=10 + M=5, beta=-0.07,
# ensemble accuracy (%) mean ± std.
PAPER = {"base": (83.65, 0.38), "freeze0": (83.43, 0.34), "freeze": (83.74, 0.34),
         "retrain": (84.97, 0.33), "boost": (83.32, 0.30), "scratch": (84.29, 0.25),
         "scratch2x": (85.65, 0.25)}
METRIC = "test/ensemble_accuracy_mean"


@dataclass
class TableS5Spec:
    """A resolved Table S5 experiment: ``base`` is a full run config dict."""

    name: str
    base: dict[str, Any]
    seeds: list[int]
    n_members: int = 10
    add: int = 5
    beta: float = -0.07
    epochs: int = 150
    margin: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "seeds": self.seeds,
                **{key: getattr(self, key) for key in (*EXPERIMENT_KEYS, "methods")}}


@dataclass(frozen=True)
class Method:
    """One row of Table S5: how its cells are trained."""

    key: str
    label: str
    beta: float
    epochs: str  # the training budget, as shown in the table
    n_members: int
    train_epochs: int
    mode: str | None = None  # expand mode; None: a run from scratch


def methods(spec: TableS5Spec) -> list[Method]:
    """The rows of ``spec``, in table order (the base row always comes first)."""
    n, m, beta, e = spec.n_members, spec.add, spec.beta, spec.epochs
    rows = [
        Method("base", f"{n} networks ensemble", beta, f"{e}", n, e),
        Method("freeze0", "add-freeze β=0", 0.0, f"{e} + {e} new", n + m, e, "add-freeze"),
        Method("freeze", f"add-freeze β={beta:g}", beta, f"{e} + {e} new", n + m, e,
               "add-freeze"),
        Method("retrain", "add-retrain", beta, f"{e} + {e} all", n + m, e, "add-retrain"),
        Method("boost", f"boost (m={spec.margin})", 0.0, f"{e} + {e} new (border)", n + m, e,
               "boost"),
        Method("scratch", f"{n + m} networks (same budget)", beta, f"{e}", n + m, e),
        Method("scratch2x", f"{n + m} networks (double budget)", beta, f"{2 * e}", n + m, 2 * e),
    ]
    return [row for row in rows if row.key == "base" or row.key in spec.methods]


# ------------------------------------------------------------------------- the spec
def table_s5_spec_from_dict(values: dict[str, Any], *, base_dir: str | Path = ".",
                            overrides: list[str] | None = None,
                            seeds: int | list[int] | None = None) -> TableS5Spec:
    """A validated :class:`TableS5Spec` from a Table S5 mapping (see the module docstring)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a Table S5 file must hold a mapping, got {type(values).__name__}")
    own = {key: values[key] for key in (*EXPERIMENT_KEYS, "methods") if key in values}
    sweep_part = {key: v for key, v in values.items() if key not in own}
    sweep = spec_from_dict(sweep_part, base_dir=base_dir, overrides=overrides, seeds=seeds)
    spec = TableS5Spec(name=sweep.name, base=sweep.base,
                       seeds=sweep.grid.get("seed", [sweep.base["seed"]]),
                       epochs=sweep.base["train"]["epochs"])
    for key, value in own.items():
        expected = float if key == "beta" else list if key == "methods" else int
        if expected is float and type(value) is int:
            value = float(value)
        if type(value) is not expected:
            raise ConfigError(f"Table S5 key {key!r} must be {expected.__name__}, got {value!r}")
        setattr(spec, key, value)
    for key in ("n_members", "add", "epochs"):
        if getattr(spec, key) < 1:
            raise ConfigError(f"Table S5 {key} must be >= 1, got {getattr(spec, key)}")
    if spec.margin < 0 or not math.isfinite(spec.beta):
        raise ConfigError("Table S5 margin must be >= 0 and beta a finite number")
    unknown = sorted(set(spec.methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown Table S5 method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    return spec


def load_table_s5_spec(path: str | Path, overrides: list[str] | None = None,
                       seeds: int | list[int] | None = None) -> TableS5Spec:
    """The Table S5 file at ``path`` resolved (base_config relative to the file)."""
    path = Path(path)
    values = read_yaml(path)
    values.setdefault("name", path.stem)
    return table_s5_spec_from_dict(values, base_dir=path.parent, overrides=overrides,
                                   seeds=seeds)


def load_table_s5_dir(out: str | Path) -> TableS5Spec:
    """The spec saved in a Table S5 directory (for continuing it and for the table)."""
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise RunDirError(f"{out} is not a Table S5 directory (it has no {SPEC_FILE})")
    values = read_yaml(path)
    seeds = values.pop("seeds", None)
    return table_s5_spec_from_dict(values, seeds=seeds)


def cell_name(method: Method, seed: int) -> str:
    return f"{method.key}_seed{seed}"


# ------------------------------------------------------------------------- the table
def _final(cell_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished cell, else None."""
    if cell_status(cell_dir) != "finished":
        return None
    return json.loads((cell_dir / rundir.SUMMARY).read_text())


def table_s5(out: str | Path) -> list[dict[str, Any]]:
    """One row per method of the Table S5 directory ``out``: accuracies (%) over seeds.

    ``accuracy_mean``/``accuracy_std`` are the ensemble accuracy (uniform mean of the members'
    probabilities) over finished seeds (std with ddof=1); ``delta_mean``/``delta_std`` the
    paired difference to the base row over the seeds where both finished.
    """
    out = Path(out)
    spec = load_table_s5_dir(out)
    base = {seed: _final(out / CELLS / f"base_seed{seed}") for seed in spec.seeds}
    table = []
    for method in methods(spec):
        finals = {seed: _final(out / CELLS / cell_name(method, seed)) for seed in spec.seeds}
        statuses = [cell_status(out / CELLS / cell_name(method, seed)) for seed in spec.seeds]
        accs = {s: 100 * f[METRIC] for s, f in finals.items() if f is not None}
        members = [100 * statistics.fmean(f["test/member_accuracy"])
                   for f in finals.values() if f is not None]
        deltas = [accs[s] - 100 * base[s][METRIC] for s in accs if base[s] is not None]
        mean, std = mean_std(list(accs.values()))
        delta_mean, delta_std = mean_std(deltas)
        paper = PAPER.get(method.key)
        table.append({
            "method": method.key, "label": method.label, "beta": method.beta,
            "epochs": method.epochs, "n_members": method.n_members,
            "accuracy_mean": mean, "accuracy_std": std, "count": len(accs),
            "n_seeds": len(spec.seeds), "n_diverged": statuses.count("diverged"),
            "delta_mean": delta_mean, "delta_std": delta_std,
            "member_accuracy_mean": mean_std(members)[0],
            "per_seed": " ".join(f"{accs[s]:.2f}" for s in sorted(accs)),
            "paper": f"{paper[0]:.2f} ± {paper[1]:.2f}" if paper else "",
        })
    return table


def _pm(mean: float, std: float, sign: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    return text if math.isnan(std) else f"{text} ± {std:.2f}"


def display_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["Training method", "β", "epochs", "ensemble acc. (%)", "Δ vs base (paired)",
              "member acc. (%)", "seeds", "paper (%)"]
    body = [[row["label"], f"{row['beta']:g}", row["epochs"],
             _pm(row["accuracy_mean"], row["accuracy_std"]),
             "" if row["method"] == "base" else _pm(row["delta_mean"], row["delta_std"], True),
             _pm(row["member_accuracy_mean"], math.nan),
             f"{row['count']}/{row['n_seeds']}"
             + (f" ({row['n_diverged']} diverged)" if row["n_diverged"] else ""),
             row["paper"]] for row in rows]
    return header, body


def format_table_s5(rows: list[dict[str, Any]]) -> str:
    """Table S5's layout as fixed-width text: method, β, budget, mean ± std, paired Δ, paper."""
    header, body = display_rows(rows)
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_table_s5(out: str | Path) -> list[dict[str, Any]]:
    """Write table_s5.csv and table_s5.txt into ``out``; returns the table's rows.

    (``colearn report OUT`` and ``colearn expand-table`` draw its report.html:
    :mod:`colearning.report.table_s5`.)"""
    out = Path(out)
    rows = table_s5(out)
    rundir.atomic_write_text(out / "table_s5.csv", to_csv(rows))
    rundir.atomic_write_text(out / "table_s5.txt", format_table_s5(rows) + "\n")
    return rows
