"""The ``perf`` cycle model (celosia.sim.perf) against the RTL: cycles and every counter equal
to Verilator's, in total and per layer (the driver's prefix runs), and per instruction
(issue / ``done`` cycles) equal to the Amaranth simulator's.

Default target: the Verilator configurations the other tests build already (the default
config of each array and dataflow, the wide buses of tests/sim/test_bus_width.py), a few
models, and short pysim traces. ``-m slow``: the broad grid (arrays 2x2 .. 16x16, bus
widths, DRAM latencies and bandwidths, queue depths, random layer shapes), each mismatch
named by its first differing instruction (from pysim).
"""

import json

import numpy as np
import pytest

from celosia.errors import CompileError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.sim import perf
from celosia.sim.job import Job, Run
from celosia.sw.compiler import compile_model
from celosia.sw.driver import run
from celosia.sw.driver.driver import build_job, layer_boundaries, pgo_training_job
from layer_cases import CONV_CASES
from perf_trace import case_model, counter_differences, first_difference, rtl_trace


def _job(config, name, profile=True):
    q, x_q = case_model(name)
    return build_job(compile_model(q, config), x_q, profile=profile)[0]


def _verilator_differences(config, name):
    from celosia.sim import verilator

    job = _job(config, name)
    return counter_differences(perf.run(config, job),
                               verilator.run(config, job, training_job=pgo_training_job, trace=True))


def _explain(config, name):
    """The first instruction whose timing differs from the RTL's (pysim), for a failure."""
    job = _job(config, name, profile=False)
    results, traces = rtl_trace(config, job)
    return [first_difference(p.timeline, t) for p, t in zip(perf.run(config, job), traces)]


# -- hand-worked ---------------------------------------------------------------------------

def _nop_job(config):
    """One node of one NOP: the smallest program."""
    nop = isa.encode_words(isa.encode(isa.Opcode.NOP))
    table = (isa.encode_descriptor(32, 1).to_bytes(8, "little")
             + isa.encode_descriptor(0, 0).to_bytes(8, "little")).ljust(32, b"\0")
    image = table + b"".join(w.to_bytes(8, "little") for w in nop)
    return Job(dram_bytes=config.dram_bytes, image=[(0, image)],
               runs=[Run(csr_writes=[(isa.Csr.PROG_BASE, 0)], readback=[])])


@pytest.mark.parametrize("latency", [1, 4, 8])
def test_one_nop_hand_worked(latency):
    # Fetch (rtl/controller/fetch.py): descriptor 0 requested in cycle 2, back L cycles later;
    # the node starts in 3 + L (descriptor 1 requested), its 4 words in 4 + L .. 7 + L; the
    # NOP is offered in 7 + 2L + 1 and written into the compute queue, whose head it is two
    # cycles later (SyncFIFOBuffered), 2L + 10: issued; "done" the next cycle (2L + 11);
    # STATUS.busy drops after the first cycle with nothing left, 2L + 12: CYCLES.
    config = AccelConfig(rows=2, cols=2, dram_latency=latency, dram_bytes=1 << 12)
    (res,) = perf.run(config, _nop_job(config))
    assert res.counters["cycles"] == 2 * latency + 12
    assert res.timeline.issue == [2 * latency + 10] and res.timeline.done == [2 * latency + 11]
    assert res.counters["insns"] == 1
    assert res.counters["dram_bytes_read"] == 8 * (2 + isa.INSN_WORDS)   # 2 descriptors, 4 words
    assert res.counters["compute_busy"] == res.counters["load_busy"] == 0


def test_one_nop_against_pysim():
    config = AccelConfig(rows=2, cols=2, dram_latency=4, dram_bytes=1 << 12)
    job = _nop_job(config)
    results, traces = rtl_trace(config, job)
    (res,) = perf.run(config, job)
    assert res.counters == results[0].counters


def _nops_job(config, descriptors):
    """NOPs under the descriptors ``[(n_insn, kind), ...]`` (then the end marker)."""
    nop = b"".join(w.to_bytes(8, "little") for w in isa.encode_words(isa.encode(isa.Opcode.NOP)))
    table_bytes = -(-isa.DESC_BYTES * (len(descriptors) + 1) // isa.INSN_BYTES) * isa.INSN_BYTES
    table, offset = b"", table_bytes
    for n, kind in descriptors:
        table += isa.encode_descriptor(offset, n, kind).to_bytes(8, "little")
        offset += n * isa.INSN_BYTES
    table = (table + isa.encode_descriptor(0, 0).to_bytes(8, "little")).ljust(table_bytes, b"\0")
    image = table + nop * sum(n for n, _ in descriptors)
    return Job(dram_bytes=config.dram_bytes, image=[(0, image)],
               runs=[Run(csr_writes=[(isa.Csr.PROG_BASE, 0)], readback=[])])


@pytest.mark.parametrize("descriptors, nodes", [
    ([(3, 0), (2, 0), (1, 1)], 2),            # a node in two descriptors (one kind), then one
    ([(2, 0), (2, 1), (2, 0)], 3),            # the same kind, not consecutive: three nodes
])
def test_node_snapshots_per_run_of_one_kind_against_pysim(descriptors, nodes):
    """The controller takes consecutive descriptors of one kind as one node (a layer of
    more than 65535 instructions has several) and snapshots its counters once, at the end
    of the last: the model's snapshots equal the RTL's (the Amaranth simulator's), one per
    node, not one per descriptor."""
    from celosia.sim import pysim

    config = AccelConfig(rows=2, cols=2, dram_latency=4, dram_bytes=1 << 12)
    job = _nops_job(config, descriptors)
    (rtl,) = pysim.run(config, job, poll_cycles=8)
    (res,) = perf.run(config, job)
    assert len(rtl.nodes) == nodes
    assert res.nodes == rtl.nodes and res.counters == rtl.counters


def test_load_and_store_alone_take_their_documented_cycles():
    # A LOAD or a STORE with nothing else on the bus takes rtl/dma.py's load_cycles /
    # store_cycles from acceptance to done (the model only ever sees the grants).
    from celosia.rtl.dma import load_cycles, store_cycles

    config = AccelConfig(rows=4, cols=4, dram_bytes=1 << 14)
    job = _job(config, "fc:20,9", profile=False)
    res = perf.run(config, job, log_grants=True)[-1]
    tl = res.timeline
    from celosia.sim.isa_sim import IsaSim
    from celosia.sim.perf import _program

    sim = IsaSim(config, bytearray(job.dram_bytes))
    for a, p in job.image:
        sim.dram[a:a + len(p)] = p
    regs = dict(job.runs[-1].csr_writes)
    sim.base = [regs.get(isa.Csr.BASE0 + i, 0) for i in range(isa.NUM_BASE_REGS)]
    _, insns, _ = _program(sim, regs[isa.Csr.PROG_BASE])
    grants = tl.grants
    checked = 0
    for i, d in enumerate(insns):
        lo, hi = tl.issue[i], tl.done[i]
        others = [c for c, who in grants if lo <= c <= hi and who != tl.queue[i]]
        if others:
            continue   # shared the bus
        if d["op"] == isa.Opcode.LOAD:
            assert hi - lo == load_cycles(d, config, sim.base), i
            checked += 1
        elif d["op"] == isa.Opcode.STORE:
            assert hi - lo == store_cycles(d, config, sim.base), i
            checked += 1
    assert checked


def test_node_snapshots_hold_what_happened_by_each_boundary():
    # a descriptor's boundary is the last done of it and every earlier descriptor; the
    # counters there hold the instructions issued by then (from the timeline) and never
    # decrease; the last node's are the run's
    config = AccelConfig(rows=4, cols=4, dram_bytes=1 << 16)
    res = perf.run(config, _job(config, "tiny_cnn", profile=False), execute=False)[-1]
    tl, log = res.timeline, res.log
    assert len(log.bounds) == len(set(tl.node)) > 3
    prev = dict.fromkeys(res.counters, 0)
    for k, bound in enumerate(log.bounds):
        assert bound == max(d for d, nd in zip(tl.done, tl.node) if nd <= k)
        snap = log.at(bound)
        assert snap["insns"] == sum(t <= bound for t in tl.issue)
        assert all(snap[key] >= prev[key] for key in snap)
        prev = snap
    # the snapshots as the harnesses record them, one per descriptor, and the driver's
    # layer boundaries from them ending with the run's counters
    assert [n["index"] for n in res.nodes] == list(range(1, len(log.bounds) + 1))
    assert {k: v for k, v in res.nodes[0].items() if k != "index"} == log.at(log.bounds[0])
    program = compile_model(case_model("tiny_cnn")[0], config)
    assert layer_boundaries(program, res)[-1] == res.counters


# -- against the RTL: per instruction (pysim) --------------------------------------------------

#: Small programs on the Amaranth simulator (no build): each dataflow, and between them a
#: throttled DRAM (request interval 4), a short DRAM latency, the shallowest queues, a wide
#: bus taking a word every other cycle, several PPU lanes.
PYSIM_CASES = [
    dict(dataflow="ws", dram_bytes_per_cycle=2, dram_latency=3, queue_depth=2),
    dict(dataflow="os", bus_bits=128, dram_bytes_per_cycle=8),
    dict(dataflow="rs"),
    dict(dataflow="feie", bus_bits=128, dram_bytes_per_cycle=16, ppu_lanes=2),
    dict(dataflow="feie", feie_read_ports=1),
    dict(dataflow="feie", feie_write_ports=1),
]
PYSIM_SLOW = [dict(dataflow=df, **v) for df in ("ws", "os", "rs", "feie")
              for v in (dict(), dict(dram_latency=1), dict(dram_bytes_per_cycle=1, queue_depth=2),
                        dict(bus_bits=256, dram_bytes_per_cycle=32, ppu_lanes=2))]


def _pysim_case(fields, name="conv:4,4,2,3,3,1,1"):
    config = AccelConfig(**{"rows": 2, "cols": 2, "dram_bytes": 1 << 14, **fields})
    job = _job(config, name, profile=False)
    results, traces = rtl_trace(config, job)
    for p, r, t in zip(perf.run(config, job), results, traces, strict=True):
        assert first_difference(p.timeline, t) is None
        assert p.counters == r.counters
        assert p.data == r.data


@pytest.mark.parametrize("fields", PYSIM_CASES, ids=["-".join(map(str, f.values())) for f in PYSIM_CASES])
def test_every_instruction_against_pysim(fields):
    _pysim_case(fields)


@pytest.mark.parametrize("name, rows, kinds", [
    # 5x5 stride 2 on 6 PE rows: the phase sets {0, 2, 4} and {1, 3} (dil_w = stride_w = 2)
    ("conv:9,9,2,2,5,2,1", 6, {(3, 2), (2, 2)}),
    # 3x3 stride 2 cut 2 + 1 (dense: all PE rows busy; on an 8-wide input, whose right
    # padding no pixel of the cut reads) and whole (sparse: one GEMM per row)
    ("conv:8,8,2,3,3,2,1", 2, {(2, 1), (1, 1)}),
    ("conv:9,9,2,3,3,2,1@0.7", 2, {(3, 1)}),
])
def test_feie_windows_against_pysim(name, rows, kinds):
    """Strided convs on feie, lowered to phase sets (GEMMs of taps {0, 2, ..} with dil_w =
    stride_w) or to cuts of each kernel row into runs: every instruction's timing and the
    counters the RTL's."""
    config = AccelConfig(rows=rows, cols=2, dram_bytes=1 << 14, dataflow="feie")
    q, _ = case_model(name)
    gemms = [d for node in compile_model(q, config).nodes for d in map(isa.decode, node.insns)
             if d["op"] == isa.Opcode.GEMM]
    assert {(d["win_w"], d["dil_w"]) for d in gemms} == kinds
    _pysim_case(dict(dataflow="feie", rows=rows), name)


@pytest.mark.slow
@pytest.mark.parametrize("fields", PYSIM_SLOW, ids=["-".join(map(str, f.values())) for f in PYSIM_SLOW])
def test_every_instruction_against_pysim_grid(fields):
    # (the tiny CNN's program and data take 20-40 KB: more than the small cases' 16 KB DRAM)
    _pysim_case({"dram_bytes": 1 << 16, **fields}, "tiny_cnn")


# -- against the RTL: totals and per layer (Verilator) -------------------------------------------

#: (config fields, model): configurations other Verilator tests build already.
FAST_CASES = [
    (dict(rows=4, cols=4, dataflow="ws"), "tiny_cnn"),
    (dict(rows=4, cols=4, dataflow="os"), "tiny_cnn"),
    (dict(rows=4, cols=4, dataflow="rs"), "tiny_cnn"),
    (dict(rows=4, cols=4, dataflow="feie"), "tiny_cnn"),
    (dict(rows=4, cols=4, dataflow="feie"), "conv:11,11,4,5,3,2,1"),     # 3x3 s2: runs 2 + 1
    (dict(rows=4, cols=4, dataflow="feie"), "conv:11,11,4,5,5,2,1@0.9"),  # phase sets (5x5 s2)
    (dict(rows=4, cols=4, dataflow="feie", feie_read_ports=1, feie_write_ports=1), "tiny_cnn"),
    (dict(rows=4, cols=4, dataflow="ws"), "digits_resnet"),
    (dict(rows=8, cols=8, dataflow="ws"), "digits_cnn"),
    (dict(rows=2, cols=2, dataflow="ws"), "digits_mlp"),
    (dict(rows=4, cols=4, bus_bits=128, dram_bytes_per_cycle=16), "tiny_cnn"),
    (dict(rows=4, cols=4, bus_bits=256, dram_bytes_per_cycle=32), "digits_mlp"),
]


def _case_id(case):
    fields, name = case
    return "-".join(f"{v}" for v in fields.values()) + "-" + name


@pytest.mark.parametrize("fields,name", FAST_CASES, ids=[_case_id(c) for c in FAST_CASES])
def test_counters_equal_verilator(fields, name):
    config = AccelConfig(**fields)
    diff = _verilator_differences(config, name)
    assert not diff, (diff, _explain(config, name))


def test_driver_report_equals_verilator():
    from celosia.sw.data import digits_split
    from celosia.sw.demo import MODEL
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, _, _ = digits_split()
    q = quantize_graph(load_onnx(MODEL), x_train)
    config = AccelConfig(rows=4, cols=4)
    p = run(q, x_test[:3], config, backend="perf").report
    v = run(q, x_test[:3], config, backend="verilator").report
    for key in ("cycles", "cycles_per_run", "utilization", "load_busy", "compute_busy", "store_busy",
                "load_compute_overlap", "dram_bytes_read", "dram_bytes_written", "zero_skips",
                "mac_cycles", "hw_macs", "instructions", "init"):
        assert p[key] == v[key], key
    assert set(p) == set(v)
    # per layer: both from the controller's node snapshots of one run, equal, adding up
    # to the run
    for pl, vl in zip(p["layers"], v["layers"], strict=True):
        assert pl == vl
    assert sum(layer["cycles"] for layer in p["layers"]) == p["cycles_per_run"]
    assert all(layer["cycles"] > 0 for layer in p["layers"])


def test_zoo_model_without_weights_runs_on_perf():
    from celosia.sw.zoo import resolve

    graph = resolve("zoo:lenet5")
    q, _ = _quantized_zoo(graph)
    x = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    rep = run(q, x, AccelConfig(rows=8, cols=8), backend="perf").report
    assert rep["cycles"] > 0 and len(rep["layers"]) == len(q.layers)
    assert sum(layer["cycles"] for layer in rep["layers"]) == rep["cycles"]


def _quantized_zoo(graph):
    from perf_trace import quantized
    return quantized(graph)


def test_sweep_point_defaults_to_perf(tmp_path):
    from celosia.sw.sweep_eval import evaluate_point
    from celosia.sw.sweep_grid import DEFAULT_BACKEND, Grid, expand, merge

    assert DEFAULT_BACKEND == "perf"
    (point,) = expand(merge(Grid(models=["zoo:lenet5"], arrays=[(4, 4)])))
    assert point.backend == "perf"
    rows = evaluate_point(point)
    assert rows and all(r["cycles"] and r["cycles"] > 0 for r in rows)


def test_cli_trace(tmp_path, capsys):
    from celosia.sw.cli import main

    out = tmp_path / "t.json"
    assert main(["run", "zoo:lenet5", "--random", "1", "--backend", "perf", "--trace", str(out),
                 "--array", "4x4"]) == 0
    trace = json.loads(out.read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["tid"] for e in slices} == {1, 2, 3, 4}   # LOAD, COMPUTE (GEMMs), VECTOR (pools), STORE
    assert any(e["name"] == "L0 c1 COMPUTE" for e in slices)
    # --trace needs a back end that measures cycles: one line, exit 1
    assert main(["run", "zoo:lenet5", "--random", "1", "--trace", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "--backend perf" in err[-1]


# -- slow: the broad grid ----------------------------------------------------------------------

GRID_CONFIGS = (
    [dict(rows=r, cols=c, dataflow=df) for r, c in ((2, 2), (4, 4), (8, 8), (4, 8))
     for df in ("ws", "os", "rs", "feie")]
    + [dict(rows=16, cols=16, dataflow=df, dram_bytes=1 << 22) for df in ("ws", "os", "rs", "feie")]
    + [dict(rows=4, cols=4, dataflow=df, bus_bits=bits, dram_bytes_per_cycle=bits // 8)
       for df in ("ws", "rs", "feie") for bits in (128, 256)]
    + [dict(rows=4, cols=4, dataflow=df, dram_latency=lat) for df in ("ws", "os") for lat in (1, 3, 20)]
    + [dict(rows=4, cols=4, dataflow="ws", dram_bytes_per_cycle=2),
       dict(rows=4, cols=4, dataflow="rs", queue_depth=2),
       dict(rows=8, cols=8, dataflow="ws", ppu_lanes=8)]
)
GRID_MODELS = (["digits_mlp", "digits_cnn", "digits_resnet", "tiny_cnn", "fc:20,9"]
               + [f"conv:{s[0][0]},{s[0][1]},{s[0][2]},{s[1]},{s[2] if isinstance(s[2], int) else 3},"
                  f"{s[3]},{s[5]}" for s in CONV_CASES])


@pytest.mark.slow
@pytest.mark.parametrize("fields", GRID_CONFIGS, ids=["-".join(map(str, f.values())) for f in GRID_CONFIGS])
def test_grid_counters_equal_verilator(fields):
    config = AccelConfig(**fields)
    bad = []
    for name in GRID_MODELS:
        try:
            diff = _verilator_differences(config, name)
        except CompileError:  # a model that does not map onto this config
            continue
        if diff:
            bad.append((name, diff, _explain(config, name)))
    assert not bad, bad



def test_perf_outputs_are_computed_only_when_executed():
    """The perf back end's ``y_q``: the golden model's when it models the timing only
    (``report["outputs"] == "golden"``), the program's own when every instruction executes
    (``execute=True``: equal to golden, and the same cycles)."""
    from celosia.sw.data import digits_split
    from celosia.sw.demo import MODEL
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, _, _ = digits_split()
    q = quantize_graph(load_onnx(MODEL), x_train)
    config = AccelConfig(rows=4, cols=4)
    timing = run(q, x_test[:2], config, backend="perf")
    executed = run(q, x_test[:2], config, backend="perf", execute=True)
    golden = run(q, x_test[:2], config, backend="golden")
    assert (timing.report["outputs"], executed.report["outputs"], golden.report["outputs"]) == \
        ("golden", "computed", "golden")
    np.testing.assert_array_equal(executed.y_q, golden.y_q)
    assert executed.report["cycles"] == timing.report["cycles"]
