"""The study tools in scripts/: study.sh's usage and scripts/uncertainty_table.py on a
synthetic study directory (the real study runs outside CI)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(root: Path, arm: str, seed: int, accuracy: float, auroc: float, student: float,
          status: str = "finished") -> None:
    cell = root / arm / "cells" / f"seed{seed}"
    (cell / "evaluation").mkdir(parents=True)
    (cell / "summary.json").write_text(json.dumps({
        "status": status, "test/ensemble_accuracy_mean": accuracy,
        "test/member_accuracy": [accuracy - 0.1, accuracy - 0.2]}))
    (cell / "evaluation" / "summary.json").write_text(json.dumps({
        "ood/held-out/auroc_mutual_information": auroc, "shift/accuracy_mean": accuracy / 2}))
    student_dir = root / f"{arm}-distilled" / f"seed{seed}"
    student_dir.mkdir(parents=True)
    (student_dir / "distill.json").write_text(json.dumps(
        {"rows": {"student": {"accuracy": student}, "teacher": {}, "baseline": None}}))


def test_uncertainty_table_means_and_seed_pairs(tmp_path, capsys):
    table = _script("uncertainty_table")
    _cell(tmp_path, "independent", 0, 0.40, 0.60, 0.30)
    _cell(tmp_path, "independent", 1, 0.42, 0.70, 0.34)
    _cell(tmp_path, "js", 0, 0.43, 0.65, 0.31)
    _cell(tmp_path, "js", 1, 0.41, 0.80, 0.35)
    _cell(tmp_path, "js", 2, 0.90, 0.90, 0.90, status="running")  # not counted
    arms = table.read_study(tmp_path)
    assert set(arms) == {"independent", "js"} and set(arms["js"]) == {"seed0", "seed1"}
    assert arms["js"]["seed0"]["members %"] == pytest.approx(28.0)  # mean of the members
    assert arms["js"]["seed1"]["student %"] == pytest.approx(35.0)
    assert table.main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "| independent | 2 | 41.00 ± 1.41 |" in out
    assert "| JS beta_bar=-4 | 2 | 42.00 ± 1.41 |" in out
    # js - independent per seed: accuracy +3 and -1 points (mean +1, 1 of 2 up); AUROC
    # +0.05 and +0.10
    assert "| &nbsp; vs independent | | +1.000 (1/2 up) |" in out
    assert "+0.075 (2/2 up)" in out
    assert (tmp_path / "t.csv").read_text().startswith("arm,seeds,accuracy %")


def test_uncertainty_table_without_finished_cells(tmp_path, capsys):
    assert _script("uncertainty_table").main([str(tmp_path)]) == 1
    assert "no finished cells" in capsys.readouterr().err


def test_study_sh_needs_a_budget_a_directory_and_sweeps(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "scripts" / "study.sh"), "60", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash scripts/study.sh" in done.stderr


def test_collapse_table_finds_when_members_fall_to_chance(tmp_path, capsys):
    module = _script("collapse_table")
    cell = tmp_path / "sweep" / "cells" / "beta-0.4_seed0"
    cell.mkdir(parents=True)
    epochs = [  # (test acc, val acc, collapsed, not learned)
        (0.30, 0.31, [False, False], [False, False]),
        (0.35, 0.36, [True, False], [False, False]),
        (0.12, 0.11, [True, False], [False, True]),
    ]
    cell.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": k + 1, "test/ensemble_accuracy_mean": test,
                    "val/ensemble_accuracy_mean": val, "test/member_collapsed": collapsed,
                    "test/member_not_learned": learned}) + "\n"
        for k, (test, val, collapsed, learned) in enumerate(epochs)))
    (cell / "summary.json").write_text(json.dumps({"status": "finished"}))
    assert module.main([str(tmp_path / "sweep")]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row == ("| sweep | beta-0.4_seed0 | finished | 3 | 12.00 | 35.00 (epoch 2) | 2 | 3 "
                   "| 2/2 |")


def test_op_bound_input_gradient_forms_equal_autograd():
    """The forms of conv2's input gradient that docs/performance.md times are the gradient."""
    op_bound = _script("op_bound")
    assert op_bound.check(3) < 1e-12
    t = op_bound.shapes(2, 3, torch.float64)
    reference = op_bound.conv_backward(t["grad"], t["x"], t["w"], 2, [True, False, False])[0]
    unflipped = op_bound.flipped(t["w"], 2).flip(-1, -2)  # without the flip: not it
    assert not torch.allclose(
        torch.nn.functional.conv2d(t["grad"], unflipped, None, 1, 4, 1, 2), reference)


def test_op_bound_prints_every_row(capsys):
    _script("op_bound").main(["--members", "2", "--batch", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "equal autograd's" in out
    assert out.count("\n| ") == 10  # the header and nine rows
    assert "| conv2 backward, both gradients |" in out
