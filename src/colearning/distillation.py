"""Distilling a trained ensemble into one network: ``colearn distill RUN_DIR``.

    run = colearning.distill("runs/base5", temperature=4, weight=0.9)
    json.loads((run.run_dir / "distill.json").read_text())["rows"]   # teacher, student, baseline

The student is an ordinary run directory (default: ``<RUN_DIR>-distilled`` beside the
teacher) of the teacher's config with ``ensemble.n_members`` = ``members`` (1), no coupling,
``loss.objective=distill`` and the ``distill`` section naming the teacher: it trains on the
teacher ensemble's soft targets over the teacher's own training split
(:mod:`colearning.training.teacher`; the loss is
:func:`colearning.losses.distillation_loss`). The baseline (``baseline=True``) is the same
network trained on the hard labels alone (``<out>-baseline``: loss.objective=colearning,
beta 0, the same seed, so the same initialization and batch order). ``distill.json`` in the
student's directory compares the three on the test split (accuracy, NLL, ECE, Brier, from
their summaries) and under shift where ``RUN_DIR/evaluation/summary.json`` holds
``shift/...`` keys. Running the same command again continues an interrupted student or
baseline and reuses finished ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from colearning import rundir
from colearning.config import (
    Config,
    config_from_dict,
    merge,
    merge_coupling,
    parse_overrides,
    read_yaml,
)
from colearning.errors import ConfigError
from colearning.training import Run, resume, train, train_pack
from colearning.training.data import from_memory

COMPARISON = "distill.json"
# (row key, summary key): the ensemble's test metrics; for one network, the network's
METRICS = (("accuracy", "test/ensemble_accuracy_mean"), ("nll", "test/ensemble_nll"),
           ("ece", "test/ensemble_ece"), ("brier", "test/ensemble_brier"))
SHIFT_SUMMARY = Path(rundir.EVALUATION) / rundir.SUMMARY  # written by colearn evaluate --shift


def student_config(teacher: str | Path, *, model: str | None = None, temperature: float = 4.0,
                   weight: float = 0.9, epochs: int | None = None, members: int = 1,
                   epoch: str = "final", overrides: list[str] | None = None) -> Config:
    """The config of a student of the run ``teacher``: its config with ``members`` networks
    of ``model`` (default: the teacher's architecture), no coupling, loss.objective=distill
    and the distill section (T = ``temperature``, alpha = ``weight``, the teacher's
    ``epoch`` weights), ``epochs`` (default: the teacher's), then ``key=value`` overrides
    (not of distill.*: those are the arguments)."""
    path = rundir.require_run_dir(teacher)
    saved = read_yaml(path / rundir.CONFIG)
    user = parse_overrides(overrides or [])
    if "distill" in user:
        raise ConfigError("set the distillation with --temperature/--weight/--teacher-epoch "
                          "(temperature=, weight=, epoch=), not distill.* overrides")
    values = {**saved, "ensemble": {**(saved.get("ensemble") or {}), "n_members": members},
              "loss": {"objective": "distill"}, "expand": {},
              "distill": {"teacher": str(path.resolve()), "temperature": temperature,
                          "weight": weight, "epoch": epoch}}
    if model is not None and model != (saved.get("model") or {}).get("name"):
        values["model"] = {"name": model, "options": {}}
    if epochs is not None:
        values["train"] = {**(saved.get("train") or {}), "epochs": epochs}
    return config_from_dict(merge_coupling(values, user))


def baseline_config(student: Config) -> Config:
    """The student's network trained on the hard labels alone: the same config with
    loss.objective=colearning at beta 0 and no teacher (same seed: same initialization)."""
    values = student.to_dict()
    return config_from_dict(merge(values, {"loss": config_from_dict({}).to_dict()["loss"],
                                           "distill": {"teacher": None}}))


def default_run_dir(teacher: str | Path, student: Config) -> Path:
    """``<teacher>-distilled`` beside the teacher; ``-<model>`` when the student's
    architecture is another, ``-N<K>`` for K > 1 students."""
    teacher = Path(teacher)
    saved = config_from_dict(read_yaml(teacher / rundir.CONFIG))
    name = f"{teacher.name}-distilled"
    if student.model.name != saved.model.name:
        name += f"-{student.model.name}"
    if student.ensemble.n_members > 1:
        name += f"-N{student.ensemble.n_members}"
    return teacher.parent / name


def _train_or_continue(config: Config, path: Path, data: Any = None) -> Run:
    """A new run of ``config`` in ``path``; if ``path`` already holds one (of the same
    config), it is continued, or returned when finished. ``data``: the in-memory data of
    :func:`colearning.train` (checked against the run's on a resume)."""
    if not rundir.is_run_dir(path):
        return train(config, path, data=data)
    if data is None:
        return train_pack([(config, path)])[0]
    return resume(path, config.to_dict(), data=data)  # the saved config must equal config


def distill(run_dir: str | Path, out: str | Path | None = None, *, model: str | None = None,
            temperature: float = 4.0, weight: float = 0.9, epochs: int | None = None,
            members: int = 1, epoch: str = "final", baseline: bool = True,
            overrides: list[str] | None = None, data: Any = None) -> Run:
    """Distill the finished run ``run_dir`` into a student run in ``out``; return its Run.

    See the module: the student trains on the teacher's soft targets at temperature
    ``temperature`` with soft-term weight ``weight`` (alpha; the hard labels get 1 -
    alpha); ``baseline`` also trains (or reuses) the same network on the hard labels in
    ``<out>-baseline``; ``distill.json`` in ``out`` compares teacher, student and baseline.
    ``data``: a teacher trained on ``colearning.train(config, data=...)`` needs the same data
    again (checked against the teacher's sha256); student and baseline train on it.
    """
    config = student_config(run_dir, model=model, temperature=temperature, weight=weight,
                            epochs=epochs, members=members, epoch=epoch, overrides=overrides)
    if data is None and from_memory(config):
        raise ConfigError(f"the teacher {run_dir} was trained on data given in memory; pass "
                          "the same data: colearning.distill(run_dir, data=...)")
    path = Path(out) if out is not None else default_run_dir(run_dir, config)
    student = _train_or_continue(config, path, data)
    independent = None
    if baseline:
        independent = _train_or_continue(baseline_config(config), Path(f"{path}-baseline"),
                                         data)
    rundir.atomic_write_json(path / COMPARISON, comparison(run_dir, student, independent))
    return student


def _row(run_dir: Path, summary: dict[str, Any], config: Config) -> dict[str, Any]:
    """One line of the comparison: a run's test metrics (and shift ones, if evaluated)."""
    row: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "model": config.model.name,
                           "members": config.ensemble.n_members,
                           "status": summary.get("status")}
    for key, source in METRICS:
        row[key] = summary.get(source)
    accuracies = summary.get("test/member_accuracy") or []
    row["member_accuracy_mean"] = (sum(accuracies) / len(accuracies)) if accuracies else None
    shift = run_dir / SHIFT_SUMMARY
    if shift.is_file():
        try:
            evaluated = json.loads(shift.read_text())
        except (OSError, ValueError):
            evaluated = {}
        row.update({key: value for key, value in evaluated.items()
                    if key.startswith("shift/") and isinstance(value, (int, float))})
    return row


def comparison(teacher: str | Path, student: Run, baseline: Run | None) -> dict[str, Any]:
    """What distill.json holds: the distillation (teacher, T, alpha) and one row per run,
    ``teacher``, ``student`` and ``baseline`` (null without one)."""
    path = rundir.require_run_dir(teacher)
    teacher_config = config_from_dict(read_yaml(path / rundir.CONFIG))
    summary = json.loads((path / rundir.SUMMARY).read_text())
    distilled = student.config.distill
    return {
        "teacher": str(path.resolve()), "temperature": distilled.temperature,
        "weight": distilled.weight, "epoch": distilled.epoch,
        "rows": {
            "teacher": _row(path, summary, teacher_config),
            "student": _row(student.run_dir, student.summary, student.config),
            "baseline": None if baseline is None else _row(baseline.run_dir, baseline.summary,
                                                           baseline.config),
        },
    }


def format_comparison(record: dict[str, Any]) -> str:
    """distill.json as a small table: one line per run, the test metrics (and shift ones)."""
    rows = {name: row for name, row in record["rows"].items() if row is not None}
    shift = sorted({key for row in rows.values() for key in row if key.startswith("shift/")})
    columns = [key for key, _ in METRICS] + shift
    lines = [f"distilled at T={record['temperature']:g}, alpha={record['weight']:g} from "
             f"{record['teacher']}",
             f"{'run':<10} {'N':>3}  {'model':<12}" + "".join(f" {c:>{max(9, len(c))}}"
                                                            for c in columns)]
    for name, row in rows.items():
        cells = "".join(f" {_number(row.get(c)):>{max(9, len(c))}}" for c in columns)
        lines.append(f"{name:<10} {row['members']:>3}  {row['model']:<12}{cells}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{value:.4f}"
