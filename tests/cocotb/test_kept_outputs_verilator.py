"""Layer outputs kept on chip, on the generated Verilog (cocotb + Verilator): the digits MLP's
hidden activations go from the store engine into the ifmap buffer (its second write port);
outputs bit-exact with the golden model with and without kept outputs, and the hardware's
DRAM counters equal to the bytes the program's instructions name, before and after."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import run


@pytest.fixture(scope="module")
def digits_mlp():
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, _, _ = digits_split()
    qmodel = quantize_graph(load_onnx(DATA_DIR / "digits_mlp.onnx"), x_train)
    return qmodel, x_test[:4]


def check_on_off(golden, on, off, runs, samples):
    """Both runs bit-exact; per inference (``runs`` runs, ``samples`` samples) the DRAM
    counters equal the static traffic, before and after; returns ``kept_outputs``."""
    np.testing.assert_array_equal(on.y_q, golden.y_q)
    np.testing.assert_array_equal(off.y_q, golden.y_q)
    kept = on.report["kept_outputs"]
    assert not off.report["kept_outputs"]["enabled"]
    for r in (on.report, off.report):
        roof = r["roofline"]
        assert r["dram_bytes_read"] == runs * roof["dram_read_bytes"]
        assert r["dram_bytes_written"] == runs * roof["dram_write_bytes"]
    assert (on.report["dram_bytes_read"] + on.report["dram_bytes_written"]) / samples == \
        kept["dram_bytes_per_inference"]
    assert (off.report["dram_bytes_read"] + off.report["dram_bytes_written"]) / samples == \
        kept["dram_bytes_per_inference_through_dram"]
    return kept


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie", "rs"])
@pytest.mark.parametrize("array", [4, 8])
def test_digits_mlp_hidden_outputs_stay_on_chip(digits_mlp, array, dataflow):
    qmodel, x = digits_mlp
    # the default config of the array (its Verilator model is shared with the other tests'
    # default configs, e.g. benchmarks/layers.py --quick)
    config = AccelConfig(rows=array, cols=array, dataflow=dataflow)
    golden = run(qmodel, x, config, backend="golden", batch=2)
    on = run(qmodel, x, config, backend="verilator", batch=2)
    off = run(qmodel, x, config, backend="verilator", batch=2, keep_outputs=False, profile=False)
    kept = check_on_off(golden, on, off, runs=2, samples=4)
    assert kept["layers"] == ["fc0", "fc1"]
    # fc0 and fc1 write nothing to DRAM: only the 10 logits per sample
    assert on.report["dram_bytes_written"] == 4 * 10
    print(f"digits_mlp {array}x{array} {dataflow}: DRAM bytes per inference "
          f"{kept['dram_bytes_per_inference_through_dram']:g} -> {kept['dram_bytes_per_inference']:g}; "
          f"cycles per run of 2 {off.report['cycles_per_run']} -> {on.report['cycles_per_run']}")


def test_digits_cnn_conv1_output_stays_on_chip():
    """conv -> conv kept (4x4 ws, the default config above: one shared model): conv1's
    STOREs write conv2's padded input rows, a LOAD of nothing but padding writes the border;
    bit-exact both ways, the DRAM counters equal the programs' static traffic."""
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, _, _ = digits_split()
    qmodel = quantize_graph(load_onnx(DATA_DIR / "digits_cnn.onnx"), x_train.reshape(-1, 1, 8, 8))
    x = x_test[:3].reshape(-1, 1, 8, 8)
    config = AccelConfig(rows=4, cols=4, dataflow="ws")
    golden = run(qmodel, x, config, backend="golden")
    on = run(qmodel, x, config, backend="verilator")
    off = run(qmodel, x, config, backend="verilator", keep_outputs=False, profile=False)
    kept = check_on_off(golden, on, off, runs=3, samples=3)
    assert kept["layers"] == [qmodel.layers[0].name]
    print(f"digits_cnn 4x4 ws: DRAM bytes per inference "
          f"{kept['dram_bytes_per_inference_through_dram']:g} -> {kept['dram_bytes_per_inference']:g}; "
          f"cycles per run {off.report['cycles_per_run']} -> {on.report['cycles_per_run']}")
