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
    np.testing.assert_array_equal(on.y_q, golden.y_q)
    np.testing.assert_array_equal(off.y_q, golden.y_q)
    kept = on.report["kept_outputs"]
    assert kept["layers"] == ["fc0", "fc1"] and not off.report["kept_outputs"]["enabled"]
    # per inference (2 runs of 2): the counters equal the static traffic, before and after
    for r in (on.report, off.report):
        roof = r["roofline"]
        assert r["dram_bytes_read"] == 2 * roof["dram_read_bytes"]
        assert r["dram_bytes_written"] == 2 * roof["dram_write_bytes"]
    assert (on.report["dram_bytes_read"] + on.report["dram_bytes_written"]) / 4 == \
        kept["dram_bytes_per_inference"]
    assert (off.report["dram_bytes_read"] + off.report["dram_bytes_written"]) / 4 == \
        kept["dram_bytes_per_inference_through_dram"]
    # fc0 and fc1 write nothing to DRAM: only the 10 logits per sample
    assert on.report["dram_bytes_written"] == 4 * 10
    print(f"digits_mlp {array}x{array} {dataflow}: DRAM bytes per inference "
          f"{kept['dram_bytes_per_inference_through_dram']:g} -> {kept['dram_bytes_per_inference']:g}; "
          f"cycles per run of 2 {off.report['cycles_per_run']} -> {on.report['cycles_per_run']}")
