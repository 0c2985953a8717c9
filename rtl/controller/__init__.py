"""Graph controller: CSRs, program fetch, the three instruction queues, dependency
tokens, dispatch to the engines, counters, error and deadlock detection.

:class:`Controller` is three parts, one component each:

* :class:`~celosia.rtl.controller.fetch.Fetch` (``fetch.py``): reads the node
  descriptor table and the instructions from DRAM (client 0 of the arbiter in
  ``rtl/top.py``) and pushes each instruction with its fetch-order index into the
  queue its opcode selects;
* :class:`~celosia.rtl.controller.dispatch.Dispatch` (``dispatch.py``): the LOAD,
  COMPUTE and STORE queues, the VTA-style dependency tokens between them, issue to
  the engines, completion, token overflow and deadlock detection, and why a run ends;
* :class:`~celosia.rtl.controller.nodes.NodeTracker` (``nodes.py``): node boundaries,
  from the per-queue instruction counts fetch sends with each node's last instruction
  and the completions dispatch reports;
* :class:`~celosia.rtl.controller.csrs.Csrs` (``csrs.py``): CSR decode, STATUS
  (:data:`isa.Status`), the error latch, base / window registers, the counters and
  their per-node snapshots.

Every engine is one :class:`~celosia.rtl.controller.signatures.EngineSignature` port
(``signatures.py``), joined with ``wiring.connect(m, controller=..., engine=...)``.

Stop: an engine error (a LOAD / STORE gives its code, a compute or vector error is
BUFFER_OUT_OF_RANGE), a fetch error (BAD_DESCRIPTOR: descriptor or instruction block
outside the read window ``[WINDOW_BASE, WINDOW_BASE + WINDOW_SIZE)`` (size 0: whole DRAM) or outside
the DRAM or misaligned; ILLEGAL_OPCODE), a token overflow, or a deadlock (fetch ended
or blocked on a full queue, no engine busy, every non-empty queue's head waits for a
token, for 4 consecutive cycles), or the watchdog (WATCHDOG non-zero and no instruction
pushed into a queue or completed for that many cycles: error WATCHDOG) sets STATUS to done=1, busy=0, error=code and
ERROR_INFO to the fetch-order index of the instruction concerned (deadlock: the oldest
waiting head) and FAULT_ADDR to the DRAM byte address that faulted (DMA_OUT_OF_WINDOW:
a LOAD outside the read window, a STORE outside the write window ``[WR_BASE, WR_BASE +
WR_SIZE)``; BAD_DESCRIPTOR: the refused descriptor / instruction address; else 0). Engines may finish the instruction they are executing; nothing new
starts. Completion pulses of an engine count only for the instruction the controller
gave it in this run, so a restart (CTRL=1, which also flushes the queues) after an
error is clean once the engine is idle again.

Counters (32 bit, wrap) count only while STATUS.busy. DRAM_RD = load DMA bytes + 8 per
fetched word; MACS += m_len * k_len * n_len at each GEMM issue (times win_h * win_w
where the dataflow's ``macs_count_taps`` trait is set, the windowed GEMMs of rs and feie; VECs
add none); COMPUTE_BUSY and LOAD_COMPUTE_OVERLAP count cycles where the PE array or
the vector engine is busy; INSNS counts instructions started (NOPs included).

Node boundaries: node ``k``'s boundary is the first cycle by which every instruction of
nodes 0..k has completed (all three queues); in the next cycle the counters as they
stood then (counting through the cycle of the last completion) are copied into the
SNAP_* CSRs, NODES_DONE counts it and ``node.done`` pulses (``node.index`` = NODES_DONE,
``node.counters`` = the snapshot), one node per cycle. None of it changes when anything
issues.
"""

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.csrs import Csrs
from celosia.rtl.controller.dispatch import Dispatch, engine_signatures
from celosia.rtl.controller.fetch import Fetch
from celosia.rtl.controller.nodes import NodeTracker
from celosia.rtl.controller.signatures import (CsrSignature, EngineSignature, EventSignature,
                                               NodeSignature, engine_view)
from celosia.rtl.dram import DramBusSignature

__all__ = ["CsrSignature", "EngineSignature", "EventSignature", "NodeSignature", "engine_view",
           "Controller"]


class Controller(wiring.Component):
    """Graph controller: :class:`Fetch`, :class:`Dispatch` and :class:`Csrs` joined.

    Parameters
    ----------
    config : AccelConfig

    Ports
    -----
    csr : In(CsrSignature)
    bus : Out(DramBusSignature.of(config))
        Fetch master (reads only).
    load : Out(EngineSignature(isa.LoadInsn, error_code=True, dram_bytes=True, pre=LoadPre))
    compute : Out(EngineSignature(isa.GemmInsn, zero_skips=True, pre=GemmPre))
        GEMMs of the compute queue, to the PE array.
    vector : Out(EngineSignature(isa.VecInsn))
        VECs of the compute queue, to the vector engine.
    store : Out(EngineSignature(isa.StoreInsn, error_code=True, dram_bytes=True))
        The engines: each takes an instruction on ``insn`` when ``ready`` (= idle) and
        reports ``done`` / ``error`` pulses and ``busy``; the DMA engines an
        ``error_code`` and a pulse per DRAM byte (``bytes``: DRAM_RD for ``load``,
        DRAM_WR for ``store``), the PE array its ``zero_skips`` and ``mac_cycles``.
    base : Out(data.ArrayLayout(32, 8))
        Base registers BASE0..BASE0+7.
    window_base, window_size : Out(32)
        The read window (bytes; size 0 = whole DRAM): LOADs and fetch.
    wr_base, wr_size : Out(32)
        The write window (bytes; size 0 = whole DRAM): STOREs to DRAM.
    node : Out(NodeSignature)
        Per-node snapshots: ``done`` pulses the cycle after each node boundary, with
        ``index`` (NODES_DONE) and ``counters`` (the SNAP_* CSRs).
    events : Out(EventSignature)
        Instructions starting (``issue``) and completing (``fin``) this cycle, per queue
        (combinational; for the harnesses' instruction traces).

    Timing: a CSR write takes effect the next cycle (CTRL's start the same cycle); an
    instruction at the head of its queue is offered to its engine in the cycle its
    tokens are there (combinational from the queue head); a completion pulse frees the
    engine's tokens in the next cycle; a stop cause sets STATUS the next cycle.
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "csr": In(CsrSignature),
            "bus": Out(DramBusSignature.of(config)),
            **{name: Out(sig) for name, sig in engine_signatures().items()},
            "base": Out(data.ArrayLayout(32, isa.NUM_BASE_REGS)),
            "window_base": Out(32),
            "window_size": Out(32),
            "wr_base": Out(32),
            "wr_size": Out(32),
            "node": Out(NodeSignature),
            "events": Out(EventSignature),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.csrs = csrs = Csrs()
        m.submodules.fetch = fetch = Fetch(self._config)
        m.submodules.dispatch = dispatch = Dispatch(self._config)
        m.submodules.nodes = nodes = NodeTracker(self._config)

        wiring.connect(m, wiring.flipped(self.csr), csrs.csr)
        wiring.connect(m, wiring.flipped(self.bus), fetch.bus)
        for name in engine_signatures():
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(dispatch, name))
        wiring.connect(m, csrs=csrs.run, fetch=fetch.run, dispatch=dispatch.run)
        wiring.connect(m, fetch=fetch.push, dispatch=dispatch.push)
        wiring.connect(m, fetch=fetch.status, dispatch=dispatch.fetch)
        wiring.connect(m, dispatch=dispatch.end, csrs=csrs.end)
        m.d.comb += nodes.run.start.eq(csrs.run.start)
        m.d.comb += nodes.run.running.eq(csrs.run.running)
        wiring.connect(m, fetch=fetch.bound, nodes=nodes.bound)
        wiring.connect(m, wiring.flipped(self.node), csrs.node)

        m.d.comb += [
            fetch.prog_base.eq(csrs.prog_base),
            fetch.window_base.eq(csrs.window_base), fetch.window_size.eq(csrs.window_size),
            self.base.eq(csrs.base),
            self.window_base.eq(csrs.window_base), self.window_size.eq(csrs.window_size),
            self.wr_base.eq(csrs.wr_base), self.wr_size.eq(csrs.wr_size),
            csrs.load_busy.eq(self.load.busy),
            csrs.compute_busy.eq(self.compute.busy | self.vector.busy),
            csrs.store_busy.eq(self.store.busy),
            csrs.macs.eq(dispatch.macs), csrs.insns.eq(dispatch.insns),
            csrs.fetch_words.eq(fetch.words),
            csrs.rd_bytes.eq(self.load.bytes), csrs.wr_bytes.eq(self.store.bytes),
            csrs.zero_skips.eq(self.compute.zero_skips),
            csrs.mac_cycles.eq(self.compute.mac_cycles),
            nodes.fin.eq(dispatch.fin), csrs.node_done.eq(nodes.done),
            dispatch.watchdog.eq(csrs.watchdog),
            self.events.issue.eq(dispatch.issued), self.events.fin.eq(dispatch.fin),
        ]
        return m
