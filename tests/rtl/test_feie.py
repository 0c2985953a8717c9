# amaranth: UnusedElaboratable=no
"""The broadcast FEIE engine (FEIEArray, rtl/arrays/feie.py; issue 11): the seed's
tables (seed 003, the 2x8 input by a 1x3 filter) cycle by cycle, results against a direct
loop over the ISA's GEMM formula (rtl/isa.py, ``x - in_zp``), latency and ``zero_skips``
against the engine's executable timing (``row_trace``) at random sparsity, errors."""

import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.back import verilog

from celosia.rtl.arrays.engine import ComputeEngineSignature
from celosia.rtl.arrays.feie import FEIEArray, row_geometry, row_trace, sequence_timing
from celosia.rtl.config import AccelConfig
from engine_bench import run_program
from helpers import overlap_monitor


def cfg_of(rows, cols, ifmap_rows=128, ports=2, wports=2):
    return AccelConfig(rows=rows, cols=cols, dataflow="feie", ifmap_rows=ifmap_rows, weight_rows=64,
                       psum_rows=64, feie_read_ports=ports, feie_write_ports=wports)


def wrap32(v):
    return ((int(v) + (1 << 31)) % (1 << 32)) - (1 << 31)


def ref(psum, ifmap, weight, d):
    """Apply the GEMM ``d`` to ``psum`` in place, one MAC at a time, by the ISA text: output
    ``m = e*out_w + x`` sums ``(ifmap[src][c] - in_zp) * weight[weight_row + fw*k_len + c][n]``
    over the taps ``fw`` and channels ``c``; a plain GEMM reads row ``ifmap_row + m``."""
    outs = ([(e, x) for e in range(d["out_h"]) for x in range(d["out_w"])] if d.get("window")
            else [(m, 0) for m in range(d["m_len"])])
    for m, (e, x) in enumerate(outs):
        for n in range(d["n_len"]):
            acc = int(psum[d["psum_row"] + m, n]) if d["accumulate"] else 0
            for fw in range(d.get("win_w", 1) if d.get("window") else 1):
                if d.get("window"):
                    src = (d["ifmap_row"] + e * d["stride_h"] * d["row_pitch"] + x * d["stride_w"]
                           + fw * d["dil_w"])
                else:
                    src = d["ifmap_row"] + e
                for c in range(d["k_len"]):
                    acc += ((int(ifmap[src, c]) - d.get("in_zp", 0))
                            * int(weight[d["weight_row"] + fw * d["k_len"] + c, n]))
            psum[d["psum_row"] + m, n] = wrap32(acc)


def row_insn(out_h, out_w, win_w=1, stride_w=1, stride_h=1, row_pitch=None, k_len=1, n_len=1, **kw):
    pitch = row_pitch if row_pitch is not None else (out_w - 1) * stride_w + win_w
    d = dict(window=1, accumulate=0, ifmap_row=0, weight_row=0, psum_row=0, win_h=1, win_w=win_w,
             stride_h=stride_h, stride_w=stride_w, dil_h=1, dil_w=1, out_h=out_h, out_w=out_w,
             m_len=out_h * out_w, row_pitch=pitch, k_len=k_len, n_len=n_len, in_zp=0)
    d.update(kw)
    return d


def probe_monitor(log):
    """overlap_monitor plus, every cycle, the PE rows that multiply: ``log[cycle] = [(PE row,
    tap fw, input value)]`` (the engine's ``probe`` attribute, set when it is elaborated)."""
    def make(engine, events):
        base = overlap_monitor(engine, events)

        async def monitor(ctx):
            pr = engine.probe
            sigs = [s for r in range(len(pr.hit)) for s in (pr.hit[r], pr.fw[r], pr.x[r])]
            cycle = 0
            async for _, _, *vals in ctx.tick().sample(*sigs):
                hits = [(r, vals[3 * r + 1], vals[3 * r + 2]) for r in range(len(pr.hit)) if vals[3 * r]]
                if hits:
                    log[cycle] = hits
                cycle += 1
        return [base, monitor]
    return make


def run(cfg, insns, ifmap, weight, psum0, seed=0, log=None, gaps=None):
    psum, events, skips = run_program(cfg, ifmap, weight, psum0, insns, gaps or [0] * len(insns),
                                      FEIEArray, seed=seed,
                                      monitor=probe_monitor(log) if log is not None else overlap_monitor)
    return psum, events, skips


def check_timing(cfg, insns, ifmap, events, gaps=None):
    """Each GEMM's acceptance and ``done`` / ``error`` cycles are sequence_timing's (the
    engine takes the next GEMM while one runs); completions in order. Returns the
    (accept, end) pairs."""
    accepts = [t for k, t in events if k == "accept"]
    ends = [t for k, t in events if k != "accept"]
    got = list(zip(accepts, ends))
    want = sequence_timing(insns, cfg, gaps, ifmap)
    shift = got[0][0] - want[0][0]
    assert got == [(a + shift, e + shift) for a, e in want], (insns, gaps)
    return got


# -- seed 003: a 2x8 input, one channel, a 1x3 filter, one output channel ---------------------
# The seed's dense table (CC #1..#16, lines ~1077-1093): CC #i takes X_i; the output #o of
# row 1 (o = 1..6) takes X_o*W1, X_{o+1}*W2, X_{o+2}*W3, row 2 (#7..#12) likewise from X9.
# So in CC #i the outputs it reaches are those of its row with o <= i' <= o+2 (i' its column),
# with weight W_{i'-o+1}: written out below from that text.
SEED_DENSE = {
    1: {1: 1}, 2: {1: 2, 2: 1}, 3: {1: 3, 2: 2, 3: 1}, 4: {2: 3, 3: 2, 4: 1}, 5: {3: 3, 4: 2, 5: 1},
    6: {4: 3, 5: 2, 6: 1}, 7: {5: 3, 6: 2}, 8: {6: 3},
    9: {7: 1}, 10: {7: 2, 8: 1}, 11: {7: 3, 8: 2, 9: 1}, 12: {8: 3, 9: 2, 10: 1}, 13: {9: 3, 10: 2, 11: 1},
    14: {10: 3, 11: 2, 12: 1}, 15: {11: 3, 12: 2}, 16: {12: 3},
}
# The skipping tables (lines ~1139-1182): X6..X11 are 0; CC #1..#5 take X1..X5, CC #6..#10
# X12..X16 ("10 clock cycles only"); CC #6 is X12 -> #8 W3, #9 W2, #10 W1.
SEED_SPARSE_INPUTS = [1, 2, 3, 4, 5, 12, 13, 14, 15, 16]


def seed_case(sparse):
    cfg = cfg_of(3, 1)                      # --array 3x1: 3 PE rows (one group of 3), 1 column
    ifmap = np.zeros((cfg.ifmap_rows, 3), dtype=np.int64)
    ifmap[:16, 0] = np.arange(1, 17)        # X1..X16, one pixel (one buffer row) each
    if sparse:
        ifmap[5:11, 0] = 0                  # X6..X11
    weight = np.zeros((cfg.weight_rows, 1), dtype=np.int64)
    weight[:3, 0] = [2, -3, 5]              # W1, W2, W3: taps fw = 0, 1, 2
    insn = row_insn(2, 6, win_w=3, row_pitch=8)
    return cfg, ifmap, weight, insn


def seed_expect(sparse):
    """Per MAC cycle, in order: {output #: weight #} from the seed's tables."""
    inputs = SEED_SPARSE_INPUTS if sparse else list(range(1, 17))
    return [(i, SEED_DENSE[i]) for i in inputs]


@pytest.mark.parametrize("sparse", [False, True])
def test_seed_tables_model(sparse):
    """The timing model (row_trace) plays the seed's tables: one input per MAC cycle, in the
    seed's order; each output in one PE for all its taps, the 3 PEs in rotation along a row;
    16 MAC cycles dense, 10 with X6..X11 zero, 6 zero skips; dense MAC cycles back to back
    (the row change costs no cycle: the seed's "stalls" are idle PEs, not lost cycles)."""
    cfg, ifmap, weight, insn = seed_case(sparse)
    t = row_trace(insn, cfg, ifmap, log=True)
    want = seed_expect(sparse)
    assert t.mac_cycles == len(want) == (10 if sparse else 16)
    assert t.zero_skips == (6 if sparse else 0)
    got = [(addr + 1, {m + 1: fw + 1 for _, m, fw in hits}) for _, _, addr, _, hits in t.macs]
    assert got == want
    pe_of = {}
    for _, _, _, _, hits in t.macs:
        for j, mo, _ in hits:
            assert pe_of.setdefault(mo, j) == j
    assert pe_of == {o: o % 6 % 3 for o in range(12) if o in pe_of}
    cyc = [c for c, *_ in t.macs]
    if not sparse:
        assert cyc == list(range(cyc[0], cyc[0] + 16))
    # every output is written once, in order
    assert [mo for _, _, mo in t.writes] == list(range(12))


@pytest.mark.parametrize("sparse", [False, True])
def test_seed_tables_engine(sparse):
    """The same through the engine in the Amaranth simulator: in each MAC cycle the PE rows
    that multiply, their taps and the input they take are the seed's; results exact;
    latency and zero_skips those of the model."""
    cfg, ifmap, weight, insn = seed_case(sparse)
    log = {}
    psum0 = np.zeros((cfg.psum_rows, 1), dtype=np.int64)
    psum, events, skips = run(cfg, [insn], ifmap, weight, psum0, log=log)
    expect = psum0.copy()
    ref(expect, ifmap, weight, insn)
    np.testing.assert_array_equal(psum, expect)
    t = row_trace(insn, cfg, ifmap, log=True)
    (_, acc), (_, done) = events
    assert done - acc == t.cycles
    assert skips == t.zero_skips == (6 if sparse else 0)
    want = seed_expect(sparse)
    cycles = sorted(log)
    assert len(cycles) == len(want)
    for c, (xi, outs) in zip(cycles, want):
        got = sorted(log[c])
        # PE row j holds outputs o with (o-1) % 6 % 3 == j (the rotation within a row);
        # all take X_xi
        assert got == sorted(((o - 1) % 6 % 3, w - 1, xi) for o, w in outs.items()), c
    assert [acc + c for c, *_ in t.macs] == cycles


@pytest.mark.parametrize("sparse", [False, True])
def test_seed_back_to_back(sparse):
    """Three of the seed's GEMMs back to back, each accumulating onto the psum rows the one
    before wrote: the engine takes the next while one runs, as soon as the running one's
    W = 3 weight rows have landed (cycle W + 3 = 6 after its acceptance); the next one's
    groups start the cycle its predecessor ends (the cycle before its ``done``), its weights
    already in the other bank. Alone a GEMM takes n = 22 cycles (16 or 10 MAC cycles from
    cycle 4, the last write granted in cycle 20, ``done`` 2 later); back to back each ends n
    - 2 = 20 cycles after the one before (its groups start in its cycle 2 - 2 = 0 relative
    to the one before's ``done``): accepted 0, 6, 22, done 22, 42, 62, and the MACs of
    GEMM j are the single GEMM's shifted by 20*j. Results exact."""
    cfg, ifmap, weight, insn = seed_case(sparse)
    insn = dict(insn, accumulate=1)
    log = {}
    psum0 = np.arange(cfg.psum_rows, dtype=np.int64).reshape(-1, 1) * 7
    psum, events, skips = run(cfg, [insn] * 3, ifmap, weight, psum0, log=log)
    expect = psum0.copy()
    for _ in range(3):
        ref(expect, ifmap, weight, insn)
    np.testing.assert_array_equal(psum, expect)
    got = check_timing(cfg, [insn] * 3, ifmap, events)
    a0 = got[0][0]
    assert [(a - a0, e - a0) for a, e in got] == [(0, 22), (6, 42), (22, 62)]
    single = [c for c, *_ in row_trace(insn, cfg, ifmap, log=True).macs]   # (the seed test's)
    assert sorted(c - a0 for c in log) == [c + 20 * j for j in range(3) for c in single]
    assert skips == 3 * (6 if sparse else 0)


def random_gemm(rng, cfg, density, zp):
    rows = cfg.rows
    if rng.random() < 0.25:      # plain GEMM
        m_len = rng.randrange(1, 9)
        d = dict(window=0, accumulate=rng.randrange(2), ifmap_row=rng.randrange(0, 8), weight_row=rng.randrange(4),
                 psum_row=rng.randrange(0, 8), m_len=m_len, k_len=rng.randrange(1, rows + 1),
                 n_len=rng.randrange(1, cfg.cols + 1), in_zp=zp)
        return d
    win_w = rng.choice([1, 2, 3])
    stride_w = rng.randrange(1, win_w + 1) if win_w > 1 else rng.choice([1, 2])
    while 1 + (win_w > 1 and stride_w <= win_w - 1) + (win_w > 1 and 2 * stride_w <= win_w - 1) > rows:
        stride_w += 1
    out_w, out_h = rng.randrange(1, 6), rng.randrange(1, 5)
    pitch = (out_w - 1) * stride_w + win_w + rng.randrange(2)
    return row_insn(out_h, out_w, win_w=win_w, stride_w=stride_w, stride_h=rng.choice([1, 2]),
                    row_pitch=pitch, k_len=rng.randrange(1, rows + 1), n_len=rng.randrange(1, cfg.cols + 1),
                    accumulate=rng.randrange(2), ifmap_row=rng.randrange(0, 4), weight_row=rng.randrange(4),
                    psum_row=rng.randrange(0, 8), in_zp=zp)


@pytest.mark.parametrize("rows,cols,seed,ports,wports", [(3, 2, 1, 2, 2), (2, 3, 3, 2, 2), (6, 1, 5, 2, 2),
                                                         (6, 1, 5, 1, 2), (4, 2, 9, 1, 1), (6, 2, 7, 2, 1)])
def test_random_sparsity(rows, cols, seed, ports, wports):
    """Random plain / windowed GEMMs (1..3 taps, strides, padding in the row pitch,
    accumulate, zero points) at 0 .. 90% zeros, with one or two ifmap read ports and one or
    two psum write ports: exact results, latency and zero_skips as row_trace computes them
    from the data, the groups' reads and writes arbitrated."""
    cfg = cfg_of(rows, cols, ports=ports, wports=wports)
    rng = random.Random(seed)
    for density in (1.0, 0.5, 0.1, 0.0):
        zp = rng.choice([0, -128, 23])
        ifmap = np.array([[rng.randrange(-128, 128) if rng.random() < density else zp
                           for _ in range(rows)] for _ in range(cfg.ifmap_rows)])
        weight = np.array([[rng.randrange(-128, 128) for _ in range(cols)] for _ in range(cfg.weight_rows)])
        psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cols)]
                          for _ in range(cfg.psum_rows)])
        insns = [random_gemm(rng, cfg, density, zp) for _ in range(3)]
        psum, events, skips = run(cfg, insns, ifmap, weight, psum0, seed=seed)
        expect = psum0.copy()
        for d in insns:
            ref(expect, ifmap, weight, d)
        np.testing.assert_array_equal(psum, expect)
        traces = [row_trace(d, cfg, ifmap) for d in insns]
        assert [k for k, _ in events if k != "accept"] == ["done"] * len(insns)
        check_timing(cfg, insns, ifmap, events)
        assert skips == sum(t.zero_skips for t in traces)


@pytest.mark.parametrize("rows,win_w,ports", [(3, 3, 2), (6, 3, 2), (6, 3, 1), (4, 2, 2)])
def test_double_writes(rows, win_w, ports):
    """Sparse rows with zero padding columns (a 3x3 conv's kernel row at 70% zeros): outputs
    complete in bunches, and a group whose next two outputs are complete writes both in one
    cycle when no other group takes the second psum write port (including the task's last
    output). The model does so here (counted from its writes), and the engine matches it:
    exact results, accept / done cycles sequence_timing's, zero_skips row_trace's."""
    cfg = cfg_of(rows, 2, ifmap_rows=256, ports=ports, wports=2)
    rng = np.random.default_rng(rows * 10 + win_w)
    zp = -128
    ifmap = rng.integers(-127, 128, (cfg.ifmap_rows, rows))
    ifmap[rng.random(ifmap.shape) < 0.7] = zp
    ifmap[:252].reshape(-1, 9, rows)[:, [0, 8]] = zp    # rows of 9 pixels, padding at both ends
    weight = rng.integers(-128, 128, (cfg.weight_rows, 2))
    psum0 = rng.integers(-(1 << 31), 1 << 31, (cfg.psum_rows, 2))
    insns = [row_insn(4, 9 - win_w + 1, win_w=win_w, row_pitch=9, k_len=rows, n_len=2, accumulate=a,
                      ifmap_row=36 * i, in_zp=zp)
             for i, a in enumerate([0, 1, 1, 0])]
    doubles = 0
    for d in insns:
        writes = [(c, g) for c, g, _ in row_trace(d, cfg, ifmap, log=True).writes]
        doubles += len(writes) - len(set(writes))
    assert doubles >= 4
    psum, events, skips = run(cfg, insns, ifmap, weight, psum0)
    expect = psum0.copy()
    for d in insns:
        ref(expect, ifmap, weight, d)
    np.testing.assert_array_equal(psum, expect)
    check_timing(cfg, insns, ifmap, events)
    assert skips == sum(row_trace(d, cfg, ifmap).zero_skips for d in insns)


@pytest.mark.parametrize("rows,cols,ports,wports", [(1, 1, 2, 2), (4, 3, 2, 2), (4, 3, 1, 1), (6, 2, 2, 1)])
def test_random_back_to_back(rows, cols, ports, wports):
    """Random GEMMs issued back to back and after gaps (the engine takes the next one while
    one runs, sequence_timing): psum hazards between accumulating GEMMs on the same rows,
    k_len = 0, n_len = 0, m_len = 0, errors (waiting behind a running GEMM too), all-zero
    inputs, and zero points mixed in; bit-exact, accept / end cycles sequence_timing's."""
    cfg = cfg_of(rows, cols, ifmap_rows=32, ports=ports, wports=wports)
    rng = random.Random(rows * 7 + cols)
    zp = -5
    ifmap = np.array([[rng.choice([zp, zp, rng.randrange(-128, 128)]) for _ in range(rows)]
                      for _ in range(32)])
    ifmap[:4] = zp
    weight = np.array([[rng.randrange(-128, 128) for _ in range(cols)] for _ in range(64)])
    psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cols)] for _ in range(64)])
    insns = []
    for _ in range(10):
        m_len = rng.choice([0, 1, 2, 3, 5])
        k_len = rng.randrange(0, rows + 2)      # rows + 1: an error
        insns.append(dict(window=0, accumulate=rng.randrange(2), m_len=m_len, k_len=k_len,
                          n_len=rng.randrange(0, cols + 1), ifmap_row=rng.randrange(0, 32 - m_len + 1),
                          weight_row=rng.randrange(0, 8), psum_row=rng.randrange(0, 4), in_zp=zp))
    insns.append(dict(row_insn(2, 3, win_w=min(rows, 3), k_len=rows, n_len=cols, accumulate=1), in_zp=zp))
    gaps = [rng.choice([0, 0, 2]) for _ in insns]
    psum, events, skips = run_program(cfg, ifmap, weight, psum0, insns, gaps, FEIEArray, seed=3,
                                      monitor=overlap_monitor)
    expect = psum0.copy()
    kinds = []
    for d in insns:
        t = row_trace(d, cfg, ifmap)
        ok = t.cycles > 1 or d["m_len"] == 0 or d["n_len"] == 0
        ok = ok and d["k_len"] <= rows
        kinds.append("done" if ok else "error")
        if ok and d["m_len"] and d["n_len"]:
            ref(expect, ifmap, weight, d)
    np.testing.assert_array_equal(psum, expect)
    assert [k for k, _ in events if k != "accept"] == kinds
    got = check_timing(cfg, insns, ifmap, events, gaps)
    assert any(a < e for (_, e), (a, _) in zip(got, got[1:]))     # some overlap


def test_errors_and_empty():
    """Illegal GEMMs (two kernel rows, four taps, dilation with taps other than dil_w =
    stride_w, a pixel past the
    buffer) are errors after one cycle and write nothing; m_len = 0 is done after one."""
    cfg = cfg_of(3, 2, ifmap_rows=32)
    rng = random.Random(7)
    ifmap = np.array([[rng.randrange(-128, 128) for _ in range(3)] for _ in range(32)])
    weight = np.array([[rng.randrange(-128, 128) for _ in range(2)] for _ in range(64)])
    psum0 = np.array([[rng.randrange(-1000, 1000) for _ in range(2)] for _ in range(64)])
    bad = [row_insn(2, 3, win_w=3, win_h=2), row_insn(2, 3, win_w=4), row_insn(2, 3, win_w=2, dil_w=2),
           row_insn(2, 3, win_w=2, stride_w=3), row_insn(4, 8, win_w=3, row_pitch=10),
           row_insn(1, 2, win_w=2, stride_w=3, dil_w=2, row_pitch=6),       # dil_w != stride_w
           row_insn(1, 2, win_w=2, stride_w=2, dil_w=3, row_pitch=6),
           dict(row_insn(1, 1), m_len=0, out_h=1, out_w=1, window=0)]
    psum, events, _ = run(cfg, bad, ifmap, weight, psum0)
    np.testing.assert_array_equal(psum, psum0)
    assert [k for k, _ in events[1::2]] == ["error"] * 7 + ["done"]
    assert all(e - a == 1 for (_, a), (_, e) in zip(events[0::2], events[1::2]))
    assert all(row_trace(d, cfg, ifmap).cycles == 1 for d in bad)


def test_windowed_errors_taken_while_one_runs():
    """Windowed GEMMs whose legality depends on the check's products (the last pixel past
    the buffer by one row, ``m_len != out_h*out_w``, the weight rows ``win_w*k_len``), taken
    while a legal one runs (the next GEMM's registered check, copied when it moves to the
    running register; an illegal next one is checked again from there) and back to back:
    bit-exact, kinds from the ISA's rule (row_trace), accept / end cycles sequence_timing's."""
    cfg = dataclasses.replace(cfg_of(3, 2, ifmap_rows=32), weight_rows=16)
    rng = random.Random(11)
    ifmap = np.array([[rng.randrange(-128, 128) for _ in range(3)] for _ in range(32)])
    weight = np.array([[rng.randrange(-128, 128) for _ in range(2)] for _ in range(16)])
    psum0 = np.array([[rng.randrange(-1000, 1000) for _ in range(2)] for _ in range(64)])
    legal = row_insn(3, 4, win_w=3, row_pitch=10, k_len=3, n_len=2, ifmap_row=1)   # last row 26
    insns = [legal,
             dict(legal, out_h=4, m_len=12),          # m_len = the running one's out_h*out_w: error
             dict(legal, psum_row=24),
             row_insn(3, 4, win_w=3, row_pitch=10, k_len=3, n_len=2, ifmap_row=7),  # last 32: error
             dict(legal, psum_row=12),
             dict(legal, m_len=11),                                                 # error
             dict(legal, weight_row=7, psum_row=20),                                # 7 + 9 = 16
             dict(legal, weight_row=8, psum_row=20),                                # 8 + 9 > 16: error
             dict(legal, ifmap_row=6, accumulate=1)]                                # last row 31
    psum, events, _ = run(cfg, insns, ifmap, weight, psum0)
    expect = psum0.copy()
    kinds = []
    for d in insns:
        ok = row_trace(d, cfg, ifmap).cycles > 1
        kinds.append("done" if ok else "error")
        if ok:
            ref(expect, ifmap, weight, d)
    assert kinds.count("error") == 4
    np.testing.assert_array_equal(psum, expect)
    assert [k for k, _ in events if k != "accept"] == kinds
    check_timing(cfg, insns, ifmap, events, [0] * len(insns))


def test_geometry():
    """Groups and PEs per group: a 3-tap row at stride 1 reaches 3 outputs per pixel (the
    seed's 3 PEs), at stride 2 two, at stride 3 one; 2 taps at stride 1 two."""
    def geo(**kw):
        d = row_insn(2, 4, **kw)
        return row_geometry(SimpleNamespace(**d), 8)
    assert (geo(win_w=3).P, geo(win_w=3).G, geo(win_w=3).Wp) == (3, 2, 6)
    assert (geo(win_w=3, stride_w=2).P, geo(win_w=3, stride_w=2).Wp) == (2, 9)
    assert geo(win_w=3, stride_w=3).P == 1
    assert geo(win_w=2).P == 2
    assert (geo(win_w=1, stride_w=2).P, geo(win_w=1, stride_w=2).pstep, geo(win_w=1).G) == (1, 2, 8)
    # phase sets (dil_w = stride_w = d): output x over pixels (x + fw)*d, a pixel step of 1
    # in units of d buffer rows: the geometry of stride 1
    ph = geo(win_w=2, stride_w=2, dil_w=2)
    assert (ph.S, ph.s, ph.pstep, ph.P, ph.G, ph.Wp) == (2, 1, 2, 2, 4, 5)
    ph = geo(win_w=3, stride_w=3, dil_w=3)
    assert (ph.S, ph.s, ph.pstep, ph.P, ph.G, ph.Wp) == (3, 1, 3, 3, 2, 6)


def phase_insn(out_h, out_w, win_w, d, row_pitch=None, **kw):
    """A phase set: ``win_w`` taps ``d`` pixels apart at stride ``d`` (dil_w = stride_w = d)."""
    pitch = row_pitch if row_pitch is not None else ((out_w - 1) + (win_w - 1)) * d + 1
    return row_insn(out_h, out_w, win_w=win_w, stride_w=d, dil_w=d, row_pitch=pitch, **kw)


@pytest.mark.parametrize("rows,win_w,d,k_len", [(2, 2, 2, 2), (3, 3, 2, 3), (3, 2, 3, 1)])
def test_phase_set_dense(rows, win_w, d, k_len):
    """A phase set on one group (P = win_w outputs per pixel, G = 1), dense: the group walks
    each output row's ``out_w + win_w - 1`` pixels (every ``d``-th buffer row), one input per
    cycle from cycle 4 (no pixel walked twice for one output, unlike a run at stride ``d``),
    the last output's write granted the cycle after its last MAC and ``done`` two after that:
    ``out_h * (out_w + win_w - 1) * k_len + 6`` cycles (the seed's 16 pixels: 22). Engine and
    row_trace agree on it; results exact, psum rows accumulated onto."""
    cfg = cfg_of(rows, 2)
    rng = random.Random(rows * 10 + d)
    out_h, out_w = 2, 4
    insn = phase_insn(out_h, out_w, win_w, d, k_len=k_len, n_len=2, ifmap_row=1, accumulate=1, in_zp=7)
    assert row_geometry(SimpleNamespace(**insn), rows).G == 1
    ifmap = np.array([[rng.choice([v for v in range(-128, 128) if v != 7]) for _ in range(rows)]
                      for _ in range(cfg.ifmap_rows)])
    weight = np.array([[rng.randrange(-128, 128) for _ in range(2)] for _ in range(cfg.weight_rows)])
    psum0 = np.array([[rng.randrange(-1000, 1000) for _ in range(2)] for _ in range(cfg.psum_rows)])
    want = out_h * (out_w + win_w - 1) * k_len + 6
    t = row_trace(insn, cfg, ifmap, log=True)
    assert t.cycles == want
    assert [c for c, *_ in t.macs] == list(range(4, 4 + out_h * (out_w + win_w - 1) * k_len))
    # every MAC: the pixel (x + fw)*d of its row for each output x it reaches
    for _, _, addr, _, hits in t.macs:
        for _, mo, fw in hits:
            e, x = divmod(mo, out_w)
            assert addr == 1 + e * insn["row_pitch"] + (x + fw) * d
    psum, events, skips = run(cfg, [insn], ifmap, weight, psum0)
    expect = psum0.copy()
    ref(expect, ifmap, weight, insn)
    np.testing.assert_array_equal(psum, expect)
    (_, acc), (_, done) = events
    assert done - acc == want
    assert skips == 0


@pytest.mark.parametrize("rows,cols,seed", [(4, 2, 1), (8, 1, 2)])
def test_phase_sets_random(rows, cols, seed):
    """Random phase sets (2..3 taps, d = 2..3, several groups, padding in the row pitch,
    stride_h 1..2) mixed with runs and one-tap GEMMs at 0 .. 70% zeros, back to back:
    bit-exact, accept / end cycles and zero_skips row_trace's (sequence_timing)."""
    cfg = cfg_of(rows, cols)
    rng = random.Random(seed)
    zp = -9
    for density in (1.0, 0.6, 0.3):
        ifmap = np.array([[rng.randrange(-128, 128) if rng.random() < density else zp
                           for _ in range(rows)] for _ in range(cfg.ifmap_rows)])
        weight = np.array([[rng.randrange(-128, 128) for _ in range(cols)] for _ in range(cfg.weight_rows)])
        psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cols)]
                          for _ in range(cfg.psum_rows)])
        insns = []
        for _ in range(3):
            win_w, d = rng.choice([2, 3] if rows >= 3 else [2]), rng.choice([2, 3])
            out_w, out_h = rng.randrange(1, 6), rng.randrange(1, 4)
            pitch = ((out_w - 1) + (win_w - 1)) * d + 1 + rng.randrange(3)
            insns.append(phase_insn(out_h, out_w, win_w, d, row_pitch=pitch, stride_h=rng.choice([1, 2]),
                                    k_len=rng.randrange(1, rows + 1), n_len=rng.randrange(1, cols + 1),
                                    accumulate=rng.randrange(2), ifmap_row=rng.randrange(0, 4),
                                    weight_row=rng.randrange(4), psum_row=rng.randrange(0, 8), in_zp=zp))
        insns.insert(1, random_gemm(rng, cfg, density, zp))
        psum, events, skips = run(cfg, insns, ifmap, weight, psum0, seed=seed)
        expect = psum0.copy()
        for d in insns:
            ref(expect, ifmap, weight, d)
        np.testing.assert_array_equal(psum, expect)
        assert [k for k, _ in events if k != "accept"] == ["done"] * len(insns)
        check_timing(cfg, insns, ifmap, events)
        assert skips == sum(row_trace(d, cfg, ifmap).zero_skips for d in insns)


def test_signature_and_verilog():
    """The second ifmap read port (``ifmap1``) is in the signature with feie_read_ports = 2
    only, the second psum write port and its accumulate read (``psum_wr1``, ``psum_rd1``)
    with feie_write_ports = 2 only, and neither on the other dataflows (whatever the feie
    fields say)."""
    cfg = cfg_of(3, 2)
    second = {"ifmap1", "psum_wr1", "psum_rd1"}
    assert FEIEArray(cfg).signature == ComputeEngineSignature(cfg)
    assert second <= set(ComputeEngineSignature(cfg).members)
    assert second & set(ComputeEngineSignature(cfg_of(3, 2, ports=1)).members) == {"psum_wr1", "psum_rd1"}
    assert second & set(ComputeEngineSignature(cfg_of(3, 2, wports=1)).members) == {"ifmap1"}
    for df in ("ws", "os", "rs"):
        assert not second & set(ComputeEngineSignature(dataclasses.replace(cfg, dataflow=df)).members)
    for ports, wports in ((2, 2), (1, 1)):
        assert "module" in verilog.convert(FEIEArray(cfg_of(4, 2, ports=ports, wports=wports)))


# -- each group a contiguous range of outputs (group_plan) -----------------------------------

#: test_ranges_hand_worked's reads, MACs and writes and its cycles, per (ifmap read ports,
#: psum write ports): ``(reads (cycle, port, buffer row)), MACs (cycle, group), writes
#: (cycle, group, output m), cycles``
HAND_WORKED = {
    # one port: reads 2 (g0 p0), 3 (g1 p2), 4 (g0 p1), 5 (g1 p3); MACs g0 4, 5 (p0), 6, 7
    # (p1), g1 5, 6 (p2), 7, 8 (p3); grants 6 (m 0), 7 (m 2), 8 (m 1: group 0's second
    # output waits for its pixel 1), 9 (m 3)
    (1, 1): ([(2, 0, 0), (3, 0, 2), (4, 0, 1), (5, 0, 3)],
             [(4, 0), (5, 0), (5, 1), (6, 0), (6, 1), (7, 0), (7, 1), (8, 1)],
             [(6, 0, 0), (7, 1, 2), (8, 0, 1), (9, 1, 3)], 11),
    # two ports: both groups read in cycle 2 (port 0 g0 p0, port 1 g1 p2: the next requester
    # after group 0) and 3 (p1, p3: the pointer is back at group 0); MACs g0 4, 5 (p0), g1
    # 4, 5 (p2); group 0 is granted the write of m 0 in 6 and takes p1 in 6, 7; group 1
    # waits for its write of m 2 (granted in 7: group 0 had it in 6) to take p3, in 7, 8;
    # grants 6 (m 0), 7 (m 2), 8 (m 1), 9 (m 3): the write port binds, done 11 again
    (2, 1): ([(2, 0, 0), (2, 1, 2), (3, 0, 1), (3, 1, 3)],
             [(4, 0), (4, 1), (5, 0), (5, 1), (6, 0), (7, 0), (7, 1), (8, 1)],
             [(6, 0, 0), (7, 1, 2), (8, 0, 1), (9, 1, 3)], 11),
    # two of each: the reads and the MACs of cycles 4, 5 as with two read ports; in 6 both
    # outputs 0 and 2 are complete: port 0 grants group 0 (the pointer's), port 1 group 1,
    # so both groups take their second pixel in 6, 7 and both last outputs are granted in
    # 8 (the pointer back at group 0): done 8 + 2 = 10
    (2, 2): ([(2, 0, 0), (2, 1, 2), (3, 0, 1), (3, 1, 3)],
             [(4, 0), (4, 1), (5, 0), (5, 1), (6, 0), (6, 1), (7, 0), (7, 1)],
             [(6, 0, 0), (6, 1, 2), (8, 0, 1), (8, 1, 3)], 10),
}
# one read port, two write ports: the reads as with one of each; group 0's output 0 is
# complete in 6 (p0 retired in 5), group 1's output 2 in 7 (p2, landed in 4, takes 5, 6),
# never two in one cycle: the same grants, done 11 (the read port binds)
HAND_WORKED[1, 2] = HAND_WORKED[1, 1]


def read_monitor(log):
    """overlap_monitor plus, every cycle, the ifmap reads issued: ``log`` gets ``(cycle,
    port, buffer row)`` (port 1: the engine's ``ifmap1``, where it has one)."""
    def make(engine, events):
        ports = [engine.ifmap] + ([engine.ifmap1] if hasattr(engine, "ifmap1") else [])

        async def monitor(ctx):
            cycle = 0
            async for _, _, *vals in ctx.tick().sample(*[x for p in ports for x in (p.en, p.addr)]):
                log.extend((cycle, pi, vals[2 * pi + 1]) for pi in range(len(ports)) if vals[2 * pi])
                cycle += 1
        return [overlap_monitor(engine, events), monitor]
    return make


@pytest.mark.parametrize("ports,wports", list(HAND_WORKED))
def test_ranges_hand_worked(ports, wports):
    """One output row of 4 one-tap outputs (k_len 2) on 2 PE rows (P 1, G 2): Q = 2 outputs
    per group, group 0 takes outputs 0, 1 (pixels 0, 1), group 1 outputs 2, 3 (pixels 2, 3).
    Worked by hand from FEIEArray's text (HAND_WORKED): W 2 (weight rows read 2, 3, usable
    from 4, 5); with one ifmap read port the groups' reads alternate, with two both groups
    read in one cycle; done 11 with one port of either kind (it binds), 10 with two of each
    (both groups' outputs written in one cycle). Whole rows to
    groups would put all 8 MACs on group 0 (4 .. 11, done 14). The model (row_trace) and
    the engine in the Amaranth simulator (its read ports' ``en`` / ``addr``) both."""
    cfg = AccelConfig(rows=2, cols=1, dataflow="feie", ifmap_rows=32, feie_read_ports=ports,
                      feie_write_ports=wports)
    ifmap = np.zeros((32, 2), dtype=np.int64)
    ifmap[:4] = [[1, 2], [3, 4], [5, 6], [7, 8]]
    insn = row_insn(1, 4, k_len=2)
    geo = row_geometry(SimpleNamespace(**insn), 2)
    assert (geo.Q, [p.pieces for p in geo.groups]) == (2, [[(0, 0, 2)], [(0, 2, 2)]])
    reads, macs, writes, cycles = HAND_WORKED[ports, wports]
    t = row_trace(insn, cfg, ifmap, log=True)
    assert t.cycles == cycles
    assert [(c, gi) for c, gi, *_ in t.macs] == macs
    assert t.writes == writes
    # the model's reads in grant order (port 0's first in a cycle): group g reads pixels
    # 2g, 2g + 1
    assert [(c, a) for c, _, a in t.reads] == [(c, a) for c, _, a in reads]
    assert all(a // 2 == gi for _, gi, a in t.reads)
    log = []
    weight = np.zeros((cfg.weight_rows, 1), dtype=np.int64)
    weight[:2, 0] = [3, -2]
    psum0 = np.zeros((cfg.psum_rows, 1), dtype=np.int64)
    psum, events, _ = run_program(cfg, ifmap, weight, psum0, [insn], [0], FEIEArray, monitor=read_monitor(log))
    expect = psum0.copy()
    ref(expect, ifmap, weight, insn)
    np.testing.assert_array_equal(psum, expect)
    (_, acc), (_, done) = events
    assert done - acc == cycles
    assert [(c - acc, p, a) for c, p, a in log] == reads


#: GEMMs on 8 PE rows and each group's tasks (output row, first output, outputs), worked
#: out from group_plan's rule: Q = T // G rows + ceil((T % G) * out_w / G) outputs per group
R8_CASES = [
    # 3 taps at stride 2 (P 2, G 4), 2 rows of 7: Q = ceil(14/4) = 4
    (row_insn(2, 7, win_w=3, stride_w=2, k_len=3, n_len=2),
     [[(0, 0, 4)], [(0, 4, 3), (1, 0, 1)], [(1, 1, 4)], [(1, 5, 2)]]),
    # 3 taps at stride 1 (P 3, G 2), 1 row of 9: Q = 5
    (row_insn(1, 9, win_w=3, k_len=8, n_len=2, accumulate=1), [[(0, 0, 5)], [(0, 5, 4)]]),
    # one tap at stride 2 (P 1, G 8), 3 rows of 5: Q = ceil(15/8) = 2
    (row_insn(3, 5, stride_w=2, row_pitch=10, k_len=5, n_len=1),
     [[(0, 0, 2)], [(0, 2, 2)], [(0, 4, 1), (1, 0, 1)], [(1, 1, 2)], [(1, 3, 2)], [(2, 0, 2)], [(2, 2, 2)],
      [(2, 4, 1)]]),
    # 3 taps at stride 1 (G 2), 5 rows of 3: Q = 2 rows + ceil(3/2) = 8
    (row_insn(5, 3, win_w=3, k_len=4, n_len=2),
     [[(0, 0, 3), (1, 0, 3), (2, 0, 2)], [(2, 2, 1), (3, 0, 3), (4, 0, 3)]]),
    # a plain GEMM of 5 rows (G 8): one each, 3 groups idle
    (dict(window=0, accumulate=0, ifmap_row=0, weight_row=0, psum_row=0, m_len=5, k_len=8, n_len=2),
     [[(e, 0, 1)] for e in range(5)] + [[]] * 3),
]


@pytest.mark.parametrize("ports", [1, 2])
def test_ranges_engine(ports):
    """Those GEMMs through the engine (the Amaranth simulator), dense (ifmap rows 0..31)
    and at 40% zeros (rows 32..63), with one or two ifmap read ports: bit-exact, latency
    and zero_skips row_trace's; each group writes exactly its outputs."""
    cfg = cfg_of(8, 2, ifmap_rows=64, ports=ports)
    rng = random.Random(11)
    zp = -3
    ifmap = np.array([[rng.choice([v for v in range(-128, 128) if v != zp]) if r < 32 or rng.random() < 0.6
                       else zp for _ in range(8)] for r in range(64)])
    insns = []
    for base in (0, 32):
        for insn, pieces in R8_CASES:
            d = dict(insn, ifmap_row=base, in_zp=zp)
            geo = row_geometry(SimpleNamespace(**d), 8)
            assert [p.pieces for p in geo.groups] == pieces
            t = row_trace(d, cfg, ifmap, log=True)
            assert sorted(m for _, _, m in t.writes) == list(range(d["m_len"]))
            assert all(m // geo.Q == gi for _, gi, m in t.writes)
            insns.append(d)
    weight = np.array([[rng.randrange(-128, 128) for _ in range(2)] for _ in range(cfg.weight_rows)])
    psum0 = np.array([[rng.randrange(-1000, 1000) for _ in range(2)] for _ in range(cfg.psum_rows)])
    psum, events, skips = run(cfg, insns, ifmap, weight, psum0)
    expect = psum0.copy()
    for d in insns:
        ref(expect, ifmap, weight, d)
    np.testing.assert_array_equal(psum, expect)
    traces = [row_trace(d, cfg, ifmap) for d in insns]
    check_timing(cfg, insns, ifmap, events)
    assert skips == sum(t.zero_skips for t in traces) > 0
