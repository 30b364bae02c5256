"""Everything a run report reads, loaded from the run directory's saved files only.

    run = load_artifacts("runs/demo")
    run.n_members, run.coupling, run.log_probs.shape    # 2, 'β=-0.2', (2, 2000, 10)
    run.tag                                             # 'N=2, β=-0.2', in every figure title

Nothing here trains or evaluates a network: metrics come from metrics.jsonl and
summary.json, per-sample numbers from predictions.npz, structure statistics from
analysis.jsonl, and the final weights are read out of checkpoint.pt by layer name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import rundir
from colearning.config import Config, config_from_dict, read_yaml
from colearning.couplings import coupling_label, coupling_matrix, strength_in_options
from colearning.errors import ColearningError, ConfigError, RunDirError
from colearning.metrics.structure import weight_layers
from colearning.models import build_model
from colearning.sweep.table import coupling

# Any size every registered model accepts: the layer order (which is all the names need)
# does not depend on it.
_TEMPLATE_IMAGE_SIZE = 32


@dataclass
class RunArtifacts:
    """The saved outputs of one run (missing optional files are None or empty)."""

    path: Path
    config: Config
    config_text: str
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    meta: dict[str, Any]
    analysis: list[dict[str, Any]]
    log_probs: np.ndarray | None = None  # [N, n_test, C] float32, final test log-probabilities
    labels: np.ndarray | None = None  # [n_test] int64
    predictions_note: str = ""  # set when predictions.npz holds float16 probabilities
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> [N, ...] final
    weights_note: str = ""  # why ``weights`` is empty, when it is
    probs_epochs: list[int] = field(default_factory=list)  # epochs saved under probs/

    @property
    def n_members(self) -> int:
        return self.config.ensemble.n_members

    @property
    def coupling(self) -> str:
        """The coupling's label (:func:`colearning.couplings.coupling_label`; left out when it
        is plain ``uniform``) and its strength as the sweep tables give it
        (:func:`colearning.sweep.table.coupling`): ``β=-0.2``, ``β̄=-1 (β=-0.25)``,
        ``ring(k=2), β̄=-1`` (a graph's beta_bar: per-edge couplings differ from beta_bar / N),
        ``communities(beta_in=0.1,beta_out=-0.1,groups=2), mean β=-0.0333`` (the mean
        off-diagonal coupling), ``matrix``."""
        loss, n = self.config.loss, self.config.ensemble.n_members
        label = coupling_label(loss)
        _, beta, beta_bar = coupling(self.config.to_dict(), coupling_matrix(loss, n))
        if beta is None:  # a matrix: the label says it
            strength = ""
        elif loss.beta_bar is not None:
            strength = f"β̄={beta_bar:g}" + (f" (β={beta:.3g})" if loss.coupling == "uniform"
                                           else "")
        elif loss.beta is None and strength_in_options(loss):
            strength = f"mean β={beta:.3g}"
        else:
            strength = f"β={beta:g}"
        return ", ".join(part for part in (label if label != "uniform" else "", strength)
                         if part)

    @property
    def tag(self) -> str:
        """``N=2, β=-0.2``: the run's identity, put into every figure title."""
        return f"N={self.n_members}, {self.coupling}"

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    def series(self, key: str) -> np.ndarray:
        """Per-epoch values of a metrics.jsonl key: ``[T]`` or ``[T, N]`` (NaN when missing)."""
        values = [record.get(key) for record in self.metrics]
        width = next((len(v) for v in values if isinstance(v, list)), None)
        if width is None:
            return np.array([np.nan if v is None else v for v in values], dtype=float)
        return np.array([[np.nan if x is None else x for x in v] if isinstance(v, list)
                         else [np.nan] * width for v in values], dtype=float)

    @property
    def epochs(self) -> np.ndarray:
        return np.array([record["epoch"] for record in self.metrics], dtype=int)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics (empty when no epoch completed)."""
        return self.metrics[-1] if self.metrics else {}


def load_artifacts(path: str | Path) -> RunArtifacts:
    """Read a run directory; RunDirError when it is not one or a file is corrupt."""
    path = rundir.require_run_dir(path)
    config_text = (path / rundir.CONFIG).read_text(errors="replace")
    try:
        config = config_from_dict(read_yaml(path / rundir.CONFIG))
    except ConfigError as error:
        raise RunDirError(f"{path / rundir.CONFIG}: {error}") from None
    run = RunArtifacts(
        path=path,
        config=config,
        config_text=config_text,
        metrics=rundir.read_metrics(path / rundir.METRICS),
        summary=_read_json(path / rundir.SUMMARY) or {"status": "running"},
        meta=_read_json(path / rundir.META) or {},
        analysis=rundir.read_jsonl(path / rundir.ANALYSIS),
    )
    if (path / rundir.PREDICTIONS).exists():
        run.log_probs, run.labels, run.predictions_note = read_predictions(
            path / rundir.PREDICTIONS)
    run.probs_epochs = sorted(
        int(m.group(1)) for p in (path / "probs").glob("epoch_*.npz")
        if (m := re.fullmatch(r"epoch_(\d+)\.npz", p.name))
    )
    run.weights, run.weights_note = _final_weights(path, config, run.log_probs)
    return run


FLOAT16_NOTE = (
    "predictions.npz was written by colearning before 0.2 with float16 probabilities: "
    "probabilities above 0.99976 read as 1 and below 6e-8 as 0, so entropies near 0 are "
    "flattened and NLLs capped at 27.6 nats in the per-sample figures; metrics.jsonl "
    "(computed in training at full precision) is unaffected"
)


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(log_probs [N, n, C] float32, labels [n] or None, note) from a predictions file.

    Runs save float32 log-probabilities (``log_probs``); files of older runs hold float16
    probabilities (``probs``), which load as their logarithms with :data:`FLOAT16_NOTE`.
    """
    try:
        with np.load(path) as saved:
            labels = saved["labels"].astype(np.int64) if "labels" in saved else None
            if "log_probs" in saved:
                return saved["log_probs"].astype(np.float32), labels, ""
            with np.errstate(divide="ignore"):  # a float16 zero is log 0 = -inf
                return np.log(saved["probs"].astype(np.float32)), labels, FLOAT16_NOTE
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise RunDirError(f"{path} is corrupt or not a predictions file ({error}); rerun the "
                          "last epoch or delete it") from None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"{path} is corrupt; it cannot be read for the report") from None


def _final_weights(path: Path, config: Config,
                   log_probs: np.ndarray | None) -> tuple[dict[str, np.ndarray], str]:
    """Conv/linear weights ``{Conv1: [N, ...], ...}`` of the checkpoint, named as in Table S4.

    The checkpoint stores each member parameter stacked over members under its module path
    (``3.weight`` -> key ``3__weight``); a template of the architecture maps paths to the
    paper's layer names.
    """
    if not (path / rundir.CHECKPOINT).exists():
        return {}, "no checkpoint.pt"
    try:
        state = rundir.load_checkpoint(path / rundir.CHECKPOINT)["model"]
        num_classes = log_probs.shape[-1] if log_probs is not None else 10
        with torch.device("meta"):
            template = build_model(config.model.name, num_classes=num_classes,
                                   image_size=_TEMPLATE_IMAGE_SIZE, **config.model.options)
        names = {id(p): name for name, p in template.named_parameters()}
        return {layer: state[names[id(weight)].replace(".", "__")].float().numpy()
                for layer, weight in weight_layers(template)}, ""
    except (ColearningError, KeyError, TypeError) as error:
        return {}, f"checkpoint.pt could not be matched to the model ({error})"
