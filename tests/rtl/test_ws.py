# amaranth: UnusedElaboratable=no
"""The plain-GEMM compute engines (WSArray, OSArray) against a NumPy GEMM
reference, through real LaneBuffers; each engine's latency against its executable timing,
``dataflow(name).cycles`` (rtl/dataflows.py; checked against the docstring formulas by
tests/rtl/test_dataflows.py). All three overlap instructions (WSArray: shadow weight
registers; OSArray: consecutive GEMMs' blocks in the block pipeline): their
accept / done times are checked against the engine's ``sequence_timing``, and the latency of
a GEMM accepted by an idle engine against ``cycles``. (The row-stationary engine takes
windowed GEMMs: tests/rtl/test_rs.py.)"""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.back import verilog

from celosia.rtl.arrays.engine import ComputeEngineSignature
from celosia.rtl.arrays import os
from celosia.rtl.arrays.os import OSArray
from celosia.rtl.arrays.ws import WSArray, sequence_cycles, sequence_timing
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import dataflow
from engine_bench import run_program
from helpers import overlap_monitor
from test_dataflows import OS_SEQUENCES


# -- reference ---------------------------------------------------------------

def wrap32(v):
    return ((np.asarray(v, dtype=np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def tap_rows(insn):
    """Buffer rows of m = 0 .. m_len-1 of a GEMM by the ISA text (rtl/isa.py): plain,
    ``ifmap_row + m``; windowed with one tap, ``m = e*out_w + x`` reads
    ``ifmap_row + e*stride_h*row_pitch + x*stride_w``."""
    if not insn.get("window"):
        return [insn["ifmap_row"] + m for m in range(insn["m_len"])]
    return [insn["ifmap_row"] + e * insn["stride_h"] * insn["row_pitch"] + x * insn["stride_w"]
            for e in range(insn["out_h"]) for x in range(insn["out_w"])]


def in_range(cfg, insn, engine):
    common = (insn["psum_row"] + insn["m_len"] <= cfg.psum_rows
              and insn["k_len"] <= cfg.rows and insn["n_len"] <= cfg.cols
              and insn.get("in_zp", 0) == 0)  # only feie subtracts a zero point (tests/rtl/test_feie.py)
    if not insn.get("window"):
        return (common and insn["ifmap_row"] + insn["m_len"] <= cfg.ifmap_rows
                and insn["weight_row"] + insn["k_len"] <= cfg.weight_rows)
    # windowed: one tap only on these arrays, every field of the window at least 1
    return (common and insn["win_h"] == insn["win_w"] == 1
            and min(insn[f] for f in ("stride_h", "stride_w", "dil_h", "dil_w", "out_h", "out_w",
                                      "k_len")) >= 1
            and insn["m_len"] == insn["out_h"] * insn["out_w"]
            and insn["weight_row"] + insn["k_len"] <= cfg.weight_rows
            and max(tap_rows(insn)) < cfg.ifmap_rows)


def ref_gemm(cfg, psum, ifmap, weight, insn, engine):
    """Apply one GEMM to ``psum`` (int64 array) in place; False if out of range."""
    if not in_range(cfg, insn, engine):
        return False
    m_len, k, n = insn["m_len"], insn["k_len"], insn["n_len"]
    if m_len == 0:
        return True
    x = ifmap[tap_rows(insn), :k].astype(np.int64) - insn.get("in_zp", 0)
    w = weight[insn["weight_row"]:insn["weight_row"] + k, :n].astype(np.int64)
    rows = slice(insn["psum_row"], insn["psum_row"] + m_len)
    old = psum[rows, :n] if insn["accumulate"] else 0
    psum[rows, :n] = wrap32(old + x @ w)
    return True


ENGINES = [WSArray, OSArray]
DATAFLOW = {WSArray: "ws", OSArray: "os"}
#: each engine's (accept, end) times of a sequence: fn(insns, cfg, gaps, ifmap)
SEQUENCE = {WSArray: lambda insns, cfg, gaps, ifmap: sequence_timing(insns, cfg, gaps),
            OSArray: os.sequence_timing}


# -- bench -------------------------------------------------------------------

def window(out_h, out_w, row_pitch=0, stride_h=1, stride_w=1, win_h=1, win_w=1, dil_h=1, dil_w=1,
           **fields):
    """The fields of a windowed GEMM (one tap unless told), ``m_len = out_h*out_w``."""
    return dict(window=1, win_h=win_h, win_w=win_w, stride_h=stride_h, stride_w=stride_w,
                dil_h=dil_h, dil_w=dil_w, out_h=out_h, out_w=out_w, row_pitch=row_pitch,
                m_len=out_h * out_w, **fields)


def make_insn(accumulate=0, ifmap_row=0, weight_row=0, psum_row=0, m_len=1, k_len=1, n_len=1):
    return dict(accumulate=accumulate, ifmap_row=ifmap_row, weight_row=weight_row,
                psum_row=psum_row, m_len=m_len, k_len=k_len, n_len=n_len)


def check(cfg, insns, rng, gaps=None, ifmap=None, weight=None, psum0=None, engine=WSArray):
    cfg = dataclasses.replace(cfg, dataflow=DATAFLOW[engine])  # the legality rules depend on it
    if ifmap is None:
        ifmap = np.array([[rng.randrange(-128, 128) for _ in range(cfg.rows)]
                          for _ in range(cfg.ifmap_rows)])
    if weight is None:
        weight = np.array([[rng.randrange(-128, 128) for _ in range(cfg.cols)]
                           for _ in range(cfg.weight_rows)])
    if psum0 is None:
        psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cfg.cols)]
                          for _ in range(cfg.psum_rows)])
    if gaps is None:
        gaps = [rng.choice([0, 0, 1, 3]) for _ in insns]
    psum, events, skips = run_program(cfg, ifmap, weight, psum0, insns, gaps, engine,
                                      seed=rng.random(), monitor=overlap_monitor)

    expect = np.array(psum0, dtype=np.int64)
    kinds = []
    for insn in insns:
        ok = ref_gemm(cfg, expect, ifmap, weight, insn, engine)
        kinds.append("done" if ok else "error")
    np.testing.assert_array_equal(psum, expect)

    # completions in order; accept / end times from the engine's sequence_timing
    assert [k for k, _ in events if k != "accept"] == kinds
    accepts = [t for k, t in events if k == "accept"]
    ends = [t for k, t in events if k != "accept"]
    got = list(zip(accepts, ends))
    want = SEQUENCE[engine](insns, cfg, gaps, ifmap)
    shift = got[0][0] - want[0][0]
    assert got == [(a + shift, e + shift) for a, e in want], (insns, gaps)
    # a GEMM alone in the engine (every earlier one ended before its acceptance, the next
    # one accepted after its end): the registry's single-instruction timing
    timing = dataflow(cfg.dataflow)
    for i, (insn, (t_acc, t_end)) in enumerate(zip(insns, got)):
        if (i == 0 or ends[i - 1] < t_acc) and (i + 1 == len(insns) or accepts[i + 1] > t_end):
            assert t_end - t_acc == timing.cycles(insn, cfg, ifmap), insn
    return events, skips


def rel_times(events):
    """``(accept, end)`` of each instruction from ``events``, counted from the first accept."""
    t0 = events[0][1]
    return list(zip([t - t0 for k, t in events if k == "accept"], [t - t0 for k, t in events if k != "accept"]))


def small_cfg(rows, cols):
    return AccelConfig(rows=rows, cols=cols, ifmap_rows=12, weight_rows=max(2 * rows, 4) + 2,
                       psum_rows=10)


CONFIGS = [(1, 1), (2, 2), (3, 5), (4, 8), (8, 8)]


# -- tests -------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_signature_and_verilog(engine):
    cfg = small_cfg(3, 5)
    assert engine(cfg).signature == ComputeEngineSignature(cfg)
    assert "module" in verilog.convert(engine(AccelConfig(rows=4, cols=8)))


@pytest.mark.parametrize("rows,cols", CONFIGS)
@pytest.mark.parametrize("engine", ENGINES)
def test_random_program(rows, cols, engine):
    """Full tiles, partial k / n, accumulate over two instructions, m_len 0 and > 1."""
    cfg = small_cfg(rows, cols)
    rng = random.Random(rows * 100 + cols)
    insns = [
        make_insn(ifmap_row=2, weight_row=1, psum_row=0, m_len=5, k_len=rows, n_len=cols),
        # Accumulate onto the rows just written, with a different weight tile.
        make_insn(accumulate=1, ifmap_row=5, weight_row=rows, psum_row=1, m_len=4, k_len=rows, n_len=cols),
        make_insn(ifmap_row=0, weight_row=0, psum_row=6, m_len=3,
                  k_len=max(rows - 1, 1), n_len=max(cols - 2, 1)),
        make_insn(accumulate=1, ifmap_row=3, weight_row=2, psum_row=7, m_len=0, k_len=rows, n_len=cols),
        make_insn(accumulate=1, ifmap_row=11, weight_row=0, psum_row=9, m_len=1,
                  k_len=rng.randrange(0, rows + 1), n_len=rng.randrange(0, cols + 1)),
    ]
    for _ in range(3):
        m_len = rng.randrange(0, 5)
        k_len = rng.randrange(0, rows + 1)
        insns.append(make_insn(
            accumulate=rng.randrange(2), m_len=m_len, k_len=k_len, n_len=rng.randrange(0, cols + 1),
            ifmap_row=rng.randrange(0, cfg.ifmap_rows - m_len + 1),
            weight_row=rng.randrange(0, cfg.weight_rows - k_len + 1),
            psum_row=rng.randrange(0, cfg.psum_rows - m_len + 1)))
    check(cfg, insns, rng, engine=engine)


@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 8)])
@pytest.mark.parametrize("engine", ENGINES)
def test_minus_128_and_wrap(rows, cols, engine):
    """All -128 operands; accumulating onto values near INT32 limits wraps."""
    cfg = small_cfg(rows, cols)
    rng = random.Random(7)
    ifmap = np.full((cfg.ifmap_rows, rows), -128)
    weight = np.full((cfg.weight_rows, cols), -128)
    weight[1::2, :] = 127
    psum0 = np.full((cfg.psum_rows, cols), (1 << 31) - 1)
    psum0[1::2, :] = -(1 << 31)
    insns = [
        make_insn(accumulate=1, psum_row=0, m_len=4, k_len=rows, n_len=cols, weight_row=0),
        make_insn(accumulate=1, psum_row=4, m_len=4, k_len=rows, n_len=cols, weight_row=1),
        make_insn(accumulate=0, psum_row=8, m_len=2, k_len=rows, n_len=cols, weight_row=0),
    ]
    check(cfg, insns, rng, ifmap=ifmap, weight=weight, psum0=psum0, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_out_of_range_is_error_and_writes_nothing(engine):
    cfg = small_cfg(3, 5)
    rng = random.Random(3)
    good = dict(accumulate=0, ifmap_row=0, weight_row=0, psum_row=0, m_len=2, k_len=3, n_len=5)
    bad = [
        {**good, "ifmap_row": cfg.ifmap_rows - 1},             # ifmap_row + m_len > ifmap_rows
        {**good, "weight_row": cfg.weight_rows - 2},           # weight_row + k_len > weight_rows
        {**good, "psum_row": cfg.psum_rows - 1},               # psum_row + m_len > psum_rows
        {**good, "k_len": 4},                                  # k_len > rows
        {**good, "n_len": 6},                                  # n_len > cols
        {**good, "ifmap_row": 0xFFFF, "m_len": 0xFFFF},        # no 16-bit wrap of the sum
        {**good, "psum_row": cfg.psum_rows + 1, "m_len": 0},   # start row past the end, m_len 0
        {**good, **window(ifmap_row=0, out_h=1, out_w=2, row_pitch=2, win_h=3, win_w=3)},  # 3x3: rs only
        {**good, **window(ifmap_row=cfg.ifmap_rows - 2, out_h=1, out_w=2, stride_w=2)},  # last row too far
        {**good, "in_zp": 5},                                  # an error on ws / os
    ]
    insns = bad + [{**good, "psum_row": 4}]
    check(cfg, insns, rng, gaps=[rng.randrange(3) for _ in insns], engine=engine)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (4, 8)])
@pytest.mark.parametrize("engine", ENGINES)
def test_windowed_tap_gemms(rows, cols, engine):
    """Windowed GEMMs of one kernel tap (the window address generator): strides, row
    pitches below and above the window's width, one output row / column, ignored dilations,
    accumulation, mixed with plain GEMMs back to back and with gaps; the last legal row and
    one past it (error); a 3x3 window (error) and m_len != out_h*out_w (error). Expected:
    the ISA's formula in NumPy (tap_rows); latency: the registry's cycles()."""
    cfg = dataclasses.replace(small_cfg(rows, cols), ifmap_rows=48, psum_rows=24)
    rng = random.Random(rows * 31 + cols)
    full = dict(k_len=rows, n_len=cols)
    insns = [
        dict(make_insn(psum_row=0, **full), **window(3, 3, row_pitch=7, stride_h=2, stride_w=2,
                                                     ifmap_row=1)),
        dict(make_insn(accumulate=1, psum_row=1, weight_row=rows, k_len=max(rows - 1, 1),
                       n_len=max(cols - 1, 1)), **window(2, 4, row_pitch=5, ifmap_row=10)),
        make_insn(psum_row=12, ifmap_row=3, m_len=5, **full),               # plain in between
        dict(make_insn(psum_row=12, accumulate=1, **full),
             **window(4, 1, row_pitch=4, stride_h=3, ifmap_row=2)),         # out_w = 1
        dict(make_insn(psum_row=16, **full), **window(1, 5, stride_w=3, ifmap_row=30)),  # out_h = 1
        dict(make_insn(psum_row=17, **full),
             **window(3, 4, row_pitch=2, dil_h=3, dil_w=5, ifmap_row=0)),  # rows overlap
        dict(make_insn(psum_row=0, **full),                                 # last row = 47
             **window(2, 3, row_pitch=20, stride_h=2, stride_w=2, ifmap_row=3)),
        dict(make_insn(psum_row=0, **full),                                 # last row = 48
             **window(2, 3, row_pitch=20, stride_h=2, stride_w=2, ifmap_row=4)),
        dict(make_insn(psum_row=6, **full), **window(2, 2, row_pitch=3, win_h=3, win_w=3)),
        dict(make_insn(psum_row=6, **full), **window(1, 1, win_w=2)),
        dict(window(2, 2, row_pitch=3), **{**make_insn(psum_row=6, m_len=3, **full), "window": 1}),
    ]
    for _ in range(4):
        out_h, out_w = rng.randrange(1, 4), rng.randrange(1, 5)
        sh, sw = rng.randrange(1, 4), rng.randrange(1, 4)
        pitch = rng.randrange(1, 12)
        last = (out_h - 1) * sh * pitch + (out_w - 1) * sw
        if last < cfg.ifmap_rows:
            insns.append(dict(make_insn(accumulate=rng.randrange(2),
                                        psum_row=rng.randrange(0, cfg.psum_rows - out_h * out_w + 1),
                                        k_len=rng.randrange(1, rows + 1), n_len=rng.randrange(1, cols + 1)),
                              **window(out_h, out_w, row_pitch=pitch, stride_h=sh, stride_w=sw,
                                       ifmap_row=rng.randrange(0, cfg.ifmap_rows - last))))
    check(cfg, insns, rng, gaps=[0] * len(insns), engine=engine)
    check(cfg, insns, rng, engine=engine)


@pytest.mark.parametrize("case", range(len(OS_SEQUENCES)))
@pytest.mark.parametrize("engine", [OSArray])
def test_os_back_to_back_overlaps(engine, case):
    """OS with valid held: the block pipeline runs on from one GEMM into the next
    (tap chains accumulating into the same psum rows, m_len <= rows, the in-flight limit,
    an error and m_len = 0 in between); accept / done times as worked out by hand in
    tests/rtl/test_dataflows.py (OS_SEQUENCES); bit-exact results."""
    cfg, insns, want, serial = OS_SEQUENCES[case]
    insns = [dict(make_insn(), **insn) for insn in insns]
    events, _ = check(cfg, insns, random.Random(case), gaps=[0] * len(insns), engine=engine)
    if engine is OSArray:
        assert rel_times(events) == want and want[-1][1] < serial


@pytest.mark.parametrize("engine", [OSArray])
def test_block_pipeline_many_blocks(engine):
    """OS block pipeline over 4+ blocks (each double-buffer bank reused): blocks
    alternating between all-zero, half-zero and dense inputs, k_len shorter and as long as
    the blocks, accumulate; bit-exact, and cycles = the registry's cycles()."""
    cfg = small_cfg(2, 3)
    rng = random.Random(29)
    zp = 0
    ifmap = np.array([[rng.randrange(-128, 128) for _ in range(cfg.rows)] for _ in range(cfg.ifmap_rows)])
    ifmap[0:2] = zp                 # block 0 of the first GEMM: all zero
    ifmap[2:4, 1] = zp              # block 1: k=1 zero in both rows
    ifmap[6, :] = zp                # block 3: one of its rows zero
    insns = [make_insn(ifmap_row=0, psum_row=0, m_len=9, k_len=2, n_len=3),
             make_insn(accumulate=1, ifmap_row=1, weight_row=3, psum_row=1, m_len=8, k_len=1, n_len=2),
             make_insn(accumulate=1, ifmap_row=3, psum_row=0, m_len=7, k_len=0, n_len=3)]
    check(cfg, insns, rng, gaps=[0, 2, 0], ifmap=ifmap, engine=engine)


# Hand-worked WS back-to-back programs (valid held): (insns, [(accept, end)], cycles by
# the engine without the overlap). rows=2, cols=3; an idle GEMM is read from a+2+k_len on.
WS_B2B = [
    # Four GEMMs m=3, k=2. G0: a=0, rows read 4..6, done 6+4=10, loader free at its take (4).
    # G1: a=4, loaded at 4+2+2=8, reads 8..10 (psum rows 0..2 last read 4..6: >= +3), done 14.
    # G2: a=8, reads 12..14, done 18. G3: a=12, reads 16..18, done 22.
    # Without the overlap: 4 * (2+3+5) + 3 (accepted the cycle after done) = 43.
    ([make_insn(accumulate=a, psum_row=p, ifmap_row=i, m_len=3, k_len=2, n_len=3)
      for a, p, i in [(0, 0, 0), (1, 0, 4), (1, 1, 8), (0, 5, 1)]],
     [(0, 10), (4, 14), (8, 18), (12, 22)], 43),
    # psum hazard: m=1, k=0, all accumulating into psum row 0. G0: a=0, read 2, done 6.
    # G1: a=2, loaded 4, but row 0 was read in 2: wait to 2+3=5, done 9.
    # G2: a=5, loaded 7, row 0 read in 5: wait to 8, done 12. Without: 3*6 + 2 = 20.
    ([make_insn(accumulate=1, m_len=1, k_len=0, n_len=3, ifmap_row=i) for i in range(3)],
     [(0, 6), (2, 9), (5, 12)], 20),
    # An error in between waits for the GEMM before it. G0 m=4 k=2: reads 4..7, done 11.
    # Bad (k_len 3 > rows 2): a=4, error in max(5, 11+1) = 12; loader free at 13.
    # G2 m=1 k=1: a=13, read 13+2+1=16, done 20. Without: 10+1+1+1+8 = 21.
    ([make_insn(m_len=4, k_len=2, n_len=3), make_insn(m_len=1, k_len=3, n_len=3),
      make_insn(psum_row=6, ifmap_row=5, m_len=1, k_len=1, n_len=2)],
     [(0, 11), (4, 12), (13, 20)], 21),
]


@pytest.mark.parametrize("case", range(len(WS_B2B)))
def test_ws_back_to_back_overlaps(case):
    """WS with valid held: the next GEMM is accepted in the cycle the current one starts
    streaming, its preload overlaps that stream; times as worked out by hand above (and by
    sequence_timing), bit-exact results."""
    insns, want, serial = WS_B2B[case]
    cfg = small_cfg(2, 3)
    assert sequence_timing(insns, cfg) == want
    assert sequence_cycles(insns, cfg) == want[-1][1] < serial
    events, _ = check(cfg, insns, random.Random(case), gaps=[0] * len(insns), engine=WSArray)
    assert rel_times(events) == want


@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 8), (8, 8)])
@pytest.mark.parametrize("engine", ENGINES)
def test_random_back_to_back(rows, cols, engine):
    """Random programs issued back to back (and with random gaps): overlapping GEMMs (WS
    preload, OS block pipeline), psum hazards between accumulating GEMMs on the same
    rows, errors and m_len = 0 mixed in; bit-exact, and accept / done times equal to the
    engine's sequence_timing."""
    cfg = small_cfg(rows, cols)
    rng = random.Random(rows * 7 + cols)
    for trial in range(3):
        insns = []
        for _ in range(10):
            m_len = rng.choice([0, 1, 1, 2, 3, 5])
            k_len = rng.randrange(0, rows + 1)
            insns.append(make_insn(
                accumulate=rng.randrange(2), m_len=m_len, k_len=k_len,
                n_len=rng.randrange(0, cols + 1),
                ifmap_row=rng.randrange(0, cfg.ifmap_rows - m_len + 1),
                weight_row=rng.randrange(0, cfg.weight_rows - k_len + 1),
                psum_row=rng.randrange(0, 4)))
        insns[rng.randrange(10)]["k_len"] = rows + 1  # one error
        gaps = [0] * 10 if trial < 2 else None
        check(cfg, insns, rng, gaps=gaps, engine=engine)
