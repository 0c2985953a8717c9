"""Quantized ONNX models (QDQ, QOperator) on the generated Verilog (Verilator): a few images each,
bit for bit equal to the golden model and within one step of onnxruntime (measured: equal)."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sim.golden.network import golden_forward
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import run_quantized
from celosia.sw.importer import load_onnx_quant
from test_qdq import exact_float_input, ort_int8

#: The 4x4 weight-stationary default, shared with the other Verilator tests (one cached build).
CONFIG = AccelConfig(rows=4, cols=4)


@pytest.mark.parametrize("name", ["digits_resnet_qop.onnx", "digits_cnn_qdq.onnx"])
def test_quantized_onnx_on_verilator(name):
    """conv (stride 2, padded) / ADD / GlobalAveragePool / QGemm, and conv / MaxPool / Flatten /
    Gemm with the NCHW row permutation; fc and conv with the PPU's single rounding."""
    path = DATA_DIR / name
    model = load_onnx_quant(path)
    x_q = model.quantize_input(digits_split()[1][:3].reshape(3, 1, 8, 8))
    hw = run_quantized(model, x_q, CONFIG, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden_forward(model, x_q))
    ref = ort_int8(path, exact_float_input(model, x_q, (1, 8, 8)), model)
    assert np.abs(hw.y_q.astype(np.int64) - ref).max() <= 1


def test_qonnx_on_verilator():
    """The QONNX digits CNN (Quant nodes): bit for bit equal to the golden model, within one
    step of qonnx's own executor (measured: equal)."""
    import onnx
    from test_qonnx import qonnx_int8

    path = DATA_DIR / "digits_cnn_qonnx.onnx"
    model = load_onnx_quant(path)
    x_q = model.quantize_input(digits_split()[1][:3].reshape(3, 1, 8, 8))
    hw = run_quantized(model, x_q, CONFIG, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden_forward(model, x_q))
    ref = qonnx_int8(onnx.load(path), exact_float_input(model, x_q, (1, 8, 8)), model)
    assert np.abs(hw.y_q.astype(np.int64) - ref).max() <= 1
