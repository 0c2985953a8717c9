"""LoadEngine / StoreEngine against NumPy gathers and the golden requantization.

Harness: DramModel + engine + LaneBuffers; DRAM filled through the host back door,
buffers filled / read back through their free ports. Instructions are written as
field dicts and encoded with ``isa.encode`` (so field widths and signed fields are
checked the way the compiler's are). The transfer tests run at every bus width
(``bus_bits`` 64, 128, 256): expected bytes from NumPy, expected bus requests and cycles
from the module docstring's formulas or worked by hand.
"""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from celosia.rtl.buffers import LaneBuffer
from celosia.rtl.config import AccelConfig
from celosia.rtl.dma import (LoadEngine, StoreEngine, load_cycles, load_requests, store_chunks,
                              store_cycles)
from celosia.rtl.controller.signatures import load_pre_const
from celosia.rtl.dram import DramModel
from celosia.rtl import isa
from celosia.rtl.isa import PARAM_BYTES, Buffer, ErrorCode, Opcode, ParamRecord, encode
from celosia.sim.golden.requant import requantize
from helpers import host_read_bytes, host_write, image_words, pack, read_rows, simulate, write_rows

DRAM_BYTES = 2048
BUS_WIDTHS = (64, 128, 256)


def make_config(**kw):
    """A small config; the DRAM delivers a full bus word per cycle unless ``kw`` says otherwise."""
    base = dict(rows=4, cols=3, ifmap_rows=16, weight_rows=16, psum_rows=16, param_rows=4,
                dram_bytes=DRAM_BYTES, dram_latency=5)
    base.update(kw)
    base.setdefault("dram_bytes_per_cycle", base.get("bus_bits", 64) // 8)
    return AccelConfig(**base)


class LoadHarness(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = DramModel(cfg)
        self.eng = LoadEngine(cfg)
        self.bufs = {
            Buffer.IFMAP: LaneBuffer(cfg.rows, 8, cfg.ifmap_rows),
            Buffer.WEIGHT: LaneBuffer(cfg.cols, 8, cfg.weight_rows),
            Buffer.PARAM: LaneBuffer(PARAM_BYTES, 8, cfg.param_depth),
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
        self.param = LaneBuffer(PARAM_BYTES, 8, cfg.param_depth)
        self.ifmap = LaneBuffer(cfg.rows, 8, cfg.ifmap_rows, write_ports=2)  # w1: the engine's (to_buf)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dram = self.dram
        m.submodules.eng = self.eng
        m.submodules.psum = self.psum
        m.submodules.param = self.param
        m.submodules.ifmap = self.ifmap
        wiring.connect(m, engine=self.eng.bus, dram=self.dram.bus)
        wiring.connect(m, engine=self.eng.psum_rd, psum=self.psum.r1)
        wiring.connect(m, engine=self.eng.param_rd, param=self.param.r0)
        wiring.connect(m, engine=self.eng.ifmap_wr, ifmap=self.ifmap.w1)
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


async def execute(ctx, eng, insn, base, window=(0, 0), timeout=3000, requests=None, faults=None):
    """Issue one instruction; returns ("done" | ("error", code), cycles from accept, bytes
    counted). ``requests``: a list that gets the accepted bus requests as
    ``(word address, we, wmask)``; ``faults``: a list that gets ``fault_addr`` of an
    error."""
    for i, b in enumerate(base):
        ctx.set(eng.base[i], b)
    ctx.set(eng.window_base, window[0])
    ctx.set(eng.window_size, window[1])
    fields = {k: v for k, v in insn.items() if k != "op"}
    ctx.set(eng.insn.payload.as_value(), encode(insn["op"], **fields))
    if isinstance(eng, LoadEngine):      # what the load queue hands the DMA with the LOAD
        ctx.set(eng.pre, load_pre_const(fields))
    ctx.set(eng.insn.valid, 1)
    while True:
        _, _, ready = await ctx.tick().sample(eng.insn.ready)
        if ready:
            break
    ctx.set(eng.insn.valid, 0)
    nbytes = 0
    req = eng.bus.req
    for cycle in range(1, timeout):
        _, _, done, error, code, busy, count, valid, ready, payload, fault = await ctx.tick().sample(
            eng.done, eng.error, eng.error_code, eng.busy, eng.bytes,
            req.valid, req.ready, req.payload, eng.fault_addr)
        nbytes += count
        if requests is not None and valid and ready:
            requests.append((payload.addr, payload.we, payload.wmask))
        if done or error:
            assert not busy
            if error and faults is not None:
                faults.append(fault)
            return ("done" if done else ("error", code)), cycle, nbytes
        assert busy
    raise AssertionError("engine timed out")


# -- LOAD ---------------------------------------------------------------------------

def buffer_geometry(cfg, buf):
    return {Buffer.IFMAP: (cfg.rows, cfg.ifmap_rows), Buffer.WEIGHT: (cfg.cols, cfg.weight_rows),
            Buffer.PARAM: (PARAM_BYTES, cfg.param_depth)}[buf]


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
    """Apply ``insn`` to the reference buffers as ``rtl/isa.py`` (LoadInsn) defines it,
    in loop order (later elements win where buffer positions repeat). Returns the
    number of bytes read from DRAM."""
    start = base[insn["base_reg"]] + insn["dram_offset"]
    ref = bufs[insn["buf"]]
    pad_en = insn.get("pad_en", 0)
    reads = 0
    for i2 in range(insn["n2"]):
        for i1 in range(insn["n1"]):
            row = insn["buf_row"] + i2 * insn["buf_stride2"] + i1 * insn["buf_stride1"]
            lanes = np.arange(insn["lane0"], insn["lane0"] + insn["n0"])
            if pad_en and not (insn["pad_lo1"] <= i1 < insn["pad_hi1"]
                               and insn["pad_lo2"] <= i2 < insn["pad_hi2"]):
                ref[row, lanes] = insn["pad_value"] & 0xFF
                continue
            a = (start + i2 * insn["dram_stride2"] + i1 * insn["dram_stride1"]
                 + np.arange(insn["n0"]) * insn["dram_stride0"])
            assert a.min() >= 0, "reference read below address 0"
            ref[row, lanes] = image[a]
            reads += insn["n0"]
    return reads


def valid_ranges(insn):
    """The clamped read ranges ``(lo1, hi1, lo2, hi2)`` of a LOAD (empty when lo >= hi)."""
    n1, n2 = insn["n1"], insn["n2"]
    if not insn.get("pad_en", 0):
        return 0, n1, 0, n2
    return (min(insn["pad_lo1"], n1), min(insn["pad_hi1"], n1),
            min(insn["pad_lo2"], n2), min(insn["pad_hi2"], n2))


def random_padded_load(rng, cfg, buf, levels, base):
    """A random LOAD with padding: random pad ranges (some past the loop ends, some
    empty) and a DRAM offset (often negative) that puts the read region inside the DRAM."""
    insn = random_load(rng, cfg, buf, levels, base)
    n1, n2 = insn["n1"], insn["n2"]
    pad = dict(pad_en=1, pad_value=int(rng.integers(-128, 128)))
    for k, n in ((1, n1), (2, n2)):
        kind = rng.integers(4)
        if kind == 0:    # no padding on this level (hi past the end means "to the end")
            lo, hi = 0, int(rng.integers(n, 4096))
        elif kind == 1:  # empty valid range
            lo = int(rng.integers(0, n + 2))
            hi = int(rng.integers(0, lo + 1))
        else:            # pad before and / or after
            lo = int(rng.integers(0, n + 1))
            hi = int(rng.integers(lo, n + 3))
        pad[f"pad_lo{k}"], pad[f"pad_hi{k}"] = lo, hi
    insn.update(pad)
    lo1, hi1, lo2, hi2 = valid_ranges(insn)
    reg = insn["base_reg"]
    if lo1 < hi1 and lo2 < hi2:
        s0, s1, s2 = insn["dram_stride0"], insn["dram_stride1"], insn["dram_stride2"]
        skip = lo1 * s1 + lo2 * s2
        span = (insn["n0"] - 1) * s0 + (hi1 - 1) * s1 + (hi2 - 1) * s2 - skip
        first = int(rng.integers(0, DRAM_BYTES - span))  # lowest byte read
        insn["dram_offset"] = first - skip - base[reg]
    else:  # nothing is read: any offset is fine
        insn["dram_offset"] = int(rng.integers(-(1 << 31), 1 << 31))
    return insn


def empty_buffers(cfg):
    return {b: np.zeros(buffer_geometry(cfg, b)[::-1], dtype=np.int64) for b in Buffer}


def dump_all(ctx, h):
    async def go():
        out = {}
        for b, buf in h.bufs.items():
            lanes, depth = buffer_geometry(h.cfg, b)
            out[b] = await buf_dump(ctx, buf, lanes, 8, depth)
        return out
    return go()


@pytest.mark.parametrize("bits,bpc,latency", [(64, 8, 5), (64, 3, 2), (64, 8, 1), (128, 16, 5),
                                              (128, 6, 2), (256, 32, 3), (256, 12, 1)])
def test_load_random(bits, bpc, latency):
    cfg = make_config(dram_bytes_per_cycle=bpc, dram_latency=latency, bus_bits=bits)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(bits + bpc * 10 + latency)
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
            if bpc == cfg.bus_bytes:  # a request per cycle, reads pipelined
                assert cycles == load_cycles(insn, cfg, base), insn
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_errors_write_nothing(bits):
    cfg = make_config(bus_bits=bits)
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
        # FAULT_ADDR (None: not a window fault): the first byte when it lies below the
        # window, else the last byte (good spans offset + 0 .. offset + 40 + 16 + 3).
        cases = [
            # last byte one past the window end
            (dict(good, dram_offset=1099 - 100 - 40 - 16 - 3 + 1), window, ErrorCode.DMA_OUT_OF_WINDOW,
             1100),
            # first byte below the window
            (dict(good, base_reg=0, dram_offset=99), window, ErrorCode.DMA_OUT_OF_WINDOW, 99),
            # past the end of the DRAM with the whole-DRAM window
            (dict(good, base_reg=0, dram_offset=DRAM_BYTES - 40 - 16 - 3), (0, 0),
             ErrorCode.DMA_OUT_OF_WINDOW, DRAM_BYTES),
            # base + (signed) offset below address 0 is not allowed to wrap (FAULT_ADDR: the
            # negative first byte in 32-bit two's complement)
            (dict(good, base_reg=2, dram_offset=-201), (0, 0), ErrorCode.DMA_OUT_OF_WINDOW,
             (1 << 32) - 1),
            (dict(good, base_reg=0, dram_offset=-(1 << 31)), (0, 0), ErrorCode.DMA_OUT_OF_WINDOW,
             1 << 31),
            # the largest positive offset (far past the end of the DRAM)
            (dict(good, base_reg=2, dram_offset=(1 << 31) - 1), (0, 0),
             ErrorCode.DMA_OUT_OF_WINDOW, 200 + (1 << 31) - 1 + 59),
            # buffer row past the end (16 rows: 2 + 2 + 5 = 9 ok; 2 + 2 + 5*3 too far)
            (dict(good, buf_stride2=12), window, ErrorCode.BUFFER_OUT_OF_RANGE, None),
            # lane past the end (4 lanes)
            (dict(good, lane0=1), window, ErrorCode.BUFFER_OUT_OF_RANGE, None),
            (dict(good, buf=Buffer.WEIGHT), window, ErrorCode.BUFFER_OUT_OF_RANGE, None),
            # both wrong: the DRAM window is reported
            (dict(good, lane0=3, dram_offset=5000), window, ErrorCode.DMA_OUT_OF_WINDOW, 5159),
        ]
        for insn, win, code, fault in cases:
            faults = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win, faults=faults)
            assert result == ("error", code), insn
            assert nbytes == 0 and cycles == 2  # error pulses in t+2
            if fault is not None:
                assert faults == [fault], insn
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


@pytest.mark.parametrize("bits,bpc,latency", [(64, 8, 5), (64, 3, 2), (64, 8, 1), (128, 16, 2),
                                              (256, 32, 4), (256, 9, 1)])
@pytest.mark.parametrize("levels", [2, 3])
def test_load_padded_random(levels, bits, bpc, latency):
    cfg = make_config(dram_bytes_per_cycle=bpc, dram_latency=latency, bus_bits=bits)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(1000 * levels + bits + bpc * 10 + latency)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [int(x) for x in rng.integers(0, 512, size=8)]
    ref = empty_buffers(cfg)
    insns = [random_padded_load(rng, cfg, buf, levels, base) for buf in Buffer for _ in range(8)]
    # pad_en = 0: the pad fields are ignored.
    insns += [dict(random_load(rng, cfg, buf, levels, base), pad_en=0, pad_lo1=1, pad_hi1=1,
                   pad_lo2=2, pad_hi2=0, pad_value=-1) for buf in Buffer]
    insns = [insns[i] for i in rng.permutation(len(insns))]
    assert any(valid_ranges(i)[0] >= valid_ranges(i)[1] for i in insns)  # empty regions
    assert any(i.get("pad_en") and i["pad_hi1"] > i["n1"] for i in insns)  # hi past the end
    assert any(i["dram_offset"] < 0 for i in insns)

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for insn in insns:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base)
            reads = load_reference(ref, image, insn, base)
            assert result == "done", insn
            assert nbytes == reads, insn
            if bpc == cfg.bus_bytes:  # a request per cycle, padded or read
                assert cycles == load_cycles(insn, cfg, base), insn
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


# A 4x5 feature map with 3 channels (HWC) at byte FMAP: padded by 1 on every side it is
# 6x7 ifmap rows; the offset points at the (virtual) padded top-left pixel.
H, W, C, PAD = 4, 5, 3, 1
FMAP = 10  # < (PAD*W + PAD)*C = 18: the first (padded) address is negative


def conv_load(**kw):
    insn = dict(op=Opcode.LOAD, buf=Buffer.IFMAP, base_reg=2,
                dram_offset=-(PAD * W + PAD) * C,
                n0=C, dram_stride0=1, lane0=0,
                n1=W + 2 * PAD, dram_stride1=C, buf_stride1=1,
                n2=H + 2 * PAD, dram_stride2=W * C, buf_stride2=W + 2 * PAD, buf_row=0,
                pad_en=1, pad_lo1=PAD, pad_hi1=PAD + W, pad_lo2=PAD, pad_hi2=PAD + H, pad_value=-7)
    insn.update(kw)
    return insn


#: Cycles of conv_load() by hand (see the test) at each bus width.
CONV_CYCLES = {64: 53, 128: 51, 256: 50}


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_conv_padding_negative_offset(bits):
    cfg = make_config(ifmap_rows=64, bus_bits=bits)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [0, 0, FMAP, 0, 0, 0, 0, 0]
    window = (FMAP, H * W * C)  # exactly the feature map
    fmap = image[FMAP:FMAP + H * W * C].reshape(H, W, C)
    padded = np.pad(fmap.astype(np.int64), ((PAD, PAD), (PAD, PAD), (0, 0)), constant_values=0xF9)
    expected = np.zeros((cfg.ifmap_rows, cfg.rows), dtype=np.int64)
    expected[:(H + 2 * PAD) * (W + 2 * PAD), :C] = padded.reshape(-1, C)

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        result, cycles, nbytes = await execute(ctx, h.eng, conv_load(), base, window)
        assert result == "done" and nbytes == H * W * C
        # By hand: 6 x 7 = 42 runs of C = 3 bytes; 22 padded (one request each) and 20 read,
        # pixel p from byte 10 + 3p. (10 + 3p) % 8 goes 2, 5, 0, 3, 6, 1, 4, 7, ...: the run
        # crosses into the next word (2 reads) only from byte 6 or 7, i.e. p = 4, 7, 12, 15.
        # Requests: 22 + 20 + 4 = 46; cycles 46 + dram_latency (5) + 2 = 53.
        # 128 bits: (10 + 3p) % 16 is 14 or 15 only for p = 12, 7: 22 + 22 + 5 + 2 = 51.
        # 256 bits: (10 + 3p) % 32 >= 30 only for p = 7 (31): 22 + 21 + 5 + 2 = 50.
        assert cycles == CONV_CYCLES[bits] == load_cycles(conv_load(), cfg, base)
        got = await dump_all(ctx, h)
        np.testing.assert_array_equal(got[Buffer.IFMAP], expected)
        # The NumPy reference agrees.
        ref = empty_buffers(cfg)
        load_reference(ref, image, conv_load(), base)
        np.testing.assert_array_equal(ref[Buffer.IFMAP], expected)

    simulate(h, bench)


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_padded_out_of_window(bits):
    cfg = make_config(ifmap_rows=64, bus_bits=bits)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(12)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [0, 0, FMAP, 0, 0, 0, 0, 0]
    window = (FMAP, H * W * C)
    ref = empty_buffers(cfg)
    n1, n2 = W + 2 * PAD, H + 2 * PAD

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        cases = [
            # the valid region starts one padded row too early: below the window ...
            (conv_load(pad_lo2=0), window),
            # ... and one padded pixel too early
            (conv_load(pad_lo1=0), window),
            # ... and below address 0 with the whole-DRAM window
            (conv_load(pad_lo2=0), (0, 0)),
            (conv_load(pad_lo1=0, pad_lo2=0), (0, 0)),
            # the valid region ends one row / one pixel after the window
            (conv_load(pad_hi2=PAD + H + 1), window),
            (conv_load(pad_hi1=PAD + W + 1), window),
            # pad_hi past the loop end means "to the end": the padded bottom row is read
            (conv_load(pad_hi2=4095), window),
            # no padding at all: the plain range starts below 0
            (conv_load(pad_en=0), (0, 0)),
        ]
        for insn, win in cases:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win)
            assert result == ("error", ErrorCode.DMA_OUT_OF_WINDOW), insn
            assert nbytes == 0 and cycles == 2
        # An empty valid region reads nothing, so any offset is fine: all pad_value.
        for lo, hi, value in ((3, 3, -100), (5, 2, 127), (n1, n1 + 5, -128), (4095, 4095, 0)):
            insn = conv_load(pad_lo1=lo, pad_hi1=hi, dram_offset=-(1 << 31), pad_value=value)
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, window)
            assert result == "done" and nbytes == 0
            assert cycles == n1 * n2 + 3  # one pad request per 3-lane run
            load_reference(ref, image, insn, base)
            np.testing.assert_array_equal(ref[Buffer.IFMAP][:n1 * n2, :C], value & 0xFF)
        # The buffer check still covers padded rows (all rows are written).
        result, _, _ = await execute(ctx, h.eng, conv_load(buf_row=64 - n1 * n2 + 1), base, window)
        assert result == ("error", ErrorCode.BUFFER_OUT_OF_RANGE)
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


# -- word-wide transfers --------------------------------------------------------------

def words_of(first, n, nb=8):
    """The bus words of ``nb`` bytes a run of ``n`` bytes from byte address ``first`` touches."""
    return list(range(first // nb, (first + n - 1) // nb + 1))


def load_setup(seed, **kw):
    """Config ``make_config(**kw)``, its LoadHarness and a random DRAM image."""
    cfg = make_config(**kw)
    rng = np.random.default_rng(seed)
    return cfg, LoadHarness(cfg), rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)


def plain_load(**kw):
    """A LOAD into ifmap row 0: one run from byte 0 to lane 0 unless ``kw`` says otherwise."""
    insn = dict(op=Opcode.LOAD, buf=Buffer.IFMAP, base_reg=0, dram_offset=0, n0=1,
                dram_stride0=1, lane0=0, n1=1, dram_stride1=0, buf_stride1=0, n2=1,
                dram_stride2=0, buf_stride2=0, buf_row=0)
    insn.update(kw)
    return insn


#: Run lengths of test_load_every_alignment per bus width: every length up to 20 at 64
#: bits; at the wider buses the lengths around one and two words.
ALIGNMENT_LENGTHS = {64: range(1, 21), 128: (1, 2, 7, 15, 16, 17, 23, 31, 32, 33, 38),
                     256: (1, 2, 13, 31, 32, 33, 47, 63, 64)}


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_every_alignment(bits):
    """Runs starting at every byte of a bus word: one read per word touched, written to
    lanes that start anywhere in the row."""
    latency = 5
    nb = bits // 8
    lanes = max(32, min(64, 2 * nb + 8))
    cfg, h, image = load_setup(21, rows=lanes, weight_rows=2 * lanes, dram_latency=latency,
                               bus_bits=bits)
    base = [0, 1024, 0, 0, 0, 0, 0, 0]
    ref = empty_buffers(cfg)
    cases = [(o, n) for o in range(nb) for n in ALIGNMENT_LENGTHS[bits]]

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for k, (o, n) in enumerate(cases):
            first = nb * (k % (768 // nb)) + o  # base 1024 is a word boundary
            insn = plain_load(base_reg=1, dram_offset=first, n0=n,
                              lane0=(3 * o + n) % (lanes + 1 - n), buf_row=k % 16)
            requests = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, requests=requests)
            load_reference(ref, image, insn, base)
            words = -(-(o + n) // nb)  # ceil((o + n) / nb) reads
            assert result == "done" and nbytes == n, insn
            assert requests == [(w, 0, 0) for w in words_of(1024 + first, n, nb)], insn
            assert len(requests) == words
            assert cycles == words + latency + 2 == load_cycles(insn, cfg, base), insn
        got = await dump_all(ctx, h)
        np.testing.assert_array_equal(got[Buffer.IFMAP], ref[Buffer.IFMAP])

    simulate(h, bench)


def wide_conv_load(**kw):
    """A 2x3 feature map of 20 channels at byte 5, padded by 1: a 4x5 grid of runs of
    20 lanes from lane 7 of a 64-lane row."""
    insn = dict(op=Opcode.LOAD, buf=Buffer.IFMAP, base_reg=0, dram_offset=5 - (3 + 1) * 20,
                n0=20, dram_stride0=1, lane0=7,
                n1=5, dram_stride1=20, buf_stride1=1,
                n2=4, dram_stride2=60, buf_stride2=5, buf_row=3,
                pad_en=1, pad_lo1=1, pad_hi1=4, pad_lo2=1, pad_hi2=3, pad_value=-3)
    insn.update(kw)
    return insn


#: (reads, pads) of wide_conv_load() by hand at each bus width (see the test).
WIDE_CONV_REQUESTS = {64: (21, 42), 128: (13, 28), 256: (9, 14)}


@pytest.mark.parametrize("bits,bpc,latency", [(64, 8, 1), (64, 8, 20), (64, 3, 4), (64, 1, 2),
                                              (128, 16, 3), (128, 5, 2), (256, 32, 2), (256, 7, 3)])
def test_load_wide_rows_padded(bits, bpc, latency):
    """Padded runs (ceil(20 / B) requests of <= B lanes each) between read runs, in rows of
    64 lanes."""
    nb = bits // 8
    cfg, h, image = load_setup(22, rows=64, ifmap_rows=32, weight_rows=128, bus_bits=bits,
                               dram_bytes_per_cycle=bpc, dram_latency=latency)
    base = [0] * 8
    insn = wide_conv_load()
    fmap = image[5:5 + 6 * 20].reshape(2, 3, 20).astype(np.int64)
    expected = np.zeros((cfg.ifmap_rows, cfg.rows), dtype=np.int64)
    expected[3:3 + 20, 7:27] = np.pad(fmap, ((1, 1), (1, 1), (0, 0)),
                                      constant_values=0xFD).reshape(20, 20)

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        requests = []
        result, cycles, nbytes = await execute(ctx, h.eng, insn, base, requests=requests)
        assert result == "done" and nbytes == 6 * 20
        # By hand: 20 runs, 14 padded: 14 * ceil(20 / 8) = 42 pad requests. Pixel p reads
        # bytes 5 + 20p ..: from byte 5 of a word (p even: ceil(25 / 8) = 4 reads) or byte 1
        # (p odd: ceil(21 / 8) = 3 reads): 3 * 4 + 3 * 3 = 21 reads. 63 requests.
        # 128 bits: 14 * 2 pads; pixel p from byte (5 + 20p) % 16 = 5, 9, 13, 1, 5, 9:
        # ceil(25, 29, 33, 21, 25, 29 / 16) = 2 + 2 + 3 + 2 + 2 + 2 = 13 reads.
        # 256 bits: 14 pads; from byte (5 + 20p) % 32 = 5, 25, 13, 1, 21, 9:
        # ceil(25, 45, 33, 21, 41, 29 / 32) = 1 + 2 + 2 + 1 + 2 + 1 = 9 reads.
        reads, pads = WIDE_CONV_REQUESTS[bits]
        assert len(requests) == reads
        assert requests == [(w, 0, 0) for p in range(6) for w in words_of(5 + 20 * p, 20, nb)]
        assert load_requests(insn, cfg) == (reads, pads)
        if bpc == nb:
            assert cycles == reads + pads + latency + 2 == load_cycles(insn, cfg)
        got = await dump_all(ctx, h)
        np.testing.assert_array_equal(got[Buffer.IFMAP], expected)
        ref = empty_buffers(cfg)
        load_reference(ref, image, insn, base)
        np.testing.assert_array_equal(ref[Buffer.IFMAP], expected)

    simulate(h, bench)


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_strided_elements(bits):
    """dram_stride0 != 1: one read per element, even when several share a word."""
    nb = bits // 8
    cfg, h, image = load_setup(23, rows=16, weight_rows=32, dram_latency=3, bus_bits=bits)
    base = [0] * 8
    ref = empty_buffers(cfg)

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for s0, n0, first in ((2, 9, 3), (3, 16, 100), (0, 5, 7), (17, 4, 1)):
            insn = plain_load(dram_offset=first, n0=n0, dram_stride0=s0, lane0=16 - n0, n1=2,
                              dram_stride1=64, buf_stride1=1, buf_row=2)
            requests = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, requests=requests)
            load_reference(ref, image, insn, base)
            assert result == "done" and nbytes == 2 * n0
            assert [a for a, _, _ in requests] == [(first + 64 * i1 + s0 * i0) // nb
                                                    for i1 in range(2) for i0 in range(n0)]
            assert cycles == 2 * n0 + 3 + 2 == load_cycles(insn, cfg, base)
        got = await dump_all(ctx, h)
        np.testing.assert_array_equal(got[Buffer.IFMAP], ref[Buffer.IFMAP])

    simulate(h, bench)


#: The bus words holding DRAM bytes 2035 .. 2047 at each bus width.
END_WORDS = {64: [254, 255], 128: [127], 256: [63]}


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_load_dram_end_and_out_of_window(bits):
    """A run that ends on the last DRAM byte works; one byte further writes nothing."""
    cfg, h, image = load_setup(24, rows=16, weight_rows=32, ifmap_rows=16, bus_bits=bits)
    base = [0] * 8
    ref = empty_buffers(cfg)
    end = plain_load(dram_offset=DRAM_BYTES - 13, n0=13, lane0=2, n1=2, buf_stride1=4, buf_row=1)
    window = (DRAM_BYTES - 40, 40)

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for win, row in (((0, 0), 1), (window, 9)):
            insn = dict(end, buf_row=row)
            requests = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win, requests=requests)
            load_reference(ref, image, insn, base)
            # Bytes 2035 .. 2047 twice: from byte 3 of word 254, words 254 and 255 (64 bits);
            # byte 3 of word 127 (128 bits); bytes 19 .. 31 of word 63 (256 bits).
            words = END_WORDS[bits]
            assert result == "done" and nbytes == 26
            assert requests == [(w, 0, 0) for w in words] * 2
            assert cycles == 2 * len(words) + cfg.dram_latency + 2 == load_cycles(insn, cfg, base)
        before = await dump_all(ctx, h)
        for insn, win in ((dict(end, dram_offset=DRAM_BYTES - 12), (0, 0)),       # 1 past DRAM
                          (dict(end, dram_offset=DRAM_BYTES - 41, buf_row=5), window),  # below
                          # padded, wide rows, the first pixel column read from byte -15
                          (dict(wide_conv_load(), buf_row=0, lane0=0, n0=16, n2=3, pad_lo1=0),
                           (0, 0))):
            requests = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win, requests=requests)
            assert result == ("error", ErrorCode.DMA_OUT_OF_WINDOW), insn
            assert (cycles, nbytes, requests) == (2, 0, [])
        after = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(after[b], before[b])
            np.testing.assert_array_equal(after[b], ref[b])

    simulate(h, bench)


# -- STORE --------------------------------------------------------------------------

def param_rows_value(bias, m0, shift):
    """The parameter-buffer rows of channels (bias, m0, shift): one channel per row."""
    return [isa.pack(ParamRecord, bias=int(b), m0=int(m), shift=int(s)) for b, m, s in zip(bias, m0, shift)]


async def store_fill(ctx, h, image, psum, params):
    """DRAM ``image``, psum rows ``psum``, parameter rows ``params`` = (bias, m0, shift)."""
    await dram_fill(ctx, h.dram, image)
    await write_rows(ctx, h.psum.w, [pack(row, 32) for row in psum])
    await write_rows(ctx, h.param.w, param_rows_value(*params))


@pytest.mark.parametrize("bits,bpc,lanes", [(64, 8, 1), (64, 3, 1), (128, 16, 1), (256, 32, 1),
                                             (256, 5, 1), (64, 3, 3), (128, 16, 2)])
def test_store_random(bits, bpc, lanes):
    cfg = make_config(dram_bytes_per_cycle=bpc, dram_latency=3, bus_bits=bits, ppu_lanes=lanes)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(bits + bpc + lanes)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    psum = rng.integers(-(1 << 31), 1 << 31, size=(cfg.psum_rows, cfg.cols), dtype=np.int64)
    psum[:, 0] = rng.integers(-3000, 3000, size=cfg.psum_rows)
    params = (rng.integers(-(1 << 20), 1 << 20, size=cfg.param_depth),
              rng.integers(1 << 30, 1 << 31, size=cfg.param_depth),
              rng.integers(-31, 8, size=cfg.param_depth))
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
                          param_row=int(rng.integers(cfg.param_depth - n_len + 1)),
                          m_len=m_len, n_len=n_len, out_zp=int(rng.integers(-128, 128)),
                          act_min=lo, act_max=hi,
                          single_round=len(insns) % 2))   # both roundings (left shifts differ)
    expected = image.copy()

    async def bench(ctx):
        await store_fill(ctx, h, image, psum, params)
        for insn in insns:
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base)
            n = insn["m_len"] * insn["n_len"]
            assert result == "done" and nbytes == n
            if bpc == cfg.bus_bytes:
                assert cycles == store_cycles(insn, cfg, base), (cycles, n)
            bias, m0, shift = (p[insn["param_row"]:] for p in params)
            start = base[insn["base_reg"]] + insn["dram_offset"]
            for mi in range(insn["m_len"]):
                for ni in range(insn["n_len"]):
                    y = requantize(psum[insn["psum_row"] + mi, ni], bias[ni], m0[ni], shift[ni],
                                   insn["out_zp"], insn["act_min"], insn["act_max"],
                                   single_round=insn["single_round"])
                    expected[start + mi * insn["dram_stride"] + ni] = np.uint8(y.view(np.uint8))
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), expected)

    simulate(h, bench)


@pytest.mark.parametrize("bits,lanes", [(64, 1), (256, 1), (64, 4), (256, 3)])
def test_store_to_ifmap_buffer(bits, lanes):
    """``to_buf``: byte (m, n) goes to ifmap row ``buf_row + m*buf_stride``, lane ``lane0 + n``
    (expected from NumPy and the golden requantization), in ``store_cycles``, with no DRAM
    access (the DRAM fields are ignored: an offset outside the window is fine); a block
    past the last row or lane is an error that writes nothing. With ``ppu_lanes`` > 1, up
    to ``lanes`` lanes per write (chunks do not depend on DRAM words)."""
    cfg = make_config(bus_bits=bits, rows=6, cols=4, ppu_lanes=lanes)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(bits + 11 + lanes)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    psum = rng.integers(-5000, 5000, size=(cfg.psum_rows, cfg.cols), dtype=np.int64)
    params = (rng.integers(-2000, 2000, size=cfg.param_depth),
              rng.integers(1 << 30, 1 << 31, size=cfg.param_depth),
              rng.integers(-8, 2, size=cfg.param_depth))
    initial = rng.integers(0, 256, size=(cfg.ifmap_rows, cfg.rows), dtype=np.int64)
    base = [0, 512, 0, 0, 0, 0, 0, 0]
    window = (512, 256)

    def insn(m_len, n_len, buf_row, buf_stride, lane0, **kw):
        return dict(dict(op=Opcode.STORE, base_reg=0, dram_offset=DRAM_BYTES + 100, dram_stride=0,
                         psum_row=int(rng.integers(cfg.psum_rows - m_len + 1)),
                         param_row=int(rng.integers(cfg.param_depth - n_len + 1)), m_len=m_len,
                         n_len=n_len, out_zp=int(rng.integers(-20, 20)), act_min=-100, act_max=120,
                         to_buf=1, buf_row=buf_row, buf_stride=buf_stride, lane0=lane0), **kw)

    good = [insn(1, 1, 15, 0, 5), insn(3, 4, 1, 2, 2), insn(4, 3, 8, 1, 0), insn(2, 4, 0, 7, 1),
            insn(5, 2, 3, 1, 4)]
    bad = [insn(3, 4, 12, 2, 0),   # last row 16
           insn(1, 4, 0, 1, 3),    # lanes 3..6 of 6
           insn(2, 5, 0, 1, 0)]    # n_len > cols

    async def bench(ctx):
        await store_fill(ctx, h, image, psum, params)
        await write_rows(ctx, h.ifmap.w, [pack(row, 8) for row in initial])
        expected = initial.copy()
        for d in good:
            result, cycles, nbytes = await execute(ctx, h.eng, d, base, window)
            assert (result, cycles, nbytes) == ("done", store_cycles(d, cfg), 0), d
            p0 = d["param_row"]
            acc = psum[d["psum_row"]:d["psum_row"] + d["m_len"], :d["n_len"]]
            y = requantize(acc, *(p[p0:p0 + d["n_len"]] for p in params), d["out_zp"],
                           d["act_min"], d["act_max"])
            for mi in range(d["m_len"]):
                row = d["buf_row"] + mi * d["buf_stride"]
                expected[row, d["lane0"]:d["lane0"] + d["n_len"]] = y[mi].astype(np.int8).view(np.uint8)
        for d in bad:
            result, cycles, nbytes = await execute(ctx, h.eng, d, base, window)
            assert (result, cycles, nbytes) == (("error", ErrorCode.BUFFER_OUT_OF_RANGE), 2, 0), d
        got = await buf_dump(ctx, h.ifmap, cfg.rows, 8, cfg.ifmap_rows)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), image)

    simulate(h, bench)


@pytest.mark.parametrize("bits,lanes", [(64, 1), (128, 1), (256, 1), (64, 3)])
def test_store_errors_write_nothing(bits, lanes):
    cfg = make_config(bus_bits=bits, ppu_lanes=lanes)
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
            (dict(good, param_row=cfg.param_depth - 2), ErrorCode.BUFFER_OUT_OF_RANGE),  # 3 rows
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


#: A driver-like memory map (Program.layout order) for the protected-region tests:
#: program 0..255, weights 256..511, inputs 512..639, scratch 640..767, outputs 768..1023.
REGIONS = {"program": 0, "static": 256, "input": 512, "scratch": 640, "output": 768, "end": 1024}
READ_WINDOW = (0, REGIONS["end"])
WRITE_WINDOW = (REGIONS["scratch"], REGIONS["end"] - REGIONS["scratch"])


@pytest.mark.parametrize("bits,lanes", [(64, 1), (256, 3)])
def test_store_protected_regions(bits, lanes):
    """With the driver's windows (reads: the whole image; writes: scratch + outputs) a STORE
    into the program, the weights or the inputs faults with DMA_OUT_OF_WINDOW, FAULT_ADDR
    the first byte it would have written (the last one when it runs off the window's
    top), and writes nothing; stores into scratch and outputs work."""
    cfg = make_config(bus_bits=bits, ppu_lanes=lanes)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(21)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    base = [REGIONS["program"], REGIONS["static"], REGIONS["input"], REGIONS["output"],
            REGIONS["scratch"], 0, 0, 0]
    blk = dict(op=Opcode.STORE, dram_stride=8, psum_row=0, param_row=0, m_len=3, n_len=2,
               out_zp=0, act_min=-128, act_max=127)   # bytes +0 .. +2*8+1 = +17
    bad = [(dict(blk, base_reg=0, dram_offset=40), 40),                   # over the program
           (dict(blk, base_reg=1, dram_offset=0), 256),                   # over the weights
           (dict(blk, base_reg=2, dram_offset=100), 612),                 # over the inputs
           (dict(blk, base_reg=4, dram_offset=-1), 639),                  # one byte below scratch
           (dict(blk, base_reg=3, dram_offset=256 - 17), 1024),           # one byte past the outputs
           (dict(blk, base_reg=0, dram_offset=0, dram_stride=400), 0)]    # strided across regions

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for insn, fault in bad:
            faults, requests = [], []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, WRITE_WINDOW,
                                                   requests=requests, faults=faults)
            assert (result, cycles, nbytes, requests) == (("error", ErrorCode.DMA_OUT_OF_WINDOW), 2,
                                                          0, []), insn
            assert faults == [fault], insn
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), image)
        # The first and last legal blocks of the write window.
        for reg, off in ((4, 0), (3, 256 - 18)):
            result, _, nbytes = await execute(ctx, h.eng, dict(blk, base_reg=reg, dram_offset=off),
                                              base, WRITE_WINDOW)
            assert (result, nbytes) == ("done", 6)
        after = await dram_dump(ctx, h.dram, DRAM_BYTES)
        np.testing.assert_array_equal(after[:REGIONS["scratch"]], image[:REGIONS["scratch"]])

    simulate(h, bench)


@pytest.mark.parametrize("bits", [64, 256])
def test_load_outside_read_window(bits):
    """LOADs may read every region of the image (outputs and scratch included) but nothing
    outside the read window: below its base, or past its end though inside the DRAM; the
    fault names the byte and nothing is read or written."""
    cfg = make_config(bus_bits=bits)
    h = LoadHarness(cfg)
    rng = np.random.default_rng(22)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    window = (64, REGIONS["end"] - 64)   # a read window that starts above address 0
    ld = dict(op=Opcode.LOAD, buf=Buffer.IFMAP, base_reg=0, n0=4, dram_stride0=1, lane0=0,
              n1=2, dram_stride1=8, buf_stride1=1, n2=1, dram_stride2=0, buf_stride2=0,
              buf_row=0)   # bytes +0 .. +11
    base = [0] * 8
    ref = {b: np.zeros(buffer_geometry(cfg, b)[::-1], dtype=np.int64) for b in Buffer}

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        for off in (64, REGIONS["output"], REGIONS["end"] - 12):   # first, outputs, last
            assert (await execute(ctx, h.eng, dict(ld, dram_offset=off), base, window))[0] == "done"
        load_reference(ref, image, dict(ld, dram_offset=REGIONS["end"] - 12), base)
        for off, fault in ((63, 63), (REGIONS["end"] - 11, REGIONS["end"]), (1500, 1511)):
            faults, requests = [], []
            result, _, nbytes = await execute(ctx, h.eng, dict(ld, dram_offset=off, buf_row=3), base,
                                              window, requests=requests, faults=faults)
            assert (result, nbytes, requests, faults) == (("error", ErrorCode.DMA_OUT_OF_WINDOW), 0,
                                                          [], [fault])
        got = await dump_all(ctx, h)
        for b in Buffer:
            np.testing.assert_array_equal(got[b], ref[b], err_msg=str(b))

    simulate(h, bench)


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_store_signed_offset(bits):
    cfg = make_config(bus_bits=bits)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    psum = rng.integers(-3000, 3000, size=(cfg.psum_rows, cfg.cols), dtype=np.int64)
    bias, m0, shift = np.zeros(cfg.cols), np.full(cfg.cols, 1 << 30), np.full(cfg.cols, -1)
    base = [0, 512, 0, 0, 0, 0, 0, 0]
    window = (400, 300)  # bytes 400 .. 699
    good = dict(op=Opcode.STORE, base_reg=1, dram_offset=-100, dram_stride=10, psum_row=2,
                param_row=1, m_len=4, n_len=3, out_zp=5, act_min=-128, act_max=127)
    expected = image.copy()

    async def bench(ctx):
        await dram_fill(ctx, h.dram, image)
        await write_rows(ctx, h.psum.w, [pack(row, 32) for row in psum])
        await write_rows(ctx, h.param.w, param_rows_value(bias, m0, shift), start=1)
        # 512 - 100 = 412 .. 412 + 30 + 2: inside the window.
        result, _, nbytes = await execute(ctx, h.eng, good, base, window)
        assert result == "done" and nbytes == 12
        for mi in range(4):
            y = requantize(psum[2 + mi, :3], bias[:3], m0[:3], shift[:3], 5, -128, 127)
            expected[412 + 10 * mi:412 + 10 * mi + 3] = y.view(np.uint8)
        # Below the window / below address 0: error, nothing written.
        for insn, win in ((dict(good, dram_offset=-113), window),
                          (dict(good, dram_offset=-513), (0, 0)),
                          (dict(good, base_reg=0, dram_offset=-1), (0, 0)),
                          (dict(good, base_reg=0, dram_offset=-(1 << 31)), (0, 0))):
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, win)
            assert result == ("error", ErrorCode.DMA_OUT_OF_WINDOW), insn
            assert nbytes == 0 and cycles == 2
        # Exactly at the window start / address 0 is fine.
        for insn, win, at in ((dict(good, dram_offset=-112), window, 400),
                              (dict(good, dram_offset=-512), (0, 0), 0)):
            result, _, nbytes = await execute(ctx, h.eng, insn, base, win)
            assert result == "done" and nbytes == 12
            for mi in range(4):
                y = requantize(psum[2 + mi, :3], bias[:3], m0[:3], shift[:3], 5, -128, 127)
                expected[at + 10 * mi:at + 10 * mi + 3] = y.view(np.uint8)
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), expected)

    simulate(h, bench)


def store_words(first, n, nb=8):
    """The masked writes of a run of ``n`` bytes from byte address ``first`` on a bus of
    ``nb``-byte words: one per word, ``(word, 1, mask)``."""
    out = []
    for w in words_of(first, n, nb):
        lo, hi = max(first, nb * w), min(first + n, nb * w + nb)
        out.append((w, 1, sum(1 << (a - nb * w) for a in range(lo, hi))))
    return out


def store_offsets(nb):
    """Start bytes within a word for test_store_packing: all 8 at 64 bits; the first,
    second, middle and last ones of the wider words."""
    return range(8) if nb == 8 else (0, 1, 3, nb // 2, nb - 3, nb - 1)


@pytest.mark.parametrize("bits,bpc,lanes", [
    (64, 8, 1), (64, 2, 1), (128, 16, 1), (128, 3, 1), (256, 32, 1), (256, 6, 1),
    (64, 8, 4), (64, 8, 8), (64, 3, 8), (128, 16, 16),
    pytest.param(64, 8, 2, marks=pytest.mark.slow), pytest.param(128, 16, 5, marks=pytest.mark.slow),
    pytest.param(256, 32, 8, marks=pytest.mark.slow)])
def test_store_packing(bits, bpc, lanes):
    """Runs of n_len bytes at every alignment: one masked write per word touched; runs
    that share a word (dram_stride < B) write it separately. With ``ppu_lanes`` > 1 the
    same writes, in chunks of up to ``lanes`` channels that never cross a word."""
    nb = bits // 8
    cfg = make_config(cols=40, rows=4, dram_bytes_per_cycle=bpc, dram_latency=2, bus_bits=bits,
                      ppu_lanes=lanes)
    h = StoreHarness(cfg)
    rng = np.random.default_rng(31)
    image = rng.integers(0, 256, size=DRAM_BYTES, dtype=np.uint8)
    psum = rng.integers(-3000, 3000, size=(cfg.psum_rows, cfg.cols), dtype=np.int64)
    params = (rng.integers(-500, 500, size=cfg.param_depth),
              rng.integers(1 << 30, 1 << 31, size=cfg.param_depth),
              rng.integers(-4, 1, size=cfg.param_depth))
    base = [0, 512, 0, 0, 0, 0, 0, 0]
    insns = []
    shapes = ((1, 1), (3, 4), (8, 8), (13, 13), (20, 27), (7, 7), (nb, nb), (40, 45))
    if lanes > 1:  # fewer shapes (the simulation of L lanes is slower): n_len < L, >= L, > B
        shapes = ((3, 4), (13, 13), (nb, nb), (40, 45))
    for k, (n_len, stride) in enumerate(shapes):
        for j, o in enumerate(store_offsets(nb)):
            # 96 k + nb j is a word boundary at every width: the run starts at byte o.
            insns.append(dict(op=Opcode.STORE, base_reg=1, dram_offset=96 * k + nb * j + o,
                              dram_stride=stride, psum_row=(k + j) % 12, param_row=j,
                              m_len=3, n_len=n_len, out_zp=-2, act_min=-100, act_max=120))
    expected = image.copy()

    async def bench(ctx):
        await store_fill(ctx, h, image, psum, params)
        for insn in insns:
            requests = []
            result, cycles, nbytes = await execute(ctx, h.eng, insn, base, requests=requests)
            n = insn["m_len"] * insn["n_len"]
            start = 512 + insn["dram_offset"]
            assert result == "done" and nbytes == n
            assert requests == [r for mi in range(insn["m_len"])
                                for r in store_words(start + mi * insn["dram_stride"],
                                                     insn["n_len"], nb)], insn
            if bpc == nb and lanes == 1:  # one channel per cycle through the 6-stage PPU
                assert cycles == n + 6 + 2 == store_cycles(insn, cfg, base)
            elif bpc == nb:
                assert cycles == store_cycles(insn, cfg, base), insn
            bias, m0, shift = (p[insn["param_row"]:] for p in params)
            for mi in range(insn["m_len"]):
                y = requantize(psum[insn["psum_row"] + mi, :insn["n_len"]], bias[:insn["n_len"]],
                               m0[:insn["n_len"]], shift[:insn["n_len"]], -2, -100, 120)
                at = start + mi * insn["dram_stride"]
                expected[at:at + insn["n_len"]] = y.view(np.uint8)
        np.testing.assert_array_equal(await dram_dump(ctx, h.dram, DRAM_BYTES), expected)

    simulate(h, bench)


def test_timing_hand_worked():
    """load_cycles / store_cycles on hand-worked instructions (dram_latency 5)."""
    cfg = make_config()
    # 20 bytes from byte 3 of a word: ceil((3 + 20) / 8) = 3 reads; 3 + 5 + 2 = 10.
    run = dict(n0=20, dram_stride0=1, n1=1, n2=1, dram_offset=3)
    assert load_requests(run, cfg) == (3, 0) and load_cycles(run, cfg) == 10
    # The same from base register 2 = 13: byte 16 = word boundary, ceil(20 / 8) = 3 reads;
    # from byte 12 + 3 = 15 (byte 7): ceil(27 / 8) = 4 reads, 4 + 7 = 11.
    assert load_cycles(dict(run, base_reg=2), cfg, base=[0, 0, 13, 0, 0, 0, 0, 0]) == 10
    assert load_cycles(dict(run, base_reg=2), cfg, base=[0, 0, 12, 0, 0, 0, 0, 0]) == 11
    # 4 runs of 10 lanes, all padded: 4 * ceil(10 / 8) = 8 requests, 8 + 3 = 11.
    pad = dict(n0=10, n1=4, n2=1, pad_en=1, pad_lo1=4, pad_hi1=4, pad_lo2=0, pad_hi2=1)
    assert load_requests(pad, cfg) == (0, 8) and load_cycles(pad, cfg) == 11
    # Stride 2: one read per element, 2 runs of 5: 10 + 7 = 17.
    assert load_cycles(dict(n0=5, dram_stride0=2, n1=2, dram_stride1=100, n2=1), cfg) == 17
    # Empty: done in t+2.
    assert load_cycles(dict(n0=5, n1=0, n2=1), cfg) == 2
    # STORE 3 x 4 bytes: 12 + PPU latency 6 + 2 = 20.
    assert store_cycles(dict(m_len=3, n_len=4), cfg) == 20
    assert store_cycles(dict(m_len=0, n_len=4), cfg) == 2


def test_timing_hand_worked_wide():
    """The same instructions on the 128- and 256-bit buses (dram_latency 5)."""
    wide, wider = make_config(bus_bits=128), make_config(bus_bits=256)
    run = dict(n0=20, dram_stride0=1, n1=1, n2=1, dram_offset=3)
    # 20 bytes from byte 3: ceil(23 / 16) = 2 reads (2 + 7 = 9); ceil(23 / 32) = 1 (8).
    assert load_requests(run, wide) == (2, 0) and load_cycles(run, wide) == 9
    assert load_requests(run, wider) == (1, 0) and load_cycles(run, wider) == 8
    # From base 13 + 3 = byte 16: one 16-byte word and 4 bytes (2 reads); byte 16 of a
    # 32-byte word, ceil(36 / 32) = 2 reads; from 12 + 3 = 15: byte 15 of a 16-byte word,
    # ceil(35 / 16) = 3 reads.
    base13, base12 = [0, 0, 13, 0, 0, 0, 0, 0], [0, 0, 12, 0, 0, 0, 0, 0]
    assert load_cycles(dict(run, base_reg=2), wide, base=base13) == 9
    assert load_cycles(dict(run, base_reg=2), wider, base=base13) == 9
    assert load_cycles(dict(run, base_reg=2), wide, base=base12) == 10
    # From byte 28 of a 32-byte word (base 25 + 3): ceil((28 + 20) / 32) = 2 reads.
    assert load_cycles(dict(run, base_reg=2), wider, base=[0, 0, 25, 0, 0, 0, 0, 0]) == 9
    # 4 padded runs of 10 lanes: one request each at both widths, 4 + 3 = 7; of 20 lanes:
    # 2 each at 128 bits (8 + 3 = 11), 1 at 256 (7).
    pad = dict(n0=10, n1=4, n2=1, pad_en=1, pad_lo1=4, pad_hi1=4, pad_lo2=0, pad_hi2=1)
    assert load_requests(pad, wide) == load_requests(pad, wider) == (0, 4)
    assert load_cycles(pad, wide) == load_cycles(pad, wider) == 7
    assert load_cycles(dict(pad, n0=20), wide) == 11 and load_cycles(dict(pad, n0=20), wider) == 7
    # Stride 2 and STORE do not depend on the width.
    assert load_cycles(dict(n0=5, dram_stride0=2, n1=2, dram_stride1=100, n2=1), wider) == 17
    assert store_cycles(dict(m_len=3, n_len=4), wide) == store_cycles(dict(m_len=3, n_len=4),
                                                                      wider) == 20


def test_store_timing_lanes_hand_worked():
    """store_chunks / store_cycles with several PPU lanes: row 0 one channel per cycle,
    later rows in chunks of up to L channels inside one bus word; + PPU latency 6 + 2."""
    l8 = make_config(cols=16, ppu_lanes=8)
    block = dict(m_len=3, n_len=16, dram_stride=16)
    # Aligned: row 0 16 transfers; rows 1, 2 (bytes 16.., 32..) two words of 8: 2 chunks
    # each. 16 + 2 + 2 = 20 transfers, 20 + 8 = 28 cycles.
    assert store_chunks(block, l8) == 20 and store_cycles(block, l8) == 28
    # From byte 3: row 1 = bytes 19..34 = 5 (19..23) + 8 (24..31) + 3 (32..34): 3 chunks;
    # row 2 = 35..50, also from byte 3 of its word: 3. 16 + 6 = 22, 30 cycles; the same
    # start through base register 1 = 3.
    assert store_cycles(dict(block, dram_offset=3), l8) == 30
    assert store_cycles(dict(block, base_reg=1), l8, base=[0, 3, 0, 0, 0, 0, 0, 0]) == 30
    # One row: all of it one channel per cycle, 16 + 8 = 24.
    assert store_cycles(dict(block, m_len=1), l8) == 24
    l4 = make_config(cols=16, ppu_lanes=4)
    # L = 4, 4 rows of 10 bytes at stride 10: row 1 = 10..15 (6: 2 chunks) + 16..19 (4: 1);
    # row 2 = 20..23 (1) + 24..29 (6: 2); row 3 = 30..31 (1) + 32..39 (8: 2).
    # 10 + 3 + 3 + 3 = 19 transfers, 27 cycles.
    tile = dict(m_len=4, n_len=10, dram_stride=10)
    assert store_chunks(tile, l4) == 19 and store_cycles(tile, l4) == 27
    # to_buf: no DRAM words, ceil(10 / 3) = 4 chunks per later row at L = 3: 10 + 12 = 22.
    assert store_cycles(dict(tile, to_buf=1, dram_offset=5), make_config(cols=16, ppu_lanes=3)) == 30
    # One lane: n_len * m_len + 8 at any alignment, 40 + 8 = 48.
    assert store_cycles(dict(tile, dram_offset=3), make_config(cols=16)) == 48
    # 128-bit bus, L = 16, 2 rows of 16 at stride 16: aligned, row 1 is one chunk (16 + 1 + 8
    # = 25); from byte 5, row 1 = bytes 21..36 = 11 (21..31) + 5 (32..36): 2 chunks, 26.
    wide = make_config(cols=16, bus_bits=128, ppu_lanes=16)
    pair = dict(m_len=2, n_len=16, dram_stride=16)
    assert store_cycles(pair, wide) == 25
    assert store_cycles(dict(pair, base_reg=2), wide, base=[0, 0, 5, 0, 0, 0, 0, 0]) == 26
    assert store_cycles(dict(pair, m_len=0), wide) == 2
