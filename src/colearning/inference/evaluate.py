"""Evaluate a trained run on other data, beside the run: ``colearn evaluate RUN_DIR --data``.

    evaluation = evaluate_run("runs/demo", "configs/other_data.yaml")
    evaluation.metrics["eval/ensemble_accuracy_mean"]

Every per-run metric of the library (the registry :data:`colearning.evaluation.METRICS`,
through :func:`~colearning.evaluation.evaluate_log_probs`, keys ``eval/<metric>``) of the
run's members on one side of a dataset, written to ``RUN_DIR/evaluation/<tag>/``:

    metrics.json      the metrics, flat, and what was evaluated: data, split, images,
                      checkpoint (epoch: final or best), date, colearning version
    predictions.npz   member log-probabilities [N, n, C] (float32) and labels [n]

Nothing else of the run is written: the run's own files stay as they were. The run's lock
is held throughout, so an evaluation never reads a checkpoint that a resumed training is
replacing; running it again replaces its own two files, each atomically.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import __version__, rundir
from colearning.data import as_raw
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.evaluation import evaluate_log_probs
from colearning.inference.prediction import BATCH_SIZE, member_log_probs
from colearning.inference.sources import SPLITS, Source, check_tag, read_source, side
from colearning.training import load_ensemble, load_run

EVALUATION = rundir.EVALUATION
PREFIX = "eval"  # metric keys: eval/<metric>
METRICS_FILE = "metrics.json"


@dataclass
class Evaluation:
    """One evaluation: its folder, its metrics.json content, and the member
    log-probabilities [N, n, C] and labels [n] it saved."""

    path: Path
    metrics: dict[str, Any]
    log_probs: torch.Tensor
    labels: torch.Tensor


def evaluate_run(run_dir: str | Path, data: Any, *,
                 name: str | None = None, split: str = "test", epoch: str = "final",
                 batch_size: int = BATCH_SIZE, device: str = "auto",
                 progress: bool = False) -> Evaluation:
    """Evaluate the run in ``run_dir`` on ``split`` of ``data`` and write the result to
    RUN_DIR/evaluation/<tag>/ (see the module).

    ``data``: a YAML file (a config or its ``data:`` section naming a dataset), an .npz file
    (x_train, y_train, x_test, y_test, optional x_val, y_val: the ``arrays`` dataset), or in
    memory what ``colearning.train(config, data=...)`` takes (a RawDataset, arrays, torch
    Datasets; then ``name`` is required). ``split``: ``test`` (the dataset's official test
    side), ``train``, ``val`` (the data's own validation side, if it has one) or ``all``.
    ``name``: the tag (default: from the data's name or file, then ``-<split>`` unless the
    test side and ``-best`` for the best epoch). ``epoch``: which of the run's weights
    (:func:`colearning.load_ensemble`): ``final``, its last checkpoint, or ``best``, the
    validation-best epoch it kept. Images whose channels or size differ from the run's, or
    labels beyond its classes, are a one-line ConfigError.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(data, (str, Path)):
        source = read_source(data, progress=progress)
    elif name is None:
        raise ConfigError("data given as arrays needs a name (the evaluation's tag)")
    else:
        source = Source(as_raw(data, source=name), name, None, name)
    tag = check_tag(name) if name is not None else source.tag + (
        "" if split == "test" else f"-{split}") + ("-best" if epoch == "best" else "")
    path = rundir.require_run_dir(run_dir)
    images, labels = side(source.raw, split)
    with rundir.locked(path, instead="stop it first (colearn train --resume continues it)"):
        ensemble, _ = load_ensemble(path, epoch=epoch)
        run = load_run(path)
        check_compatible(ensemble, source, images, labels)
        metrics, log_probs = score(ensemble, images, labels, batch_size=batch_size,
                                   device=device)
        metrics.update({
            "data": source.name, "data_path": source.path, "split": split,
            "images": len(labels), "epoch": epoch, "epochs_completed": len(run.metrics),
            "best_epoch": run.summary.get("best_epoch") if epoch == "best" else None,
            "run_dir": str(path.absolute()), "device": str(next(ensemble.parameters()).device),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "colearning_version": __version__,
        })
        out = path / EVALUATION / tag
        with rundir.os_errors(out, "create"):
            out.mkdir(parents=True, exist_ok=True)
        # metrics.json goes first and comes back last: a folder with one is a finished
        # evaluation, even after a rerun stopped halfway
        with rundir.os_errors(out / METRICS_FILE, "replace"):
            (out / METRICS_FILE).unlink(missing_ok=True)
        rundir.atomic_savez(out / rundir.PREDICTIONS, log_probs=log_probs.numpy(),
                            labels=labels)
        rundir.atomic_write_json(out / METRICS_FILE, metrics)
    return Evaluation(out, metrics, log_probs, torch.from_numpy(labels))


def score(ensemble: Ensemble, images: Any, labels: np.ndarray, *, batch_size: int = BATCH_SIZE,
          device: str = "auto", prefix: str = PREFIX) -> tuple[dict[str, Any], torch.Tensor]:
    """(flat metrics ``prefix/<metric>``, member log-probabilities [N, n, C]) of ``ensemble``
    on ``images`` [n, C, H, W] with ``labels`` [n]."""
    log_probs = member_log_probs(ensemble, images, batch_size=batch_size, device=device)
    return evaluate_log_probs(log_probs, torch.from_numpy(labels), prefix=prefix), log_probs


def check_compatible(ensemble: Ensemble, source: Source, images: np.ndarray,
                     labels: np.ndarray) -> None:
    """Refuse data the run's members cannot take: other channels or image size, labels
    beyond the run's classes."""
    inputs, raw = ensemble.inputs, source.raw
    channels, size, classes = inputs["in_channels"], inputs["image_size"], inputs["num_classes"]
    if (raw.in_channels, raw.image_size) != (channels, size):
        raise ConfigError(f"{source.name} has {raw.in_channels}-channel {raw.image_size}x"
                          f"{raw.image_size} images but the run's members take {channels}-"
                          f"channel {size}x{size} images; give data of that shape")
    if len(labels) and labels.max() >= classes:
        raise ConfigError(f"{source.name} has labels up to {labels.max()} but the run's "
                          f"members know {classes} classes (0..{classes - 1}); give data "
                          "labelled with the run's classes")
    if not len(images):
        raise ConfigError(f"{source.name} has no images to evaluate")
