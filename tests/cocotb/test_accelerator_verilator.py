"""The whole accelerator as Verilog, under cocotb + Verilator, against the golden model.

Each configuration's Verilog is generated, built once (cached by the hash of the
Verilog) and runs compiled programs through the cocotb bench
(celosia.sim.verilator_bench). The weight buffers are the smallest allowed (two
tiles), so every layer here has more weights than the weight buffer holds.
"""

import numpy as np
import pytest

from celosia.sw.data import digits_split
from celosia.sw.demo import MODEL
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Csr
from celosia.sim import verilator
from celosia.sim.job import Job, Run
from celosia.sw.driver import golden_forward, pgo_training_job, run, run_quantized
from celosia.sw.graph import run_float
from celosia.sw.importer import load_onnx
from celosia.sw.quant import QModel, quantize_graph
from celosia.sw.zoo import conv_layer as float_conv_layer, tiny_cnn
from layer_cases import CONV_CASES, conv_layer, hw_macs, random_fc_model

ARRAYS = [(2, 2), (4, 4), (8, 8), (4, 8)]


def small_config(rows, cols, dataflow="ws"):
    """The default config of the array and dataflow: one Verilator model per (array,
    dataflow), shared by these tests and the other Verilator tests (kept outputs, resident
    weights, ``benchmarks/layers.py --quick``). Weights are resident where they fit, as a
    user runs it; tests/cocotb/test_resident_weights_verilator.py and
    test_kept_outputs_verilator.py also run every weight streamed."""
    return AccelConfig(rows=rows, cols=cols, dataflow=dataflow)


@pytest.fixture(scope="module")
def digits():
    x_train, x_test, y_train, y_test = digits_split()
    graph = load_onnx(MODEL)
    qmodel = quantize_graph(graph, x_train)
    return graph, qmodel, x_test, y_test


@pytest.mark.parametrize("rows,cols", ARRAYS, ids=[f"{r}x{c}" for r, c in ARRAYS])
def test_digits_mlp_bit_exact(digits, rows, cols):
    graph, qmodel, x_test, y_test = digits
    config = small_config(rows, cols)
    n = 32
    golden = run(qmodel, x_test, config, backend="golden")
    hw = run(qmodel, x_test[:n], config, backend="verilator")
    assert hw.y_q.shape == (n, 10)
    np.testing.assert_array_equal(hw.y_q, golden.y_q[:n])
    # Accuracy: int8 (golden, all held-out images) within 2 points of float.
    float_acc = (run_float(graph, x_test).argmax(1) == y_test).mean()
    int8_acc = (golden.y.argmax(1) == y_test).mean()
    assert int8_acc >= float_acc - 0.02
    # Counters against independent figures.
    rep = hw.report
    macs = sum(layer.in_features * layer.out_features for layer in qmodel.layers) * n
    assert rep["macs"] == macs and rep["hw_macs"] == macs
    assert rep["utilization"] == pytest.approx(macs / (rep["cycles"] * rows * cols))
    # Every streamed weight, parameter and input byte is read at least once per run; every output byte
    # written, except the hidden layers' where they stay on chip (rows % cols == 0: a
    # cols-channel output tile fits one ifmap row; docs/compiler.md, kept outputs).
    kept = rows % cols == 0
    assert rep["kept_outputs"]["layers"] == (["fc0", "fc1"] if kept else [])
    out_bytes = n * qmodel.out_features + (0 if kept else n * sum(l.out_features for l in qmodel.layers[:-1]))
    assert rep["dram_bytes_written"] == out_bytes
    # (the resident layers' weights: once per job, by the initialization graph)
    resident = set(rep["resident_weights"]["layers"])
    streamed = sum(l.w.size for l in qmodel.layers if l.name not in resident)
    assert rep["dram_bytes_read"] >= n * (streamed + qmodel.in_features)
    if resident:
        assert rep["init"]["runs"] == 1
        assert rep["init"]["dram_bytes_read"] >= sum(l.w.size for l in qmodel.layers if l.name in resident)
    # The array is busy at least one cycle per MAC row: (k_len + m_len) per GEMM >= macs / (rows * cols).
    assert rep["compute_busy"] >= macs / (rows * cols)
    assert sum(layer["cycles"] for layer in rep["layers"]) == rep["cycles_per_run"]


@pytest.mark.parametrize("rows,cols", [(4, 4), (4, 8)], ids=["4x4", "4x8"])
@pytest.mark.parametrize("batch", [1, 3])
def test_odd_shapes_and_big_weights(rows, cols, batch):
    """K and N not multiples of the array; 37x29 weights against a 2-tile weight buffer
    (weight groups of one tile, every weight streamed)."""
    rng = np.random.default_rng(rows * 100 + cols + batch)
    model = random_fc_model(rng, [37, 29, 11])
    config = AccelConfig(rows=rows, cols=cols, weight_rows=2 * rows, dram_bytes=1 << 18)
    assert 37 * 29 > config.weight_rows * cols  # the layer does not fit the weight buffer
    x_q = rng.integers(-128, 128, (5, 37)).astype(np.int8)
    hw = run_quantized(model, x_q, config, backend="verilator", batch=batch)
    np.testing.assert_array_equal(hw.y_q, golden_forward(model, x_q))
    assert hw.report["hw_macs"] == 5 * (37 * 29 + 29 * 11) + (-5 % batch) * (37 * 29 + 29 * 11)


def test_fc_psum_blocks_bit_exact():
    """An fc input larger than an ifmap half (16 x 38 k tiles > 512 rows): chunks of 32 k
    tiles (the last k tile partial), each shared by psum blocks of 16 output tiles (35
    tiles: blocks 16, 16 | 3 over two parameter units)."""
    rng = np.random.default_rng(16)
    model = random_fc_model(rng, [150, 140])
    config = small_config(4, 4)
    x_q = rng.integers(-128, 128, (16, 150)).astype(np.int8)
    hw = run_quantized(model, x_q, config, backend="verilator", batch=16)
    np.testing.assert_array_equal(hw.y_q, golden_forward(model, x_q))
    assert hw.report["hw_macs"] == 16 * 150 * 140


def test_dma_outside_window_stops_with_error():
    """A program whose input base register points past the DRAM window: error, no output."""
    config = small_config(4, 4)
    rng = np.random.default_rng(7)
    model = random_fc_model(rng, [8, 4])
    from celosia.sw.compiler import compile_model
    from celosia.sw.driver import build_job

    program = compile_model(model, config)
    job, lay, lead = build_job(program, rng.integers(-5, 5, (1, 8)).astype(np.int8))
    run0 = job.runs[len(lead)]  # the inference (after the initialization run)
    writes = [(a, v) for a, v in run0.csr_writes if a != Csr.WINDOW_SIZE]
    writes.append((Csr.WINDOW_SIZE, lay["input"]))  # input lies just outside the window
    job = Job(dram_bytes=job.dram_bytes, image=job.image,
              runs=[Run(csr_writes=writes, readback=run0.readback)])
    (res,) = verilator.run(config, job, training_job=pgo_training_job)
    assert res.error_name == "DMA_OUT_OF_WINDOW"
    assert res.data[0] == bytes(len(res.data[0]))  # nothing stored


def test_stores_cannot_overwrite_program_weights_or_inputs():
    """Protected regions (docs/hardware.md): the driver's write window covers scratch and
    outputs only. The compiled program's first DRAM STORE is rewritten (through the run's
    host writes) to store over the program, the weights and the inputs in turn: each run
    stops with DMA_OUT_OF_WINDOW, FAULT_ADDR the first byte it would have written, and
    DRAM below the scratch region is what the host wrote; the original program then runs
    bit-exact against the golden model. The ISA simulator stops the same way."""
    from celosia.errors import IsaError
    from celosia.rtl import isa
    from celosia.sim.isa_sim import IsaSim, protection_windows
    from celosia.sw.compiler import compile_model
    from celosia.sw.driver import build_job

    config = small_config(4, 4)
    rng = np.random.default_rng(8)
    model = random_fc_model(rng, [8, 4])
    program = compile_model(model, config)
    x_q = rng.integers(-5, 5, (1, 8)).astype(np.int8)
    job, lay, lead = build_job(program, x_q)
    image = bytearray(lay["end"])
    for addr, blob in job.image:
        image[addr:addr + len(blob)] = blob
    first_insn = lay["program"] + len(program.descriptor_table())
    at = next(a for a in range(first_insn, first_insn + isa.INSN_BYTES * program.n_insns, isa.INSN_BYTES)
              if isa.decode(int.from_bytes(image[a:a + isa.INSN_BYTES], "little"))["op"] == isa.Opcode.STORE
              and not isa.decode(int.from_bytes(image[a:a + isa.INSN_BYTES], "little"))["to_buf"])
    store = isa.decode(int.from_bytes(image[at:at + isa.INSN_BYTES], "little"))
    protected = (0, lay["scratch"])  # program, weights, inputs
    infer = job.runs[len(lead)]
    cases = [(isa.BaseReg.PROGRAM, 40, lay["program"] + 40), (isa.BaseReg.STATIC, 0, lay["static"]),
             (isa.BaseReg.INPUT, 8, lay["input"] + 8)]
    runs, expected = list(job.runs[:len(lead)]), []
    for reg, offset, fault in cases:
        fields = {k: v for k, v in dict(store, base_reg=reg, dram_offset=offset).items() if k != "op"}
        word = isa.encode(isa.Opcode.STORE, **fields).to_bytes(isa.INSN_BYTES, "little")
        runs.append(Run(csr_writes=infer.csr_writes, writes=[(at, word)], readback=[protected]))
        mutated = bytearray(image)
        mutated[at:at + isa.INSN_BYTES] = word
        expected.append((mutated, fault))
        # the ISA simulator: same code, same address, nothing written
        sim = IsaSim(config, bytearray(mutated))
        sim.read_window, sim.write_window = protection_windows(lay)
        for a, v in infer.csr_writes:
            if Csr.BASE0 <= a < Csr.BASE0 + isa.NUM_BASE_REGS:
                sim.base[a - Csr.BASE0] = v
        with pytest.raises(IsaError) as err:
            sim.run(lay["program"])
        assert err.value.code == isa.ErrorCode.DMA_OUT_OF_WINDOW and sim.fault_addr == fault
        assert sim.dram[:lay["scratch"]] == mutated[:lay["scratch"]]
    runs.append(Run(csr_writes=infer.csr_writes, writes=[(at, bytes(image[at:at + isa.INSN_BYTES]))],
                    readback=infer.readback))
    job = Job(dram_bytes=job.dram_bytes, image=job.image, runs=runs, max_cycles=job.max_cycles)
    results = verilator.run(config, job, training_job=pgo_training_job)[len(lead):]
    for res, (mutated, fault) in zip(results, expected):
        assert (res.error_name, res.fault_addr) == ("DMA_OUT_OF_WINDOW", fault)
        assert res.data[0] == bytes(mutated[:lay["scratch"]])
    last = results[-1]
    assert last.error == 0
    np.testing.assert_array_equal(np.frombuffer(last.data[0], np.int8).reshape(1, -1),
                                  golden_forward(model, x_q))


def test_program_larger_than_dram_is_a_clear_error():
    """Found by the compiler's DRAM check before the Verilator model is built."""
    from celosia.errors import CompileError
    config = AccelConfig(rows=2, cols=2, dram_bytes=1024)
    model = random_fc_model(np.random.default_rng(3), [40, 40])
    with pytest.raises(CompileError, match="dram_bytes=1024"):
        run_quantized(model, np.zeros((1, 40), np.int8), config, backend="verilator")


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8)], ids=["4x4", "8x8"])
def test_cnn_ops_bit_exact(rows, cols):
    """Float graph -> PTQ -> compile -> Verilog; every op kind, checked against the golden model."""
    graph = tiny_cnn()
    rng = np.random.default_rng(rows)
    calib = rng.random((16, 12, 12, 3), dtype=np.float32)
    qmodel = quantize_graph(graph, calib)
    assert {l.op for l in qmodel.layers} == {"conv", "maxpool", "add", "avgpool", "gap", "fc"}
    x = rng.random((3, 12, 12, 3), dtype=np.float32)
    config = small_config(rows, cols)
    golden = run(qmodel, x, config, backend="golden")
    hw = run(qmodel, x, config, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden.y_q)
    assert hw.report["hw_macs"] == qmodel.macs_per_sample() * 3
    # the float model and the int8 one agree on most samples' top class
    float_out = run_float(graph, x)
    assert np.abs(float_out - golden.y).max() < 0.25 * np.abs(float_out).max() + 0.1


@pytest.mark.parametrize("bus_bits", [128, 256])
def test_wide_bus_bit_exact(bus_bits):
    """The every-op CNN on a 128- / 256-bit DRAM bus (at a word per cycle): bit-exact
    against the golden model; DRAM_RD / DRAM_WR count the bytes used, so they equal the
    64-bit bus's (test_cnn_ops_bit_exact[4x4] builds that design)."""
    graph = tiny_cnn()
    rng = np.random.default_rng(4)
    qmodel = quantize_graph(graph, rng.random((16, 12, 12, 3), dtype=np.float32))
    x = rng.random((2, 12, 12, 3), dtype=np.float32)
    narrow = small_config(4, 4)
    config = AccelConfig(**dict(narrow.to_dict(), bus_bits=bus_bits,
                                dram_bytes_per_cycle=bus_bits // 8))
    golden = run(qmodel, x, config, backend="golden")
    hw = run(qmodel, x, config, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden.y_q)
    ref = run(qmodel, x, narrow, backend="verilator")
    np.testing.assert_array_equal(ref.y_q, golden.y_q)
    for counter in ("dram_bytes_read", "dram_bytes_written", "macs"):
        assert hw.report[counter] == ref.report[counter], counter


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8)], ids=["4x4", "8x8"])
def test_digits_cnns_bit_exact(name, rows, cols):
    """The bundled digits CNNs: 32 held-out images on the Verilog equal the golden model;
    int8 accuracy (golden, all held-out images) within 2 points of float."""
    x_train, x_test, _, y_test = digits_split()
    graph = load_onnx(MODEL.with_name(f"{name}.onnx"))
    qmodel = quantize_graph(graph, x_train.reshape(-1, 1, 8, 8))
    images = x_test.reshape(-1, 1, 8, 8)
    config = small_config(rows, cols)
    golden = run(qmodel, images, config, backend="golden")
    hw = run(qmodel, images[:32], config, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden.y_q[:32])
    float_acc = (run_float(graph, images).argmax(1) == y_test).mean()
    assert (golden.y.argmax(1) == y_test).mean() >= float_acc - 0.02


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"{c[2]}k-s{c[3]}-g{c[5]}" for c in CONV_CASES])
@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8)], ids=["4x4", "8x8"])
def test_conv_shapes_bit_exact(case, rows, cols, dataflow):
    """Kernels 1..11, strides 1/2/4, grouped, depthwise, odd channel counts: the Verilog
    equals the golden model on two random inputs (the 1x1-window GEMMs over raw rows of
    ws / os / feie, and the full windows of rs)."""
    in_shape, cout, k, stride, pad, groups = case
    rng = np.random.default_rng(rows * 1000 + cout * 10 + stride)
    layer = conv_layer(rng, "conv", in_shape, cout, k, stride, pad, groups,
                       in_zp=int(rng.integers(-100, 100)))
    model = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=in_shape)
    x_q = rng.integers(-128, 128, (2, model.in_features)).astype(np.int8)
    want = golden_forward(model, x_q)
    assert len(np.unique(want)) > 3, "degenerate test: output nearly constant"
    hw = run_quantized(model, x_q, small_config(rows, cols, dataflow), backend="verilator")
    np.testing.assert_array_equal(hw.y_q, want)
    assert hw.report["macs"] == 2 * layer.macs and hw.report["hw_macs"] == 2 * hw_macs(layer, rows, cols, dataflow)


#: in_shape, cout, k, stride, pad, groups, dilation: the conv windows formed on chip by ws, os
#: and feie (the window address generator) in each way the lowering uses them.
WINDOW_CASES = [
    ((9, 10, 4), 6, 5, 2, 2, 1, 1),     # strided, padded
    ((9, 9, 4), 6, 3, 1, 2, 1, 2),      # dilated
    ((7, 7, 5), 5, 3, 2, 1, 5, 1),      # depthwise
    ((8, 9, 6), 6, 3, 1, 1, 2, 1),      # grouped
    ((6, 7, 5), 9, 1, 1, 0, 1, 1),      # 1x1
    ((3, 300, 3), 4, 3, 1, 1, 1, 1),    # an output row wider than a buffer half: column blocks
]


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("case", WINDOW_CASES, ids=["stride", "dilation", "depthwise", "grouped", "1x1",
                                                    "wide"])
def test_conv_windows_on_chip_bit_exact(case, dataflow):
    """The plain arrays' windowed GEMMs of one kernel tap (rtl/arrays/window.py) on the
    Verilog equal the golden model, on the 4x4 array of each dataflow."""
    in_shape, cout, k, stride, pad, groups, dilation = case
    rng = np.random.default_rng(cout * 10 + stride + dilation)
    layer = conv_layer(rng, "conv", in_shape, cout, k, stride, pad, groups, dilation=dilation,
                       in_zp=int(rng.integers(-100, 100)))
    model = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=in_shape)
    x_q = rng.integers(-128, 128, (2, model.in_features)).astype(np.int8)
    want = golden_forward(model, x_q)
    hw = run_quantized(model, x_q, small_config(4, 4, dataflow), backend="verilator")
    np.testing.assert_array_equal(hw.y_q, want)
    assert hw.report["macs"] == 2 * layer.macs and hw.report["hw_macs"] == 2 * hw_macs(layer, 4, 4, dataflow)


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("stride", [1, 2])
def test_padding_rows_skipped_bit_exact(stride, dataflow):
    """A 3x3 pad-1 conv with input zero point 0, so that ws and os leave out the padding
    rows too (docs/compiler.md, "Padding rows"): the Verilog equals the golden model, its
    MAC counter the in-image (output row, kernel row) pairs (``hw_macs``, below
    ``layer.macs``), its cycles the perf model's."""
    rng = np.random.default_rng(40 + stride)
    layer = conv_layer(rng, "conv", (9, 8, 5), 6, 3, stride, 1, in_zp=0)
    model = QModel("conv", [layer], 0.05, 0, input_shape=(9, 8, 5))
    x_q = rng.integers(-128, 128, (2, model.in_features)).astype(np.int8)
    config = small_config(4, 4, dataflow)
    hw = run_quantized(model, x_q, config, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden_forward(model, x_q))
    assert hw.report["hw_macs"] == 2 * hw_macs(layer, 4, 4, dataflow) < 2 * layer.macs
    assert hw.report["cycles"] == run_quantized(model, x_q, config, backend="perf").report["cycles"]


@pytest.mark.slow
@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
def test_resnet18_conv2_layer_bit_exact(dataflow):
    """A real ResNet-18 layer (conv2_x: 56x56x64, 3x3, 64 filters, pad 1; random He-normal
    weights, a ReLU output as input) on the 8x8 array of each dataflow equals the golden
    model."""
    graph = float_conv_layer(56, 56, 64, 64, 3, pad=1, seed=18)
    rng = np.random.default_rng(18)
    calib = np.maximum(rng.standard_normal((4, 56, 56, 64), dtype=np.float32), 0)
    qmodel = quantize_graph(graph, calib)
    x = np.maximum(rng.standard_normal((1, 56, 56, 64), dtype=np.float32), 0)
    config = AccelConfig(rows=8, cols=8, dram_bytes=4 << 20, dataflow=dataflow)
    golden = run(qmodel, x, config, backend="golden")
    hw = run(qmodel, x, config, backend="verilator", profile=False)
    np.testing.assert_array_equal(hw.y_q, golden.y_q)
    # feie leaves out the padding rows (output row 0 of kernel row 0, row 55 of kernel row
    # 2: 56 + 55 + 55 output rows); ws / os compute them (the ReLU input's zero point is
    # -128, folded into the bias), rs computes every tap
    assert qmodel.layers[0].in_zp != 0
    assert hw.report["hw_macs"] == (64 * 64 * 3 * 56 * (56 + 55 + 55) if dataflow == "feie"
                                    else 56 * 56 * 64 * 64 * 9)
    if dataflow == "feie":  # about half the ReLU inputs are real zeros
        assert hw.report["zero_skips"] > 0
    print(f"ResNet-18 conv2_x layer on 8x8 {dataflow}: {hw.report['cycles']} cycles, utilization "
          f"{hw.report['utilization']:.1%}, compute_busy {hw.report['compute_busy']}, load_busy "
          f"{hw.report['load_busy']}, zero_skips {hw.report['zero_skips']}")


@pytest.mark.parametrize("dataflow", ["os", "rs", "feie"])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_resnet"])
@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8)], ids=["4x4", "8x8"])
def test_digits_models_other_dataflows(name, rows, cols, dataflow):
    """The bundled models on the output-stationary, row-stationary and FEIE arrays: the
    Verilog equals the golden model on 32 held-out images; the report names the mapping."""
    x_train, x_test, _, _ = digits_split()
    graph = load_onnx(MODEL.with_name(f"{name}.onnx"))
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    qmodel = quantize_graph(graph, x_train.reshape(-1, *shape))
    images = x_test[:32].reshape(-1, *shape)
    config = small_config(rows, cols, dataflow)
    golden = run(qmodel, images, config, backend="golden")
    hw = run(qmodel, images, config, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden.y_q)
    assert hw.report["macs"] == qmodel.macs_per_sample() * 32
    # the array leaves out the convs' padding rows (feie; ws / os where a conv's input zero
    # point is 0): hw_macs
    assert hw.report["hw_macs"] == 32 * sum(hw_macs(layer, rows, cols, dataflow) if layer.op == "conv"
                                            else layer.macs for layer in qmodel.layers)
    assert {layer["mapping"].split(":")[0] for layer in hw.report["layers"]} == {dataflow}
    per_layer = [layer["zero_skips"] for layer in hw.report["layers"]]
    if dataflow != "feie":
        assert hw.report["zero_skips"] == 0 and set(per_layer) == {0}
    else:  # real zeros (inputs at the zero point: blank pixels, ReLU outputs) are skipped
        assert all(isinstance(v, int) and v >= 0 for v in per_layer)
        assert hw.report["zero_skips"] >= sum(per_layer) > 0  # per layer: the first sample's


#: One extra Verilator model: 8x8 ws with 8 PPU lanes (the STORE engine takes up to 8
#: channels of a psum row per cycle, rtl/dma.py). Its build (minutes on 2 busy cores) does
#: not fit the default run's budget: these tests are in the slow target; the default run
#: checks the multi-lane STORE engine in the Amaranth simulator (tests/rtl/test_dma.py).
LANES_CONFIG = AccelConfig(rows=8, cols=8, dataflow="ws", ppu_lanes=8)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_ppu_lanes_digits_bit_exact(name):
    """The digits CNNs (kept outputs: STOREs into the ifmap buffer; the residual adds and
    pooling through the STORE's requantization) with ``ppu_lanes = 8``: bit-exact against the
    golden model on 16 held-out images."""
    x_train, x_test, _, _ = digits_split()
    graph = load_onnx(MODEL.with_name(f"{name}.onnx"))
    qmodel = quantize_graph(graph, x_train.reshape(-1, 1, 8, 8))
    images = x_test[:16].reshape(-1, 1, 8, 8)
    golden = run(qmodel, images, LANES_CONFIG, backend="golden")
    hw = run(qmodel, images, LANES_CONFIG, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, golden.y_q)


@pytest.mark.slow
@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3], CONV_CASES[7]],
                         ids=["3k-c10", "7k-s2-c5", "3x1k-c7"])
def test_ppu_lanes_conv_shapes_bit_exact(case):
    """Conv layers whose channel counts (10, 5, 7) are not multiples of the 8 PPU lanes and
    whose output rows start at varying offsets in the bus word: bit-exact on the 8-lane
    design (through DRAM, outputs not kept)."""
    in_shape, cout, k, stride, pad, groups = case
    rng = np.random.default_rng(cout * 10 + stride + 3)
    layer = conv_layer(rng, "conv", in_shape, cout, k, stride, pad, groups,
                       in_zp=int(rng.integers(-100, 100)))
    model = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=in_shape)
    x_q = rng.integers(-128, 128, (2, model.in_features)).astype(np.int8)
    want = golden_forward(model, x_q)
    hw = run_quantized(model, x_q, LANES_CONFIG, backend="verilator")
    np.testing.assert_array_equal(hw.y_q, want)
