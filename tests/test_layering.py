"""The layering contract (``[tool.importlinter]`` in pyproject.toml, docs/architecture.md).

``sw > sim > rtl > errors``; ``sim.golden`` imports nothing else of ours but
``celosia.errors``; no library module imports ``examples``; no import cycles. The
contract is run with ``lint-imports`` as CI would; it must pass on the package and
fail on a copy of it with one deliberate forbidden import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
SIM_GOLDEN_CONTRACT = "sim.golden imports nothing else of ours (but celosia.errors)"


def lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_pass():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 4 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize("module, line, broken", [
    # rtl importing sim: upward across layers (also a cycle between celosia.rtl and celosia.sim).
    ("rtl/config.py", "import celosia.sim.job", "sw > sim > rtl > errors"),
    # the leaf importing anything of ours
    ("errors.py", "import celosia.rtl.isa", "sw > sim > rtl > errors"),
    # the golden model importing the rest of sim
    ("sim/golden/ops.py", "import celosia.sim.job", SIM_GOLDEN_CONTRACT),
    # the library importing an example script
    ("sw/cli.py", "import celosia.examples.digits", "library code does not import examples"),
    # sibling packages importing each other (driver imports quant)
    ("sw/quant/model.py", "import celosia.sw.driver", "no import cycles between sibling packages / modules"),
])
def test_a_forbidden_import_breaks_the_contract(tmp_path, module, line, broken):
    copy = tmp_path / "celosia"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "docs", "benchmarks", "build", "dist", "*.egg-info", "__pycache__",
        "*.onnx", "*.npz"))
    with open(copy / module, "a") as f:
        f.write(f"\n{line}  # deliberate: breaks the layering\n")
    proc = lint(copy, pythonpath=tmp_path)  # `celosia` is now the copy
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{broken} BROKEN" in proc.stdout, proc.stdout
    importer = "celosia." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {line.split()[1]}" in proc.stdout or "cycles" in broken, proc.stdout


def test_golden_contract_names_every_other_sim_module():
    """The forbidden list of the sim.golden contract is every module of celosia.sim but golden."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (golden,) = [c for c in contracts if c["name"] == SIM_GOLDEN_CONTRACT]
    graph = grimp.build_graph("celosia", cache_dir=None)
    siblings = {m for m in graph.find_children("celosia.sim") if m != "celosia.sim.golden"}
    assert siblings and siblings <= set(golden["forbidden_modules"])


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_on_a_hand_made_graph():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_module_level_import_cycles():
    """No module imports itself through others, lazy (in-function) imports included.

    acyclic_siblings looks at siblings; this looks at every module, so a cycle through a
    package's ``__init__`` and one of its own modules' importers is caught as well."""
    graph = grimp.build_graph("celosia", exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _cycles(edges) == []
