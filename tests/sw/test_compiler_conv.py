"""Convolution lowering: compiled programs on the instruction-level simulator vs the golden model.

Covers kernels 1x1..11x11, strides 1/2/4, padding (inserted by the LOAD), grouped
and depthwise convolution, channel counts that are not multiples of the array,
dilation, feature maps larger than the buffers (several output-row blocks,
ifmap streamed per GEMM) and conv -> fc chains.
"""


import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Opcode, decode
from celosia.sim.isa_sim import IsaSim
from celosia.sim.golden import quantize_multiplier
from celosia.sim.isa_sim import run_program
from celosia.sw.analysis import program_traffic
from celosia.sw.compiler import compile_model
from celosia.sw.compiler.emit import AHEAD_PIECE_BYTES
from celosia.sw.compiler.lower_gemm import conv_plan, conv_traffic, psum_block_tiles
from celosia.sw.compiler.tiling import dep_flags, window_load
from celosia.sw.driver import golden_forward
from celosia.sw.quant.model import QLayer, QModel
from layer_cases import CONV_CASES as CASES, conv_layer, hw_macs


def check(model, config, batch=1, seeds=(None, 0, 1), resident_weights=True):
    rng = np.random.default_rng(99)
    program = compile_model(model, config, batch=batch, resident_weights=resident_weights)
    x = rng.integers(-128, 128, size=(batch, model.in_features)).astype(np.int8)
    want = golden_forward(model, x)
    assert len(np.unique(want)) > 3, "degenerate test: output nearly constant"
    for seed in seeds:
        got, tokens = run_program(program, x, seed)
        np.testing.assert_array_equal(got, want)
        assert all(v == 0 for v in tokens.values())
    return program


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[2]}k-s{c[3]}-g{c[5]}" for c in CASES])
@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5), (8, 8)])
def test_conv_matches_golden(case, rows, cols, dataflow):
    """(ws, os and feie share one lowering, windowed GEMMs of one kernel tap over raw input
    rows, feie with the zero point in the GEMM; rs has its own, lower_rs.py.)"""
    in_shape, cout, k, stride, pad, groups = case
    rng = np.random.default_rng(hash((in_shape, cout, rows, cols)) % 2**32)
    layer = conv_layer(rng, "conv", in_shape, cout, k, stride, pad, groups,
                       in_zp=int(rng.integers(-100, 100)))
    model = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=in_shape)
    check(model, AccelConfig(rows=rows, cols=cols, dataflow=dataflow))


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
def test_dilation_and_batch(dataflow):
    rng = np.random.default_rng(3)
    layer = conv_layer(rng, "c", (9, 9, 4), 6, 3, 1, 2, dilation=2, in_zp=-20)
    check(QModel("d", [layer], 0.05, -20, input_shape=(9, 9, 4)),
          AccelConfig(rows=4, cols=4, dataflow=dataflow), batch=2)


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
def test_feature_map_larger_than_buffers_streams(dataflow):
    """Several output-row blocks, and the ifmap tile loaded per GEMM (not resident)."""
    rng = np.random.default_rng(4)
    layer = conv_layer(rng, "big", (16, 12, 6), 7, 3, 1, 1, in_zp=5)
    config = AccelConfig(rows=4, cols=4, ifmap_rows=32, psum_rows=48, weight_rows=8, param_rows=4,
                         dataflow=dataflow)
    program = check(QModel("big", [layer], 0.05, 5, input_shape=(16, 12, 6)), config)
    assert not program.nodes[0].tiles["ifmap_resident"]
    assert program.nodes[0].tiles["out_tiles"] > 2


# Hand-worked DRAM reads of the plain arrays' conv lowering (3x3, stride 1, pad 1, input 6x5,
# rows = cols = 4, an ifmap half of 35 rows = 5 input rows of 5 + 2 padded columns).
# (cin, cout, psum_rows, resident, ifmap bytes, weight bytes):
# * cin 4, cout 4 (one chunk, one output tile): blocks of 3 output rows (5 input rows fill the
#   half), resident. Block 0 reads input rows 0..3 (row -1 is padding), block 1 rows 2..5
#   (row 6 is padding): 8 rows x 5 pixels x 4 channels = 160; the weights (3*3*4*4 = 144)
#   once per block: 288. (im2col: each pixel up to 9 times.)
# * cin 8, cout 8 (two chunks, two output tiles): two chunks of 35 rows do not fit a half, so
#   each chunk's rows are loaded once per psum block of output tiles (shared by the 9 taps of
#   each tile). A 256-row psum half holds both 15-row tiles (one psum block): the same
#   blocks, 8 rows x 5 pixels x 8 channels = 320; weights 2 x 3*3*8*8 = 1152.
# * the same with psum_rows = 30: a 15-row half holds one tile, so each chunk is loaded once
#   per output tile: 2 x 320 = 640.
TRAFFIC_CASES = [(4, 4, 512, True, 160, 288), (8, 8, 512, False, 320, 1152),
                 (8, 8, 30, False, 640, 1152)]


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("cin, cout, psum_rows, resident, ifmap_bytes, weight_bytes", TRAFFIC_CASES)
def test_conv_loads_each_input_pixel_once_per_psum_block(dataflow, cin, cout, psum_rows, resident,
                                                         ifmap_bytes, weight_bytes):
    """ws / os / feie form the windows on chip: the LOADs of the instruction stream read each
    input pixel once per output block (resident) or per psum block of output tiles, not once
    per kernel tap; bit-exact on the ISA simulator. (Weights streamed: with resident weights
    the execution graph reads none.)"""
    rng = np.random.default_rng(cin)
    layer = conv_layer(rng, "c", (6, 5, cin), cout, 3, 1, 1, in_zp=9)
    model = QModel("t", [layer], 0.05, 9, input_shape=(6, 5, cin))
    config = AccelConfig(rows=4, cols=4, ifmap_rows=70, psum_rows=psum_rows, dataflow=dataflow)
    program = check(model, config, resident_weights=False)
    assert program.nodes[0].tiles["ifmap_resident"] == resident
    t = program_traffic(program, model).layers[0]
    assert (t.ifmap_read, t.weight_read) == (ifmap_bytes, weight_bytes)
    assert t.reread_ifmap == ifmap_bytes / (6 * 5 * cin)


@pytest.mark.parametrize("y0, ny, x0, nx", [(-1, 7, -1, 8), (2, 5, 0, 6), (-3, 5, 1, 7), (4, 5, -2, 5)])
def test_load_split_writes_what_the_whole_load_writes(y0, ny, x0, nx):
    """``Load.split``: the pieces of a window LOAD (padding above, below, left and right;
    a piece may lie wholly in the padding), executed one after another on the ISA
    simulator, leave the buffer exactly as the whole LOAD does, for every piece count."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=128)
    shape = (6, 6, 8)
    dram = bytearray(np.random.default_rng(ny * nx).integers(0, 256, 6 * 6 * 8, dtype=np.uint8))
    whole = window_load((BaseReg.STATIC, 0), shape, 0, 2, 4, y0, x0, ny, nx, buf_row=3,
                        pad_value=0x5A)
    assert whole.pad_en   # the cases cross the map's edge

    def run(loads):
        sim = IsaSim(config, bytearray(dram))
        sim.ifmap[:] = 0xEE
        for ld in loads:
            sim.execute(decode(ld.encode(Buffer.IFMAP, 0, dep_flags())))
        return sim.ifmap.copy()

    want = run([whole])
    for pieces in range(1, ny + 2):
        parts = whole.split(pieces)
        assert len(parts) == min(pieces, ny) and sum(p.n2 for p in parts) == ny
        np.testing.assert_array_equal(run(parts), want)


@pytest.mark.parametrize("resident_weights, pieces", [(False, [18, 9, 9]), (True, [18, 18])])
def test_ifmap_tile_loaded_ahead_in_pieces(resident_weights, pieces):
    """A per-chunk conv: one block of all 16 output rows (256 psum rows; two resident
    blocks would re-read halo rows and the weights), each chunk's raw rows (18 x 18 pixels
    x 4 lanes = 1296 bytes, two ``AHEAD_PIECE_BYTES``) loaded while the previous chunk's 9
    taps compute. Streamed weights: weight groups of 1, 2, 4, 8 tiles start at GEMMs 0, 1,
    3, 7, 15; three are due between chunk 1's release (GEMM 1) and its first GEMM (9), so
    its tile goes in min(3 + 1, 2) = 2 pieces between them. Resident weights: no weight
    LOAD to let by, one LOAD. Bit-exact under random schedules."""
    rng = np.random.default_rng(7)
    layer = conv_layer(rng, "c", (16, 16, 8), 4, 3, 1, 1, in_zp=3)
    model = QModel("t", [layer], 0.05, 3, input_shape=(16, 16, 8))
    config = AccelConfig(rows=4, cols=4, dataflow="ws")
    program = check(model, config, resident_weights=resident_weights)
    assert not program.nodes[0].tiles["ifmap_resident"]
    assert bool(program.resident) == resident_weights
    ifmap_loads = [d for d in map(decode, program.nodes[0].insns)
                   if d["op"] == Opcode.LOAD and d["buf"] == Buffer.IFMAP]
    assert 1296 // AHEAD_PIECE_BYTES == 2
    # 2 chunks x 1 block x 1 output tile: the first chunk is loaded before any GEMM
    # (whole), the second ahead
    assert [d["n2"] for d in ifmap_loads] == pieces


def load_groups(insns):
    """The LOAD groups of an instruction stream: the LOADs before each compute instruction
    (GEMM / VEC / NOP), as decoded dicts, one list per compute instruction."""
    groups, current = [], []
    for d in map(decode, insns):
        if d["op"] == Opcode.LOAD:
            current.append(d)
        elif d["op"] != Opcode.STORE:
            groups.append(current)
            current = []
    return groups


@pytest.mark.parametrize("queue_depth", [2, 4])
def test_load_groups_leave_room_in_the_load_queue(queue_depth):
    """With ``queue_depth`` 2 / 4, no LOAD group after the first (which the first GEMM's
    LOADs are all due at) holds more than 1 / 2 LOADs (``queue_depth // 2``), where with a
    deep queue (64) the 4 chunk LOADs of a resident block and the weight groups share their
    release group. Same LOADs, bit-exact under random schedules."""
    rng = np.random.default_rng(5)
    layer = conv_layer(rng, "c", (8, 8, 16), 16, 3, 1, 1, in_zp=-7)
    model = QModel("t", [layer], 0.05, -7, input_shape=(8, 8, 16))

    def groups(depth):
        config = AccelConfig(rows=4, cols=4, queue_depth=depth, dataflow="ws")
        return load_groups(check(model, config, resident_weights=False).nodes[0].insns)

    deep, tight = groups(64), groups(queue_depth)
    assert max(len(g) for g in deep[1:]) > queue_depth // 2
    assert max(len(g) for g in tight[1:]) <= queue_depth // 2

    def transfers(gs):   # the LOADs without their token flags, which follow their groups
        return sorted(str({k: v for k, v in d.items() if k != "dep"}) for g in gs for d in g)

    assert transfers(deep) == transfers(tight)


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
def test_psum_blocks_with_a_shorter_last_block(dataflow):
    """Input 7x5x8, 8 filters 3x3 pad 1 on 4x4, ifmap half 35 rows: per chunk, blocks of
    at most 3 output rows (3, 2 and 2: the rest of 1 row is under half a block, so the
    blocks share the rows, tiling.conv_blocks), both output tiles in one psum block (the
    shorter blocks' tiles at the same psum rows as the full block's). Each chunk's rows are
    read once per block: input rows 0..3, 2..5 and 4..6, 11 x 5 pixels x 8 channels = 440
    bytes."""
    rng = np.random.default_rng(11)
    layer = conv_layer(rng, "c", (7, 5, 8), 8, 3, 1, 1, in_zp=-4)
    model = QModel("t", [layer], 0.05, -4, input_shape=(7, 5, 8))
    config = AccelConfig(rows=4, cols=4, ifmap_rows=70, dataflow=dataflow)
    program = check(model, config, resident_weights=False)
    assert not program.nodes[0].tiles["ifmap_resident"]
    assert program_traffic(program, model).layers[0].ifmap_read == 440


@pytest.mark.parametrize("out_h, hb, want", [
    (28, 3, [3] * 8 + [2] * 2),     # the rest, 1 row, under hb / 2: the rows shared evenly
    (7, 3, [3, 2, 2]),
    (14, 8, [8, 6]),                # a rest of 6 of 8 stays one block
    (14, 6, [5, 5, 4]),             # 2 of 6: shared
    (12, 4, [4, 4, 4]),             # no rest
    (5, 4, [3, 2]),                 # 1 of 4: shared
])
def test_conv_blocks_share_a_short_rest(out_h, hb, want):
    """Row blocks of at most ``hb`` rows covering every output row once, in order; a last
    block shorter than ``hb / 2`` is avoided by sharing the rows evenly (its GEMMs would be
    too short to hide their weight loads)."""
    from celosia.sw.compiler.tiling import conv_blocks
    blocks = list(conv_blocks(2, 1, out_h, 9, hb, 9))
    sizes = [rows for img, _, _, rows, _, _ in blocks if img == 0]
    starts = [ho0 for img, _, ho0, _, _, _ in blocks if img == 0]
    assert sizes == want
    assert starts == [sum(want[:i]) for i in range(len(want))]
    assert len(blocks) == 2 * len(want) and all(c == 9 for *_, c in blocks)


def test_psum_blocks_need_not_divide_a_unit_when_the_layer_fits_one():
    """8 output tiles of 84 psum rows on 16x16 (a 256-row psum half): psum blocks of 3
    tiles (3, 3 and 2) where the layer's 8 parameter rows fit one unit (32), so no unit is
    cut; 2 (a divisor of 32) otherwise. The program's ifmap and weight reads equal
    conv_traffic's, which counts the input once per psum block."""
    cfg = AccelConfig(rows=16, cols=16)
    assert psum_block_tiles(84, cfg) == 2
    assert psum_block_tiles(84, cfg, None, 8) == 3
    assert psum_block_tiles(84, cfg, None, 40) == 2         # 40 rows: units are cut at 32
    layer, model, config, t = _per_chunk_conv(21, 24)
    # 6 tiles in 2 psum blocks of 3 (3 blocks of 2 before): each block of 2 output rows
    # reads its in-image input lines (pad 1), 12 pixels x 8 channels, twice
    assert t.ifmap_read == 2 * sum((min(12, ho0 + 3) - max(0, ho0 - 1)) * 12 * 8 for ho0 in range(0, 12, 2))


def _per_chunk_conv(seed, cout):
    """A 12x12x8 -> ``cout`` 3x3 conv on 4x4 whose 60-row ifmap half holds one chunk's 4 x 14
    window lines of 2 output rows, not 3 (70): per-chunk blocks of 24 psum rows, 3 tiles per
    72-row psum half. Compiled bit-exact; its program's ifmap and weight reads equal
    conv_traffic's. Returns the layer, model, config and the program's traffic."""
    layer = conv_layer(np.random.default_rng(seed), "c", (12, 12, 8), cout, 3, 1, 1, in_zp=0)
    model = QModel("t", [layer], 0.05, 0, input_shape=(12, 12, 8))
    config = AccelConfig(rows=4, cols=4, ifmap_rows=120, psum_rows=144)
    hb, wb, resident = conv_plan(layer, config, 1)
    assert (hb, wb, resident) == (2, 12, False) and psum_block_tiles(24, config, None, cout // 4) == 3
    program = check(model, config, resident_weights=False)
    t = program_traffic(program, model).layers[0]
    assert t.ifmap_read + t.weight_read == conv_traffic(layer, config, 1, hb, wb, resident)
    return layer, model, config, t


def test_psum_blocks_share_the_tiles_evenly():
    """7 output tiles of 24 psum rows in a 72-row psum half (3 per block): where the layer
    is one unit its 3 psum blocks take 3, 2 and 2 tiles (not 3, 3 and 1: the last block's
    few GEMMs would not cover its ifmap and weight LOADs), each block's tiles consecutive
    and at most 3; the input is read once per block as before (conv_traffic), and the
    program is bit-exact."""
    from celosia.sw.compiler import lower_gemm
    from celosia.sw.compiler.alloc import allocate
    layer, model, config, _ = _per_chunk_conv(23, 28)
    _, allocs, _ = allocate(model, config, 1)
    (unit,) = lower_gemm.lower_conv(layer, config, 1, allocs[0])
    blocks = {}
    for tile in unit.tiles:
        blocks.setdefault(tile.block, []).append(tile.psum_block)
    for ids in blocks.values():      # per row block: 7 tiles in psum blocks of 3, 2, 2
        assert ids == sorted(ids) and [ids.count(b) for b in dict.fromkeys(ids)] == [3, 2, 2]


def test_parameters_load_in_pieces_due_for_their_tiles():
    """A conv of 256 output channels on 8x8 (32 output tiles, one unit): its PPU parameters
    (32 rows of 8 channels x 9 bytes) load in pieces of whole rows of at least
    AHEAD_PIECE_BYTES (8 rows, 576 bytes: 4 pieces), which together write every channel's
    record once, in order; each piece comes before the STORE of the first tile that reads
    one of its rows, and none before the first GEMM. Bit-exact."""
    rng = np.random.default_rng(24)
    layer = conv_layer(rng, "c", (4, 4, 8), 256, 3, 1, 1, in_zp=3)
    model = QModel("t", [layer], 0.05, 3, input_shape=(4, 4, 8))
    config = AccelConfig(rows=8, cols=8, ifmap_rows=64)
    program = check(model, config, seeds=(None, 0))
    insns = [decode(w) for w in program.nodes[0].insns]
    params = [(i, d) for i, d in enumerate(insns) if d["op"] == Opcode.LOAD and d["buf"] == Buffer.PARAM]
    rows_per = -(-AHEAD_PIECE_BYTES // (8 * 9))
    assert rows_per == 8 and len(params) == 4
    assert [d["n1"] for _, d in params] == [8 * rows_per] * 4
    assert [d["buf_row"] for _, d in params] == [k * 8 * rows_per for k in range(4)]
    assert [d["dram_offset"] - params[0][1]["dram_offset"] for _, d in params] == [
        k * 8 * rows_per * 9 for k in range(4)]
    gemms = [i for i, d in enumerate(insns) if d["op"] == Opcode.GEMM]
    stores = [(i, d["param_row"]) for i, d in enumerate(insns) if d["op"] == Opcode.STORE]
    assert params[0][0] > gemms[0]
    for k, (at, _) in enumerate(params):
        first = min(i for i, row in stores if row // (8 * rows_per) == k)
        assert at < first


def test_grouped_conv_psum_blocks_stay_in_one_unit():
    """A grouped conv (2 groups of 128 -> 192 channels, 3x3 on 4x4, 8x8 array): 24 output
    tiles per group and 32 parameter rows per unit, so units are cut at parameter rows
    32, 64 (tile 8 and 16 of group 1): psum blocks of 8 tiles (a divisor of both 24 and 32,
    not the 16 that the psum half would allow) never straddle a cut, each input chunk is
    read once per psum block, and the DRAM traffic of the program's LOADs is exactly
    :func:`conv_traffic`'s."""
    rng = np.random.default_rng(12)
    layer = conv_layer(rng, "g", (4, 4, 256), 384, 3, 1, 1, groups=2, in_zp=1)
    model = QModel("t", [layer], 0.05, 1, input_shape=(4, 4, 256))
    config = AccelConfig(rows=8, cols=8, ifmap_rows=64)
    hb, wb, resident = conv_plan(layer, config, 1)
    assert not resident and psum_block_tiles(hb * wb, config, 24) == 8
    program = compile_model(model, config, resident_weights=False)
    t = program_traffic(program, model).layers[0]
    assert t.ifmap_read + t.weight_read == conv_traffic(layer, config, 1, hb, wb, resident)


def test_conv_plan_prefers_least_traffic():
    """One block holding the whole layer when it fits (every byte read once)."""
    rng = np.random.default_rng(1)
    layer = conv_layer(rng, "c", (8, 8, 4), 6, 3, 1, 1)
    assert conv_plan(layer, AccelConfig(rows=4, cols=4), 1) == (8, 8, True)
    # ifmap half of 30 rows: 3 input rows of 10 at most, one output row per block; a
    # 20-row psum half caps a block at 2 output rows anyway
    assert conv_plan(layer, AccelConfig(rows=4, cols=4, ifmap_rows=60, psum_rows=40), 1) == (1, 8, True)
    assert conv_plan(layer, AccelConfig(rows=4, cols=4, ifmap_rows=80, psum_rows=40), 1) == (2, 8, True)
    # not even one 10-pixel padded row of 3 lines (30) fits a 24-row half: column blocks of
    # 6 outputs (3 x 8 = 24 rows)
    assert conv_plan(layer, AccelConfig(rows=4, cols=4, ifmap_rows=48), 1) == (1, 6, True)


def test_rs_folds_filter_rows_and_output_columns():
    """rs: an 11x11 stride-4 filter whose rows do not fit the array or the weight-buffer half
    (several accumulating filter-row / filter-column blocks), and an output row wider than
    the ifmap half (one output row per tile in column blocks)."""
    rng = np.random.default_rng(12)
    layer = conv_layer(rng, "c1", (23, 23, 3), 5, 11, 4, 1, in_zp=-7)
    model = QModel("alex", [layer], 0.05, -7, input_shape=(23, 23, 3))
    config = AccelConfig(rows=4, cols=4, dataflow="rs", weight_rows=24)
    program = check(model, config)
    # weight half 12 rows, 3 channels: 4 filter columns x 1 filter row per GEMM, so each output
    # tile takes 11 filter rows x 3 column blocks (4 + 4 + 3) = 33 accumulating GEMMs.
    tiles = program.nodes[0].tiles
    assert "per GEMM 1x" in tiles["mapping"] and "(4 filter columns)" in tiles["mapping"]
    assert tiles["gemms"] == 33 * tiles["out_tiles"]
    # ifmap half of 20 rows < 3 filter rows x 11 columns: 1 filter row x 11 columns per GEMM
    # (the largest block that fits), one output row per tile, columns in blocks of 2 (11 + 4 = 15).
    narrow = AccelConfig(rows=4, cols=4, dataflow="rs", ifmap_rows=40)
    tiles = check(model, narrow).nodes[0].tiles
    assert not tiles["ifmap_resident"]
    assert "per GEMM 1x1 (11 filter columns)" in tiles["mapping"]
    assert tiles["out_tiles"] == 4 * 2 * 2  # 4x4 output: 4 rows x 2 column blocks x 2 channel tiles


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_conv_chain_into_fc(dataflow):
    rng = np.random.default_rng(5)
    c1 = conv_layer(rng, "c1", (8, 8, 1), 4, 3, 1, 1, in_zp=-128)
    c2 = conv_layer(rng, "c2", c1.out_shape, 6, 3, 2, 1, in_zp=c1.out_zp)
    K = int(np.prod(c2.out_shape))
    w = rng.integers(-127, 128, size=(K, 10)).astype(np.int8)
    m0, shift = zip(*(quantize_multiplier(0.002) for _ in range(10)))
    fc = QLayer("fc", "fc", w, rng.integers(-500, 500, 10).astype(np.int32), np.array(m0, np.int32),
                np.array(shift, np.int32), 0.05, c2.out_zp, 0.05, 3)
    model = QModel("chain", [c1, c2, fc], 0.05, -128, input_shape=(8, 8, 1))
    for rows, cols in [(2, 2), (4, 8), (8, 8)]:
        check(model, AccelConfig(rows=rows, cols=cols, dataflow=dataflow), seeds=(None, 1))


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_param_rows_cycle_through_blocks(dataflow):
    """Output tiles whose parameter rows repeat per output-row block (0, 1, 2, 0, 1, 2, ...)
    with only 2 rows per parameter-buffer half: units are cut where the span would not
    fit (this used to fail with 'not contiguous')."""
    rng = np.random.default_rng(21)
    layer = conv_layer(rng, "c", (15, 12, 4), 9, (2, 4), 3, 0, 1, in_zp=3)
    model = QModel("c", [layer], 0.05, 3, input_shape=(15, 12, 4))
    program = check(model, AccelConfig(rows=3, cols=4, dataflow=dataflow, param_rows=4))
    assert program.nodes[0].tiles["units"] > 1


def test_node_over_65535_instructions_takes_several_descriptors():
    """NodeDescriptor.n_insn is 16 bits: a node with more instructions is split over
    consecutive descriptors, and fetching the table gives every instruction in order."""
    from celosia.rtl import isa
    from celosia.sim.isa_sim import IsaSim
    from celosia.sw.compiler.program import MAX_DESC_INSNS, NodeCode, Program

    nop = [isa.encode(isa.Opcode.NOP, dep={"pop_prev": 0, "pop_next": 0, "push_prev": 0, "push_next": 0})]
    big = [w | (i << 64) for i, w in enumerate(nop * (2 * MAX_DESC_INSNS + 3))]  # distinct words
    small = [w | (7 << 64) for w in nop * 5]
    config = AccelConfig(rows=2, cols=2, dram_bytes=8 << 20)
    program = Program(config=config, batch=1, nodes=[NodeCode("big", "fc", big, 0), NodeCode("s", "fc", small, 0)],
                      static=b"", input_bytes=1, output_bytes=1, scratch_bytes=0, in_features=1,
                      out_features=1)
    table = program.descriptor_table()
    n_insn = dict(isa.NodeDescriptor)["n_insn"]
    counts = [(int.from_bytes(table[i:i + 8], "little") >> n_insn.offset) & MAX_DESC_INSNS
              for i in range(0, 5 * 8, 8)]
    assert counts == [MAX_DESC_INSNS, MAX_DESC_INSNS, 3, 5, 0]
    dram = bytearray(config.dram_bytes)
    image = program.image()
    dram[:len(image)] = image
    assert IsaSim(config, dram).fetch(0) == big + small
    first = program.descriptor_table(upto=1)  # the profiling prefix table: the big node only
    assert [(int.from_bytes(first[i:i + 8], "little") >> n_insn.offset) & MAX_DESC_INSNS
            for i in range(0, 4 * 8, 8)] == [MAX_DESC_INSNS, MAX_DESC_INSNS, 3, 0]


# Hand-worked with row_cost's formula, per GEMM: max(busiest group's pixels * k_len * (1 -
# zeros), all pixels / read ports, outputs) + G + 2 + 8 (the fetch of the GEMM and its weight
# LOAD); 2 read ports (the default) unless said.
@pytest.mark.parametrize("fw, sw, dw, k_len, rows, weight_rows, out_w, want", [
    (3, 1, 1, 4, 4, 1024, 8, [(0, 3, 1)]),             # a 3-wide kernel row: one GEMM of 3 taps
    (5, 1, 1, 4, 4, 1024, 8, [(0, 3, 1), (3, 2, 1)]),  # 5 taps: 3 + 2
    # stride 2, 8 outputs: a run of 3 (P 2, G 2: 9 pixels for the busiest group's 4 outputs,
    # 4*9 + 2 + 2 + 8 = 48 cycles); the phase sets {0, 2} (P 2, G 2: 5 pixels, 4*5 + 12 = 32)
    # and {1} (P 1, G 4: 2 pixels, outputs 8, 4*2 + 14 = 22): 54; runs 2 + 1 (P 1, G 4: 4
    # pixels, 16 + 14 = 30, and 22): 52
    (3, 2, 1, 4, 4, 1024, 8, [(0, 3, 1)]),
    # one output: the run 4*3 + 12 = 24, the sets 4*2 + 12 + 4*1 + 14 = 38
    (3, 2, 1, 4, 4, 1024, 1, [(0, 3, 1)]),
    # 7 taps at stride 2 on 4 rows: runs 3 + 3 + 1: 48 + 48 + 22 = 118; 3 + 2 + 2: 48 + 30 + 30
    # = 108; the sets {0, 2, 4} and {1, 3, 5} (P 3, G 1: 10 pixels, 40 + 11 each) and {6} 22
    (7, 2, 1, 4, 4, 1024, 8, [(0, 3, 1), (3, 2, 1), (5, 2, 1)]),
    # on 6 rows: the sets {0, 2, 4} and {1, 3, 5} (P 3, G 2, Q 4: 6 pixels, 24 + 12) and {6}
    # (P 1, G 6, Q 2: 8 + 16) = 96; the best runs, 3 + 2 + 2 (P 2, G 3, Q 3: 7 pixels, 28 +
    # 13; P 1, G 6, Q 2: 4 pixels, 16 + 16 twice) = 105
    (7, 2, 1, 4, 6, 1024, 8, [(0, 3, 2), (6, 1, 1), (1, 3, 2)]),
    # 2 PE rows: the run of 3 at stride 2 (G 1: 17 pixels, 68 + 11 = 79); the sets 36 + 11 and
    # (G 2: 4 pixels) 16 + 12 = 75; runs 2 + 1 (G 2, Q 4: 8 pixels, 32 + 12) + 28 = 72
    (3, 2, 1, 4, 2, 1024, 8, [(0, 2, 1), (2, 1, 1)]),
    # a weight half of 8 rows: at most 2 taps of 4 channels; runs (0, 2) at stride 2 (P 1,
    # G 4: 4 pixels, 16 + 14) and (2, 1) 22 = 52; the sets 32 + 22 = 54
    (3, 2, 1, 4, 4, 16, 8, [(0, 2, 1), (2, 1, 1)]),
    (3, 3, 1, 4, 4, 1024, 8, [(0, 3, 1)]),             # stride 3 = the taps: one pixel per output
    (2, 3, 1, 4, 4, 1024, 8, [(0, 1, 1), (1, 1, 1)]),  # stride above the taps: tap by tap
    (3, 1, 2, 4, 4, 1024, 8, [(0, 1, 1), (1, 1, 1), (2, 1, 1)]),   # dilated: tap by tap
    (3, 1, 1, 4, 2, 1024, 8, [(0, 2, 1), (2, 1, 1)]),  # 2 PE rows: 3 outputs per pixel do not fit
    (3, 1, 1, 4, 4, 16, 8, [(0, 2, 1), (2, 1, 1)]),    # a weight half of 8 rows: 2 taps of 4
])
def test_feie_row_taps(fw, sw, dw, k_len, rows, weight_rows, out_w, want):
    """feie merges taps of a kernel row into one GEMM where its engine takes them
    (rtl/arrays/feie.py): a cut into runs of consecutive taps, or at stride 2 and more the
    phase sets, whichever the engine's formula gives fewest cycles (hand-worked above, for
    GEMMs of one output row of ``out_w``); the other dataflows one tap per GEMM."""
    from celosia.sw.compiler.lower_gemm import row_taps
    cfg = AccelConfig(rows=rows, cols=4, dataflow="feie", weight_rows=weight_rows)
    assert row_taps(fw, sw, dw, k_len, cfg, 1, out_w) == want
    assert (row_taps(fw, sw, dw, k_len, AccelConfig(rows=rows, cols=4, dataflow="os"), 1, out_w)
            == [(f, 1, 1) for f in range(fw)])


@pytest.mark.parametrize("zeros, ports, wports, want", [
    # 8x8, 3 taps at stride 1 over 2 output rows of 56, 8 channels (ResNet-18 conv2_x's
    # GEMMs). The run of 3: P 3, G 2, Q 56: 58 pixels; the cut 2 + 1: (P 2, G 4, Q 28: 29
    # pixels) and (P 1, G 8, Q 14: 14 pixels); 112 outputs each. With zeros the busiest
    # group's mean non-zero inputs, pixels * 8 * (1 - z), get the slowest group's spread,
    # e(G) * sqrt(pixels * 8 * z * (1 - z)) (e(2) = 0.564, e(4) = 1.029, e(8) = 1.424).
    # dense: 3 = 58*8 + 12 = 476; 2 + 1 = (232 + 14) + (112 + 18) = 376: all 8 rows busy
    (0.0, 2, 1, [(0, 2, 1), (2, 1, 1)]),
    (0.0, 1, 1, [(0, 2, 1), (2, 1, 1)]),       # reads 116 and 112 per GEMM: within the MACs
    # 70% zeros: 3 = 139.2 + 5.6 + 12 = 156.8; 2 + 1 = (112 + 14) + (112 + 18) = 256: the one
    # psum write port writes every output once per GEMM, so fewer GEMMs win
    (0.7, 2, 1, [(0, 3, 1)]),
    # 30% zeros: 3 = 324.8 + 5.6 + 12 = 342.4; 2 + 1 = (162.4 + 7.2 + 14) + (112 + 18) = 313.6
    (0.3, 2, 1, [(0, 2, 1), (2, 1, 1)]),
    # 50%: 3 = 232 + 6.1 + 12 = 250.1; 2 + 1 = (116 + 7.8 + 14) + (112 + 18) = 267.8
    (0.5, 2, 1, [(0, 3, 1)]),
    # two psum write ports: 112 outputs in 56 cycles. 50%: 2 + 1 = (max(123.8, 58, 56) + 14)
    # + (max(56 + 7.5, 56, 56) + 18) = 219.4 < 250.1
    (0.5, 2, 2, [(0, 2, 1), (2, 1, 1)]),
    # 70%: 2 + 1 = (max(69.6 + 7.2, 58, 56) + 14) + (56 + 18) = 164.8 > 156.8: the read ports
    # (112 pixels over 2 of them) bind the one-tap GEMM
    (0.7, 2, 2, [(0, 3, 1)]),
])
def test_feie_row_taps_for_the_zeros(zeros, ports, wports, want):
    """The cut of a kernel row follows the fraction of zero inputs the compiler expects (the
    layer's calibration, ``QLayer.in_zeros``) and the engine's read and write ports."""
    from celosia.sw.compiler.lower_gemm import row_taps
    cfg = AccelConfig(rows=8, cols=8, dataflow="feie", feie_read_ports=ports, feie_write_ports=wports)
    assert row_taps(3, 1, 1, 8, cfg, 2, 56, zeros) == want


def test_feie_row_taps_count_the_slowest_group():
    """9x8, 3 taps at stride 1 over 14 rows of 14 outputs (ResNet-18 conv4_x's whole map),
    9 channels, half the inputs zero, two read and two write ports. The run of 3 (P 3, G 3,
    Q 66: the busiest group 78 pixels, 702 inputs): 351 + e(3) * sqrt(702 / 4) = 351 + 11.2,
    + 3 + 2 + 8 = 375.2 (374.5 with row_geometry's exact pixels); one tap at a time (P 1,
    G 9, Q 22: 198 inputs): 99 + e(9) * sqrt(198 / 4) = 99 + 10.4 (the ports: 98), + 9 + 2 +
    8, three times = 385.3. Without the slowest group's spread the one-tap GEMMs looked
    cheaper (3 * 118 = 354 against 363); measured on the perf back end they were 17% slower
    (docs/dataflows.md, "The slowest group")."""
    from celosia.sw.compiler.lower_gemm import expected_max_normal, row_taps
    # the closed forms for two and three: 1 / sqrt(pi), 3 / (2 sqrt(pi))
    assert expected_max_normal(1) == 0
    assert expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), abs=1e-6)
    assert expected_max_normal(3) == pytest.approx(1.5 / np.sqrt(np.pi), abs=1e-6)
    cfg = AccelConfig(rows=9, cols=8, dataflow="feie")
    assert row_taps(3, 1, 1, 9, cfg, 14, 14, 0.5) == [(0, 3, 1)]
    assert row_taps(3, 1, 1, 9, cfg, 14, 14, 0.0) != [(0, 3, 1)]    # dense: all 9 rows busy


def test_feie_pad_pixels():
    """The padding pixels of a whole output row's task (7 outputs, pad 1 on a 7-wide input),
    counted by hand from the input columns each GEMM's pixels read."""
    from celosia.sw.compiler.lower_gemm import pad_pixels
    assert pad_pixels(0, 3, 1, 1, 7, 1, 7) == (1, 1)       # columns -1 .. 7
    assert pad_pixels(0, 2, 1, 1, 7, 1, 7) == (1, 0)       # -1 .. 6
    assert pad_pixels(2, 1, 1, 1, 7, 1, 7) == (0, 1)       # 1 .. 7
    assert pad_pixels(1, 1, 1, 1, 7, 1, 7) == (0, 0)       # 0 .. 6
    assert pad_pixels(0, 1, 1, 2, 4, 1, 7) == (1, 0)       # stride 2, one tap: -1, 1, 3, 5
    # stride 2, 3 outputs on a 5-wide input: the phase set of taps 1, 3 reads columns 0, 2,
    # 4, 6; that of taps 0, 2 reads -1, 1, 3, 5
    assert pad_pixels(1, 2, 2, 2, 3, 1, 5) == (0, 1)
    assert pad_pixels(0, 2, 2, 2, 3, 1, 5) == (1, 1)


@pytest.mark.parametrize("rows", [6, 8, 9])
@pytest.mark.parametrize("zeros", [0.0, 0.7])
def test_feie_row_taps_price_the_padding(rows, zeros):
    """A 3x3 kernel row over a 7x7 map with padding 1 (ResNet-18 conv5_x's GEMMs): the cut
    row_taps picks for the padding is the fastest on the engine itself (sequence_timing of
    back-to-back GEMMs over random inputs with zero padding columns), within 2%. Dense, the
    padding pixels cost no MAC, which decides between the run of 3 and the cut 2 + 1 on 6
    rows (before the padding was priced the cut 2 + 1 won there, 3% slower)."""
    from celosia.rtl.arrays import feie
    from celosia.sw.compiler.lower_gemm import row_taps
    cfg = AccelConfig(rows=rows, cols=8, dataflow="feie", ifmap_rows=4096)
    rng = np.random.default_rng(rows)
    n = 12
    buf = rng.integers(-127, 128, (n * 81, rows))
    buf[rng.random(buf.shape) < zeros] = -128
    buf.reshape(n, 9, 9, rows)[:, :, [0, 8]] = -128           # 9 rows of 9 pixels each

    def engine(cut):
        insns = [dict(window=1, accumulate=1, ifmap_row=81 * i + fw, weight_row=0, psum_row=0, m_len=49,
                      k_len=rows, n_len=8, win_h=1, win_w=t, stride_h=1, stride_w=1, dil_h=1, dil_w=1,
                      row_pitch=9, out_w=7, out_h=7, in_zp=-128)
                 for i in range(n) for fw, t, _ in cut]
        timing = feie.sequence_timing(insns, cfg, ifmap=buf & 0xFF)
        return timing[-1][1] - timing[len(cut) - 1][1]

    cuts = [[(0, 3, 1)], [(0, 2, 1), (2, 1, 1)], [(0, 1, 1), (1, 1, 1), (2, 1, 1)]]
    cycles = {str(c): engine(c) for c in cuts}
    pick = row_taps(3, 1, 1, rows, cfg, 7, 7, zeros, 1, 7)
    assert cycles[str(pick)] <= 1.02 * min(cycles.values()), (pick, cycles)
    if rows == 6 and zeros == 0.0:
        assert pick == [(0, 3, 1)] and row_taps(3, 1, 1, 6, cfg, 7, 7, 0.0) == [(0, 2, 1), (2, 1, 1)]


def test_feie_conv_maps_for_calibrated_zeros():
    """A conv layer's ``in_zeros`` picks its GEMMs on feie (dense: a cut into shorter runs
    that keeps all 8 rows busy; 80% zeros: one GEMM of 3 taps per kernel row, as
    test_feie_row_taps_for_the_zeros works out), both bit-exact on the instruction-level
    simulator."""
    rng = np.random.default_rng(8)
    kinds = {}
    for zeros in (0.0, 0.8):
        layer = conv_layer(rng, "c", (6, 9, 8), 8, 3, 1, 1, in_zp=-128)
        layer.in_zeros = zeros
        program = check(QModel("c", [layer], 0.05, -128, input_shape=(6, 9, 8)),
                        AccelConfig(rows=8, cols=8, dataflow="feie"))
        kinds[zeros] = sorted({decode(i)["win_w"] for node in program.nodes for i in node.insns
                               if decode(i)["op"] == Opcode.GEMM})
    assert kinds[0.8] == [3] and 3 not in kinds[0.0]


@pytest.mark.parametrize("zeros", [None, 0.9])
def test_feie_conv_gemms_take_kernel_rows(zeros):
    """A 3x3 conv on feie: its GEMMs cut each (chunk, kernel row) into runs that cover its
    3 taps once (dense: whichever cut row_taps finds fastest); at 90% zeros one GEMM of 3
    taps each; bit-exact on the instruction-level simulator."""
    rng = np.random.default_rng(5)
    layer = conv_layer(rng, "c", (6, 7, 5), 6, 3, 1, 1, in_zp=-3)
    layer.in_zeros = zeros
    program = check(QModel("c", [layer], 0.05, 5, input_shape=(6, 7, 5)),
                    AccelConfig(rows=4, cols=4, dataflow="feie"), resident_weights=False)
    gemms = [d for node in program.nodes for d in map(decode, node.insns) if d["op"] == Opcode.GEMM]
    assert gemms and all(d["win_h"] == 1 and 1 <= d["win_w"] <= 3 for d in gemms)
    assert sum(d["win_w"] for d in gemms) == 2 * 3 * 2 * 3   # 2 chunks x 3 rows x 2 tiles x 3 taps
    if zeros:
        assert len(gemms) == 2 * 3 * 2 and all(d["win_w"] == 3 for d in gemms)
    else:
        # cut into GEMMs of 2 and 1 taps (all 4 PE rows busy), the one-tap GEMMs set by set:
        # their weight LOADs, a kernel row (3 * 5 * 6 bytes) apart in DRAM, merge into one
        assert {d["win_w"] for d in gemms} == {2, 1}
        insns = [decode(i) for node in program.nodes for i in node.insns]
        assert any(d["op"] == Opcode.LOAD and d["buf"] == Buffer.WEIGHT and d["n2"] == 3
                   and d["dram_stride2"] == 3 * 5 * 6 for d in insns)


@pytest.mark.parametrize("in_shape, cout, k, stride, pad, rows, zeros, want", [
    # 5x5 s2 on 6 rows, half the inputs zero: {0, 2, 4} (P 3, G 2) and {1, 3} (P 2, G 3)
    # (dense, the runs 2 + 2 + 1 keep more rows busy: test_feie_row_taps works both out)
    ((13, 14, 5), 6, 5, 2, 2, 6, 0.5, [(3, 2), (2, 2)]),
    # 7x7 s2 on 6 rows, half zero: {0, 2, 4}, {1, 3, 5} and {6} alone
    ((15, 16, 4), 6, 7, 2, 3, 6, 0.5, [(3, 2), (3, 2), (1, 1)]),
    # 3x3 s3 (stride = taps): one pixel per output already, the run of 3 stays
    ((12, 12, 4), 4, 3, 3, 0, 4, None, [(3, 1)]),
])
def test_feie_conv_phase_sets(in_shape, cout, k, stride, pad, rows, zeros, want):
    """Strided convs on feie: each kernel row's taps as the phase sets row_taps picks (its
    hand-worked cases: ``want``, the sets' ``(win_w, dil_w)`` per kernel row), so as many GEMMs of each set
    (the padding rows a block leaves out are whole kernel rows); a tile's GEMMs set by set
    (every kernel row's first set, then the second: the one-tap sets' weight LOADs, a kernel
    row apart in DRAM, merge); bit-exact on the instruction-level simulator under random
    schedules."""
    rng = np.random.default_rng(17)
    layer = conv_layer(rng, "c", in_shape, cout, k, stride, pad, in_zp=-7)
    layer.in_zeros = zeros
    config = AccelConfig(rows=rows, cols=4, dataflow="feie")
    program = check(QModel("c", [layer], 0.05, -7, input_shape=in_shape), config, resident_weights=False)
    insns = [d for node in program.nodes for d in map(decode, node.insns)]
    gemms = [d for d in insns if d["op"] == Opcode.GEMM]
    assert all(d["win_h"] == 1 and d["stride_w"] == stride for d in gemms)
    kinds = [(d["win_w"], d["dil_w"]) for d in gemms]
    assert set(kinds) == set(want)
    assert len({kinds.count(kind) / want.count(kind) for kind in want}) == 1
    if (1, 1) in want:
        # a one-tap set's weights: one LOAD for several kernel rows (n2 > 1, a kernel row apart)
        one_tap = [d for d in insns if d["op"] == Opcode.LOAD and d["buf"] == Buffer.WEIGHT and d["n2"] > 1
                   and d["dram_stride2"] == k * in_shape[2] * cout]
        assert one_tap


def test_unit_tail_is_one_store_and_head_has_no_parameters():
    """The ends of a unit (docs/compiler.md, "The ends of a unit"), on a per-chunk conv on
    16x16 os: 7x7x64 -> 7x7x32, 3x3 pad 1, 4 input-channel chunks of 9 x 9 raw rows (81
    ifmap rows each; a 200-row half holds q = 2 of them, not all 4: not resident), one
    block of 49 output rows, both output tiles in one psum block.

    * Tail: the last q = 2 chunks are one ifmap group, so tile 0's last GEMM comes
      q * 9 = 18 GEMMs before tile 1's (9 with one chunk per group). Tile 0's STORE (49 rows
      x 16 channels through one PPU lane: ``rtl.dma.store_cycles``, 784 + 8) is longer
      than 9 GEMMs (each 4 row blocks of 16 rows x 16 k), shorter than 18: on the perf
      model it is done before the last GEMM is, and the last STORE starts as soon as the
      last GEMM is done, so the unit ends with that one STORE.
    * Head: the PPU parameters (32 channels) are due for tile 0's last GEMM (only STOREs
      read them), so no parameter LOAD comes before the first GEMM.

    Bit-exact on the ISA simulator under random schedules, and on the perf model."""
    from celosia.sw.driver import run_quantized
    rng = np.random.default_rng(21)
    layer = conv_layer(rng, "c", (7, 7, 64), 32, 3, 1, 1, in_zp=2)
    model = QModel("t", [layer], 0.05, 2, input_shape=(7, 7, 64))
    config = AccelConfig(rows=16, cols=16, ifmap_rows=400, dataflow="os")
    assert conv_plan(layer, config, 1) == (7, 7, False)
    program = check(model, config, seeds=(None, 0))
    insns = [decode(w) for w in program.nodes[0].insns]
    kinds = [(d["op"], d.get("buf")) for d in insns]
    gemms = [i for i, (op, _) in enumerate(kinds) if op == Opcode.GEMM]
    stores = [i for i, (op, _) in enumerate(kinds) if op == Opcode.STORE]
    assert len(gemms) == 4 * 9 * 2 and len(stores) == 2
    assert sum(gemms[-1] > i > stores[0] for i in gemms) + 1 == 2 * 9   # q * 9 GEMMs after tile 0's
    assert (Opcode.LOAD, Buffer.PARAM) not in kinds[:gemms[0]]
    assert (Opcode.LOAD, Buffer.PARAM) in kinds[:stores[0]]

    x = np.random.default_rng(1).integers(-128, 128, size=(1, model.in_features)).astype(np.int8)
    result = run_quantized(model, x, config, backend="perf", trace=True)
    events = [e for e in result.trace["traceEvents"] if e.get("ph") == "X"]
    ends = {tid: [e["ts"] + e["dur"] for e in events if e["tid"] == tid] for tid in (2, 4)}
    starts = [e["ts"] for e in events if e["tid"] == 4]
    last_gemm = max(ends[2])
    assert max(ends[4][:-1]) <= last_gemm           # every STORE but the last is done before
    assert starts[-1] == last_gemm                   # the last STORE waits for nothing else


def _gemm_macs_and_first_gemms_whole(program):
    """The MACs of a program's GEMMs (``m_len * k_len * n_len`` times the window's taps),
    after checking that every GEMM that accumulates (and every STORE) stays inside the psum
    rows the latest non-accumulating GEMM there initialized: a tile's first GEMM covers it."""
    inits, macs = [], 0     # (first, end) of the psum rows each non-accumulating GEMM initialized
    for d in (d for node in program.nodes for d in map(decode, node.insns)):
        if d["op"] == Opcode.GEMM:
            lo, hi = d["psum_row"], d["psum_row"] + d["m_len"]
            macs += d["m_len"] * d["k_len"] * d["n_len"] * (d["win_h"] * d["win_w"] if d["window"] else 1)
        elif d["op"] == Opcode.STORE:
            lo, hi = d["psum_row"], d["psum_row"] + d["m_len"]
        else:
            continue
        if d["op"] == Opcode.GEMM and not d["accumulate"]:
            inits = [r for r in inits if r[1] <= lo or hi <= r[0]] + [(lo, hi)]
        else:
            assert any(a <= lo and hi <= b for a, b in inits), (d, inits)
    return macs


#: (in_shape, cout, k, stride, pad, groups, dilation, config fields): padded convs whose
#: tap GEMMs leave out padding rows: one block, several blocks streamed per chunk (so blocks
#: that are only border rows), stride 2, dilation, merged depthwise groups, output rows
#: split in column blocks (a one-row block at the border drops a kernel row's GEMMs).
SKIP_CASES = [
    ((8, 7, 6), 5, 3, 1, 1, 1, 1, {}),
    ((16, 12, 6), 7, 3, 1, 1, 1, 1, dict(ifmap_rows=32, psum_rows=48, weight_rows=8, param_rows=4)),
    ((9, 9, 5), 6, 3, 2, 1, 1, 1, {}),
    ((9, 10, 4), 6, 5, 2, 2, 1, 1, dict(psum_rows=16)),
    ((9, 9, 4), 6, 3, 1, 2, 1, 2, {}),
    ((7, 7, 5), 5, 3, 2, 1, 5, 1, {}),
    ((3, 40, 3), 4, 3, 1, 1, 1, 1, dict(ifmap_rows=64, psum_rows=32)),
]


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("in_zp", [0, -9])
@pytest.mark.parametrize("case", SKIP_CASES, ids=["one-block", "streamed", "stride2", "5x5-s2", "dilated",
                                                  "depthwise", "column-blocks"])
def test_tap_gemms_skip_padding_rows(case, in_zp, dataflow):
    """A kernel row's GEMMs cover only the output rows whose input row is inside the image
    (on ws / os only with an input zero point of 0: otherwise the folded bias needs the
    padding's products), each tile's first GEMM the whole tile: the GEMMs' MACs equal
    ``hw_macs``'s count of (output row, kernel row) pairs inside the image, and the
    program (batch 2) equals the golden model on the ISA simulator."""
    in_shape, cout, k, stride, pad, groups, dilation, fields = case
    rng = np.random.default_rng(cout * 100 + k * 10 + stride)
    layer = conv_layer(rng, "c", in_shape, cout, k, stride, pad, groups, dilation=dilation, in_zp=in_zp)
    model = QModel("c", [layer], 0.05, in_zp, input_shape=in_shape)
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, **fields)
    program = check(model, config, batch=2, seeds=(0,))   # one random schedule of the queues
    macs = _gemm_macs_and_first_gemms_whole(program)
    assert macs == 2 * hw_macs(layer, 4, 4, dataflow)
    assert (macs < 2 * hw_macs(layer, 4, 4)) == (dataflow == "feie" or in_zp == 0)


@pytest.mark.parametrize("dataflow", ["ws", "feie"])
def test_first_gemm_whole_when_every_kernel_row_reads_padding(dataflow):
    """A 1x1 conv with padding 1 (8x7 outputs of a 6x5x6 input): no kernel row reads the
    image for the border rows, so each tile's first GEMM (channel chunk 0, 4 of the 6
    input channels) covers all 8 output rows, chunk 1 (2 channels) only the 6 inside:
    5 filters x 7 columns x (8*4 + 6*2) MACs."""
    rng = np.random.default_rng(21)
    layer = conv_layer(rng, "c", (6, 5, 6), 5, 1, 1, 1, in_zp=0)
    program = check(QModel("c", [layer], 0.05, 0, input_shape=(6, 5, 6)),
                    AccelConfig(rows=4, cols=4, dataflow=dataflow))
    assert layer.out_shape == (8, 7, 5)
    assert _gemm_macs_and_first_gemms_whole(program) == 5 * 7 * (8 * 4 + 6 * 2)


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
@pytest.mark.parametrize("stride", [1, 2])
def test_padded_conv_bit_exact(dataflow, stride):
    """A padded 3x3 conv (pad 1, input zero point 0 and not) at stride 1 and 2 on every
    dataflow, in blocks of a few output rows, equals the golden model (batch 2)."""
    rng = np.random.default_rng(stride)
    for in_zp in (0, 17):
        layer = conv_layer(rng, "c", (11, 9, 6), 6, 3, stride, 1, in_zp=in_zp)
        check(QModel("c", [layer], 0.05, in_zp, input_shape=(11, 9, 6)),
              AccelConfig(rows=4, cols=4, psum_rows=40, dataflow=dataflow), batch=2, seeds=(None,))
