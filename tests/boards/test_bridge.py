"""The UART and the host bridge's frame protocol in the Amaranth simulator (fast; no board).

The bench drives the bridge through its UART pins with the frames of
``celosia.sim.board.request`` and decodes the replies bit by bit from the TX pin, so the
UART receiver, transmitter and the bridge's framing are tested together. The memory is
the DRAM model of a 1 KiB config; the CSR bus ends in a plain register file.
"""

import struct

import pytest
from amaranth.hdl import Array, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from celosia.boards.bridge import UartBridge
from celosia.boards.uart import UartRx, UartTx, baud_divisor
from celosia.errors import ConfigError
from celosia.rtl.config import AccelConfig
from celosia.rtl.dram import DramModel
from celosia.rtl.isa import Csr
from celosia.sim.board import INFO_BYTES, INFO_MAGIC, Cmd, Reply, checksum, decode_info, info_payload, request

DIV = 4
CONFIG = AccelConfig(rows=1, cols=1, dram_bytes=1024, dram_latency=2)
WORDS = CONFIG.host_words  # 128
TIMEOUT = 64 * 10 * DIV


class Bench(Elaboratable):
    """UartRx -> UartBridge -> UartTx, the DRAM model on the host port, 32 CSRs."""

    def __init__(self):
        self.rx = Signal(init=1)
        self.tx = Signal()
        self.bridge = UartBridge(WORDS, info_payload(CONFIG, 25_000_000), timeout=TIMEOUT)
        self.regs = Array(Signal(32, name=f"csr{i}") for i in range(32))
        self.writes = Signal(8)  # CSR writes seen

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UartRx(DIV)
        m.submodules.tx = tx = UartTx(DIV)
        m.submodules.bridge = bridge = self.bridge
        m.submodules.dram = dram = DramModel(CONFIG)
        wiring.connect(m, rx=rx.data, bridge=bridge.rx)
        wiring.connect(m, bridge=bridge.tx, tx=tx.data)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx),
                     dram.host_addr.eq(bridge.host_addr), dram.host_we.eq(bridge.host_we),
                     dram.host_wdata.eq(bridge.host_wdata), bridge.host_rdata.eq(dram.host_rdata),
                     bridge.csr.r_data.eq(self.regs[bridge.csr.addr[:5]])]
        with m.If(bridge.csr.w_en):
            m.d.sync += [self.regs[bridge.csr.addr[:5]].eq(bridge.csr.w_data),
                         self.writes.eq(self.writes + 1)]
        return m


def simulate(script):
    """Run ``script(host)`` against the bench; ``host.send(bytes)`` drives the RX pin,
    ``await host.reply(n)`` returns the next ``n`` bytes decoded from the TX pin."""
    dut = Bench()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    received = []

    async def receiver(ctx):
        """Decode the TX pin: wait for a start bit, sample each bit in its middle."""
        while True:
            while ctx.get(dut.tx):
                await ctx.tick()
            await ctx.tick().repeat(DIV // 2)
            assert ctx.get(dut.tx) == 0
            value = 0
            for bit in range(8):
                await ctx.tick().repeat(DIV)
                value |= ctx.get(dut.tx) << bit
            await ctx.tick().repeat(DIV)
            assert ctx.get(dut.tx) == 1, "stop bit"
            received.append(value)

    class Host:
        def __init__(self, ctx):
            self.ctx = ctx

        async def send(self, data):
            for b in data:
                for level in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                    self.ctx.set(dut.rx, level)
                    await self.ctx.tick().repeat(DIV)

        async def reply(self, n, limit=20000):
            for _ in range(limit):
                if len(received) >= n:
                    out = bytes(received[:n])
                    del received[:n]
                    return out
                await self.ctx.tick()
            raise AssertionError(f"no reply: {len(received)} of {n} bytes")

        async def call(self, frame, payload_bytes=0):
            """Send a frame; return (status, payload), checking the reply's checksum."""
            await self.send(frame)
            status = (await self.reply(1))[0]
            payload = await self.reply(payload_bytes) if status == Reply.OK else b""
            chk = (await self.reply(1))[0]
            assert chk == checksum(bytes([status]) + payload)
            return status, payload

    async def bench(ctx):
        await script(Host(ctx), ctx, dut)

    sim.add_testbench(receiver, background=True)
    sim.add_testbench(bench)
    sim.run()


def test_info_csr_and_memory_frames():
    async def script(host, ctx, dut):
        status, info = await host.call(request(Cmd.INFO), INFO_BYTES)
        assert status == Reply.OK
        assert info[:4] == INFO_MAGIC and struct.unpack_from("<I", info, 4)[0] == WORDS
        assert decode_info(info)["config"] == CONFIG and decode_info(info)["clk_hz"] == 25_000_000

        # CSR write then read
        status, _ = await host.call(request(Cmd.CSR_WRITE, Csr.BASE0 + 3, payload=struct.pack("<I", 0xDEADBEEF)))
        assert status == Reply.OK
        assert ctx.get(dut.regs[Csr.BASE0 + 3]) == 0xDEADBEEF and ctx.get(dut.writes) == 1
        status, value = await host.call(request(Cmd.CSR_READ, Csr.BASE0 + 3), 4)
        assert (status, struct.unpack("<I", value)[0]) == (Reply.OK, 0xDEADBEEF)

        # memory block write, read back across it, clear part of it
        words = [0x0102030405060708, 0xFFFFFFFFFFFFFFFF, 0x8000000000000001]
        status, _ = await host.call(request(Cmd.MEM_WRITE, 5, 3, struct.pack("<3Q", *words)))
        assert status == Reply.OK
        status, data = await host.call(request(Cmd.MEM_READ, 4, 5), 40)
        assert status == Reply.OK
        assert struct.unpack("<5Q", data) == (0, *words, 0)
        status, _ = await host.call(request(Cmd.MEM_CLEAR, 6, 1))
        assert status == Reply.OK
        status, data = await host.call(request(Cmd.MEM_READ, 5, 3), 24)
        assert struct.unpack("<3Q", data) == (words[0], 0, words[2])
        # the last word of the memory is in range; one past it is not, and is not written
        status, _ = await host.call(request(Cmd.MEM_WRITE, WORDS - 1, 1, struct.pack("<Q", 7)))
        assert status == Reply.OK
        status, _ = await host.call(request(Cmd.MEM_WRITE, WORDS - 1, 2, struct.pack("<2Q", 9, 9)))
        assert status == Reply.OUT_OF_RANGE
        status, data = await host.call(request(Cmd.MEM_READ, WORDS - 1, 1), 8)
        assert struct.unpack("<Q", data)[0] == 7
        status, _ = await host.call(request(Cmd.MEM_READ, WORDS, 1))
        assert status == Reply.OUT_OF_RANGE
    simulate(script)


def test_bad_frames_are_refused_and_resynchronised():
    async def script(host, ctx, dut):
        # a bad checksum: replied BAD_CHECKSUM, the CSR is not written
        frame = bytearray(request(Cmd.CSR_WRITE, Csr.BASE0, payload=struct.pack("<I", 5)))
        frame[-1] ^= 0x40
        assert await host.call(bytes(frame)) == (Reply.BAD_CHECKSUM, b"")
        assert ctx.get(dut.writes) == 0
        # an unknown command (no payload)
        assert await host.call(request(0x33)) == (Reply.BAD_COMMAND, b"")
        # bytes before SYNC are dropped
        status, info = await host.call(b"\x00\x17\xff" + request(Cmd.INFO), INFO_BYTES)
        assert status == Reply.OK and info[:4] == INFO_MAGIC
        # a frame that stops half way is dropped after the timeout; the next one works
        await host.send(request(Cmd.CSR_WRITE, Csr.BASE0, payload=struct.pack("<I", 5))[:5])
        await ctx.tick().repeat(TIMEOUT + 10)
        status, _ = await host.call(request(Cmd.CSR_WRITE, Csr.BASE0 + 1, payload=struct.pack("<I", 9)))
        assert status == Reply.OK and ctx.get(dut.regs[Csr.BASE0 + 1]) == 9
        assert ctx.get(dut.writes) == 1
    simulate(script)


def test_status_follows_the_status_csr_between_frames():
    async def script(host, ctx, dut):
        assert ctx.get(dut.bridge.status) == 0
        await host.call(request(Cmd.CSR_WRITE, Csr.STATUS, payload=struct.pack("<I", 0x0302)))
        await ctx.tick().repeat(2)
        assert ctx.get(dut.bridge.status) == 0x0302
    simulate(script)


def test_baud_divisor():
    assert baud_divisor(25e6, 115200) == 217   # 25e6 / 217 = 115207 baud
    assert baud_divisor(12e6, 115200) == 104
    with pytest.raises(ConfigError, match="baud rate 6000000 cannot be made from a 12 MHz clock"):
        baud_divisor(12e6, 6_000_000)
    with pytest.raises(ConfigError, match="baud rate 3000000 cannot be made from a 25 MHz"):
        baud_divisor(25e6, 3_000_000)  # 8 cycles: 3.125 Mbaud, 4% off
