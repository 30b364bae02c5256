"""Optional copies of a run's metrics elsewhere (``train.log_to``: TensorBoard); the run
directory's own files stay the source of truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from colearning.config import Config
from colearning.errors import ConfigError


class MetricLog:
    """Optional copies of each metrics.jsonl record elsewhere (``train.log_to``): scalars
    as they are, per-member lists as ``key/member_i``. TensorBoard files go to
    ``RUN_DIR/tensorboard``; the run directory's own files stay the source of truth."""

    def __init__(self, config: Config | None, path: Path) -> None:
        self.writer = None  # (config None: a process that does not write)
        if config is not None and config.train.log_to == "tensorboard":
            self.writer = tensorboard_writer(path / "tensorboard")

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["epoch"]
        for key, value in record.items():
            if isinstance(value, bool) or key == "epoch":
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
            elif isinstance(value, list) and all(isinstance(v, (int, float)) and
                                                 not isinstance(v, bool) for v in value):
                for member, item in enumerate(value):
                    self.writer.add_scalar(f"{key}/member_{member}", item, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def tensorboard_writer(folder: Path | None = None) -> Any:
    """A TensorBoard SummaryWriter writing to ``folder`` (None: only check that TensorBoard
    is installed), or a one-line ConfigError saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.log_to=tensorboard needs TensorBoard: pip install "
                          "'colearning[tensorboard]' (or drop train.log_to)") from None
    return None if folder is None else SummaryWriter(log_dir=str(folder))
