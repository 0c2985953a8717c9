"""The compiler's typed intermediate form and its families (sw/compiler/tiling.py, alloc.py,
emit.py): each object encodes its own instruction, a field out of range is an
EncodeError, allocation offsets and the token protocol, the lowering family chosen
from the dataflow registry. Expected values are worked by hand from docs/isa.md and
docs/compiler.md."""

import dataclasses

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import DATAFLOWS, dataflow
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sw.compiler import (SUPPORTED_OPS, CompileError, EncodeError, GemmOp, OutTile, Unit,
                                 allocate, compile_model, emit_unit, lower_gemm, lower_rs, lower_vec)
from celosia.sw.compiler.alloc import WeightPlan, weight_key
from celosia.sw.compiler.tiling import dep_flags, load, merge_loads, store, subtracts_zero_point, window_load
from celosia.sw.quant.model import QModel

from test_compiler import make_layer, make_model

NO_DEP = {"pop_prev": 0, "pop_next": 0, "push_prev": 0, "push_next": 0}


def deps(**set_):
    return {**NO_DEP, **set_}


def test_load_encodes_its_fields():
    ld = load(BaseReg.STATIC, 100, 8, n1=3, s1=16, bs1=1, buf_row=2)
    d = isa.decode(ld.encode(Buffer.WEIGHT, 32, dep_flags(push_next=True)))
    assert d.pop("op") == Opcode.LOAD
    assert d == {"dep": deps(push_next=1), "buf": Buffer.WEIGHT, "base_reg": BaseReg.STATIC, "pad_en": 0,
                 "dram_offset": 100, "n0": 8, "dram_stride0": 1, "lane0": 0, "n1": 3, "dram_stride1": 16,
                 "buf_stride1": 1, "n2": 1, "dram_stride2": 0, "buf_stride2": 0, "buf_row": 34,
                 "pad_lo1": 0, "pad_hi1": 0, "pad_lo2": 0, "pad_hi2": 0, "pad_value": 0}
    assert ld.buf_row == 2   # encoding into a half leaves the load as it was


def test_window_load_pads_outside_the_map():
    # A 4x5x2 map at SCRATCH+1000, image 1, channel 1: a 3x4 grid from (-1, -1), stride 1.
    # First pixel (-1, -1): 1000 + 1*(4*5*2) + (-1*5 - 1)*2 + 1 = 1029. Columns -1..2: the
    # first is padding (lo1 = 1), all others inside (hi1 = 4); rows -1..1: lo2 = 1, hi2 = 3.
    ld = window_load((BaseReg.SCRATCH, 1000), (4, 5, 2), 1, 1, 1, -1, -1, 3, 4, pad_value=-7)
    assert (ld.base_reg, ld.dram_offset, ld.n0) == (BaseReg.SCRATCH, 1029, 1)
    assert (ld.n1, ld.dram_stride1, ld.buf_stride1, ld.n2, ld.dram_stride2, ld.buf_stride2) == (4, 2, 1, 3, 10, 4)
    assert (ld.pad_en, ld.pad_lo1, ld.pad_hi1, ld.pad_lo2, ld.pad_hi2, ld.pad_value) == (1, 1, 4, 1, 3, -7)
    # Stride 2 from (2, -1): columns -1, 1, 3 (the first is padding), rows 2, 4 (the second is).
    ld = window_load((BaseReg.INPUT, 0), (4, 5, 2), 0, 0, 2, 2, -1, 2, 3, sy=2, sx=2, bs1=2)
    assert (ld.dram_offset, ld.dram_stride1, ld.dram_stride2, ld.buf_stride1, ld.buf_stride2) == (18, 4, 20, 2, 6)
    assert (ld.pad_en, ld.pad_lo1, ld.pad_hi1, ld.pad_lo2, ld.pad_hi2) == (1, 1, 3, 0, 1)
    # Inside the map: no padding.
    ld = window_load((BaseReg.INPUT, 0), (4, 5, 2), 0, 0, 2, 1, 1, 2, 2)
    assert (ld.dram_offset, ld.pad_en) == ((1 * 5 + 1) * 2, 0)


def test_store_carries_the_layer_quantization():
    layer = make_layer(np.random.default_rng(0), "fc", 4, 3, 0, "relu")
    st = store(layer, (BaseReg.OUTPUT, 64), 10, 20, 5)
    d = isa.decode(st.encode(psum_row=7, param_row=8, m_len=9, dep=dep_flags(pop_prev=True)))
    assert (d["op"], d["base_reg"], d["dram_offset"], d["dram_stride"], d["n_len"]) == (
        Opcode.STORE, BaseReg.OUTPUT, 74, 20, 5)
    assert (d["psum_row"], d["param_row"], d["m_len"], d["dep"]) == (7, 8, 9, deps(pop_prev=1))
    assert (d["out_zp"], d["act_min"], d["act_max"]) == (layer.out_zp, layer.act_min, layer.act_max)


def test_field_out_of_range_is_an_encode_error():
    assert isa.decode(load(BaseReg.STATIC, 0, 1023).encode(Buffer.IFMAP, 0, NO_DEP))["n0"] == 1023
    with pytest.raises(EncodeError, match="n0") as e:   # n0 is 10 bits
        load(BaseReg.STATIC, 0, 1024).encode(Buffer.IFMAP, 0, NO_DEP)
    assert isinstance(e.value, CompileError)


def test_compile_names_the_layer_whose_fields_do_not_fit():
    # fc with K = 2**20 features: the ifmap LOAD's dram_stride1 (20 bits) is K.
    rng = np.random.default_rng(1)
    layer = make_layer(rng, "wide", 1 << 20, 2, 0, "none")
    model = QModel(name="m", layers=[layer], input_scale=0.05, input_zp=0, input_shape=(1 << 20,))
    with pytest.raises(CompileError, match=r"layer 'wide' \(fc\) cannot be encoded for 64x4 ws: "
                                           r".*dram_stride1") as e:
        compile_model(model, AccelConfig(rows=64, cols=4))
    assert isinstance(e.value.__cause__, EncodeError)


def test_allocation_offsets():
    # Two fc layers 5 -> 3 -> 2 on cols = 4: layer 0's weights are 15 bytes (8-aligned: 16),
    # its parameters one row of 4 channels x 9 bytes (36, aligned: 40) from 16; layer 1's
    # weights from 56 (6 bytes, aligned: 64), its parameters from 64 (36 -> 40): 104 in all.
    model = make_model(np.random.default_rng(2), [5, 3, 2])
    static, allocs, scratch = allocate(model, AccelConfig(rows=4, cols=4), batch=2)
    assert len(static) == 104
    assert [(a.weights, a.params) for a in allocs] == [(0, 16), (56, 64)]
    assert [a.srcs for a in allocs] == [((BaseReg.INPUT, 0),), ((BaseReg.SCRATCH, 0),)]
    assert [a.src for a in allocs] == [(BaseReg.INPUT, 0), (BaseReg.SCRATCH, 0)]
    assert [a.dst for a in allocs] == [(BaseReg.SCRATCH, 0), (BaseReg.OUTPUT, 0)]
    assert scratch == 8   # 2 samples x 3 features, 8-aligned


def test_emit_unit_tokens_and_halves():
    """One output tile of two streamed GEMMs (docs/compiler.md, token protocol): LOADs of
    group 0 (ifmap, weight, then the parameters: only the STORE reads them, so they queue
    behind GEMM 0's LOADs, for GEMM 1, the tile's last), GEMM 0, then the LOADs of group 1
    (after GEMM 0, which needs none of them: a full LOAD queue must not stop the fetch
    before it), GEMM 1 (accumulating), STORE."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=16, weight_rows=8, psum_rows=8, param_rows=2)
    ops = [GemmOp(k_len=4, n_len=3, weight=[load(BaseReg.STATIC, 40 + 4 * k, 3)],
                  ifmap=[load(BaseReg.INPUT, 4 * k, 4)]) for k in range(2)]
    layer = make_layer(np.random.default_rng(3), "fc", 8, 3, 0, "none")
    unit = Unit(params=load(BaseReg.STATIC, 200, 9, n1=4, s1=9, bs1=1),
                tiles=[OutTile(m_len=1, ops=ops, store=store(layer, (BaseReg.OUTPUT, 0), 0, 3, 3), param_row=0)],
                resident=False)
    d = [isa.decode(w) for w in emit_unit(unit, config, first=True, last=True)]
    assert [(x["op"], x.get("buf")) for x in d] == [
        (Opcode.LOAD, Buffer.IFMAP), (Opcode.LOAD, Buffer.WEIGHT), (Opcode.LOAD, Buffer.PARAM),
        (Opcode.GEMM, None), (Opcode.LOAD, Buffer.IFMAP), (Opcode.LOAD, Buffer.WEIGHT),
        (Opcode.GEMM, None), (Opcode.STORE, None)]
    assert [x["dep"] for x in d] == [NO_DEP, deps(push_next=1), NO_DEP, deps(pop_prev=1), NO_DEP,
                                     deps(push_next=1), deps(pop_prev=1, push_next=1), deps(pop_prev=1)]
    loads, gemms = [d[i] for i in (0, 1, 2, 4, 5)], [d[3], d[6]]
    # group 1 goes to the second halves (ifmap 16 / 2 = 8, weight 8 / 2 = 4)
    assert [x["buf_row"] for x in loads] == [0, 0, 0, 8, 4]
    assert [(x["accumulate"], x["ifmap_row"], x["weight_row"], x["k_len"], x["n_len"]) for x in gemms] == [
        (0, 0, 0, 4, 3), (1, 8, 4, 4, 3)]
    assert (d[7]["psum_row"], d[7]["param_row"], d[7]["m_len"]) == (0, 0, 1)


def test_emit_ifmap_groups_prefetch_one_group_ahead():
    """Five GEMMs of one output tile in three ifmap groups (GemmOp.ifmap_group: A = GEMMs 0,
    1; B = 2, 3; C = 4), each tile loaded by the first GEMM's op: A by LOAD group 0 (GEMM 0
    reads it: before the push), B by LOAD group 1 and C by LOAD group 3, the second GEMM of
    the group before (LOAD group 3 pops the c2l of GEMM 1, A's last, the last reader of
    C's half; half 1 is fresh for B), after those groups' pushes. Halves: A 0, B 1, C 0
    (ifmap half = 8 rows). The parameters queue just before the LOADs of GEMM 4, the
    tile's last (the STORE's), in LOAD group 3. Each GEMM ``t`` comes before LOAD group
    ``t+1``."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=16, weight_rows=8, psum_rows=8, param_rows=2)
    plan = [(0, True, 0), (0, False, 3), (1, True, 0), (1, False, 2), (2, True, 1)]
    ops = [GemmOp(k_len=4, n_len=3, weight=[load(BaseReg.STATIC, 40 + 4 * t, 3)],
                  ifmap=[load(BaseReg.INPUT, 100 * group, 4, n1=5, s1=4, bs1=1)] if first else [],
                  ifmap_row=row, ifmap_group=group) for t, (group, first, row) in enumerate(plan)]
    layer = make_layer(np.random.default_rng(3), "fc", 8, 3, 0, "none")
    unit = Unit(params=load(BaseReg.STATIC, 200, 9, n1=4, s1=9, bs1=1),
                tiles=[OutTile(m_len=1, ops=ops, store=store(layer, (BaseReg.OUTPUT, 0), 0, 3, 3), param_row=0)],
                resident=False)
    d = [isa.decode(w) for w in emit_unit(unit, config, first=True, last=True)]
    L, G, S = Opcode.LOAD, Opcode.GEMM, Opcode.STORE
    P, I, W = Buffer.PARAM, Buffer.IFMAP, Buffer.WEIGHT
    assert [(x["op"], x.get("buf"), x.get("dram_offset")) for x in d] == [
        (L, I, 0), (L, W, 40),                  # group 0: tile A, weights 0
        (G, None, None),                        # GEMM 0, then group 1
        (L, W, 44), (L, I, 100),                # group 1: weights 1, then tile B (ahead)
        (G, None, None),
        (L, W, 48),                             # group 2
        (G, None, None),
        (L, W, 52), (L, P, 200), (L, I, 200),   # group 3: weights 3, parameters, tile C (ahead)
        (G, None, None),
        (L, W, 56),                             # group 4
        (G, None, None), (S, None, 0)]
    pop, push = deps(pop_next=1, push_next=1), deps(push_next=1)
    assert [x["dep"] for x in d] == [
        NO_DEP, push, deps(pop_prev=1, push_prev=1), push, NO_DEP,
        deps(pop_prev=1, push_prev=1), pop, deps(pop_prev=1, push_prev=1), pop, NO_DEP, NO_DEP,
        deps(pop_prev=1), pop, deps(pop_prev=1, push_next=1), deps(pop_prev=1)]
    loads = [x for x in d if x["op"] == L and x["buf"] == I]
    assert [x["buf_row"] for x in loads] == [0, 8, 0]
    assert [x["ifmap_row"] for x in d if x["op"] == G] == [0, 3, 8, 10, 1]
    assert [x["weight_row"] for x in d if x["op"] == G] == [0, 4, 0, 4, 0]


def test_emit_ifmap_groups_ahead_with_resident_weights():
    """The same five GEMMs with every weight tile resident (no weight LOADs): tiles B and C
    still go ahead (LOAD groups 1 and 3, nothing in between loads), and push their own l2c,
    which GEMMs 2 and 4 (their groups' first) pop; GEMMs 1 and 3 pop none. GEMM 1 pushes
    the c2l LOAD group 3 pops (group 3 has LOADs), GEMMs 0 and 2 none (groups 2 and 4 are
    empty). The parameters (for GEMM 4, the tile's last) queue after tile B, in LOAD group
    1, with no token of their own: tile C's push, later in the queue, covers them."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=16, weight_rows=32, psum_rows=8, param_rows=2)
    plan = [(0, True, 0), (0, False, 3), (1, True, 0), (1, False, 2), (2, True, 1)]
    ops = [GemmOp(k_len=4, n_len=3, weight=[load(BaseReg.STATIC, 40 + 4 * t, 3)],
                  ifmap=[load(BaseReg.INPUT, 100 * group, 4, n1=5, s1=4, bs1=1)] if first else [],
                  ifmap_row=row, ifmap_group=group) for t, (group, first, row) in enumerate(plan)]
    weights = WeightPlan(rows={weight_key(op): 4 * t for t, op in enumerate(ops)}, halves=(0, 16),
                         half_rows=16)
    layer = make_layer(np.random.default_rng(3), "fc", 8, 3, 0, "none")
    unit = Unit(params=load(BaseReg.STATIC, 200, 9, n1=4, s1=9, bs1=1),
                tiles=[OutTile(m_len=1, ops=ops, store=store(layer, (BaseReg.OUTPUT, 0), 0, 3, 3), param_row=0)],
                resident=False)
    d = [isa.decode(w) for w in emit_unit(unit, config, first=True, last=True, weights=weights)]
    L, G, S = Opcode.LOAD, Opcode.GEMM, Opcode.STORE
    assert [(x["op"], x.get("buf"), x.get("dram_offset")) for x in d] == [
        (L, Buffer.IFMAP, 0),                           # group 0: tile A
        (G, None, None),
        (L, Buffer.IFMAP, 100), (L, Buffer.PARAM, 200), # group 1: tile B, ahead; parameters
        (G, None, None), (G, None, None),               # (group 2 is empty)
        (L, Buffer.IFMAP, 200),                         # group 3: tile C, ahead
        (G, None, None), (G, None, None), (S, None, 0)]
    push = deps(push_next=1)
    assert [x["dep"] for x in d] == [
        push, deps(pop_prev=1), push, NO_DEP, deps(push_prev=1), deps(pop_prev=1),
        deps(pop_next=1, push_next=1), NO_DEP, deps(pop_prev=1, push_next=1), deps(pop_prev=1)]
    assert [x["buf_row"] for x in d if x["op"] == L and x["buf"] == Buffer.IFMAP] == [0, 8, 0]
    assert [(x["ifmap_row"], x["weight_row"]) for x in d if x["op"] == G] == [
        (0, 0), (3, 4), (8, 8), (10, 12), (1, 16)]


def test_emit_weight_groups():
    """Seven streamed GEMMs of one output tile (k tiles 0..6, each a 4-row weight LOAD at
    DRAM 40 + 12k) over a resident ifmap block, weight halves of 16 rows (pitch 4: up to 4
    tiles a group). Weight groups of 1, 2 and 4 GEMMs: [0] in half 0, [1, 2] in half 1
    (rows 16, 20), [3..6] in half 0 (rows 0, 4, 8, 12); each group one LOAD (n2 tiles,
    DRAM stride 12, buffer stride 4). Group [1, 2] goes in LOAD group 1 (after GEMM 0's
    first, nothing to wait for), group [3..6] in LOAD group 2: it pops the c2l of GEMM 0,
    the last reader of half 0, and pushes the l2c GEMM 3 pops; GEMMs 2, 4, 5 pop none. The
    parameters, due for GEMM 6 (the tile's last, the STORE's), queue last, in LOAD group 2,
    and push the l2c GEMM 6 pops."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=16, weight_rows=32, psum_rows=8, param_rows=2)
    ops = [GemmOp(k_len=4, n_len=3, weight=[load(BaseReg.STATIC, 40 + 12 * k, 3, n1=4, s1=3, bs1=1)],
                  ifmap_row=k) for k in range(7)]
    layer = make_layer(np.random.default_rng(3), "fc", 28, 3, 0, "none")
    unit = Unit(params=load(BaseReg.STATIC, 200, 9, n1=4, s1=9, bs1=1),
                tiles=[OutTile(m_len=1, ops=ops, store=store(layer, (BaseReg.OUTPUT, 0), 0, 3, 3), param_row=0,
                               block=0, block_loads=[load(BaseReg.INPUT, 0, 4, n1=7, s1=4, bs1=1)])],
                resident=True)
    d = [isa.decode(w) for w in emit_unit(unit, config, first=True, last=True)]
    L, G, S = Opcode.LOAD, Opcode.GEMM, Opcode.STORE
    P, I, W = Buffer.PARAM, Buffer.IFMAP, Buffer.WEIGHT
    assert [(x["op"], x.get("buf"), x.get("dram_offset"), x.get("n2"), x.get("buf_row")) for x in d] == [
        (L, I, 0, 1, 0), (L, W, 40, 1, 0),                      # LOAD group 0
        (G,) + (None,) * 4,
        (L, W, 52, 2, 16),                                      # LOAD group 1: tiles 1, 2
        (G,) + (None,) * 4,
        (L, W, 76, 4, 0), (L, P, 200, 1, 0),                    # LOAD group 2: tiles 3..6, parameters
        *[(G,) + (None,) * 4] * 5, (S, None, 0, None, 0)]   # (STORE: buf_row 0)
    assert [(x["dram_stride2"], x["buf_stride2"]) for x in d if x["op"] == L and x["n2"] > 1] == [(12, 4)] * 2
    push = deps(push_next=1)
    assert [x["dep"] for x in d] == [
        NO_DEP, push, deps(pop_prev=1, push_prev=1), push, deps(pop_prev=1),
        deps(pop_next=1, push_next=1), push, NO_DEP, deps(pop_prev=1), NO_DEP, NO_DEP,
        deps(pop_prev=1, push_next=1), deps(pop_prev=1)]
    assert [x["weight_row"] for x in d if x["op"] == G] == [0, 16, 20, 0, 4, 8, 12]
    assert [x["accumulate"] for x in d if x["op"] == G] == [0] + [1] * 6


def test_merge_loads():
    """Runs of one-row-run LOADs with the same shape and constant DRAM / buffer steps merge;
    a different shape, a step change, a backwards step, padding or ``n2 > 1`` ends a run."""
    a = [load(BaseReg.STATIC, 100 + 30 * i, 3, n1=2, s1=5, bs1=1, buf_row=8 + 2 * i) for i in range(3)]
    merged = merge_loads(a + [load(BaseReg.STATIC, 190, 3, n1=2, s1=5, bs1=1, buf_row=15)])
    assert [(m.dram_offset, m.n2, m.dram_stride2, m.buf_stride2, m.buf_row) for m in merged] == [
        (100, 3, 30, 2, 8), (190, 1, 0, 0, 15)]      # 190 follows the run, row 15 does not
    odd = load(BaseReg.STATIC, 190, 2, n1=2, s1=5, bs1=1, buf_row=14)   # 2 lanes, not 3
    back = load(BaseReg.STATIC, 50, 3, n1=2, s1=5, bs1=1, buf_row=16)
    padded = dataclasses.replace(a[0], dram_offset=190, buf_row=14, pad_en=1, pad_hi1=1)
    for other in (odd, back, padded):
        assert len(merge_loads(a + [other])) == 2
    assert merge_loads([a[0]]) == [a[0]]
    two = [dataclasses.replace(a[0], n2=2, dram_stride2=7, buf_stride2=1), a[1]]
    assert merge_loads(two) == two


def test_lowering_family_from_the_registry():
    expected = {"ws": lower_gemm, "os": lower_gemm, "rs": lower_rs, "feie": lower_gemm}
    assert DATAFLOWS == tuple(expected)
    for name, module in expected.items():
        assert dataflow(name).lowering is module
        assert subtracts_zero_point(AccelConfig(rows=4, cols=4, dataflow=name)) == (name == "feie")
    for module in (lower_gemm, lower_rs):
        assert module.LOWERINGS == {"fc": module.lower_fc, "conv": module.lower_conv}
    assert set(lower_vec.LOWERINGS) == set(SUPPORTED_OPS) - {"fc", "conv"}
    with pytest.raises(KeyError, match="ws.*os.*rs.*feie"):   # names the known ones
        dataflow("xs")
