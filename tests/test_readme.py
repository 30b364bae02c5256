"""The README's commands and example are the ones CI runs and users copy."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert len(commands) == 2
    main, tests = commands
    assert "colearn train --config configs/quickstart.yaml" in main
    assert "[test]" not in main and 'pip install -e ".[test]"' in tests  # what each job needs
    assert tests.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_python_example_runs_as_printed():
    example = next(block for block in _blocks("python") if "coupled_loss" in block)
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4"]


def test_python_api_example_runs(tmp_path):
    example = next(block for block in _blocks("python") if "colearning.train(" in block)
    example = example.replace("configs/quickstart.yaml", str(ROOT / "configs/quickstart.yaml"))
    out = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir, accuracy = out.stdout.split()[-2:]
    assert (tmp_path / run_dir / "summary.json").exists() and 0.0 <= float(accuracy) <= 1.0
