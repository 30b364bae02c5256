"""colearn evaluate: a run's metrics on other data, written beside the run and nowhere else."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from colearning import rundir
from colearning.cli import main
from colearning.data import load_dataset
from colearning.errors import ConfigError
from colearning.evaluation import METRICS
from colearning.inference import evaluate_run


def digests(run_dir):
    """sha256 of every file of a run directory but its evaluations (and the lock file,
    whose content is the pid of the last process that held the lock)."""
    return {str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(run_dir.rglob("*")) if path.is_file()
            and path.parts[len(run_dir.parts)] != "evaluation" and path.name != rundir.LOCK}


def test_evaluate_on_a_config_writes_every_metric_beside_the_run(run_copy, tmp_path, capsys):
    config = tmp_path / "config.yaml"  # a whole config: only its data section counts
    config.write_text("seed: 7\ndata:\n  name: digits\nmodel:\n  name: mlp\n")
    before = digests(run_copy)
    assert main(["evaluate", str(run_copy), "--data", str(config), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "data: digits, test side, 360 images; checkpoint: final" in out
    assert "ensemble (mean)" in out and "member 1" in out
    folder = run_copy / "evaluation" / "digits"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.npz"]
    assert digests(run_copy) == before  # the run's own files are untouched
    metrics = json.loads((folder / "metrics.json").read_text())
    assert all(f"eval/{name}" in metrics for name in METRICS.ordered())
    assert metrics["data"] == "digits" and metrics["split"] == "test"
    assert metrics["images"] == 360 and metrics["epochs_completed"] == 2
    # the digits test side is the run's own test split: the run's own final metrics
    summary = json.loads((run_copy / "summary.json").read_text())
    for name in METRICS.ordered():
        np.testing.assert_allclose(np.asarray(metrics[f"eval/{name}"], float),
                                   np.asarray(summary[f"test/{name}"], float), atol=1e-5)
    with np.load(folder / "predictions.npz") as got, np.load(run_copy / "predictions.npz") as own:
        np.testing.assert_allclose(got["log_probs"], own["log_probs"], atol=1e-5)
        assert np.array_equal(got["labels"], own["labels"])

    # again: the same outputs replaced atomically (no temporary files left), nothing else
    assert main(["evaluate", str(run_copy), "--data", str(config), "--device", "cpu"]) == 0
    again = json.loads((folder / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if k != "date"} == \
        {k: v for k, v in metrics.items() if k != "date"}
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "predictions.npz"]
    assert digests(run_copy) == before


def test_the_best_epoch_is_evaluated_into_its_own_folder(run_copy, tmp_path, capsys):
    (tmp_path / "digits.yaml").write_text("data:\n  name: digits\n")
    assert main(["evaluate", str(run_copy), "-d", str(tmp_path / "digits.yaml"),
                 "--epoch", "best"]) == 0
    assert "checkpoint: best" in capsys.readouterr().out
    metrics = json.loads((run_copy / "evaluation" / "digits-best" / "metrics.json").read_text())
    best = metrics["best_epoch"]
    assert metrics["epoch"] == "best" and best == json.loads(
        (run_copy / "summary.json").read_text())["best_epoch"]
    record = rundir.read_metrics(run_copy / rundir.METRICS)[best - 1]  # its epoch's metrics
    for name in METRICS.ordered():
        np.testing.assert_allclose(np.asarray(metrics[f"eval/{name}"], float),
                                   np.asarray(record[f"test/{name}"], float), atol=1e-5)


def test_an_npz_and_a_data_section_and_the_tags(run_copy, tmp_path):
    raw = load_dataset("digits")
    data = tmp_path / "held out.npz"  # channels-last float images, as a user may have them
    np.savez(data, x_train=raw.train_x[:50].transpose(0, 2, 3, 1) / 255.0,
             y_train=raw.train_y[:50], x_test=raw.test_x.transpose(0, 2, 3, 1) / 255.0,
             y_test=raw.test_y, x_val=raw.train_x[50:80], y_val=raw.train_y[50:80])
    from_npz = evaluate_run(run_copy, data, device="cpu")
    assert from_npz.path == run_copy / "evaluation" / "held-out"
    assert from_npz.metrics["data"] == "arrays" and from_npz.metrics["images"] == 360
    section = tmp_path / "data.yaml"  # a bare data section
    section.write_text("name: digits\n")
    from_yaml = evaluate_run(run_copy, section, device="cpu")
    torch.testing.assert_close(from_npz.log_probs, from_yaml.log_probs, rtol=0, atol=1e-5)
    assert evaluate_run(run_copy, data, split="val").path.name == "held-out-val"
    whole = evaluate_run(run_copy, data, split="all", name="mine")
    assert whole.path.name == "mine" and whole.metrics["images"] == 50 + 360 + 30
    memory = evaluate_run(run_copy, (raw.train_x, raw.train_y, raw.test_x[:9], raw.test_y[:9]),
                          name="nine")
    assert memory.log_probs.shape == (2, 9, 10)
    assert sorted(p.name for p in (run_copy / "evaluation").iterdir()) == [
        "digits", "held-out", "held-out-val", "mine", "nine"]


def test_data_the_members_cannot_take_is_refused_and_nothing_is_written(run_copy):
    raw = load_dataset("digits")
    big = np.repeat(np.repeat(raw.test_x, 2, axis=2), 2, axis=3)  # 16x16
    for data, message in [
        ((big, raw.test_y, big, raw.test_y), "1-channel 16x16 images but the run's members "
                                             "take 1-channel 8x8 images"),
        ((raw.test_x, raw.test_y + 5, raw.test_x, raw.test_y + 5),
         "labels up to 14 but the run's members know 10 classes"),
    ]:
        with pytest.raises(ConfigError) as error:
            evaluate_run(run_copy, data, name="bad")
        assert message in str(error.value) and "\n" not in str(error.value)
    assert not (run_copy / "evaluation").exists()


@pytest.mark.parametrize("argv, code, message", [
    (["--data", "missing.yaml"], 2, "config file missing.yaml does not exist"),
    (["--data", "missing.npz"], 2, "data file missing.npz does not exist"),
    (["--data", "notes.txt"], 2, "--data takes a YAML file"),
    (["--data", "empty.yaml"], 2, "names no dataset"),
    (["--data", "typo.yaml"], 2, "unknown config key data.nme"),
    (["--data", "digits.yaml", "--split", "val"], 2, "the data has no val side"),
    (["--data", "digits.yaml", "--name", "../up"], 2, "--name '../up' must be one folder"),
    (["--data", "digits.yaml", "--batch-size", "0"], 2, "batch_size must be an integer >= 1"),
])
def test_errors_are_one_line(run_copy, tmp_path, monkeypatch, capsys, argv, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("seed: 1\n")
    (tmp_path / "typo.yaml").write_text("data:\n  nme: digits\n")
    (tmp_path / "digits.yaml").write_text("data:\n  name: digits\n")
    assert main(["evaluate", str(run_copy), *argv]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (run_copy / "evaluation").exists()


def test_a_run_in_use_or_no_run_is_refused(run_copy, tmp_path, capsys):
    (tmp_path / "digits.yaml").write_text("data:\n  name: digits\n")
    with rundir.locked(run_copy):  # a training resuming it
        assert main(["evaluate", str(run_copy), "--data", str(tmp_path / "digits.yaml")]) == 4
    assert "is in use by another process" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--data", str(tmp_path / "digits.yaml")]) == 4
    assert "is not a run directory" in capsys.readouterr().err
