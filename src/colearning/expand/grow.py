"""Growing a trained run by M new members (paper Sec. 3.4, Supp. "Expanding ensembles").

    run = expand("runs/base10", add=5, mode="add-freeze", overrides=["loss.beta=0"])
    run.config.ensemble.n_members        # 15: the 10 old members first, then the 5 new ones

Modes (``expand.mode``):

- ``add-freeze``: only the M new members are trained. The N old ones are fixed (eval mode,
  never in the optimizer, bit-identical weights); with loss.beta != 0 their predictions enter
  the new members' coupling term as peers (``coupled_loss(..., frozen=...)``).
- ``add-retrain``: old and new members are trained together, coupled, for train.epochs more
  epochs; the old members start from the source's final weights.
- ``boost``: as add-freeze, on the border subset of the training set only: the samples on
  which between k-m and k+m of the old members vote correctly (k = N/2, m = expand.margin;
  see :func:`border_range`). New members are independent (loss.beta=0) unless told otherwise.

A grown run is an ordinary run directory: its config.yaml carries the ``expand`` section
(source run, mode, M, margin) and ``ensemble.n_members = N + M``; metrics, predictions and
the checkpoint cover all N + M members, old first; ``lineage.json`` records the source's
config and checkpoint hashes and commit. Per-member training losses are null for frozen
members. The same seed and data config as the source are required, so the train/test
split is the source's (the old members never saw the test images).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colearning import rundir
from colearning.config import Config, config_from_dict, merge, parse_overrides, read_yaml
from colearning.engine import Ensemble
from colearning.errors import ConfigError, RunDirError
from colearning.losses import beta_matrix

if TYPE_CHECKING:
    from colearning.training import Run

LINEAGE = "lineage.json"
# Data keys that may differ from the source: they do not change which images are where.
FREE_DATA_KEYS = ("cache_dir", "augment")


# ------------------------------------------------------------------------- border subset
def border_range(n_old: int, margin: int = 0) -> tuple[int, int]:
    """Correct-vote counts (low, high), inclusive, of the border: k-m..k+m of n_old, k = n_old/2.

    For odd n_old there is no exact tie; k is rounded down at the low end and up at the high
    end, so margin 0 keeps the samples one vote away from a tie.

    >>> border_range(10, 0), border_range(10, 2), border_range(5, 0), border_range(4, 9)
    ((5, 5), (3, 7), (2, 3), (0, 4))
    """
    if n_old < 1:
        raise ConfigError(f"the old ensemble needs >= 1 member, got {n_old}")
    if margin < 0:
        raise ConfigError(f"expand.margin must be >= 0, got {margin}")
    return max(0, n_old // 2 - margin), min(n_old, (n_old + 1) // 2 + margin)


def border_indices(votes_correct: np.ndarray | torch.Tensor, n_old: int,
                   margin: int = 0) -> np.ndarray:
    """Indices (sorted, int64) of the samples whose correct-vote count [n] is on the border.

    ``votes_correct[s]`` is how many of the ``n_old`` old members classify sample s correctly.

    >>> border_indices(np.array([0, 1, 2, 3, 4, 2]), 4).tolist()
    [2, 5]
    """
    votes = np.asarray(votes_correct)
    if votes.ndim != 1:
        raise ConfigError(f"votes_correct must be one count per sample [n], got {votes.shape}")
    if votes.size and (votes.min() < 0 or votes.max() > n_old):
        raise ConfigError(f"correct-vote counts must lie in 0..{n_old}, got "
                          f"{votes.min()}..{votes.max()}")
    low, high = border_range(n_old, margin)
    return np.flatnonzero((votes >= low) & (votes <= high)).astype(np.int64)


# ------------------------------------------------------------------------- the source run
def check_source(config: Config) -> tuple[Path, Config]:
    """The source run directory of a grown ``config`` and the source's config.

    Raises RunDirError when the source is not a finished run with a checkpoint, and
    ConfigError when ``config`` does not fit it (N + M, seed, data split, model).
    """
    expand = config.expand
    path = rundir.require_run_dir(Path(str(expand.source)).expanduser())
    source = config_from_dict(read_yaml(path / rundir.CONFIG))
    summary = path / rundir.SUMMARY
    status = json.loads(summary.read_text()).get("status") if summary.exists() else "running"
    if status != "finished" or not (path / rundir.CHECKPOINT).is_file():
        raise RunDirError(f"source run {path} is {status}, not finished; finish it first "
                          f"(colearn train --resume {path})")
    n_old = source.ensemble.n_members
    if config.ensemble.n_members != n_old + expand.add:
        raise ConfigError(
            f"ensemble.n_members={config.ensemble.n_members} contradicts the source's {n_old} "
            f"members + expand.add={expand.add}; leave it out, it is derived ({n_old + expand.add})"
        )
    differences = [f"seed: {source.seed} -> {config.seed}"] if config.seed != source.seed else []
    old_data, new_data = _split_keys(source), _split_keys(config)
    differences += [f"data.{key}: {old_data[key]!r} -> {new_data[key]!r}"
                    for key in old_data if old_data[key] != new_data[key]]
    if config.model != source.model:
        differences.append(f"model: {source.model} -> {config.model}")
    if differences:
        raise ConfigError(
            f"a grown run must keep the source's seed, data split and model (the old members "
            f"were trained on that split); changed: {'; '.join(differences)}"
        )
    return path, source


def _split_keys(config: Config) -> dict[str, Any]:
    data = {k: v for k, v in config.to_dict()["data"].items() if k not in FREE_DATA_KEYS}
    if data["path"]:
        data["path"] = str(Path(data["path"]).expanduser().resolve())
    return data


def grown_config(source: str | Path, add: int, mode: str, overrides: list[str] | None = None,
                 margin: int = 0) -> Config:
    """The config of ``source`` grown by ``add`` members in ``mode``, then ``key=value`` overrides.

    ``ensemble.n_members`` is derived (N + add); an override that states another value is an
    error. A loss.beta override clears the source's loss.beta_bar and vice versa. For boost the
    new members are independent (loss.beta=0) unless the overrides set the coupling.
    """
    path = rundir.require_run_dir(source)
    saved = read_yaml(path / rundir.CONFIG)
    n_old = config_from_dict(saved).ensemble.n_members
    user = parse_overrides(overrides or [])
    if "expand" in user:
        raise ConfigError("set the expansion with --add/--mode/--margin, not expand.* overrides")
    stated = (user.get("ensemble") or {}).get("n_members")
    if stated is not None and stated != n_old + add:
        raise ConfigError(f"ensemble.n_members={stated} contradicts the source's {n_old} members "
                          f"+ --add {add}; leave it out, it is derived ({n_old + add})")
    loss = user.get("loss") or {}
    values = merge(saved, user)
    if "beta" in loss and "beta_bar" not in loss:
        values = merge(values, {"loss": {"beta_bar": None}})
    if "beta_bar" in loss and "beta" not in loss:
        values = merge(values, {"loss": {"beta": None}})
    if mode == "boost" and not {"beta", "beta_bar"} & set(loss):
        values = merge(values, {"loss": {"beta": 0.0, "beta_bar": None}})
    return config_from_dict(merge(values, {
        "ensemble": {"n_members": n_old + add},
        "expand": {"source": str(path.resolve()), "mode": mode, "add": add, "margin": margin},
    }))


def default_run_dir(source: str | Path, mode: str, add: int) -> Path:
    """``<source>-<mode>-add<M>`` next to the source (``-2``, ``-3`` ... when taken)."""
    source = Path(source)
    base = source.parent / f"{source.name}-{mode}-add{add}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def expand(source: str | Path, add: int, mode: str, overrides: list[str] | None = None, *,
           margin: int = 0, run_dir: str | Path | None = None) -> Run:
    """Grow the finished run ``source`` by ``add`` members into a new run directory.

    Returns the :class:`colearning.training.Run` of the grown run (default directory:
    :func:`default_run_dir`). Resume it like any run: ``colearn train --resume DIR``.
    """
    from colearning.training import train

    config = grown_config(source, add, mode, overrides, margin)
    return train(config, run_dir if run_dir is not None else default_run_dir(source, mode, add))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage_record(config: Config, source_path: Path, source: Config) -> dict[str, Any]:
    """What lineage.json holds: the source run (path, hashes, commit) and how it grew."""
    n_old, expand = source.ensemble.n_members, config.expand
    meta_path = source_path / rundir.META
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    parent = source_path / LINEAGE
    return {
        "source": str(source_path.resolve()),
        "source_config_sha256": _sha256(source_path / rundir.CONFIG),
        "source_checkpoint_sha256": _sha256(source_path / rundir.CHECKPOINT),
        "source_git_commit": meta.get("git_commit"),
        "source_n_members": n_old,
        "mode": expand.mode,
        "add": expand.add,
        "margin": expand.margin,
        "n_members": config.ensemble.n_members,
        "trained_members": list(range(0 if expand.mode == "add-retrain" else n_old,
                                      config.ensemble.n_members)),
        "source_lineage": json.loads(parent.read_text()) if parent.exists() else None,
    }


# ------------------------------------------------------------------------- in the training loop
class GrownEnsemble(nn.Module):
    """All members of an add-freeze/boost run, old first: forward [B, ...] -> [N+M, B, C].

    Used for evaluation, analysis and checkpoints; training sees only ``trained``. The old
    members (``frozen``) stay in eval mode and out of every optimizer. ``state_dict`` is the
    stacked state of an N+M-member :class:`Ensemble` (rows 0..N-1 the old members), so a
    grown checkpoint loads into ``build_ensemble(config)`` like any run's.
    """

    def __init__(self, frozen: Ensemble, trained: Ensemble) -> None:
        super().__init__()
        self.frozen = frozen.eval().requires_grad_(False)
        self.trained = trained

    @property
    def n_members(self) -> int:
        return self.frozen.n_members + self.trained.n_members

    def train(self, mode: bool = True) -> GrownEnsemble:
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            old = self.frozen(x)
        return torch.cat([old, self.trained(x)])

    def member(self, index: int) -> nn.Module:
        n_old = self.frozen.n_members
        return self.frozen.member(index) if index < n_old else self.trained.member(index - n_old)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        old, new = self.frozen.state_dict(), self.trained.state_dict()
        return {key: torch.cat([old[key], new[key]]) for key in new}

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        n_old = self.frozen.n_members
        self.frozen.load_state_dict({k: v[:n_old] for k, v in state.items()}, strict=strict)
        return self.trained.load_state_dict({k: v[n_old:] for k, v in state.items()},
                                            strict=strict)


@dataclass
class Growth:
    """What a grown run changes in the training loop (see :func:`prepare_growth`)."""

    trained: Ensemble  # in the optimizer: M new members, or all N+M for add-retrain
    members: nn.Module  # every member, old first: evaluation, analysis, checkpoints
    beta: torch.Tensor  # coupling of the trained members: [T, T], or [T, T+N] with frozen peers
    subset: torch.Tensor | None = None  # boost: training-set indices of the border samples
    coupled: Ensemble | None = None  # frozen members that enter the coupling term

    def peers(self, images: torch.Tensor) -> torch.Tensor | None:
        """Log-probabilities [N, B, C] of the coupled frozen members on ``images``, or None."""
        if self.coupled is None:
            return None
        with torch.no_grad():
            return F.log_softmax(self.coupled(images).float(), dim=-1)


def prepare_growth(config: Config, data: Any, device: torch.device, run_dir: Path) -> Growth:
    """Build the grown run's members from the source run and write (or check) lineage.json.

    ``data`` is the run's :class:`colearning.training.TensorData`. The new members are seeded as
    members N..N+M-1 of the run (``derive_seed(seed, "member", N + i)``).
    """
    from colearning.training import build_ensemble, predict

    source_path, source = check_source(config)
    lineage = lineage_record(config, source_path, source)
    n_old, add, mode = source.ensemble.n_members, config.expand.add, config.expand.mode
    old_state = rundir.load_checkpoint(source_path / rundir.CHECKPOINT)["model"]
    beta = beta_matrix(config.loss.beta, n_old + add, beta_bar=config.loss.beta_bar,
                       device=device)  # [N+M, N+M], old members first
    if mode == "add-retrain":
        trained = build_ensemble(config, data, device)
        fresh = trained.state_dict()
        trained.load_state_dict({k: torch.cat([old_state[k].to(v), v[n_old:]])
                                 for k, v in fresh.items()})
        _write_or_check_lineage(run_dir / LINEAGE, lineage)
        return Growth(trained, trained, beta)

    frozen = build_ensemble(config, data, device, n_members=n_old)
    frozen.load_state_dict(old_state)
    trained = build_ensemble(config, data, device, n_members=add, first_index=n_old)
    # coupled_loss orders peers as (trained, frozen): rows and columns of the new members first
    order = torch.cat([torch.arange(n_old, n_old + add), torch.arange(n_old)]).to(device)
    beta = beta[n_old:][:, order]  # [M, M+N]
    coupled = frozen if beta[:, add:].any() else None
    if coupled is None:
        beta = beta[:, :add]  # uncoupled from the old members: skip their forward pass
    subset = None
    if mode == "boost":
        votes = predict(frozen, data.train_x, config.train.eval_batch_size).argmax(-1)
        votes = (votes == data.train_y.cpu()).sum(0)  # [n_train] correct old members
        indices = border_indices(votes, n_old, config.expand.margin)
        if len(indices) == 0:
            low, high = border_range(n_old, config.expand.margin)
            raise ConfigError(f"boost: no training sample has {low}..{high} correct votes of the "
                              f"{n_old} old members; raise expand.margin")
        subset = torch.from_numpy(indices).to(device)
        lineage["border"] = {"votes_range": border_range(n_old, config.expand.margin),
                             "samples": len(indices), "train_samples": len(votes),
                             "vote_histogram": np.bincount(votes.numpy(),
                                                           minlength=n_old + 1).tolist()}
    _write_or_check_lineage(run_dir / LINEAGE, lineage)
    return Growth(trained, GrownEnsemble(frozen, trained), beta, subset, coupled)


def _write_or_check_lineage(path: Path, record: dict[str, Any]) -> None:
    """A fresh run records its lineage; a resumed one must still find the same source."""
    if not path.exists():
        rundir.atomic_write_json(path, record)
        return
    saved = json.loads(path.read_text())
    for key in ("source_config_sha256", "source_checkpoint_sha256"):
        if saved.get(key) != record[key]:
            raise RunDirError(f"the source run {record['source']} changed since {path.parent} "
                              f"grew from it ({key} differs); restore it or start a new run")
