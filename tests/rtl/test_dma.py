"""LoadEngine / StoreEngine against NumPy gathers and the golden requantization.

Harness: DramModel + engine + LaneBuffers; DRAM filled through the host back door,
buffers filled / read back through their free ports.
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from celosia.rtl.buffers import LaneBuffer
from celosia.rtl.config import AccelConfig
from celosia.rtl.dma import LoadEngine, StoreEngine
from celosia.rtl.dram import DramModel
from celosia.rtl.isa import Buffer, ErrorCode, Opcode
from celosia.sim.golden.requant import requantize
from helpers import host_read_bytes, host_write, image_words, pack, read_rows, simulate, write_rows

DRAM_BYTES = 2048


def make_config(**kw):
    base = dict(rows=4, cols=3, ifmap_rows=16, weight_rows=16, psum_rows=16, param_rows=4,
                dram_bytes=DRAM_BYTES, dram_latency=5, dram_bytes_per_cycle=8)
    base.update(kw)
    return AccelConfig(**base)


class LoadHarness(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = DramModel(cfg)
        self.eng = LoadEngine(cfg)
        self.bufs = {
            Buffer.IFMAP: LaneBuffer(cfg.rows, 8, cfg.ifmap_rows),
            Buffer.WEIGHT: LaneBuffer(cfg.cols, 8, cfg.weight_rows),
            Buffer.PARAM: LaneBuffer(cfg.param_lanes, 8, cfg.param_rows),
        }
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dram = self.dram
        m.submodules.eng = self.eng
        for b, buf in self.bufs.items():
            m.submodules[f"buf_{b.name.lower()}"] = buf
        wiring.connect(m, engine=self.eng.bus, dram=self.dram.bus)
        wiring.connect(m, engine=self.eng.ifmap_wr, ifmap=self.bufs[Buffer.IFMAP].w)
        wiring.connect(m, engine=self.eng.weight_wr, weight=self.bufs[Buffer.WEIGHT].w)
        wiring.connect(m, engine=self.eng.param_wr, param=self.bufs[Buffer.PARAM].w)
        return m


class StoreHarness(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = DramModel(cfg)
        self.eng = StoreEngine(cfg)
        self.psum = LaneBuffer(cfg.cols, 32, cfg.psum_rows, read_ports=2)
        self.param = LaneBuffer(cfg.param_lanes, 8, cfg.param_rows)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dram = self.dram
        m.submodules.eng = self.eng
        m.submodules.psum = self.psum
        m.submodules.param = self.param
        wiring.connect(m, engine=self.eng.bus, dram=self.dram.bus)
        wiring.connect(m, engine=self.eng.psum_rd, psum=self.psum.r1)
        wiring.connect(m, engine=self.eng.param_rd, param=self.param.r0)
        return m


# -- bench helpers -----------------------------------------------------------------

async def dram_fill(ctx, dram, image):
    await host_write(ctx, dram, image_words(image))


async def dram_dump(ctx, dram, nbytes):
    return np.frombuffer(await host_read_bytes(ctx, dram, 0, nbytes), dtype=np.uint8)


async def buf_dump(ctx, buf, lanes, lane_bits, depth):
    rows = await read_rows(ctx, buf.r0, depth)
    return np.array([[(v >> (lane_bits * l)) & ((1 << lane_bits) - 1) for l in range(lanes)]
                     for v in rows], dtype=np.int64)


async def execute(ctx, eng, insn, base, window=(0, 0), timeout=3000):
    """Issue one instruction; returns ("done" | ("error", code), cycles from accept, bytes pulses)."""
    for i, b in enumerate(base):
        ctx.set(eng.base[i], b)
    ctx.set(eng.window_base, window[0])
    ctx.set(eng.window_size, window[1])
    ctx.set(eng.insn.payload, insn)
    ctx.set(eng.insn.valid, 1)
    while True:
        _, _, ready = await ctx.tick().sample(eng.insn.ready)
        if ready:
            break
    ctx.set(eng.insn.valid, 0)
    nbytes = 0
    for cycle in range(1, timeout):
        _, _, done, error, code, busy, pulse = await ctx.tick().sample(
            eng.done, eng.error, eng.error_code, eng.busy, eng.bytes)
        nbytes += pulse
        if done or error:
            assert not busy
            return ("done" if done else ("error", code)), cycle, nbytes
        assert busy
    raise AssertionError("engine timed out")


# -- LOAD ---------------------------------------------------------------------------

def buffer_geometry(cfg, buf):
    return {Buffer.IFMAP: (cfg.rows, cfg.ifmap_rows), Buffer.WEIGHT: (cfg.cols, cfg.weight_rows),
            Buffer.PARAM: (cfg.param_lanes, cfg.param_rows)}[buf]


def random_load(rng, cfg, buf, levels, base):
    lanes, depth = buffer_geometry(cfg, buf)
    n0 = int(rng.integers(1, lanes + 1))
    lane0 = int(rng.integers(0, lanes - n0 + 1))
    n1 = int(rng.integers(1, 5)) if levels >= 2 else 1
    n2 = int(rng.integers(1, 4)) if levels >= 3 else 1
    bs1 = int(rng.integers(0, 3)) if n1 > 1 else int(rng.integers(0, 100))
    bs2 = int(rng.integers(0, 4)) if n2 > 1 else int(rng.integers(0, 100))
    row_span = (n1 - 1) * bs1 + (n2 - 1) * bs2
    buf_row = int(rng.integers(0, depth - row_span)) if row_span < depth else 0
    if row_span >= depth:
        bs1, bs2, buf_row = 1, 0, 0
        n1 = min(n1, depth)
        n2 = 1
    s0 = int(rng.integers(1, 4))
    s1 = int(rng.integers(n0 * s0, n0 * s0 + 20))
    s2 = int(rng.integers(n1 * s1, n1 * s1 + 30))
    span = (n0 - 1) * s0 + (n1 - 1) * s1 + (n2 - 1) * s2
    reg = int(rng.integers(0, 8))
    off = int(rng.integers(0, DRAM_BYTES - span - base[reg]))
    return dict(op=Opcode.LOAD, buf=buf, base_reg=reg, dram_offset=off,
                n0=n0, dram_stride0=s0, lane0=lane0, n1=n1, dram_stride1=s1, buf_stride1=bs1,
                n2=n2, dram_stride2=s2, buf_stride2=bs2, buf_row=buf_row)


def load_reference(bufs, image, insn, base):
    start = base[insn["base_reg"]] + insn["dram_offset"]
    ref = bufs[insn["buf"]]
    for i2 in range(insn["n2"]):
        for i1 in range(insn["n1"]):
            for i0 in range(insn["n0"]):
                a = start + i2 * insn["dram_stride2"] + i1 * insn["dram_stride1"] + i0 * insn["dram_stride0"]
                row = insn["buf_row"] + i2 * insn["buf_stride2"] + i1 * insn["buf_stride1"]
                ref[row, insn["lane0"] + i0] = image[a]
    return insn["n0"] * insn["n1"] * insn["n2"]


def dump_all(ctx, h):
    async def go():
        out = {}
        for b, buf in h.bufs.items():
            lanes, depth = buffer_geometry(h.cfg, b)
            out[b] = await buf_dump(ctx, buf, lanes, 8, depth)
        return out
    return go()


@pytest.mark.parametrize("bpc,latency", [(8, 5), (3, 2), (8, 1)])
def test_load_random(bpc, latency):
    cfg = make_config(dram_bytes_per_cycle=bpc, dram_latency=latency)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(bpc * 10 + latency)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [int(x) for x in rng.integers(0, 512, size=8)]
    ref = {b: np.zeros(buffer_geometry(cfg, b)[::-1], dtype=np.int64) for b in Buffer}
    insns = [random_load(rng, cfg, buf, levels, base)
             for levels in (1, 2, 3) for buf in Buffer for _ in range(2)]

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for insn in insns:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base)
            n = load_reference(ref, image, insn, base)
            assert result == "done", insn
            assert nbytes == n
            if bpc == 8:  # one byte per cycle, reads pipelined
                assert cycles <= n + latency + 3, (cycles, n)
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


def test_load_errors_write_nothing():
    cfg = make_config()
    h = LoadHarness(cfg)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [0, 100, 200, 0, 0, 0, 0, 0]
    ref = {b: np.zeros(buffer_geometry(cfg, b)[::-1], dtype=np.int64) for b in Buffer}
    good = dict(op=Opcode.LOAD, buf=Buffer.IFMAP, base_reg=1, dram_offset=0, n0=4,
                dram_stride0=1, lane0=0, n1=3, dram_stride1=8, buf_stride1=1, n2=2,
                dram_stride2=40, buf_stride2=5, buf_row=2)
    window = (100, 1000)  # bytes 100 .. 1099

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        assert (await execute(ctx, h.eng, good, base, window))[0] == "done"
        load_reference(ref, image, good, base)
        cases = [
            # last byte one past the window end
            (dict(good, dram_offset=1099 - 100 - 40 - 16 - 3 + 1), window, ErrorCode.DMA_OUT_OF_WINDOW),
            # first byte below the window
            (dict(good, base_reg=0, dram_offset=99), window, ErrorCode.DMA_OUT_OF_WINDOW),
            # past the end of the DRAM with the whole-DRAM window
            (dict(good, base_reg=0, dram_offset=DRAM_BYTES - 40 - 16 - 3), (0, 0),
             ErrorCode.DMA_OUT_OF_WINDOW),
            # base + offset wrapping past 2^32 is not allowed to alias
            (dict(good, base_reg=2, dram_offset=(1 << 32) - 200), (0, 0),
             ErrorCode.DMA_OUT_OF_WINDOW),
            # buffer row past the end (16 rows: 2 + 2 + 5 = 9 ok; 2 + 2 + 5*3 too far)
            (dict(good, buf_stride2=12), window, ErrorCode.BUFFER_OUT_OF_RANGE),
            # lane past the end (4 lanes)
            (dict(good, lane0=1), window, ErrorCode.BUFFER_OUT_OF_RANGE),
            (dict(good, buf=Buffer.WEIGHT), window, ErrorCode.BUFFER_OUT_OF_RANGE),
            # both wrong: the DRAM window is reported
            (dict(good, lane0=3, dram_offset=5000), window, ErrorCode.DMA_OUT_OF_WINDOW),
        ]
        for insn, win, code in cases:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win)
            assert result == ("error", code), insn
            assert nbytes == 0 and cycles == 2  # error pulses in t+2
        # The last byte exactly at the window end is fine.
        edge = dict(good, dram_offset=1099 - 100 - 40 - 16 - 3, buf_row=0)
        assert (await execute(ctx, h.eng, edge, base, window))[0] == "done"
        load_reference(ref, image, edge, base)
        # A zero count is a no-op even with out-of-range addresses.
        assert (await execute(ctx, h.eng, dict(good, n1=0, dram_offset=9999), base, window)) \
            == ("done", 2, 0)
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


# -- STORE --------------------------------------------------------------------------

def param_row_value(bias, m0, shift):
    row = 0
    for n, (b, m, s) in enumerate(zip(bias, m0, shift)):
        b, m, s = int(b), int(m), int(s)
        lane = (b & 0xFFFFFFFF) | ((m & 0xFFFFFFFF) << 32) | ((s & 0xFF) << 64)
        row |= lane << (72 * n)
    return row


@pytest.mark.parametrize("bpc", [8, 3])
def test_store_random(bpc):
    cfg = make_config(dram_bytes_per_cycle=bpc, dram_latency=3)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(bpc)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    psum = rng.integers(-(1 << 31), 1 << 31, size=(cfg.psum_rows, cfg.cols), dtype=np.int64)
    psum[:, 0] = rng.integers(-3000, 3000, size=cfg.psum_rows)
    params = []
    for _ in range(cfg.param_rows):
        params.append((rng.integers(-(1 << 20), 1 << 20, size=cfg.cols),
                       rng.integers(1 << 30, 1 << 31, size=cfg.cols),
                       rng.integers(-31, 8, size=cfg.cols)))
    base = [int(x) for x in rng.integers(0, 256, size=8)]
    insns = []
    for m_len, n_len in ((1, 1), (4, 3), (7, 2), (16, 3)):
        reg = int(rng.integers(8))
        stride = int(rng.integers(n_len, 40))
        lo, hi = sorted(int(x) for x in rng.integers(-128, 128, size=2))
        insns.append(dict(op=Opcode.STORE, base_reg=reg,
                          dram_offset=int(rng.integers(0, DRAM_BYTES - base[reg] - m_len * stride)),
                          dram_stride=stride,
                          psum_row=int(rng.integers(0, cfg.psum_rows - m_len + 1)),
                          param_row=int(rng.integers(cfg.param_rows)),
                          m_len=m_len, n_len=n_len, out_zp=int(rng.integers(-128, 128)),
                          act_min=lo, act_max=hi))
    expected = image.copy()

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        await write_rows(ctx, h.psum.w, [pack(row, 32) for row in psum])
        await write_rows(ctx, h.param.w, [param_row_value(*p) for p in params])
        for insn in insns:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base)
            n = insn["m_len"] * insn["n_len"]
            assert result == "done" and nbytes == n
            if bpc == 8:
                assert cycles <= n + 9, (cycles, n)
            bias, m0, shift = params[insn["param_row"]]
            start = base[insn["base_reg"]] + insn["dram_offset"]
            for mi in range(insn["m_len"]):
                for ni in range(insn["n_len"]):
                    y = requantize(psum[insn["psum_row"] + mi, ni], bias[ni], m0[ni], shift[ni],
                                   insn["out_zp"], insn["act_min"], insn["act_max"])
                    expected[start + mi * insn["dram_stride"] + ni] = np.uint8(y.view(np.uint8))
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), expected)

    simulate(h, bench)


def test_store_errors_write_nothing():
    cfg = make_config()
    h = StoreHarness(cfg)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [0, 512, 0, 0, 0, 0, 0, 0]
    good = dict(op=Opcode.STORE, base_reg=1, dram_offset=0, dram_stride=10, psum_row=0,
                param_row=0, m_len=4, n_len=3, out_zp=0, act_min=-128, act_max=127)
    window = (512, 256)  # bytes 512 .. 767; good covers 512 .. 544

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        cases = [
            (dict(good, dram_offset=256 - 32), ErrorCode.DMA_OUT_OF_WINDOW),  # last = 768
            (dict(good, base_reg=0, dram_offset=511), ErrorCode.DMA_OUT_OF_WINDOW),
            (dict(good, psum_row=13), ErrorCode.BUFFER_OUT_OF_RANGE),
            (dict(good, param_row=4), ErrorCode.BUFFER_OUT_OF_RANGE),
            (dict(good, n_len=4, dram_stride=10), ErrorCode.BUFFER_OUT_OF_RANGE),
        ]
        for insn, code in cases:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, window)
            assert result == ("error", code), insn
            assert nbytes == 0
        assert (await execute(ctx, h.eng, dict(good, m_len=0, dram_offset=5000), base, window)) \
            == ("done", 2, 0)
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), image)
        # The largest legal block in the window works.
        result, _, nbytes = await execute(ctx, h.eng, dict(good, dram_offset=256 - 33), base, window)
        assert result == "done" and nbytes == 12

    simulate(h, bench)
