"""Optimizers over stacked member parameters, each member with its own learning rate and
weight decay, by name (``optim.name``): ``sgd``, ``adam``, ``adamw``.

    optimizer = build_optimizer(config.optim, ensemble.parameters(), lr=[0.01, 0.01, 0.05],
                                weight_decay=5e-4)
    loss.sum().backward()
    optimizer.step(active)        # active: bool [M]; an inactive member is left untouched

Each optimizer here is elementwise, so one over parameters stacked [M, ...] is M per-member
``torch.optim`` optimizers (tested step for step against one per member). Per-member
learning rates and weight decays are what let the cells of a sweep with different
``optim.lr`` train as one pack; the ``active`` mask is how a member whose step was not
finite (or whose cell diverged) gets no update, without the host reading anything back
from the device: its parameters and state (momentum, moments, step count) stay exactly as
they were, as if its own torch optimizer had not been stepped.

An optimizer's state (:meth:`StackedOptimizer.state_dict`) is its name, its options and its
buffers, every tensor member axis first ([M, ...]), so a cell's rows of it are its own state
(:meth:`~StackedOptimizer.member_state`) and the rows of a sharded run gather like the
parameters (:func:`map_tensors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch

from colearning.config import OptimConfig
from colearning.config_checks import check_adam_options
from colearning.errors import ConfigError
from colearning.registry import Registry

# name -> optimizer class; metadata ``options``: the optim.* keys it takes (besides lr and
# weight_decay), given to its constructor by build_optimizer.
OPTIMIZERS: Registry[type[StackedOptimizer]] = Registry("optimizer", key="optim.name")

Buffers = dict[str, list[torch.Tensor] | torch.Tensor]


def register(name: str, *, options: tuple[str, ...],
             state: Callable[[Any], int]) -> Callable[[type], type]:
    """Class decorator: the optimizer ``name`` (recorded in its state) taking ``options``;
    ``state(optim config)``: how many parameter-sized state tensors it keeps per parameter
    (for the memory estimate, :mod:`colearning.training.resources`)."""
    def decorator(cls: type[StackedOptimizer]) -> type[StackedOptimizer]:
        cls.name = name
        return OPTIMIZERS.register(name, options=options, state=state)(cls)

    return decorator


def map_tensors(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``state`` with ``fn`` applied to every tensor in it (through dicts and lists): e.g.
    a cell's rows ``lambda t: t[rows]`` of an optimizer state, every tensor being [M, ...]."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {key: map_tensors(value, fn) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [map_tensors(value, fn) for value in state]
    return state


class StackedOptimizer:
    """What every stacked optimizer shares: the parameters [M, ...], one learning rate and
    weight decay per member, and its state as named per-member buffers.

    Args:
        params: the stacked parameters, each [M, ...] (member axis first).
        lr: one learning rate for all members, or one per member ([M]).
        weight_decay: the same (what it means is the optimizer's).
    """

    name: ClassVar[str] = ""  # its registry name, set by @register

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float],
                 weight_decay: float | Sequence[float] = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ConfigError(f"{type(self).__name__} needs at least one parameter that "
                              "requires grad")
        self.n_members = self.params[0].shape[0]
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
        # float64 copies for the per-member scalars of the update (as torch's Python floats)
        self.lr64 = self._per_member(lr, "lr")
        self.weight_decay64 = self._per_member(weight_decay, "weight_decay")
        self.lr = self.lr64.to(self.dtype)
        self.weight_decay = self.weight_decay64.to(self.dtype)

    def _per_member(self, value: float | Sequence[float], what: str) -> torch.Tensor:
        values = torch.as_tensor(value, dtype=torch.float64).flatten()
        if values.numel() == 1:
            values = values.expand(self.n_members)
        if values.shape != (self.n_members,) or not torch.isfinite(values).all() \
                or (values < 0).any():
            raise ConfigError(f"{what} must be one non-negative number or one per member "
                              f"({self.n_members}), got {value!r}")
        return values.to(self.device)

    def set_lr(self, lr: float | Sequence[float]) -> None:
        """New learning rates (one, or one per member), e.g. from a schedule at each epoch."""
        self.lr64.copy_(self._per_member(lr, "lr"))
        self.lr.copy_(self.lr64)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, active: torch.Tensor | None = None) -> None:
        """One step of every member, or only of the members where ``active`` [M] is True
        (the others keep their parameters and state exactly)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def options(self) -> dict[str, Any]:
        """The optimizer's own settings, recorded beside its buffers (informative)."""
        return {}

    def buffers_by_name(self) -> Buffers:
        """The live state tensors by name: lists of [M, ...] (one per parameter) or one
        [M, ...] tensor."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Name, options and a copy of every buffer ([M, ...])."""
        return self.member_state(slice(None))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_member_state(slice(None), state)

    def member_state(self, rows: slice) -> dict[str, Any]:
        """The state of members ``rows`` (a cell of a pack), for its checkpoint."""
        buffers = map_tensors(self.buffers_by_name(), lambda t: t[rows].clone())
        return {"name": self.name, **self.options(), **buffers}

    def load_member_state(self, rows: slice, state: dict[str, Any]) -> None:
        """Members ``rows`` from ``state`` (one written by :meth:`member_state` for as many
        members); another optimizer's state or other buffers: one-line ConfigError."""
        name = state.get("name", "sgd")  # checkpoint formats 1 and 2 held SGD only
        if name != self.name:
            raise ConfigError(f"the optimizer state is {name}'s; this run's optimizer is "
                              f"{self.name} (optim.name)")
        for key, target in self.buffers_by_name().items():
            value = state.get(key)
            if isinstance(target, torch.Tensor):
                if not isinstance(value, torch.Tensor):
                    raise ConfigError(f"the {self.name} optimizer state has no {key}")
                target[rows].copy_(value)
                continue
            if not isinstance(value, (list, tuple)) or len(value) != len(target):
                count = len(value) if isinstance(value, (list, tuple)) else 0
                raise ConfigError(f"the optimizer state holds {count} {key} buffers, this "
                                  f"ensemble has {len(target)} parameters")
            for one, saved in zip(target, value, strict=True):
                one[rows].copy_(saved)

    def _view(self, values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Per-member ``values`` [M] shaped to broadcast over ``p`` [M, ...]."""
        return values.view((-1,) + (1,) * (p.dim() - 1))


@register("sgd", options=("momentum",), state=lambda optim: 1 if optim.momentum else 0)
class StackedSGD(StackedOptimizer):
    """SGD with momentum (dampening 0, no Nesterov, as the paper) on parameters [M, ...]:
    torch.optim.SGD per member; ``weight_decay`` is an L2 coefficient added to the gradient.

    Args:
        momentum: shared by all members (``optim.momentum``).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float],
                 weight_decay: float | Sequence[float] = 0.0, momentum: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)
        if momentum < 0:
            raise ConfigError(f"momentum must be >= 0, got {momentum}")
        self.momentum = float(momentum)
        # Zero buffers: momentum * 0 + d is exactly d, torch.optim.SGD's first-step buffer.
        self.buffers = [torch.zeros_like(p) for p in self.params] if momentum else []

    def options(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def buffers_by_name(self) -> Buffers:
        return {"buffers": self.buffers}

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            direction = torch.addcmul(p.grad, self._view(self.weight_decay, p), p)
            if self.momentum:
                buffer = self.buffers[k] * self.momentum + direction
                direction = buffer
            updated = torch.addcmul(p, self._view(self.lr, p), direction, value=-1.0)
            if active is not None:
                mask = self._view(active, p)
                updated = torch.where(mask, updated, p)
                if self.momentum:
                    buffer = torch.where(mask, buffer, self.buffers[k])
            p.copy_(updated)
            if self.momentum:
                self.buffers[k] = buffer


@register("adam", options=("betas", "eps"), state=lambda optim: 2)
class StackedAdam(StackedOptimizer):
    """Adam (no amsgrad) on parameters [M, ...]: torch.optim.Adam per member, with
    ``weight_decay`` an L2 coefficient added to the gradient.

    Each member counts its own steps (one count per member and parameter, [M, P], like the
    ``step`` torch keeps per parameter): a member masked inactive, or a parameter without a
    gradient, does not advance its count, as its own torch optimizer would not have been
    stepped, so its bias corrections go on from where they were. The counts stay on the
    device (no host read in a step).

    Args:
        betas: (beta1, beta2), shared by all members (``optim.betas``).
        eps: the term added to the denominator (``optim.eps``).
    """

    decoupled: ClassVar[bool] = False  # AdamW: the weight decay scales the parameters

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float],
                 weight_decay: float | Sequence[float] = 0.0,
                 betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, lr, weight_decay)
        check_adam_options(betas, eps)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(self.n_members, len(self.params), dtype=torch.float64,
                                 device=self.device)

    def options(self) -> dict[str, Any]:
        return {"betas": list(self.betas), "eps": self.eps}

    def buffers_by_name(self) -> Buffers:
        return {"step": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        with_grad = [p.grad is not None for p in self.params]
        if not any(with_grad):
            return
        increment = torch.ones(self.n_members, 1, dtype=torch.float64, device=self.device) \
            if active is None else active.view(-1, 1).to(torch.float64)
        if not all(with_grad):  # rare (an unused parameter): only the others count a step
            increment = increment * torch.tensor(with_grad, dtype=torch.float64,
                                                 device=self.device)
        steps = self.steps + increment  # [M, P]
        beta1, beta2 = self.betas
        # per member and parameter, in float64 as torch's Python floats: the bias
        # corrections at each one's own step count
        step_size = (self.lr64.view(-1, 1) / (1 - beta1 ** steps)).to(self.dtype)
        correction2 = (1 - beta2 ** steps).sqrt().to(self.dtype)
        shrink = (1 - self.lr64 * self.weight_decay64).to(self.dtype)  # AdamW's decay
        for k, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad, start = p.grad, p
            if self.decoupled:
                start = p * self._view(shrink, p)
            else:
                grad = torch.addcmul(grad, self._view(self.weight_decay, p), p)
            exp_avg = torch.lerp(self.exp_avg[k], grad, 1 - beta1)
            exp_avg_sq = torch.addcmul(self.exp_avg_sq[k] * beta2, grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / self._view(correction2[:, k], p)).add_(self.eps)
            updated = torch.addcmul(start, self._view(step_size[:, k], p), exp_avg / denom,
                                    value=-1.0)
            if active is not None:
                mask = self._view(active, p)
                updated = torch.where(mask, updated, p)
                exp_avg = torch.where(mask, exp_avg, self.exp_avg[k])
                exp_avg_sq = torch.where(mask, exp_avg_sq, self.exp_avg_sq[k])
            p.copy_(updated)
            self.exp_avg[k], self.exp_avg_sq[k] = exp_avg, exp_avg_sq
        self.steps = steps


@register("adamw", options=("betas", "eps"), state=lambda optim: 2)
class StackedAdamW(StackedAdam):
    """AdamW on parameters [M, ...]: torch.optim.AdamW per member, Adam with decoupled
    weight decay (each step scales a member's parameters by 1 - lr * weight_decay first)."""

    decoupled = True


def build_optimizer(optim: OptimConfig, params: Iterable[torch.Tensor],
                    lr: float | Sequence[float],
                    weight_decay: float | Sequence[float]) -> StackedOptimizer:
    """The stacked optimizer ``optim.name`` over ``params`` [M, ...] with one learning rate
    and weight decay (or one per member), and the optim options its registry entry takes."""
    name = optim.name
    options = {key: getattr(optim, key) for key in OPTIMIZERS.meta(name)["options"]}
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, **options)
