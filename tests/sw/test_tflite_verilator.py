"""int8 .tflite models on the generated Verilog (Verilator): a few images each, bit for bit
equal to LiteRT's reference kernels (and so to the golden model)."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import run_quantized
from celosia.sw.importer import load_tflite
from tflite_cases import litert, mixed

pytest.importorskip("ai_edge_litert")

#: The 4x4 weight-stationary default, shared with the other Verilator tests (one cached build).
CONFIG = AccelConfig(rows=4, cols=4)


@pytest.mark.parametrize("name", ["digits_cnn_int8_conv.tflite", "digits_resnet_int8_conv.tflite",
                                  "digits_mlp_int8.tflite"])
def test_digits_tflite_on_verilator(name):
    """conv / maxpool, PAD + stride-2 conv / ADD / MEAN, and FULLY_CONNECTED layers (the PPU's
    single rounding, STORE single_round), bit for bit against LiteRT."""
    path = DATA_DIR / name
    model = load_tflite(path)
    x = digits_split()[1][:4].reshape(4, *model.input_shape)
    x_q = model.quantize_input(x)
    hw = run_quantized(model, x_q, CONFIG, backend="verilator")
    ref = litert(path.read_bytes(), x)
    np.testing.assert_array_equal(model.dequantize_output(hw.y_q), ref)


def test_mixed_tflite_model_on_verilator(tmp_path):
    """conv, depthwise, add, average pool (the exact divider), MEAN, a requantization and the
    classifier."""
    rng = np.random.default_rng(11)
    data, shape = mixed(rng)
    (tmp_path / "mixed.tflite").write_bytes(data)
    model = load_tflite(tmp_path / "mixed.tflite")
    x = rng.integers(-128, 128, (3, *shape)).astype(np.int8)
    x[0] = 127
    hw = run_quantized(model, x.reshape(3, -1), CONFIG, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, litert(data, x).reshape(3, -1))
