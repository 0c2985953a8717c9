"""The wheel holds every runtime file: a regular install (not editable) runs the demo.

Builds the wheel from a copy of the source tree (so no build/ or *.egg-info lands in
the checkout) with ``python -m build --wheel --no-isolation`` and checks its file
list: every package's modules, the Verilator back end's C++ harness, the bundled
demo models and the digits data split.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = (".venv", ".git", "tests", "build", "dist", "__pycache__")

#: Non-Python files the library opens at run time, as paths inside the wheel.
RUNTIME_FILES = [
    "celosia/sim/harness.cpp",
    "celosia/boards/board_harness.cpp",
    "celosia/sw/data/digits_mlp.onnx",
    "celosia/sw/data/digits_cnn.onnx",
    "celosia/sw/data/digits_resnet.onnx",
    "celosia/sw/data/digits_split.npz",
    "celosia/sw/data/digits_mlp_int8.tflite",
    "celosia/sw/data/digits_cnn_int8.tflite",
    "celosia/sw/data/digits_cnn_int8_conv.tflite",
    "celosia/sw/data/digits_resnet_int8.tflite",
    "celosia/sw/data/digits_resnet_int8_conv.tflite",
] + [f"celosia/sw/data/digits_{m}_{f}.onnx" for m in ("mlp", "cnn", "resnet") for f in ("qdq", "qop")] \
    + ["celosia/sw/data/digits_cnn_qonnx.onnx"]


def _source_modules() -> list[str]:
    """Every .py file of every package (folder with an __init__.py) in the checkout, as a wheel
    path (the repository root is the package ``celosia``)."""
    out = []
    for init in ROOT.rglob("__init__.py"):
        pkg = init.parent
        rel = pkg.relative_to(ROOT)
        if any(part in SKIP or part.endswith(".egg-info") for part in rel.parts):
            continue
        out += [str(Path("celosia", rel, py.name)) for py in pkg.glob("*.py")]
    return sorted(out)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> dict[str, str | None]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*SKIP, "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("celosia-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = {n: None for n in z.namelist()}
        for n in names:
            if n.endswith(".dist-info/entry_points.txt"):
                names[n] = z.read(n).decode()
        return names


def test_source_tree_listing_is_sane():
    modules = _source_modules()
    assert "celosia/__init__.py" in modules and "celosia/errors.py" in modules
    assert "celosia/sw/graph/ir.py" in modules and not any("/tests/" in m for m in modules)


def test_wheel_has_every_module(wheel_names):
    missing = [m for m in _source_modules() if m not in wheel_names]
    assert not missing, f"not in the wheel: {missing}"


def test_wheel_has_the_runtime_files(wheel_names):
    missing = [f for f in RUNTIME_FILES if f not in wheel_names]
    assert not missing, f"not in the wheel: {missing}"


def test_runtime_files_exist_in_the_checkout():
    """The list above names real files (the wheel check would be vacuous otherwise)."""
    for f in RUNTIME_FILES:
        assert (ROOT / Path(f).relative_to("celosia")).is_file(), f


def test_wheel_has_the_console_script(wheel_names):
    (text,) = [t for n, t in wheel_names.items() if n.endswith(".dist-info/entry_points.txt")]
    assert "celosia = celosia.sw.cli:main" in text
