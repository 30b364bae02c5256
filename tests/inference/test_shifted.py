"""colearn evaluate --shift/--ood/--calibration: the files beside the run, their exact
columns, determinism, resumption, the OOD sets and temperature scaling."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from colearning import rundir
from colearning.cli import main
from colearning.config import config_from_dict
from colearning.data import load_dataset
from colearning.errors import ConfigError
from colearning.inference import evaluate_uncertainty
from colearning.inference.ood_sets import LUMINANCE, fit_images, noise_images
from colearning.inference.prediction import member_log_probs
from colearning.inference.run_sides import run_sides
from colearning.inference.shifted import COLUMNS
from colearning.inference.uncertainty import OOD_COLUMNS, SCORES
from colearning.metrics import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
    nll,
)
from colearning.training import load_ensemble
from tests.conftest import train_once

FIVE = [0, 1, 2, 3, 4]
RUN = {
    "seed": 0, "device": "cpu",
    "data": {"name": "digits", "classes": FIVE, "val_size": 100},
    "model": {"name": "mlp"}, "ensemble": {"n_members": 2},
    "train": {"epochs": 2, "batch_size": 128, "progress": False, "analysis_every": 0},
}
CHEAP = {"corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]}


@pytest.fixture(scope="module")
def five_class_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on digits 0-4 (read-only: tests copy it)."""
    return train_once(tmp_path_factory, "shifted", RUN)


@pytest.fixture
def run(five_class_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(five_class_run, tmp_path / "run"))


def digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()
            and p.parts[len(run_dir.parts)] != "evaluation" and p.name != rundir.LOCK}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_files_columns_and_determinism(run, capsys):
    before = digests(run)
    argv = ["evaluate", str(run), "--shift", "corruptions", "--corruptions",
            "gaussian_noise,contrast", "--severities", "1,5", "--ood", "held-out", "--ood",
            "noise", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    assert "ood held-out: AUROC" in capsys.readouterr().out
    out = run / "evaluation"
    assert {p.name for p in out.iterdir()} >= {"shift.csv", "ood.csv", "ood_scores.npz",
                                                "calibration.json", "summary.json"}
    assert digests(run) == before  # the run's own files are untouched
    shift = (out / "shift.csv").read_text()
    assert shift.splitlines()[0] == ",".join(COLUMNS) == (
        "corruption,severity,images,ensemble_accuracy,ensemble_nll,ensemble_ece,"
        "ensemble_brier,member_accuracy_mean,member_nll_mean,member_ece_mean")
    table = rows(out / "shift.csv")
    assert [(r["corruption"], r["severity"]) for r in table] == [
        ("clean", "0"), ("contrast", "1"), ("contrast", "5"), ("gaussian_noise", "1"),
        ("gaussian_noise", "5")]
    raw = load_dataset("digits")
    n_test = int(np.isin(raw.test_y, FIVE).sum())
    assert all(int(r["images"]) == n_test for r in table)
    assert all(0 <= float(r[key]) <= 1 for r in table
               for key in ("ensemble_accuracy", "ensemble_ece", "member_accuracy_mean"))
    ood = rows(out / "ood.csv")
    assert list(ood[0]) == list(OOD_COLUMNS) == ["ood_set", "score", "n_in", "n_out", "auroc",
                                                 "aupr_in", "aupr_out", "fpr95"]
    assert [(r["ood_set"], r["score"]) for r in ood] == [
        (name, score) for name in ("held-out", "noise") for score in SCORES]
    held = int((~np.isin(raw.test_y, FIVE)).sum())
    assert {int(r["n_out"]) for r in ood if r["ood_set"] == "held-out"} == {held}
    assert {int(r["n_out"]) for r in ood if r["ood_set"] == "noise"} == {n_test}
    assert {int(r["n_in"]) for r in ood} == {n_test}
    assert all(0 <= float(r[key]) <= 1 for r in ood for key in OOD_COLUMNS[4:])
    with np.load(out / "ood_scores.npz") as scores:
        assert sorted(scores.files) == sorted(f"{name}/{score}/{side}" for name in
                                              ("held-out", "noise") for score in SCORES
                                              for side in ("in", "out"))
        assert scores["held-out/entropy/out"].shape == (held,)
        assert scores["noise/entropy/in"].dtype == np.float32
    summary = json.loads((out / "summary.json").read_text())
    shifted = [r for r in table if r["corruption"] != "clean"]
    assert summary["shift/accuracy_mean"] == pytest.approx(
        np.mean([float(r["ensemble_accuracy"]) for r in shifted]))
    assert summary["shift/ece_s5"] == pytest.approx(
        np.mean([float(r["ensemble_ece"]) for r in shifted if r["severity"] == "5"]))
    for score in SCORES:  # the first --ood set is the headline one
        assert summary[f"ood/auroc_{score}"] == summary[f"ood/held-out/auroc_{score}"]
        assert f"ood/noise/auroc_{score}" in summary and f"ood/fpr95_{score}" in summary
    assert summary["evaluated_epoch"] == 2 and "date" in summary
    assert {"calibration/temperature_ensemble", "calibration/ensemble_ece_ts",
            "selective/aurc", "selective/accuracy_at_90"} <= set(summary)
    first = {name: (out / name).read_bytes() for name in ("shift.csv", "ood.csv")}
    shutil.rmtree(out)  # computed again from nothing: the same bytes
    assert main(argv) == 0
    assert {name: (out / name).read_bytes() for name in first} == first


def test_a_rerun_computes_only_the_missing_rows(run):
    result = evaluate_uncertainty(run, shift=True, device="cpu", **CHEAP)
    file = result.path / "shift.csv"
    full = file.read_text()
    lines = full.splitlines()
    # a partial file, as a run stopped after its first corruption leaves it, with one of
    # the kept values marked: a rerun computes gaussian_noise only and keeps the marked row
    kept = [line for line in lines if not line.startswith("gaussian_noise")]
    assert kept[2].startswith("contrast,1,")
    marked = kept[2].split(",")
    marked[3] = "0.123"
    kept[2] = ",".join(marked)
    file.write_text("\n".join(kept) + "\n")
    evaluate_uncertainty(run, shift=True, device="cpu", **CHEAP)
    again = file.read_text().splitlines()
    assert again[2].split(",")[3] == "0.123"
    assert [line for line in again if line.startswith("gaussian_noise")] == \
        [line for line in lines if line.startswith("gaussian_noise")]
    # other weights (the run trained on since): every row computed again
    state = result.path / "state.json"
    state.write_text(json.dumps({"checkpoint": "final", "epoch": 1}))
    evaluate_uncertainty(run, shift=True, device="cpu", **CHEAP)
    assert file.read_text() == full
    assert json.loads(state.read_text()) == {"checkpoint": "final", "epoch": 2}


def test_calibration_equals_a_direct_computation(run):
    result = evaluate_uncertainty(run, calibrate=True, device="cpu")
    content = json.loads((result.path / "calibration.json").read_text())
    ensemble, config = load_ensemble(run)
    sides = run_sides(config)
    test = member_log_probs(ensemble, sides.test_x)
    val = member_log_probs(ensemble, sides.val_x)
    y_test, y_val = torch.from_numpy(sides.test_y), torch.from_numpy(sides.val_y)

    def ens(log_probs):
        return torch.logsumexp(log_probs, 0) - math.log(len(log_probs))

    t = fit_temperature(ens(val), y_val)
    members = fit_temperatures(val, y_val)
    assert content["temperature_ensemble"] == pytest.approx(t)
    assert content["temperature_members"] == pytest.approx(members.tolist())
    scaled = apply_temperature(ens(test), t)
    assert content["test/ensemble_nll_ts"] == pytest.approx(float(nll(scaled, y_test, log=True)),
                                                            rel=1e-5)
    assert content["test/ensemble_ece"] == pytest.approx(
        float(expected_calibration_error(ens(test).exp(), y_test)), rel=1e-5)
    member_ece = expected_calibration_error(apply_temperature(test, members).exp(), y_test)
    assert content["test/member_ece_mean_ts"] == pytest.approx(float(member_ece.mean()), rel=1e-5)
    curve = content["risk_coverage"]
    assert len(curve["coverage"]) == len(curve["risk"]) <= 200 and curve["coverage"][-1] == 1.0
    assert 0 <= content["selective/aurc"] <= 1
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["calibration/temperature_ensemble"] == content["temperature_ensemble"]
    assert summary["selective/accuracy_at_95"] == content["selective/accuracy_at_95"]
    assert not any(key.startswith(("shift/", "ood/")) for key in summary)


def test_a_data_file_is_resized_and_converted(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)  # RGB 16x16, run: gray 8x8
    labels = np.zeros(12, dtype=np.int64)
    labels[::2] = 1
    np.savez(tmp_path / "photos.npz", x_train=images, y_train=labels, x_test=images,
             y_test=labels)
    evaluate_uncertainty(run, ood=[str(tmp_path / "photos.npz")], device="cpu")
    assert "resizing photos images from 16x16 to 8x8 (bilinear, antialias)" in \
        capsys.readouterr().err
    ood = rows(run / "evaluation" / "ood.csv")
    assert {r["ood_set"] for r in ood} == {"photos"} and {r["n_out"] for r in ood} == {"12"}
    gray = fit_images(images, 1, 16, "x")  # no resizing: luminance only
    want = (torch.from_numpy(images).float() / 255 * torch.tensor(LUMINANCE).view(1, 3, 1, 1)
            ).sum(1, keepdim=True)
    torch.testing.assert_close(gray, want)
    assert fit_images(images[:, :1], 3, 16, "x").shape == (12, 3, 16, 16)


def test_noise_is_seeded_and_in_range():
    first, again = noise_images(9, 3, 8, seed=1), noise_images(9, 3, 8, seed=1)
    assert first.shape == (9, 3, 8, 8) and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, noise_images(9, 3, 8, seed=2))


def test_errors_are_one_line(run, capsys):
    for argv, said in [
        (["--shift", "corruptions", "--corruptions", "fogg"], "unknown corruption 'fogg'"),
        (["--shift", "corruptions", "--severities", "1,6"], "severities are ints from 1 to 5"),
        (["--shift", "corruptions", "--severities", "x"], "--severities takes integers"),
        (["--ood", "nothing.txt"], "--ood takes held-out, noise or a YAML/.npz"),
        ([], "give --data FILE, --shift corruptions"),
    ]:
        assert main(["evaluate", str(run), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and len(err.splitlines()) == 1, err
    assert not (run / "evaluation" / "shift.csv").exists()


def test_without_validation_or_classes(tmp_path, capsys):
    from colearning.training import train

    config = {**RUN, "data": {"name": "digits", "test_size": 40}}
    train(config_from_dict(config), run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="held-out needs a run trained on data.classes"):
        evaluate_uncertainty(tmp_path / "run", ood=["held-out"])
    capsys.readouterr()
    result = evaluate_uncertainty(tmp_path / "run", calibrate=True, device="cpu")
    assert "temperature scaling skipped" in capsys.readouterr().err  # a note, not an error
    content = json.loads((result.path / "calibration.json").read_text())
    assert content["temperature_ensemble"] is None and content["test/ensemble_ece_ts"] is None
    assert "data.val_size > 0" in content["note"] and content["selective/aurc"] >= 0
    assert "calibration/ensemble_ece_ts" not in result.summary


def test_train_evaluate_shift_end_to_end(tmp_path):
    import colearning

    config = {**RUN, "data": {**RUN["data"], "test_size": 30},
              "train": {**RUN["train"], "evaluate_shift": True}}
    run = colearning.train(config_from_dict(config), run_dir=tmp_path / "run")
    out = run.run_dir / "evaluation"
    table = rows(out / "shift.csv")
    assert len(table) == 1 + 17 * 5 and {r["images"] for r in table} == {"30"}
    assert {r["ood_set"] for r in rows(out / "ood.csv")} == {"noise", "held-out"}
    summary = json.loads((out / "summary.json").read_text())
    assert "ood/auroc_entropy" in summary and "calibration/ensemble_ece_ts" in summary
    stamp = (out / "summary.json").stat().st_mtime_ns
    colearning.resume(run.run_dir)  # finished and evaluated: nothing is computed again
    assert (out / "summary.json").stat().st_mtime_ns == stamp


def test_a_sweep_cell_and_a_resume_asking_for_it_evaluate(tmp_path):
    from colearning.sweep.cell import run_pack
    from colearning.training import train

    config = {**RUN, "data": {**RUN["data"], "test_size": 30},
              "train": {**RUN["train"], "evaluate_shift": True}}
    (outcome,) = run_pack([config_from_dict(config).to_dict()], [str(tmp_path / "cell")])
    assert outcome.status == "finished"
    assert (tmp_path / "cell" / "evaluation" / "summary.json").exists()
    plain = {**config, "train": RUN["train"]}
    train(config_from_dict(plain), run_dir=tmp_path / "plain")  # colearning.training: no hook
    assert not (tmp_path / "plain" / "evaluation").exists()
    assert main(["train", "--resume", str(tmp_path / "plain"), "train.evaluate_shift=true",
                 "--quiet"]) == 0  # a display key: asked for when the run is resumed
    assert (tmp_path / "plain" / "evaluation" / "shift.csv").exists()
