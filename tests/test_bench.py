"""colearn bench: the tiny run end to end, step equivalence with the baseline, FLOP counts.

No timing is asserted: timings depend on the machine. The numbers checked are structure,
hand-computed FLOPs and the equality of every strategy's training step with N separate
modules.
"""

import json

import pytest
import torch

from colearning import ConfigError
from colearning.bench import (
    BASELINE,
    Settings,
    StepResult,
    Workload,
    count_flops,
    fill_speedups,
    format_table,
    report,
    workloads,
)
from colearning.cli import main
from colearning.losses import coupled_loss

# LeNet-5 (3x32x32 input), 2 FLOPs per multiply-add, biases not counted:
CONV1 = 2 * 6 * 28 * 28 * (3 * 5 * 5)  # 705,600
CONV2 = 2 * 16 * 10 * 10 * (6 * 5 * 5)  # 480,000
CONV3 = 2 * 120 * 1 * 1 * (16 * 5 * 5)  # 96,000
FULLY_CONNECTED = 2 * (120 * 84 + 84 * 10)  # 21,840
LENET5_FORWARD = CONV1 + CONV2 + CONV3 + FULLY_CONNECTED  # 1,303,440


def test_lenet5_flops_match_hand_count():
    assert count_flops("lenet5", train=False) == LENET5_FORWARD == 1_303_440
    assert count_flops("lenet5", 4, train=False) == 4 * LENET5_FORWARD
    # Backward: a weight gradient per layer (as costly as its forward) and an input
    # gradient for every layer but the first (the images need none).
    assert count_flops("lenet5") == 3 * LENET5_FORWARD - CONV1


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "member-img/s" in table and "baseline" in table and "grouped*" in table
    assert "epoch lenet5 N=2" in table
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1
    assert data["device"]["type"] == "cpu" and data["device"]["torch_version"]
    assert data["settings"]["steps"] == 2 and data["settings"]["channels_last"] is True
    rows = data["steps"]
    assert [(r["n_members"], r["strategy"]) for r in rows] == [
        (n, s) for n in (1, 2) for s in (BASELINE, "loop", "grouped", "vmap")]
    for r in rows:
        assert r["error"] is None and r["model"] == "lenet5" and r["batch_size"] == 32
        assert r["steps_timed"] == len(r["step_seconds"]) == 2
        assert r["median_step_seconds"] > 0 and r["peak_memory_mib"] > 0
        assert r["flops_per_step"] == r["n_members"] * count_flops("lenet5", 32)
        assert r["member_images_per_second"] == pytest.approx(
            r["n_members"] * r["images_per_second"])
        assert r["speedup_vs_baseline"] > 0 and r["final_loss"] > 0
        assert r["default"] == (r["strategy"] == "grouped")
    assert all(r["speedup_vs_baseline"] == 1.0 for r in rows if r["strategy"] == BASELINE)
    (epoch,) = data["epochs"]
    assert (epoch["model"], epoch["n_members"], epoch["resolved_strategy"]) == (
        "lenet5", 2, "grouped")
    assert epoch["train_images"] == 256 and epoch["steps"] == 8 and not epoch["augment"]
    assert epoch["epoch_seconds"] == pytest.approx(epoch["train_seconds"]
                                                   + epoch["eval_seconds"])
    assert 0 <= epoch["test_accuracy"] <= 1 and epoch["skipped_steps"] == 0


@pytest.mark.parametrize("strategy", ["loop", "grouped", "vmap", "auto"])
def test_every_strategy_takes_the_baseline_step(strategy, monkeypatch):
    """The step ``colearn bench`` times (make_step: the trainer's Pack.step with StackedSGD)
    takes, call after call, the steps of N separate modules with one torch SGD each on the
    same batch: the paper's optimizer and the coupling beta_bar = -1."""
    # (tests/core/test_engine.py checks every strategy on VGG-9 and other models too)
    import colearning.bench.probes as bench_module

    n, device = 3, torch.device("cpu")
    packs, batches = [], []
    original_pack = bench_module._one_cell_pack

    def recording_pack(*args, **kwargs):
        pack = original_pack(*args, **kwargs)
        packs.append(pack)
        members.extend(pack.trained.member(i) for i in range(n))  # the starting weights
        original_loss = pack._loss

        def loss(logits, labels, images, soft):  # the batch each step trains on
            batches.append((images[0].clone(), labels[0].clone()))
            return original_loss(logits, labels, images, soft)

        pack._loss = loss
        return pack

    members = []
    monkeypatch.setattr(bench_module, "_one_cell_pack", recording_pack)
    step, resolved = bench_module.make_step(Workload("lenet5", n, 8, strategy), Settings(),
                                            device)
    assert len(packs) == 1 and resolved == packs[0].trained.resolved_strategy(device)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for m in members]
    beta = torch.full((n, n), -1.0 / n)
    for _ in range(3):  # momentum carries from step to step
        loss = step()
        images, labels = batches[-1]
        if resolved in ("loop", "grouped"):  # the engine's CPU layout (max-pool near-ties)
            images = images.contiguous(memory_format=torch.channels_last)
        want = coupled_loss(torch.stack([m(images) for m in members]), labels, beta).total
        for optimizer in optimizers:
            optimizer.zero_grad()
        want.sum().backward()
        for optimizer in optimizers:
            optimizer.step()
        torch.testing.assert_close(loss, want.detach(), rtol=1e-5, atol=1e-6)
    assert len(batches) == 3
    pack = packs[0]
    names = {id(p): name for name, p in pack.trained.stacked_parameters().items()}
    for i, member in enumerate(members):
        params = dict(member.named_parameters())
        for p, buffer in zip(pack.optimizer.params, pack.optimizer.buffers, strict=True):
            want = params[names[id(p)]]
            torch.testing.assert_close(p[i].detach(), want.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(buffer[i], optimizers[i].state[want]["momentum_buffer"],
                                       rtol=1e-4, atol=1e-6)


def test_strategies_are_timed_interleaved_and_auto_is_not_timed_twice(monkeypatch):
    import colearning.bench.harness as bench_module

    order, fake_times = [], {"baseline": [0.2, 0.2, 0.2], "grouped": [0.1, 0.1, 0.2]}

    def fake_make_step(workload, settings, device):
        resolved = "grouped" if workload.strategy == "auto" else workload.strategy
        return (lambda: torch.ones(2)), resolved

    def fake_timed_call(step, device):
        # which workload is stepping: the one whose step this is (recorded by identity)
        name = steps[id(step)]
        order.append(name)
        return fake_times[name][sum(n == name for n in order) - 1], step()

    steps = {}
    original_make = fake_make_step

    def make(workload, settings, device):
        step, resolved = original_make(workload, settings, device)
        steps[id(step)] = workload.strategy
        return step, resolved

    monkeypatch.setattr(bench_module, "make_step", make)
    monkeypatch.setattr(bench_module, "_timed_call", fake_timed_call)
    items = [Workload("lenet5", 2, 8, s) for s in ("baseline", "grouped", "auto")]
    peaks = iter([100.0, 50.0, 100.0])  # the matmul peak probed in each round
    rows = bench_module.measure_group(items, torch.device("cpu"),
                                      Settings(steps=3, warmup=0, min_time=0.0),
                                      default_strategy="grouped", probe=lambda: next(peaks))
    assert order == ["baseline", "grouped"] * 3  # interleaved; auto = grouped is not re-timed
    baseline, grouped, auto = rows
    assert grouped.step_seconds == auto.step_seconds == [0.1, 0.1, 0.2]
    assert auto.resolved_strategy == "grouped" and grouped.default and auto.default
    assert (grouped.min_step_seconds, grouped.median_step_seconds,
            grouped.max_step_seconds) == (0.1, 0.1, 0.2)
    assert grouped.unsteady and not baseline.unsteady  # spread 100% vs 0%
    # each step against the peak of its own round: times 0.1, 0.1, 0.2 over peaks 100, 50,
    # 100 -> ratios r/100, 2r/100, r/200 with r the GFLOP/s at 0.1 s; their median is r/100
    rate = grouped.flops_per_step / 0.1 / 1e9
    assert grouped.fraction_of_peak == pytest.approx(rate / 100.0)
    assert grouped.peak_gflops == 100.0 and grouped.peak_unsteady  # spread 50%


def row(strategy, seconds, default=False, n=10):
    return StepResult("lenet5", n, 512, strategy, strategy, default, steps_timed=1,
                      step_seconds=[seconds], median_step_seconds=seconds,
                      min_step_seconds=seconds, max_step_seconds=seconds,
                      steps_per_second=1 / seconds, images_per_second=512 / seconds,
                      member_images_per_second=n * 512 / seconds, flops_per_step=1e9,
                      gflops_per_second=1 / seconds, peak_memory_mib=100.0)


def test_speedups_and_table():
    rows = [row(BASELINE, 2.0), row("grouped", 0.5, default=True), row("loop", 1.0, n=2),
            StepResult("lenet5", 10, 512, "vmap", "vmap", False, error="out of memory: x")]
    rows[0].fraction_of_peak, rows[0].peak_unsteady = 0.25, True  # the peak moved
    rows[1].fraction_of_peak = 1.07  # above its own peak: said, not hidden
    fill_speedups(rows)
    assert [r.speedup_vs_baseline for r in rows] == [1.0, 4.0, None, None]
    text = format_table(report(rows, [], torch.device("cpu"), Settings(steps=1)))
    lines = text.splitlines()
    assert "grouped*" in lines[3] and "4.00x" in lines[3] and "10,240" in lines[3]
    assert "out of memory" in lines[5]
    assert "25%~" in lines[2] and "107%!" in lines[3] and "!" not in lines[4]


def test_workloads_order_and_validation():
    items = workloads(["lenet5", "vgg9"], [1, 50], ["grouped", BASELINE],
                      skip=[("vgg9", 50)])
    assert [(w.model, w.n_members, w.strategy, w.batch_size) for w in items] == [
        ("lenet5", 1, BASELINE, 512), ("lenet5", 1, "grouped", 512),
        ("lenet5", 50, BASELINE, 512), ("lenet5", 50, "grouped", 512),
        ("vgg9", 1, BASELINE, 256), ("vgg9", 1, "grouped", 256)]
    with pytest.raises(ConfigError, match="valid: baseline, loop, grouped, vmap, auto"):
        workloads(["lenet5"], [1], ["turbo"])
    with pytest.raises(ConfigError, match="unknown model"):
        workloads(["resnet"], [1], ["loop"])


def test_cli_errors_are_one_line(capsys):
    assert main(["bench", "--strategies", "turbo", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "valid: baseline" in err and len(err.splitlines()) == 1
    assert main(["bench", "--epoch", "lenet5", "--no-progress"]) == 2
    assert "MODEL:N" in capsys.readouterr().err


def test_out_path_is_checked_before_any_work(tmp_path):
    from colearning.bench import output_path

    assert output_path(str(tmp_path / "fresh") + "/") == tmp_path / "fresh" / "bench.json"
    assert (tmp_path / "fresh").is_dir()  # created up front
    (tmp_path / "existing").mkdir()
    assert output_path(tmp_path / "existing") == tmp_path / "existing" / "bench.json"
    assert output_path(tmp_path / "x.json") == tmp_path / "x.json"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        output_path(tmp_path / "file" / "x.json")
