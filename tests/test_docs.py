"""The documentation cannot drift from the code: every Python block of README.md and docs/*.md
runs, every relative link resolves, the guide's config table names every config key, the API
page gives every public name with the signature the code has, and ``colearn train --help``
lists the config keys.

A Python block runs as a script in a fresh temporary directory (with ``configs/`` linked in,
so the shipped configs are found as from the repository root). A block that cannot run here
is fenced ```` ```python no-run ````; it is still compiled, and there may be only a few.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", flags=re.S | re.M)
TAGS = {"no-run"}  # what may follow ```python: the block is compiled but not run
MAX_NO_RUN = 3


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks() -> list[tuple[str, int, set[str], str]]:
    """(page, line, tags, code) of every ```python block in README.md and docs/*.md."""
    blocks = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((_name(page), line, set(match.group(1).split()), match.group(2)))
    return blocks


def _params():
    return [pytest.param(page, tags, code, id=f"{page}:{line}")
            for page, line, tags, code in python_blocks()]


# What some blocks print, checked beyond their exit status (a block is found by a string).
def _check_coupled_loss_loop(stdout: str, cwd: Path) -> None:
    lines = stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4"]


def _check_trained_run(stdout: str, cwd: Path) -> None:
    run_dir, accuracy = stdout.split("\n")[0].split()
    assert (cwd / run_dir / "summary.json").exists() and 0.0 <= float(accuracy) <= 1.0


CHECKS = {
    "loss = coupled_loss(logits, labels, beta=-0.2)": _check_coupled_loss_loop,
    "print(run.run_dir, run.summary": _check_trained_run,
}


def test_blocks_are_found_and_tags_are_known():
    blocks = python_blocks()
    assert len({page for page, *_ in blocks}) >= 3  # README.md, docs/api.md, docs/guide.md
    for page, line, tags, _ in blocks:
        assert tags <= TAGS, f"{page}:{line}: unknown tag {sorted(tags - TAGS)}; valid: {TAGS}"
    no_run = [f"{page}:{line}" for page, line, tags, _ in blocks if "no-run" in tags]
    assert len(no_run) <= MAX_NO_RUN, f"too many blocks are not run: {no_run}"
    for marker in CHECKS:  # a check that finds no block checks nothing
        assert any(marker in code for *_, code in blocks), marker


@pytest.mark.parametrize(("page", "tags", "code"), _params())
def test_python_block_runs(page, tags, code, tmp_path):
    compile(code, page, "exec")
    if "no-run" in tags:
        return
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    script = tmp_path / "block.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, f"{page}: {out.stderr[-3000:]}"
    for marker, check in CHECKS.items():
        if marker in code:
            check(out.stdout, tmp_path)


# Links: every relative link of a page points to a file, and every #anchor to a heading.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        name, count = slug(heading), 0
        while (name if not count else f"{name}-{count}") in found:
            count += 1
        found.add(name if not count else f"{name}-{count}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_resolve(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{_name(page)}: broken link {target}"
        if anchor:
            assert anchor in anchors(file), f"{_name(page)}: no heading #{anchor} in {path}"


# The config keys: the guide's table and `colearn train --help`, against the dataclasses.
def config_sections() -> dict[str, list[str]]:
    """Section -> field names of colearning.config.Config ("" for the top-level keys)."""
    from colearning.config import Config

    hints = typing.get_type_hints(Config)
    sections: dict[str, list[str]] = {"": []}
    for item in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[item.name]):
            sections[item.name] = [field.name for field in dataclasses.fields(hints[item.name])]
        else:
            sections[""].append(item.name)
    return sections


def config_keys() -> set[str]:
    return {f"{section}.{name}" if section else name
            for section, names in config_sections().items() for name in names}


def test_guide_table_names_every_config_key():
    text = (ROOT / "docs" / "guide.md").read_text()
    table = text.split("## Config keys", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for row in re.findall(r"^\| (.+?) \|", table, flags=re.M):
        documented |= set(re.findall(r"`([\w.]+)`", row))
    keys = config_keys()
    assert not keys - documented, f"docs/guide.md lacks config keys {sorted(keys - documented)}"
    assert not documented - keys, f"docs/guide.md names unknown keys {sorted(documented - keys)}"


def test_train_help_lists_the_config_keys(capsys):
    from colearning.arguments import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "docs/guide.md" in text
    for section, names in config_sections().items():
        listed = ", ".join(names)
        assert (f"{section}: {listed}" if section else listed) in text, section


# The API page: every public name, with the signature the code has.
def _annotation(annotation) -> str:
    if isinstance(annotation, typing.ForwardRef):  # a NamedTuple's field
        return annotation.__forward_arg__
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def render_signature(name: str, obj) -> str:
    """``name(parameter: annotation = default, ...) -> returned`` as the code declares it."""
    signature = inspect.signature(obj)
    parts, star = [], False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            star, text = True, "*" + parameter.name
        elif parameter.kind is parameter.VAR_KEYWORD:
            text = "**" + parameter.name
        else:
            if parameter.kind is parameter.KEYWORD_ONLY and not star:
                parts.append("*")
                star = True
            text = parameter.name
        if parameter.annotation is not parameter.empty:
            text += ": " + _annotation(parameter.annotation)
        if parameter.default is not parameter.empty:
            text += " = " + repr(parameter.default)
        parts.append(text)
    returned = ""
    if not inspect.isclass(obj) and signature.return_annotation is not signature.empty:
        returned = " -> " + _annotation(signature.return_annotation)
    return f"{name}({', '.join(parts)}){returned}"


def _has_signature(obj) -> bool:
    if inspect.isclass(obj):
        return not issubclass(obj, BaseException)
    return inspect.isfunction(obj)


def test_api_page_gives_every_public_name_with_its_signature():
    import colearning

    text = (ROOT / "docs" / "api.md").read_text()
    for name in colearning.__all__:
        heading = f"\n### `{name}`\n"
        assert heading in text, f"docs/api.md has no section ### `{name}`"
        obj = getattr(colearning, name)
        if _has_signature(obj):
            first = text.split(heading, 1)[1].strip().splitlines()[0]
            want = f"`{render_signature(name, obj)}`"
            assert first == want, f"docs/api.md, {name}: {first}\n  the code has: {want}"
