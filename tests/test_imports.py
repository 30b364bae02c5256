"""The import graph: one direction, no cycles (config -> ... -> training -> sweeps -> report
-> cli), function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "colearning"

# Lowest first. A module may import its own layer (without cycles) and the layers below.
LAYERS = [
    ("colearning.errors", "colearning.registry", "colearning.schedules", "colearning.yamlfiles",
     "colearning.environment", "colearning.plugins", "colearning.config_checks",
     "colearning.config",
     "colearning.seeding",
     "colearning.startup",
     "colearning.rundir"),
    ("colearning.models", "colearning.grouped", "colearning.losses", "colearning.couplings",
     "colearning.names",
     "colearning.combiners",
     "colearning.metrics", "colearning.data", "colearning.optim", "colearning.evaluation",
     "colearning.shift"),
    ("colearning.engine",),
    ("colearning.training",),
    ("colearning.sweep", "colearning.expand", "colearning.bench", "colearning.inference",
     "colearning.distillation"),
    ("colearning.report",),
    ("colearning.console", "colearning.arguments", "colearning.cli", "colearning.entry",
     "colearning.__main__"),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "colearning":
                    edges[name].add(target)
    return edges


def layer(module: str) -> int:
    for level, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py; add it")


def test_every_import_goes_down_the_layers():
    wrong = [f"{a} -> {b}" for a, targets in graph().items() if a != "colearning"
             for b in targets if layer(b) > layer(a)]
    assert not wrong, "imports against the layer order: " + "; ".join(sorted(wrong))


def test_no_import_cycles():
    edges = {a: b for a, b in graph().items() if a != "colearning"}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_training_does_not_import_the_compiler():
    # torch._dynamo costs ~1.5 s per process start (every sweep worker, rank and command);
    # it is imported only when train.compile asks for it
    import subprocess
    import sys

    code = ("import sys, colearning.training, colearning.sweep.runner, colearning.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', "
            "'torch._inductor'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
