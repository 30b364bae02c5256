"""Predict with a trained ensemble: images [B, ...] -> member and ensemble probabilities.

    result = colearning.predict("runs/demo", images)       # images uint8 [B, C, H, W]
    result.probs          # [B, C], the members combined by the mean combiner
    result.member_probs   # [N, B, C]
    result.labels()       # [B], the ensemble's predicted classes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colearning.combiners import COMBINERS, combine, ensemble_predict
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.inference.images import check_images, prepare
from colearning.training.run import load_ensemble
from colearning.training.setup import predict as predict_log_probs
from colearning.training.setup import resolve_device

BATCH_SIZE = 1024  # images per forward pass (the default train.eval_batch_size)


@dataclass(frozen=True)
class Prediction:
    """An ensemble's predictions for B images, float32 on the CPU: ``probs`` [B, C] (the
    members combined by ``combiner``), ``member_probs`` [N, B, C] and ``member_log_probs``
    [N, B, C] (log_softmax; what metrics should read, as it keeps the precision of
    near-certain members)."""

    probs: torch.Tensor
    member_probs: torch.Tensor
    member_log_probs: torch.Tensor
    combiner: str

    @classmethod
    def from_log_probs(cls, log_probs: torch.Tensor, combiner: str = "mean") -> Prediction:
        """The prediction of member log-probabilities [N, B, C] combined by ``combiner``."""
        return cls(combine(log_probs, combiner, log=True).exp(), log_probs.exp(), log_probs,
                   combiner)

    def labels(self) -> torch.Tensor:
        """The ensemble's predicted classes [B] (``vote``: ties broken as
        :func:`colearning.ensemble_predict` breaks them)."""
        return ensemble_predict(self.member_log_probs, self.combiner, log=True)


def predict(ensemble_or_run_dir: Ensemble | str | Path, images: Any, combiner: str = "mean",
            *, batch_size: int = BATCH_SIZE, device: str | torch.device | None = None,
            channels_last: bool | None = None) -> Prediction:
    """The probabilities [B, C] of the ensemble and [N, B, C] of its members for ``images``.

    ``ensemble_or_run_dir``: an ensemble from :func:`colearning.load_ensemble` or a run
    directory (its final checkpoint). ``images``: numpy array or torch tensor [B, C, H, W]
    or [B, H, W, C] of the run's channels and size, uint8 0..255 or float in [0, 1]; they
    are normalized as the run's training normalized its own. ``combiner``: a name of
    :data:`colearning.COMBINERS`. ``device``: where the members run (None: where the
    ensemble is, the CPU for a run directory; an ensemble is moved there, as
    ``nn.Module.to`` moves it). ``channels_last``: None detects the layout.

    >>> result = predict("runs/demo", raw.test_x[:5])   # doctest: +SKIP
    >>> result.probs.shape, result.member_probs.shape
    (torch.Size([5, 10]), torch.Size([2, 5, 10]))
    """
    COMBINERS.get(combiner)  # an unknown name fails before any work
    ensemble = ensemble_or_run_dir
    if isinstance(ensemble, (str, Path)):
        ensemble, _ = load_ensemble(ensemble)
    log_probs = member_log_probs(ensemble, images, batch_size=batch_size, device=device,
                                 channels_last=channels_last)
    return Prediction.from_log_probs(log_probs, combiner)


def member_log_probs(ensemble: Ensemble, images: Any, *, batch_size: int = BATCH_SIZE,
                     device: str | torch.device | None = None,
                     channels_last: bool | None = None) -> torch.Tensor:
    """Member log-probabilities [N, B, C] (float32, CPU) of ``ensemble`` on ``images``
    (checked and prepared as :func:`predict` says), one batch of ``batch_size`` at a time
    in eval mode under no_grad."""
    inputs = getattr(ensemble, "inputs", None)
    if not isinstance(ensemble, Ensemble) or not isinstance(inputs, dict):
        raise ConfigError(f"predict needs a run directory or an ensemble from "
                          f"colearning.load_ensemble (it carries .inputs: the run's image "
                          f"shape and normalization), got {type(ensemble).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    x = check_images(images, inputs, channels_last)
    if device is None:
        where = next(ensemble.parameters()).device
    else:
        where = resolve_device(str(device))
        ensemble.to(where)
    if not len(x):
        return torch.empty(ensemble.n_members, 0, inputs["num_classes"])
    # A batch is converted to float on the device just before its forward: a large uint8
    # set never exists as float32 all at once.
    chunks = [predict_log_probs(ensemble, prepare(x[start:start + batch_size], inputs, where),
                                batch_size) for start in range(0, len(x), batch_size)]
    return torch.cat(chunks, dim=1)
