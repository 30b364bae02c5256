"""N members of one architecture as one module: ``Ensemble(factory, n_members)``.

Parameters are stored stacked, one tensor [N, *shape] per parameter of the member
architecture (convolution kernels laid out channels-last), so the optimizer updates all
members in one elementwise step and every strategy below reads the same storage:

- ``loop``: member i runs the architecture on views p[i] (torch.func.functional_call),
  one after another. Works for any architecture.
- ``grouped``: the members run as one wide network. The first layer sees the same input
  for every member and runs as one wide convolution/matmul; later convolutions become
  grouped convolutions (groups = N), linear layers and convolutions whose kernel covers
  their whole input batched matmuls, BatchNorm one BatchNorm over N*C channels, and a
  ReLU followed by max-pooling is computed pooling first (the two commute, and the ReLU
  then touches 4x fewer values). On accelerators all N members form one network; on CPUs
  the members go in chunks sized so that a chunk's widest activation stays near
  ``CPU_CHUNK_BYTES`` (cache-sized work beats one huge wide tensor there). Needs a chain of
  standard layers (nn.Sequential of Conv2d, Linear, BatchNorm1d/2d, ReLU, pooling,
  Flatten, Dropout/Identity).
- ``vmap``: torch.func.vmap over the member axis of the stacked parameters. Works for any
  architecture without data-dependent control flow.
- ``auto``: ``grouped`` when the architecture allows it, else ``loop`` on CPU and ``vmap``
  on accelerators.

Why ``auto`` picks ``grouped`` on CPUs too (``colearn bench``, LeNet-5, batch 512, a full
training step with the coupled loss and SGD, in member-images per second, one thread on a
Xeon shared with other jobs, so +-20%): N separate nn.Modules in a Python loop 4.8k / 5.7k
/ 5.9k at N = 1 / 10 / 50; ``loop`` 5.2k / 5.6k / 5.9k; ``grouped`` in chunks of 5 members
6.9k / 9.2k / 11.1k (1.4x / 1.6x / 1.9x the separate modules); ``grouped`` with all 50
members in one chunk 6.3k, ``vmap`` 2.5k. VGG-9 with one member per chunk (as at batch 256)
runs level with the separate modules (N=2, batch 64: 1.94 s vs 1.95 s per step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from colearning.errors import ConfigError
from colearning.seeding import derive_seed

STRATEGIES = ("auto", "loop", "grouped", "vmap")

# Layers that act elementwise or per channel identically on [B, N*C, H, W] and [B, C, H, W].
_CHANNELWISE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout, nn.Dropout2d)
# Layers that act the same on a [B, C, 1, 1] map and on its [B, C] features.
_POINTWISE = (nn.ReLU, nn.Identity, nn.Dropout, nn.Flatten, nn.BatchNorm2d)
# On CPUs the grouped strategy runs members in chunks whose widest activation (training
# batch) is about this size: LeNet-5 at batch 512 gets chunks of 5 members, which ran
# 1.3-2x faster than one chunk of all members at N=10 and N=50 (see the module docstring).
CPU_CHUNK_BYTES = 48 * 2**20
# ...and with at most this many channels in a chunk's narrowest convolution: grouping widens
# narrow layers (LeNet-5's 6 channels) to fill the vector units; layers of 64+ channels
# (VGG-9) gain nothing and grouped kernels ran 3% slower than one member at a time there.
CPU_GROUP_CHANNELS = 64


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
        first_index: index of the first member in the seed derivation, so the members are
            those numbered first_index.. of a larger ensemble (new members of a grown one).

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
        first_index: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(n_members, int) or n_members < 1:
            raise ConfigError(f"n_members must be an integer >= 1, got {n_members!r}")
        members = [self._build(factory, seed, first_index + i) for i in range(n_members)]
        self._stack(members, strategy)

    @classmethod
    def from_members(cls, modules: list[nn.Module], strategy: str = "auto") -> Ensemble:
        """An ensemble holding copies of ``modules`` (same architecture) as its members.

        The inverse of :meth:`members`; also how a pack of sweep cells stacks the members
        that each cell built from its own seed into one engine.

        >>> ens = Ensemble(lambda: nn.Linear(4, 3), n_members=2, seed=0)
        >>> again = Ensemble.from_members(ens.members())
        >>> torch.equal(again(torch.ones(1, 4)), ens(torch.ones(1, 4)))
        True
        """
        modules = list(modules)
        if not modules or not all(isinstance(m, nn.Module) for m in modules):
            raise ConfigError("from_members needs a non-empty list of nn.Module members")
        names = [sorted(n for n, _ in m.state_dict().items()) for m in modules]
        if any(n != names[0] for n in names):
            raise ConfigError("from_members needs members of one architecture (their "
                              "parameter names differ)")
        ensemble = cls.__new__(cls)
        nn.Module.__init__(ensemble)
        ensemble._stack(modules, strategy)
        return ensemble

    def _stack(self, members: list[nn.Module], strategy: str) -> None:
        """Stack the members' parameters and buffers into [N, ...] storage (the constructor)."""
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        self.n_members = len(members)
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
            self.register_parameter(self._keys[name], nn.Parameter(_member_layout(stacked)))
        for name in self._buffer_names:
            stacked = torch.stack([dict(m.named_buffers())[name].detach() for m in members])
            self.register_buffer(self._keys[name], stacked.clone())
        # The chain holds the template's layers: their hyperparameters and train/eval mode.
        self._chain, self.grouped_problem = _grouped_chain(self.template)
        if strategy == "grouped" and self._chain is None:
            raise ConfigError(f"strategy 'grouped' cannot run this member: "
                              f"{self.grouped_problem}; use 'auto', 'loop' or 'vmap'")
        self._plan = None if self._chain is None else _pool_before_relu(self._chain)
        # Members per chunk of the grouped strategy; None: all on accelerators, on CPUs as
        # many as fit CPU_CHUNK_BYTES.
        self.chunk_members: int | None = None
        self._activation_sizes: dict[tuple[int, ...], int] = {}

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

    def members(self) -> list[nn.Module]:
        """Every member as an ordinary standalone nn.Module (copies); see :meth:`member`."""
        return [self.member(i) for i in range(self.n_members)]

    def extra_repr(self) -> str:
        strategy = self.strategy
        if strategy == "auto":
            strategy = f"auto -> {self.resolved_strategy()}"
        return (f"n_members={self.n_members}, member={type(self.template).__name__} "
                f"({sum(p[0].numel() for p in self.parameters())} parameters), "
                f"strategy={strategy}")

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as an ordinary standalone nn.Module (a copy, same device/dtype)."""
        state = self.member_state(index)
        device = next(iter(state.values())).device if state else torch.device("cpu")
        module = copy.deepcopy(self.template).to_empty(device=device)
        # assign=True takes the tensors as they are: the ensemble's dtype (a .double()
        # ensemble gives float64 members) and the kernels' channels-last layout.
        module.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
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
        if self._chain is not None:
            return "grouped"
        device = device or self._device()
        return "loop" if device.type == "cpu" else "vmap"

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def forward(self, x: torch.Tensor, member_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [N, B, C]: every member on one shared batch x [B, ...], or, with
        ``member_inputs`` (a LongTensor [N]), member i on its own batch x[member_inputs[i]]
        of x [K, B, ...] (the members of a pack of sweep cells, each cell on its own data).

        A ``member_inputs`` on the CPU lets the grouped strategy plan its first layer without
        reading the tensor back from an accelerator.
        """
        inputs = None
        if member_inputs is not None:
            if member_inputs.shape != (self.n_members,) or member_inputs.dtype != torch.long:
                raise ConfigError(f"member_inputs must be a LongTensor [{self.n_members}] (one "
                                  f"batch index per member), got {member_inputs.dtype} "
                                  f"{list(member_inputs.shape)}")
            if x.dim() < 2:
                raise ConfigError(f"with member_inputs, x must be [K, B, ...], got {list(x.shape)}")
            inputs = member_inputs
        strategy = self.resolved_strategy(x.device)
        if strategy == "loop":
            return self._forward_loop(x, inputs)
        if strategy == "vmap":
            return self._forward_vmap(x, inputs)
        if self._chain is None:
            raise ConfigError(f"strategy 'grouped' cannot run this member: "
                              f"{self.grouped_problem}; use 'loop' or 'vmap'")
        return self._forward_grouped(x, inputs)

    def _forward_loop(self, x: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        batches = [x] if inputs is None else list(x.unbind(0))
        if x.dim() - (inputs is not None) == 4 and x.device.type == "cpu":
            # oneDNN convolutions on CPU run ~1.3x faster on channels-last inputs (bench).
            batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
        index = [0] * self.n_members if inputs is None else inputs.tolist()
        # unbind (not p[i]) so the backward is one stack per parameter, not N scatters.
        params = {name: p.unbind(0) for name, p in self.stacked_parameters().items()}
        buffers = self.stacked_buffers()
        outputs = []
        for i in range(self.n_members):
            state = {name: views[i] for name, views in params.items()}
            state.update({name: b[i] for name, b in buffers.items()})
            outputs.append(functional_call(self.template, state, (batches[index[i]],)))
        return torch.stack(outputs)

    def _forward_grouped(self, x: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        assert self._plan is not None
        values = (0,) * self.n_members if inputs is None else tuple(inputs.tolist())
        if inputs is None:
            x = x.unsqueeze(0)  # one input, shared by every member: K = 1
        sizes = _chunk_sizes(self.n_members, self._members_per_chunk(x[0]))
        params, buffers = self.stacked_parameters(), self.stacked_buffers()
        if len(sizes) == 1:
            return _forward_grouped(self._plan, params, buffers, x, values, self.training)
        param_chunks = {name: _SplitMembers.apply(p, sizes) for name, p in params.items()}
        buffer_chunks = {name: b.split(sizes) for name, b in buffers.items()}
        outputs, start = [], 0
        for k, size in enumerate(sizes):
            chunk_params = {name: chunks[k] for name, chunks in param_chunks.items()}
            chunk_buffers = {name: chunks[k] for name, chunks in buffer_chunks.items()}
            outputs.append(_forward_grouped(self._plan, chunk_params, chunk_buffers, x,
                                            values[start:start + size], self.training))
            start += size
        return torch.cat(outputs)

    def _members_per_chunk(self, x: torch.Tensor) -> int:
        if self.chunk_members is not None:
            return max(1, min(self.chunk_members, self.n_members))
        if x.device.type != "cpu":
            return self.n_members
        shape = tuple(x.shape[1:])
        if shape not in self._activation_sizes:
            self._activation_sizes[shape] = _widest_activation(self._chain, shape)
        member_bytes = self._activation_sizes[shape] * x.shape[0] * x.element_size()
        per_chunk = CPU_CHUNK_BYTES // max(member_bytes, 1)
        widths = [layer.out_channels for _, layer in self._chain if isinstance(layer, nn.Conv2d)]
        if widths:
            per_chunk = min(per_chunk, CPU_GROUP_CHANNELS // min(widths))
        return max(1, min(self.n_members, per_chunk))

    def _forward_vmap(self, x: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        def run(params: dict, buffers: dict, batch: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (batch,))

        if inputs is not None:
            index = inputs if inputs.device == x.device else _device_index(
                tuple(inputs.tolist()), x.device)
            x = x.index_select(0, index)  # [N, B, ...]
        return vmap(run, in_dims=(0, 0, None if inputs is None else 0), randomness="different")(
            self.stacked_parameters(), self.stacked_buffers(), x
        )


def _member_layout(stacked: torch.Tensor) -> torch.Tensor:
    """A copy of stacked [N, ...]; convolution kernels [N, O, I, k, k] stored channels-last.

    Each member's kernel [O, I, k, k] (and the grouped strategy's [N*O, I, k, k] view) then
    has channels-last strides, the layout oneDNN and cuDNN compute in: without it they
    reorder every kernel on every call (3% of a VGG-9 step on CPU).
    """
    if stacked.dim() != 5:
        return stacked.clone()
    return stacked.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


# --------------------------------------------------------------------- grouped strategy
def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _leaves(child, f"{prefix}{name}.")
    else:
        yield prefix.rstrip("."), module


def _grouped_chain(member: nn.Module) -> tuple[list[tuple[str, nn.Module]] | None, str]:
    """(the member's layers in order, "") when the grouped strategy can run them all, else
    (None, why not).

    Decided here, at construction, so that ``auto`` falls back to another strategy instead
    of failing at the first forward pass: every layer must be a supported type, and the
    layouts they leave must fit the next layer (see :func:`_layout_problem`).
    """
    chain = list(_leaves(member))
    supported = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten) + _CHANNELWISE
    for name, layer in chain:
        if not isinstance(layer, supported):
            return None, f"layer {name or 'the member'} ({type(layer).__name__}) is not a " \
                         "Conv2d/Linear/BatchNorm/ReLU/pooling/Flatten/Dropout in an nn.Sequential"
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return None, f"Flatten {name} does not flatten dims 1..-1"
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            return None, f"convolution {name} pads with {layer.padding_mode!r}, not zeros"
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and not (
            layer.affine and layer.track_running_stats
        ):
            return None, f"BatchNorm {name} is not affine with running statistics"
    problem = _layout_problem(chain)
    return (None, problem) if problem else (chain, "")


def _layout_problem(chain: list[tuple[str, nn.Module]]) -> str:
    """Why the layer sequence cannot run in the wide layouts ("" when it can).

    Tracks the layout symbolically: ``shared`` (the input, the same for every member),
    ``spatial`` ([B, N*C, H, W]) or ``features`` ([N, B, F]).
    """
    layout = "shared"
    for name, layer in chain:
        if isinstance(layer, nn.Conv2d):
            if layout == "features":
                return f"convolution {name} comes after Flatten"
            layout = "spatial"
        elif isinstance(layer, nn.Linear):
            if layout == "spatial":
                return f"linear layer {name} has no nn.Flatten before it"
            layout = "features"
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if layout == "shared":
                return f"BatchNorm {name} comes before any weight layer"
            if isinstance(layer, nn.BatchNorm2d) and layout == "features":
                return f"BatchNorm2d {name} comes after Flatten"
            if isinstance(layer, nn.BatchNorm1d) and layout == "spatial":
                return f"BatchNorm1d {name} gets a feature map (no Flatten before it)"
        elif isinstance(layer, nn.Flatten):
            layout = "features" if layout == "spatial" else layout
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout2d)) and layout == "features":
            return f"{type(layer).__name__} {name} comes after Flatten"
    if layout == "shared":
        return "the member has no parameterized layer"
    return ""


def _pool_before_relu(chain: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The chain with every ReLU -> MaxPool2d pair swapped to MaxPool2d -> ReLU.

    max and ReLU commute (ReLU is monotonic), so the values are identical and so are the
    gradients (a window whose maximum is <= 0 passes no gradient either way); pooling first
    runs the ReLU and its backward on 4x fewer values, a large share of LeNet-5's CPU time.
    """
    plan, index = [], 0
    while index < len(chain):
        pair = chain[index:index + 2]
        if (len(pair) == 2 and isinstance(pair[0][1], nn.ReLU)
                and isinstance(pair[1][1], nn.MaxPool2d)):
            plan += [pair[1], pair[0]]
            index += 2
        else:
            plan.append(chain[index])
            index += 1
    return plan


class _SplitMembers(torch.autograd.Function):
    """Stacked [N, ...] -> chunks along the member axis, gradient assembled in its layout.

    One copy per parameter in the backward (not p[lo:hi], whose backward adds a zero-filled
    [N, ...] per chunk), into the parameter's own strides: torch.split's backward would
    concatenate contiguously and autograd then copy again into the channels-last kernels.
    """

    @staticmethod
    def forward(ctx: Any, stacked: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
        ctx.sizes = sizes
        ctx.geometry = (stacked.shape, stacked.stride(), stacked.dtype, stacked.device)
        return stacked.split(sizes)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        shape, stride, dtype, device = ctx.geometry
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        for chunk, grad in zip(out.split(ctx.sizes), grads, strict=True):
            chunk.zero_() if grad is None else chunk.copy_(grad)
        return out, None


def _chunk_sizes(n_members: int, per_chunk: int) -> list[int]:
    """Balanced chunk sizes summing to n_members, each <= per_chunk: (10, 4) -> [4, 3, 3]."""
    chunks = -(-n_members // per_chunk)
    return [n_members // chunks + (k < n_members % chunks) for k in range(chunks)]


@torch.no_grad()
def _widest_activation(chain: list[tuple[str, nn.Module]], shape: tuple[int, ...]) -> int:
    """Largest number of values per image that one member's layer outputs, for inputs shape."""
    # The chain's layers live on the meta device: this computes shapes only. A batch of 2
    # keeps BatchNorm's training-mode check (more than one value per channel) quiet.
    x = torch.empty((2, *shape), device="meta")
    widest = 0
    for _, layer in chain:
        x = layer(x)
        widest = max(widest, x[0].numel())
    return widest


def _spans_input(layer: nn.Conv2d, x: torch.Tensor) -> bool:
    """True when the convolution's kernel covers its whole unpadded input (1x1 output)."""
    return (layer.groups == 1 and layer.padding in ((0, 0), "valid")
            and layer.dilation == (1, 1) and tuple(x.shape[2:]) == tuple(layer.kernel_size))


def _forward_grouped(
    chain: list[tuple[str, nn.Module]],
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    inputs: tuple[int, ...],
    training: bool,
) -> torch.Tensor:
    """Run n members (stacked params/buffers [n, ...]) as one wide network; returns [n, B, C].

    x [K, B, ...] holds the batches; member m reads x[inputs[m]] (n = len(inputs)). The
    activation is carried in one of four layouts: ``inputs`` (before the first weight
    layer: [K', B, ...] batches, member m reading batch m // r, see :func:`_input_blocks`),
    ``channels`` ([B, n*C, H, W], member-major channels), ``points`` ([n, B, C], a
    [B, n*C, 1, 1] map kept as features) or ``features`` ([n, B, F]).
    """
    n = len(inputs)
    x, r = _input_blocks(x, inputs)
    layout = "inputs"
    for name, layer in chain:
        if layout == "points" and not isinstance(layer, _POINTWISE):
            x = x.transpose(0, 1).reshape(x.shape[1], -1, 1, 1)  # [B, n*C, 1, 1]
            layout = "channels"
        if layout == "inputs" and training and isinstance(layer, (nn.Dropout, nn.Dropout2d)):
            # Dropout on an input that members share would draw one mask for all of them:
            # give each member its own copy, so each draws its own (as loop and vmap do).
            x, r = x.repeat_interleave(r, dim=0), 1
        if isinstance(layer, nn.Conv2d):
            weight = params[f"{name}.weight"]  # [n, O, I/g, k, k]
            bias = params.get(f"{name}.bias")
            if layout == "channels" and _spans_input(layer, x):
                # A kernel covering the whole map is a linear layer on the flattened map:
                # one batched matmul instead of a grouped convolution (LeNet-5's conv3: 6x
                # faster forward and backward on CPU).
                features = _to_features(x, n, layout)  # [n, B, C*k*k], per-member order
                weight = weight.reshape(n, weight.shape[1], -1)
                x = _batched_linear(features, weight, bias)
                layout = "points"
                continue
            out_channels = weight.shape[1]
            weight = weight.reshape(n * out_channels, *weight.shape[2:])
            bias = None if bias is None else bias.reshape(-1)
            if layout == "inputs":
                if layer.groups > 1 and r > 1:
                    # Member-major output channels of a grouped first convolution need the
                    # input groups in member-major order too: one copy per member.
                    x, r = x.repeat_interleave(r, dim=0), 1
                if x.device.type == "cpu" and x.shape[0] > 1 and layer.groups == 1:
                    # oneDNN's grouped convolution over K' batches of 3-channel images ran
                    # 1.6-2x slower than K' dense ones (LeNet-5, batch 512): one per batch.
                    size = r * out_channels
                    x = torch.cat([F.conv2d(x[k], weight[k * size:(k + 1) * size],
                                            None if bias is None else
                                            bias[k * size:(k + 1) * size],
                                            layer.stride, layer.padding, layer.dilation)
                                   for k in range(x.shape[0])], dim=1)
                    layout = "channels"
                    continue
                # [K', B, C, H, W] -> [B, K'*C, H, W]: group k of the convolution is batch
                # k's r members (one wide convolution when all members share one batch).
                groups = layer.groups * x.shape[0]
                x = x[0] if x.shape[0] == 1 else x.transpose(0, 1).flatten(1, 2)
                if x.device.type == "cpu":  # oneDNN: ~1.3x faster channels-last (bench)
                    x = x.contiguous(memory_format=torch.channels_last)
            else:
                groups = layer.groups * n
            x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, groups)
            layout = "channels"
        elif isinstance(layer, nn.Linear):
            weight = params[f"{name}.weight"]  # [n, O, I]
            bias = params.get(f"{name}.bias")  # [n, O]
            if layout == "inputs":
                if x.dim() != 3:
                    raise ConfigError(f"linear layer {name} gets a {x.dim() - 1}-d input; the "
                                      "grouped strategy needs nn.Flatten before it (or use "
                                      "'loop')")
                # batch k's r members as one matmul: [K', B, I] @ [K', I, r*O]
                blocks = weight.reshape(x.shape[0], r * weight.shape[1], weight.shape[2])
                out = torch.bmm(x, blocks.transpose(1, 2))  # [K', B, r*O]
                x = out.reshape(x.shape[0], x.shape[1], r, -1).transpose(1, 2).flatten(0, 1)
                x = x if bias is None else x + bias.unsqueeze(1)
            else:
                if layout == "channels":
                    raise ConfigError(f"linear layer {name} needs an nn.Flatten before it")
                x = _batched_linear(x, weight, bias)
            layout = "features"
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if layout == "inputs":
                raise ConfigError(f"BatchNorm {name} before any parameterized layer is not "
                                  "supported")
            # On a 1x1 map BatchNorm2d's statistics over (B, H, W) are those over B.
            points = layout == "points"
            x, layout = _grouped_batch_norm(layer, name, params, buffers, x, n,
                                            "features" if points else layout, training)
            layout = "points" if points else layout
        elif isinstance(layer, nn.Flatten):
            if layout in ("channels", "points"):
                x = _to_features(x, n, layout)
                layout = "features"
            elif layout == "inputs":
                x = x.flatten(2)
        else:  # elementwise / per-channel layers act the same on every layout
            if layout == "features" and isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                raise ConfigError(f"pooling layer {name} after Flatten is not supported")
            batches = layout == "inputs"  # [K', B, ...] as one batch of K' * B
            out = layer(x.flatten(0, 1) if batches else x)
            x = out.unflatten(0, x.shape[:2]) if batches else out
    if layout == "inputs":
        raise ConfigError("the member has no parameterized layer; nothing to ensemble")
    return _to_features(x, n, layout)


def _input_blocks(x: torch.Tensor, inputs: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """The batches members read, as ([K', B, ...], r): member m reads batch m // r.

    All members on one batch (a plain ensemble): K' = 1, r = n. Runs of r members on one
    batch each (a pack of equal-sized cells): one batch per run. Anything else: one batch
    per member (r = 1).
    """
    n = len(inputs)
    runs = [inputs[m] for m in range(n) if m == 0 or inputs[m] != inputs[m - 1]]
    r = n // len(runs)
    if r * len(runs) == n and all(inputs[m] == runs[m // r] for m in range(n)):
        selected = runs
    else:
        selected, r = list(inputs), 1
    if selected == list(range(x.shape[0])):
        return x, r
    return x.index_select(0, _device_index(tuple(selected), x.device)), r


_INDEX_CACHE: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def _device_index(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A LongTensor of ``values`` on ``device``, built once: a host-to-device copy at every
    forward pass would make the host wait for the device."""
    key = (values, device)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = torch.tensor(values, dtype=torch.long, device=device)
    return _INDEX_CACHE[key]


def _batched_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x [n, B, I] @ weight [n, O, I]^T + bias [n, O] -> [n, B, O]."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _to_features(x: torch.Tensor, n: int, layout: str) -> torch.Tensor:
    """[B, N*C, H, W] -> [N, B, C*H*W] (per-member flatten order); features pass through."""
    if layout in ("features", "points"):
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
