"""Layer outputs kept on chip: an fc layer's STOREs write the next fc layer's input block
into the ifmap buffer (``to_buf``) and that layer loads no ifmap (issue 10, "What to build"
5). Programs run on :class:`~celosia.sim.isa_sim.IsaSim` (directly, under several
schedules, and through the driver's job) against the golden model; the RTL back end is in
``tests/cocotb/test_kept_outputs_verilator.py``."""

import asyncio
import math

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Buffer, Opcode
from celosia.sim.golden import add_params
from celosia.sim.isa_sim import run_program
from celosia.sim.job import run_job
from celosia.sw.analysis import program_traffic
from celosia.sw.compiler import compile_model
from celosia.sw.driver import build_job, golden_forward, kept_outputs_report, run_quantized
from celosia.sw.quant.model import QModel
from layer_cases import conv_layer
from test_compiler import SEEDS, make_model, random_input
from test_compiler_vec import vec_layer
from test_resident_weights import IsaTransport, decoded, digits_models  # noqa: F401 (fixture)

DATAFLOWS = ("ws", "os", "feie", "rs")


def ifmap_loads(node):
    return [d for d in decoded(node.insns) if d["op"] == Opcode.LOAD and d["buf"] == Buffer.IFMAP]


def stores(node):
    return [d for d in decoded(node.insns) if d["op"] == Opcode.STORE]


def assert_bit_exact(program, model, x_q, seeds=SEEDS[:3]):
    want = golden_forward(model, x_q)
    for seed in seeds:
        got, tokens = run_program(program, x_q, seed)
        np.testing.assert_array_equal(got, want)
        assert all(v == 0 for v in tokens.values())


@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8), (8, 4)])
@pytest.mark.parametrize("batch", [1, 3])
def test_digits_mlp_keeps_hidden_layers(digits_models, dataflow, rows, cols, batch):
    """digits MLP (64 -> 64 -> 32 -> 10): fc0 and fc1 keep their outputs, fc1 and fc2 load no
    ifmap, the last layer stores to DRAM; bit-exact; DRAM bytes per run drop by exactly the
    stores and loads of the two hidden activations (and the LOADs' fetch)."""
    qmodel, x_q = digits_models["digits_mlp"]
    x_q = x_q[:batch]
    config = AccelConfig(rows=rows, cols=cols, dataflow=dataflow)
    on = compile_model(qmodel, config, batch=batch)
    off = compile_model(qmodel, config, batch=batch, keep_outputs=False)
    assert on.kept["layers"] == ["fc0", "fc1"] and not off.kept
    fc0, fc1, fc2 = on.nodes
    assert ifmap_loads(fc0) and not ifmap_loads(fc1) and not ifmap_loads(fc2)
    assert all(d["to_buf"] for d in stores(fc0) + stores(fc1))
    assert not any(d["to_buf"] for d in stores(fc2))
    # Every kept byte lands once: (batch x channels) buffer bytes per layer.
    for node, n in ((fc0, 64), (fc1, 32)):
        assert sum(d["m_len"] * d["n_len"] for d in stores(node)) == batch * n
    assert [nd.tiles["output_kept"] for nd in on.nodes] == [True, True, False]
    assert_bit_exact(on, qmodel, x_q)
    t_on, t_off = program_traffic(on), program_traffic(off)
    removed = sum(len(ifmap_loads(a)) - len(ifmap_loads(b)) for a, b in zip(off.nodes, on.nodes))
    assert removed == sum(on.kept["saved_insns"].values()) > 0
    # fc0 / fc1 write batch*64 / batch*32 bytes less; each unit of fc1 / fc2 read them once.
    units = {nd.name: nd.tiles["units"] for nd in on.nodes}
    data = batch * (64 + 32) + batch * (64 * units["fc1"] + 32 * units["fc2"])
    assert (t_off.read + t_off.written) - (t_on.read + t_on.written) == data + isa.INSN_BYTES * removed
    assert on.kept["saved_bytes"] == data + isa.INSN_BYTES * removed
    rep = kept_outputs_report(on)
    assert rep["dram_bytes_per_inference"] == round((t_on.read + t_on.written) / batch, 4)
    assert rep["dram_bytes_per_inference_through_dram"] == round((t_off.read + t_off.written) / batch, 4)


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_chain_alternates_halves_and_units_split(dataflow):
    """A five-layer chain with several parameter units per layer (a small parameter buffer):
    every hidden output is kept, the halves alternate (a layer writes the half it does not
    read), bit-exact at batch 2."""
    rng = np.random.default_rng(21)
    model = make_model(rng, [20, 24, 9, 30, 16, 7])
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, param_rows=4, ifmap_rows=64)
    program = compile_model(model, config, batch=2)
    assert program.kept["layers"] == ["fc0", "fc1", "fc2", "fc3"]
    assert any(nd.tiles["units"] > 1 for nd in program.nodes)
    half = config.ifmap_rows // 2
    for k, node in enumerate(program.nodes[:-1]):
        rows = {d["buf_row"] // half for d in stores(node)}
        assert rows == {(k + 1) % 2}, (node.name, rows)
    assert_bit_exact(program, model, random_input(rng, model, 2))


@pytest.mark.parametrize("why, config, batch", [
    ("rows % cols != 0", AccelConfig(rows=4, cols=8), 1),
    ("input block does not fit an ifmap half", AccelConfig(rows=4, cols=4, ifmap_rows=8), 1),
    ("switched off", None, 2),
])
def test_not_kept(digits_models, why, config, batch):
    """Where the output cannot stay (or the switch is off) every layer goes through DRAM,
    as before, and stays bit-exact."""
    qmodel, x_q = digits_models["digits_mlp"]
    keep = config is not None
    config = config or AccelConfig(rows=4, cols=4)
    program = compile_model(qmodel, config, batch=batch, keep_outputs=keep)
    assert not program.kept, why
    assert all(ifmap_loads(nd) for nd in program.nodes)
    assert not any(d["to_buf"] for nd in program.nodes for d in stores(nd))
    assert_bit_exact(program, qmodel, x_q[:batch])


def test_output_with_two_readers_or_into_an_add_goes_to_dram():
    """fc0 feeds fc1 and a residual add; fc1 feeds the add (not an fc); the add feeds fc2
    (not produced by an fc): nothing is kept."""
    rng = np.random.default_rng(5)
    base = make_model(rng, [12, 8, 8, 6], activations=["none"] * 3)
    fc0, fc1, fc2 = base.layers
    p = add_params(0.05, 0.05, 0.05)
    add = vec_layer("add", "add", (1, 1, 8), (1, 1, 8), p["out_m0"], p["out_shift"], fc1.out_zp,
                    fc0.out_zp, inputs=["fc1", "fc0"],
                    attrs={"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                           "b_shift": p["b_shift"], "b_zp": fc0.out_zp, "left_shift": p["left_shift"]})
    fc2.inputs = ["add"]
    model = QModel("res_fc", [fc0, fc1, add, fc2], base.input_scale, base.input_zp, input_shape=(12,))
    program = compile_model(model, AccelConfig(rows=4, cols=4), batch=2)
    assert not program.kept
    assert_bit_exact(program, model, random_input(rng, model, 2))


def test_driver_job_and_report(digits_models):
    """Through the driver's job (init graph, three runs of two samples)
    the outputs match the golden model; the golden back end's report carries the figures."""
    qmodel, x_q = digits_models["digits_mlp"]
    config = AccelConfig(rows=4, cols=4, weight_rows=4096)
    program = compile_model(qmodel, config, batch=2)
    job, _, lead = build_job(program, x_q)
    results = asyncio.run(run_job(IsaTransport(config, seed=2), job))
    y_q = np.frombuffer(b"".join(r.data[0] for r in results[len(lead):]), np.int8).reshape(6, -1)
    np.testing.assert_array_equal(y_q, golden_forward(qmodel, x_q))
    rep = run_quantized(qmodel, x_q, config, batch=2).report
    kept, roof = rep["kept_outputs"], rep["roofline"]
    assert kept["enabled"] and kept["layers"] == ["fc0", "fc1"]
    assert roof["dram_bytes_per_inference"] == kept["dram_bytes_per_inference"]
    off = run_quantized(qmodel, x_q, config, batch=2, keep_outputs=False).report
    assert not off["kept_outputs"]["enabled"]
    assert off["roofline"]["dram_bytes_per_inference"] == kept["dram_bytes_per_inference_through_dram"]
    assert math.isclose(kept["dram_bytes_per_inference_through_dram"] - kept["dram_bytes_per_inference"],
                        program.kept["saved_bytes"] / 2)


# --- convolutions -----------------------------------------------------------------------

def conv_chain(rng, in_shape, *layers):
    """A chain of conv layers ``(cout, k, stride, pads)`` from ``in_shape``, each reading the
    previous one's output (its zero point as input zero point; relu but the last)."""
    out, zp = [], int(rng.integers(-60, 60))
    shape = in_shape
    for n, (cout, k, stride, pads) in enumerate(layers):
        out.append(conv_layer(rng, f"c{n}", shape, cout, k, stride, pads, in_zp=zp,
                              activation="relu" if n < len(layers) - 1 else "none"))
        shape, zp = out[-1].out_shape, out[-1].out_zp
    return QModel("convs", out, 0.05, out[0].in_zp, input_shape=in_shape)


# (in_shape, layers, rows, cols, kept, saved): every case hand counted below. Per kept
# conv -> conv: the producer's output no longer written (H*W*C bytes) nor read back (the
# pixels of it the consumer's window covers, times C) by ceil(C / rows) chunk LOADs (32 B of
# fetch each); the producer's STOREs become one per output row read, R of them per output tile
# instead of 1 (32 B each), unless the consumer has no padding column and reads every column
# (the rows lie back to back: one STORE); LOADs of nothing but padding (32 B each, they read
# nothing) write the consumer's padding: one for the rows before the first pixel, one per
# chunk for the gaps between pixel rows (when there are padding columns), one for the rows
# between one chunk's last pixel and the next one's first (when there are several chunks), one
# for the rows after the last pixel (when there are any).
CONV_KEEP_CASES = [
    # pad 1, stride 1: 6x6x4 -> 144 written + 144 read + 32; 1 tile x 5 extra STOREs; 8x8 block:
    # head, gaps, tail: 3 padding LOADs: 320 - 160 - 96 = 64
    ("pad1-s1", (6, 6, 3), [(4, 3, 1, 1), (5, 3, 1, 1)], 4, 4, ["c0"], 64),
    # pad 0, stride 1, 6 channels on 4 rows (chunks 4 + 2): 5x4x6 = 120 written + 120 read
    # + 2 LOADs (64); nx = W = 4: one STORE per tile, no padding: 304
    ("pad0-s1-c6", (7, 6, 2), [(6, 3, 1, 0), (3, 3, 1, 0)], 4, 4, ["c0"], 304),
    # pad 1, stride 2, 8 rows x 4 cols: 8x8x6 = 384 written + 384 read + 32; 2 tiles x 7 extra
    # STOREs (448); 9x9 block (the bottom and right padding not read): head, gaps (the left
    # column): 2 padding LOADs (64): 288
    ("pad1-s2", (8, 8, 1), [(6, 3, 1, 1), (7, 3, 2, 1)], 8, 4, ["c0"], 288),
    # pad 0, stride 2 on 8x8: the consumer reads rows / columns 0..6 only: 256 written, 7x7x4
    # = 196 read + 32; 1 tile x 6 extra STOREs (192), no padding: 292
    ("pad0-s2-unread-edge", (8, 8, 3), [(4, 3, 1, 1), (4, 3, 2, 0)], 4, 4, ["c0"], 292),
    # pads (top 0, left 1, bottom 1, right 0): 5x6x8 = 240 written + 240 read + 32; 2 tiles x 4
    # extra STOREs (256); 6x7 block: head (1 row), gaps, tail: 3 padding LOADs (96): 160
    ("pads-0110", (5, 6, 2), [(8, 3, 1, 1), (4, 3, 1, (0, 1, 1, 0))], 8, 4, ["c0"], 160),
    # three convs, both outputs kept (halves alternate). c0 8x8x4: 256 + 256 + 32 - 7*32 - 3
    # padding LOADs * 32 = 224; c1 8x8x6 (chunks 4 + 2): 384 + 384 + 64 - 2 tiles * 7 * 32,
    # 9x9 blocks: head, 2 x gaps, one between the chunks, none after: - 4*32 = 256: 480
    ("chain3", (8, 8, 2), [(4, 3, 1, 1), (6, 3, 1, 1), (3, 3, 2, 1)], 4, 4, ["c0", "c1"], 480),
]


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("name, in_shape, layers, rows, cols, kept, saved", CONV_KEEP_CASES,
                         ids=[c[0] for c in CONV_KEEP_CASES])
def test_conv_chain_keeps_outputs(dataflow, name, in_shape, layers, rows, cols, kept, saved):
    """conv -> conv with the consumer's whole input one resident block: the producer's STOREs
    write the consumer's raw input rows (padding from one LOAD of nothing but padding), the
    consumer loads no ifmap; bit-exact under several schedules; the DRAM bytes saved equal
    the hand count (CONV_KEEP_CASES) and the traffic of the two programs' instructions."""
    rng = np.random.default_rng(sum(map(ord, name)))
    model = conv_chain(rng, in_shape, *layers)
    config = AccelConfig(rows=rows, cols=cols, dataflow=dataflow)
    on = compile_model(model, config)
    off = compile_model(model, config, keep_outputs=False)
    assert on.kept["layers"] == kept and not off.kept
    assert on.kept["saved_bytes"] == saved
    t_on, t_off = program_traffic(on), program_traffic(off)
    assert (t_off.read + t_off.written) - (t_on.read + t_on.written) == saved
    half = config.ifmap_rows // 2
    for k, node in enumerate(on.nodes):
        keeps = node.name in kept
        assert [bool(d["to_buf"]) for d in stores(node)] == [keeps] * len(stores(node))
        if keeps:   # into the half it does not read (c0 reads half 0)
            assert {d["buf_row"] // half for d in stores(node)} == {(k + 1) % 2}
        if k and model.layers[k - 1].name in kept:
            # only the padding LOAD (reads nothing) is left, when it pads in turn
            assert all(d["pad_en"] and d["pad_hi1"] == 0 for d in ifmap_loads(node))
    x = random_input(rng, model, 1)
    want = golden_forward(model, x)
    assert len(np.unique(want)) > 3
    assert_bit_exact(on, model, x, seeds=SEEDS)


def _small_chain(rng):
    return conv_chain(rng, (6, 5, 2), (3, 3, 1, 1), (5, 3, 1, 1), (2, 3, 2, 1))


def _depthwise(rng, channels=8):
    """A depthwise consumer of ``channels`` channels: on 4x4 its groups merge 4 at a time
    (sw/compiler/groups.py), into 2 groups for 8 channels (still grouped: not kept) or
    one dense, block-diagonal group for 4 (kept like any conv)."""
    c0 = conv_layer(rng, "c0", (6, 6, 2), channels, 3, 1, 1, in_zp=7)
    c1 = conv_layer(rng, "c1", c0.out_shape, channels, 3, 1, 1, groups=channels, in_zp=c0.out_zp,
                    activation="none")
    return QModel("dw", [c0, c1], 0.05, 7, input_shape=(6, 6, 2))


def _residual(rng):
    """c0 feeds c1 and the add; c1 feeds c2 (kept), c2 feeds the add (not a conv)."""
    model = conv_chain(rng, (6, 6, 4), (4, 3, 1, 1), (4, 3, 1, 1), (4, 3, 1, 1))
    c0, c1, c2 = model.layers
    p = add_params(0.05, 0.05, 0.05)
    add = vec_layer("add", "add", c2.out_shape, c2.out_shape, p["out_m0"], p["out_shift"], c2.out_zp,
                    c0.out_zp, inputs=["c2", "c0"],
                    attrs={"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                           "b_shift": p["b_shift"], "b_zp": c0.out_zp, "left_shift": p["left_shift"]})
    return QModel("res", [c0, c1, c2, add], 0.05, c0.in_zp, input_shape=(6, 6, 4))


@pytest.mark.parametrize("why, make, config, batch, kept", [
    ("rs has its own lowering", _small_chain, AccelConfig(rows=8, cols=8, dataflow="rs"), 1, []),
    ("batch 2: the consumer's input is two blocks (one per image)", _small_chain,
     AccelConfig(rows=8, cols=8), 2, []),
    ("the consumer's raw rows do not fit an ifmap half (not resident)", _small_chain,
     AccelConfig(rows=8, cols=8, ifmap_rows=64), 1, []),
    # c0 6x5x3: 90 + 90 + 32 - 5 STOREs * 32 - 3 padding LOADs * 32 = -44; c1 6x5x5 (chunks
    # 4 + 1): 150 + 150 + 64 - 2 tiles * 5 * 32 - 5 padding LOADs * 32 = -116
    ("the extra STOREs would cost more than the round trip", _small_chain, AccelConfig(rows=4, cols=4), 1, []),
    ("a depthwise consumer", _depthwise, AccelConfig(rows=4, cols=4), 1, []),
    ("a depthwise consumer merged into one group", lambda rng: _depthwise(rng, 4), AccelConfig(rows=4, cols=4),
     1, ["c0"]),
    ("two readers (a residual add)", _residual, AccelConfig(rows=4, cols=4), 1, ["c1"]),
])
def test_conv_output_not_kept(why, make, config, batch, kept):
    """Where a conv's output cannot (or should not) stay, it goes through DRAM as before,
    bit-exact; only the one plain conv -> conv link of the residual block is kept, and a
    depthwise consumer whose groups merge into one."""
    rng = np.random.default_rng(17)
    model = make(rng)
    program = compile_model(model, config, batch=batch)
    assert program.kept.get("layers", []) == kept, why
    names = [node.name for node in program.nodes]
    consumers = {names[names.index(k) + 1] for k in kept}
    for node in program.nodes:
        assert bool(ifmap_loads(node)) == (node.name not in consumers)
        assert not any(d["to_buf"] for d in stores(node)) == (node.name not in kept)
    assert_bit_exact(program, model, random_input(rng, model, batch))


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("array, saved", [(4, 480), (8, 736)])
def test_digits_cnn_keeps_conv1(digits_models, dataflow, array, saved):
    """The digits CNN (8x8x1 -> conv 3x3 pad 1, 8 channels -> conv 3x3 pad 1, 16 -> maxpool
    -> fc) keeps conv1's 8x8x8 output as conv2's padded 10x10 input rows: 512 bytes not
    written, 512 not read back (ceil(8 / rows) LOADs of 32 B less), 7 more STOREs per 8x8
    output tile (8 rows, ceil(8 / cols) tiles) and the padding LOADs (head, gaps per chunk,
    one between chunks, tail), 32 B each: 4x4: 512 + 512 + 2*32 - 2*7*32 - 5*32 = 480;
    8x8: 512 + 512 + 32 - 7*32 - 3*32 = 736. conv2 feeds a maxpool (not kept); bit-exact."""
    qmodel, x_q = digits_models["digits_cnn"]
    config = AccelConfig(rows=array, cols=array, dataflow=dataflow)
    on = compile_model(qmodel, config)
    off = compile_model(qmodel, config, keep_outputs=False)
    assert on.kept["layers"] == [qmodel.layers[0].name]
    assert on.kept["saved_bytes"] == saved
    t_on, t_off = program_traffic(on), program_traffic(off)
    assert (t_off.read + t_off.written) - (t_on.read + t_on.written) == saved
    assert not ifmap_loads(on.nodes[1])
    assert len([d for d in ifmap_loads(on.nodes[0]) if d["pad_en"] and d["pad_hi1"] == 0]) == 3 + 2 * (array == 4)
    assert_bit_exact(on, qmodel, x_q[:1])
