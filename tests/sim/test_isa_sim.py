"""The ISA simulator's GEMM against the ISA text: windowed GEMMs of one kernel tap on the
plain arrays (ws, os, feie), the full windows of rs, and the range check that rejects what
the engines reject (nothing written)."""

import numpy as np
import pytest

from celosia.errors import IsaError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import ErrorCode, Opcode
from celosia.sim.isa_sim import IsaSim
from gemm_ref import ref_window


def gemm(**fields):
    """A decoded GEMM instruction (every field, as the simulator's queues hold it)."""
    return isa.decode(isa.encode(Opcode.GEMM, **fields))


def sim(dataflow, seed=0):
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow, ifmap_rows=64, psum_rows=32,
                         weight_rows=48)
    s = IsaSim(config)
    rng = np.random.default_rng(seed)
    s.ifmap[:] = rng.integers(0, 256, s.ifmap.shape)
    s.weight[:] = rng.integers(0, 256, s.weight.shape)
    s.psum[:] = rng.integers(-1000, 1000, s.psum.shape)
    return s


def reference(s, d):
    """psum rows after the GEMM ``d`` (gemm_ref.ref_window: the formula in rtl/isa.py, one MAC
    at a time) on the simulator's buffers as int8."""
    psum = s.psum.copy()
    ref_window(psum, s.ifmap.view(np.int8).astype(np.int64) - d["in_zp"],
               s.weight.view(np.int8), d)
    return psum[d["psum_row"]:d["psum_row"] + d["m_len"], :d["n_len"]]


def window(out_h, out_w, **fields):
    d = dict(window=1, win_h=1, win_w=1, stride_h=1, stride_w=1, dil_h=1, dil_w=1, out_h=out_h,
             out_w=out_w, m_len=out_h * out_w, k_len=4, n_len=4)
    d.update(fields)
    return gemm(**d)


@pytest.mark.parametrize("dataflow", ["ws", "os", "feie"])
@pytest.mark.parametrize("d", [
    window(3, 4, ifmap_row=5, row_pitch=9, stride_h=2, stride_w=2, psum_row=3),
    window(2, 3, ifmap_row=0, row_pitch=2, dil_h=4, dil_w=7, accumulate=1, k_len=3, n_len=2),
    window(5, 1, ifmap_row=7, row_pitch=11, psum_row=20, accumulate=1),
])
def test_tap_window_on_the_plain_arrays(dataflow, d):
    s = sim(dataflow)
    if dataflow == "feie":
        d = dict(d, in_zp=-3)
    want = reference(s, d)
    s._gemm(d)
    np.testing.assert_array_equal(s.psum[d["psum_row"]:d["psum_row"] + d["m_len"], :d["n_len"]], want)
    assert s.macs == d["m_len"] * d["k_len"] * d["n_len"]


@pytest.mark.parametrize("dataflow, d", [
    ("ws", window(2, 2, row_pitch=3, win_h=3, win_w=3)),       # a 3x3 window: rs only
    ("os", window(1, 2, win_w=2)),                              # 1x2: rs only
    ("ws", window(2, 3, ifmap_row=30, row_pitch=30, stride_w=2)),   # last row 30 + 30 + 4 = 64: too far
    ("os", dict(window(2, 3, row_pitch=3), m_len=5)),           # m_len != out_h * out_w
    ("feie", window(2, 3, row_pitch=3, stride_h=0)),            # a zero stride
    ("rs", gemm(m_len=2, k_len=4, n_len=4)),                    # a plain GEMM on rs
])
def test_range_check_rejects_what_the_engines_reject(dataflow, d):
    s = sim(dataflow)
    before = s.psum.copy()
    with pytest.raises(IsaError) as e:
        s._gemm(d)
    assert e.value.code == ErrorCode.BUFFER_OUT_OF_RANGE
    np.testing.assert_array_equal(s.psum, before)


def test_last_row_of_the_buffer_is_legal():
    """The window's last row 29 + 30 + 2*2 = 63, the buffer's last (one further: rejected above)."""
    s = sim("ws")
    d = window(2, 3, ifmap_row=29, row_pitch=30, stride_w=2)
    want = reference(s, d)
    s._gemm(d)
    np.testing.assert_array_equal(s.psum[:6, :4], want)


def test_full_windows_on_rs():
    s = sim("rs")
    d = window(2, 2, ifmap_row=1, row_pitch=6, win_h=3, win_w=2, dil_w=2, k_len=2, n_len=3)
    want = reference(s, d)
    s._gemm(d)
    np.testing.assert_array_equal(s.psum[:4, :3], want)
    assert s.macs == 4 * 2 * 3 * 6


def store(**fields):
    """A decoded STORE instruction."""
    return isa.decode(isa.encode(Opcode.STORE, **fields))


def params_into(s, rng):
    """Random PPU parameters in the simulator's parameter buffer; returns (bias, m0, shift)."""
    n = s.param.shape[0]
    bias, m0, shift = rng.integers(-500, 500, n), rng.integers(1 << 30, 1 << 31, n), rng.integers(-6, 1, n)
    for i in range(n):
        s.param[i] = np.frombuffer(isa.pack_bytes(isa.ParamRecord, bias=int(bias[i]), m0=int(m0[i]),
                                                  shift=int(shift[i])), np.uint8)
    return bias, m0, shift


def test_store_to_the_ifmap_buffer():
    """``to_buf``: byte (m, n) to ifmap row ``buf_row + m*buf_stride``, lane ``lane0 + n``
    (the golden requantization of each psum), DRAM untouched even with a DRAM offset
    outside it; a block past the last row or lane raises and writes nothing."""
    from celosia.sim.golden.requant import requantize
    s = sim("ws", seed=4)
    rng = np.random.default_rng(4)
    bias, m0, shift = params_into(s, rng)
    before, dram = s.ifmap.copy(), bytes(s.dram)
    d = store(to_buf=1, buf_row=10, buf_stride=3, lane0=1, psum_row=2, param_row=5, m_len=4, n_len=3,
              out_zp=-7, act_min=-128, act_max=127, dram_offset=len(s.dram) + 5)
    s._store(d)
    want = before.copy()
    y = requantize(s.psum[2:6, :3], bias[5:8], m0[5:8], shift[5:8], -7, -128, 127)
    for m in range(4):
        want[10 + 3 * m, 1:4] = y[m].astype(np.int8).view(np.uint8)
    np.testing.assert_array_equal(s.ifmap, want)
    assert bytes(s.dram) == dram
    for bad in (dict(buf_row=55, buf_stride=3),      # last row 55 + 9 = 64
                dict(lane0=2, n_len=3)):             # lanes 2..4 of 4
        with pytest.raises(IsaError) as e:
            s._store(dict(d, **bad))
        assert e.value.code == ErrorCode.BUFFER_OUT_OF_RANGE
        np.testing.assert_array_equal(s.ifmap, want)


@pytest.mark.parametrize("op, fields, raw", [
    (Opcode.LOAD, dict(n0=1, n1=1, n2=1), ("buf", 3)),              # buf 3 names no buffer
    (Opcode.VEC, dict(m_len=1, win=1, lanes=1), ("mode", 3)),       # mode 3 names no mode
    (Opcode.VEC, dict(mode=isa.VecMode.ADD, m_len=1, win=1, lanes=1), None),  # ADD reads two rows
    (Opcode.VEC, dict(mode=isa.VecMode.ADD, m_len=0, win=0, lanes=1), None),  # whatever m_len
])
def test_instructions_the_engines_reject(op, fields, raw):
    """What the engines reject (rtl/dma.py LoadEngine: buf 3 is a buffer of depth 0;
    rtl/vector.py: mode 3, ADD with win < 2, whatever m_len) is BUFFER_OUT_OF_RANGE here too,
    with nothing written; the decoder keeps a value that names no enum member as its int
    (``encode`` refuses to write one, so ``raw`` patches it into the word's bits)."""
    word = isa.encode(op, **fields)
    if raw is not None:
        f = dict(isa.LoadInsn if op == Opcode.LOAD else isa.VecInsn)[raw[0]]
        word = word & ~(((1 << f.width) - 1) << f.offset) | (raw[1] << f.offset)
    d = isa.decode(word)
    if raw is not None:
        assert d[raw[0]] == raw[1] and type(d[raw[0]]) is int
    s = sim("ws")
    before = [a.copy() for a in (s.ifmap, s.weight, s.param, s.psum)]
    with pytest.raises(IsaError) as e:
        s.execute(d)
    assert e.value.code == ErrorCode.BUFFER_OUT_OF_RANGE
    for a, b in zip(before, (s.ifmap, s.weight, s.param, s.psum)):
        np.testing.assert_array_equal(a, b)


def test_store_single_round():
    """STORE ``single_round``: TFLite's single-rounding MBQM, ``(x*M0 + 2^(t-1)) >> t`` with
    ``t = 31 - shift`` (wrapped to int32), written out here with Python ints; the double
    rounding differs on x/4 and x/8 (its second rounding) and on a left shift that wraps its
    pre-shifted int32, not on x/2 at shift 0 (where it rounds once too)."""
    s = sim("ws", seed=5)
    shift = np.array([-1, -2, 0, 3])
    m0 = np.array([1 << 30, 1 << 30, 1 << 30, (1 << 31) - 1])
    for i in range(4):
        s.param[i] = np.frombuffer(isa.pack_bytes(isa.ParamRecord, bias=0, m0=int(m0[i]),
                                                  shift=int(shift[i])), np.uint8)
    acc = np.stack([np.arange(-16, 16), np.arange(-16, 16), np.arange(-16, 16),
                    np.arange(-16, 16) << 27], axis=1)
    s.psum[0:32, :4] = acc
    d = store(to_buf=1, buf_row=0, buf_stride=1, psum_row=0, param_row=0, m_len=32, n_len=4,
              out_zp=3, act_min=-128, act_max=127, single_round=1)
    s._store(d)

    def once(x, m, sh):
        v = (x * m + (1 << (30 - sh))) >> (31 - sh)
        return (v + (1 << 31)) % (1 << 32) - (1 << 31)

    want = np.clip(np.array([[once(int(acc[i, n]), int(m0[n]), int(shift[n])) for n in range(4)]
                             for i in range(32)]) + 3, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(s.ifmap[0:32, :4].view(np.int8), want)
    s._store(dict(d, single_round=0))
    differ = (s.ifmap[0:32, :4].view(np.int8) != want).sum(axis=0)
    assert differ[[0, 1, 3]].min() > 0 and differ[2] == 0   # x/2 at shift 0: one rounding in both


# -- the functional run: the RTL's order-free errors and its step limit ---------------------

def program_sim(nodes, prog_base=0, queue_depth=8, offsets=None):
    """An IsaSim with ``nodes`` (lists of instruction words) as a program at ``prog_base``:
    the descriptor table, then each node's instructions (at ``offsets[k]`` if given)."""
    config = AccelConfig(rows=4, cols=4, ifmap_rows=64, psum_rows=32, weight_rows=48,
                         queue_depth=queue_depth, dram_bytes=1 << 14)
    s = IsaSim(config)
    table = isa.DESC_BYTES * (len(nodes) + 1)
    off = -(-table // isa.INSN_BYTES) * isa.INSN_BYTES
    for k, node in enumerate(nodes):
        at = off if offsets is None else offsets[k]
        s.dram[prog_base + 8 * k:prog_base + 8 * k + 8] = isa.encode_descriptor(at, len(node)).to_bytes(8, "little")
        for j, w in enumerate(node):
            a = prog_base + at + isa.INSN_BYTES * j
            s.dram[a:a + isa.INSN_BYTES] = w.to_bytes(isa.INSN_BYTES, "little")
        off = at + isa.INSN_BYTES * len(node)
    return s


def nop(**dep):
    return isa.encode(Opcode.NOP, dep=dep)


def load(**fields):
    return isa.encode(Opcode.LOAD, **fields)


def run_error(s, prog_base=0, **kw):
    with pytest.raises(IsaError) as e:
        s.run(prog_base, **kw)
    return e.value.code


def test_token_counter_passing_255_overflows():
    # 256 NOPs each push a c2s token nobody pops: the 256th push passes 255
    assert program_sim([[nop(push_next=1)] * 255]).run(0)["c2s"] == 255
    assert run_error(program_sim([[nop(push_next=1)] * 256])) == ErrorCode.TOKEN_OVERFLOW


@pytest.mark.parametrize("loads, depth, deadlock", [(8, 8, False), (9, 8, True), (9, 9, False)])
def test_full_load_queue_with_its_tokens_behind_deadlocks(loads, depth, deadlock):
    # LOADs that each wait for a c2l token from NOPs fetched after them: with more LOADs than
    # the queue holds, fetch waits for room and never reaches the NOPs (the RTL's deadlock)
    s = program_sim([[load(dep={"pop_next": 1})] * loads + [nop(push_prev=1)] * loads],
                    queue_depth=depth)
    if deadlock:
        assert run_error(s) == ErrorCode.TOKEN_DEADLOCK
    else:
        assert s.run(0) == {"l2c": 0, "c2l": 0, "c2s": 0, "s2c": 0}


def test_misaligned_program_is_a_bad_descriptor():
    s = program_sim([[nop()]], prog_base=4)
    assert run_error(s, 4) == ErrorCode.BAD_DESCRIPTOR and s.fault_addr == 4
    s = program_sim([[nop()]], offsets=[48])            # insn_offset not a multiple of 32
    assert run_error(s) == ErrorCode.BAD_DESCRIPTOR and s.fault_addr == 48


def test_step_limit():
    # a LOAD of 65535 x 65535 rows with zero strides would run "forever": the step limit
    # stops it before it executes (WATCHDOG, as the hardware's watchdog would)
    forever = load(buf=isa.Buffer.IFMAP, n0=1, n1=65535, n2=65535)
    assert run_error(program_sim([[forever]])) == ErrorCode.WATCHDOG
    small = program_sim([[load(buf=isa.Buffer.IFMAP, n0=4, n1=3, n2=2)] * 2])
    assert run_error(small, max_work=47) == ErrorCode.WATCHDOG     # 2 x 24 elements
    small.run(0, max_work=48)
