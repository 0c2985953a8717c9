"""Instruction fetch: the descriptor table and the instruction words, from DRAM into
the instruction queues."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.signatures import (INDEX_BITS, FetchStatusSignature, QueueEntry,
                                               RunSignature)
from celosia.rtl.dram import DramBusSignature

__all__ = ["Fetch"]

#: Opcodes with a queue (everything else is ILLEGAL_OPCODE).
QUEUED_OPCODES = (isa.Opcode.LOAD, isa.Opcode.GEMM, isa.Opcode.VEC, isa.Opcode.NOP,
                  isa.Opcode.STORE)


class Fetch(wiring.Component):
    """Program fetch, a DRAM bus master (reads only).

    The program (``rtl/isa.py``) is a table of 64-bit :data:`isa.NodeDescriptor` at
    ``prog_base`` ended by ``n_insn == 0``; each descriptor points at ``n_insn``
    256-bit instructions at ``prog_base + insn_offset``. Fetch reads one descriptor,
    then per instruction issues its four word reads back to back (pipelined),
    assembles it and offers it on ``push`` with its fetch-order index. One instruction
    is in flight; with ``dram_latency = L`` an instruction takes about ``L + 5``
    cycles.

    Fetch works in 64-bit words at every bus width (``config.bus_bits``): a request
    reads the bus word holding the next 64-bit word (address ``byte address /
    (bus_bits / 8)``) and the response's 64 bits at ``byte address % (bus_bits / 8)``
    are taken, so the requests, the timing and the DRAM_RD count (8 bytes per word)
    are the same at 64, 128 and 256 bits.

    Parameters
    ----------
    config : AccelConfig

    Ports
    -----
    run : In(RunSignature)
        ``start`` (re)starts fetch at descriptor 0, index 0 (after the responses of an
        aborted run have come back); fetch goes idle when ``running`` is low.
    prog_base : In(32)
    window_base, window_size : In(32)
        The DRAM window (bytes; size 0 = whole DRAM) every descriptor and instruction
        block must lie in.
    bus : Out(DramBusSignature.of(config))
    push : Out(stream.Signature(QueueEntry))
        The fetched instruction (valid only for an opcode with a queue); the consumer's
        ``ready`` is the room in the queue the opcode selects.
    status : Out(FetchStatusSignature)
        ``error`` / ``error_code``: BAD_DESCRIPTOR (descriptor or instruction block
        outside the window or the DRAM, or misaligned) or ILLEGAL_OPCODE, one cycle,
        then fetch is idle; ``index``: the fetch-order index of the next instruction;
        ``ended``: the table's end was read; ``blocked``: ``push`` waits for room.
    words : Out(1)
        A fetched 64-bit word arrives (8 DRAM bytes read).

    Timing: the descriptor read is issued in the cycle after the state machine enters
    DESC; an instruction is offered on ``push`` one cycle after its last word
    arrives, and the next instruction's check follows the cycle it is taken.
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "run": In(RunSignature),
            "prog_base": In(32),
            "window_base": In(32),
            "window_size": In(32),
            "bus": Out(DramBusSignature.of(config)),
            "push": Out(stream.Signature(QueueEntry)),
            "status": Out(FetchStatusSignature),
            "words": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        start, running = self.run.start, self.run.running
        prog_base, status = self.prog_base, self.status

        def in_window(addr, nbytes):
            end = addr + nbytes
            in_dram = end <= cfg.dram_bytes
            in_win = ((self.window_size == 0) |
                      ((addr >= self.window_base) &
                       (end <= self.window_base + self.window_size)))
            return in_dram & in_win

        bus = self.bus
        # A 64-bit word at byte address ``a``: bus word ``a >> word_shift``, 64 bits
        # number ``(a >> 3) % subs`` of it.
        subs = cfg.bus_bits // 64
        word_shift = (cfg.bus_bytes - 1).bit_length()

        def sub_word(addr64):
            # the 64-bit word ``addr64`` (byte address / 8) of the response
            if subs == 1:
                return bus.rsp.p.rdata
            return bus.rsp.p.rdata.word_select(addr64[:word_shift - 3], 64)

        outstanding = Signal(8)
        req_fire = bus.req.valid & bus.req.ready
        m.d.sync += outstanding.eq(outstanding + req_fire - bus.rsp.valid)
        m.d.comb += [bus.req.p.we.eq(0), bus.req.p.wmask.eq(0), bus.req.p.tag.eq(0)]

        desc_idx = Signal(32)
        insn_idx = Signal(INDEX_BITS)  # fetch-order index of the next instruction
        node_left = Signal(16)
        insn_addr = Signal(34)         # byte address of the next instruction
        insn_ok = Signal()             # insn_offset was 32-aligned
        word_req = Signal(range(isa.INSN_WORDS + 1))
        word_rsp = Signal(range(isa.INSN_WORDS))
        words = [Signal(64, name=f"insn_w{i}") for i in range(isa.INSN_WORDS)]
        insn = Cat(*words)
        opcode = insn[:4]

        m.d.comb += [status.index.eq(insn_idx), self.push.payload.eq(Cat(insn, insn_idx))]
        desc_addr = prog_base + (desc_idx << 3)

        def restart_or_stop():
            # in every state (last, so it wins): a start (re)starts fetch, a stop ends it
            with m.If(start):
                m.d.sync += [desc_idx.eq(0), insn_idx.eq(0)]
                m.next = "DRAIN"
            with m.Elif(~running):
                m.next = "IDLE"

        def bad_descriptor():
            m.d.comb += [status.error.eq(1), status.error_code.eq(isa.ErrorCode.BAD_DESCRIPTOR)]
            m.next = "IDLE"

        with m.FSM(name="fetch"):
            with m.State("IDLE"):
                restart_or_stop()
            with m.State("DRAIN"):
                # responses of an aborted run are still on their way
                with m.If(outstanding == 0):
                    m.next = "DESC"
                restart_or_stop()
            with m.State("DESC"):
                with m.If((prog_base[:3] != 0) | ~in_window(desc_addr, isa.DESC_BYTES)):
                    bad_descriptor()
                with m.Else():
                    m.d.comb += [bus.req.valid.eq(1), bus.req.p.addr.eq(desc_addr >> word_shift)]
                    with m.If(bus.req.ready):
                        m.next = "DESC_WAIT"
                restart_or_stop()
            with m.State("DESC_WAIT"):
                with m.If(bus.rsp.valid):
                    desc = data.View(isa.NodeDescriptor, sub_word(desc_addr[3:]))
                    m.d.comb += self.words.eq(1)
                    m.d.sync += [
                        desc_idx.eq(desc_idx + 1),
                        node_left.eq(desc.n_insn),
                        insn_addr.eq(prog_base + desc.insn_offset),
                        insn_ok.eq(desc.insn_offset[:5] == 0),
                    ]
                    with m.If(desc.n_insn == 0):
                        m.next = "END"
                    with m.Else():
                        m.next = "CHECK"
                restart_or_stop()
            with m.State("CHECK"):
                m.d.sync += [word_req.eq(0), word_rsp.eq(0)]
                with m.If(~insn_ok | ~in_window(insn_addr, isa.INSN_BYTES)):
                    bad_descriptor()
                with m.Else():
                    m.next = "WORDS"
                restart_or_stop()
            with m.State("WORDS"):
                m.d.comb += [bus.req.valid.eq(word_req != isa.INSN_WORDS),
                             bus.req.p.addr.eq(((insn_addr >> 3) + word_req) >> (word_shift - 3))]
                with m.If(req_fire):
                    m.d.sync += word_req.eq(word_req + 1)
                with m.If(bus.rsp.valid):
                    m.d.comb += self.words.eq(1)
                    with m.Switch(word_rsp):
                        for i in range(isa.INSN_WORDS):
                            with m.Case(i):
                                m.d.sync += words[i].eq(sub_word((insn_addr >> 3) + i))
                    m.d.sync += word_rsp.eq(word_rsp + 1)
                    with m.If(word_rsp == isa.INSN_WORDS - 1):
                        m.next = "PUSH"
                restart_or_stop()
            with m.State("PUSH"):
                with m.Switch(opcode):
                    with m.Case(*QUEUED_OPCODES):
                        m.d.comb += [self.push.valid.eq(1),
                                     status.blocked.eq(~self.push.ready)]
                    with m.Default():
                        m.d.comb += [status.error.eq(1),
                                     status.error_code.eq(isa.ErrorCode.ILLEGAL_OPCODE)]
                        m.next = "IDLE"
                with m.If(self.push.valid & self.push.ready):
                    m.d.sync += [insn_idx.eq(insn_idx + 1), node_left.eq(node_left - 1),
                                 insn_addr.eq(insn_addr + isa.INSN_BYTES)]
                    with m.If(node_left == 1):
                        m.next = "DESC"
                    with m.Else():
                        m.next = "CHECK"
                restart_or_stop()
            with m.State("END"):
                m.d.comb += status.ended.eq(1)
                restart_or_stop()
        return m
