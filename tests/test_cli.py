"""The colearn command line: exit codes, one-line errors, the quick start."""

import json

import pytest

from colearning.cli import main


def test_train_quickstart_style_run_and_summary(tmp_path, capsys):
    code = main(["train", "--no-progress", "--run-dir", str(tmp_path / "r"), "data.name=digits",
                 "model.name=mlp", "train.epochs=1", "train.batch_size=256"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ensemble (mean)" in out and "mean JS distance" in out and "member 1" in out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["train", "loss.betta=1"], 2, "unknown config key loss.betta"),
        (["train", "model.name=resnet"], 2, "model.name='resnet' is not valid; valid:"),
        (["train", "data.name=mnist"], 2, "data.name='mnist' is not valid; valid:"),
        (["train", "ensemble.strategy=turbo"], 2, "valid: auto, loop, grouped, vmap"),
        (["train", "ensemble.n_members=0"], 2, "ensemble.n_members must be >= 1"),
        (["train", "--config", "missing.yaml"], 2, "does not exist"),
        (["train", "--resume", "."], 4, "is not a run directory"),
    ],
)
def test_errors_are_one_line_with_distinct_codes(argv, code, message, capsys, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_data_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    code = main(["train", "--no-progress", "data.name=imagefolder", f"data.path={bad}",
                 f"data.cache_dir={tmp_path / 'cache'}", "--run-dir", str(tmp_path / "r")])
    assert code == 3
    assert "broken.tar.gz" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ["--config", "--run-dir", "--resume", "--device", "--no-progress"]:
        assert option in text


def test_the_command_starts_without_importing_torch():
    """Ctrl-C while torch loads must reach main()'s one-line message: nothing heavy is
    imported before main() runs."""
    import subprocess
    import sys

    code = "import sys, colearning.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False"
    version = subprocess.run([sys.executable, "-m", "colearning", "--version"],
                             capture_output=True, text=True)
    from colearning import __version__

    assert version.returncode == 0 and __version__ in version.stdout + version.stderr


def test_a_batch_jobs_log_gets_one_line_per_epoch(tmp_path, capfd):
    """stderr to a file (not a terminal): one plain line per epoch, no bar redraws;
    --quiet: nothing on either stream."""
    import re

    from colearning.cli import main

    small = ["device=cpu", "model.name=mlp", "model.options={hidden: [16]}", "train.epochs=2",
             "train.batch_size=512", "train.analysis_every=0"]
    assert main(["train", "--run-dir", str(tmp_path / "log"), *small]) == 0
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if " epoch " in line or "epoch 1/" in line
             or "epoch 2/" in line]
    assert [re.match(r"colearn: epoch (\d)/2  loss [\d.]+  ensemble [\d.]+%  members [\d.]+%"
                     r"  JS [\d.]+  [\d.]+ s$", line).group(1) for line in lines] == ["1", "2"]
    assert "\r" not in err and "run:" in out
    assert main(["train", "--quiet", "--run-dir", str(tmp_path / "quiet"), *small]) == 0
    assert capfd.readouterr() == ("", "")
    assert (tmp_path / "quiet" / "summary.json").is_file()
