"""The teacher of a distilled run (``distill.teacher``; ``colearn distill``): its checks,
and the soft targets the student trains on.

A distilled run trains on its teacher's training split: it keeps the teacher's seed and data
config (so the split, and the normalization, are the teacher's), and before its first step
the teacher's ensemble predicts every image of that split once. Its soft targets
(:func:`colearning.losses.softened`: softmax(log p_ens / T), p_ens the mean of the members'
probabilities) are kept on the device as the pool's ``soft`` [n_pool, C] (rows outside the
training split are zeros) and gathered by the same batch indices as the labels. A resumed
run computes them again, the same way: ``teacher.json`` in its run directory records the
teacher's config and checkpoint sha256, and a teacher that changed since is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from colearning import rundir
from colearning.config import Config, config_from_dict, read_yaml
from colearning.data import RawDataset
from colearning.data.arrays import fingerprint
from colearning.errors import ConfigError, RunDirError
from colearning.losses import softened
from colearning.training.data import CellData, Pool, from_memory
from colearning.training.growth import file_sha256, split_keys
from colearning.training.setup import build_members, predict_split

TEACHER = "teacher.json"


def teacher_weights(path: Path, epoch: str) -> Path:
    """The teacher's checkpoint file of ``epoch`` (final: checkpoint.pt, best: best.pt)."""
    return path / (rundir.CHECKPOINT if epoch == "final" else rundir.BEST)


def check_teacher(config: Config) -> tuple[Path, Config]:
    """The teacher run directory of a distilled ``config`` and the teacher's config.

    RunDirError when the teacher is not a finished run with the weights distill.epoch names;
    ConfigError when ``config`` does not keep its seed and data split (the student must
    train on the teacher's training split, never on its test images).
    """
    path = rundir.require_run_dir(Path(str(config.distill.teacher)).expanduser())
    teacher = config_from_dict(read_yaml(path / rundir.CONFIG))
    summary = path / rundir.SUMMARY
    status = json.loads(summary.read_text()).get("status") if summary.exists() else "running"
    if status != "finished":
        raise RunDirError(f"teacher run {path} is {status}, not finished; finish it first "
                          f"(colearn train --resume {path})")
    weights = teacher_weights(path, config.distill.epoch)
    if not weights.is_file():
        raise RunDirError(f"teacher run {path} has no {weights.name}" + (
            ": train it with train.keep_best=true to distill its best epoch"
            if config.distill.epoch == "best" else ""))
    differences = [f"seed: {teacher.seed} -> {config.seed}"] if config.seed != teacher.seed \
        else []
    old, new = split_keys(teacher), split_keys(config)
    differences += [f"data.{key}: {old[key]!r} -> {new.get(key)!r}"
                    for key in old if old[key] != new.get(key)]
    if differences:
        raise ConfigError(f"a distilled run keeps its teacher's seed and data split (it trains "
                          f"on the teacher's training split); changed: {'; '.join(differences)}")
    return path, teacher


def teacher_record(config: Config, path: Path, teacher: Config) -> dict[str, Any]:
    """What teacher.json holds: the teacher (path, hashes, size) and the softening."""
    weights = teacher_weights(path, config.distill.epoch)
    return {"teacher": str(path.resolve()), "epoch": config.distill.epoch,
            "teacher_config_sha256": file_sha256(path / rundir.CONFIG),
            "teacher_checkpoint_sha256": file_sha256(weights),
            "teacher_n_members": teacher.ensemble.n_members,
            "teacher_model": teacher.model.name,
            "temperature": config.distill.temperature, "weight": config.distill.weight}


def soft_targets(config: Config, pool: Pool, data: CellData, device: torch.device,
                 run_dir: Path, raw: RawDataset | None = None, write: bool = True
                 ) -> torch.Tensor:
    """The teacher's soft targets [n_pool, C] (float32 on ``device``) of a distilled run on
    its training split ``data.train`` (other rows 0); teacher.json written on a fresh start,
    checked on a resume. ``raw``: the run's data, checked against a teacher trained on data
    given in memory."""
    path, teacher = check_teacher(config)
    record = teacher_record(config, path, teacher)
    _write_or_check(run_dir / TEACHER, record, write)
    if from_memory(teacher) and raw is not None:
        saved = json.loads((path / rundir.DATA).read_text()).get("sha256")
        if fingerprint(raw) != saved:
            raise RunDirError(f"data= is not the data the teacher {path} was trained on; pass "
                              "the same images, labels and classes")
    load = rundir.load_checkpoint if config.distill.epoch == "final" else rundir.load_best
    saved = load(teacher_weights(path, config.distill.epoch))
    members = build_members(teacher, pool, device)
    try:
        members.load_state_dict(saved["model"])
    except (RuntimeError, KeyError) as error:
        raise RunDirError(f"the checkpoint of the teacher {path} does not fit its run's "
                          f"{teacher.ensemble.n_members} {teacher.model.name} members "
                          f"({type(error).__name__}); restore its checkpoint") from None
    members.eval()
    log_probs = predict_split(members, pool, data.train.unsqueeze(0), [data],
                              config.train.eval_batch_size, None)  # [N_t, n_train, C], fp32
    soft = torch.zeros(len(pool.labels), pool.num_classes, device=device)
    soft[data.train] = softened(log_probs, config.distill.temperature).to(device)
    return soft


def _write_or_check(path: Path, record: dict[str, Any], write: bool) -> None:
    """A fresh run records its teacher; a resumed one must still find the same teacher."""
    if not path.exists():
        if write:
            rundir.atomic_write_json(path, record)
        return
    saved = json.loads(path.read_text())
    for key in ("teacher_config_sha256", "teacher_checkpoint_sha256", "temperature"):
        if saved.get(key) != record[key]:
            raise RunDirError(f"the teacher {record['teacher']} changed since {path.parent} "
                              f"was distilled from it ({key} differs); restore it or start a "
                              "new run")
