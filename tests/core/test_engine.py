"""The ensemble engine matches N separately built modules in every strategy."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from colearning import ConfigError, Ensemble, build_model, coupled_loss
from colearning.grouped import chunk_sizes as _chunk_sizes
from colearning.optim import StackedSGD

STRATEGIES = ["loop", "grouped", "vmap"]


class UserResidual(nn.Module):
    """A user-written residual network using every graph operation the grouped strategy
    supports: a residual on the input itself, channel concatenation, residual add, scalar
    arithmetic, an SE-style gate from a functional pooling, spatial mean, view(size(0), -1)
    and x.shape[0]."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Conv2d(3, 3, 3, padding=1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.branch = nn.Conv2d(3, 2, 1, stride=1)
        self.mix = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.drop = nn.Dropout(0.0)
        self.proj = nn.Linear(8 * 4 * 4, 5)
        self.norm = nn.BatchNorm1d(13)
        self.fc = nn.Linear(13, 4)

    def forward(self, x):
        x = x + self.pre(x)
        a = F.relu(self.bn(self.conv(x)))
        h = torch.cat([a, self.branch(x)], dim=1)
        h = h + self.mix(h) * 0.5
        h = h * torch.sigmoid(F.adaptive_avg_pool2d(h, 1))
        h = self.drop(F.max_pool2d(h, 2))
        flat = h.view(h.size(0), -1).reshape(x.shape[0], -1)
        features = torch.cat([h.mean((2, 3)), self.proj(flat)], 1)
        return self.fc(self.norm(features).relu())

ARCHITECTURES = {
    "lenet5": (lambda: build_model("lenet5", image_size=32), (3, 32, 32)),
    "vgg9": (lambda: build_model("vgg9", num_classes=5), (3, 32, 32)),
    "small_cnn": (lambda: build_model("small_cnn", in_channels=1, image_size=8), (1, 8, 8)),
    "mlp": (lambda: build_model("mlp", in_channels=1, image_size=8), (1, 8, 8)),
    "mlp_bn": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(),
                              nn.Linear(6, 4)),
        (12,),
    ),
    # a grouped (here depthwise) first convolution: member channels must meet their own
    # input groups in the wide layout
    "grouped_first_conv": (
        lambda: nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.ReLU(), nn.Conv2d(6, 4, 3,
                              groups=2), nn.Flatten(), nn.Linear(4 * 4 * 4, 4)),
        (3, 8, 8),
    ),
    # residual networks, traced with torch.fx. Widths keep every strided 1x1 convolution
    # at >= 16 input channels: the standalone reference members would otherwise hit
    # oneDNN's wrong strided 1x1 weight gradient (see test_strided_pointwise_conv_gradient).
    "resnet20": (lambda: build_model("resnet20", width=16, num_classes=4, image_size=8),
                 (3, 8, 8)),
    "resnet18": (lambda: build_model("resnet18", width=16, num_classes=4, image_size=8),
                 (3, 8, 8)),
    "user_residual": (UserResidual, (3, 8, 8)),
}


def reference(ens, n, arch):
    """N standalone modules holding the same weights as the ensemble's members."""
    return [ens.member(i) for i in range(n)]


def assert_same_step(ens, members, out, want, labels, beta):
    """Outputs, gradients of the coupled loss and BatchNorm statistics of the ensemble equal
    those of the standalone members."""
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
    coupled_loss(out, labels, beta).total.sum().backward()
    coupled_loss(want, labels, beta).total.sum().backward()
    for name, stacked in ens.stacked_parameters().items():
        for i, m in enumerate(members):
            grad = dict(m.named_parameters())[name].grad
            torch.testing.assert_close(stacked.grad[i], grad, atol=2e-5, rtol=1e-4)
    # BatchNorm running statistics advance the same way.
    for name, stacked in ens.stacked_buffers().items():
        for i, m in enumerate(members):
            torch.testing.assert_close(stacked[i], dict(m.named_buffers())[name])


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("train", [True, False])
def test_matches_separate_modules(arch, strategy, train):
    factory, shape = ARCHITECTURES[arch]
    torch.manual_seed(0)
    n = 3
    ens = Ensemble(factory, n, strategy=strategy, seed=1)
    members = reference(ens, n, arch)
    ens.train(train)
    for m in members:
        m.train(train)
    x = torch.randn(6, *shape)
    labels = torch.randint(0, 4, (6,))
    assert_same_step(ens, members, ens(x), torch.stack([m(x) for m in members]), labels, -0.3)


def test_members_are_independent_and_seeded():
    ens = Ensemble(lambda: build_model("lenet5"), 3, seed=7)
    weight = ens.stacked_parameters()["0.weight"]
    assert not torch.equal(weight[0], weight[1])
    again = Ensemble(lambda: build_model("lenet5"), 5, seed=7)
    # member i's initialization depends on (seed, i) only, not on N
    torch.testing.assert_close(again.stacked_parameters()["0.weight"][:3], weight)


def test_member_roundtrip():
    ens = Ensemble(lambda: build_model("small_cnn", in_channels=1, image_size=8), 3, seed=0)
    member = ens.member(1)
    assert isinstance(member, nn.Sequential)
    assert not any(p.is_meta for p in member.parameters())
    changed = copy.deepcopy(member)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(1.0)
    ens.set_member(2, changed)
    x = torch.randn(4, 1, 8, 8)
    ens.eval()
    changed.eval()
    torch.testing.assert_close(ens(x)[2], changed(x))
    # member() returns a copy: editing it does not touch the ensemble
    with torch.no_grad():
        next(member.parameters()).zero_()
    assert not torch.equal(ens.stacked_parameters()["0.weight"][1], torch.zeros(16, 1, 3, 3))


def test_set_member_rejects_other_architecture():
    ens = Ensemble(lambda: build_model("mlp", in_channels=1, image_size=8), 2)
    with pytest.raises(ConfigError, match="does not match"):
        ens.set_member(0, build_model("small_cnn", in_channels=1, image_size=8))
    with pytest.raises(ConfigError, match="out of range"):
        ens.member(2)


class Custom(nn.Module):
    """A user architecture with a residual branch (not a Sequential chain)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


class Branchy(Custom):
    """Control flow on values: torch.fx cannot trace it, so grouped cannot run it."""

    def forward(self, x):
        return self.b(self.a(x)) if x.sum() > 0 else self.b(x)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_custom_architecture_every_strategy(strategy):
    ens = Ensemble(Custom, 4, strategy=strategy, seed=0)
    x = torch.randn(3, 5)
    want = torch.stack([ens.member(i)(x) for i in range(4)])
    torch.testing.assert_close(ens(x), want)


def test_untraceable_member_runs_loop_and_vmap_only():
    ens = Ensemble(Branchy, 4, strategy="loop", seed=0)
    x = torch.randn(3, 5)
    want = torch.stack([ens.member(i)(x) for i in range(4)])
    torch.testing.assert_close(ens(x), want)
    ens.strategy = "grouped"
    with pytest.raises(ConfigError, match="grouped"):
        ens(x)
    with pytest.raises(ConfigError, match="torch.fx cannot trace"):  # refused when built
        Ensemble(Branchy, 4, strategy="grouped")
    ens.strategy = "auto"
    assert ens.resolved_strategy(torch.device("cpu")) == "loop"
    assert ens.resolved_strategy(torch.device("cuda")) == "vmap"
    torch.testing.assert_close(ens(x), want)


def test_auto_strategy_resolution():
    ens = Ensemble(lambda: build_model("lenet5"), 2)
    assert ens.resolved_strategy(torch.device("cpu")) == "grouped"
    assert ens.resolved_strategy(torch.device("cuda")) == "grouped"
    custom = Ensemble(Custom, 2)  # residual: traced, so grouped too
    assert custom.resolved_strategy(torch.device("cpu")) == "grouped"


def spanning_net():
    """A conv whose kernel covers its input (a batched matmul), then BN2d and a 1x1 conv."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # 8x8 -> 6x6 -> 3x3
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),  # spans the 3x3 map -> 1x1
        nn.AvgPool2d(1), nn.Conv2d(6, 5, 1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(5, 3),
    )


@pytest.mark.parametrize("arch", ["lenet5", "vgg9", "mlp_bn", "spanning", "resnet20",
                                  "user_residual"])
@pytest.mark.parametrize("train", [True, False])
def test_grouped_in_chunks_matches_separate_modules(arch, train):
    """Members in chunks of 2 (as on CPUs with large batches) give the same numbers."""
    factory, shape = ARCHITECTURES.get(arch, (spanning_net, (1, 8, 8)))
    n = 5
    ens = Ensemble(factory, n, strategy="grouped", seed=2)
    ens.chunk_members = 2  # chunks of 2, 2 and 1 members
    members = reference(ens, n, arch)
    ens.train(train)
    for m in members:
        m.train(train)
    if arch == "spanning" and train:  # dropout draws differ between strategies
        ens.template[9].p = 0.0
        for m in members:
            m[9].p = 0.0
    x = torch.randn(6, *shape)
    labels = torch.randint(0, 3, (6,))
    out = ens(x)
    # The engine feeds CPU convolutions channels-last; so does the reference, because
    # max-pooling can pick the other of two values that tie to rounding in another layout.
    # (Not for a member whose .view() needs contiguous maps: the engine keeps those.)
    x_cl = (x.contiguous(memory_format=torch.channels_last)
            if x.dim() == 4 and ens._channels_last else x)
    want = torch.stack([m(x_cl) for m in members])
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
    coupled_loss(out, labels, -0.3).total.sum().backward()
    coupled_loss(want, labels, -0.3).total.sum().backward()
    for name, stacked in ens.stacked_parameters().items():
        grads = torch.stack([dict(m.named_parameters())[name].grad for m in members])
        torch.testing.assert_close(stacked.grad, grads, atol=2e-5, rtol=1e-4)
    for name, stacked in ens.stacked_buffers().items():
        want_buffer = torch.stack([dict(m.named_buffers())[name] for m in members])
        torch.testing.assert_close(stacked, want_buffer)


def test_grouped_dropout_follows_eval_mode():
    ens = Ensemble(spanning_net, 3, strategy="grouped", seed=0).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(ens(x), ens(x))
    torch.testing.assert_close(ens(x), torch.stack([ens.member(i)(x) for i in range(3)]))


def test_grouped_plan_pools_before_relu():
    ens = Ensemble(lambda: build_model("lenet5"), 2)
    kinds = ens._program.layers()
    assert kinds[:6] == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]


@pytest.mark.parametrize("arch", ["small_cnn", "mlp_bn"])
def test_grouped_forward_is_one_graph_for_torch_compile(arch):
    # torch.compile traces the whole wide program (no graph break at fx nodes), so a
    # compiled step compiles once; dynamo's eager backend: tracing only, no code generation
    import torch._dynamo as dynamo

    factory, shape = ARCHITECTURES[arch]
    ens = Ensemble(factory, 3, strategy="grouped", seed=0)
    ens.chunk_members = 2  # the chunked path too
    x = torch.randn(4, *shape)
    ens(x)  # the chunk planner's per-shape cache, filled once outside the graph
    dynamo.reset()
    explained = dynamo.explain(ens)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        explained.break_reasons
    torch.testing.assert_close(torch.compile(ens, backend="eager")(x), ens(x))


def test_chunk_sizes_on_cpu():
    assert _chunk_sizes(10, 4) == [4, 3, 3]
    assert _chunk_sizes(3, 5) == [3]
    ens = Ensemble(lambda: build_model("lenet5"), 50)
    # LeNet-5's widest activation is conv1's 6x28x28 map: 18.4 KiB per image, so 9.2 MiB
    # per member at batch 512 and 5 members per 48 MiB chunk.
    assert ens._members_per_chunk(torch.zeros(512, 3, 32, 32)) == 5
    # Small batches: at most 64 channels in the narrowest layer (conv1: 6 per member).
    assert ens._members_per_chunk(torch.zeros(8, 3, 32, 32)) == 10
    ens.chunk_members = 7
    assert ens._members_per_chunk(torch.zeros(512, 3, 32, 32)) == 7
    vgg = Ensemble(lambda: build_model("vgg9"), 4)  # 64+ channels everywhere: one by one
    assert vgg._members_per_chunk(torch.zeros(8, 3, 32, 32)) == 1
    resnet = Ensemble(lambda: build_model("resnet20"), 4)  # 16+ channels: one by one
    assert resnet._members_per_chunk(torch.zeros(8, 3, 32, 32)) == 1
    mlp = Ensemble(lambda: build_model("mlp", in_channels=1, image_size=8), 50)
    assert mlp._members_per_chunk(torch.zeros(512, 1, 8, 8)) == 50


def test_bad_construction():
    with pytest.raises(ConfigError, match=">= 1"):
        Ensemble(Custom, 0)
    with pytest.raises(ConfigError, match="valid: auto, loop, grouped, vmap"):
        Ensemble(Custom, 2, strategy="fast")
    with pytest.raises(ConfigError, match="nn.Module"):
        Ensemble(lambda: 3, 2)


def test_stacked_sgd_equals_per_member_sgd():
    """The trainer's optimizer (StackedSGD over the engine's stacked parameters, one learning
    rate and weight decay per member) takes the steps of one torch.optim.SGD per member."""
    torch.manual_seed(0)
    n, lr, decay = 3, [0.1, 0.03, 0.2], [5e-4, 0.0, 1e-2]
    ens = Ensemble(lambda: build_model("mlp", in_channels=1, image_size=4), n, seed=0)
    members = [ens.member(i) for i in range(n)]
    opt = StackedSGD(ens.parameters(), lr=lr, weight_decay=decay, momentum=0.9)
    opts = [torch.optim.SGD(m.parameters(), lr=lr[i], momentum=0.9, weight_decay=decay[i])
            for i, m in enumerate(members)]
    for _ in range(4):
        x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 10, (8,))
        opt.zero_grad()
        coupled_loss(ens(x), y, -0.2).total.sum().backward()
        opt.step()
        for o in opts:
            o.zero_grad()
        coupled_loss(torch.stack([m(x) for m in members]), y, -0.2).total.sum().backward()
        for o in opts:
            o.step()
    names = {id(p): name for name, p in ens.stacked_parameters().items()}
    assert sorted(names[id(p)] for p in opt.params) == sorted(names.values())
    for i, m in enumerate(members):
        params = dict(m.named_parameters())
        for p, buffer in zip(opt.params, opt.buffers, strict=True):
            want = params[names[id(p)]]
            # to rounding: StackedSGD fuses decay and learning rate with addcmul
            torch.testing.assert_close(p[i].detach(), want.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(buffer[i], opts[i].state[want]["momentum_buffer"],
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, layers", [
    ((12,), lambda: [nn.Dropout(0.5), nn.Linear(12, 4)]),
    ((3, 8, 8), lambda: [nn.Dropout(0.5), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 4)]),
])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dropout_on_the_input_draws_a_mask_per_member(shape, layers, strategy):
    ens = Ensemble(lambda: nn.Sequential(*layers()), 4, strategy=strategy, seed=0)
    first = ens.member(0)
    for i in range(1, 4):
        ens.set_member(i, first)  # identical weights: only the dropout masks can differ
    x = torch.randn(5, *shape)
    out = ens(x)
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 4))
    ens.eval()
    out = ens(x)
    assert all(torch.equal(out[0], out[i]) for i in range(1, 4))


UNGROUPABLE = {
    "batchnorm first": (lambda: nn.Sequential(nn.BatchNorm1d(12), nn.Linear(12, 4)), (12,)),
    "linear without flatten": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(6, 4)), (3, 8, 8)),
    "unsupported layer": (
        lambda: nn.Sequential(nn.Linear(12, 8), nn.LayerNorm(8), nn.Linear(8, 4)), (12,)),
    "feature-map output": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (3, 8, 8)),
    "functional dropout": (lambda: FunctionalDropout(), (12,)),
    "parameter outside a layer": (lambda: ScaledOutput(), (12,)),
    "cat along width": (lambda: WidthCat(), (3, 8, 8)),
}


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(F.dropout(x, 0.0, self.training))


class ScaledOutput(FunctionalDropout):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.fc(x) * self.scale


class WidthCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 16, 4)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(torch.flatten(torch.cat([h, h], dim=3), 1))


@pytest.mark.parametrize("arch", list(UNGROUPABLE))
def test_auto_falls_back_where_grouped_cannot_run(arch):
    factory, shape = UNGROUPABLE[arch]
    ens = Ensemble(factory, 2, seed=0)
    assert ens.resolved_strategy(torch.device("cpu")) == "loop"
    assert ens.resolved_strategy(torch.device("meta")) == "vmap"
    assert ens.grouped_problem
    x = torch.randn(3, *shape)
    torch.testing.assert_close(ens(x), torch.stack([ens.member(i)(x) for i in range(2)]))
    with pytest.raises(ConfigError, match="strategy 'grouped' cannot run this member"):
        Ensemble(factory, 2, strategy="grouped")


def test_member_keeps_the_ensemble_dtype():
    ens = Ensemble(lambda: build_model("small_cnn", in_channels=1, image_size=8), 2,
                   seed=0).double()
    member = ens.member(1)
    assert all(p.dtype == torch.float64 for p in member.parameters())
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    ens.eval()
    member.eval()
    torch.testing.assert_close(ens(x)[1], member(x))


@pytest.mark.parametrize("arch", ["lenet5", "small_cnn", "mlp", "mlp_bn", "grouped_first_conv",
                                  "resnet20", "user_residual"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("inputs", [[0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 2, 2], [2, 0, 1, 1, 0, 0]])
def test_member_inputs_run_each_member_on_its_own_batch(arch, strategy, inputs):
    """A pack of cells: member i reads batch inputs[i] (equal runs, unequal runs, any)."""
    factory, shape = ARCHITECTURES[arch]
    ens = Ensemble(factory, len(inputs), strategy=strategy, seed=3)
    ens.chunk_members = 4  # grouped: chunks that split the runs of members
    members = reference(ens, len(inputs), arch)
    x = torch.randn(3, 5, *shape)
    labels = torch.randint(0, 4, (3, 5))
    index = torch.tensor(inputs)
    want = torch.stack([m(x[k]) for m, k in zip(members, inputs, strict=True)])
    assert_same_step(ens, members, ens(x, member_inputs=index), want, labels[index], 0.0)


def test_member_inputs_shape_is_checked():
    ens = Ensemble(lambda: nn.Linear(4, 2), 3)
    with pytest.raises(ConfigError, match=r"LongTensor \[3\]"):
        ens(torch.zeros(2, 5, 4), member_inputs=torch.tensor([0, 1]))


def test_from_members_and_repr():
    ens = Ensemble(lambda: build_model("lenet5"), 3, seed=0)
    again = Ensemble.from_members(ens.members(), strategy="loop")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(again(x), ens(x))
    assert "n_members=3" in repr(ens) and "grouped" in repr(ens) and "loop" in repr(again)
    with pytest.raises(ConfigError, match="one architecture"):
        Ensemble.from_members([nn.Linear(2, 2), nn.Linear(2, 3, bias=False)])


@pytest.mark.parametrize("strategy, chunk", [("grouped", None), ("grouped", 1), ("loop", None)])
def test_strided_pointwise_conv_gradient(strategy, chunk):
    """A strided 1x1 convolution with 4 input channels (a narrow ResNet shortcut) gets the
    gradient of a float64 reference, although oneDNN's strided 1x1 kernel computes a wrong
    one on channels-last maps (on some CPUs and thread counts): the grouped strategy
    subsamples first, and such members run channels-first in the loop."""
    def factory():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 8, 1, stride=2), nn.Flatten(), nn.Linear(8 * 16, 3))

    ens = Ensemble(factory, 3, strategy=strategy, seed=0)
    ens.chunk_members = chunk  # 1: an ungrouped 1x1 convolution per member
    members = [m.double() for m in ens.members()]  # float64: PyTorch's own exact kernels
    x = torch.randn(5, 3, 8, 8)
    labels = torch.randint(0, 3, (5,))
    coupled_loss(ens(x), labels, -0.2).total.sum().backward()
    out = torch.stack([m(x.double()) for m in members])
    coupled_loss(out, labels, -0.2).total.sum().backward()
    for name, stacked in ens.stacked_parameters().items():
        grads = torch.stack([dict(m.named_parameters())[name].grad for m in members])
        torch.testing.assert_close(stacked.grad.double(), grads, atol=1e-4, rtol=1e-4)


def test_engine_note_says_how_members_run_and_why_not_grouped():
    from colearning.training.run import engine_note

    cpu = torch.device("cpu")
    assert "one wide network" in engine_note(Ensemble(Custom, 2), cpu)
    note = engine_note(Ensemble(Branchy, 2), cpu)
    assert "one after another" in note and "torch.fx cannot trace" in note
    assert "\n" not in note


def test_one_protocol_for_members_here_and_spread_over_processes():
    """The trainer drives both through engine.Members: `local` is what this process steps."""
    from colearning.engine import Members
    from colearning.training.shard import Shard, ShardedEnsemble

    ens = Ensemble(lambda: nn.Linear(4, 3), 3)
    sharded = ShardedEnsemble(ens, Shard(0, 1, 3))
    assert isinstance(ens, Members) and isinstance(sharded, Members)
    assert ens.local is ens and sharded.local is ens
    x = torch.randn(5, 4)
    torch.testing.assert_close(sharded(x), ens(x))
