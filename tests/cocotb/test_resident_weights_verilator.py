"""Resident weights on the generated Verilog (cocotb + Verilator): the driver runs the
initialization graph once per job, then the inferences; outputs bit-exact with the golden
model, with and without resident weights, and the hardware's DRAM counters equal to the
bytes the program's instructions name (init once, per inference less)."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import run

#: The default 4x4 configs (a 1024-row weight buffer: the digits models' later layers stay
#: resident; their Verilator models are shared with the other tests' default configs).
CONFIGS = {df: AccelConfig(rows=4, cols=4, dataflow=df) for df in ("ws", "feie", "rs")}


@pytest.mark.parametrize("name, dataflow", [("digits_mlp", "ws"), ("digits_cnn", "ws"),
                                            ("digits_cnn", "feie"), ("digits_cnn", "rs")])
def test_digits_init_once_then_inferences(name, dataflow):
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, _, _ = digits_split()
    graph = load_onnx(DATA_DIR / f"{name}.onnx")
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    qmodel = quantize_graph(graph, x_train.reshape(-1, *shape))
    x = x_test[:5].reshape(-1, *shape)
    config = CONFIGS[dataflow]
    golden = run(qmodel, x, config, backend="golden")
    on = run(qmodel, x, config, backend="verilator")
    off = run(qmodel, x, config, backend="verilator", resident_weights=False, profile=False)
    np.testing.assert_array_equal(on.y_q, golden.y_q)
    np.testing.assert_array_equal(off.y_q, golden.y_q)
    r_on, r_off = on.report, off.report
    res = r_on["resident_weights"]
    assert res["layers"] and set(res["layers"]) <= {l.name for l in qmodel.layers if l.is_gemm}
    # the init graph ran once (one job), reading what its LOADs and fetch name
    assert r_on["init"]["runs"] == 1 and "init" not in r_off
    assert r_on["init"]["dram_bytes_read"] == res["init_dram_bytes"]
    # per inference (5 runs of 1): the counters equal the static traffic, before and after
    for r in (r_on, r_off):
        roof = r["roofline"]
        assert r["dram_bytes_read"] == 5 * roof["dram_read_bytes"]
        assert r["dram_bytes_written"] == 5 * roof["dram_write_bytes"]
    assert (r_on["dram_bytes_read"] + r_on["dram_bytes_written"]) / 5 == res["dram_bytes_per_inference"]
    assert (r_off["dram_bytes_read"] + r_off["dram_bytes_written"]) / 5 == \
        res["dram_bytes_per_inference_streamed"]
    assert res["dram_bytes_per_inference"] < res["dram_bytes_per_inference_streamed"]
    print(f"{name} {dataflow}: DRAM bytes per inference {res['dram_bytes_per_inference_streamed']:g} -> "
          f"{res['dram_bytes_per_inference']:g}; init {res['init_dram_bytes']} B; cycles per inference "
          f"{r_off['cycles_per_run']} -> {r_on['cycles_per_run']}")
