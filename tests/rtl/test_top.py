# amaranth: UnusedElaboratable=no
"""SimTop end to end: one GEMM tile (LOAD W, P, X -> GEMM -> STORE) against NumPy + golden requant."""

import numpy as np
import pytest
from amaranth.back import verilog

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Csr, ErrorCode, Opcode
from celosia.rtl.top import SimTop
from celosia.sim.golden.requant import quantize_multiplier, requantize
from helpers import (csr_read_all, csr_write, host_read_bytes, host_write, image_words, simulate,
                     start_and_wait)

CFG = AccelConfig(rows=4, cols=3, ifmap_rows=16, weight_rows=8, psum_rows=16, param_rows=2,
                  dram_bytes=1 << 14, dram_latency=4, queue_depth=4)
PROG = 0x2000
W_AT, P_AT, X_AT, Y_AT = 0x100, 0x40, 0x200, 0x300  # offsets from their base registers
BASES = {BaseReg.PROGRAM: PROG, BaseReg.STATIC: 0x1000, BaseReg.INPUT: 0x1800,
         BaseReg.OUTPUT: 0x3000}


def put(mem: bytearray, addr: int, blob: bytes):
    mem[addr:addr + len(blob)] = blob


def param_records(bias, m0, shift) -> bytes:
    """The PPU parameter records of channels (bias, m0, shift), packed as in DRAM."""
    return b"".join(isa.pack_bytes(isa.ParamRecord, bias=int(b), m0=int(m), shift=int(s))
                    for b, m, s in zip(bias, m0, shift))


def assert_done(status):
    """STATUS says done, not busy, no error."""
    s = isa.unpack(isa.Status, status)
    assert (s["busy"], s["done"], s["error"]) == (0, 1, 0), f"STATUS {s}, error {ErrorCode(s['error'])!r}"


def build(cfg, x, w, bias, m0, shift, out_zp):
    m, k = x.shape
    n = w.shape[1]
    mem = bytearray(cfg.dram_bytes)
    static, inp = BASES[BaseReg.STATIC], BASES[BaseReg.INPUT]
    put(mem, static + W_AT, w.astype(np.int8).tobytes())
    put(mem, static + P_AT, param_records(bias[:n], m0[:n], shift[:n]))
    put(mem, inp + X_AT, x.astype(np.int8).tobytes())

    def ld(buf, base, off, n0, n1, push=0):
        return isa.encode(Opcode.LOAD, buf=buf, base_reg=base, dram_offset=off,
                          n0=n0, dram_stride0=1, n1=n1, dram_stride1=n0, buf_stride1=1,
                          n2=1, buf_row=0, dep={"push_next": push})

    insns = [
        ld(Buffer.WEIGHT, BaseReg.STATIC, W_AT, n, k),
        ld(Buffer.PARAM, BaseReg.STATIC, P_AT, 9, n),  # one channel per row
        ld(Buffer.IFMAP, BaseReg.INPUT, X_AT, k, m, push=1),
        isa.encode(Opcode.GEMM, ifmap_row=0, weight_row=0, psum_row=0, m_len=m, k_len=k,
                   n_len=n, accumulate=0, dep={"pop_prev": 1, "push_next": 1}),
        isa.encode(Opcode.STORE, base_reg=BaseReg.OUTPUT, dram_offset=Y_AT, dram_stride=n,
                   psum_row=0, param_row=0, m_len=m, n_len=n, out_zp=out_zp,
                   act_min=-128, act_max=127, dep={"pop_prev": 1}),
    ]
    put(mem, PROG, isa.encode_descriptor(32, len(insns)).to_bytes(8, "little"))
    put(mem, PROG + 8, isa.encode_descriptor(0, 0).to_bytes(8, "little"))
    for j, insn in enumerate(insns):
        put(mem, PROG + 32 + 32 * j, insn.to_bytes(32, "little"))
    return mem


def run(cfg, mem, out_addr, out_len, max_cycles=5000):
    dut = SimTop(cfg)
    res = {}

    async def bench(ctx):
        await host_write(ctx, dut, image_words(mem, skip_zero=True))
        await csr_write(ctx, dut.csr, Csr.PROG_BASE, PROG)
        for reg, value in BASES.items():
            await csr_write(ctx, dut.csr, Csr.BASE0 + reg, value)
        await start_and_wait(ctx, dut.csr, max_cycles)
        res.update(csr_read_all(ctx, dut.csr))
        res["out"] = await host_read_bytes(ctx, dut, out_addr, out_len)

    simulate(dut, bench)
    return res


@pytest.mark.parametrize("cfg, m", [
    (CFG, 5),
    (AccelConfig(rows=8, cols=8, ifmap_rows=16, weight_rows=16, psum_rows=16, param_rows=2,
                 dram_bytes=1 << 14, dram_latency=8, dram_bytes_per_cycle=2), 7),
    (AccelConfig(rows=4, cols=3, ifmap_rows=16, weight_rows=8, psum_rows=16, param_rows=2,
                 dram_bytes=1 << 14, dram_latency=4, queue_depth=4, bus_bits=128,
                 dram_bytes_per_cycle=16), 5),
    (AccelConfig(rows=8, cols=8, ifmap_rows=16, weight_rows=16, psum_rows=16, param_rows=2,
                 dram_bytes=1 << 14, dram_latency=3, bus_bits=256, dram_bytes_per_cycle=32), 7),
], ids=["4x3", "8x8", "4x3-128bit", "8x8-256bit"])
def test_gemm_tile_end_to_end(cfg, m):
    rng = np.random.default_rng(7)
    k, n = cfg.rows, cfg.cols
    x = rng.integers(-128, 128, (m, k), dtype=np.int64)
    w = rng.integers(-128, 128, (k, n), dtype=np.int64)
    bias = rng.integers(-2000, 2000, n)
    mults = [quantize_multiplier(s) for s in rng.uniform(0.001, 0.02, n)]
    m0 = np.array([q[0] for q in mults])
    shift = np.array([q[1] for q in mults])
    out_zp = -3
    mem = build(cfg, x, w, bias, m0, shift, out_zp)
    out_addr = BASES[BaseReg.OUTPUT] + Y_AT
    res = run(cfg, mem, out_addr, m * n)

    assert_done(res["STATUS"])
    expected = requantize(x @ w, bias, m0, shift, out_zp, -128, 127)
    got = np.frombuffer(res["out"], dtype=np.int8).reshape(m, n)
    np.testing.assert_array_equal(got, expected)
    assert res["INSNS"] == 5
    assert res["MACS"] == m * k * n
    assert res["DRAM_WR"] == m * n
    assert res["DRAM_RD"] == 8 * (2 + 4 * 5) + n * k + 9 * n + m * k
    assert res["CYCLES"] > 0 and res["COMPUTE_BUSY"] > 0


def test_dma_error_reaches_status():
    # a LOAD outside the window stops the machine with DMA_OUT_OF_WINDOW
    mem = bytearray(CFG.dram_bytes)
    bad = isa.encode(Opcode.LOAD, buf=Buffer.IFMAP, base_reg=BaseReg.INPUT,
                     dram_offset=CFG.dram_bytes, n0=1, n1=1, n2=1)
    put(mem, PROG, isa.encode_descriptor(32, 1).to_bytes(8, "little"))
    put(mem, PROG + 32, bad.to_bytes(32, "little"))
    res = run(CFG, mem, 0, 0)
    assert isa.unpack(isa.Status, res["STATUS"]) == {"busy": 0, "done": 1,
                                                     "error": ErrorCode.DMA_OUT_OF_WINDOW}
    assert res["ERROR_INFO"] == 0


def test_verilog_conversion():
    text = verilog.convert(SimTop(CFG), name="celosia_sim_top")
    assert "module celosia_sim_top" in text
    for port in ("csr__addr", "csr__w_en", "csr__w_data", "csr__r_data",
                 "host_addr", "host_we", "host_wdata", "host_rdata"):
        assert port in text


def test_vec_sum_end_to_end():
    """LOAD ifmap rows -> VEC SUM (pooling windows of `win` rows) -> STORE through the PPU."""
    cfg = CFG
    rng = np.random.default_rng(11)
    m, win, lanes, in_zp, out_zp = 3, 4, min(cfg.rows, cfg.cols), 5, -2
    x = rng.integers(-128, 128, (m * win, cfg.rows), dtype=np.int64)
    x[0, :] = -128
    bias = np.array([0, 7, -3])
    m0_avg, shift_avg = quantize_multiplier(1 / win)
    m0 = np.array([1 << 30, m0_avg, 1 << 30])  # identity (0.5 * 2^1), average, identity
    shift = np.array([1, shift_avg, 1])

    mem = bytearray(cfg.dram_bytes)
    static, inp = BASES[BaseReg.STATIC], BASES[BaseReg.INPUT]
    put(mem, static + P_AT, param_records(bias[:cfg.cols], m0[:cfg.cols], shift[:cfg.cols]))
    put(mem, inp + X_AT, x.astype(np.int8).tobytes())
    k = cfg.rows
    insns = [
        isa.encode(Opcode.LOAD, buf=Buffer.PARAM, base_reg=BaseReg.STATIC, dram_offset=P_AT,
                   n0=9, dram_stride0=1, n1=cfg.cols, dram_stride1=9, buf_stride1=1, n2=1,
                   buf_row=3),
        isa.encode(Opcode.LOAD, buf=Buffer.IFMAP, base_reg=BaseReg.INPUT, dram_offset=X_AT,
                   n0=k, dram_stride0=1, n1=m * win, dram_stride1=k, buf_stride1=1, n2=1,
                   buf_row=2, dep={"push_next": 1}),
        isa.encode(Opcode.VEC, mode=isa.VecMode.SUM, ifmap_row=2, psum_row=5, m_len=m, win=win,
                   lanes=lanes, in_zp=in_zp, dep={"pop_prev": 1, "push_next": 1}),
        isa.encode(Opcode.STORE, base_reg=BaseReg.OUTPUT, dram_offset=Y_AT, dram_stride=lanes,
                   psum_row=5, param_row=3, m_len=m, n_len=lanes, out_zp=out_zp,
                   act_min=-128, act_max=127, dep={"pop_prev": 1}),
    ]
    put(mem, PROG, isa.encode_descriptor(32, len(insns)).to_bytes(8, "little"))
    put(mem, PROG + 8, isa.encode_descriptor(0, 0).to_bytes(8, "little"))
    for j, insn in enumerate(insns):
        put(mem, PROG + 32 + 32 * j, insn.to_bytes(32, "little"))
    res = run(cfg, mem, BASES[BaseReg.OUTPUT] + Y_AT, m * lanes)

    assert_done(res["STATUS"])
    sums = (x[:, :lanes] - in_zp).reshape(m, win, lanes).sum(axis=1)
    expected = requantize(sums, bias, m0, shift, out_zp, -128, 127)
    got = np.frombuffer(res["out"], dtype=np.int8).reshape(m, lanes)
    np.testing.assert_array_equal(got, expected)
    assert res["INSNS"] == 4
    assert res["MACS"] == 0
    assert res["DRAM_WR"] == m * lanes
    assert res["COMPUTE_BUSY"] == m * win + 5  # busy from CHECK to done: the VEC latency (docs/hardware.md)
