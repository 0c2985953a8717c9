"""The dataflow registry (rtl/dataflows.py): names, traits, engines, and each engine's
executable timing ``cycles(insn, config, ifmap=None)`` against values worked out by hand
from the formulas in the engines' docstrings."""

import subprocess
import sys

import numpy as np
import pytest

from celosia.rtl import config as config_mod
from celosia.rtl.arrays import make_engine
from celosia.rtl.arrays import os
from celosia.rtl.arrays.feie import FEIEArray
from celosia.rtl.arrays.os import OSArray
from celosia.rtl.arrays.rs import RSArray
from celosia.rtl.arrays.ws import WSArray, sequence_cycles, sequence_timing
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import DATAFLOWS, REGISTRY, dataflow

# -- the registry --------------------------------------------------------------


def test_names_and_order():
    assert DATAFLOWS == ("ws", "os", "rs", "feie")
    assert config_mod.DATAFLOWS is DATAFLOWS
    assert [df.name for df in REGISTRY.values()] == list(REGISTRY)


def test_traits():
    traits = {name: (df.gemm_window, df.zero_point_in_gemm, df.macs_count_taps)
              for name, df in REGISTRY.items()}
    assert traits == {"ws": ("tap", False, False), "os": ("tap", False, False),
                      "rs": ("full", False, True), "feie": ("row", True, True)}


def test_engines_and_timing_live_in_one_file_each():
    engines = {"ws": WSArray, "os": OSArray, "rs": RSArray, "feie": FEIEArray}
    for name, cls in engines.items():
        df = dataflow(name)
        assert df.engine is cls
        assert make_engine(AccelConfig(dataflow=name)) is cls
        assert df.timing_ref == f"{cls.__module__}:cycles"
        assert cls.__module__ == f"celosia.rtl.arrays.{name}"


def test_lowering_families():
    # the modules are another part's; only the references are checked here
    assert {name: df.lowering_ref for name, df in REGISTRY.items()} == {
        "ws": "celosia.sw.compiler.lower_gemm", "os": "celosia.sw.compiler.lower_gemm",
        "rs": "celosia.sw.compiler.lower_rs", "feie": "celosia.sw.compiler.lower_gemm"}


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown dataflow 'xs'; known: ws, os, rs, feie"):
        dataflow("xs")
    with pytest.raises(config_mod.ConfigError, match="ws, os, rs, feie"):
        AccelConfig(dataflow="xs")


def test_registry_is_a_leaf_module():
    """rtl/config.py imports it: it must import nothing of ours at module level."""
    code = ("import sys, celosia.rtl.dataflows; "
            "print(sorted(m for m in sys.modules if m.startswith('celosia')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert eval(out.stdout) == ["celosia", "celosia.rtl", "celosia.rtl.dataflows"]


# -- cycles(): hand-worked values of the docstring formulas -------------------------

CFG4 = AccelConfig(rows=4, cols=4)                  # ifmap 1024, weight 256, psum 512 rows


def dataflow_cfg(name):
    return AccelConfig(rows=4, cols=4, dataflow=name)


@pytest.mark.parametrize("insn, want", [
    # k_len + m_len + 5
    (dict(m_len=3, k_len=4, n_len=4), 12),          # 4 + 3 + 5
    (dict(m_len=10, k_len=2, n_len=1), 17),         # 2 + 10 + 5
    (dict(m_len=1, k_len=0, n_len=4), 6),           # 0 + 1 + 5
    (dict(m_len=0, k_len=4, n_len=4), 1),           # nothing to do: done in CHECK
    (dict(m_len=3, k_len=5, n_len=4), 1),           # k_len > rows: error in CHECK
    (dict(m_len=3, k_len=4, n_len=4, in_zp=3), 1),  # only feie takes a zero point
    (dict(m_len=3, k_len=4, n_len=4, window=1), 1),  # windowed without its fields: error
    # a windowed GEMM of one tap, 2x3 outputs: the window address generator adds no cycle,
    # 4 + 6 + 5
    (dict(m_len=6, k_len=4, n_len=4, window=1, win_h=1, win_w=1, stride_h=2, stride_w=3, dil_h=1,
          dil_w=1, out_h=2, out_w=3, row_pitch=9), 15),
    # a 3x3 window is for rs only: error in CHECK
    (dict(m_len=1, k_len=4, n_len=4, window=1, win_h=3, win_w=3, stride_h=1, stride_w=1, dil_h=1,
          dil_w=1, out_h=1, out_w=1, row_pitch=3), 1),
])
def test_ws_cycles(insn, want):
    assert dataflow("ws").cycles(insn, CFG4) == want
    assert sequence_cycles([insn], CFG4) == want  # one GEMM issued to an idle engine


def g(**fields):
    return dict(dict(m_len=1, k_len=4, n_len=4), **fields)


@pytest.mark.parametrize("insns, want", [
    # K-tiling, two GEMMs accumulating into psum rows 0..7 (k_len 4, m_len 8).
    # G0: accepted 0, rows read 0+2+4=6 .. 13, done 13+4 = 17; the loader is free at its
    # take (6): G1 accepted 6, loaded 6+2+4 = 12, streams from 14 (after G0's last
    # read) to 21 (each psum row last read 8 cycles before), done 25. Serial: 2*17 + 1.
    ([g(m_len=8), g(m_len=8, accumulate=1)], [(0, 17), (6, 25)]),
    # Short GEMMs (m_len 2) with k_len 4: the preload (2 + k_len = 6) is the bottleneck.
    # G0: reads 6, 7, done 11. G1: a=6, reads 12, 13, done 17. G2: a=12, reads 18, 19, done 23.
    ([g(m_len=2), g(m_len=2, psum_row=2), g(m_len=2, psum_row=4)],
     [(0, 11), (6, 17), (12, 23)]),
    # Same psum row, accumulate, k_len 0, m_len 1: a read waits 3 cycles after the last
    # read of its row. G0: a=0, read 2, done 6. G1: a=2, loaded 4, row 0 read in 2 ->
    # read 5, done 9. G2: a=5, loaded 7, row 0 read in 5 -> read 8, done 12.
    ([g(k_len=0, accumulate=1)] * 3, [(0, 6), (2, 9), (5, 12)]),
    # m_len = 0 and errors complete in order, once the streamer is empty: G0 reads 6, 7,
    # done 11; the empty one (a=6) ends in max(6+1, 11+1) = 12, the loader is free in 13;
    # the illegal one (k_len 5 > rows) is accepted 13, error 14; G3: a=15, read
    # 15+2+4 = 21, done 25.
    ([g(m_len=2), g(m_len=0), g(k_len=5), g()], [(0, 11), (6, 12), (13, 14), (15, 25)]),
])
def test_ws_sequence_timing(insns, want):
    assert sequence_timing(insns, CFG4) == want
    assert sequence_cycles(insns, CFG4) == want[-1][1]


@pytest.mark.parametrize("insn, want", [
    # 3 + sum over epochs e = 0 .. nb+1 of max(1, fill rows of block e, k_len if block e-1
    # exists, drain rows of block e-2); blocks of mb = min(rows, rows left), nb = ceil(m_len / 4)
    # mb 4,4,2: 4 | max(4,3) | max(2,3,4) | max(3,4) | 2 = 18; +3
    (dict(m_len=10, k_len=3, n_len=4), 21),
    (dict(m_len=4, k_len=4, n_len=2), 15),          # mb 4: 4 | 4 | 4 = 12; +3
    (dict(m_len=12, k_len=4, n_len=4), 23),         # mb 4,4,4: five epochs of 4 = 20; +3
    (dict(m_len=5, k_len=1, n_len=1), 13),          # mb 4,1: 4 | max(1,1) | max(1,4) | 1 = 10; +3
    (dict(m_len=3, k_len=2, n_len=4), 11),          # mb 3: 3 | 2 | 3 = 8; +3
    (dict(m_len=1, k_len=0, n_len=1), 6),           # mb 1: 1 | max(1, 0) | 1 = 3; +3
    (dict(m_len=0, k_len=4, n_len=4), 1),
    (dict(m_len=4, k_len=4, n_len=5), 1),           # n_len > cols
    # one tap, 3x2 outputs (m_len 6, mb 4,2): the same epochs as a plain GEMM of 6 rows,
    # 4 | max(2,3) | max(3,4) | 2 = 13; +3
    (dict(m_len=6, k_len=3, n_len=4, window=1, win_h=1, win_w=1, stride_h=1, stride_w=2,
          dil_h=1, dil_w=1, out_h=3, out_w=2, row_pitch=5), 16),
])
def test_os_cycles(insn, want):
    assert dataflow("os").cycles(insn, dataflow_cfg("os")) == want


# OS back to back (valid held, instruction i offered the cycle after i-1's acceptance):
# (config, insns, [(accept, end)], end of the last without the overlap). The rules of the
# OSArray docstring: accepted in a = max(offer, the cycle after the previous one left the
# next-instruction register, the end of the one 4 before + 1); a GEMM leaves the register
# at the first epoch boundary b >= a+1 where FILL has no earlier block left (an epoch's
# last cycle; any cycle when no block is in the pipeline), its epochs run from b+1; an
# epoch starting in s lasts max(1, fill mb, k_len, drain mb) and a GEMM whose last block
# (mb rows) drains in it ends in s + mb + 1. Small buffers: these also run on the RTL
# (tests/rtl/test_ws.py).
OS_CFG = AccelConfig(rows=4, cols=4, dataflow="os", ifmap_rows=16, weight_rows=8, psum_rows=24)
OS_SEQUENCES = [
    # Tap chain, three GEMMs of m_len 6 (blocks of 4, 2), k_len 4, into psum rows 0..5.
    # G0: a=0, b=1; epochs [2..5] F G0.0; [6..9] F G0.1, M G0.0. G1: a=2, b=9.
    # [10..13] F G1.0, M G0.1, D G0.0; [14..17] F G1.1, M G1.0, D G0.1 -> G0 ends 14+2+1=17.
    # G2: a=10, b=17. [18..21] F G2.0, M G1.1, D G1.0; [22..25] F G2.1, M G2.0, D G1.1 ->
    # G1 ends 25; [26..29] M G2.1, D G2.0; [30, 31] D G2.1 -> G2 ends 33.
    # (G1 reads psum row 0 in 18; G0 wrote it in 11.) Without the overlap: 3*17 + 2 = 53.
    (OS_CFG, [g(m_len=6, accumulate=a, ifmap_row=i, weight_row=w) for a, i, w in
              [(0, 0, 0), (1, 3, 4), (1, 6, 0)]], [(0, 17), (2, 25), (10, 33)], 53),
    # m_len 1 <= rows, k_len 1, all accumulating into psum row 0: 1-cycle epochs.
    # G0: a=0, b=1; [2] F G0; G1: a=2 > 2-1, not taken; [3] M G0; b=3: G1 taken.
    # [4] F G1, D G0 -> G0 ends 4+1+1=6; G2: a=4 > 4-1; [5] M G1; b=5: G2 taken;
    # [6] F G2, D G1 -> 8; [7] M G2; [8] D G2 -> 10. Without: 3*6 + 2 = 20.
    (OS_CFG, [g(m_len=1, k_len=1, accumulate=a, ifmap_row=i) for a, i in [(0, 0), (1, 1), (1, 2)]],
     [(0, 6), (2, 8), (4, 10)], 20),
    # G1 accumulates onto psum rows 1, 2, G0 wrote rows 0, 1 (m_len 2, k_len 2).
    # G0: a=0, b=1; [2, 3] F G0; G1: a=2, b=3. [4, 5] F G1, M G0; [6, 7] M G1, D G0 ->
    # G0 ends 6+2+1=9 (row 1 drained in 7, written in 8); [8, 9] D G1 reads row 1 in 8 (the
    # write of the same cycle: the read port is transparent) -> 8+2+1=11. Without: 2*9 + 1.
    (OS_CFG, [g(m_len=2, k_len=2), g(m_len=2, k_len=2, psum_row=1, accumulate=1, ifmap_row=2)],
     [(0, 9), (2, 11)], 19),
    # Tap chain of five one-block GEMMs (m_len 4, k_len 4) into psum rows 0..3: the 4 in
    # flight hold G4 back. G0: a=0, b=1; [2..5] F G0; G1: a=2, b=5; [6..9] F G1, M G0;
    # G2: a=6, b=9; [10..13] F G2, M G1, D G0 -> G0 ends 10+4+1=15; G3: a=10, b=13;
    # G4: a=max(11, 14, 15+1)=16; [14..17] F G3, M G2, D G1 -> 19; b=17: G4 taken;
    # [18..21] F G4, M G3, D G2 -> 23; [22..25] M G4, D G3 -> 27; [26..29] D G4 -> 31.
    # Without: 5*15 + 4 = 79.
    (OS_CFG, [g(m_len=4, accumulate=int(i > 0), ifmap_row=i) for i in range(5)],
     [(0, 15), (2, 19), (6, 23), (10, 27), (16, 31)], 79),
    # An error (k_len 5 > rows) and an m_len = 0 GEMM wait for everything before them.
    # G0 (m_len 6): a=0, b=1; [2..5] F G0.0; [6..9] F G0.1, M G0.0 (G1 is illegal: FILL
    # takes nothing); [10..13] M G0.1, D G0.0; [14, 15] D G0.1 -> G0 ends 17.
    # G1: a=2, error in max(2+1, 17+1)=18. G2: a=19, done in max(20, 19)=20. G3 (m_len 2,
    # k_len 1): a=21, b=22, epochs [23, 24] F, [25] M, [26, 27] D -> 26+2+1=29.
    # Without: 17, then accepted 18 -> 19, 20 -> 21, 22 -> 22+8=30.
    (OS_CFG, [g(m_len=6), g(k_len=5), g(m_len=0), g(m_len=2, k_len=1, psum_row=8)],
     [(0, 17), (2, 18), (19, 20), (21, 29)], 30),
]


@pytest.mark.parametrize("case", range(len(OS_SEQUENCES)))
def test_os_sequence_timing(case):
    cfg, insns, want, _ = OS_SEQUENCES[case]
    assert os.sequence_timing(insns, cfg) == want
    assert os.sequence_cycles(insns, cfg) == want[-1][1]


@pytest.mark.parametrize("insn", [g(m_len=10, k_len=3), g(m_len=4), g(m_len=1, k_len=0), g(m_len=0),
                                  g(n_len=5), g(m_len=7, k_len=2, psum_row=3)])
def test_os_sequence_of_one_is_cycles(insn):
    """A GEMM issued to an idle engine: the sequence timing gives the cycles() latency."""
    cfg = dataflow_cfg("os")
    assert os.sequence_timing([insn], cfg, gaps=[5]) == [(5, 5 + os.cycles(insn, cfg))]


FEIE_CFG = AccelConfig(rows=2, cols=4, dataflow="feie", ifmap_rows=32)


@pytest.mark.parametrize("rows, insn, want", [
    # The broadcast FEIE engine (rtl/arrays/feie.py), worked by hand from its docstring:
    # weight row i (of W = taps * k_len) read in cycle 2+i, usable from 4+i, and an input
    # multiplied once the weight rows it takes are usable; a pixel read in cycle c lands in
    # c+1 (a zero one is dropped), multiplied from c+2; an output is granted the write port
    # the cycle after its last pixel is done; done = max(last grant + 2, W + 4).
    ([[1, 2]], dict(m_len=1, k_len=2, n_len=4),
     8),   # W 2: read 2, lands 3; MACs 4 (k=0: row 0), 5 (k=1: row 1); grant 6; done 8
    ([[0, 0]], dict(m_len=1, k_len=2, n_len=4),
     6),   # all zero: lands 3, dropped; grant 4; done max(6, 2+4) = 6
    ([[-128, 4]], dict(m_len=1, k_len=2, n_len=4, in_zp=-128),
     8),   # zero point -128: one MAC (k=1: row 1, usable from 5) at 5; grant 6; done 8
    ([[-128, 4]], dict(m_len=1, k_len=2, n_len=4, in_zp=0x80),
     8),   # the same zero point as the field's byte
    ([[3, 0], [5, 0]], dict(m_len=2, k_len=1, n_len=4),
     7),   # two groups (P 1, G 2), W 1: reads 2 (g0 on read port 0, g1 on port 1); MACs 4
           # (g0, g1); grants 5 (g0 on write port 0, g1 on port 1); done 7 (with one write
           # port: grants 5, 6, done 8)
    ([[1, 2]], dict(m_len=0, k_len=2, n_len=4), 1),
    ([[1, 2]], dict(m_len=1, k_len=3, n_len=4), 1),            # k_len > rows: error
    ([[1, 2]], dict(m_len=1, k_len=2, n_len=4, window=1), 1),  # windowed without its fields: error
])
def test_feie_cycles(rows, insn, want):
    ifmap = np.zeros((FEIE_CFG.ifmap_rows, FEIE_CFG.rows), dtype=np.int64)
    ifmap[:len(rows)] = rows
    assert dataflow("feie").cycles(insn, FEIE_CFG, ifmap) == want


@pytest.mark.parametrize("sparse", [False, True])
def test_feie_cycles_seed_example(sparse):
    """Seed 003's 2x8 input by a 1x3 filter on 3 PE rows (one group of 3), 1 column: W 3
    (weight row fw usable from 4+fw), the 16 inputs read one per cycle from cycle 2, MACs
    4 .. 19 (dense: 16 back to back; pixel p takes taps up to min(p, 2), usable by then),
    the last output's grant 20, done 22. With X6..X11 zero the MACs are 10 but the 16
    pixels still cross the one read port (a 1-channel pixel per buffer row): done 22 too."""
    cfg = AccelConfig(rows=3, cols=1, dataflow="feie", ifmap_rows=32)
    ifmap = np.zeros((32, 3), dtype=np.int64)
    ifmap[:16, 0] = range(1, 17)
    if sparse:
        ifmap[5:11, 0] = 0
    insn = dict(window=1, win_h=1, win_w=3, stride_h=1, stride_w=1, dil_h=1, dil_w=1, out_h=2, out_w=6,
                m_len=12, row_pitch=8, k_len=1, n_len=1)
    assert dataflow("feie").cycles(insn, cfg, ifmap) == 22


def test_feie_cycles_needs_the_data():
    with pytest.raises(ValueError, match="ifmap"):
        dataflow("feie").cycles(dict(m_len=1, k_len=1, n_len=1), FEIE_CFG)


def window(**kw):
    d = dict(window=1, win_h=1, win_w=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, out_h=1,
             out_w=1, k_len=1, n_len=1)
    d.update(kw)
    d.setdefault("m_len", d["out_h"] * d["out_w"])
    return d


@pytest.mark.parametrize("insn, want", [
    # rows = cols = 4. G = ceil(n_len / S) passes, S = rows // win_h, W = win_h*win_w*k_len
    # weight rows, lines = out_h if win_h = 1 (only the lines j*stride_h are filled), else
    # (out_h-1)*stride_h + (win_h-1)*dil_h + 1; a step D = max(k_len, lines + 1), a pass
    # B = lines + (out_w*win_w - 1)*D + k_len (the WRITE of a column runs alongside the next
    # column's MACs). Pass 0 starts at s0 = max(1, W - win_w*k_len + 3 - lines): its pixels
    # and filter rows load together from cycle 2, its MACs (from s0 + lines + 1) once the
    # loader is on its last filter row; pass 1 at max(s0 + B, 2W + 1) (its filter rows load
    # after pass 0's), pass g >= 2 max(W, B) after pass g-1. done = s_last + B + out_h + 2.
    (window(k_len=2, n_len=4), 8),
    # S = 4, G = 1, W = 2, lines = 1, D = 2, B = 1 + 0 + 2 = 3, s0 = max(1, 0 + 3 - 1) = 2;
    # 2 + 3 + 1 + 2
    (window(k_len=4, n_len=4, out_h=2, out_w=3, row_pitch=3), 19),
    # S = 4, G = 1, W = 4, lines = 2, D = max(4, 3) = 4: a column's MACs start the cycle after
    # the last MAC of the one before, its WRITE alongside; B = 2 + 2*4 + 4 = 14,
    # s0 = max(1, 0 + 3 - 2) = 1; 1 + 14 + 2 + 2
    (window(k_len=4, n_len=4, out_h=4, out_w=2, stride_h=2, row_pitch=2), 20),
    # one filter row: lines = out_h = 4 (not 3*2 + 1 = 7); S = 4, G = 1, W = 4, D = max(4, 5)
    # = 5, B = 4 + 1*5 + 4 = 13, s0 = max(1, 0 + 3 - 4) = 1; 1 + 13 + 4 + 2
    (window(win_h=3, win_w=3, k_len=2, n_len=3, out_h=2, out_w=2, row_pitch=4), 108),
    # S = 1, G = 3, W = 18, lines = 1 + 2 + 1 = 4, D = max(2, 5) = 5, B = 4 + 5*5 + 2 = 31,
    # s0 = max(1, 12 + 3 - 4) = 11, s1 = max(11 + 31, 37) = 42, s2 = 42 + 31 = 73;
    # 73 + 31 + 2 + 2
    (window(win_h=2, win_w=2, k_len=4, n_len=4, out_h=3, out_w=2, row_pitch=3), 61),
    # S = 2, G = 2, W = 16, lines = 2 + 1 + 1 = 4, D = max(4, 5) = 5, B = 4 + 3*5 + 4 = 23,
    # s0 = max(1, 8 + 3 - 4) = 7, s1 = max(7 + 23, 33) = 33 (pass 1 waits for its filter
    # rows); 33 + 23 + 3 + 2
    (window(win_h=3, win_w=3, k_len=4, n_len=2, out_h=1, out_w=1), 91),
    # S = 1, G = 2, W = 36, lines = 0 + 2 + 1 = 3, D = max(4, 4) = 4, B = 3 + 2*4 + 4 = 15,
    # s0 = max(1, 24 + 3 - 3) = 24, s1 = max(24 + 15, 73) = 73; 73 + 15 + 1 + 2
    (window(win_h=2, win_w=2, k_len=2, n_len=4, out_h=2, out_w=2, row_pitch=3), 42),
    # S = 2, G = 2, W = 8, lines = 1 + 1 + 1 = 3, D = max(2, 4) = 4, B = 3 + 3*4 + 2 = 17,
    # s0 = max(1, 4 + 3 - 3) = 4, s1 = max(4 + 17, 17) = 21; 21 + 17 + 2 + 2
    (window(win_h=2, k_len=4, n_len=2, out_h=3, out_w=1, stride_h=2, row_pitch=1), 16),
    # S = 2, G = 1, W = 8, lines = 2*2 + 1 + 1 = 6, D = max(4, 7) = 7, B = 6 + 0 + 4 = 10,
    # s0 = max(1, 4 + 3 - 6) = 1; 1 + 10 + 3 + 2
    (window(k_len=2, n_len=0), 1),                  # n_len = 0: done in CHECK
    (window(k_len=2, n_len=4, m_len=2), 1),         # m_len != out_h * out_w: error
    (dict(m_len=2, k_len=2, n_len=2), 1),           # a plain GEMM on rs: error
])
def test_rs_cycles(insn, want):
    assert dataflow("rs").cycles(insn, dataflow_cfg("rs")) == want
