"""The layers hold: serving loads nothing of training, the core knows no adapter, no import cycles.

The worker scores with features, model, graph, serving kernels and artifact reading; loading
training, compression, evaluation, faiss or pandas there costs memory and start-up time in every
replica and couples a scoring change to a training one. Checked in a fresh interpreter, as a
process starts, and on the source's import statements for cycles.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ecseq", "worker", "compression_builder", "kafka_io", "demo", "ecseq_cli")
TRAINING = ("ecseq.compression", "ecseq.evaluation", "ecseq.encoders.training", "ecseq.gnn_training",
            "ecseq.relation", "ecseq.full_graph", "ecseq.data", "compression_builder")
HEAVY = ("faiss", "pandas", "matplotlib", "sklearn")


def _loaded_after(imports: str) -> list[str]:
    code = f"import sys, json; {imports}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("imports", [
    "import ecseq.online, ecseq.artifacts, ecseq.decoding, ecseq.history",  # the core's serving entry
    "import worker.app, worker.cli",  # the worker process
])
def test_serving_loads_no_training_and_no_heavy_library(imports):
    loaded = _loaded_after(imports)
    assert "ecseq.online" in loaded or "worker.app" in loaded  # the check itself ran
    wrong = sorted({name for name in loaded
                    if name.startswith(tuple(f"{p}." for p in TRAINING)) or name in TRAINING
                    or name.split(".")[0] in HEAVY})
    assert not wrong, f"serving loads {wrong[:12]}"


def test_the_core_imports_no_adapter():
    offenders = [f"{module} -> {target}" for module, targets in _imports().items() if module.startswith("ecseq.")
                 for target in targets if target.split(".")[0] in PACKAGES and not target.startswith("ecseq")]
    assert not offenders, offenders


def test_no_import_cycles_between_modules_or_subpackages():
    graph = _imports()
    assert _cycles(graph) == []
    # ecseq's subpackages (and top-level modules) as single nodes: encoders <-> evaluation was one
    packaged: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module.startswith("ecseq."):
            packaged.setdefault(_unit(module), set()).update(_unit(t) for t in targets if t.startswith("ecseq."))
    for unit, targets in packaged.items():
        targets.discard(unit)
    assert _cycles(packaged) == []


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                               else node.module for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
