"""Table S5: ways to grow a trained ensemble of N by M members, against from-scratch runs.

    spec = load_table_s5_spec("configs/sweeps/tableS5_cpu_jpeg.yaml")
    run_table_s5(spec, "sweeps/tableS5")       # colearning.expand.table_run: trains the cells
    print(format_table_s5(table_s5("sweeps/tableS5")))

This module plans the cells, reads and tabulates (reports build on it and never train);
:mod:`colearning.expand.table_run` trains the cells with the sweep runner.

A Table S5 file is a sweep file without a grid (``name``, ``base_config``/``base``,
``overrides``, ``seeds``; see :mod:`colearning.sweep.spec`): the experiment is stated with
the ordinary run config keys of its base cell, plus how the base is grown::

    overrides:
      ensemble: {n_members: 10}   # N, the trained ensemble that is grown
      loss: {beta: -0.07}         # loss.beta (Eq. 1 as written) of the coupled runs
      train: {epochs: 150}        # E: the base run, each expansion and "same budget"; 2E
    seeds: 10
    expand: {add: 5, margin: 0}   # expand.add = M new members; expand.margin: boost's m
    methods: [freeze, retrain]    # optional: a subset of the rows (the base always runs)

Per seed the cells are, in order: ``base`` (N members, beta, E epochs), ``freeze0`` and
``freeze`` (add-freeze with beta 0 and beta), ``retrain`` (add-retrain, beta, E more
epochs), ``boost`` (M independent members on the border samples), ``scratch`` and
``scratch2x`` (N+M members from scratch, E and 2E epochs). Every cell is an ordinary sweep
cell (:class:`colearning.sweep.spec.SweepCell`): the base run config with the keys ``seed``,
``ensemble.n_members``, ``loss.beta``, ``train.epochs`` and, for the expansions,
``expand.source/mode/add/margin``, where ``expand.source`` is the base cell of its seed (so
they share its split). Hence two stages (:func:`plan_cells`): the base and from-scratch
cells, then the expansions. Layout: ``table_s5.yaml`` (the resolved spec),
``cells/<method>_seed<k>/`` (run directories), ``table_s5.csv``, ``table_s5.txt`` and
``report.html``. Running again continues: finished cells are skipped, interrupted ones
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
from colearning.config import merge_coupling, parse_overrides, read_yaml
from colearning.errors import ConfigError, RunDirError
from colearning.metrics.statistics import mean_std
from colearning.sweep.layout import CELLS, cell_status
from colearning.sweep.spec import SPEC_KEYS, SweepCell, cell_config, spec_from_dict
from colearning.sweep.table import to_csv

SPEC_FILE = "table_s5.yaml"
OWN_KEYS = ("expand", "methods")  # beside a sweep file's keys (no grid: the rows are it)
FILE_KEYS = tuple(key for key in SPEC_KEYS if key != "grid") + OWN_KEYS
GROW_KEYS = ("add", "margin")  # of expand:, the expand.* keys the table leaves to the file
# The experiment keys of the layout before this one (table_s5.yaml of older versions, and
# Table S5 files): each is an ordinary config key now.
OLD_KEYS = {"n_members": "ensemble.n_members", "beta": "loss.beta",
            "epochs": "train.epochs", "add": "expand.add", "margin": "expand.margin"}
METHODS = ("base", "freeze0", "freeze", "retrain", "boost", "scratch", "scratch2x")
# Paper Table S5 and Supp. text (boost): LeNet-5 on CIFAR-10, N=10 + M=5, beta=-0.07,
# ensemble accuracy (%) mean ± std.
PAPER = {"base": (83.65, 0.38), "freeze0": (83.43, 0.34), "freeze": (83.74, 0.34),
         "retrain": (84.97, 0.33), "boost": (83.32, 0.30), "scratch": (84.29, 0.25),
         "scratch2x": (85.65, 0.25)}
METRIC = "test/ensemble_accuracy_mean"


@dataclass
class TableS5Spec:
    """A resolved Table S5 experiment: ``base`` is the base cell's full run config dict
    (N = ensemble.n_members, beta = loss.beta, E = train.epochs), grown by ``add`` (M)."""

    name: str
    base: dict[str, Any]
    seeds: list[int]
    add: int = 5
    margin: int = 0
    methods: list[str] = field(default_factory=lambda: list(METHODS))

    @property
    def n_members(self) -> int:
        return self.base["ensemble"]["n_members"]

    @property
    def beta(self) -> float:
        return self.base["loss"]["beta"]

    @property
    def epochs(self) -> int:
        return self.base["train"]["epochs"]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "seeds": self.seeds,
                "expand": {"add": self.add, "margin": self.margin}, "methods": self.methods}


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


def cell_name(method: Method, seed: int) -> str:
    return f"{method.key}_seed{seed}"


def plan_cells(spec: TableS5Spec, out: str | Path) -> tuple[list[SweepCell], list[SweepCell]]:
    """The cells of ``spec`` in the directory ``out``, as ordinary sweep cells in two stages:
    stage 1 the base and from-scratch cells (independent of each other), stage 2 the
    expansions, each grown from the base cell of its seed (``expand.source``, absolute).
    Both seed-major, in table order."""
    cells = Path(out).resolve() / CELLS
    first: list[SweepCell] = []
    second: list[SweepCell] = []
    for seed in spec.seeds:
        base = cell_config(spec.base, {"seed": seed})
        for method in methods(spec):
            values: dict[str, Any] = {"ensemble.n_members": method.n_members,
                                      "loss.beta": method.beta,
                                      "train.epochs": method.train_epochs}
            if method.mode is None:
                values["seed"] = seed
                first.append(SweepCell(cell_name(method, seed), values,
                                       cell_config(spec.base, values)))
                continue
            values.update({"expand.source": str(cells / f"base_seed{seed}"),
                           "expand.mode": method.mode, "expand.add": spec.add,
                           "expand.margin": spec.margin if method.mode == "boost" else 0,
                           "seed": seed})
            second.append(SweepCell(cell_name(method, seed), values, cell_config(base, values)))
    return first, second


# ------------------------------------------------------------------------- the spec
def _grow_options(values: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any],
                                                                          list[str]]:
    """The file's ``expand:`` updated by the expand.* overrides; the other overrides."""
    grow = values.get("expand") or {}
    if not isinstance(grow, dict):
        raise ConfigError("Table S5 `expand` must be a mapping: {add: M, margin: m}")
    grow, rest = dict(grow), []
    for item in overrides:
        update = parse_overrides([item])
        if "expand" in update:
            grow.update(update.pop("expand") or {})
        if update:
            rest.append(item)
    unknown = sorted(set(grow) - set(GROW_KEYS))
    if unknown:
        raise ConfigError(f"Table S5 sets expand.source and expand.mode per row; its file "
                          f"gives expand.add and expand.margin only, not expand.{unknown[0]}")
    return grow, rest


def table_s5_spec_from_dict(values: dict[str, Any], *, base_dir: str | Path = ".",
                            overrides: list[str] | None = None,
                            seeds: int | list[int] | None = None) -> TableS5Spec:
    """A validated :class:`TableS5Spec` from a Table S5 mapping (see the module docstring).

    ``overrides`` (``key=value``) change the base run config as a sweep's do; expand.add
    and expand.margin ones change the expansion."""
    if not isinstance(values, dict):
        raise ConfigError(f"a Table S5 file must hold a mapping, got {type(values).__name__}")
    old = next((key for key in OLD_KEYS if key in values), None)
    if old is not None:
        raise ConfigError(
            f"Table S5 key {old!r} is the run config key {OLD_KEYS[old]} now: set "
            "ensemble.n_members, loss.beta and train.epochs under overrides: (or as "
            "key=value), expand.add and expand.margin under expand: (see "
            "configs/sweeps/tableS5_cpu_jpeg.yaml)")
    unknown = sorted(set(values) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"unknown Table S5 key {unknown[0]!r}; valid: {', '.join(FILE_KEYS)}")
    grow, overrides = _grow_options(values, overrides or [])
    sweep = spec_from_dict({key: v for key, v in values.items() if key not in OWN_KEYS},
                           base_dir=base_dir, overrides=overrides, seeds=seeds)
    spec = TableS5Spec(name=sweep.name, base=sweep.base,
                       seeds=sweep.grid.get("seed", [sweep.base["seed"]]))
    for key, value in [*grow.items(), ("methods", values.get("methods", spec.methods))]:
        expected = list if key == "methods" else int
        if type(value) is not expected:
            raise ConfigError(f"Table S5 key {key!r} must be {expected.__name__}, got {value!r}")
        setattr(spec, key, value)
    if spec.add < 1 or spec.margin < 0:
        raise ConfigError(f"Table S5 expand.add must be >= 1 (new members) and expand.margin "
                          f">= 0, got add {spec.add}, margin {spec.margin}")
    loss = spec.base["loss"]
    if type(loss["beta"]) is not float or loss["beta_bar"] is not None:
        raise ConfigError("Table S5 couples its runs with one loss.beta per pair (as the "
                          "paper's table), the same for N and N+M members: give loss.beta, not "
                          f"loss.beta_bar or a matrix (the base has loss.beta={loss['beta']!r}, "
                          f"loss.beta_bar={loss['beta_bar']!r})")
    if spec.base["expand"]["source"] is not None:
        raise ConfigError("the base of Table S5 is a run from scratch: drop expand.source")
    unknown = sorted(set(spec.methods) - set(METHODS))
    if unknown:
        raise ConfigError(f"unknown Table S5 method {unknown[0]!r}; valid: {', '.join(METHODS)}")
    return spec


def load_table_s5_spec(path: str | Path, overrides: list[str] | None = None,
                       seeds: int | list[int] | None = None) -> TableS5Spec:
    """The Table S5 file at ``path`` resolved (base_config relative to the file)."""
    path = Path(path)
    values = read_yaml(path)
    if isinstance(values, dict):
        values.setdefault("name", path.stem)
    return table_s5_spec_from_dict(values, base_dir=path.parent, overrides=overrides,
                                   seeds=seeds)


def _from_old_layout(values: dict[str, Any]) -> dict[str, Any]:
    """A table_s5.yaml written before the experiment keys were run config keys, in today's
    layout (the same cells: their directories resume)."""
    base = merge_coupling(values.get("base") or {}, {
        "ensemble": {"n_members": values["n_members"]}, "loss": {"beta": values["beta"]},
        "train": {"epochs": values["epochs"]}})
    return {"name": values.get("name"), "base": base, "seeds": values.get("seeds"),
            "expand": {"add": values["add"], "margin": values["margin"]},
            "methods": values.get("methods", list(METHODS))}


def load_table_s5_dir(out: str | Path) -> TableS5Spec:
    """The spec saved in a Table S5 directory (for continuing it and for the table)."""
    path = Path(out) / SPEC_FILE
    if not path.is_file():
        raise RunDirError(f"{out} is not a Table S5 directory (it has no {SPEC_FILE})")
    values = read_yaml(path)
    if isinstance(values, dict) and set(OLD_KEYS) <= set(values):
        values = _from_old_layout(values)
    seeds = values.pop("seeds", None) if isinstance(values, dict) else None
    return table_s5_spec_from_dict(values, seeds=seeds)


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
