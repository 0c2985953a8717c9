"""Resident weights: the initialization graph loads the weights that fit the weight buffer
once, the execution graph's GEMMs read them with no LOAD (issue 10, seed 000's
initialization and execution graphs).

Programs run on :class:`~celosia.sim.isa_sim.IsaSim`, directly and through the driver's
job (:func:`~celosia.sw.driver.build_job`: init run, profiling prefixes, inferences) with a
small CSR transport, against the golden model. The RTL back end is in
``tests/cocotb/test_resident_weights_verilator.py``.
"""

import asyncio

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Csr, Opcode
from celosia.sim.isa_sim import IsaSim
from celosia.sim.isa_sim import run_program as isa_run_program
from celosia.sim.job import run_job
from celosia.sw.analysis import program_traffic
from celosia.sw.compiler import compile_model
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import build_job, golden_forward, resident_weights_report, run_quantized
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph
from test_compiler import SEEDS, assert_runs_golden, make_model, random_input

DATAFLOWS = ("ws", "os", "feie", "rs")
NO_DEP = {"pop_prev": 0, "pop_next": 0, "push_prev": 0, "push_next": 0}


def decoded(insns):
    return [isa.decode(w) for w in insns]


def weight_loads(insns):
    return [d for d in decoded(insns) if d["op"] == Opcode.LOAD and d["buf"] == Buffer.WEIGHT]


@pytest.fixture(scope="module")
def digits_models():
    x_train, x_test, _, _ = digits_split()
    out = {}
    for name in ("digits_mlp", "digits_cnn"):
        graph = load_onnx(DATA_DIR / f"{name}.onnx")
        shape = graph.tensors[graph.inputs[0]].shape[1:]
        qmodel = quantize_graph(graph, x_train.reshape(-1, *shape))
        out[name] = (qmodel, qmodel.quantize_input(x_test[:6].reshape(-1, *shape)).reshape(6, -1))
    return out


# --- the compiled program ---------------------------------------------------------------

@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_model_that_fits_has_no_weight_load_per_run(digits_models, name, dataflow):
    """Every weight byte is loaded exactly once, by the init graph; the execution graph has
    no weight LOAD; the outputs stay bit-exact under several schedules."""
    qmodel, x_q = digits_models[name]
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, weight_rows=4096)
    program = compile_model(qmodel, config)
    assert program.init is not None
    assert program.resident["layers"] == [l.name for l in qmodel.layers if l.is_gemm]
    assert all(not weight_loads(node.insns) for node in program.nodes)
    init = decoded(program.init.insns)
    assert all(d["op"] == Opcode.LOAD and d["buf"] == Buffer.WEIGHT and d["dep"] == NO_DEP
               and d["base_reg"] == BaseReg.STATIC for d in init)
    # The tiles partition the weights: the init graph reads each weight byte once.
    weight_bytes = sum(int(l.gemm_weights().size) for l in qmodel.layers)
    assert sum(d["n0"] * d["n1"] * d["n2"] for d in init) == weight_bytes
    # ... into disjoint buffer rows inside the buffer.
    rows = [d["buf_row"] + i1 * d["buf_stride1"] + i2 * d["buf_stride2"]
            for d in init for i1 in range(d["n1"]) for i2 in range(d["n2"])]
    assert len(rows) == len(set(rows)) and max(rows) < config.weight_rows
    want = golden_forward(qmodel, x_q[:1])
    for seed in SEEDS[:3]:
        got, tokens = isa_run_program(program, x_q[:1], seed)
        np.testing.assert_array_equal(got, want)
        assert tokens == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_switch_off_streams_every_weight(digits_models, dataflow):
    qmodel, x_q = digits_models["digits_cnn"]
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, weight_rows=4096)
    program = compile_model(qmodel, config, resident_weights=False)
    assert program.init is None and program.resident == {}
    assert program.init_offset is None and "graph:" not in program.disassemble()
    # every weight byte is read by the run's weight LOADs (several tiles per LOAD: weight groups)
    loads = weight_loads(w for node in program.nodes for w in node.insns)
    assert sum(d["n0"] * d["n1"] * d["n2"] for d in loads) >= sum(int(l.gemm_weights().size)
                                                                  for l in qmodel.layers if l.is_gemm)
    np.testing.assert_array_equal(isa_run_program(program, x_q[:1])[0], golden_forward(qmodel, x_q[:1]))


# Hand-worked greedy choice, 4x4 array, ws: fc0 8x16 is 4 column tiles of 8 rows (32 rows),
# 8 GEMMs of a 4x4 tile: it saves 8*16 + 8*32 = 384 B per run (12 B/row); fc1 16x4 is
# 1 column tile of 16 rows, 4 GEMMs: 16*4 + 4*32 = 192 B (12 B/row). Both: 48 rows. Short of
# that, the streamed layers keep 2 halves of at least 4 rows (the largest tile), the rest is
# filled by bytes per row, ties by bytes: fc0 first; the streaming halves then share what is
# left, (weight_rows - resident rows) // 2 each.
@pytest.mark.parametrize("weight_rows, layers, halves", [
    (48, ["fc0", "fc1"], [0, 24]),   # all fit: the halves are the plain ones, never used
    (46, ["fc0"], [0, 7]),           # 46 - 8 = 38: fc0 (32); fc1 (16) no longer fits; (46-32)/2
    (40, ["fc0"], [0, 4]),
    (30, ["fc1"], [0, 7]),           # 30 - 8 = 22: fc0 does not fit, fc1 does; (30-16)/2
    (16, [], None),                  # 16 - 8 = 8: nothing fits; every tile streams
    (8, [], None),
])
def test_greedy_choice(weight_rows, layers, halves):
    rng = np.random.default_rng(5)
    model = make_model(rng, [8, 16, 4])
    config = AccelConfig(rows=4, cols=4, weight_rows=weight_rows)
    program = compile_model(model, config)
    assert program.resident.get("layers", []) == layers
    if halves is not None:
        assert program.resident["stream_halves"] == halves
        assert program.resident["rows"] == {"fc0": 32, "fc1": 16, "fc0fc1": 48}["".join(layers)]
    starts = halves or [0, weight_rows // 2]
    size = starts[1]
    for node in program.nodes:
        assert node.tiles["weights_resident"] == (node.name in layers)
        loads = weight_loads(node.insns)
        assert (not loads) == (node.name in layers)
        # streamed tiles go to the two halves, each LOAD (a run of a weight group) inside one
        for d in loads:
            rows = [d["buf_row"] + i1 * d["buf_stride1"] + i2 * d["buf_stride2"]
                    for i1 in range(d["n1"]) for i2 in range(d["n2"])]
            assert any(h <= min(rows) and max(rows) < h + size for h in starts), (d, starts)
    x = random_input(rng, model, 3)
    assert_runs_golden(model, config, 3, x)


def test_conv_weight_tile_loaded_once_per_job_not_per_block():
    """A conv whose ifmap is cut into several blocks reloads each weight tile per block when
    streamed; resident, the init graph loads it once and every block's GEMMs share its rows."""
    from layer_cases import conv_layer
    from celosia.sw.quant.model import QModel
    rng = np.random.default_rng(8)
    # (in_zp != 0: ws computes the padding rows too, so every block runs every tap)
    layer = conv_layer(rng, "c", (12, 12, 3), 6, 3, pad=1, in_zp=5)
    model = QModel(name="c", layers=[layer], input_scale=0.05, input_zp=5, input_shape=(12, 12, 3))
    config = AccelConfig(rows=4, cols=4, ifmap_rows=64, psum_rows=64, weight_rows=512)
    streamed = compile_model(model, config, resident_weights=False)
    resident = compile_model(model, config)
    blocks = streamed.nodes[0].tiles["out_tiles"] // 2   # 2 column tiles of 4 (and 2) channels
    assert blocks > 1
    w_bytes = int(layer.gemm_weights().size)
    assert sum(d["n0"] * d["n1"] * d["n2"] for d in weight_loads(streamed.nodes[0].insns)) == blocks * w_bytes
    assert sum(d["n0"] * d["n1"] * d["n2"] for d in decoded(resident.init.insns)) == w_bytes
    gemm_rows = [d["weight_row"] for d in decoded(resident.nodes[0].insns) if d["op"] == Opcode.GEMM]
    assert len(set(gemm_rows)) == len(gemm_rows) // blocks   # 9 taps x 2 column tiles
    x = rng.integers(-128, 128, (1, 12 * 12 * 3)).astype(np.int8)
    for seed in SEEDS[:3]:
        np.testing.assert_array_equal(isa_run_program(resident, x, seed)[0], golden_forward(model, x))


# --- the report's DRAM bytes before / after -----------------------------------------------

@pytest.mark.parametrize("dataflow, weight_rows", [("ws", 256), ("ws", 4096), ("rs", 4096)])
def test_report_bytes_before_and_after(digits_models, dataflow, weight_rows):
    """``dram_bytes_per_inference_streamed`` is what the program compiled without resident
    weights moves; the init graph reads the resident weights once plus its own fetch."""
    qmodel, _ = digits_models["digits_mlp"]
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, weight_rows=weight_rows)
    on = compile_model(qmodel, config, batch=2)
    off = compile_model(qmodel, config, batch=2, resident_weights=False)
    rep_on, rep_off = resident_weights_report(on), resident_weights_report(off)
    t_off, t_on = program_traffic(off), program_traffic(on)
    before = (t_off.read + t_off.written) / 2
    assert rep_off["dram_bytes_per_inference"] == rep_off["dram_bytes_per_inference_streamed"] == before
    assert rep_on["dram_bytes_per_inference_streamed"] == before
    assert rep_on["dram_bytes_per_inference"] == (t_on.read + t_on.written) / 2
    assert on.init is not None   # fc2 (3 column tiles x 32 rows) fits even the 256-row buffer
    assert rep_on["dram_bytes_per_inference"] < before
    resident = [l for l in qmodel.layers if l.name in on.resident["layers"]]
    n_init = len(on.init.insns)
    # weights once + 32 B per LOAD + the init node's descriptor and the end of its table
    assert rep_on["init_dram_bytes"] == (sum(int(l.gemm_weights().size) for l in resident)
                                         + isa.INSN_BYTES * n_init + 2 * isa.DESC_BYTES)
    if weight_rows == 4096:   # all resident: per run, no weight byte at all
        assert t_on.read + t_on.written == t_off.read + t_off.written - sum(
            t.weight_read for t in t_off.layers) - isa.INSN_BYTES * (off.n_insns - on.n_insns)


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_no_resident_weights_when_they_cost_more(digits_models, dataflow):
    """digits_mlp on 4x4 with a 128-row weight buffer: fc2 (96 rows) would fit, but the
    streaming halves of the other layers would shrink to 16 rows (4 tiles per weight group
    instead of 16), costing more LOAD instructions per run than fc2's weights save: the
    compiler streams everything, and the report says so."""
    qmodel, _ = digits_models["digits_mlp"]
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, weight_rows=128)
    on = compile_model(qmodel, config, batch=2)
    off = compile_model(qmodel, config, batch=2, resident_weights=False)
    assert on.init is None and on.resident == {}
    assert on.nodes[-1].insns == off.nodes[-1].insns
    rep = resident_weights_report(on)
    assert rep["dram_bytes_per_inference"] == rep["dram_bytes_per_inference_streamed"]


def test_golden_report_fields(digits_models):
    qmodel, x_q = digits_models["digits_mlp"]
    config = AccelConfig(rows=4, cols=4, weight_rows=4096)
    rep = run_quantized(qmodel, x_q, config).report
    res, roof = rep["resident_weights"], rep["roofline"]
    assert res["enabled"] and res["layers"] == ["fc0", "fc1", "fc2"]
    assert roof["dram_bytes_per_inference"] == res["dram_bytes_per_inference"]
    assert roof["dram_bytes_per_inference_streamed"] == res["dram_bytes_per_inference_streamed"]
    assert roof["init_dram_bytes"] == res["init_dram_bytes"] > 0
    assert roof["dram_weight_bytes"] == 0
    off = run_quantized(qmodel, x_q, config, resident_weights=False).report
    assert not off["resident_weights"]["enabled"] and off["roofline"]["init_dram_bytes"] == 0
    assert off["roofline"]["dram_bytes_per_inference"] == res["dram_bytes_per_inference_streamed"]


# --- the driver's job: init once, then every inference ------------------------------------

class IsaTransport:
    """The four primitives :func:`~celosia.sim.job.run_job` drives, on an :class:`IsaSim`:
    CSR writes set PROG_BASE and the base registers, CTRL=1 runs the program to the end."""

    def __init__(self, config, seed):
        self.sim = IsaSim(config)
        self.prog_base, self.seed, self.runs = 0, seed, 0

    async def host_write(self, word, value):
        self.sim.dram[8 * word:8 * word + 8] = value.to_bytes(8, "little")

    async def host_read(self, word):
        return int.from_bytes(self.sim.dram[8 * word:8 * word + 8], "little")

    async def csr_write(self, addr, value):
        if addr == Csr.PROG_BASE:
            self.prog_base = value
        elif Csr.BASE0 <= addr < Csr.BASE0 + isa.NUM_BASE_REGS:
            self.sim.base[addr - Csr.BASE0] = value
        elif addr == Csr.CTRL and value & 1:
            self.runs += 1
            self.sim.run(self.prog_base, seed=self.seed)

    async def csr_read(self, addr):
        return isa.pack(isa.Status, done=1) if addr == Csr.STATUS else 0

    async def wait(self, cycles):
        pass


@pytest.mark.parametrize("profile", [False, True])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_job_runs_init_once_then_every_inference(digits_models, name, profile):
    qmodel, x_q = digits_models[name]
    config = AccelConfig(rows=4, cols=4, weight_rows=4096)
    program = compile_model(qmodel, config, batch=2)
    job, lay, lead = build_job(program, x_q, profile=profile)
    assert lead == ["init"]  # profile (old callers) adds no run: node snapshots need none
    assert len(job.runs) == len(lead) + 3   # 6 samples, 2 per run
    init_base = dict(job.runs[0].csr_writes)[Csr.PROG_BASE]
    assert init_base == lay["program"] + program.init_offset
    assert all(dict(r.csr_writes)[Csr.PROG_BASE] != init_base for r in job.runs[1:])
    transport = IsaTransport(config, seed=1)
    results = asyncio.run(run_job(transport, job))
    assert transport.runs == len(job.runs)
    y_q = np.frombuffer(b"".join(r.data[0] for r in results[len(lead):]), np.int8).reshape(6, -1)
    np.testing.assert_array_equal(y_q, golden_forward(qmodel, x_q))
