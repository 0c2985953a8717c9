"""Per-layer figures from one run: the controller's node snapshots on the Verilog.

The digits CNNs on the 4x4 ws array (the Verilator model the other tests share): the
per-layer report comes from the inference runs themselves (no extra runs); the layers add
up to the run; each layer's hardware MACs are the golden model's MACs of that layer; and
against the old definition (a run of the program cut after each layer, built here as
the driver used to) the snapshots agree where they must and differ as documented
(docs/hardware.md, "Per-node counters").
"""

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Csr
from celosia.sim import verilator
from celosia.sim.isa_sim import protection_windows
from celosia.sim.job import Job, Run
from celosia.sw.compiler import compile_model
from celosia.sw.compiler.program import align
from celosia.sw.driver import golden_forward, pgo_training_job, run_quantized
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph
from celosia.sw.data import DATA_DIR, digits_split
from layer_cases import hw_macs

CONFIG = AccelConfig(rows=4, cols=4)  # = small_config(4, 4) of test_accelerator_verilator.py


@pytest.fixture(scope="module", params=["digits_cnn", "digits_resnet"])
def digits(request):
    x_train, x_test, _, _ = digits_split()
    graph = load_onnx(DATA_DIR / f"{request.param}.onnx")
    qmodel = quantize_graph(graph, x_train.reshape(-1, 1, 8, 8))
    x_q = qmodel.quantize_input(x_test[:2].reshape(-1, 1, 8, 8)).reshape(2, -1)
    return qmodel, x_q


def prefix_cycles(program, x_q, k):
    """The counters of a run of the first ``k`` nodes of ``program`` on ``x_q`` (one run):
    a descriptor table of those nodes placed before the program, pointing into its
    instruction blocks, as the driver measured per-layer figures before the snapshots."""
    table = program.descriptor_table(upto=k)
    lay = program.layout(1, base=align(len(table)))
    table = program.descriptor_table(upto=k, delta=lay["program"])
    image = [(0, table), (lay["program"], program.image()), (lay["static"], program.static),
             (lay["input"], x_q.tobytes())]
    image = [(a, d.ljust(-(-len(d) // 8) * 8, b"\0")) for a, d in image if d]
    read, write = protection_windows(lay)
    csrs = [(Csr.WINDOW_BASE, read[0]), (Csr.WINDOW_SIZE, read[1]), (Csr.WR_BASE, write[0]),
            (Csr.WR_SIZE, write[1]), (Csr.BASE0 + BaseReg.STATIC, lay["static"]),
            (Csr.BASE0 + BaseReg.SCRATCH, lay["scratch"]), (Csr.BASE0 + BaseReg.INPUT, lay["input"]),
            (Csr.BASE0 + BaseReg.OUTPUT, lay["output"])]
    runs = []
    if program.init is not None:
        base = lay["program"] + program.init_offset
        runs.append(Run(csr_writes=csrs + [(Csr.PROG_BASE, base), (Csr.BASE0 + BaseReg.PROGRAM, base)],
                        readback=[]))
    runs.append(Run(csr_writes=csrs + [(Csr.PROG_BASE, 0), (Csr.BASE0 + BaseReg.PROGRAM, 0)],
                    readback=[]))
    results = verilator.run(CONFIG, Job(dram_bytes=CONFIG.dram_bytes, image=image, runs=runs),
                            training_job=pgo_training_job)
    assert all(not r.error and not r.timed_out for r in results)
    return results[-1].counters


def test_per_layer_report_from_one_run(digits):
    qmodel, x_q = digits
    events = []
    hw = run_quantized(qmodel, x_q, CONFIG, backend="verilator", on_event=events.append)
    np.testing.assert_array_equal(hw.y_q, golden_forward(qmodel, x_q))
    rep = hw.report
    layers = rep["layers"]
    assert all(isinstance(layer["cycles"], int) for layer in layers)
    # the layers add up to the run, each counter
    assert sum(layer["cycles"] for layer in layers) == rep["cycles_per_run"]
    assert sum(layer["compute_cycles"] for layer in layers) == rep["compute_busy"] // rep["runs"]
    assert sum(layer["hw_dram_bytes_written"] for layer in layers) == rep["dram_bytes_written"] // rep["runs"]
    # each layer's MACs, counted by the hardware, are the golden model's (per sample, one
    # run of one sample here); pooling and add layers have none
    for layer, entry in zip(qmodel.layers, layers):
        want = (0 if not layer.is_gemm else layer.macs if layer.op == "fc"
                else hw_macs(layer, CONFIG.rows, CONFIG.cols, CONFIG.dataflow))
        assert entry["hw_macs"] == want, entry["name"]
    assert [entry["start_cycle"] for entry in layers] == \
        list(np.cumsum([0] + [entry["cycles"] for entry in layers[:-1]]))
    # streamed while it ran (the progress line's feed): each inference's layers in order,
    # at their boundaries (the last one the cycle before the run's end)
    ends = [entry["start_cycle"] + entry["cycles"] for entry in layers]
    ends[-1] -= 1
    want = [{"run": r, "runs": 2, "layer": entry["name"], "cycles": end}
            for r in range(2) for entry, end in zip(layers, ends)]
    assert [e for e in events if e["layer"] is not None and e["run"] == 0] == want[:len(layers)]
    assert [e["layer"] for e in events if e["layer"] is not None] == [w["layer"] for w in want]


def test_snapshots_against_prefix_runs(digits):
    """Against a run of the program cut after layer k: the same MACs and DRAM bytes
    written by then (every layer here waits for its predecessor's outputs, so nothing of
    layer k+1 is issued before layer k's boundary), and no more cycles than the snapshot's
    (plus the finishing cycle), since in the full run fetch keeps reading the later
    layers' instructions over the same bus."""
    qmodel, x_q = digits
    program = compile_model(qmodel, CONFIG)
    hw = run_quantized(qmodel, x_q[:1], CONFIG, backend="verilator", program=program)
    layers = hw.report["layers"]
    for k in range(len(layers) - 1):
        prefix = prefix_cycles(program, x_q[:1], k + 1)
        upto = layers[k]["start_cycle"] + layers[k]["cycles"]
        assert prefix["cycles"] <= upto + 1, layers[k]["name"]
        assert prefix["macs"] == sum(entry["hw_macs"] for entry in layers[:k + 1])
        assert prefix["dram_bytes_written"] == sum(entry["hw_dram_bytes_written"] for entry in layers[:k + 1])


@pytest.mark.slow
def test_resnet18_inference_with_per_layer_report():
    """A full ResNet-18 inference (zoo weights, one 224x224 image) on the 8x8 ws Verilator
    model, bit-exact against the golden model, its per-layer report from the same run
    (issue 12: it used to stop after 50 M cycles, and each per-layer figure cost a run of
    a program prefix), and the perf model's per-layer figures equal to it. Prints the
    wall time; README "Long tests"."""
    import time

    from celosia.sw.zoo import build

    graph = build("resnet18")
    rng = np.random.default_rng(18)
    qmodel = quantize_graph(graph, rng.random((2, *graph.tensors[graph.inputs[0]].shape[1:]),
                                              dtype=np.float32))
    x_q = qmodel.quantize_input(rng.random((1, *graph.tensors[graph.inputs[0]].shape[1:]),
                                           dtype=np.float32)).reshape(1, -1)
    config = AccelConfig(rows=8, cols=8, dram_bytes=1 << 26)
    t0 = time.perf_counter()
    hw = run_quantized(qmodel, x_q, config, backend="verilator")
    seconds = time.perf_counter() - t0
    np.testing.assert_array_equal(hw.y_q, golden_forward(qmodel, x_q))
    layers = hw.report["layers"]
    assert sum(layer["cycles"] for layer in layers) == hw.report["cycles_per_run"]
    assert sum(layer["hw_macs"] for layer in layers) == hw.report["hw_macs"]
    # the perf model's per-layer figures are the RTL's (conv1 spans 3 descriptors of one
    # node: one snapshot, as the controller takes them)
    model = run_quantized(qmodel, x_q, config, backend="perf").report["layers"]
    for key in ("cycles", "compute_cycles", "hw_macs", "hw_dram_bytes_read"):
        assert [layer[key] for layer in model] == [layer[key] for layer in layers], key
    print(f"ResNet-18 on 8x8 ws Verilator: {hw.report['cycles']} cycles, {len(layers)} layers "
          f"with per-layer figures, {seconds:.0f} s (build included if not cached)")


def test_instruction_trace(digits):
    """``trace``: a slice per instruction from its start to its completion;
    the LOAD / STORE slices, less their start and completion cycles, add up to LOAD_BUSY /
    STORE_BUSY (the DMA engines are busy from the cycle after the start until ``done``,
    which pulses in their first idle cycle: rtl/dma.py); one engine
    runs one at a time; each layer's last slice ends at its boundary (the last layer's
    the cycle before the run finishes)."""
    qmodel, x_q = digits
    program = compile_model(qmodel, CONFIG)
    hw = run_quantized(qmodel, x_q[:1], CONFIG, backend="verilator", program=program, trace=True)
    rep = hw.report
    slices = [e for e in hw.trace["traceEvents"] if e["ph"] == "X"]
    words = [w for node in program.nodes for w in node.insns]
    assert len(slices) == len(words)
    assert sum(e["name"].endswith(" NOP") for e in slices) == \
        sum(isa.decode(w)["op"] == isa.Opcode.NOP for w in words)
    for tid, busy in ((1, "load_busy"), (4, "store_busy")):
        mine = sorted((e for e in slices if e["tid"] == tid), key=lambda e: e["ts"])
        assert sum(e["dur"] - 2 for e in mine) == rep[busy]
        assert all(b["ts"] >= a["ts"] + a["dur"] - 1 for a, b in zip(mine, mine[1:]))
    layers = rep["layers"]
    for k, layer in enumerate(layers):
        end = max(e["ts"] + e["dur"] for e in slices if e["name"].startswith(f"L{k} "))
        want = layer["start_cycle"] + layer["cycles"]
        assert end == (want if k < len(layers) - 1 else want - 1), layer["name"]
