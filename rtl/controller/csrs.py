"""The control and status registers: CSR decode, STATUS, the error latch (with
FAULT_ADDR), the base and window registers, and the performance counters."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.controller.signatures import (DRAM_BYTES_BITS, INDEX_BITS, CsrSignature,
                                               NodeSignature, RunEndSignature, RunSignature)

__all__ = ["Csrs"]


class Csrs(wiring.Component):
    """The CSR file (``isa.Csr``).

    Writes (``csr.w_en``, registered): PROG_BASE, WINDOW_BASE, WINDOW_SIZE (the read
    window), WR_BASE, WR_SIZE (the write window), BASE0..BASE7, WATCHDOG; CTRL with bit 0 set is ``run.start`` (combinational, that cycle).
    Reads (``csr.r_data``, combinational from ``csr.addr``): those registers, STATUS
    (:data:`isa.Status`), ERROR_INFO, FAULT_ADDR and the counters; other addresses read 0.

    STATUS and the error latch: ``start`` sets busy=1, done=0, error=0,
    ERROR_INFO=0, FAULT_ADDR=0 (and clears the counters); then the first cycle with
    ``end.stop`` while busy sets busy=0, done=1, error=``end.code``,
    ERROR_INFO=``end.info``, FAULT_ADDR=``end.addr``; or
    ``end.finished`` sets busy=0, done=1. All take effect the next cycle.

    Counters (:data:`celosia.rtl.isa.COUNTERS`, 32 bit, wrap) add each cycle while STATUS.busy:
    CYCLES 1; LOAD_BUSY, COMPUTE_BUSY, STORE_BUSY the busy inputs;
    LOAD_COMPUTE_OVERLAP ``load_busy & compute_busy``; MACS ``macs``; DRAM_RD
    ``8 * fetch_words + rd_bytes``; DRAM_WR ``wr_bytes``; INSNS ``insns``; ZERO_SKIPS
    ``zero_skips``; MAC_CYCLES ``mac_cycles``.

    Snapshots: in a cycle with ``node_done`` while busy, every counter's value (the
    increments of the cycles before this one) is copied into its SNAP_* CSR
    (:data:`celosia.rtl.isa.SNAPSHOTS`) and NODES_DONE increments, taking effect the
    next cycle, in which ``node.done`` is high; ``start`` clears them.

    Ports
    -----
    csr : In(CsrSignature)
    run : Out(RunSignature)
        ``start`` and ``running`` (STATUS.busy).
    end : In(RunEndSignature)
    prog_base : Out(32)
    base : Out(data.ArrayLayout(32, 8))
        Base registers BASE0..BASE0+7.
    window_base, window_size : Out(32)
        The read window (WINDOW_BASE, WINDOW_SIZE).
    wr_base, wr_size : Out(32)
        The write window (WR_BASE, WR_SIZE).
    load_busy, compute_busy, store_busy : In(1)
        ``compute_busy``: the PE array or the vector engine is busy.
    macs : In(32)
    insns : In(2)
    fetch_words : In(1)
    rd_bytes, wr_bytes : In(DRAM_BYTES_BITS)
        DRAM bytes the load / store DMA moved this cycle (0 .. ``bus_bits / 8``).
    zero_skips : In(16)
    mac_cycles : In(1)
    node_done : In(1)
        A node boundary (rtl/controller/nodes.py).
    node : Out(NodeSignature)
        The latest snapshot: ``done`` the cycle after it is taken, ``index`` NODES_DONE,
        ``counters`` the SNAP_* CSRs.
    watchdog : Out(32)
        The WATCHDOG CSR.
    """

    def __init__(self):
        super().__init__({
            "csr": In(CsrSignature),
            "run": Out(RunSignature),
            "end": In(RunEndSignature),
            "prog_base": Out(32),
            "base": Out(data.ArrayLayout(32, isa.NUM_BASE_REGS)),
            "window_base": Out(32),
            "window_size": Out(32),
            "wr_base": Out(32),
            "wr_size": Out(32),
            "load_busy": In(1), "compute_busy": In(1), "store_busy": In(1),
            "macs": In(32), "insns": In(2),
            "fetch_words": In(1),
            "rd_bytes": In(DRAM_BYTES_BITS), "wr_bytes": In(DRAM_BYTES_BITS),
            "zero_skips": In(16),
            "mac_cycles": In(1),
            "node_done": In(1),
            "node": Out(NodeSignature),
            "watchdog": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        csr = self.csr
        start, busy = self.run.start, self.run.running
        m.d.comb += start.eq(csr.w_en & (csr.addr == isa.Csr.CTRL) & csr.w_data[0])

        done = Signal()
        err_code = Signal(8)
        err_info = Signal(INDEX_BITS)
        fault_addr = Signal(32)
        status = Signal(isa.Status)
        m.d.comb += [status.busy.eq(busy), status.done.eq(done), status.error.eq(err_code)]
        counters = {c: Signal(32, name=f"cnt_{c.name.lower()}") for c in isa.COUNTERS}
        writable = {isa.Csr.PROG_BASE: self.prog_base, isa.Csr.WINDOW_BASE: self.window_base,
                    isa.Csr.WINDOW_SIZE: self.window_size,
                    isa.Csr.WR_BASE: self.wr_base, isa.Csr.WR_SIZE: self.wr_size,
                    isa.Csr.WATCHDOG: self.watchdog,
                    **{isa.Csr.BASE0 + i: self.base[i] for i in range(isa.NUM_BASE_REGS)}}

        with m.If(csr.w_en):
            with m.Switch(csr.addr):
                for addr, reg in writable.items():
                    with m.Case(addr):
                        m.d.sync += reg.eq(csr.w_data)

        snaps = dict(zip(isa.SNAPSHOTS, self.node.counters))
        readable = {isa.Csr.STATUS: status, **writable, **counters, isa.Csr.ERROR_INFO: err_info,
                    isa.Csr.FAULT_ADDR: fault_addr, isa.Csr.NODES_DONE: self.node.index, **snaps}
        with m.Switch(csr.addr):
            for addr, reg in readable.items():
                with m.Case(addr):
                    m.d.comb += csr.r_data.eq(reg)

        # STATUS and the error latch
        with m.If(start):
            m.d.sync += [busy.eq(1), done.eq(0), err_code.eq(0), err_info.eq(0), fault_addr.eq(0)]
        with m.Elif(busy & self.end.stop):
            m.d.sync += [busy.eq(0), done.eq(1), err_code.eq(self.end.code),
                         err_info.eq(self.end.info), fault_addr.eq(self.end.addr)]
        with m.Elif(self.end.finished):
            m.d.sync += [busy.eq(0), done.eq(1)]

        incs = {
            isa.Csr.CYCLES: 1,
            isa.Csr.LOAD_BUSY: self.load_busy,
            isa.Csr.COMPUTE_BUSY: self.compute_busy,
            isa.Csr.STORE_BUSY: self.store_busy,
            isa.Csr.MACS: self.macs,
            isa.Csr.DRAM_RD: Mux(self.fetch_words, 8, 0) + self.rd_bytes,
            isa.Csr.DRAM_WR: self.wr_bytes,
            isa.Csr.LOAD_COMPUTE_OVERLAP: self.load_busy & self.compute_busy,
            isa.Csr.INSNS: self.insns,
            isa.Csr.ZERO_SKIPS: self.zero_skips,
            isa.Csr.MAC_CYCLES: self.mac_cycles,
        }
        for c, sig in counters.items():
            with m.If(start):
                m.d.sync += sig.eq(0)
            with m.Elif(busy):
                m.d.sync += sig.eq(sig + incs[c])

        # per-node snapshots
        node = self.node
        m.d.sync += node.done.eq(0)
        with m.If(start):
            m.d.sync += [node.index.eq(0), *(snap.eq(0) for snap in snaps.values())]
        with m.Elif(busy & self.node_done):
            m.d.sync += [node.done.eq(1), node.index.eq(node.index + 1),
                         *(snap.eq(counters[c]) for c, snap in zip(isa.COUNTERS, snaps.values()))]
        return m
