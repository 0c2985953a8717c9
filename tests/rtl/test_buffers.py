# amaranth: UnusedElaboratable=no
"""LaneBuffer: lane-granular writes, synchronous reads, transparency, hold, ports."""

import random

import pytest
from amaranth.hdl import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from celosia.rtl.buffers import BufferReadSignature, BufferWriteSignature, LaneBuffer


def run(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def merge(old, data, en, lanes, lane_bits):
    mask = (1 << lane_bits) - 1
    out = old
    for lane in range(lanes):
        if en >> lane & 1:
            sh = lane * lane_bits
            out = (out & ~(mask << sh)) | (data & (mask << sh))
    return out


def test_signature_directions():
    r = BufferReadSignature(16, 64)
    assert r.members["addr"].flow == wiring.Out and Shape.cast(r.members["addr"].shape).width == 4
    assert r.members["en"].flow == wiring.Out
    assert r.members["data"].flow == wiring.In and Shape.cast(r.members["data"].shape).width == 64
    w = BufferWriteSignature(16, 4, 32)
    assert all(w.members[n].flow == wiring.Out for n in ("addr", "en", "data"))
    assert Shape.cast(w.members["en"].shape).width == 4
    assert Shape.cast(w.members["data"].shape).width == 128
    assert r == BufferReadSignature(16, 64) and r != BufferReadSignature(16, 32)

    buf = LaneBuffer(4, 32, 16, read_ports=2)
    assert buf.signature.members["w"] == In(BufferWriteSignature(16, 4, 32))
    assert buf.signature.members["r1"] == In(BufferReadSignature(16, 128))
    assert len(buf.read_ports) == 2
    with pytest.raises(TypeError, match=r"^Buffer depth must be a positive integer, not 0$"):
        LaneBuffer(4, 8, 0)


def test_connect_to_engine_ports():
    class Engine(wiring.Component):
        rd: Out(BufferReadSignature(8, 16))
        wr: Out(BufferWriteSignature(8, 2, 8))

        def elaborate(self, platform):
            return Module()

    m = Module()
    m.submodules.eng = eng = Engine()
    m.submodules.buf = buf = LaneBuffer(2, 8, 8)
    wiring.connect(m, engine=eng.rd, buffer=buf.r0)
    wiring.connect(m, engine=eng.wr, buffer=buf.w)


@pytest.mark.parametrize("lanes,lane_bits,depth,nports,nwrite",
                         [(1, 8, 2, 1, 1), (3, 8, 5, 1, 1), (4, 32, 16, 2, 1), (9, 8, 7, 2, 1), (4, 8, 6, 1, 2),
                          (3, 8, 5, 2, 2), (2, 8, 4, 2, 3)])
def test_random_traffic(lanes, lane_bits, depth, nports, nwrite):
    """Random writes (random lane enables; with two write ports, both in one cycle on
    disjoint lanes of a shared row) and reads against a dict model."""
    dut = LaneBuffer(lanes, lane_bits, depth, read_ports=nports, write_ports=nwrite)
    wports = [dut.w] + [getattr(dut, f"w{i}") for i in range(1, nwrite)]
    rng = random.Random(lanes * 1000 + depth)
    width = lanes * lane_bits

    async def tb(ctx):
        model = [0] * depth
        expect = [0] * nports          # what r{i}.data must show after this edge
        for _ in range(300):
            new_model = list(model)
            taken = {}                 # row -> lanes written this cycle
            for wp in wports:
                waddr, wen, wdata = rng.randrange(depth), rng.randrange(1 << lanes), rng.getrandbits(width)
                wen &= ~taken.get(waddr, 0)
                taken[waddr] = taken.get(waddr, 0) | wen
                ctx.set(wp.addr, waddr)
                ctx.set(wp.en, wen)
                ctx.set(wp.data, wdata)
                new_model[waddr] = merge(new_model[waddr], wdata, wen, lanes, lane_bits)
            for i, port in enumerate(dut.read_ports):
                raddr, ren = rng.randrange(depth), rng.random() < 0.7
                ctx.set(port.addr, raddr)
                ctx.set(port.en, ren)
                if ren:
                    # Transparent: a read of the row written this cycle sees the new data.
                    expect[i] = new_model[raddr]
            await ctx.tick()
            model = new_model
            for i, port in enumerate(dut.read_ports):
                assert ctx.get(port.data) == expect[i]

    run(dut, tb)


def test_hold_and_transparency_explicit():
    dut = LaneBuffer(2, 8, 4)

    async def tb(ctx):
        ctx.set(dut.w.addr, 1)
        ctx.set(dut.w.en, 0b11)
        ctx.set(dut.w.data, 0xBEEF)
        await ctx.tick()
        # Lane 1 only: 0xBEEF -> 0x12EF, read in the same cycle shows the new row.
        ctx.set(dut.w.en, 0b10)
        ctx.set(dut.w.data, 0x1234)
        ctx.set(dut.r0.addr, 1)
        ctx.set(dut.r0.en, 1)
        await ctx.tick()
        assert ctx.get(dut.r0.data) == 0x12EF
        # en low: data holds even though the row and address change.
        ctx.set(dut.w.en, 0b11)
        ctx.set(dut.w.data, 0)
        ctx.set(dut.r0.en, 0)
        ctx.set(dut.r0.addr, 2)
        await ctx.tick()
        assert ctx.get(dut.r0.data) == 0x12EF
        ctx.set(dut.w.en, 0)
        ctx.set(dut.r0.addr, 1)
        ctx.set(dut.r0.en, 1)
        await ctx.tick()
        assert ctx.get(dut.r0.data) == 0

    run(dut, tb)
