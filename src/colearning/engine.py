"""N members of one architecture as one module: ``Ensemble(factory, n_members)``.

Parameters are stored stacked, one tensor [N, *shape] per parameter of the member
architecture, so the optimizer updates all members in one elementwise step and every
strategy below reads the same storage:

- ``loop``: member i runs the architecture on views p[i] (torch.func.functional_call),
  one after another. Works for any architecture; on CPUs it is the fastest.
- ``grouped``: the N members run as one wide network. The first layer sees the same input
  for every member and runs as one wide convolution/matmul; later convolutions become
  grouped convolutions (groups = N), linear layers batched matmuls, BatchNorm one
  BatchNorm over N*C channels. Needs a chain of standard layers (nn.Sequential of Conv2d,
  Linear, BatchNorm1d/2d, ReLU, pooling, Flatten, Dropout/Identity).
- ``vmap``: torch.func.vmap over the member axis of the stacked parameters. Works for any
  architecture without data-dependent control flow.
- ``auto``: ``loop`` on CPU; ``grouped`` on accelerators when the architecture allows it,
  else ``vmap``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from colearning.errors import ConfigError
from colearning.seeding import derive_seed

STRATEGIES = ("auto", "loop", "grouped", "vmap")

# Layers that act elementwise or per channel identically on [B, N*C, H, W] and [B, C, H, W].
_CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout, nn.Dropout2d)


class Ensemble(nn.Module):
    """N independently initialized copies of one architecture; forward [B, ...] -> [N, B, C].

    Args:
        factory: zero-argument callable returning one member, e.g.
            ``lambda: colearning.build_model("lenet5")``. It is called N times, so members
            start from independent initializations.
        n_members: N >= 1.
        strategy: one of ``auto``, ``loop``, ``grouped``, ``vmap`` (see the module docstring).
        seed: when given, member i is built under its own seed derived from (seed, i), so a
            member's initialization does not depend on N or on the other members.

    >>> ens = Ensemble(lambda: nn.Linear(4, 3), n_members=5)
    >>> ens(torch.zeros(8, 4)).shape
    torch.Size([5, 8, 3])
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        n_members: int,
        strategy: str = "auto",
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(n_members, int) or n_members < 1:
            raise ConfigError(f"n_members must be an integer >= 1, got {n_members!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        members = [self._build(factory, seed, i) for i in range(n_members)]
        self.n_members = n_members
        self.strategy = strategy
        # The template holds the architecture only; its own tensors are never used, so it
        # lives on the meta device and is kept out of the module tree (a list hides it).
        self._template = [copy.deepcopy(members[0]).to("meta")]
        self._param_names = [name for name, _ in members[0].named_parameters()]
        self._buffer_names = [name for name, _ in members[0].named_buffers()]
        self._keys: dict[str, str] = {}
        for name in self._param_names + self._buffer_names:
            key = name.replace(".", "__")
            if key in self._keys.values():
                raise ConfigError(f"member parameter name {name!r} collides after flattening")
            self._keys[name] = key
        for name in self._param_names:
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in members])
            self.register_parameter(self._keys[name], nn.Parameter(stacked.clone()))
        for name in self._buffer_names:
            stacked = torch.stack([dict(m.named_buffers())[name].detach() for m in members])
            self.register_buffer(self._keys[name], stacked.clone())
        self._chain = _grouped_chain(members[0])

    @staticmethod
    def _build(factory: Callable[[], nn.Module], seed: int | None, index: int) -> nn.Module:
        if seed is None:
            module = factory()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "member", index))
                module = factory()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"the member factory must return an nn.Module, got {type(module)}")
        return module

    # ----------------------------------------------------------------- state access
    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def stacked_parameters(self) -> dict[str, torch.Tensor]:
        """Member parameter name -> stacked tensor [N, *shape] (the trainable storage)."""
        return {name: getattr(self, self._keys[name]) for name in self._param_names}

    def stacked_buffers(self) -> dict[str, torch.Tensor]:
        """Member buffer name -> stacked tensor [N, *shape] (BatchNorm statistics)."""
        return {name: getattr(self, self._keys[name]) for name in self._buffer_names}

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        """The state dict of member ``index`` as views into the stacked storage."""
        self._check_index(index)
        state = {name: t[index] for name, t in self.stacked_parameters().items()}
        state.update({name: t[index] for name, t in self.stacked_buffers().items()})
        return state

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as an ordinary standalone nn.Module (a copy, same device/dtype)."""
        state = self.member_state(index)
        device = next(iter(state.values())).device if state else torch.device("cpu")
        module = copy.deepcopy(self.template).to_empty(device=device)
        module.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        module.train(self.training)
        return module

    def set_member(self, index: int, module: nn.Module) -> None:
        """Load a standalone module's weights and buffers into member ``index``."""
        self._check_index(index)
        state = module.state_dict()
        expected = set(self._param_names) | set(self._buffer_names)
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ConfigError(
                f"module does not match the member architecture (missing {missing}, "
                f"unexpected {extra})"
            )
        targets = {**self.stacked_parameters(), **self.stacked_buffers()}
        with torch.no_grad():
            for name, value in state.items():
                if value.shape != targets[name].shape[1:]:
                    raise ConfigError(
                        f"{name} has shape {list(value.shape)}, the ensemble expects "
                        f"{list(targets[name].shape[1:])}"
                    )
                targets[name][index].copy_(value)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.n_members:
            raise ConfigError(f"member index {index} out of range for {self.n_members} members")

    def train(self, mode: bool = True) -> Ensemble:
        super().train(mode)
        self.template.train(mode)
        return self

    # ----------------------------------------------------------------- forward
    def resolved_strategy(self, device: torch.device | None = None) -> str:
        """The strategy ``forward`` uses on ``device`` (resolves ``auto``)."""
        if self.strategy != "auto":
            return self.strategy
        device = device or self._device()
        if device.type == "cpu":
            return "loop"
        return "grouped" if self._chain is not None else "vmap"

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, B, C] of every member on one shared batch x [B, ...]."""
        strategy = self.resolved_strategy(x.device)
        if strategy == "loop":
            return self._forward_loop(x)
        if strategy == "vmap":
            return self._forward_vmap(x)
        if self._chain is None:
            raise ConfigError(
                "strategy 'grouped' needs a member that is a chain (nn.Sequential) of Conv2d, "
                "Linear, BatchNorm, ReLU, pooling and Flatten layers; use 'loop' or 'vmap'"
            )
        return _forward_grouped(self, self._chain, x)

    def _forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.device.type == "cpu":
            # oneDNN convolutions on CPU run ~1.3x faster on channels-last inputs (bench).
            x = x.contiguous(memory_format=torch.channels_last)
        # unbind (not p[i]) so the backward is one stack per parameter, not N scatters.
        params = {name: p.unbind(0) for name, p in self.stacked_parameters().items()}
        buffers = self.stacked_buffers()
        outputs = []
        for i in range(self.n_members):
            state = {name: views[i] for name, views in params.items()}
            state.update({name: b[i] for name, b in buffers.items()})
            outputs.append(functional_call(self.template, state, (x,)))
        return torch.stack(outputs)

    def _forward_vmap(self, x: torch.Tensor) -> torch.Tensor:
        def run(params: dict, buffers: dict, batch: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (batch,))

        return vmap(run, in_dims=(0, 0, None), randomness="different")(
            self.stacked_parameters(), self.stacked_buffers(), x
        )


# --------------------------------------------------------------------- grouped strategy
def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), module


def _grouped_chain(member: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The member's layers in order when the grouped strategy supports them all, else None."""
    chain = list(_leaves(member))
    supported = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten) + _CHANNELWISE
    for _, layer in chain:
        if not isinstance(layer, supported):
            return None
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return None
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            return None
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and not (
            layer.affine and layer.track_running_stats
        ):
            return None
    return chain


def _forward_grouped(
    ens: Ensemble, chain: list[tuple[str, nn.Module]], x: torch.Tensor
) -> torch.Tensor:
    """Run all members as one wide network; returns [N, B, C].

    The activation is carried in one of three layouts: ``shared`` (the input, [B, ...],
    identical for all members), ``channels`` ([B, N*C, H, W], member-major channels) or
    ``features`` ([N, B, F]).
    """
    n = ens.n_members
    params, buffers = ens.stacked_parameters(), ens.stacked_buffers()
    layout = "shared"
    for name, layer in chain:
        if isinstance(layer, nn.Conv2d):
            weight = params[f"{name}.weight"]  # [N, O, I/g, k, k]
            bias = params.get(f"{name}.bias")
            out_channels = weight.shape[1]
            weight = weight.reshape(n * out_channels, *weight.shape[2:])
            bias = None if bias is None else bias.reshape(-1)
            groups = layer.groups if layout == "shared" else layer.groups * n
            x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, groups)
            layout = "channels"
        elif isinstance(layer, nn.Linear):
            weight = params[f"{name}.weight"]  # [N, O, I]
            bias = params.get(f"{name}.bias")  # [N, O]
            if layout == "shared":
                flat = x.reshape(x.shape[0], -1)
                out = flat @ weight.reshape(-1, weight.shape[2]).t()  # [B, N*O]
                x = out.reshape(x.shape[0], n, -1).transpose(0, 1)
                x = x if bias is None else x + bias.unsqueeze(1)
            else:
                if layout == "channels":
                    raise ConfigError(f"linear layer {name} needs an nn.Flatten before it")
                if bias is None:
                    x = torch.bmm(x, weight.transpose(1, 2))
                else:
                    x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            layout = "features"
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            x, layout = _grouped_batch_norm(layer, name, params, buffers, x, n, layout,
                                            ens.training)
        elif isinstance(layer, nn.Flatten):
            if layout == "channels":
                x = _to_features(x, n, layout)
                layout = "features"
            elif layout == "shared":
                x = x.flatten(1)
        else:  # elementwise / per-channel layers act the same on every layout
            if layout == "features" and isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                raise ConfigError(f"pooling layer {name} after Flatten is not supported")
            x = layer(x)
    if layout == "shared":
        raise ConfigError("the member has no parameterized layer; nothing to ensemble")
    return _to_features(x, n, layout)


def _to_features(x: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """[B, N*C, H, W] -> [N, B, C*H*W] (per-member flatten order); features pass through."""
    if layout == "features":
        return x
    batch = x.shape[0]
    return x.reshape(batch, n, -1).transpose(0, 1)


def _grouped_batch_norm(
    layer: nn.Module,
    name: str,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    n: int,
    layout: str,
    training: bool,
) -> tuple[torch.Tensor, str]:
    """BatchNorm of every member as one BatchNorm over N*C channels (statistics per channel)."""
    if layout == "shared":
        raise ConfigError(f"BatchNorm {name} before any parameterized layer is not supported")
    tracked = buffers[f"{name}.num_batches_tracked"]
    momentum = layer.momentum
    if training:
        tracked.add_(1)
        if momentum is None:  # cumulative moving average, as nn.BatchNorm does
            momentum = 1.0 / float(tracked[0])
    features_layout = layout == "features"
    if features_layout:  # [N, B, F] -> [B, N*F]
        batch = x.shape[1]
        x = x.transpose(0, 1).reshape(batch, -1)
    out = F.batch_norm(
        x,
        buffers[f"{name}.running_mean"].view(-1),
        buffers[f"{name}.running_var"].view(-1),
        params[f"{name}.weight"].reshape(-1),
        params[f"{name}.bias"].reshape(-1),
        training,
        momentum if momentum is not None else 0.0,
        layer.eps,
    )
    if features_layout:
        out = out.reshape(out.shape[0], n, -1).transpose(0, 1)
    return out, layout
