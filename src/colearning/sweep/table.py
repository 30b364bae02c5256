"""A sweep directory -> tidy tables: one row per cell, and mean/std/count over seeds.

    rows = cell_rows("sweeps/fig2c")          # list of dicts, one per cell
    summary = summarize(rows, facet_keys(rows))
    write_tables("sweeps/fig2c")              # results.csv, summary.csv, epochs.csv (+ .parquet)

Columns of a cell row: ``cell``, ``status`` (finished, diverged, interrupted, failed,
started, pending), ``error``, the grid keys (dotted, e.g. ``loss.kl_reduction``), the
coupling's label ``coupling`` (:func:`colearning.couplings.coupling_label`: topology, its
options, schedule, JS target), ``independent`` (the paper's objective with every
coupling 0: beta = 0 training), its strength as ``N``, ``beta`` and ``beta_bar`` (= beta * N,
whichever of the two the config set; on a graph the uniform equivalent), ``seed``, the
final-epoch metrics (``test/...``, and ``val/ensemble_accuracy_mean``
when the runs hold out a validation split; ``test/member_accuracy_mean`` is the mean over
members, ``n_collapsed`` the number of collapsed members, ``first_collapse_epoch`` when
that collapse began, see :func:`first_collapse`) and the best epoch: chosen on the
validation split when there is one (``best/selected_on`` = ``val``), else on the test set
(``test``, an optimistic choice), with the test ensemble accuracy, mean member accuracy
and JS distance at that epoch (``best/...``). A cell whose run was evaluated by ``colearn
evaluate`` adds the numeric keys of its evaluation/summary.json under ``shift/``, ``ood/``,
``calibration/`` and ``selective/`` (``shift/accuracy_mean``, ``ood/auroc_entropy``, ...)
and ``evaluated_epoch``; the summary gives their mean and std too.

The summary groups cells by the other grid keys (a coupling's keys by its label) plus
(N, beta). It says how complete each group is (``n_cells``, ``n_finished``, ``n_diverged``,
``n_failed``, and ``n_collapsed``, the finished cells with a collapsed member) and gives
``METRIC:mean`` and ``METRIC:std`` (sample std, ddof=1; empty for one seed) over the
finished cells; a group whose cells did
not all finish is marked by ``n_finished < n_cells`` and is not eligible as the optimal
coupling (see :func:`colearning.sweep.analysis.optimal_beta`). CSV is always written;
Parquet too when pyarrow is installed (``pip install colearning[parquet]``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from colearning import rundir
from colearning.config import config_from_dict, keys_tagged
from colearning.couplings import COUPLINGS, coupling_label, coupling_matrix
from colearning.errors import ConfigError
from colearning.evaluation import sweep_columns
from colearning.metrics.statistics import mean_std
from colearning.sweep.layout import CELL_ERROR, CELLS, cell_status, load_sweep_spec

COUPLING_KEYS = ("loss.beta", "loss.beta_bar", "ensemble.n_members", "seed")
CONFIG_COLUMNS = ("model.name", "data.name", "train.epochs", "loss.kl_reduction",
                  "loss.objective", "loss.joint_weight", "loss.divergence")
# Config keys the coupling label (column ``coupling``) folds together: cells are grouped by
# the label, not by these keys one by one.
LABELLED = keys_tagged("label")  # folded into the coupling's label


def metric_columns() -> tuple[str, ...]:
    """The metric columns: derived from the metric registry (colearning.evaluation.METRICS,
    as it is now: plugins included), and the count of collapsed members."""
    return (*sweep_columns(), "n_collapsed")


EPOCH_METRICS = (
    "val/ensemble_accuracy_mean",
    "test/ensemble_accuracy_mean",
    "test/ensemble_accuracy_geometric",
    "test/ensemble_accuracy_vote",
    "test/member_accuracy_mean",
    "test/js_mean",
)
# The best epoch's numbers (see best_epoch).
BEST_COLUMNS = ("best/epoch", "best/ensemble_accuracy_mean", "best/val_ensemble_accuracy_mean",
                "best/member_accuracy_mean", "best/js_mean", "best/selected_on")
RESULTS, SUMMARY, EPOCHS = "results", "summary", "epochs"
# ``colearn evaluate`` writes RUN_DIR/evaluation/summary.json: its numeric keys with these
# prefixes become columns of the cell's row (and their mean/std of the summary), beside
# ``evaluated_epoch``.
EVALUATION = rundir.EVALUATION
EVALUATION_PREFIXES = ("shift/", "ood/", "calibration/", "selective/")
EVALUATED_EPOCH = "evaluated_epoch"
TEST, VAL = "test/ensemble_accuracy_mean", "val/ensemble_accuracy_mean"


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _scalar(value: Any) -> Any:
    """Table cells are scalars: lists (beta matrices) become JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def coupling(config: dict[str, Any], matrix: torch.Tensor) -> tuple[int, float | None,
                                                                     float | None]:
    """(N, beta, beta_bar) of a run config whose coupling matrix is ``matrix``; beta None for
    a matrix coupling. A graph given beta_bar reports it (beta = beta_bar / N, the uniform
    equivalent); communities, whose strengths are options, report the mean off-diagonal
    coupling as beta."""
    n = config["ensemble"]["n_members"]
    loss = config["loss"]
    if isinstance(loss["beta"], list):
        return n, None, None
    if loss["beta_bar"] is not None:
        return n, loss["beta_bar"] / n, float(loss["beta_bar"])
    if loss["beta"] is None and COUPLINGS.meta(loss["coupling"])["strength"] == "options" \
            and n > 1:
        beta = float(matrix.sum()) / (n * (n - 1))
        return n, beta, beta * n
    beta = float(loss["beta"] or 0.0)
    return n, beta, beta * n


def _coupling_columns(config: dict[str, Any], cache: dict[str, tuple]) -> tuple:
    """(N, beta, beta_bar, label, independent) of a cell config, computed once per config
    up to the seed. ``independent``: the paper's objective with every coupling 0."""
    key = json.dumps({**config, "seed": None}, sort_keys=True, default=str)
    if key not in cache:
        loss = config_from_dict(config).loss
        matrix = coupling_matrix(loss, config["ensemble"]["n_members"])
        independent = loss.objective == "colearning" and bool((matrix == 0).all())
        cache[key] = (*coupling(config, matrix), coupling_label(loss), independent)
    return cache[key]


def _final_metrics(record: dict[str, Any]) -> dict[str, Any]:
    columns = metric_columns()
    out = {key: record.get(key) for key in columns if key in record and "/" in key}
    for key in columns:  # a member metric's columns: its mean, min and max over members
        base, _, stat = key.rpartition("_")
        values = record.get(base)
        if stat in ("mean", "min", "max") and isinstance(values, list) and key not in record:
            values = [v for v in values if isinstance(v, (int, float))]
            if values:
                out[key] = {"mean": sum(values) / len(values), "min": min(values),
                            "max": max(values)}[stat]
    out["n_collapsed"] = sum(bool(c) for c in record.get("test/member_collapsed") or [])
    return out


def evaluation_columns(run_dir: Path) -> dict[str, Any]:
    """The scalar results of ``colearn evaluate`` for one run directory, from its
    evaluation/summary.json (``shift/accuracy_mean``, ``ood/auroc_entropy``, ...,
    ``evaluated_epoch``); empty when the run was never evaluated or the file is unreadable."""
    path = run_dir / EVALUATION / rundir.SUMMARY
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(summary, dict):
        return {}
    return {key: value for key, value in summary.items()
            if (key.startswith(EVALUATION_PREFIXES) or key == EVALUATED_EPOCH)
            and isinstance(value, (int, float)) and not isinstance(value, bool)}


def is_evaluation_column(key: str) -> bool:
    """Whether ``key`` is a column of :func:`evaluation_columns`."""
    return key.startswith(EVALUATION_PREFIXES) or key == EVALUATED_EPOCH


def evaluation_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The evaluation metric columns of ``rows`` (not ``evaluated_epoch``), first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k.startswith(EVALUATION_PREFIXES)))
    return list(seen)


def cell_rows(sweep_dir: str | Path, epoch: int | None = None) -> list[dict[str, Any]]:
    """One row per cell of the sweep in ``sweep_dir`` (cells not started yet included); the
    ``best/*`` columns at ``epoch`` instead of the selected one when given
    (:func:`best_epoch`)."""
    path = Path(sweep_dir)
    spec = load_sweep_spec(path)
    grid_keys = [k for k in spec.grid if k not in COUPLING_KEYS]
    rows = []
    cache: dict[str, tuple] = {}
    for cell in spec.cells():
        cell_dir = path / CELLS / cell.name
        status = cell_status(cell_dir)
        n, beta, beta_bar, label, independent = _coupling_columns(cell.config, cache)
        row: dict[str, Any] = {"cell": cell.name, "status": status, "error": None}
        for key in grid_keys + [k for k in CONFIG_COLUMNS if k not in grid_keys]:
            row[key] = _scalar(_get(cell.config, key))
        row["coupling"], row["independent"] = label, independent
        row.update({"N": n, "beta": beta, "beta_bar": beta_bar, "seed": cell.config["seed"]})
        records = rundir.read_metrics(cell_dir / rundir.METRICS) if cell_dir.exists() else []
        row["epochs_completed"] = len(records)
        row["first_collapse_epoch"] = first_collapse(records)
        if status == "failed":
            error = json.loads((cell_dir / CELL_ERROR).read_text())
            row["error"] = f"{error['error_type']}: {error['message']}"
        summary_path = cell_dir / rundir.SUMMARY
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        if status == "diverged":
            row["error"] = summary.get("status_detail")
        row["wall_seconds"] = summary.get("wall_seconds")
        final = _final_metrics(records[-1]) if records else {}
        row.update({key: final.get(key) for key in metric_columns()})
        row.update(best_epoch(records, epoch))
        row.update(evaluation_columns(cell_dir))
        rows.append(row)
    return rows


def first_collapse(records: list[dict[str, Any]]) -> int | None:
    """When the collapse a run ended in began: the first epoch from which one of the members
    collapsed at its last epoch stayed collapsed (None when no member ended collapsed).
    A member that never learned is not collapsed (``test/member_not_learned``)."""
    flags = [r.get("test/member_collapsed") or [] for r in records]
    if not flags or not any(flags[-1]):
        return None
    starts = []
    for member, collapsed in enumerate(flags[-1]):
        if not collapsed:
            continue
        k = len(flags)
        while k > 0 and member < len(flags[k - 1]) and flags[k - 1][member]:
            k -= 1
        starts.append(records[k]["epoch"])
    return min(starts)


def best_epoch(records: list[dict[str, Any]], epoch: int | None = None) -> dict[str, Any]:
    """The best epoch of one run: on validation accuracy when the run has a validation
    split, else on test accuracy (an optimistic choice, said in ``best/selected_on``), with
    the test accuracy at that epoch. Ties go to the earliest epoch. ``epoch``: take that
    epoch instead, chosen on nothing (``best/selected_on`` = ``epoch E``; every column None
    when the run has not reached it)."""
    if epoch is not None:
        at = [r for r in records if r.get("epoch") == epoch]
        return (_epoch_columns(at[-1], f"epoch {epoch}") if at
                else dict.fromkeys(BEST_COLUMNS))
    selected_on = "val" if any(VAL in r for r in records) else "test"
    if not records:
        return dict.fromkeys(BEST_COLUMNS)
    scores = [_number(r.get(f"{selected_on}/ensemble_accuracy_mean")) for r in records]
    best = max(range(len(scores)), key=lambda k: (scores[k], -k))
    return _epoch_columns(records[best], selected_on)


def _epoch_columns(record: dict[str, Any], selected_on: str) -> dict[str, Any]:
    return {"best/epoch": record["epoch"],
            "best/ensemble_accuracy_mean": record.get(TEST),
            "best/val_ensemble_accuracy_mean": record.get(VAL),
            "best/member_accuracy_mean": _final_metrics(record).get("test/member_accuracy_mean"),
            "best/js_mean": record.get("test/js_mean"),
            "best/selected_on": selected_on}


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def epoch_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per (cell, evaluated epoch): the curves behind the gain-over-epochs figure."""
    path = Path(sweep_dir)
    rows = cell_rows(path)
    wanted = ["cell", *facet_keys(rows), "N", "beta", "beta_bar", "seed"]
    out = []
    for row in rows:
        keys = {k: row[k] for k in wanted}
        for record in rundir.read_metrics(path / CELLS / row["cell"] / rundir.METRICS):
            line = dict(keys, epoch=record["epoch"])
            final = _final_metrics(record)
            line.update({m: final.get(m, record.get(m)) for m in EPOCH_METRICS})
            out.append(line)
    return out


def facet_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Grid keys other than N, beta(_bar) and seed: each value of them is its own curve set.
    Grid keys of the coupling (topology, its options, schedule, JS target) count as one
    facet, the ``coupling`` label."""
    if not rows:
        return []
    fixed = {"cell", "status", "error", "N", "beta", "beta_bar", "seed", "epochs_completed",
             "first_collapse_epoch", "wall_seconds", "coupling", "independent", *metric_columns(),
             *BEST_COLUMNS, *CONFIG_COLUMNS}
    keys = [k for k in rows[0] if k not in fixed and not labelled(k)
            and not is_evaluation_column(k)]
    # a config column (or the coupling label) varied by the grid is a facet too
    keys += [k for k in (*CONFIG_COLUMNS, "coupling") if len({r.get(k) for r in rows}) > 1]
    return keys


def labelled(key: str) -> bool:
    """Whether config key ``key`` is part of the coupling label."""
    return any(key == k or key.startswith(k + ".") for k in LABELLED)


def summarize(rows: list[dict[str, Any]], facets: list[str] | None = None,
              metrics: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per (facets..., N, beta): how many cells there are, finished, diverged, failed and
    collapsed, and the mean and std (ddof=1) over seeds of the finished cells.

    Groups keep the order in which they first appear in ``rows``.
    """
    facets = facet_keys(rows) if facets is None else facets
    metrics = list([*metric_columns(), *evaluation_metrics(rows)] if metrics is None
                   else metrics)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in facets) + (row["N"], row["beta"])
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r["status"] == "finished"]
        line: dict[str, Any] = dict(zip(facets, key[:-2], strict=True))
        line.update({"N": key[-2], "beta": key[-1], "beta_bar": members[0]["beta_bar"],
                     "n_cells": len(members), "n_finished": len(done),
                     "n_diverged": sum(r["status"] == "diverged" for r in members),
                     "n_failed": sum(r["status"] == "failed" for r in members),
                     "n_collapsed": sum(bool(r.get("n_collapsed")) for r in done)})
        for metric in metrics:
            if metric == "n_collapsed":  # a count per cell; the group's count is above
                continue
            values = [float(r[metric]) for r in done if r.get(metric) is not None]
            mean, std = mean_std(values) if values else (math.nan, math.nan)
            line[f"{metric}:mean"], line[f"{metric}:std"] = mean, std
        out.append(line)
    return out


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a pandas DataFrame, columns in first-seen order (missing values NaN/None)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pd.DataFrame.from_records(rows, columns=list(columns))


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text with the union of the rows' columns (first-seen order); None/NaN -> empty."""
    return frame(rows).to_csv(index=False, lineterminator="\n")


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> bool:
    """Write ``rows`` as Parquet when pyarrow is installed; False when it is not."""
    try:
        import pyarrow  # noqa: F401 - pandas' Parquet engine
    except ImportError:
        return False
    table = frame(rows)
    for column in table.columns:  # one type per column: ints sharing one with floats, floats
        values = table[column].dropna()
        if len(values) and values.map(lambda v: isinstance(v, (int, float))
                                      and not isinstance(v, bool)).all():
            table[column] = pd.to_numeric(table[column])
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    rundir.atomic_write_bytes(path, buffer.getvalue())
    return True


def write_tables(sweep_dir: str | Path) -> dict[str, Path]:
    """Write results/summary/epochs tables into ``sweep_dir``; returns the written paths."""
    path = Path(sweep_dir)
    rows = cell_rows(path)
    tables = {RESULTS: rows, SUMMARY: summarize(rows), EPOCHS: epoch_rows(path)}
    written = {}
    for name, table in tables.items():
        target = path / f"{name}.csv"
        rundir.atomic_write_text(target, to_csv(table))
        written[f"{name}.csv"] = target
        if write_parquet(table, path / f"{name}.parquet"):
            written[f"{name}.parquet"] = path / f"{name}.parquet"
    return written


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """A table written by :func:`to_csv` back as dicts (numbers parsed, empty -> None)."""
    table = pd.read_csv(path)
    return [{key: _plain(value) for key, value in row.items()}
            for row in table.to_dict("records")]


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers; NaN (an empty CSV field) as None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def load_results(sweep_dir: str | Path, table: str = RESULTS) -> pd.DataFrame:
    """A sweep's table as a pandas DataFrame, computed afresh from its run directories:
    ``results`` (a row per cell), ``summary`` (per facets, N and beta) or ``epochs`` (a row
    per cell and epoch); the same columns as the CSV/Parquet files.

    >>> df = load_results("sweeps/fig2c")                                # doctest: +SKIP
    >>> df.groupby("beta")["test/ensemble_accuracy_mean"].mean()        # doctest: +SKIP
    """
    rows = cell_rows(sweep_dir)
    if table == RESULTS:
        return frame(rows)
    if table == SUMMARY:
        return frame(summarize(rows))
    if table == EPOCHS:
        return frame(epoch_rows(sweep_dir))
    raise ConfigError(f"unknown sweep table {table!r}; valid: {RESULTS}, {SUMMARY}, {EPOCHS}")
