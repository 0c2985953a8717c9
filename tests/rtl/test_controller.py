# amaranth: UnusedElaboratable=no
"""Controller: fetch, queue routing, tokens, NOPs, errors, deadlock, counters.

The engines are stubs (accept when idle, busy for a number of cycles taken from
the instruction, then pulse done); the program lives in a DramModel.
"""

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller import Controller, EngineSignature, engine_view
from celosia.rtl.controller.csrs import Csrs
from celosia.rtl.controller.signatures import DRAM_BYTES_BITS, GemmPre, LoadPre
from celosia.rtl.dram import DramModel
from celosia.rtl.isa import Csr, ErrorCode, Opcode
from helpers import csr_read_all, csr_write, host_write, program_words, simulate, start_and_wait

CFG = AccelConfig(dram_bytes=1 << 14, dram_latency=4, queue_depth=4)
PROG_BASE = 0x400
ERR_MARK = 0xEE  # a stub engine fails on instructions carrying this marker


#: The fault address the stub DMA engines report with their DMA_OUT_OF_WINDOW errors.
STUB_FAULT_ADDR = 0x89AB_CDEF


class StubEngine(wiring.Component):
    """Accepts when idle; busy ``length(insn)`` cycles; pulses done (or error)."""

    def __init__(self, layout, length, fails, dram_bytes=False):
        self._length, self._fails, self._dram_bytes = length, fails, dram_bytes
        super().__init__({
            "insn": In(stream.Signature(layout)),
            "done": Out(1), "error": Out(1), "error_code": Out(8), "fault_addr": Out(32),
            "busy": Out(1),
            "zero_skips": Out(16), "mac_cycles": Out(1), "bytes": Out(DRAM_BYTES_BITS),
            **({"pre": In(GemmPre)} if layout is isa.GemmInsn else
               {"pre": In(LoadPre)} if layout is isa.LoadInsn else {}),
        })

    def elaborate(self, platform):
        m = Module()
        left = Signal(16)
        fail = Signal()
        m.d.comb += [self.insn.ready.eq(~self.busy), self.error_code.eq(ErrorCode.DMA_OUT_OF_WINDOW),
                     self.fault_addr.eq(STUB_FAULT_ADDR),
                     self.bytes.eq(self.busy if self._dram_bytes else 0)]
        m.d.sync += [self.done.eq(0), self.error.eq(0)]
        with m.If(self.insn.valid & self.insn.ready):
            m.d.sync += [self.busy.eq(1), left.eq(self._length(self.insn.payload)),
                         fail.eq(self._fails(self.insn.payload))]
        with m.Elif(self.busy):
            with m.If(left <= 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(~fail), self.error.eq(fail)]
            with m.Else():
                m.d.sync += left.eq(left - 1)
        return m


class Harness(Elaboratable):
    def __init__(self, cfg=CFG):
        self.ctrl = Controller(cfg)
        self.dram = DramModel(cfg)
        self.engines = {
            # the load stub "reads a DRAM byte" in each busy cycle (DRAM_RD)
            "load": StubEngine(isa.LoadInsn, lambda p: p.n0, lambda p: p.lane0 == ERR_MARK,
                               dram_bytes=True),
            "compute": StubEngine(isa.GemmInsn, lambda p: p.m_len,
                                  lambda p: p.psum_row == ERR_MARK),
            "vector": StubEngine(isa.VecInsn, lambda p: p.m_len, lambda p: p.psum_row == ERR_MARK),
            "store": StubEngine(isa.StoreInsn, lambda p: p.m_len, lambda p: p.param_row == ERR_MARK),
        }

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = c = self.ctrl
        m.submodules.dram = self.dram
        wiring.connect(m, fetch=c.bus, dram=self.dram.bus)
        for name, eng in self.engines.items():
            m.submodules[name] = eng
            port = getattr(c, name)
            wiring.connect(m, controller=port, engine=engine_view(eng, port.signature))
        return m


def program(nodes, prog_base=PROG_BASE):
    """nodes: lists of 256-bit instructions -> {word address: value} (:func:`helpers.program_words`)."""
    return program_words(nodes, prog_base)


def load(n0=3, lane0=0, **dep):
    return isa.encode(Opcode.LOAD, n0=n0, n1=1, n2=1, lane0=lane0, dep=dep)


def gemm(m_len=2, k_len=8, n_len=8, psum_row=0, **dep):
    return isa.encode(Opcode.GEMM, m_len=m_len, k_len=k_len, n_len=n_len, psum_row=psum_row,
                      dep=dep)


def vec(m_len=2, psum_row=0, **dep):
    return isa.encode(Opcode.VEC, mode=isa.VecMode.SUM, m_len=m_len, win=3, lanes=4,
                      psum_row=psum_row, dep=dep)


def nop(**dep):
    return isa.encode(Opcode.NOP, dep=dep)


def store(m_len=2, param_row=0, **dep):
    return isa.encode(Opcode.STORE, m_len=m_len, n_len=8, param_row=param_row, dep=dep)


def run_program(nodes, *, csrs=None, max_cycles=3000, runs=1, prog_words=None, cfg=CFG):
    """Run; returns (status dict, list of (cycle, engine, decoded insn))."""
    h = Harness(cfg)
    c = h.ctrl
    starts = []
    result = {}

    async def monitor(ctx):
        ports = [getattr(c, n).insn for n in h.engines]
        sigs = [s for p in ports for s in (p.valid, p.ready, p.payload.as_value())]
        cycle = 0
        async for _, _, *vals in ctx.tick().sample(*sigs):
            for i, name in enumerate(h.engines):
                valid, ready, payload = vals[3 * i:3 * i + 3]
                if valid and ready:
                    starts.append((cycle, name, isa.decode(payload)))
            cycle += 1

    async def bench(ctx):
        await host_write(ctx, h.dram, prog_words if prog_words is not None else program(nodes))
        await csr_write(ctx, c.csr, Csr.PROG_BASE, PROG_BASE)
        for addr, value in (csrs or {}).items():
            await csr_write(ctx, c.csr, addr, value)
        for run in range(runs):
            starts.clear()
            await start_and_wait(ctx, c.csr, max_cycles)
            for _ in range(20):  # engines may finish what they run; nothing new starts
                await ctx.tick()
        result.update(csr_read_all(ctx, c.csr))

    simulate(h, bench, background=[monitor])
    status = result["STATUS"]
    fields = isa.unpack(isa.Status, status)
    result["busy"], result["done"], result["error"] = fields["busy"], fields["done"], fields["error"]
    return result, starts


def by_engine(starts, name):
    return [(cyc, insn) for cyc, eng, insn in starts if eng == name]


def test_routing_multiple_nodes_and_counters():
    nodes = [[load(n0=3), gemm(m_len=2, k_len=8, n_len=8), store(m_len=2)],
             [load(n0=4), load(n0=5), nop(), gemm(m_len=3, k_len=5, n_len=7), store(m_len=1)]]
    res, starts = run_program(nodes, runs=2)  # the second run checks a clean restart
    assert (res["done"], res["busy"], res["error"]) == (1, 0, 0)
    assert [i["n0"] for _, i in by_engine(starts, "load")] == [3, 4, 5]
    assert [i["m_len"] for _, i in by_engine(starts, "compute")] == [2, 3]  # NOP not sent
    assert [i["m_len"] for _, i in by_engine(starts, "store")] == [2, 1]
    assert all(i["op"] == Opcode.LOAD for _, i in by_engine(starts, "load"))
    assert res["INSNS"] == 8
    assert res["MACS"] == 2 * 8 * 8 + 3 * 5 * 7
    fetched = 3 + 4 * 8  # descriptors incl. the end marker, 4 words per instruction
    assert res["DRAM_RD"] == 8 * fetched + res["LOAD_BUSY"]  # stub: rd_bytes = load busy
    assert res["LOAD_BUSY"] == 3 + 4 + 5
    assert res["COMPUTE_BUSY"] == 2 + 3
    assert res["STORE_BUSY"] == 2 + 1
    assert res["CYCLES"] > 8 * 4
    assert res["ERROR_INFO"] == 0


@pytest.mark.parametrize("bits", [128, 256])
def test_fetch_on_a_wide_bus(bits):
    """Fetch takes the 64-bit words it needs out of the wide bus words: the same
    instructions reach the engines in the same cycles, with the same counters, as on the
    64-bit bus (fetch.py: requests and timing do not depend on the width)."""
    nodes = [[load(n0=3), gemm(m_len=2, k_len=8, n_len=8), store(m_len=2)],
             [load(n0=4), load(n0=5), nop(), gemm(m_len=3, k_len=5, n_len=7), store(m_len=1)]]
    wide = AccelConfig(dram_bytes=1 << 14, dram_latency=4, queue_depth=4, bus_bits=bits,
                       dram_bytes_per_cycle=bits // 8)
    res, starts = run_program(nodes, cfg=wide)
    ref_res, ref_starts = run_program(nodes)
    assert (res["done"], res["busy"], res["error"]) == (1, 0, 0)
    assert starts == ref_starts
    assert res == ref_res
    # A program 8 bytes past a wide word boundary: descriptors and instructions start in
    # the middle of bus words.
    moved = program(nodes, prog_base=PROG_BASE + 8)
    res, starts = run_program(None, cfg=wide, prog_words=moved,
                              csrs={Csr.PROG_BASE: PROG_BASE + 8})
    assert (res["done"], res["error"]) == (1, 0)
    assert [(e, i) for _, e, i in starts] == [(e, i) for _, e, i in ref_starts]
    # A misaligned descriptor table is still refused.
    res, _ = run_program(nodes, cfg=wide, csrs={Csr.PROG_BASE: PROG_BASE + 4})
    assert res["error"] == ErrorCode.BAD_DESCRIPTOR


def test_token_ordering():
    # without tokens the store would start at once; with them it waits for the GEMM
    nodes = [[load(n0=30, push_next=1), gemm(m_len=6, pop_prev=1, push_next=1),
              store(m_len=2, pop_prev=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["error"]) == (1, 0)
    (tl, _), = by_engine(starts, "load")
    (tc, _), = by_engine(starts, "compute")
    (ts, _), = by_engine(starts, "store")
    assert tc >= tl + 30
    assert ts >= tc + 6


def test_token_ping_pong():
    # load 2 waits for compute 1 to give back its buffer (c2l)
    nodes = [[load(n0=2, push_next=1), load(n0=2, push_next=1, pop_next=1),
              gemm(m_len=20, pop_prev=1, push_prev=1), gemm(m_len=3, pop_prev=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["error"]) == (1, 0)
    (t0, _), (t1, _) = by_engine(starts, "load")
    (c0, _), (c1, _) = by_engine(starts, "compute")
    assert t1 >= c0 + 20
    assert c1 >= t1 + 2


def test_nop_moves_tokens():
    nodes = [[load(n0=25, push_next=1), nop(pop_prev=1, push_next=1), store(m_len=2, pop_prev=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["error"]) == (1, 0)
    assert by_engine(starts, "compute") == []
    (tl, _), = by_engine(starts, "load")
    (ts, _), = by_engine(starts, "store")
    assert ts >= tl + 25
    assert res["INSNS"] == 3


def test_illegal_opcode():
    bad = 0x7  # opcode 7 does not exist
    nodes = [[load(n0=2), bad, store(m_len=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["busy"], res["error"]) == (1, 0, ErrorCode.ILLEGAL_OPCODE)
    assert res["ERROR_INFO"] == 1
    assert by_engine(starts, "store") == []


def test_token_deadlock():
    nodes = [[load(n0=2), gemm(m_len=2, pop_prev=1, push_next=1), store(m_len=1, pop_prev=1)]]
    res, starts = run_program(nodes, max_cycles=500)
    assert (res["done"], res["busy"], res["error"]) == (1, 0, ErrorCode.TOKEN_DEADLOCK)
    assert res["ERROR_INFO"] == 1  # the oldest waiting head: the GEMM
    assert by_engine(starts, "compute") == [] and by_engine(starts, "store") == []


def test_deadlock_with_full_queue():
    # fetch blocks on the full store queue while the compute head waits forever
    nodes = [[gemm(m_len=1, pop_next=1)] + [store(m_len=1)] * 1 +
             [gemm(m_len=1, pop_prev=1)] * (CFG.queue_depth + 2)]
    res, _ = run_program(nodes, max_cycles=2000)
    assert res["error"] == ErrorCode.TOKEN_DEADLOCK


def test_descriptor_out_of_window():
    res, starts = run_program([[load()]], csrs={Csr.WINDOW_BASE: PROG_BASE + 0x100,
                                                Csr.WINDOW_SIZE: 0x1000})
    assert (res["done"], res["busy"], res["error"]) == (1, 0, ErrorCode.BAD_DESCRIPTOR)
    assert res["FAULT_ADDR"] == PROG_BASE  # refused and raised in one cycle (found by the fuzz)
    assert starts == []


def test_instructions_out_of_window():
    # the table is inside the window, the second instruction is not
    res, starts = run_program([[load(n0=1), load(n0=1)]],
                              csrs={Csr.WINDOW_BASE: PROG_BASE, Csr.WINDOW_SIZE: 0x40})
    assert res["error"] == ErrorCode.BAD_DESCRIPTOR
    assert res["ERROR_INFO"] == 1
    assert len(by_engine(starts, "load")) <= 1  # the stop is immediate


def test_misaligned_instruction_block():
    words = program([[load()]])
    words[PROG_BASE >> 3] = isa.encode_descriptor(0x28, 1)
    res, starts = run_program(None, prog_words=words)
    assert res["error"] == ErrorCode.BAD_DESCRIPTOR
    assert res["FAULT_ADDR"] == PROG_BASE + 0x28  # the refused instruction's address
    assert starts == []


def test_engine_error_stops_machine():
    nodes = [[load(n0=2, push_next=1), load(n0=3, lane0=ERR_MARK), load(n0=2),
              gemm(m_len=2, pop_prev=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["busy"], res["error"]) == (1, 0, ErrorCode.DMA_OUT_OF_WINDOW)
    assert res["ERROR_INFO"] == 1
    assert res["FAULT_ADDR"] == STUB_FAULT_ADDR  # the engine's fault address reaches the CSR
    assert len(by_engine(starts, "load")) == 2


def test_compute_error():
    res, _ = run_program([[gemm(m_len=2, psum_row=ERR_MARK)]])
    assert res["error"] == ErrorCode.BUFFER_OUT_OF_RANGE
    assert res["ERROR_INFO"] == 0
    assert res["FAULT_ADDR"] == 0  # an error without an address


def test_token_overflow():
    nodes = [[nop(push_next=1)] * 256]
    res, starts = run_program(nodes, max_cycles=20000)
    assert res["error"] == ErrorCode.TOKEN_OVERFLOW
    assert res["ERROR_INFO"] == 255


def test_vec_routed_to_vector_engine_in_order():
    # GEMM / VEC / NOP of the compute queue run one at a time, in order, on two engines.
    nodes = [[load(n0=10, push_next=1), vec(m_len=5, pop_prev=1), gemm(m_len=4),
              vec(m_len=3), vec(m_len=2, push_next=1), store(m_len=1, pop_prev=1),
              nop(push_next=1), store(m_len=2, pop_prev=1)]]
    res, starts = run_program(nodes)
    assert (res["done"], res["busy"], res["error"]) == (1, 0, 0)
    vecs = by_engine(starts, "vector")
    gemms = by_engine(starts, "compute")
    assert [i["m_len"] for _, i in vecs] == [5, 3, 2]
    assert all(i["op"] == Opcode.VEC and i["win"] == 3 and i["lanes"] == 4 for _, i in vecs)
    assert [i["m_len"] for _, i in gemms] == [4]
    (tl, _), = by_engine(starts, "load")
    (t_v0, _), (t_v1, _), (t_v2, _) = vecs
    (t_g, _), = gemms
    (t_s0, _), (t_s1, _) = by_engine(starts, "store")
    # stub busy = m_len cycles after the start, done in its last busy cycle
    assert t_v0 >= tl + 10
    assert t_g >= t_v0 + 5 + 1
    assert t_v1 >= t_g + 4 + 1
    assert t_v2 >= t_v1 + 3 + 1
    assert t_s0 >= t_v2 + 2 + 1
    assert t_s1 > t_v2 + 2
    assert res["INSNS"] == 8
    assert res["MACS"] == 4 * 8 * 8  # VECs count no MACs
    assert res["COMPUTE_BUSY"] == 5 + 4 + 3 + 2  # either engine busy


def test_vector_error():
    res, starts = run_program([[gemm(m_len=1), vec(m_len=2, psum_row=ERR_MARK), gemm(m_len=1)]])
    assert (res["done"], res["busy"], res["error"]) == (1, 0, ErrorCode.BUFFER_OUT_OF_RANGE)
    assert res["ERROR_INFO"] == 1
    assert len(by_engine(starts, "compute")) == 1


# -- the parts ------------------------------------------------------------------------

def test_engine_ports_are_one_signature_each():
    """The controller's engine ports and the engines' ``ctrl`` members are one
    EngineSignature each, so ``wiring.connect`` joins them (tests/rtl/test_top.py runs them)."""
    from celosia.rtl.arrays import make_engine
    from celosia.rtl.vector import VectorEngine
    members = Controller(CFG).signature.members
    assert members["load"].signature == EngineSignature(isa.LoadInsn, error_code=True, dram_bytes=True,
                                                        pre=LoadPre)
    assert members["store"].signature == EngineSignature(isa.StoreInsn, error_code=True, dram_bytes=True)
    assert members["compute"].signature == EngineSignature(isa.GemmInsn, zero_skips=True, pre=GemmPre)
    assert members["vector"].signature == EngineSignature(isa.VecInsn)
    assert list(members["load"].signature.members) == [
        "insn", "done", "error", "busy", "error_code", "fault_addr", "bytes", "pre"]
    for df in ("ws", "os", "rs", "feie"):
        cfg = AccelConfig(dataflow=df)
        engine = make_engine(cfg)(cfg)
        assert engine.signature.members["ctrl"].flow == In
        assert engine.signature.members["ctrl"].signature == members["compute"].signature
        assert engine.insn.valid is engine.ctrl.insn.valid and engine.zero_skips is engine.ctrl.zero_skips
    vector = VectorEngine(CFG)
    assert vector.signature.members["ctrl"].signature == members["vector"].signature
    assert vector.busy is vector.ctrl.busy


def test_csrs_status_error_latch_and_counters():
    """Csrs alone: CTRL starts (STATUS busy, counters cleared), a stop latches its code
    and info into STATUS / ERROR_INFO the next cycle, counters count only while busy."""
    dut = Csrs()
    seen = {}

    async def bench(ctx):
        await csr_write(ctx, dut.csr, Csr.BASE0 + 3, 0x1234)
        await csr_write(ctx, dut.csr, Csr.WR_BASE, 0x400)
        await csr_write(ctx, dut.csr, Csr.WR_SIZE, 0x300)
        seen["wr"] = (ctx.get(dut.wr_base), ctx.get(dut.wr_size))
        ctx.set(dut.macs, 7)
        ctx.set(dut.insns, 2)
        ctx.set(dut.fetch_words, 1)
        ctx.set(dut.rd_bytes, 1)
        ctx.set(dut.load_busy, 1)
        ctx.set(dut.compute_busy, 1)
        await ctx.tick()  # not running: nothing counts
        seen["idle"] = csr_read_all(ctx, dut.csr)
        ctx.set(dut.csr.addr, Csr.CTRL)
        ctx.set(dut.csr.w_data, 1)
        ctx.set(dut.csr.w_en, 1)
        seen["start"] = ctx.get(dut.run.start)
        await ctx.tick()
        ctx.set(dut.csr.w_en, 0)
        for _ in range(3):  # three counted cycles
            await ctx.tick()
        ctx.set(dut.end.stop, 1)
        ctx.set(dut.end.code, ErrorCode.TOKEN_DEADLOCK)
        ctx.set(dut.end.info, 41)
        ctx.set(dut.end.addr, 0xDEAD0)
        await ctx.tick()  # the fourth counted cycle; STATUS is set after it
        ctx.set(dut.end.stop, 0)
        await ctx.tick()
        seen["stopped"] = csr_read_all(ctx, dut.csr)
        seen["base3"] = ctx.get(dut.base[3])
        ctx.set(dut.csr.addr, Csr.BASE0 + 3)
        seen["base3_read"] = ctx.get(dut.csr.r_data)

    simulate(dut, bench)
    assert seen["start"] == 1
    idle, stopped = seen["idle"], seen["stopped"]
    assert idle["STATUS"] == 0 and idle["CYCLES"] == 0 and idle["MACS"] == 0
    assert seen["base3"] == seen["base3_read"] == 0x1234
    # STATUS = isa.Status: busy bit 0, done bit 1, error bits 8..15
    assert stopped["STATUS"] == (ErrorCode.TOKEN_DEADLOCK << 8) | 0b10
    assert stopped["ERROR_INFO"] == 41
    assert stopped["FAULT_ADDR"] == 0xDEAD0 and idle["FAULT_ADDR"] == 0
    assert seen["wr"] == (stopped["WR_BASE"], stopped["WR_SIZE"]) == (0x400, 0x300)
    assert stopped["CYCLES"] == 4
    assert stopped["MACS"] == 4 * 7
    assert stopped["INSNS"] == 4 * 2
    assert stopped["DRAM_RD"] == 4 * (8 + 1)
    assert stopped["LOAD_BUSY"] == stopped["COMPUTE_BUSY"] == stopped["LOAD_COMPUTE_OVERLAP"] == 4
    assert stopped["STORE_BUSY"] == stopped["DRAM_WR"] == stopped["ZERO_SKIPS"] == 0
