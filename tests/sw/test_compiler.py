"""Compiler + ISA: compiled programs run by the instruction-level simulator match the golden model.

Every program is run by :class:`~celosia.sim.isa_sim.IsaSim` under the round-robin
schedule and several random legal schedules (seeds), so a missing dependency token
shows up as a wrong result or a deadlock. The expected output is always
:func:`celosia.sw.driver.golden_forward`.
"""

import dataclasses
import math
import re

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sim.golden import activation_range, quantize_multiplier
from celosia.sim.isa_sim import IsaError, IsaSim
from celosia.sw.analysis import program_traffic
from celosia.sw.compiler import CompileError, allocate, compile_model
from celosia.sw.driver import golden_forward
from celosia.sw.quant.model import QLayer, QModel

SEEDS = (None, 0, 1, 2, 3)


# --- factory -----------------------------------------------------------------

def make_layer(rng, name, K, N, in_zp, activation):
    """A random int8 FC layer whose outputs mostly land inside the int8 range (not all saturated)."""
    w = rng.integers(-127, 128, size=(K, N)).astype(np.int8)
    bias = rng.integers(-(1 << 14), 1 << 14, size=N).astype(np.int32)
    # acc std ~ sqrt(K) * 100 * 73: outputs of a few tens of steps around out_zp.
    real = np.exp(rng.uniform(np.log(5e-4), np.log(5e-3), size=N)) / math.sqrt(K)
    if N >= 3:
        real[rng.integers(N)] = rng.uniform(1.0, 3.0)   # shift > 0: left shift path (saturates)
        real[rng.integers(N)] = rng.uniform(0.3, 0.9)   # shift == 0
    m0, shift = zip(*(quantize_multiplier(float(r)) for r in real))
    out_zp = int(rng.integers(-64, 65))
    act_min, act_max = activation_range(activation, 0.05, out_zp)
    return QLayer(name=name, op="fc", w=w, bias=bias, m0=np.array(m0, np.int32),
                  shift=np.array(shift, np.int32), in_scale=0.05, in_zp=int(in_zp), out_scale=0.05,
                  out_zp=out_zp, act_min=int(act_min), act_max=int(act_max), activation=activation)


def make_model(rng, dims, activations=None, name="rand"):
    """A chain of FC layers ``dims[0] -> dims[1] -> ...``; activations default to random relu/none."""
    zp0 = zp = int(rng.integers(-128, 128))
    layers = []
    for i, (K, N) in enumerate(zip(dims[:-1], dims[1:])):
        act = activations[i] if activations else str(rng.choice(["none", "relu"]))
        layer = make_layer(rng, f"fc{i}", K, N, zp, act)
        layers.append(layer)
        zp = layer.out_zp
    return QModel(name=name, layers=layers, input_scale=0.05, input_zp=zp0, input_shape=(dims[0],))


def tight(config: AccelConfig, model: QModel, batch: int) -> AccelConfig:
    """The smallest buffers that the compiler accepts for ``model`` at ``batch``."""
    kt = max(math.ceil(l.in_features / config.rows) for l in model.layers)
    nt = max(math.ceil(l.out_features / config.cols) for l in model.layers)
    return dataclasses.replace(config, ifmap_rows=2 * batch * kt, psum_rows=2 * batch,
                               param_rows=2 * nt, weight_rows=2 * config.rows)


def random_input(rng, model, batch):
    return rng.integers(-128, 128, size=(batch, model.in_features)).astype(np.int8)


# --- running a program on IsaSim --------------------------------------------------------

def link(program, x_runs, rng=None, base=0):
    """DRAM holding program, static data and one input per run (garbage everywhere else)."""
    lay = program.layout(len(x_runs), base=base)
    rng = rng or np.random.default_rng(12345)
    dram = bytearray(rng.integers(0, 256, size=lay["end"], dtype=np.uint8).tobytes())

    def put(addr, blob):
        dram[addr:addr + len(blob)] = blob

    put(lay["program"], program.image())
    put(lay["static"], program.static)
    for r, x in enumerate(x_runs):
        blob = np.ascontiguousarray(x, dtype=np.int8).tobytes()
        assert len(blob) == program.input_bytes
        put(lay["input"] + r * lay["input_stride"], blob)
    return dram, lay


def run_program(program, x, seed=None, image=None, upto=None):
    """Run ``program`` (or a patched ``image`` of it) on input ``x``; returns (output, tokens, sim, dram, lay).

    With ``upto``, runs only the first ``upto`` nodes the way the driver profiles them: a short
    descriptor table at address 0, in front of the full program image.
    """
    base = 0 if upto is None else len(program.descriptor_table(upto=upto))
    dram, lay = link(program, [x], base=base)
    if image is not None:
        dram[lay["program"]:lay["program"] + len(image)] = image
    prog_base = lay["program"]
    if upto is not None:
        table = program.descriptor_table(upto=upto, delta=lay["program"])
        dram[0:len(table)] = table
        prog_base = 0
    sim = IsaSim(program.config, dram)
    sim.base[BaseReg.PROGRAM] = prog_base
    sim.base[BaseReg.STATIC] = lay["static"]
    sim.base[BaseReg.SCRATCH] = lay["scratch"]
    sim.base[BaseReg.INPUT] = lay["input"]
    sim.base[BaseReg.OUTPUT] = lay["output"]
    run_init(sim, program, lay, seed)
    tokens = sim.run(prog_base, seed=seed)
    out = np.frombuffer(bytes(dram[lay["output"]:lay["output"] + program.output_bytes]), dtype=np.int8)
    return out.reshape(program.batch, program.out_features), tokens, sim, dram, lay


def run_init(sim, program, lay, seed=None):
    """Run the program's initialization graph (if it has one) on ``sim``, as the driver
    does once per job; it moves no tokens."""
    if program.init is not None:
        assert sim.run(lay["program"] + program.init_offset, seed=seed) == {
            "l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}


_POPS = {0: {"pop_next": "c2l"}, 1: {"pop_prev": "l2c", "pop_next": "s2c"}, 2: {"pop_prev": "c2s"}}
_PUSHES = {0: {"push_next": "l2c"}, 1: {"push_prev": "c2l", "push_next": "c2s"}, 2: {"push_prev": "s2c"}}
_QUEUE = {Opcode.LOAD: 0, Opcode.GEMM: 1, Opcode.VEC: 1, Opcode.NOP: 1, Opcode.STORE: 2}


def assert_program_order_is_legal(program):
    """Every pop is matched by an earlier push in program order (so an in-order fetch into
    bounded queues cannot deadlock), and the counts balance."""
    tokens = {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
    for i, word in enumerate(w for node in program.nodes for w in node.insns):
        d = isa.decode(word)
        q = _QUEUE[d["op"]]
        for flag, t in _POPS[q].items():
            if d["dep"][flag]:
                tokens[t] -= 1
                assert tokens[t] >= 0, f"instruction {i} pops {t} before any push"
        for flag, t in _PUSHES[q].items():
            if d["dep"][flag]:
                tokens[t] += 1
    assert tokens == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}


def assert_runs_golden(model, config, batch, x, seeds=SEEDS, resident_weights=True):
    program = compile_model(model, config, batch=batch, resident_weights=resident_weights)
    assert_program_order_is_legal(program)
    want = golden_forward(model, x)
    for seed in seeds:
        got, tokens, sim, _, _ = run_program(program, x, seed)
        np.testing.assert_array_equal(got, want, err_msg=f"config {config.array} batch {batch} seed {seed}")
        assert tokens == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}, (seed, tokens)
        assert sim.macs == model.macs_per_sample() * batch
    return program, want


# --- compiled programs == golden model --------------------------------------------------

ARRAYS = [(1, 1), (2, 2), (3, 5), (4, 4), (4, 8), (8, 8), (16, 4)]


@pytest.mark.parametrize("dataflow", ["ws", "rs", "feie"])
@pytest.mark.parametrize("buffers", ["default", "tight"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("rows, cols", ARRAYS)
def test_random_models_match_golden(rows, cols, batch, buffers, dataflow):
    """(ws and os share one lowering; feie the same with the zero point in the GEMM
    instead of the bias; rs has its own.)"""
    rng = np.random.default_rng(rows * 1000 + cols * 10 + batch)
    # K and N not multiples of the array: odd sizes, smaller and larger than the array.
    dims = [7, 5, 3] if rows * cols == 1 else [13, 11, 7, 3]
    if rows * cols >= 16:
        dims = [21, 13, 11, 7, 3]
    model = make_model(rng, dims)
    config = AccelConfig(rows=rows, cols=cols, dataflow=dataflow)
    if buffers == "tight":
        config = tight(config, model, batch)
    x = random_input(rng, model, batch)
    assert_runs_golden(model, config, batch, x)
    inner = [golden_forward(QModel("p", model.layers[:k], 1.0, 0), x) for k in range(1, len(dims))]
    assert len(np.unique(np.concatenate([a.ravel() for a in inner]))) > 4, "test model saturates"


@pytest.mark.parametrize("K, N", [(13, 11), (7, 3), (1, 1), (3, 7), (8, 8), (9, 17)])
@pytest.mark.parametrize("batch", [1, 5])
def test_single_layer_odd_sizes(K, N, batch):
    rng = np.random.default_rng(K * 100 + N + batch)
    for act in ("none", "relu"):
        model = make_model(rng, [K, N], activations=[act])
        x = random_input(rng, model, batch)
        for rows, cols, dataflow in [(4, 4, "ws"), (3, 5, "ws"), (8, 8, "ws"), (4, 4, "rs"), (3, 5, "rs")]:
            assert_runs_golden(model, AccelConfig(rows=rows, cols=cols, dataflow=dataflow), batch, x,
                               seeds=(None, 0, 1))


def test_relu_clamps_at_output_zero_point():
    rng = np.random.default_rng(7)
    model = make_model(rng, [13, 11], activations=["relu"])
    layer = model.layers[0]
    assert (layer.act_min, layer.act_max) == (max(-128, layer.out_zp), 127)
    x = random_input(rng, model, 5)
    _, want = assert_runs_golden(model, AccelConfig(rows=4, cols=4), 5, x, seeds=(None, 0))
    assert want.min() >= layer.act_min
    assert (want == layer.act_min).any()  # the clamp is exercised


@pytest.mark.parametrize("batch", [1, 5])
def test_weights_exceed_weight_buffer(batch):
    """40x37 on a 4x4 array whose weight buffer holds 2 tiles: 100 weight tiles stream through it."""
    rng = np.random.default_rng(40 + batch)
    config = AccelConfig(rows=4, cols=4, weight_rows=8)
    model = make_model(rng, [40, 37], activations=["none"])
    program = compile_model(model, config, batch)
    assert program.nodes[0].tiles["gemms"] == 10 * 10  # ceil(40/4) x ceil(37/4) weight tiles
    assert config.weight_rows // config.rows == 2
    x = random_input(rng, model, batch)
    _, want = assert_runs_golden(model, config, batch, x)
    assert len(np.unique(want)) > 10
    # and as the middle layer of a chain (the barrier between layers)
    model = make_model(rng, [9, 40, 37, 5])
    x = random_input(rng, model, batch)
    assert_runs_golden(model, config, batch, x, seeds=(None, 0, 1))


def test_several_runs_share_program_and_static_data():
    """Two runs linked at once: only the INPUT / OUTPUT base registers change between them."""
    rng = np.random.default_rng(3)
    model = make_model(rng, [13, 11, 7, 3])
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2)
    xs = [random_input(rng, model, 2) for _ in range(2)]
    dram, lay = link(program, xs)
    sim = IsaSim(program.config, dram)
    sim.base[BaseReg.STATIC] = lay["static"]
    sim.base[BaseReg.SCRATCH] = lay["scratch"]
    run_init(sim, program, lay)  # once, for both runs
    for r, x in enumerate(xs):
        sim.base[BaseReg.INPUT] = lay["input"] + r * lay["input_stride"]
        sim.base[BaseReg.OUTPUT] = lay["output"] + r * lay["output_stride"]
        assert sim.run(lay["program"], seed=r) == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}
    for r, x in enumerate(xs):
        a = lay["output"] + r * lay["output_stride"]
        got = np.frombuffer(bytes(dram[a:a + program.output_bytes]), np.int8).reshape(2, -1)
        np.testing.assert_array_equal(got, golden_forward(model, x))


def test_static_data_layout():
    """Weights [K, N] row-major; 9-byte PPU records with the input zero point folded into the bias."""
    rng = np.random.default_rng(11)
    model = make_model(rng, [13, 11, 7])
    config = AccelConfig(rows=4, cols=4)
    program = compile_model(model, config)
    static = program.static
    assert len(static) % 8 == 0
    off = 0
    for layer in model.layers:
        K, N = layer.w.shape
        assert static[off:off + K * N] == layer.w.tobytes()
        off = (off + K * N + 7) // 8 * 8
        n_pad = math.ceil(N / config.cols) * config.cols
        blob = static[off:off + isa.PARAM_BYTES * n_pad]
        recs = [isa.unpack_bytes(isa.ParamRecord, blob[i:]) for i in range(0, len(blob), isa.PARAM_BYTES)]
        assert len(recs) == n_pad
        for key, want in (("bias", layer.folded_bias()), ("m0", layer.m0), ("shift", layer.shift)):
            np.testing.assert_array_equal([r[key] for r in recs[:N]], want, err_msg=key)
        assert not any(blob[isa.PARAM_BYTES * N:])
        off = (off + isa.PARAM_BYTES * n_pad + 7) // 8 * 8
    assert off == len(static)
    # folded bias: an exact integer identity
    layer = model.layers[0]
    x = random_input(rng, model, 3).astype(np.int64)
    lhs = (x - layer.in_zp) @ layer.w.astype(np.int64) + layer.bias
    rhs = x @ layer.w.astype(np.int64) + layer.folded_bias()
    np.testing.assert_array_equal(lhs, rhs)


# --- the tokens matter ------------------------------------------------------------------

def _tokens_model():
    rng = np.random.default_rng(99)
    config = AccelConfig(rows=4, cols=4, weight_rows=8)
    model = make_model(rng, [40, 37], activations=["none"])
    x = random_input(rng, model, 2)
    return config, model, x


def _patched_image(program, pick, flag):
    """The program image with ``flag`` cleared on the first instruction ``pick(decoded)`` selects."""
    insns = program.nodes[0].insns
    idx = next(i for i, w in enumerate(insns) if pick(isa.decode(w)))
    d = isa.decode(insns[idx])
    assert d["dep"][flag] == 1
    op = d.pop("op")
    d["dep"][flag] = 0
    patched = list(insns)
    patched[idx] = isa.encode(op, **d)
    assert isa.decode(patched[idx])["dep"][flag] == 0
    saved = program.nodes[0].insns
    program.nodes[0].insns = patched
    try:
        return program.image()
    finally:
        program.nodes[0].insns = saved


def test_missing_weight_token_breaks_some_schedule():
    """Without pop_next on weight tile 2's LOAD, the load may overwrite tile 0 before GEMM 0 reads it."""
    config, model, x = _tokens_model()
    program = compile_model(model, config, batch=len(x))
    want = golden_forward(model, x)
    half = config.weight_rows // 2
    image = _patched_image(
        program, lambda d: d["op"] == Opcode.LOAD and d["buf"] == Buffer.WEIGHT and d["dep"]["pop_next"]
        and d["buf_row"] == 0, "pop_next")
    assert half == 4
    failures = []
    for seed in range(20):
        ok, _, _, _, _ = run_program(program, x, seed)  # the real program is right for the same seeds
        np.testing.assert_array_equal(ok, want)
        try:
            got, tokens, _, _, _ = run_program(program, x, seed, image=image)
        except IsaError as e:
            assert e.code == isa.ErrorCode.TOKEN_DEADLOCK
            failures.append((seed, "deadlock"))
            continue
        assert tokens["c2l"] == 1  # the unconsumed push is visible as an imbalance
        if not np.array_equal(got, want):
            failures.append((seed, "wrong"))
    assert any(kind == "wrong" for _, kind in failures), failures


def test_missing_push_deadlocks():
    """Without GEMM 0's push_prev (c2l), the last weight LOAD waits forever."""
    config, model, x = _tokens_model()
    program = compile_model(model, config, batch=len(x))
    image = _patched_image(program, lambda d: d["op"] == Opcode.GEMM, "push_prev")
    for seed in (None, 0, 1):
        with pytest.raises(IsaError, match="TOKEN_DEADLOCK") as e:
            run_program(program, x, seed, image=image)
        assert e.value.code == isa.ErrorCode.TOKEN_DEADLOCK


def test_missing_store_token_breaks_some_schedule():
    """Without the STORE's pop_prev (c2s), a store may read a psum tile before its GEMMs ran."""
    config, model, x = _tokens_model()
    program = compile_model(model, config, batch=len(x))
    want = golden_forward(model, x)
    image = _patched_image(program, lambda d: d["op"] == Opcode.STORE, "pop_prev")
    results = []
    for seed in range(10):
        try:
            got, _, _, _, _ = run_program(program, x, seed, image=image)
            results.append(np.array_equal(got, want))
        except IsaError:
            results.append(False)
    assert not all(results)


# --- fc lowering: input chunks shared by psum blocks of output tiles ----------------------

# (K, N, batch, buffers, input bytes read, instructions), worked by hand for a 4x4 array
# (kt = ceil(K/4) k tiles, nt = ceil(N/4) output tiles, streamed weights: one GEMM per
# (k tile, output tile); the streamed GEMMs of a unit in weight groups of 1, 2, 4, 8, 16,
# ... in emission order, and in a group the weight LOADs of consecutive k tiles of one
# output tile with the same k_len and n_len merge into one LOAD):
FC_CASES = [
    # ifmap half 12 rows = 4 k tiles of batch 3: chunks of 4, 4, 2 k tiles, one LOAD each;
    # psum half 9 rows = 3 tiles of batch 3; param half 6 tiles: units of tiles 0-5 and
    # 6-9, blocks [0-2] [3-5] | [6-8] [9]: the input (3 x 40 bytes) read 4 times.
    # Unit 1, GEMMs t = 0..59 as (tile, k): (0, 0-3) (1, 0-3) (2, 0-3) (0, 4-7) (1, 4-7)
    # (2, 4-7) (0, 8-9) (1, 8-9) (2, 8-9), then tiles 3-5 alike; groups t 0 | 1-2 | 3-6 |
    # 7-14 | 15-30 | 31-59 with 1, 1, 2, 3, 7, 9 runs = 23 weight LOADs. Unit 2: tiles 6-8
    # alike, then tile 9 k 0-9 (a block of its own: one run); groups 0 | 1-2 | 3-6 | 7-14 |
    # 15-30 | 31-39: 1, 1, 2, 3, 7, 1 = 15.
    # 2 param LOADs + 38 weight LOADs + 100 GEMMs + 4 blocks x 3 chunk LOADs + 10 STOREs
    # + 1 NOP between the units.
    (40, 37, 3, dict(ifmap_rows=24, psum_rows=18, param_rows=12), 4 * 3 * 40, 2 + 38 + 100 + 12 + 10 + 1),
    # K = 42: 11 k tiles, the last of 2 inputs; ifmap half 10 rows = 2 k tiles of batch 5:
    # chunks [0,1] .. [8,9] one LOAD each, [10] the partial tile's LOAD; the psum half holds
    # one tile of batch 5: blocks of 1, the input read once per output tile (3).
    # GEMMs tile by tile, k 0-10 (k 10 a 2-row LOAD: its own run); groups t 0 | 1-2 | 3-6 |
    # 7-14 | 15-30 | 31-32 with 1, 1, 1, 3, 3, 2 runs.
    # 1 param LOAD + 11 weight LOADs + 33 GEMMs + 3 x 6 chunk LOADs + 3 STOREs.
    (42, 9, 5, dict(ifmap_rows=20, psum_rows=10), 3 * 5 * 42, 1 + 11 + 33 + 18 + 3),
    # the input (4 k tiles x batch 2) fits an ifmap half: resident, read once by two LOADs
    # (3 whole k tiles, the partial one). GEMMs tile by tile, k 0-3 (k 3 a 1-row LOAD);
    # groups t 0 | 1-2 | 3-6 | 7-11 with 1, 1, 2, 3 runs: 1 + 2 + 7 weight LOADs + 12 GEMMs
    # + 3 STOREs.
    (13, 11, 2, {}, 2 * 13, 1 + 2 + 7 + 12 + 3),
]


@pytest.mark.parametrize("dataflow", ["ws", "feie"])
@pytest.mark.parametrize("K, N, batch, buffers, ifmap_bytes, n_insns", FC_CASES)
def test_fc_input_chunks_serve_psum_blocks(K, N, batch, buffers, ifmap_bytes, n_insns, dataflow):
    rng = np.random.default_rng(K * N + batch)
    model = make_model(rng, [K, N], activations=["relu"])
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, **buffers)
    x = random_input(rng, model, batch)
    program, _ = assert_runs_golden(model, config, batch, x, seeds=(None, 0, 1), resident_weights=False)
    traffic = program_traffic(program, model).layers[0]
    assert traffic.ifmap_read == ifmap_bytes
    assert traffic.weight_read == K * N            # every weight once
    assert len(program.nodes[0].insns) == n_insns
    assert_runs_golden(model, config, batch, x, seeds=(None, 2))   # resident weights


# --- compile errors ---------------------------------------------------------------------

def test_input_larger_than_ifmap_half_streams_per_tile():
    rng = np.random.default_rng(5)
    model = make_model(rng, [4, 40, 3])  # fc1 has K=40: 10 tiles of 4 rows
    resident = compile_model(model, AccelConfig(rows=4, cols=4, ifmap_rows=20), batch=1)
    assert resident.nodes[1].tiles["ifmap_resident"]  # half = 10 rows: fits exactly
    config = AccelConfig(rows=4, cols=4, ifmap_rows=18)
    streamed = compile_model(model, config, batch=1)
    assert not streamed.nodes[1].tiles["ifmap_resident"]
    assert streamed.n_insns > resident.n_insns  # one ifmap LOAD per chunk of 9 k tiles now
    for batch in (1, 2):
        assert_runs_golden(model, config, batch, random_input(rng, model, batch), seeds=(None, 0, 1))
    with pytest.raises(CompileError, match=r"'fc0'.*ifmap_rows=4.*batch"):
        compile_model(model, AccelConfig(rows=4, cols=4, ifmap_rows=4), batch=3)


def test_rs_streams_fc_lines_through_a_small_ifmap_half():
    """rs, input not resident: the lines per GEMM are capped by the ifmap half (2 rows)."""
    rng = np.random.default_rng(15)
    model = make_model(rng, [256, 2], activations=["none"])
    config = AccelConfig(rows=8, cols=8, dataflow="rs", ifmap_rows=4)
    program, _ = assert_runs_golden(model, config, 1, random_input(rng, model, 1), seeds=(None, 0))
    assert not program.nodes[0].tiles["ifmap_resident"]


def test_error_when_batch_exceeds_psum_half():
    rng = np.random.default_rng(6)
    model = make_model(rng, [13, 11])
    config = AccelConfig(rows=4, cols=4, psum_rows=8)  # half = 4 batch rows
    compile_model(model, config, batch=4)
    with pytest.raises(CompileError) as e:
        compile_model(model, config, batch=5)
    msg = str(e.value)
    assert "'fc0'" in msg and "psum_rows" in msg and "batch=5" in msg


def test_params_larger_than_param_half_split_the_layer():
    rng = np.random.default_rng(8)
    model = make_model(rng, [5, 9, 6])  # fc0: 3 column tiles of 4
    one = compile_model(model, AccelConfig(rows=4, cols=4, param_rows=6))
    assert one.nodes[0].tiles["units"] == 1
    config = AccelConfig(rows=4, cols=4, param_rows=4)  # 2 rows per half
    split = compile_model(model, config)
    assert split.nodes[0].tiles["units"] == 2
    assert_runs_golden(model, config, 2, random_input(rng, model, 2), seeds=(None, 0, 1, 2))


def test_error_on_bad_batch_and_unsupported_op():
    rng = np.random.default_rng(9)
    model = make_model(rng, [5, 3])
    with pytest.raises(CompileError, match="batch"):
        compile_model(model, AccelConfig(), batch=0)
    model.layers[0].op = "lstm"
    with pytest.raises(CompileError, match=r"'fc0'.*lstm"):
        compile_model(model, AccelConfig())


# --- program image and disassembly -------------------------------------------------------

def _descriptors(image):
    out = []
    for i in range(0, len(image), 8):
        d = isa.unpack_bytes(isa.NodeDescriptor, image[i:i + isa.DESC_BYTES])
        off, n, kind = d["insn_offset"], d["n_insn"], d["kind"]
        out.append((off, n, kind))
        if n == 0:
            return out
    raise AssertionError("descriptor table not terminated")


def _check_table(mem, table_addr, program, k):
    """The descriptor table at ``table_addr`` in ``mem`` lists the first ``k`` nodes and then ends."""
    nodes = program.nodes
    descs = _descriptors(mem[table_addr:])
    assert len(descs) == k + 1 and descs[-1][1] == 0
    expect = None
    for i, (off, n, kind) in enumerate(descs[:-1]):
        assert off % isa.INSN_BYTES == 0
        assert expect is None or off == expect  # blocks are contiguous
        assert n == len(nodes[i].insns) and kind == i
        for j, word in enumerate(nodes[i].insns):
            a = table_addr + off + j * isa.INSN_BYTES
            words = [int.from_bytes(mem[a + 8 * q:a + 8 * q + 8], "little") for q in range(4)]
            assert isa.decode_words(words) == word
        expect = off + n * isa.INSN_BYTES


def test_image_descriptor_tables():
    rng = np.random.default_rng(21)
    model = make_model(rng, [13, 11, 7, 3, 5])
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2)
    nodes = program.nodes
    n = len(nodes)
    image = program.image()
    full = program.descriptor_table()
    assert image.startswith(full)
    assert len(full) == (((n + 1) * isa.DESC_BYTES + isa.INSN_BYTES - 1) // isa.INSN_BYTES) * isa.INSN_BYTES
    assert program.init is not None  # its weights fit: the init graph follows the execution graph
    assert program.init_offset == len(full) + isa.INSN_BYTES * program.n_insns
    _check_table(image, program.init_offset, dataclasses.replace(program, nodes=[program.init]), 1)
    assert len(image) == program.init_offset + isa.INSN_BYTES * (1 + len(program.init.insns))
    _check_table(image, 0, program, n)
    assert _descriptors(image)[0][0] == len(full)  # the first block follows the table
    for k in range(n + 1):
        table = program.descriptor_table(upto=k)
        t = (k + 1) * isa.DESC_BYTES
        assert len(table) % isa.INSN_BYTES == 0 and len(table) - t < isa.INSN_BYTES
        assert table[t:] == bytes(len(table) - t)
        # a short table in front of the image (as the driver places the profiling tables)
        for gap in (0, 64, 4096):
            delta = len(table) + gap
            mem = program.descriptor_table(upto=k, delta=delta) + bytes(gap) + image
            _check_table(mem, 0, program, k)
            if k == n:
                assert _descriptors(mem) == [(o + delta, c, kd) for o, c, kd in _descriptors(image)[:-1]] + [(0, 0, 0)]


def test_prefix_images_leave_intermediate_output_in_scratch():
    """descriptor_table(upto=k) (the driver's per-layer profiling) computes the first k layers
    (outputs through DRAM: with kept outputs a prefix's last output is in the ifmap buffer,
    and the driver reads only the prefixes' counters)."""
    rng = np.random.default_rng(22)
    model = make_model(rng, [13, 11, 7, 3])
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2, keep_outputs=False)
    x = random_input(rng, model, 2)
    for k in range(1, len(model.layers)):
        prefix = QModel(name="p", layers=model.layers[:k], input_scale=1.0, input_zp=0)
        want = golden_forward(prefix, x)
        reg, slot = allocate(model, program.config, 2)[1][k - 1].dst
        assert reg == BaseReg.SCRATCH
        for seed in (None, 0, 1):
            _, tokens, sim, dram, lay = run_program(program, x, seed, upto=k)
            a = lay["scratch"] + slot
            got = np.frombuffer(bytes(dram[a:a + want.size]), np.int8).reshape(want.shape)
            np.testing.assert_array_equal(got, want)
            # the trailing barrier NOP's c2l push is left over (START resets the counters)
            assert tokens == {"l2c": 0, "c2l": 1, "c2s": 0, "s2c": 0}


_DIS_LINE = re.compile(r"^\s+(\d+) (\w+)\s+(.*?)\s*\[([\w,]*)\]$")


def test_disassemble_round_trip():
    rng = np.random.default_rng(23)
    model = make_model(rng, [13, 11, 7])
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=3)
    text = program.disassemble()
    for op in (Opcode.LOAD, Opcode.GEMM, Opcode.STORE, Opcode.NOP):  # VEC: pooling models
        assert re.search(rf"\b{op.name}\b", text), op.name
    lines = text.splitlines()
    # the initialization graph (one node) first, then the execution graph, each with a title
    assert program.init is not None
    graphs = [program.init] + program.nodes
    assert lines[0] == "initialization graph:" and "execution graph:" in lines
    assert len(lines) == 2 + len(graphs) + program.n_insns + len(program.init.insns)
    words = iter(w for node in graphs for w in node.insns)
    for line in lines:
        if line.startswith("node ") or line.endswith("graph:"):
            continue
        m = _DIS_LINE.match(line)
        assert m, line
        op = Opcode[m.group(2)]
        fields = {}
        for item in m.group(3).split():
            k, v = item.split("=")
            fields[k] = Buffer[v] if k == "buf" else isa.VecMode[v] if k == "mode" else int(v)
        dep = {f: 0 for f in ("pop_prev", "pop_next", "push_prev", "push_next")}
        for f in filter(None, m.group(4).split(",")):
            dep[f] = 1
        assert isa.encode(op, dep=dep, **fields) == next(words), line
    assert next(words, None) is None


def test_check_dram_boundary_and_message():
    """Program.check_dram: the segments of layout() must fit dram_bytes; exactly the needed
    size fits, one bus word less is a CompileError listing the bytes (issue 14)."""
    rng = np.random.default_rng(12)
    model = make_model(rng, [40, 30, 10])
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2)
    lay1, lay3 = program.layout(1), program.layout(3)
    # per run 2 samples x 40 in (80 B) and 2 x 10 out (20 B -> 24, bus-word strides); each
    # region 64-byte aligned: 3 runs 240 -> 256 and 72 -> 128, 1 run 80 -> 128 and 24 -> 64
    assert lay3["end"] - lay1["end"] == (256 - 128) + (128 - 64)
    need = lay1["end"]
    assert need == sum(-(-n // 64) * 64 for n in (len(program.image()), len(program.static),
                                                   program.scratch_bytes, 80, 20))
    fits = dataclasses.replace(program, config=dataclasses.replace(program.config, dram_bytes=need))
    assert fits.check_dram() == lay1
    small = dataclasses.replace(program, config=dataclasses.replace(program.config, dram_bytes=need - 8))
    with pytest.raises(CompileError, match=rf"need {need} bytes .*dram_bytes={need - 8}; increase it, "
                                           rf"e\.g\. --set dram_bytes={1 << (need - 1).bit_length()}"):
        small.check_dram()
    with pytest.raises(CompileError, match="or run fewer samples at once"):
        fits.check_dram(runs=3)
