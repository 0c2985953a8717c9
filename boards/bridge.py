"""The UART host bridge: the host's CSR accesses and memory blocks over a byte stream.

The frame format is defined (and its numbers kept) in :mod:`celosia.sim.board`, the
host side; :class:`UartBridge`'s docstring repeats it byte by byte.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from celosia.rtl.controller import CsrSignature
from celosia.rtl.dram import HOST_BITS
from celosia.rtl.isa import Csr
from celosia.sim.board import SYNC, Cmd, Reply

__all__ = ["UartBridge"]


class UartBridge(wiring.Component):
    """Host bridge: request frames in, reply frames out, CSR bus and memory host port driven.

    Frame format (little endian; :mod:`celosia.sim.board` is the reference)::

        request: 0xA5 CMD A0 A1 A2 A3 N0 N1 PAYLOAD... CHK
        reply:   STATUS PAYLOAD... CHK          (PAYLOAD only when STATUS is 0, OK)

    ========= ======================= ======================= =======================
    CMD       A (4 bytes)             request PAYLOAD         reply PAYLOAD
    ========= ======================= ======================= =======================
    1 CSR_WRITE CSR number            value (4 bytes)         none
    2 CSR_READ  CSR number            none                    value (4 bytes)
    3 MEM_WRITE first 64-bit word     (N + 1) * 8 bytes       none
    4 MEM_READ  first 64-bit word     none                    (N + 1) * 8 bytes
    5 MEM_CLEAR first 64-bit word     none                    none
    6 INFO      0                     none                    ``info`` (``CLB1``, memory
                                                              words, config id, clock
                                                              Hz, the config fields)
    ========= ======================= ======================= =======================

    ``N`` (2 bytes) is the number of 64-bit words - 1 for the memory commands, 0 for the
    others. ``CHK`` is the sum modulo 256 of the bytes from ``CMD`` (request) or ``STATUS``
    (reply) to the end of the payload. ``STATUS``: 0 OK, 1 BAD_CHECKSUM, 2 BAD_COMMAND
    (an unknown ``CMD``; its frame has no payload), 3 OUT_OF_RANGE (a memory block past
    the end of the memory: nothing written or read).

    Parameters
    ----------
    host_words : int
        The memory size in 64-bit words (the DRAM model's ``host_words``).
    info : bytes
        The ``INFO`` reply's payload (:func:`celosia.sim.board.info_payload`), held in a
        small ROM.
    timeout : int
        Cycles without a byte after which a frame in progress is dropped (64 byte times
        at the UART's rate is a good value).

    Ports
    -----
    rx : In(stream.Signature(8))
        Received bytes (:class:`~celosia.boards.uart.UartRx`); taken in the cycle they are
        valid (``ready`` is always high): bytes that arrive while a reply is being sent
        are dropped, so the host waits for each reply.
    tx : Out(stream.Signature(8))
        Reply bytes (:class:`~celosia.boards.uart.UartTx`).
    csr : Out(CsrSignature)
        The accelerator's CSR bus. Between frames the bridge reads ``STATUS`` (reads have
        no side effect) into ``status``. A CSR write (``w_en`` one cycle) happens after the
        frame's checksum is checked; a CSR read samples ``r_data`` in one cycle.
    host_addr, host_we, host_wdata, host_rdata
        The memory's host port (:class:`~celosia.rtl.dram.DramModel`: 64-bit words,
        synchronous read). ``MEM_WRITE`` writes each word the cycle after its last byte
        arrives; ``MEM_CLEAR`` one word per cycle; ``MEM_READ`` reads a word two cycles
        before it starts sending it.
    status : Out(32)
        ``STATUS`` as last read, for the status LEDs.
    idle : Out(1)
        High while the bridge waits for a frame (nothing received, nothing to send).
    """

    def __init__(self, host_words: int, info: bytes, timeout: int = 1 << 16):
        self._host_words = host_words
        self._info = bytes(info)
        self._timeout = timeout
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "csr": Out(CsrSignature),
            "host_addr": Out(range(host_words)),
            "host_we": Out(1),
            "host_wdata": Out(HOST_BITS),
            "host_rdata": In(HOST_BITS),
            "status": Out(32),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx, tx = self.rx, self.tx
        byte = rx.payload
        m.d.comb += rx.ready.eq(1)

        cmd = Signal(8)
        addr = Signal(32)            # CSR number, or the current memory word
        count = Signal(16)           # words left - 1 (memory commands)
        value = Signal(HOST_BITS)    # CSR value / the word being assembled or sent
        index = Signal(range(max(16, len(self._info))))  # byte in the field / word / INFO
        chk = Signal(8)              # request checksum; then the reply's
        reply = Signal(8)            # the reply's STATUS
        in_range = Signal()
        timer = Signal(range(self._timeout + 1))

        words_bits = max(1, ceil_log2(self._host_words))
        m.d.comb += self.host_addr.eq(addr[:words_bits])
        m.d.comb += self.host_wdata.eq(value)

        is_mem = Signal()
        m.d.comb += is_mem.eq((cmd == Cmd.MEM_WRITE) | (cmd == Cmd.MEM_READ) | (cmd == Cmd.MEM_CLEAR))
        known = Signal()
        m.d.comb += known.eq(is_mem | (cmd == Cmd.CSR_WRITE) | (cmd == Cmd.CSR_READ) | (cmd == Cmd.INFO))
        info = Const(int.from_bytes(self._info, "little"), 8 * len(self._info))

        # Between frames the CSR address rests on STATUS, for the LEDs.
        csr_access = Signal()
        m.d.comb += self.csr.addr.eq(Csr.STATUS)
        with m.If(~csr_access):
            m.d.sync += self.status.eq(self.csr.r_data)

        def take(sync_stmts, nxt=None):
            """In a receiving state: on a received byte, add it to the checksum, then
            ``sync_stmts``; without one, count towards the timeout (then drop the frame)."""
            with m.If(rx.valid):
                m.d.sync += [chk.eq(chk + byte), timer.eq(0), *sync_stmts]
                if nxt is not None:
                    m.next = nxt
            with m.Elif(timer == self._timeout):
                m.next = "SYNC"
            with m.Else():
                m.d.sync += timer.eq(timer + 1)

        def field(target, nbytes, nxt):
            """Receive an ``nbytes`` little-endian field into ``target`` (the bits above it
            cleared), then go to ``nxt``."""
            take([target.eq(Cat(target[8:8 * nbytes], byte)), index.eq(index + 1)])
            with m.If(rx.valid & (index == nbytes - 1)):
                m.d.sync += index.eq(0)
                m.next = nxt

        def send(data, nxt):
            """Send ``data`` (adding it to the reply checksum); go to ``nxt`` once taken."""
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(data)]
            with m.If(tx.ready):
                m.d.sync += chk.eq(chk + data)
                m.next = nxt

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += self.idle.eq(1)
                with m.If(rx.valid & (byte == SYNC)):
                    m.d.sync += [chk.eq(0), index.eq(0), timer.eq(0)]
                    m.next = "CMD"
            with m.State("CMD"):
                take([cmd.eq(byte)], "ADDR")
            with m.State("ADDR"):
                field(addr, 4, "LEN")
            with m.State("LEN"):
                field(count, 2, "RANGE")
            with m.State("RANGE"):  # one cycle: is the memory block inside the memory?
                m.d.sync += in_range.eq(addr + count < self._host_words)
                with m.If(cmd == Cmd.CSR_WRITE):
                    m.next = "CSR_DATA"
                with m.Elif(cmd == Cmd.MEM_WRITE):
                    m.next = "MEM_DATA"
                with m.Else():
                    m.next = "CHK"
            with m.State("CSR_DATA"):
                field(value, 4, "CHK")
            with m.State("MEM_DATA"):
                field(value, 8, "MEM_STORE")
            with m.State("MEM_STORE"):  # the word is complete: write it, then the next or CHK
                m.d.comb += self.host_we.eq(in_range)
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                with m.If(count == 0):
                    m.next = "CHK"
                with m.Else():
                    m.next = "MEM_DATA"
            with m.State("CHK"):
                take([])
                with m.If(rx.valid):
                    m.d.sync += [chk.eq(0), timer.eq(0), index.eq(0)]
                    with m.If(byte != chk):
                        m.d.sync += reply.eq(Reply.BAD_CHECKSUM)
                        m.next = "REPLY"
                    with m.Elif(~known):
                        m.d.sync += reply.eq(Reply.BAD_COMMAND)
                        m.next = "REPLY"
                    with m.Elif(is_mem & ~in_range):
                        m.d.sync += reply.eq(Reply.OUT_OF_RANGE)
                        m.next = "REPLY"
                    with m.Else():
                        m.d.sync += reply.eq(Reply.OK)
                        with m.If((cmd == Cmd.CSR_WRITE) | (cmd == Cmd.CSR_READ)):
                            m.next = "CSR"
                        with m.Elif(cmd == Cmd.MEM_CLEAR):
                            m.next = "CLEAR"
                        with m.Else():
                            m.next = "REPLY"
            with m.State("CSR"):  # one cycle on the CSR bus
                m.d.comb += [csr_access.eq(1), self.csr.addr.eq(addr[:8]),
                             self.csr.w_en.eq(cmd == Cmd.CSR_WRITE), self.csr.w_data.eq(value[:32])]
                m.d.sync += value.eq(self.csr.r_data)
                m.next = "REPLY"
            with m.State("CLEAR"):
                m.d.comb += [self.host_we.eq(1), self.host_wdata.eq(0)]
                m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                with m.If(count == 0):
                    m.next = "REPLY"
            with m.State("REPLY"):
                with m.If(reply != Reply.OK):
                    send(reply, "REPLY_CHK")
                with m.Elif(cmd == Cmd.CSR_READ):
                    send(reply, "SEND")
                with m.Elif(cmd == Cmd.INFO):
                    send(reply, "SEND_INFO")
                with m.Elif(cmd == Cmd.MEM_READ):
                    send(reply, "FETCH")
                with m.Else():
                    send(reply, "REPLY_CHK")
            with m.State("FETCH"):  # host_addr = addr now; host_rdata holds it next cycle
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += [value.eq(self.host_rdata), index.eq(0)]
                m.next = "SEND"
            with m.State("SEND"):  # the bytes of value: 4 (CSR_READ) or 8 (MEM_READ)
                last = Signal()
                m.d.comb += last.eq(index == Mux(cmd == Cmd.CSR_READ, 3, 7))
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(value[:8])]
                with m.If(tx.ready):
                    m.d.sync += [chk.eq(chk + value[:8]), value.eq(value >> 8), index.eq(index + 1)]
                    with m.If(last):
                        with m.If((cmd == Cmd.MEM_READ) & (count != 0)):
                            m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "REPLY_CHK"
            with m.State("SEND_INFO"):
                data = info.word_select(index, 8)
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(data)]
                with m.If(tx.ready):
                    m.d.sync += [chk.eq(chk + data), index.eq(index + 1)]
                    with m.If(index == len(self._info) - 1):
                        m.next = "REPLY_CHK"
            with m.State("REPLY_CHK"):
                send(chk, "SYNC")
        return m
