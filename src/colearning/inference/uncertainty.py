"""A run's uncertainty under shift: ``colearn evaluate RUN_DIR --shift corruptions --ood SET
--calibration``, written to RUN_DIR/evaluation/ beside ``--data``'s tagged folders.

    result = evaluate_uncertainty("runs/demo", shift=True, ood=["noise"],
                                  corruptions=["gaussian_noise"], severities=[1, 5])
    result.summary["shift/accuracy_mean"], result.summary["ood/auroc_mutual_information"]

Files (RUN_DIR/evaluation/):

    shift.csv          one row per (corruption, severity) and a row ``clean,0``
                       (:data:`colearning.inference.shifted.COLUMNS`)
    ood.csv            one row per (ood_set, score): n_in, n_out, auroc, aupr_in, aupr_out,
                       fpr95 (:func:`colearning.metrics.ood_metrics`; in = the test split)
    ood_scores.npz     ``<set>/<score>/in`` and ``<set>/<score>/out`` float32 score arrays
    calibration.json   temperature scaling and selective prediction
                       (:mod:`colearning.inference.calibrated`)
    summary.json       flat: shift/..., ood/..., calibration/..., selective/...,
                       evaluated_epoch, date (merged with what an earlier run wrote)
    state.json         which weights the files describe: checkpoint (final or best), epoch

The run's lock is held throughout and none of its own files is written. Resumable: shift.csv
is rewritten atomically after each corruption, and a rerun on the same weights computes only
the (corruption, severity) rows it lacks; when the run has trained further since (or other
weights are asked for), every file is computed again.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from colearning import rundir
from colearning.environment import retain_freed_memory
from colearning.errors import ConfigError
from colearning.inference.calibrated import calibration, calibration_summary
from colearning.inference.ood_sets import check_ood, ood_images, set_name
from colearning.inference.prediction import BATCH_SIZE, member_log_probs
from colearning.inference.run_sides import RunSides, run_sides
from colearning.inference.shifted import (
    CLEAN,
    check_corruptions,
    check_severities,
    corrupted_log_probs,
    read_rows,
    row,
    shift_summary,
    write_rows,
)
from colearning.metrics import ood_metrics, ood_scores
from colearning.training import load_ensemble, load_run

EVALUATION = rundir.EVALUATION
SHIFT_FILE, OOD_FILE, SCORES_FILE = "shift.csv", "ood.csv", "ood_scores.npz"
CALIBRATION_FILE, SUMMARY_FILE, STATE_FILE = "calibration.json", "summary.json", "state.json"
OOD_COLUMNS = ("ood_set", "score", "n_in", "n_out", "auroc", "aupr_in", "aupr_out", "fpr95")
SCORES = ("max_probability", "entropy", "mutual_information", "js_spread")
PREFIXES = ("shift/", "ood/", "calibration/", "selective/")


@dataclass
class Uncertainty:
    """An uncertainty evaluation: its folder (RUN_DIR/evaluation) and summary.json."""

    path: Path
    summary: dict[str, Any]


def evaluate_uncertainty(run_dir: str | Path, *, shift: bool = False, ood: Sequence[str] = (),
                         calibrate: bool = False, corruptions: Sequence[str] | None = None,
                         severities: Sequence[int] | None = None, epoch: str = "final",
                         data: Any = None, batch_size: int = BATCH_SIZE, device: str = "auto",
                         progress: bool = False) -> Uncertainty:
    """Evaluate the run in ``run_dir`` (its ``epoch`` weights: final or best) on its own
    test split corrupted (``shift``: by ``corruptions`` at ``severities``, default all of
    :data:`colearning.shift.CORRUPTIONS` at 1..5), against the OOD sets ``ood`` (each
    ``held-out``, ``noise`` or a YAML/.npz data file) and, always, with temperature scaling
    and selective prediction (``calibrate`` alone asks for only those). ``data``: the data
    of a run trained on data given in memory. See the module for the files."""
    if not (shift or ood or calibrate):
        raise ConfigError("nothing to evaluate: give --shift corruptions, --ood SET or "
                          "--calibration (or --data FILE)")
    names = check_corruptions(corruptions) if shift else []
    levels = check_severities(severities) if shift else []
    if shift:  # the corrupted copies of the test split: large host tensors, made 85 times
        retain_freed_memory()
    path = rundir.require_run_dir(run_dir)
    with rundir.locked(path, instead="stop it first (colearn train --resume continues it)"):
        ensemble, config = load_ensemble(path, epoch=epoch)
        for item in ood:
            check_ood(item, config.data.classes is not None)
        run = load_run(path)
        evaluated = len(run.metrics) if epoch == "final" else run.summary.get("best_epoch")
        out = path / EVALUATION
        with rundir.os_errors(out, "create"):
            out.mkdir(parents=True, exist_ok=True)
        _start(out, {"checkpoint": epoch, "epoch": evaluated})
        sides = run_sides(config, data)
        labels = torch.from_numpy(sides.test_y)

        def log_probs(images: Any) -> torch.Tensor:
            return member_log_probs(ensemble, images, batch_size=batch_size, device=device)

        clean = log_probs(sides.test_x)
        summary: dict[str, Any] = {}
        if shift:
            rows = _shift(out / SHIFT_FILE, names, levels, clean, labels, progress,
                          lambda name, level: corrupted_log_probs(
                              ensemble, sides.test_x, name, level, batch_size=batch_size,
                              device=device))
            summary.update(shift_summary(rows))
        if ood:
            inputs = ensemble.inputs
            summary.update(_ood(out, ood, clean, sides, inputs, config.seed, log_probs))
        val = None if sides.val_x is None else log_probs(sides.val_x)
        content = calibration(clean, labels, val,
                              None if sides.val_y is None else torch.from_numpy(sides.val_y))
        if val is None:
            print(f"colearn: {path}: {content['note']}", file=sys.stderr, flush=True)
        rundir.atomic_write_json(out / CALIBRATION_FILE, content)
        summary.update(calibration_summary(content))
        summary = _merge_summary(out / SUMMARY_FILE, summary, evaluated)
    return Uncertainty(out, summary)


def _start(out: Path, state: dict[str, Any]) -> None:
    """Record which weights the files describe; files of other weights are removed."""
    try:
        old = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        old = None
    if old != state:
        for name in (SHIFT_FILE, OOD_FILE, SCORES_FILE, CALIBRATION_FILE, SUMMARY_FILE):
            with rundir.os_errors(out / name, "replace"):
                (out / name).unlink(missing_ok=True)
        rundir.atomic_write_json(out / STATE_FILE, state)


def _shift(file: Path, names: list[str], levels: list[int], clean: torch.Tensor,
           labels: torch.Tensor, progress: bool, corrupted: Any) -> list[dict[str, Any]]:
    """shift.csv's rows after computing the (corruption, severity) pairs it lacks, one
    corruption at a time, the file rewritten after each."""
    rows = {(r["corruption"], r["severity"]): r for r in read_rows(file)}
    rows[(CLEAN, 0)] = row(CLEAN, 0, clean, labels)
    write_rows(file, list(rows.values()))
    bar = tqdm(names, desc="corruptions", file=sys.stderr, leave=False) \
        if progress and sys.stderr.isatty() else None
    for count, name in enumerate(names, 1):
        missing = [level for level in levels if (name, level) not in rows]
        if progress and bar is None:
            print(f"colearn: shift: {name} ({count}/{len(names)})"
                  + ("" if missing else ": already in shift.csv"), file=sys.stderr, flush=True)
        for level in missing:
            rows[(name, level)] = row(name, level, corrupted(name, level), labels)
        if missing:
            write_rows(file, list(rows.values()))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return list(rows.values())


def _ood(out: Path, sets: Sequence[str], clean: torch.Tensor, sides: RunSides,
         inputs: dict[str, Any], seed: int, log_probs: Any) -> dict[str, float]:
    """Write ood.csv and ood_scores.npz for ``sets`` (keeping other sets' entries); their
    summary keys."""
    inside = {name: value.numpy().astype(np.float32)
              for name, value in ood_scores(clean, log=True).items()}
    rows = [r for r in _read_ood(out / OOD_FILE)]
    arrays = {}
    if (out / SCORES_FILE).exists():
        with np.load(out / SCORES_FILE) as saved:
            arrays = {key: saved[key] for key in saved.files}
    summary: dict[str, float] = {}
    for position, item in enumerate(sets):
        name = set_name(item)
        images = ood_images(item, held_out=sides.held_out, n_test=len(sides.test_y),
                            channels=inputs["in_channels"], size=inputs["image_size"], seed=seed)
        outside = {key: value.numpy().astype(np.float32)
                   for key, value in ood_scores(log_probs(images), log=True).items()}
        rows = [r for r in rows if r["ood_set"] != name]
        arrays = {key: value for key, value in arrays.items()
                  if not key.startswith(f"{name}/")}
        for score in SCORES:
            found = ood_metrics(inside[score], outside[score])
            rows.append({"ood_set": name, "score": score, "n_in": len(inside[score]),
                         "n_out": len(outside[score]), **found})
            arrays[f"{name}/{score}/in"] = inside[score]
            arrays[f"{name}/{score}/out"] = outside[score]
            summary[f"ood/{name}/auroc_{score}"] = found["auroc"]
            if position == 0:
                summary[f"ood/auroc_{score}"] = found["auroc"]
                summary[f"ood/fpr95_{score}"] = found["fpr95"]
    _write_ood(out / OOD_FILE, rows)
    rundir.atomic_savez(out / SCORES_FILE, **arrays)
    return summary


def _read_ood(file: Path) -> list[dict[str, Any]]:
    try:
        reader = csv.DictReader(io.StringIO(file.read_text()))
    except FileNotFoundError:
        return []
    if tuple(reader.fieldnames or ()) != OOD_COLUMNS:
        return []
    return [{key: item[key] if key in ("ood_set", "score") else int(item[key])
             if key in ("n_in", "n_out") else float(item[key]) for key in OOD_COLUMNS}
            for item in reader]


def _write_ood(file: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(OOD_COLUMNS)
    for item in rows:
        writer.writerow([repr(item[key]) if isinstance(item[key], float) else item[key]
                         for key in OOD_COLUMNS])
    rundir.atomic_write_text(file, text.getvalue())


def _merge_summary(file: Path, new: dict[str, Any], evaluated: Any) -> dict[str, Any]:
    try:
        old = json.loads(file.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    merged = {**old, **new, "evaluated_epoch": evaluated,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rundir.atomic_write_json(file, merged)
    return merged
