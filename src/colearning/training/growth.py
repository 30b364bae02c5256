"""The member plan of a grown run (paper Sec. 3.4, Supp. "Expanding ensembles").

A run whose config has ``expand.source`` grows that finished run by M new members
(``colearning.expand.expand`` writes such configs); here is what the training loop receives
for it: which members train, which are frozen coupling peers, and on which samples.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import rundir
from colearning.config import Config, config_from_dict, read_yaml
from colearning.couplings import coupling_matrix
from colearning.errors import ConfigError, RunDirError
from colearning.training.data import CellData, Pool, gather
from colearning.training.plan import MemberPlan
from colearning.training.setup import build_members, predict

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
def check_grown(configs: list[Config], processes: int = 1) -> None:
    """Every rule a grown run (``expand.source``) must obey beyond its config's own
    (:func:`colearning.config.validate`), in one place: it trains alone (not in a pack) and
    in one process, with a constant coupling (no beta schedule, no adaptive coupling), from
    a finished source it fits (:func:`check_source`). One-line errors."""
    grown = [config for config in configs if config.expand.source is not None]
    if not grown:
        return
    if len(configs) > 1:
        raise ConfigError("a grown run (expand.source) trains alone, not in a pack")
    if processes > 1:
        raise ConfigError("a grown ensemble (expand.source) trains in one process")
    config = grown[0]
    if config.loss.beta_schedule != "constant" or config.loss.target_js is not None:
        raise ConfigError("growing an ensemble couples with a constant beta; unset "
                          "loss.beta_schedule and loss.target_js")
    check_source(config)


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
    if status == "diverged":
        raise RunDirError(f"source run {path} diverged; resuming it would diverge again. Grow "
                          "a finished run instead, or train the source again with a weaker "
                          "coupling, a lower optim.lr or optim.grad_clip")
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
    old_data, new_data = split_keys(source), split_keys(config)
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


def split_keys(config: Config) -> dict[str, Any]:
    """A config's data keys that decide which images are where (a path resolved)."""
    data = {k: v for k, v in config.to_dict()["data"].items() if k not in FREE_DATA_KEYS}
    if data["path"]:
        data["path"] = str(Path(data["path"]).expanduser().resolve())
    return data


def file_sha256(path: Path) -> str:
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
        "source_config_sha256": file_sha256(source_path / rundir.CONFIG),
        "source_checkpoint_sha256": file_sha256(source_path / rundir.CHECKPOINT),
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


def growth_plan(config: Config, pool: Pool, cell: CellData, device: torch.device,
                run_dir: Path) -> MemberPlan:
    """Build the grown run's members from the source run and write (or check) lineage.json.

    The new members are seeded as members N..N+M-1 of the run
    (``derive_seed(seed, "member", N + i)``).
    """
    source_path, source = check_source(config)
    lineage = lineage_record(config, source_path, source)
    n_old, add, mode = source.ensemble.n_members, config.expand.add, config.expand.mode
    old_state = rundir.load_checkpoint(source_path / rundir.CHECKPOINT)["model"]
    # [N+M, N+M], old members first, from the couplings registry (any topology)
    beta = coupling_matrix(config.loss, n_old + add).to(device=device, dtype=torch.float32)
    try:
        if mode == "add-retrain":
            trained = build_members(config, pool, device)
            fresh = trained.state_dict()
            trained.load_state_dict({k: torch.cat([old_state[k].to(v), v[n_old:]])
                                     for k, v in fresh.items()})
            _write_or_check_lineage(run_dir / LINEAGE, lineage)
            return MemberPlan(trained, beta)
        frozen = build_members(config, pool, device, n_members=n_old)
        frozen.load_state_dict(old_state)
    except (RuntimeError, KeyError) as error:
        raise RunDirError(f"the checkpoint of {source_path} does not fit its run's "
                          f"{n_old} {config.model.name} members ({type(error).__name__}); "
                          "restore the source run's checkpoint.pt") from None
    trained = build_members(config, pool, device, n_members=add, first_index=n_old)
    # coupled_loss orders peers as (trained, frozen): rows and columns of the new members first
    order = torch.cat([torch.arange(n_old, n_old + add), torch.arange(n_old)]).to(device)
    beta = beta[n_old:][:, order]  # [M, M+N]
    coupled = bool(beta[:, add:].any())
    if not coupled:
        beta = beta[:, :add]  # uncoupled from the old members: skip their forward pass
    subset = None
    if mode == "boost":
        images = gather(pool, cell.train.unsqueeze(0), [cell])[0]
        votes = predict(frozen, images, config.train.eval_batch_size).argmax(-1)
        votes = (votes == pool.labels[cell.train].cpu()).sum(0)  # [n_train] correct old members
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
    return MemberPlan(trained, beta, frozen=frozen, subset=subset, coupled=coupled)


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
