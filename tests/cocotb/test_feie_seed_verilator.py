"""Seed 003's FEIE example through ``celosia run`` on the Verilator back end (issue 11): a
1-channel 1x3 convolution over a 2x8 input, one output channel, dense and with X6..X11
zero, on the feie array. The seed's table takes 16 cycles dense and 10 with the zeros
skipped; the report's ``mac_cycles`` (MAC_CYCLES: cycles in which the array multiplies an
input) gives those, ``zero_skips`` the 6 skipped inputs, and the outputs equal the golden
model's."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from celosia.rtl.config import AccelConfig
from celosia.sw.driver import run
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph


def seed_model(path):
    """Conv 1x3 (W1, W2, W3), 1 -> 1 channel, over a 1x2x8 input (NCHW), no padding."""
    w = np.array([0.5, -0.25, 0.75], dtype=np.float32).reshape(1, 1, 1, 3)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "k"], ["y"], name="conv", kernel_shape=[1, 3])],
                              "seed003",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 2, 6])],
                              [numpy_helper.from_array(w, "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def run_cli(tmp_path, x_name, backend, array):
    proc = subprocess.run([sys.executable, "-m", "celosia.sw.cli", "run", "seed.onnx", "--calib", "calib.npy",
                           "--input", x_name, "--dataflow", "feie", "--array", array, "--backend", backend,
                           "--out", f"y_{backend}.npy", "--report", f"r_{backend}.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return (json.loads((tmp_path / f"r_{backend}.json").read_text()), np.load(tmp_path / f"y_{backend}.npy"),
            proc.stdout)


# 4x4 is the accelerator tests/cocotb/test_accelerator_verilator.py builds (rows 3..5 give one
# group of 3 PEs for a 3-tap row, as the seed's); 3x1 is the seed's own shape (slow: a build).
@pytest.mark.parametrize("array", ["4x4", pytest.param("3x1", marks=pytest.mark.slow)])
def test_seed_example_16_and_10_mac_cycles(tmp_path, array):
    seed_model(tmp_path / "seed.onnx")
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 2, 8)      # X1..X16
    sparse = x.copy()
    sparse.reshape(-1)[5:11] = 0                                      # X6..X11
    np.save(tmp_path / "dense.npy", x)
    np.save(tmp_path / "sparse.npy", sparse)
    np.save(tmp_path / "calib.npy", np.concatenate([x, sparse]))
    qmodel = quantize_graph(load_onnx(tmp_path / "seed.onnx"), np.load(tmp_path / "calib.npy"))
    for name, mac_cycles, skips in (("dense.npy", 16, 0), ("sparse.npy", 10, 6)):
        report, y, out = run_cli(tmp_path, name, "verilator", array)
        golden = run(qmodel, np.load(tmp_path / name), AccelConfig(dataflow="feie"), backend="golden")
        np.testing.assert_array_equal(y, golden.y.astype(np.float32))
        assert report["mac_cycles"] == mac_cycles and report["zero_skips"] == skips
        (layer,) = report["layers"]
        assert layer["mac_cycles"] == mac_cycles and layer["zero_skips"] == skips
        assert f"MAC cycles {mac_cycles}, skipped for zero inputs {skips}" in out
