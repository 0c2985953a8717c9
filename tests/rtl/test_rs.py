# amaranth: UnusedElaboratable=no
"""The row-stationary engine (RSArray) on windowed GEMMs, through real LaneBuffers:
results against a direct loop over the ISA's formula (rtl/isa.py, GemmInsn), latency
against the registry's executable timing (``dataflow("rs").cycles``, the formula in
rtl/arrays/rs.py), errors for illegal instructions."""

import random

import numpy as np
import pytest
from amaranth.back import verilog

from celosia.rtl.arrays.engine import ComputeEngineSignature
from celosia.rtl.arrays.rs import RSArray, gemm_cycles, sequence_timing
from celosia.rtl.config import RS_SPAD, AccelConfig
from celosia.rtl.dataflows import dataflow
from engine_bench import run_program
from gemm_ref import ref_window, wrap32
from helpers import overlap_monitor


GEMM_CYCLES_ARGS = ("win_h", "win_w", "k_len", "n_len", "out_h", "out_w", "stride_h", "dil_h")


def window(accumulate=0, ifmap_row=0, weight_row=0, psum_row=0, k_len=1, n_len=1, win_h=1, win_w=1,
           stride_h=1, stride_w=1, dil_h=1, dil_w=1, out_h=1, out_w=1, row_pitch=None, bad=False):
    d = dict(window=1, accumulate=accumulate, ifmap_row=ifmap_row, weight_row=weight_row,
             psum_row=psum_row, k_len=k_len, n_len=n_len, win_h=win_h, win_w=win_w,
             stride_h=stride_h, stride_w=stride_w, dil_h=dil_h, dil_w=dil_w, out_h=out_h,
             out_w=out_w, m_len=out_h * out_w,
             row_pitch=row_pitch if row_pitch is not None else (out_w - 1) * stride_w + (win_w - 1) * dil_w + 1)
    if bad:
        d["bad"] = True
    return d


def rs_cfg(rows, cols, ifmap_rows=256, weight_rows=None, psum_rows=64):
    return AccelConfig(rows=rows, cols=cols, dataflow="rs", ifmap_rows=ifmap_rows,
                       weight_rows=weight_rows or 256, psum_rows=psum_rows)


def check(cfg, insns, rng, gaps=None):
    ifmap = np.array([[rng.randrange(-128, 128) for _ in range(cfg.rows)] for _ in range(cfg.ifmap_rows)])
    weight = np.array([[rng.randrange(-128, 128) for _ in range(cfg.cols)] for _ in range(cfg.weight_rows)])
    psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cfg.cols)]
                      for _ in range(cfg.psum_rows)])
    if gaps is None:
        gaps = [rng.choice([0, 0, 2]) for _ in insns]
    bench = [{k: v for k, v in d.items() if k != "bad"} for d in insns]
    psum, events, skips = run_program(cfg, ifmap, weight, psum0, bench, gaps, RSArray, seed=rng.random(),
                                      monitor=overlap_monitor)
    expect = np.array(psum0, dtype=np.int64)
    for d in insns:
        if not d.get("bad"):
            ref_window(expect, ifmap, weight, d)
    np.testing.assert_array_equal(psum, expect)
    assert skips == 0
    accepts = [c for k, c in events if k == "accept"]
    ends = [(k, c) for k, c in events if k != "accept"]
    assert [k for k, _ in ends] == ["error" if d.get("bad") else "done" for d in insns]
    # the sequence timing (the module docstring's "Consecutive GEMMs"), cycle for cycle
    seq = sequence_timing(bench, cfg, gaps)
    t0 = accepts[0] - seq[0][0]   # (the bench's cycles count from its memory writes)
    assert [(a - t0, e - t0) for a, (_, e) in zip(accepts, ends)] == seq
    timing = dataflow("rs")
    prev_end = -1
    for d, t_acc, (_, t_done) in zip(insns, accepts, ends):
        fields = {k: v for k, v in d.items() if k != "bad"}
        if t_acc > prev_end:   # taken by an idle engine: the one-GEMM latency
            assert t_done - t_acc == timing.cycles(fields, cfg), d
            if d.get("bad"):  # the timing knows an illegal instruction takes one cycle
                assert timing.cycles(fields, cfg) == 1
            else:  # the compiler's cost model is the same timing
                assert t_done - t_acc == gemm_cycles(cfg.rows, **{f: d[f] for f in GEMM_CYCLES_ARGS})
        prev_end = t_done
    return [e for pair in zip([("accept", a) for a in accepts], ends) for e in pair]


def test_signature_and_verilog():
    cfg = rs_cfg(3, 5)
    assert RSArray(cfg).signature == ComputeEngineSignature(cfg)
    assert "module" in verilog.convert(RSArray(AccelConfig(rows=4, cols=8, dataflow="rs")))


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (3, 5), (4, 4), (8, 8)])
def test_convolution_windows(rows, cols):
    """3x3 / 1x3 / 2x1 windows, strides, dilation, set folding (win_h < rows: several
    channel sets; n_len > sets: several passes, the next one's filter rows loading during
    the current one, or after it when it is the shorter), partial output rows / channels,
    accumulate onto an earlier result."""
    cfg = rs_cfg(rows, cols)
    rng = random.Random(rows * 10 + cols)
    wh = min(3, rows)
    oh = min(cols, 3)
    insns = [
        window(k_len=rows, n_len=cols, win_h=wh, win_w=3, out_h=oh, out_w=4),
        window(accumulate=1, ifmap_row=5, weight_row=1, k_len=max(rows - 1, 1), n_len=cols, win_h=wh,
               win_w=3, out_h=oh, out_w=4),
        window(psum_row=20, ifmap_row=3, k_len=1, n_len=max(cols - 1, 1), win_h=1, win_w=3, stride_w=2,
               out_h=min(cols, 2), stride_h=2, out_w=3, row_pitch=9),
        window(psum_row=30, ifmap_row=2, k_len=rows, n_len=cols, win_h=min(2, rows), win_w=1,
               dil_h=2, dil_w=3, out_h=cols, out_w=2, row_pitch=7),
        window(psum_row=40, ifmap_row=1, k_len=rows, n_len=0, win_h=1, out_h=1, out_w=3),
        # one output pixel, several passes: a pass is shorter than its filter rows' load
        # (win_h*win_w*k_len), so the next pass waits for the loader (NEXTW)
        window(psum_row=50, ifmap_row=4, weight_row=2, k_len=rows, n_len=cols, win_h=wh, win_w=3,
               out_h=1, out_w=1, row_pitch=2),
    ]
    for _ in range(3):
        win_h = rng.randrange(1, rows + 1)
        win_w = rng.randrange(1, 4)
        k_len = rng.randrange(1, rows + 1)
        out_h, out_w = rng.randrange(1, cols + 1), rng.randrange(1, 4)
        sh, sw, dh, dw = (rng.randrange(1, 3) for _ in range(4))
        if (out_h - 1) * sh + (win_h - 1) * dh + 1 > cfg.rs_lines:
            sh = dh = 1
        insns.append(window(accumulate=rng.randrange(2), ifmap_row=rng.randrange(0, 20),
                            weight_row=rng.randrange(0, 8), psum_row=rng.randrange(0, 64 - out_h * out_w),
                            k_len=k_len, n_len=rng.randrange(1, cols + 1), win_h=win_h, win_w=win_w,
                            stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, out_h=out_h, out_w=out_w,
                            row_pitch=rng.randrange(1, 10)))
    check(cfg, insns, rng)


def test_minus_128_and_wrap():
    """All -128 products accumulate onto values near the int32 limits: wraps like int32."""
    cfg = rs_cfg(4, 4, psum_rows=16)
    ifmap = np.full((cfg.ifmap_rows, 4), -128)
    weight = np.full((cfg.weight_rows, 4), -128)
    psum0 = np.full((cfg.psum_rows, 4), (1 << 31) - 1)
    d = window(accumulate=1, k_len=4, n_len=4, win_h=2, win_w=3, out_h=2, out_w=3)
    psum, events, _ = run_program(cfg, ifmap, weight, psum0, [d], [0], RSArray, monitor=overlap_monitor)
    expect = np.array(psum0, dtype=np.int64)
    ref_window(expect, ifmap, weight, d)
    np.testing.assert_array_equal(psum, expect)
    assert expect[0, 0] == wrap32((1 << 31) - 1 + 24 * 128 * 128)


def test_illegal_windows_are_errors_and_write_nothing():
    cfg = rs_cfg(3, 4, ifmap_rows=256, weight_rows=256, psum_rows=16)
    rng = random.Random(9)
    good = dict(k_len=3, n_len=4, win_h=3, win_w=3, out_h=2, out_w=2)
    bad = [
        dict(good, win_h=4),                      # win_h > rows
        dict(good, out_h=5, out_w=1),             # out_h > cols
        dict(good, k_len=4),                      # k_len > rows
        dict(good, n_len=5),                      # n_len > cols
        dict(good, k_len=0),                      # windowed GEMMs need k_len >= 1
        dict(good, win_w=0),
        dict(good, stride_h=0),
        dict(good, dil_w=0),
        dict(good, out_w=0),                      # m_len = 0: not a window
        dict(good, weight_row=256 - 26),          # 27 weight rows from 230 > 256
        dict(good, ifmap_row=256 - 4),            # last ifmap row past the end
        dict(good, psum_row=13),                  # psum_row + m_len > psum_rows
        dict(good, stride_h=9, dil_h=5, out_h=2, row_pitch=1),  # 9 + 10 + 1 = 20 > rs_lines = 14
        dict(good, win_h=1, win_w=RS_SPAD // 3 + 1, out_w=1, row_pitch=1),  # win_w * k_len > spad
    ]
    insns = [window(bad=True, **b) for b in bad]
    wrong_m = window(bad=True, **good)
    wrong_m["m_len"] = 3                          # m_len != out_h * out_w
    plain = window(bad=True, **good)
    plain["window"] = 0                           # a plain GEMM on the rs array
    insns += [wrong_m, plain, window(psum_row=4, **good)]
    check(cfg, insns, rng, gaps=[rng.randrange(3) for _ in insns])


def test_back_to_back_valid_held():
    cfg = rs_cfg(2, 3)
    rng = random.Random(2)
    insns = [window(accumulate=a, psum_row=p, k_len=2, n_len=3, win_h=2, win_w=2, out_h=2, out_w=2)
             for a, p in [(0, 0), (1, 0), (0, 8)]]
    events = check(cfg, insns, rng, gaps=[0] * len(insns))
    # Worked by hand from the module docstring: S = 1 set, G = 3 passes, lines = 3, D = 4,
    # W = 8, B = 3 + 3*4 + 2 = 17; s0 = max(1, 8 - 4 + 3 - 3) = 4, s1 = max(21, 17) = 21,
    # s2 = 21 + 17 = 38: last MAC cycle 55, done 59, the last pass (and the window for the
    # next GEMM) from 39. The next GEMM is taken in 39 < 54 (its last step's first cycle)
    # with k_len + 1 >= out_h: it starts as if accepted in 54 with its first step filled
    # from 54 (first = 54 - 54 = 0 <= 4): done 54 + 59 = 113, window from 54 + 39 = 93; the
    # third likewise: taken in 93, done 108 + 59 = 167 (one at a time: 59, 119, 179).
    t0 = events[0][1]
    assert [c - t0 for _, c in events] == [0, 59, 39, 113, 93, 167]


def test_write_overlaps_next_column():
    """The WRITE of a column runs alongside the next column's MACs (and, after a pass's last
    column, the next pass's FILL): k_len >= lines + 1 makes a column's first MAC issue the
    cycle its predecessor's last MAC lands; several passes with out_h = cols and
    accumulate; one filter row with stride 2 (compact lines); the hand-worked latencies of
    tests/rtl/test_dataflows.py on the RTL."""
    cfg = rs_cfg(4, 4)
    rng = random.Random(11)
    insns = [
        window(k_len=4, n_len=4, out_h=2, out_w=3, row_pitch=3),
        window(accumulate=1, k_len=4, n_len=4, out_h=2, out_w=5, win_w=1),
        window(accumulate=1, psum_row=10, k_len=4, n_len=4, win_h=2, win_w=2, out_h=4, out_w=3),
        window(psum_row=30, k_len=4, n_len=4, win_h=2, win_w=2, out_h=3, out_w=2, row_pitch=3),
        window(accumulate=1, psum_row=40, k_len=2, n_len=4, win_h=2, win_w=2, out_h=2, out_w=2),
        # one filter row, stride 2: only the lines 0, 2, 4, 6 are filled
        window(accumulate=1, psum_row=50, ifmap_row=3, k_len=4, n_len=4, out_h=4, out_w=2,
               stride_h=2, stride_w=2, row_pitch=5),
    ]
    check(cfg, insns, rng, gaps=[0] * len(insns))   # back to back: the sequence timing
    # one at a time (each offered after the one before is done)
    events = check(cfg, insns, random.Random(12), gaps=[0] + [150] * (len(insns) - 1))
    assert events[1][1] - events[0][1] == 19      # hand-worked in test_dataflows.py
    assert events[7][1] - events[6][1] == 61
    assert events[11][1] - events[10][1] == 20
