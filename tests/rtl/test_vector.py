# amaranth: UnusedElaboratable=no
"""VectorEngine against a NumPy reference of the VecInsn semantics, through real LaneBuffers."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from celosia.rtl import isa
from celosia.rtl.buffers import BufferWriteSignature, LaneBuffer
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import VecMode
from celosia.rtl.vector import VectorEngine, vec_cycles
from celosia.sim.golden.requant import multiply_by_quantized_multiplier
from helpers import (engine_monitor, issue_and_drain, pack, psum_write_mux, read_rows, simulate, unpack,
                     write_rows)


class Harness(Elaboratable):
    """VectorEngine + ifmap / psum LaneBuffers. The bench writes ifmap through the
    buffer's own write port, psum through ``tb_psum_w`` (muxed with the engine's
    writes) and reads psum back through ``psum.r0``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.vec = VectorEngine(cfg)
        self.ifmap = LaneBuffer(cfg.rows, 8, cfg.ifmap_rows)
        self.psum = LaneBuffer(cfg.cols, 32, cfg.psum_rows)
        self.tb_psum_w = BufferWriteSignature(cfg.psum_rows, cfg.cols, 32).create(path=("tb_psum_w",))

    def elaborate(self, platform):
        m = Module()
        m.submodules.vec = self.vec
        m.submodules.ifmap = self.ifmap
        m.submodules.psum = self.psum
        wiring.connect(m, engine=self.vec.ifmap, buffer=self.ifmap.r0)
        psum_write_mux(m, self.psum.w, self.tb_psum_w, self.vec.psum_wr)
        return m


# -- reference (from the VecInsn comment in rtl/isa.py) ------------------------

def wrap32(v):
    return ((np.asarray(v, dtype=np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def insn_ok(cfg, d):
    return (d["lanes"] <= min(cfg.rows, cfg.cols)
            and d["ifmap_row"] + d["m_len"] * d["win"] <= cfg.ifmap_rows
            and d["psum_row"] + d["m_len"] <= cfg.psum_rows
            and d["mode"] in (VecMode.MAX, VecMode.SUM, VecMode.ADD)
            and (d["mode"] != VecMode.ADD or d["win"] >= 2))


def ref_vec(cfg, psum, ifmap, d):
    """Apply one VEC to ``psum`` (int64) in place, element by element; False on error."""
    if not insn_ok(cfg, d):
        return False
    if d["win"] == 0:  # as m_len = 0: nothing written (the ISA simulator agrees)
        return True
    for m in range(d["m_len"]):
        for lane in range(d["lanes"]):
            xs = [int(ifmap[d["ifmap_row"] + m * d["win"] + j][lane]) for j in range(d["win"])]
            if d["mode"] == VecMode.MAX:
                out = max(xs) - d["in_zp"]
            elif d["mode"] == VecMode.SUM:
                out = sum(x - d["in_zp"] for x in xs)
            else:
                ls = d["left_shift"]
                a = multiply_by_quantized_multiplier(wrap32((xs[0] - d["in_zp"]) << ls), d["a_m0"], d["a_shift"])
                b = multiply_by_quantized_multiplier(wrap32((xs[1] - d["b_zp"]) << ls), d["b_m0"], d["b_shift"])
                out = int(a) + int(b)
            psum[d["psum_row"] + m][lane] = wrap32(out)
    return True


def latency(cfg, d):
    """The engine's own timing function is the expected latency (one formula, rtl/vector.py)."""
    return vec_cycles(d, cfg)


def make_insn(mode=VecMode.SUM, ifmap_row=0, psum_row=0, m_len=1, win=1, lanes=1, in_zp=0,
              b_zp=0, left_shift=0, a_m0=1 << 30, a_shift=0, b_m0=1 << 30, b_shift=0):
    return dict(mode=mode, ifmap_row=ifmap_row, psum_row=psum_row, m_len=m_len, win=win,
                lanes=lanes, in_zp=in_zp, b_zp=b_zp, left_shift=left_shift, a_m0=a_m0,
                a_shift=a_shift, b_m0=b_m0, b_shift=b_shift)


def raw_insn(d):
    """The 256-bit encoding of ``d`` (``mode`` may be the undefined value 3)."""
    mode = d["mode"].value if isinstance(d["mode"], VecMode) else d["mode"]
    word = isa.encode(isa.Opcode.VEC, **{**d, "mode": 0})  # a_m0 / b_m0: int32, as the PPU's M0
    return word | mode << isa.VecInsn["mode"].offset


# -- bench ---------------------------------------------------------------------

def run_program(cfg, ifmap, psum0, insns, gaps, seed=0):
    dut = Harness(cfg)
    vec = dut.vec
    rng = random.Random(seed)
    events = []
    result = {}

    monitor = engine_monitor(vec, events)

    async def tb(ctx):
        await write_rows(ctx, dut.ifmap.w, [pack(row, 8) for row in ifmap])
        await write_rows(ctx, dut.tb_psum_w, [pack(row, 32) for row in psum0])
        await issue_and_drain(
            ctx, vec, insns, gaps, events, max_cycles=20000,
            offer=lambda ctx, insn: ctx.set(vec.insn.payload.as_value(),
                                            raw_insn(insn) & ((1 << isa.VecInsn.size) - 1)),
            junk=lambda ctx: ctx.set(vec.insn.payload, isa.VecInsn.const(
                {"op": isa.Opcode.VEC, "m_len": rng.getrandbits(16), "win": rng.getrandbits(16),
                 "lanes": 0xFF, "mode": rng.randrange(3)})))
        rows = await read_rows(ctx, dut.psum.r0, cfg.psum_rows)
        result["psum"] = np.array([unpack(v, cfg.cols, 32) for v in rows], dtype=np.int64)

    simulate(dut, tb, background=[monitor])
    return result["psum"], events


def check(cfg, insns, rng, gaps=None, ifmap=None, psum0=None):
    if ifmap is None:
        ifmap = np.array([[rng.randrange(-128, 128) for _ in range(cfg.rows)]
                          for _ in range(cfg.ifmap_rows)])
    if psum0 is None:
        psum0 = np.array([[rng.randrange(-(1 << 31), 1 << 31) for _ in range(cfg.cols)]
                          for _ in range(cfg.psum_rows)])
    if gaps is None:
        gaps = [rng.choice([0, 0, 1, 3]) for _ in insns]
    psum, events = run_program(cfg, ifmap, psum0, insns, gaps, seed=rng.random())

    expect = np.array(psum0, dtype=np.int64)
    kinds = ["done" if ref_vec(cfg, expect, ifmap, d) else "error" for d in insns]
    np.testing.assert_array_equal(psum, expect)
    assert [k for k, _ in events[0::2]] == ["accept"] * len(insns)
    assert [k for k, _ in events[1::2]] == kinds
    for d, (_, t_acc), (_, t_done) in zip(insns, events[0::2], events[1::2]):
        assert t_done - t_acc == latency(cfg, d), d
    return events


def small_cfg(rows, cols, ifmap_rows=24):
    return AccelConfig(rows=rows, cols=cols, ifmap_rows=ifmap_rows,
                       weight_rows=max(2 * rows, 4), psum_rows=10)


def random_multiplier(rng):
    """A QuantizeMultiplier-like (m0, shift) pair, sometimes a corner value."""
    m0 = rng.choice([rng.randrange(1 << 30, 1 << 31), (1 << 31) - 1, 1 << 30,
                     rng.randrange(-(1 << 31), 1 << 31), -(1 << 31), 0])
    # The golden model's int64 shifts are exact for -62..31 (the hardware saturates beyond).
    shift = rng.choice([rng.randrange(-31, 1), 0, -1, rng.randrange(1, 8), -40, -62, 31])
    return m0, shift


def random_insn(cfg, rng, mode=None):
    mode = rng.choice(list(VecMode)) if mode is None else mode
    win = 2 if mode == VecMode.ADD and rng.random() < 0.7 else rng.randrange(1 if mode != VecMode.ADD else 2, 6)
    m_len = rng.randrange(0, min(cfg.psum_rows, cfg.ifmap_rows // win) + 1)
    a_m0, a_shift = random_multiplier(rng)
    b_m0, b_shift = random_multiplier(rng)
    return make_insn(
        mode=mode, win=win, m_len=m_len,
        ifmap_row=rng.randrange(0, cfg.ifmap_rows - m_len * win + 1),
        psum_row=rng.randrange(0, cfg.psum_rows - m_len + 1),
        lanes=rng.randrange(0, min(cfg.rows, cfg.cols) + 1),
        in_zp=rng.choice([rng.randrange(-128, 128), -128, 127]),
        b_zp=rng.choice([rng.randrange(-128, 128), -128, 127]),
        left_shift=rng.choice([0, 20, rng.randrange(32), 31]),
        a_m0=a_m0, a_shift=a_shift, b_m0=b_m0, b_shift=b_shift)


CONFIGS = [(1, 1), (3, 5), (4, 8), (8, 8), (5, 2)]


# -- tests ---------------------------------------------------------------------

def test_ports_and_verilog():
    cfg = small_cfg(4, 8)
    vec = VectorEngine(cfg)
    assert vec.lanes == 4
    assert set(vec.signature.members) == {"ctrl", "ifmap", "psum_wr"}
    assert set(vec.signature.members["ctrl"].signature.members) == {"insn", "done", "error", "busy"}
    assert "module" in verilog.convert(VectorEngine(AccelConfig(rows=4, cols=8)))


@pytest.mark.parametrize("rows,cols", CONFIGS)
def test_random_program(rows, cols):
    cfg = small_cfg(rows, cols)
    rng = random.Random(rows * 100 + cols)
    lanes = min(rows, cols)
    insns = [
        make_insn(mode=VecMode.MAX, ifmap_row=1, psum_row=0, m_len=3, win=4, lanes=lanes, in_zp=-128),
        make_insn(mode=VecMode.SUM, ifmap_row=0, psum_row=3, m_len=4, win=1, lanes=lanes, in_zp=127),
        make_insn(mode=VecMode.ADD, ifmap_row=5, psum_row=7, m_len=3, win=2, lanes=lanes, in_zp=3,
                  b_zp=-7, left_shift=20, a_m0=1518500250, a_shift=-1, b_m0=1288490189, b_shift=-2),
        make_insn(mode=VecMode.SUM, ifmap_row=2, psum_row=9, m_len=1, win=9, lanes=max(lanes - 1, 0)),
    ]
    insns += [random_insn(cfg, rng) for _ in range(6)]
    check(cfg, insns, rng)


@pytest.mark.parametrize("mode", list(VecMode))
def test_random_per_mode(mode):
    cfg = small_cfg(4, 8)
    rng = random.Random(mode.value + 17)
    check(cfg, [random_insn(cfg, rng, mode) for _ in range(8)], rng)


@pytest.mark.parametrize("rows,cols", [(1, 1), (4, 8)])
def test_minus_128_and_zero_point_extremes(rows, cols):
    cfg = small_cfg(rows, cols)
    rng = random.Random(5)
    lanes = min(rows, cols)
    ifmap = np.full((cfg.ifmap_rows, rows), -128)
    ifmap[1::3] = 127
    insns = [
        make_insn(mode=VecMode.MAX, m_len=4, win=3, lanes=lanes, in_zp=127),
        make_insn(mode=VecMode.MAX, ifmap_row=2, psum_row=4, m_len=2, win=1, lanes=lanes, in_zp=-128),
        make_insn(mode=VecMode.SUM, ifmap_row=0, psum_row=6, m_len=2, win=10, lanes=lanes, in_zp=127),
        make_insn(mode=VecMode.SUM, ifmap_row=0, psum_row=8, m_len=1, win=24, lanes=lanes, in_zp=-128),
        # INT32_MIN operands into MBQM: (-128 - 127) << 31 wraps; m0 = INT32_MIN saturates.
        make_insn(mode=VecMode.ADD, ifmap_row=0, psum_row=9, m_len=1, win=2, lanes=lanes, in_zp=0,
                  b_zp=127, left_shift=31, a_m0=-(1 << 31), a_shift=0, b_m0=-(1 << 31), b_shift=3),
        make_insn(mode=VecMode.ADD, ifmap_row=3, psum_row=5, m_len=3, win=3, lanes=lanes, in_zp=127,
                  b_zp=-128, left_shift=31, a_m0=(1 << 31) - 1, a_shift=-31, b_m0=1 << 30, b_shift=-1),
    ]
    check(cfg, insns, rng, ifmap=ifmap)


def test_large_window_global_pool():
    """win = 49 (7x7 global average pooling) over all lanes, two output rows."""
    cfg = small_cfg(8, 8, ifmap_rows=100)
    rng = random.Random(49)
    insns = [make_insn(mode=VecMode.SUM, ifmap_row=1, psum_row=2, m_len=2, win=49, lanes=8, in_zp=-5),
             make_insn(mode=VecMode.MAX, ifmap_row=0, psum_row=5, m_len=2, win=49, lanes=7, in_zp=9)]
    check(cfg, insns, rng)


@pytest.mark.parametrize("rows, cols, win", [(1, 1, 9), (1, 1, 12), (3, 5, 11), (3, 5, 14)])
def test_add_windows_longer_than_the_lane_pipeline(rows, cols, win):
    """ADD windows of at least ``L + 8`` rows: the last lane is written before the window's
    reads end, so ``done`` follows the last read (the ``win + 2`` branch of the docstring's
    ``(m_len - 1)*max(win, L) + max(win + 2, L + 10)``), each followed at once by a MAX and
    a SUM; outputs against the reference, latency against that formula worked out here."""
    cfg = small_cfg(rows, cols, ifmap_rows=48)
    rng = random.Random(win)
    lanes = min(rows, cols)
    insns = [make_insn(mode=VecMode.ADD, ifmap_row=0, psum_row=0, m_len=3, win=win, lanes=lanes,
                       in_zp=3, b_zp=-7, left_shift=20),
             make_insn(mode=VecMode.MAX, ifmap_row=1, psum_row=3, m_len=2, win=win, lanes=lanes),
             make_insn(mode=VecMode.SUM, ifmap_row=2, psum_row=5, m_len=1, win=win, lanes=lanes)]
    events = check(cfg, insns, rng, gaps=[0, 0, 0])
    want = [2 * max(win, lanes) + max(win + 2, lanes + 10), 2 * win + 5, win + 5]
    assert [t_done - t_acc for (_, t_acc), (_, t_done) in zip(events[0::2], events[1::2])] == want


def test_errors_write_nothing():
    cfg = small_cfg(3, 5)
    rng = random.Random(3)
    good = make_insn(mode=VecMode.SUM, m_len=2, win=2, lanes=3)
    bad = [
        {**good, "lanes": 4},                                   # lanes > min(rows, cols)
        {**good, "ifmap_row": cfg.ifmap_rows - 3},              # ifmap_row + m_len*win > ifmap_rows
        {**good, "psum_row": cfg.psum_rows - 1},                # psum_row + m_len > psum_rows
        {**good, "m_len": 0xFFFF, "win": 0xFFFF},               # no wrap of m_len*win
        {**good, "psum_row": 0xFFFF, "m_len": 0xFFFF, "win": 0},  # no 16-bit wrap of the sum
        {**good, "psum_row": cfg.psum_rows + 1, "m_len": 0},    # start row past the end, m_len 0
        {**good, "mode": 3},                                    # no such mode
        {**good, "mode": VecMode.ADD, "win": 1},                # ADD needs x_0 and x_1
    ]
    insns = bad + [{**good, "psum_row": 4}, {**good, "win": 0, "psum_row": 6},
                   {**good, "m_len": 0, "psum_row": 8}]
    check(cfg, insns, rng, gaps=[rng.randrange(3) for _ in insns])


def test_back_to_back_valid_held():
    cfg = small_cfg(2, 3)
    rng = random.Random(11)
    insns = [make_insn(mode=mode, ifmap_row=i, psum_row=p, m_len=3, win=2, lanes=2, in_zp=1, b_zp=-1,
                       a_shift=-1, b_shift=-2)
             for mode, p, i in [(VecMode.ADD, 0, 0), (VecMode.MAX, 3, 4), (VecMode.SUM, 6, 8),
                                (VecMode.ADD, 1, 1)]]
    events = check(cfg, insns, rng, gaps=[0] * len(insns))
    for (_, t_done), (_, t_next) in zip(events[1::2], events[2::2]):
        assert t_next == t_done + 1
