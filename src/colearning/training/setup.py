"""The pieces a run is set up from: device, members, schedule, and evaluation helpers.

Pure helpers of the training loop (no run directory, no state): the loop, sweeps, growth
and ``colearn bench`` build on these same functions.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from colearning.config import Config
from colearning.engine import Ensemble
from colearning.errors import ConfigError
from colearning.metrics.structure import activation_stats, weight_stats
from colearning.models import build_model, model_meta
from colearning.schedules import warmed_up
from colearning.training.data import CellData, Pool, gather


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; a cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:K") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the members' forward (and so their backward) under ``precision``
    bf16 (``train.precision`` once ``auto`` is resolved); nothing under fp32. The loss,
    softmax/KL, metrics and the optimizer always run in fp32: they sit outside this context."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def device_settings(config: Config, device: torch.device) -> Iterator[None]:
    """cuDNN autotuning (and TF32 under ``train.tf32``) for the run on a CUDA device; the
    process's previous settings are back afterwards."""
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    saved = (backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32,
             backends.cudnn.allow_tf32)
    backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution once
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = config.train.tf32
    try:
        yield
    finally:
        (backends.cudnn.benchmark, backends.cuda.matmul.allow_tf32,
         backends.cudnn.allow_tf32) = saved


class Compiled:
    """``fn`` under torch.compile (``mode``), falling back to plain ``fn`` with a one-line
    warning when compiling or running the compiled code fails (no compiler, an unsupported
    op): a run never fails for a speed option."""

    def __init__(self, fn: Callable[..., Any], mode: str, what: str) -> None:
        self.fn, self.what = fn, what
        self.failed = False
        try:
            self.compiled = torch.compile(fn, mode=None if mode == "default" else mode)
        except Exception as error:  # torch.compile itself refused (e.g. no dynamo here)
            self._fall_back(error)

    def _fall_back(self, error: BaseException) -> None:
        self.failed = True
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        print(f"colearn: warning: train.compile could not compile {self.what} "
              f"({type(error).__name__}: {first}); running it without compiling",
              file=sys.stderr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # compilation happens at the first call
                self._fall_back(error)
        return self.fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # behave like the wrapped module
        return getattr(self.fn, name)


def compiled(fn: Callable[..., Any], mode: str, what: str) -> Callable[..., Any]:
    """``fn`` itself for ``mode="off"``, else a :class:`Compiled` wrapper."""
    return fn if mode == "off" else Compiled(fn, mode, what)


def learning_rate(config: Config, epoch: int) -> float:
    """The learning rate of 0-based ``epoch``: optim.lr times the optim.schedule's factor
    behind the optim.warmup_epochs warm-up (:func:`colearning.schedules.warmed_up`); the one
    place the trainer computes it."""
    optim = config.optim
    return optim.lr * warmed_up(optim.warmup_epochs, optim.schedule, optim.schedule_options,
                                epoch, config.train.epochs)


def use_augmentation(config: Config) -> bool:
    """Crop+flip as the model's paper recipe says (its registry metadata: on for VGG-9, off
    for LeNet-5), unless data.augment says."""
    if config.data.augment is not None:
        return config.data.augment
    return bool(model_meta(config.model.name).get("augment", False))


def build_members(config: Config, pool: Pool, device: torch.device, *,
                  n_members: int | None = None, first_index: int = 0) -> Ensemble:
    """The run's members (or ``n_members`` of them numbered from ``first_index``) on ``device``.

    Member i is initialized from (seed, i) alone, so a cell's members are the same whether
    it trains alone or in a pack.
    """

    def factory() -> nn.Module:
        return build_model(config.model.name, num_classes=pool.num_classes,
                           in_channels=pool.in_channels, image_size=pool.image_size,
                           **config.model.options)

    ens = Ensemble(factory, n_members or config.ensemble.n_members, config.ensemble.strategy,
                   seed=config.seed, first_index=first_index)
    return ens.to(device)


@torch.no_grad()
def _log_probs(members: nn.Module, batches: Iterable[tuple[Any, ...]],
               precision: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """Member log-probabilities [N, n, C] (float32 log_softmax) on the CPU of ``members``
    applied to each batch of arguments in turn (eval mode, restored afterwards); one copy to
    the host. The one prediction path: :func:`predict` and :func:`predict_split`."""
    was_training = members.training
    members.eval()
    chunks = []
    for arguments in batches:
        with precision or contextlib.nullcontext():
            logits = members(*arguments)
        chunks.append(torch.log_softmax(logits.float(), -1))
    members.train(was_training)
    return torch.cat(chunks, dim=1).cpu()


def predict(ens: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Member log-probabilities [N, n, C] (float32 log_softmax) on the CPU for images x [n, ...].

    Log-probabilities, not probabilities: near-certain predictions (p within 1e-7 of 1, or
    below 1e-38) keep their entropy and NLL, which rounded probabilities would lose.
    """
    return _log_probs(ens, ((x[i:i + batch_size],) for i in range(0, len(x), batch_size)))


def predict_split(members: nn.Module, pool: Pool, index: torch.Tensor, cells: list[CellData],
                  batch_size: int, member_inputs: torch.Tensor | None,
                  precision: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """Log-probabilities [M, n, C] on the CPU of every member on its cell's images: pooled
    ``index`` [K, n] (row k: cell k's split), ``member_inputs`` [M] naming each member's cell
    (None for one cell). Batched over cells on the device.
    ``precision``: the members' autocast context (:func:`autocast`), if any."""
    def batches() -> Iterator[tuple[Any, ...]]:
        for start in range(0, index.shape[1], batch_size):
            images = gather(pool, index[:, start:start + batch_size], cells)
            yield (images[0],) if member_inputs is None else (images, member_inputs)

    return _log_probs(members, batches(), precision)


def structure_record(members: list[nn.Module], x: torch.Tensor, epoch: int) -> dict[str, Any]:
    """Activation and weight statistics of each member module on images x (analysis.jsonl)."""
    return {"epoch": epoch, "members": [{"activation": activation_stats(m, x),
                                         "weight_std": weight_stats(m)} for m in members]}


def clip_member_gradients(params: list[torch.Tensor], max_norm: float) -> None:
    """Scale each member's gradient to norm <= max_norm (norms are per member, not global)."""
    grads = [p.grad for p in params if p.grad is not None]
    squared = sum(g.float().pow(2).flatten(1).sum(1) for g in grads)  # [M]
    scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))
