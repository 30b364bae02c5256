"""A tiny real run (digits, small_cnn, N=3, 3 epochs), trained once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import train_once

TINY_RUN = {
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "model": {"name": "small_cnn", "options": {"width": 8}},
    "ensemble": {"n_members": 3},
    "loss": {"beta": -0.2},
    "optim": {"lr": 0.05},
    "train": {"epochs": 3, "batch_size": 128, "progress": False, "save_probs_every": 2,
              "analysis_samples": 200},
}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a finished tiny run; read-only for tests (copy it to change it)."""
    return train_once(tmp_path_factory, "report", TINY_RUN)


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run that a test may edit."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns(
        "report")))


CORRUPTIONS = ("gaussian_noise", "contrast")
OOD_SCORES = ("max_probability", "entropy", "mutual_information", "js_spread")


def write_evaluation_files(run_dir: Path, ood_sets: tuple[str, ...] = ("noise", "svhn")) -> Path:
    """Hand-written ``colearn evaluate`` files in ``run_dir``/evaluation/, in their real
    formats: shift.csv (accuracy falls by 0.1 per severity, faster for contrast), ood.csv,
    ood_scores.npz (seeded), calibration.json and summary.json. Returns the folder."""
    import json

    import numpy as np

    folder = run_dir / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["corruption,severity,images,ensemble_accuracy,ensemble_nll,ensemble_ece,"
             "ensemble_brier,member_accuracy_mean,member_nll_mean,member_ece_mean",
             "clean,0,200,0.9,0.3,0.02,0.15,0.85,0.4,0.04"]
    for k, corruption in enumerate(CORRUPTIONS):
        for severity in range(1, 6):
            accuracy = 0.9 - (0.1 + 0.05 * k) * severity
            lines.append(f"{corruption},{severity},200,{accuracy:.4f},{0.3 + 0.2 * severity:.4f},"
                         f"{0.02 + 0.03 * severity:.4f},0.3,{accuracy - 0.05:.4f},"
                         f"{0.5 + 0.2 * severity:.4f},{0.05 + 0.03 * severity:.4f}")
    (folder / "shift.csv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    arrays, rows = {}, ["ood_set,score,n_in,n_out,auroc,aupr_in,aupr_out,fpr95"]
    for set_name in ood_sets:
        for k, score in enumerate(OOD_SCORES):
            inside = rng.normal(1.0 + 0.3 * k, 1.0, 200).astype(np.float32)
            outside = rng.normal(0.0, 1.0, 150).astype(np.float32)
            arrays[f"{set_name}/{score}/in"], arrays[f"{set_name}/{score}/out"] = inside, outside
            auroc = float((inside[:, None] > outside[None, :]).mean())
            rows.append(f"{set_name},{score},200,150,{auroc:.6f},0.8,0.7,0.4")
    np.savez(folder / "ood_scores.npz", **arrays)
    (folder / "ood.csv").write_text("\n".join(rows) + "\n")
    coverage = np.arange(1, 201) / 200
    calibration = {
        "temperature_ensemble": 1.3, "temperature_members": [1.2, 1.4, 1.1],
        "test/ensemble_nll": 0.31, "test/ensemble_nll_ts": 0.28,
        "test/ensemble_ece": 0.045, "test/ensemble_ece_ts": 0.012,
        "test/ensemble_brier": 0.15, "test/ensemble_brier_ts": 0.14,
        "test/member_nll_mean": 0.41, "test/member_nll_mean_ts": 0.37,
        "test/member_ece_mean": 0.06, "test/member_ece_mean_ts": 0.02,
        "selective/aurc": 0.0123, "selective/accuracy_at_90": 0.95,
        "selective/accuracy_at_95": 0.93,
        "risk_coverage": {"coverage": coverage.tolist(), "risk": (0.1 * coverage ** 2).tolist()},
    }
    (folder / "calibration.json").write_text(json.dumps(calibration))
    (folder / "summary.json").write_text(json.dumps({
        "shift/accuracy_mean": 0.6, "shift/ece_mean": 0.1, "evaluated_epoch": 3,
        "date": "2026-12-06"}))
    return folder
