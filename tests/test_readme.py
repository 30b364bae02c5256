"""The README: a newcomer's five minutes (short, with a table of contents), and the set-up
commands CI runs and users copy. Its Python block runs in tests/test_docs.py, with every
other block of the docs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAX_LINES = 250


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


def test_readme_is_short_with_a_table_of_contents():
    assert len(README.splitlines()) <= MAX_LINES
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"\]\(#([\w-]+)\)", contents)
    sections = [heading for heading in re.findall(r"^## (.+)$", README, flags=re.M)
                if heading != "Contents"]
    assert listed == [re.sub(r"[^\w\- ]", "", s.lower()).replace(" ", "-") for s in sections]


def test_readme_shows_own_model_on_own_arrays_and_links_every_docs_page():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert any("register_model" in block and "colearning.train(" in block for block in blocks)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in README, f"the README does not link docs/{page.name}"
