"""DramModel (latency, throttle, byte masks, back door) and BusArbiter routing, at every
bus width (64, 128, 256 bits); the 64-bit host back door addresses sub-words of the wide
bus words."""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from celosia.rtl.config import AccelConfig
from celosia.rtl.dram import BusArbiter, DramBusSignature, DramModel


BUS_WIDTHS = (64, 128, 256)


def make_config(**kw):
    return AccelConfig(dram_bytes=1024, **kw)


def host_image(contents, bits):
    """The 64-bit host words holding the bus words ``contents`` ({bus word address: value}):
    host word ``a * subs + k`` is bits ``64k .. 64k + 63`` of bus word ``a``."""
    subs = bits // 64
    return {a * subs + k: (v >> (64 * k)) & (2**64 - 1) for a, v in contents.items()
            for k in range(subs)}


async def host_write(ctx, dram, words):
    for addr, value in words.items():
        ctx.set(dram.host_addr, addr)
        ctx.set(dram.host_wdata, value)
        ctx.set(dram.host_we, 1)
        await ctx.tick()
    ctx.set(dram.host_we, 0)


async def host_read(ctx, dram, addr):
    ctx.set(dram.host_addr, addr)
    await ctx.tick()
    return ctx.get(dram.host_rdata)


async def master(ctx, port, reqs, pattern, log, cycles_after=80):
    """Drive ``reqs`` on ``port.req`` with valid gaps; log accepts and responses with cycle numbers.

    ``log`` gets ("acc", cycle, req) and ("rsp", cycle, rdata, tag)."""
    gaps = itertools.cycle(pattern)
    pending = list(reqs)
    cycle = 0
    idle = 0
    while pending or idle < cycles_after:
        if pending and next(gaps):
            ctx.set(port.req.valid, 1)
            ctx.set(port.req.payload, pending[0])
        else:
            ctx.set(port.req.valid, 0)
        _, _, valid, ready, rvalid, rsp = await ctx.tick().sample(
            port.req.valid, port.req.ready, port.rsp.valid, port.rsp.payload)
        if valid and ready:
            log.append(("acc", cycle, pending.pop(0)))
        if rvalid:
            log.append(("rsp", cycle, rsp.rdata, rsp.tag))
        if not pending:
            idle += 1
        cycle += 1
    ctx.set(port.req.valid, 0)


def read(addr, tag=0):
    return dict(addr=addr, we=0, wdata=0, wmask=0, tag=tag)


@pytest.mark.parametrize("bits,latency,bpc", [(64, 1, 8), (64, 2, 8), (64, 5, 3), (64, 8, 1),
                                               (64, 13, 4), (128, 1, 16), (128, 3, 5), (256, 2, 32),
                                               (256, 4, 8), (256, 6, 3)])
def test_latency_and_throttle(bits, latency, bpc):
    cfg = make_config(dram_latency=latency, dram_bytes_per_cycle=bpc, bus_bits=bits)
    dut = DramModel(cfg)
    interval = -(-(bits // 8) // bpc)  # a word per interval at bpc bytes per cycle
    assert dut.interval == interval
    rng = np.random.default_rng(bits + latency)
    contents = {a: int.from_bytes(rng.bytes(bits // 8), "little") for a in range(20)}
    log = []

    async def bench(ctx):
        await host_write(ctx, dut, host_image(contents, bits))
        reqs = [read(a, tag=a % 4) for a in (3, 7, 7, 0, 19, 5, 11, 2)]
        await master(ctx, dut.bus, reqs, [1], log)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    accepts = [(c, r) for kind, c, *r in log if kind == "acc" for r in r]
    rsps = [(c, d, t) for kind, c, *rest in log if kind == "rsp" for d, t in [rest]]
    assert len(accepts) == len(rsps) == 8
    # One accept every `interval` cycles with valid held high.
    assert [b[0] - a[0] for a, b in zip(accepts, accepts[1:])] == [interval] * 7
    for (ca, req), (cr, rdata, tag) in zip(accepts, rsps):
        assert cr - ca == latency
        assert rdata == contents[req["addr"]]
        assert tag == req["tag"]


@pytest.mark.parametrize("bits", BUS_WIDTHS)
def test_write_masks_and_back_door(bits):
    nb = bits // 8
    cfg = make_config(dram_latency=3, dram_bytes_per_cycle=nb, bus_bits=bits)
    dut = DramModel(cfg)
    rng = np.random.default_rng(bits)
    ref = {a: int.from_bytes(rng.bytes(nb), "little") for a in range(16)}
    writes = []
    for _ in range(40):
        a, data = int(rng.integers(16)), int.from_bytes(rng.bytes(nb), "little")
        mask = int.from_bytes(rng.bytes(nb // 8), "little")
        writes.append(dict(addr=a, we=1, wdata=data, wmask=mask, tag=0))
    # Host writes of single 64-bit sub-words keep the rest of their bus word.
    host_patch = {int(h): int(rng.integers(0, 2**63)) for h in rng.choice(16 * nb // 8, 5,
                                                                           replace=False)}
    log = []
    got = {}

    async def bench(ctx):
        await host_write(ctx, dut, host_image(ref, bits))
        await master(ctx, dut.bus, writes, [1, 0, 1, 1, 0], log, cycles_after=2)
        await host_write(ctx, dut, host_patch)
        for h in range(16 * nb // 8):
            got[h] = await host_read(ctx, dut, h)
        # Read-after-write over the bus sees the new data.
        await master(ctx, dut.bus, [read(a) for a in range(16)], [1], log, cycles_after=6)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for w in writes:
        keep = sum(0xFF << (8 * b) for b in range(nb) if not (w["wmask"] >> b) & 1)
        write = sum(0xFF << (8 * b) for b in range(nb) if (w["wmask"] >> b) & 1)
        ref[w["addr"]] = (ref[w["addr"]] & keep) | (w["wdata"] & write)
    # Sub-word h of the host port: bits 64 * (h % subs) .. of bus word h // subs.
    subs = bits // 64
    for h, value in host_patch.items():
        a, k = divmod(h, subs)
        ref[a] = ref[a] & ~((2**64 - 1) << (64 * k)) | value << (64 * k)
    assert got == host_image(ref, bits)
    assert not any(kind == "rsp" for kind, *_ in log[:len(writes)])  # writes: no response
    rsps = [rest[1] for kind, *rest in log if kind == "rsp"]
    assert rsps == [ref[a] for a in range(16)]


@pytest.mark.parametrize("bits", [64, 256])
def test_arbiter_three_clients(bits):
    cfg = make_config(dram_latency=4, dram_bytes_per_cycle=bits // 8, bus_bits=bits)
    rng = np.random.default_rng(2)
    contents = {a: int.from_bytes(rng.bytes(bits // 8), "little") for a in range(32)}

    class Harness(wiring.Component):
        def __init__(self):
            self.dram = DramModel(cfg)
            self.arb = BusArbiter(3, cfg.dram_words, cfg.bus_bits)
            super().__init__({})

        def elaborate(self, platform):
            m = Module()
            m.submodules.dram = self.dram
            m.submodules.arb = self.arb
            wiring.connect(m, arbiter=self.arb.bus, dram=self.dram.bus)
            return m

    h = Harness()
    patterns = [[1], [1, 0, 1], [0, 1, 1, 1, 0]]
    reqs = [[read(int(a), tag=3) for a in rng.integers(0, 32, size=25)] for _ in range(3)]
    logs = [[], [], []]
    order = []

    image = host_image(contents, bits)

    async def loader(ctx):
        await host_write(ctx, h.dram, image)

    def client(i):
        async def bench(ctx):
            await ctx.tick().repeat(len(image) + 1)
            await master(ctx, h.arb.clients[i], reqs[i], patterns[i], logs[i], cycles_after=20)
        return bench

    async def bus_monitor(ctx):
        async for _, _, valid, ready, tag in ctx.tick().sample(
                h.arb.bus.req.valid, h.arb.bus.req.ready, h.arb.bus.req.payload.tag):
            if valid and ready:
                order.append(tag)

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(loader)
    sim.add_testbench(bus_monitor, background=True)
    for i in range(3):
        sim.add_testbench(client(i))
    sim.run()
    for i in range(3):
        accepts = [e for e in logs[i] if e[0] == "acc"]
        rsps = [e for e in logs[i] if e[0] == "rsp"]
        assert [e[2]["addr"] for e in accepts] == [r["addr"] for r in reqs[i]]
        assert [e[2] for e in rsps] == [contents[r["addr"]] for r in reqs[i]]
        assert all(e[3] == i for e in rsps)  # arbiter replaced the client's tag
        for a, r in zip(accepts, rsps):
            assert r[1] - a[1] == cfg.dram_latency
    # The requests really interleaved, and round robin never starved a waiting client.
    assert len(order) == 75
    assert len({tuple(order[k:k + 3]) for k in range(30)} & {(0, 1, 2), (1, 2, 0), (2, 0, 1)}) > 0
    assert max(len(list(g)) for _, g in itertools.groupby(order[:60])) <= 3


def test_bus_signature_follows_the_width():
    cfg = make_config(bus_bits=128)
    sig = DramBusSignature.of(cfg)
    assert sig == DramBusSignature(1024 // 16, 128) != DramBusSignature(1024 // 16, 64)
    req = sig.members["req"].signature.members["payload"].shape
    rsp = sig.members["rsp"].signature.members["payload"].shape
    assert (req["wdata"].shape.width, req["wmask"].shape.width, rsp["rdata"].shape.width) \
        == (128, 16, 128)
    with pytest.raises(TypeError, match="must be one of 64, 128, 256 bits, not 96"):
        DramBusSignature(16, 96)
