"""train.evaluate_shift: a finished run evaluated under shift, on OOD sets and with
temperature scaling, after its training, in the same process (rank 0 only).

Training sits below inference, so the callers that finish a run call it:
``colearning.train`` and ``colearning.resume`` (the wrappers here), ``colearn train`` and a
sweep's cells (:func:`colearning.sweep.cell.run_pack`). ``colearning.training.train``
itself only trains.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from colearning import training
from colearning.inference.ood_sets import HELD_OUT, NOISE, set_name
from colearning.inference.shifted import check_corruptions, check_severities, read_rows
from colearning.inference.uncertainty import (
    EVALUATION,
    SHIFT_FILE,
    STATE_FILE,
    SUMMARY_FILE,
    Uncertainty,
    evaluate_uncertainty,
)
from colearning.training import Run
from colearning.training.shard import current_shard


def end_of_run_sets(run: Run) -> list[str]:
    """The --ood sets of train.evaluate_shift: noise, and held-out with data.classes."""
    return [NOISE] + ([HELD_OUT] if run.config.data.classes is not None else [])


def evaluated(run: Run) -> bool:
    """Whether RUN_DIR/evaluation already holds train.evaluate_shift's whole evaluation of
    the run's final weights (a finished sweep cell resumed is not evaluated again)."""
    out = Path(run.run_dir) / EVALUATION
    try:
        state = json.loads((out / STATE_FILE).read_text())
        summary = json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    if state != {"checkpoint": "final", "epoch": len(run.metrics)}:
        return False
    rows = {(r["corruption"], r["severity"]) for r in read_rows(out / SHIFT_FILE)}
    wanted = {(name, level) for name in check_corruptions(None) for level in check_severities(None)}
    keys = [f"ood/{set_name(item)}/auroc_entropy" for item in end_of_run_sets(run)]
    return wanted <= rows and all(key in summary for key in keys) \
        and "selective/aurc" in summary


def finish_with_evaluation(run: Run, data: Any = None) -> Uncertainty | None:
    """After a finished run whose config says train.evaluate_shift: evaluate it as
    ``colearn evaluate RUN_DIR --shift corruptions --ood noise [--ood held-out]`` does; None
    when there is nothing to do (not asked, not finished, not rank 0, already done).
    ``data``: the data of a run trained on data given in memory."""
    config = run.config
    if not config.train.evaluate_shift or run.status != "finished" \
            or not current_shard().writer or evaluated(run):
        return None
    return evaluate_uncertainty(run.run_dir, shift=True, ood=end_of_run_sets(run),
                                calibrate=True, data=data, device=config.device,
                                batch_size=config.train.eval_batch_size,
                                progress=config.train.progress)


_THEN = """
    With train.evaluate_shift, the finished run is then evaluated under shift, on OOD sets
    and with temperature scaling (:func:`colearning.inference.finish_with_evaluation`)."""


@functools.wraps(training.train)
def train(config: Any, run_dir: str | Path | None = None, *, data: Any = None) -> Run:
    run = training.train(config, run_dir, data=data)
    finish_with_evaluation(run, data)
    return run


train.__doc__ = (training.train.__doc__ or "") + _THEN


@functools.wraps(training.resume)
def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, *,
           data: Any = None) -> Run:
    run = training.resume(run_dir, overrides, data=data)
    finish_with_evaluation(run, data)
    return run


resume.__doc__ = (training.resume.__doc__ or "") + _THEN
