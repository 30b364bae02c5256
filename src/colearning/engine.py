"""N members of one architecture as one module: ``Ensemble(factory, n_members)``.

Parameters are stored stacked, one tensor [N, *shape] per parameter of the member
architecture (convolution kernels laid out channels-last), so the optimizer updates all
members in one elementwise step and every strategy below reads the same storage:

- ``loop``: member i runs the architecture on views p[i] (torch.func.functional_call),
  one after another. Works for any architecture.
- ``grouped``: the members run as one wide network (:mod:`colearning.grouped`: the
  member is traced with torch.fx, so chains and residual networks alike). The first layer
  sees the same input for every member and runs as one wide convolution/matmul; later
  convolutions become grouped convolutions (groups = N), linear layers and convolutions
  whose kernel covers their whole input batched matmuls, BatchNorm one BatchNorm over N*C
  channels, residual adds and channel concatenations act on the wide maps, and a ReLU
  followed by max-pooling is computed pooling first (the two commute, and the ReLU then
  touches 4x fewer values). On accelerators all N members form one network; on CPUs the
  members go in chunks sized so that a chunk's widest activation stays near
  ``CPU_CHUNK_BYTES`` (cache-sized work beats one huge wide tensor there). Needs standard
  layers and operations (see :mod:`colearning.grouped` for the list).
- ``vmap``: torch.func.vmap over the member axis of the stacked parameters. Works for any
  architecture without data-dependent control flow.
- ``auto``: ``grouped`` when the architecture allows it, else ``loop`` on CPU and ``vmap``
  on accelerators.

``auto`` picks ``grouped`` on CPUs too: ``colearn bench`` measured it the fastest strategy
there for LeNet-5 and level with the others for VGG-9 and ResNet-20 (docs/performance.md, "Speed:
colearn bench", with the machines and dates).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call, vmap

from colearning.errors import ConfigError
from colearning.grouped import SplitMembers, chunk_sizes, device_index, wide_program
from colearning.seeding import derive_seed

STRATEGIES = ("auto", "loop", "grouped", "vmap")
# On CPUs the grouped strategy runs members in chunks whose widest activation (training
# batch) is about this size: LeNet-5 at batch 512 gets chunks of 5 members, which ran
# faster than one chunk of all members (docs/performance.md).
CPU_CHUNK_BYTES = 48 * 2**20
# ...and with at most this many channels in a chunk's narrowest convolution: grouping widens
# narrow layers (LeNet-5's 6 channels) to fill the vector units. Members whose narrowest
# convolution has CPU_WIDE_CHANNELS or more run one per chunk: grouped kernels gain nothing
# there (VGG-9's 64+ channels, ResNet-20's 16+ fill the vector units alone; docs/performance.md).
CPU_GROUP_CHANNELS = 64
CPU_WIDE_CHANNELS = 16


@runtime_checkable
class Members(Protocol):
    """What the trainer drives, whether the members live in this process (:class:`Ensemble`)
    or are spread over processes (``colearning.training.shard.ShardedEnsemble``): N members
    seen as one ensemble. ``forward`` gives logits [N, B, C]; ``local`` is the
    :class:`Ensemble` of the members this process holds (its ``parameters`` and
    ``stacked_parameters`` are what this process's optimizer steps); ``state_dict`` and
    ``members`` cover all N (a collective when spread)."""

    n_members: int

    def __call__(self, x: torch.Tensor, member_inputs: torch.Tensor | None = None
                 ) -> torch.Tensor: ...

    @property
    def local(self) -> Ensemble: ...

    def stacked_parameters(self) -> dict[str, torch.Tensor]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def members(self) -> list[nn.Module]: ...

    def member(self, index: int) -> nn.Module: ...


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
        # The program holds the template's traced graph and layers (their hyperparameters).
        self._program, self.grouped_problem = wide_program(self.template)
        if strategy == "grouped" and self._program is None:
            raise ConfigError(f"strategy 'grouped' cannot run this member: "
                              f"{self.grouped_problem}; use 'auto', 'loop' or 'vmap'")
        # Kernels and CPU inputs channels-last (faster) only where the member's code cannot
        # notice: a traced member without .view() (which fails on channels-last maps) and
        # without a narrow strided 1x1 convolution (see colearning.grouped).
        program = self._program
        self._channels_last = program is not None and not (
            program.uses_view or program.narrow_strided_pointwise)
        for name in self._param_names:
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in members])
            self.register_parameter(self._keys[name], nn.Parameter(
                _member_layout(stacked, self._channels_last)))
        for name in self._buffer_names:
            stacked = torch.stack([dict(m.named_buffers())[name].detach() for m in members])
            self.register_buffer(self._keys[name], stacked.clone())
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

    @property
    def local(self) -> Ensemble:
        """The members this process holds and steps: all of them (a
        :class:`colearning.training.shard.ShardedEnsemble` holds a slice). Part of the
        :class:`Members` protocol."""
        return self

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
        if self._program is not None:
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
        if member_inputs is not None:
            if member_inputs.shape != (self.n_members,) or member_inputs.dtype != torch.long:
                raise ConfigError(f"member_inputs must be a LongTensor [{self.n_members}] (one "
                                  f"batch index per member), got {member_inputs.dtype} "
                                  f"{list(member_inputs.shape)}")
            if x.dim() < 2:
                raise ConfigError(f"with member_inputs, x must be [K, B, ...], got {list(x.shape)}")
        strategy = self.resolved_strategy(x.device)
        if strategy == "loop":
            return self._forward_loop(x, member_inputs)
        if strategy == "vmap":
            return self._forward_vmap(x, member_inputs)
        if self._program is None:  # strategy set to grouped after construction
            raise ConfigError(f"strategy 'grouped' cannot run this member: "
                              f"{self.grouped_problem}; use 'loop' or 'vmap'")
        return self._forward_grouped(x, member_inputs)

    def _forward_loop(self, x: torch.Tensor, member_inputs: torch.Tensor | None) -> torch.Tensor:
        batches = [x] if member_inputs is None else list(x.unbind(0))
        images = x.dim() - (member_inputs is not None) == 4
        if images and x.device.type == "cpu" and self._channels_last:
            # oneDNN convolutions on CPU run faster on channels-last inputs (docs/performance.md).
            batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
        index = [0] * self.n_members if member_inputs is None else member_inputs.tolist()
        # unbind (not p[i]) so the backward is one stack per parameter, not N scatters.
        params = {name: p.unbind(0) for name, p in self.stacked_parameters().items()}
        buffers = self.stacked_buffers()
        outputs = []
        for i in range(self.n_members):
            state = {name: views[i] for name, views in params.items()}
            state.update({name: b[i] for name, b in buffers.items()})
            outputs.append(functional_call(self.template, state, (batches[index[i]],)))
        return torch.stack(outputs)

    def _forward_grouped(self, x: torch.Tensor, member_inputs: torch.Tensor | None) -> torch.Tensor:
        program = self._program
        assert program is not None
        values = (0,) * self.n_members if member_inputs is None else tuple(member_inputs.tolist())
        if member_inputs is None:
            x = x.unsqueeze(0)  # one input, shared by every member: K = 1
        sizes = chunk_sizes(self.n_members, self._members_per_chunk(x[0]))
        params, buffers = self.stacked_parameters(), self.stacked_buffers()
        if len(sizes) == 1:
            return program.run(params, buffers, x, values, self.training)
        param_chunks = {name: SplitMembers.apply(p, sizes) for name, p in params.items()}
        buffer_chunks = {name: b.split(sizes) for name, b in buffers.items()}
        outputs, start = [], 0
        for k, size in enumerate(sizes):
            chunk_params = {name: chunks[k] for name, chunks in param_chunks.items()}
            chunk_buffers = {name: chunks[k] for name, chunks in buffer_chunks.items()}
            outputs.append(program.run(chunk_params, chunk_buffers, x,
                                       values[start:start + size], self.training))
            start += size
        return torch.cat(outputs)

    def _members_per_chunk(self, x: torch.Tensor) -> int:
        if self.chunk_members is not None:
            return max(1, min(self.chunk_members, self.n_members))
        if x.device.type != "cpu":
            return self.n_members
        program = self._program
        assert program is not None
        shape = tuple(x.shape[1:])
        if shape not in self._activation_sizes:
            self._activation_sizes[shape] = program.widest_activation(shape)
        member_bytes = self._activation_sizes[shape] * x.shape[0] * x.element_size()
        per_chunk = CPU_CHUNK_BYTES // max(member_bytes, 1)
        narrowest = program.narrowest_conv
        if narrowest:
            per_chunk = min(per_chunk, 1 if narrowest >= CPU_WIDE_CHANNELS
                            else CPU_GROUP_CHANNELS // narrowest)
        return max(1, min(self.n_members, per_chunk))

    def _forward_vmap(self, x: torch.Tensor, member_inputs: torch.Tensor | None) -> torch.Tensor:
        def run(params: dict, buffers: dict, batch: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (batch,))

        if member_inputs is not None:
            index = member_inputs if member_inputs.device == x.device else device_index(
                tuple(member_inputs.tolist()), x.device)
            x = x.index_select(0, index)  # [N, B, ...]
        dims = (0, 0, None if member_inputs is None else 0)
        return vmap(run, in_dims=dims, randomness="different")(
            self.stacked_parameters(), self.stacked_buffers(), x
        )


def _member_layout(stacked: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A copy of stacked [N, ...]; convolution kernels [N, O, I, k, k] stored channels-last.

    Each member's kernel [O, I, k, k] (and the grouped strategy's [N*O, I, k, k] view) then
    has channels-last strides, the layout oneDNN and cuDNN compute in: without it they
    reorder every kernel on every call.
    """
    if stacked.dim() != 5 or not channels_last:
        return stacked.clone()
    return stacked.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
