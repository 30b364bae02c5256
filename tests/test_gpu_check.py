"""scripts/gpu_check.sh runs end to end on the CPU at toy sizes (the GPU run's rehearsal)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "gc"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu",
                           "--tiny", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    failed = {k: v["error"] for k, v in steps.items() if isinstance(v, dict) and "error" in v}
    assert not failed
    assert {"bench_fp32", "bench_bf16", "epoch_fp32", "epoch_bf16", "sync", "sweep"} <= set(steps)
    assert steps["sweep"]["packed"]["ok"] and steps["sweep"]["unpacked"]["ok"]
    assert steps["epoch_fp32"]["n_members"] == 2
    table = (out / "gpu_check.md").read_text()
    assert table.startswith("# GPU check on cpu") and "sweep cells/hour" in table
