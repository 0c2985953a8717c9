"""A corpus of malformed (and awkward but valid) models and inputs, built by script.

Issue 14 ("nothing crashes, nothing silently wrong"): every case is something a new
user may well hand the CLI. :func:`build` writes the files into a folder with
``onnx.helper`` / ``numpy.save`` (nothing is downloaded); :data:`CASES` lists, per
case, the ``celosia`` command line (paths relative to that folder), what must happen
and the words the one-line message must contain (the culprit: file, node, tensor or
field). ``tests/sw/test_cli.py`` runs them all.

Run ``python tests/malformed.py DIR`` to write the corpus into ``DIR`` and try it by hand.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Case", "CASES", "build", "save_model"]

#: Input shape (NCHW) of the small conv models.
IMG = (1, 8, 8)


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    ``argv``: the ``celosia`` arguments (files relative to the corpus folder);
    ``outcome``: ``"error"`` (exit 1, one line naming ``fragments``), ``"warning"``
    (exit 0, a ``warning:`` line naming ``fragments``) or ``"ok"`` (exit 0);
    ``strict``: with ``--strict`` added the warning must become an error.
    """

    name: str
    argv: tuple[str, ...]
    outcome: str
    fragments: tuple[str, ...] = ()
    strict: bool = False


def save_model(path: Path, nodes, inits, inputs, outputs, opset: int = 13) -> Path:
    """Write a model built from ``onnx.helper`` parts (no checking: some are meant to be bad)."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _x(shape=(None, *IMG), name="x", elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _y(shape=(None, 4, 8, 8), name="y"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _kernel(rng, name="k", cout=4, dtype=np.float32):
    return numpy_helper.from_array(rng.standard_normal((cout, IMG[0], 3, 3)).astype(dtype), name)


def _conv(out="c"):
    return helper.make_node("Conv", ["x", "k"], [out], name="conv", kernel_shape=[3, 3], pads=[1] * 4)


def build(folder: Path) -> Path:
    """Write every file :data:`CASES` refers to into ``folder``; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(14)
    k = _kernel(rng)

    # Row 1: MaxPool ceil_mode=1, without and with pads (valid; must run bit-exact).
    for pads in (0, 1):
        save_model(folder / f"maxpool_ceil_p{pads}.onnx",
                   [_conv(), helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3],
                                              strides=[2, 2], ceil_mode=1, pads=[pads] * 4)],
                   [k], [_x()], [_y([None, 4, None, None])])
    save_model(folder / "avgpool_ceil_overhang.onnx",
               [_conv(), helper.make_node("AveragePool", ["c"], ["y"], name="avg_ceil", kernel_shape=[3, 3],
                                          strides=[2, 2], ceil_mode=1)],
               [k], [_x()], [_y([None, 4, None, None])])

    # Row 2: degenerate calibration data.
    np.save(folder / "img.npy", rng.random((4, *IMG), dtype=np.float32))
    np.save(folder / "calib.npy", rng.random((128, *IMG), dtype=np.float32))
    np.save(folder / "img1.npy", rng.random((1, *IMG), dtype=np.float32))
    np.save(folder / "repeated.npy", np.repeat(rng.random((1, *IMG), dtype=np.float32), 128, axis=0))
    np.save(folder / "zeros.npy", np.zeros((16, *IMG), np.float32))
    np.save(folder / "negative.npy", -rng.random((128, *IMG), dtype=np.float32) - 0.1)
    save_model(folder / "conv_relu.onnx",
               [helper.make_node("Conv", ["x", "k1"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
                helper.make_node("Relu", ["c"], ["y"], name="relu")],
               [numpy_helper.from_array(np.abs(rng.standard_normal((4, 1, 3, 3))).astype(np.float32), "k1")],
               [_x()], [_y([None, 4, 8, 8])])

    # Row 7: input tensors, graph structure, types.
    save_model(folder / "input_no_shape.onnx", [_conv("y")], [k],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [_y()])
    save_model(folder / "output_no_shape.onnx", [_conv("y")], [k], [_x()], [_y(None)])
    save_model(folder / "input_zero_dim.onnx", [_conv("y")], [k], [_x((None, 1, 0, 8))], [_y()])
    save_model(folder / "input_symbolic_dim.onnx", [_conv("y")], [k], [_x((None, 1, "h", 8))], [_y()])
    save_model(folder / "cycle.onnx",  # relu_a and relu_b read each other's output
               [_conv(), helper.make_node("Add", ["c", "b"], ["a"], name="add_ab"),
                helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
                helper.make_node("Relu", ["b"], ["y"], name="relu_out")],
               [k], [_x()], [_y()])
    save_model(folder / "float64_init.onnx", [_conv("y")], [_kernel(rng, dtype=np.float64)], [_x()], [_y()])
    save_model(folder / "int64_init.onnx", [_conv("y")], [_kernel(rng, dtype=np.int64)], [_x()], [_y()])
    return folder


def _run(model, *more):
    return ("run", model, "--input", "img.npy", "--calib", "calib.npy", *more)


#: Every case of the corpus.
CASES = [
    Case("maxpool_ceil", _run("maxpool_ceil_p0.onnx"), "ok"),
    Case("maxpool_ceil_pads", _run("maxpool_ceil_p1.onnx"), "ok"),
    Case("avgpool_ceil_overhang", _run("avgpool_ceil_overhang.onnx"), "error",
         ("avgpool_ceil_overhang.onnx", "avg_ceil", "ceil_mode")),
    Case("calib_all_zero", ("run", "conv_relu.onnx", "--input", "img.npy", "--calib", "zeros.npy"),
         "warning", ("zeros.npy", "'x'", "constant"), strict=True),
    Case("calib_one_sample_repeated", ("run", "conv_relu.onnx", "--input", "img.npy", "--calib", "repeated.npy"),
         "warning", ("repeated.npy", "'x'", "1 distinct"), strict=True),
    Case("calib_too_few", ("run", "conv_relu.onnx", "--input", "img.npy", "--calib", "img1.npy"),
         "warning", ("img1.npy", "1 sample"), strict=True),
    Case("calib_range_collapsed", ("run", "conv_relu.onnx", "--input", "img.npy", "--calib", "negative.npy"),
         "warning", ("negative.npy", "node 'conv'", "one value"), strict=True),
    Case("compile_calib_all_zero", ("compile", "conv_relu.onnx", "--calib", "zeros.npy", "--summary"),
         "warning", ("zeros.npy", "'x'"), strict=True),
    Case("out_dev_full", _run("conv_relu.onnx", "--out", "/dev/full"), "error", ("/dev/full",)),
    Case("out_missing_folder", _run("conv_relu.onnx", "--out", "nowhere/o.npy"), "error", ("nowhere",)),
    Case("compile_dram_too_small", ("compile", "conv_relu.onnx", "--calib", "calib.npy", "--set", "dram_bytes=1024"),
         "error", ("dram_bytes=1024", "bytes")),
    Case("run_dram_too_small", _run("conv_relu.onnx", "--set", "dram_bytes=1024"), "error",
         ("dram_bytes=1024", "bytes")),
    Case("verilator_dram_too_small", _run("conv_relu.onnx", "--backend", "verilator", "--set", "dram_bytes=1024"),
         "error", ("dram_bytes=1024", "bytes")),
    Case("golden_unmappable_config", _run("conv_relu.onnx", "--set", "ifmap_rows=2"), "error",
         ("ifmap_rows",)),
    Case("input_no_shape", _run("input_no_shape.onnx"), "error", ("input_no_shape.onnx", "'x'", "shape")),
    Case("output_no_shape", _run("output_no_shape.onnx"), "error", ("output_no_shape.onnx", "'y'", "shape")),
    Case("input_zero_dim", _run("input_zero_dim.onnx"), "error", ("input_zero_dim.onnx", "'x'", "0")),
    Case("input_symbolic_dim", _run("input_symbolic_dim.onnx"), "error",
         ("input_symbolic_dim.onnx", "'x'", "symbolic", "h")),
    Case("graph_cycle", _run("cycle.onnx"), "error", ("cycle.onnx", "add_ab")),
    Case("float64_initializer", _run("float64_init.onnx"), "error", ("float64_init.onnx", "conv")),
    Case("int64_initializer", _run("int64_init.onnx"), "error", ("int64_init.onnx", "conv")),
    Case("input_and_random", ("run", "conv_relu.onnx", "--input", "img.npy", "--random", "3"), "error",
         ("--input", "--random")),
]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/malformed.py DIR")
    print(build(Path(sys.argv[1])))
