"""Dispatch: the three instruction queues, dependency tokens, issue to the engines,
completion, token overflow and deadlock detection."""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.signatures import (GEMMS_IN_FLIGHT, INDEX_BITS, EngineSignature, FetchStatusSignature,
                                               GemmPre, LoadPre, QueueEntry, RunEndSignature, RunSignature, gemm_pre,
                                               load_pre)
from celosia.rtl.dataflows import dataflow

__all__ = ["Dispatch", "engine_signatures"]

#: Cycles the deadlock condition must hold before TOKEN_DEADLOCK.
DEADLOCK_CYCLES = 4
#: Largest value of a token counter (8 bit); a push beyond is TOKEN_OVERFLOW.
TOKEN_MAX = 255


def engine_signatures() -> dict:
    """The controller's four engine ports, name -> :class:`EngineSignature` (controller side)."""
    return {
        "load": EngineSignature(isa.LoadInsn, error_code=True, dram_bytes=True, pre=LoadPre),
        "compute": EngineSignature(isa.GemmInsn, zero_skips=True, pre=GemmPre),
        "vector": EngineSignature(isa.VecInsn),
        "store": EngineSignature(isa.StoreInsn, error_code=True, dram_bytes=True),
    }


class Dispatch(wiring.Component):
    """The LOAD, COMPUTE and STORE queues and everything between them and the engines.

    Queues are ``lib.fifo.SyncFIFOBuffered`` of ``queue_depth`` :data:`QueueEntry`
    (flushed by ``run.start``); ``push`` fills the one its opcode selects (LOAD -> LOAD,
    GEMM / VEC / NOP -> COMPUTE, STORE -> STORE). A compute-queue entry also keeps its
    instruction's :data:`~celosia.rtl.controller.signatures.GemmPre`, computed as it is
    pushed, which the compute engine gets with it (``compute.pre``); a load-queue entry its
    LOAD's :data:`~celosia.rtl.controller.signatures.LoadPre` (``load.pre``).

    Tokens (VTA style, queues ordered LOAD(0) - COMPUTE(1) - STORE(2)):

    ========  =========================  ==========================
    counter   incremented when ...        decremented when ...
    ========  =========================  ==========================
    ``l2c``   a LOAD with push_next ends   a GEMM/NOP with pop_prev starts
    ``c2l``   a GEMM/NOP with push_prev    a LOAD with pop_next starts
              ends
    ``c2s``   a GEMM/NOP with push_next    a STORE with pop_prev starts
              ends
    ``s2c``   a STORE with push_prev ends  a GEMM/NOP with pop_next starts
    ========  =========================  ==========================

    "GEMM/NOP" is any compute-queue instruction (GEMM, VEC, NOP). Flags that name a
    missing neighbour (LOAD pop_prev/push_prev, STORE pop_next/push_next) are
    ignored. Counters are 8 bit; a push into a counter at 255 is TOKEN_OVERFLOW.

    Issue: the head of a queue starts in a cycle where ``run.running`` is high, no
    engine or fetch error pulses, its engine's ``insn.ready`` is high and every token
    it pops is available; the pops happen in that cycle. The LOAD, STORE and vector engines, and the ``rs`` and ``feie``
    compute engines, are ready only when idle; the ``ws`` and ``os`` compute engines
    take the next GEMM while earlier ones are still in flight (up to
    :data:`GEMMS_IN_FLIGHT`) and complete them in order, so the GEMMs in flight are
    kept in a FIFO (their push flags and index) that each ``done`` / ``error`` pops:
    tokens move per GEMM, at its own ``done``. Popping at issue is what makes the
    early acceptance safe: a GEMM is handed over only once the tokens it waits for
    (data a LOAD has finished writing, space a STORE has finished reading) are there.
    The compute queue feeds two engines, GEMM -> ``compute``, VEC -> ``vector``,
    strictly in order: its head is offered to its engine only while the other engine
    is idle and has nothing of ours in flight (a VEC waits for every GEMM in flight to
    be done). A NOP starts when both compute engines are idle and "ends" the next
    cycle (only moving tokens). Completion pulses count only for the instructions
    given to that engine in this run.

    Parameters
    ----------
    config : AccelConfig
        ``queue_depth`` sizes the queues; ``dataflow`` chooses the MACS rule.

    Ports
    -----
    run : In(RunSignature)
        ``start`` flushes the queues and clears tokens and in-flight state; nothing
        issues unless ``running``.
    push : In(stream.Signature(QueueEntry))
        From fetch; ``ready`` = room in the selected queue.
    fetch : In(FetchStatusSignature)
    load, compute, vector, store : Out(EngineSignature(...))
        The engines (:func:`engine_signatures`).
    end : Out(RunEndSignature)
        ``stop`` (combinational, the cycle of the cause) with the first of: a LOAD,
        compute / vector (BUFFER_OUT_OF_RANGE) or STORE error, a token overflow, a
        fetch error, a deadlock (fetch ended or blocked, no engine busy, every
        non-empty queue's head waiting for a token, for :data:`DEADLOCK_CYCLES`
        cycles; ``info`` = the oldest waiting head's index), the watchdog (``watchdog``
        non-zero and no instruction pushed or completed, errors included, for that
        many cycles; ``info`` = the oldest queue head's index, or the next instruction's
        when the queues are empty); ``addr``: the fault address
        of a DMA_OUT_OF_WINDOW or BAD_DESCRIPTOR, else 0); ``finished``: fetch
        ended, queues empty, engines idle, no completion this cycle.
    watchdog : In(32)
        The WATCHDOG CSR: cycles without progress before the machine stops (0: never).
    fin : Out(3)
        Instructions completing this cycle (without error): bit 0 the LOAD, bit 1 the
        COMPUTE (GEMM, VEC or NOP), bit 2 the STORE queue's, for the node tracker.
    issued : Out(3)
        Instructions starting this cycle, per queue as ``fin``.
    insns : Out(2)
        Instructions started this cycle (NOPs included).
    macs : Out(32)
        MACs of the GEMM started this cycle: ``m_len * k_len * n_len``, times a windowed
        GEMM's ``win_h * win_w`` for dataflows whose trait ``macs_count_taps`` is set (rs,
        feie).
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "run": In(RunSignature),
            "push": In(stream.Signature(QueueEntry)),
            "fetch": In(FetchStatusSignature),
            **{name: Out(sig) for name, sig in engine_signatures().items()},
            "end": Out(RunEndSignature),
            "watchdog": In(32),
            "fin": Out(3),
            "issued": Out(3),
            "insns": Out(2),
            "macs": Out(32),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        start, busy = self.run.start, self.run.running
        load, compute, vector, store = self.load, self.compute, self.vector, self.store

        queues = {}
        # The compute queue's entries also keep, computed as each is pushed, the entry's
        # GemmPre (for the engine's range check) and two factors of its MACS increment,
        # m_len*k_len and n_len (times win_h*win_w where the dataflow counts taps), so
        # that neither needs two multiplies in a row after the queue (issue 15).
        compute_entry = data.StructLayout({"entry": QueueEntry, "pre": GemmPre,
                                           "mk": unsigned(24), "nt": unsigned(24)})
        gemm_in = self.push.payload.insn.gemm
        c_in = Signal(compute_entry)
        m.d.comb += [c_in.entry.eq(self.push.payload), c_in.mk.eq(gemm_in.m_len * gemm_in.k_len),
                     c_in.nt.eq(gemm_in.n_len)]
        m.d.comb += [c_in.pre[k].eq(v) for k, v in gemm_pre(gemm_in).items()]
        if dataflow(cfg.dataflow).macs_count_taps:  # windowed GEMMs: win_h * win_w taps per output
            m.d.comb += c_in.nt.eq(gemm_in.n_len * Mux(gemm_in.window, c_in.pre.taps_hw, 1))
        # The load queue's entries keep their LOAD's LoadPre (its clamped ranges), so that
        # the load DMA's acceptance cycle starts from registers with its multiplies.
        load_entry = data.StructLayout({"entry": QueueEntry, "pre": LoadPre})
        l_in = Signal(load_entry)
        m.d.comb += [l_in.entry.eq(self.push.payload)]
        m.d.comb += [l_in.pre[k].eq(v) for k, v in load_pre(self.push.payload.insn.load).items()]
        entries = {"load": (load_entry, l_in), "compute": (compute_entry, c_in),
                   "store": (QueueEntry, self.push.payload)}
        for name, (layout, w_data) in entries.items():
            q = SyncFIFOBuffered(width=layout.size, depth=cfg.queue_depth)
            m.submodules[f"{name}_q"] = ResetInserter(start)(q)
            m.d.comb += q.w_data.eq(w_data)
            queues[name] = q
        lq, cq, sq = queues["load"], queues["compute"], queues["store"]
        target = {isa.Opcode.LOAD: lq, isa.Opcode.GEMM: cq, isa.Opcode.VEC: cq,
                  isa.Opcode.NOP: cq, isa.Opcode.STORE: sq}
        with m.Switch(self.push.payload.insn.hdr.op):
            for op, q in target.items():
                with m.Case(op):
                    m.d.comb += [q.w_en.eq(self.push.valid), self.push.ready.eq(q.w_rdy)]

        c_head = data.View(compute_entry, cq.r_data)
        l_head = data.View(load_entry, lq.r_data)

        def head(q):
            entry = (c_head.entry if q is cq else l_head.entry if q is lq
                     else data.View(QueueEntry, q.r_data))
            return entry.insn, entry.index

        lh, lh_idx = head(lq)
        ch, ch_idx = head(cq)
        sh, sh_idx = head(sq)

        l2c, c2l, c2s, s2c = (Signal(8, name=n) for n in ("l2c", "c2l", "c2s", "s2c"))

        l_tok_ok = ~lh.hdr.dep.pop_next | (c2l != 0)
        c_tok_ok = (~ch.hdr.dep.pop_prev | (l2c != 0)) & (~ch.hdr.dep.pop_next | (s2c != 0))
        s_tok_ok = ~sh.hdr.dep.pop_prev | (c2s != 0)
        c_is_nop = ch.hdr.op == isa.Opcode.NOP
        c_is_vec = ch.hdr.op == isa.Opcode.VEC
        c_is_gemm = ch.hdr.op == isa.Opcode.GEMM

        nop_pending = Signal()
        # what each engine is executing for us; the GEMMs in flight (in order) in gq
        l_inflight, v_inflight, s_inflight = Signal(), Signal(), Signal()
        gq = SyncFIFO(width=2 + INDEX_BITS, depth=GEMMS_IN_FLIGHT)
        m.submodules.gemm_inflight = ResetInserter(start)(gq)
        c_inflight = gq.r_rdy
        # The compute queue is in order across its two engines: an instruction goes to
        # one engine only while the other is idle (its own engine's ready says the rest).
        gemm_idle = ~compute.busy & ~c_inflight
        vec_idle = ~vector.busy & ~v_inflight
        # Nothing starts in the cycle of an error pulse: the engines are ready again
        # then, but the machine stops (STATUS is set the next cycle).
        failing = Signal()
        go = busy & ~failing
        l_go = go & lq.r_rdy & l_tok_ok
        c_go = go & cq.r_rdy & c_tok_ok & ~nop_pending
        s_go = go & sq.r_rdy & s_tok_ok

        m.d.comb += [
            load.insn.valid.eq(l_go),
            load.insn.payload.eq(lq.r_data[:isa.LoadInsn.size]),
            load.pre.eq(l_head.pre),
            compute.insn.valid.eq(c_go & c_is_gemm & vec_idle & gq.w_rdy),
            compute.insn.payload.eq(cq.r_data[:isa.GemmInsn.size]),
            compute.pre.eq(c_head.pre),
            vector.insn.valid.eq(c_go & c_is_vec & gemm_idle),
            vector.insn.payload.eq(cq.r_data[:isa.VecInsn.size]),
            store.insn.valid.eq(s_go),
            store.insn.payload.eq(sq.r_data[:isa.StoreInsn.size]),
        ]
        l_issue = l_go & load.insn.ready
        c_issue_gemm = c_go & c_is_gemm & vec_idle & gq.w_rdy & compute.insn.ready
        c_issue_vec = c_go & c_is_vec & gemm_idle & vector.insn.ready
        c_issue_nop = (c_go & c_is_nop & compute.insn.ready & vector.insn.ready &
                       gemm_idle & vec_idle)
        c_issue = c_issue_gemm | c_issue_vec | c_issue_nop
        s_issue = s_go & store.insn.ready
        m.d.comb += [lq.r_en.eq(l_issue), cq.r_en.eq(c_issue), sq.r_en.eq(s_issue)]

        l_push_next, c_push_prev, c_push_next, s_push_prev = Signal(), Signal(), Signal(), Signal()
        l_idx, c_idx, s_idx = Signal(INDEX_BITS), Signal(INDEX_BITS), Signal(INDEX_BITS)
        # the compute-queue instruction completing: the oldest GEMM in flight, else the
        # VEC / NOP in the registers
        v_push_prev, v_push_next, v_idx = Signal(), Signal(), Signal(INDEX_BITS)
        m.d.comb += [gq.w_data.eq(Cat(ch.hdr.dep.push_prev, ch.hdr.dep.push_next, ch_idx)),
                     gq.w_en.eq(c_issue_gemm)]
        with m.If(c_inflight):
            m.d.comb += [c_push_prev.eq(gq.r_data[0]), c_push_next.eq(gq.r_data[1]),
                         c_idx.eq(gq.r_data[2:])]
        with m.Else():
            m.d.comb += [c_push_prev.eq(v_push_prev), c_push_next.eq(v_push_next), c_idx.eq(v_idx)]

        l_fin = load.done & l_inflight
        c_fin = (compute.done & c_inflight) | (vector.done & v_inflight) | nop_pending
        s_fin = store.done & s_inflight
        l_fail = load.error & l_inflight
        c_fail = (compute.error & c_inflight) | (vector.error & v_inflight)
        s_fail = store.error & s_inflight
        m.d.comb += failing.eq(l_fail | c_fail | s_fail | self.fetch.error)

        m.d.sync += nop_pending.eq(c_issue_nop)
        with m.If(l_fin | l_fail):
            m.d.sync += l_inflight.eq(0)
        m.d.comb += gq.r_en.eq((compute.done | compute.error) & c_inflight)
        with m.If(c_fin | c_fail):
            m.d.sync += v_inflight.eq(0)
        with m.If(s_fin | s_fail):
            m.d.sync += s_inflight.eq(0)
        with m.If(l_issue):
            m.d.sync += [l_inflight.eq(1), l_push_next.eq(lh.hdr.dep.push_next), l_idx.eq(lh_idx)]
        with m.If(c_issue_vec | c_issue_nop):
            m.d.sync += [v_inflight.eq(c_issue_vec), v_push_prev.eq(ch.hdr.dep.push_prev),
                         v_push_next.eq(ch.hdr.dep.push_next), v_idx.eq(ch_idx)]
        with m.If(s_issue):
            m.d.sync += [s_inflight.eq(1), s_push_prev.eq(sh.hdr.dep.push_prev), s_idx.eq(sh_idx)]
        with m.If(start):
            m.d.sync += [l_inflight.eq(0), v_inflight.eq(0), s_inflight.eq(0), nop_pending.eq(0)]

        overflow = Signal()
        overflow_idx = Signal(INDEX_BITS)
        tokens = [  # counter, inc, dec, index of the pushing instruction
            (l2c, l_fin & l_push_next, c_issue & ch.hdr.dep.pop_prev, l_idx),
            (c2l, c_fin & c_push_prev, l_issue & lh.hdr.dep.pop_next, c_idx),
            (c2s, c_fin & c_push_next, s_issue & sh.hdr.dep.pop_prev, c_idx),
            (s2c, s_fin & s_push_prev, c_issue & ch.hdr.dep.pop_next, s_idx),
        ]
        # (counter, push, pop) of each token counter, for the bounded proofs
        # (tests/rtl/test_formal.py); set when elaborated.
        self.token_counters = [(tok, inc, dec) for tok, inc, dec, _ in tokens]
        for tok, inc, dec, idx in reversed(tokens):
            with m.If(start):
                m.d.sync += tok.eq(0)
            with m.Elif(inc & ~dec):
                with m.If(tok == TOKEN_MAX):
                    m.d.comb += [overflow.eq(1), overflow_idx.eq(idx)]
                with m.Else():
                    m.d.sync += tok.eq(tok + 1)
            with m.Elif(dec & ~inc):
                m.d.sync += tok.eq(tok - 1)

        # --- completion and deadlock ---------------------------------------------
        compute_busy = compute.busy | vector.busy
        engines_idle = ~(load.busy | compute_busy | store.busy |
                         l_inflight | c_inflight | v_inflight | s_inflight | nop_pending)
        any_fin = l_fin | c_fin | s_fin | l_fail | c_fail | s_fail
        empty = (lq.level == 0) & (cq.level == 0) & (sq.level == 0)
        heads = [(lq, l_tok_ok, lh_idx), (cq, c_tok_ok, ch_idx), (sq, s_tok_ok, sh_idx)]
        all_wait = Const(1)
        for q, ok, _ in heads:
            all_wait = all_wait & ((q.level == 0) | (q.r_rdy & ~ok))
        stuck = Signal()
        m.d.comb += stuck.eq(busy & (self.fetch.ended | self.fetch.blocked) & engines_idle &
                             ~any_fin & ~empty & all_wait)
        stuck_cycles = Signal(range(DEADLOCK_CYCLES))
        with m.If(stuck & ~start):
            m.d.sync += stuck_cycles.eq(stuck_cycles + 1)
        with m.Else():
            m.d.sync += stuck_cycles.eq(0)
        deadlock = stuck & (stuck_cycles == DEADLOCK_CYCLES - 1)
        # ERROR_INFO of a deadlock: the oldest waiting head
        oldest = Const(0, INDEX_BITS)
        found = Const(0)
        for q, _, idx in heads:
            oldest = Mux(q.r_rdy & (~found | (idx < oldest)), idx, oldest)
            found = found | q.r_rdy

        # watchdog: cycles in a row with nothing pushed into a queue and nothing completed
        idle = Signal(32)
        progress = any_fin | (self.push.valid & self.push.ready)
        with m.If(start | progress):
            m.d.sync += idle.eq(0)
        with m.Elif(busy & (idle != (1 << 32) - 1)):
            m.d.sync += idle.eq(idle + 1)
        hung = busy & (self.watchdog != 0) & (idle >= self.watchdog) & ~progress
        m.d.comb += [self.fin.eq(Cat(l_fin, c_fin, s_fin)),
                     self.issued.eq(Cat(l_issue, c_issue, s_issue))]

        m.d.comb += self.end.finished.eq(busy & self.fetch.ended & empty & engines_idle & ~any_fin)

        # --- stop: first cause wins --------------------------------------------
        # FAULT_ADDR: a DMA engine's fault address only with DMA_OUT_OF_WINDOW (its
        # BUFFER_OUT_OF_RANGE leaves it stale); fetch gives 0 unless BAD_DESCRIPTOR.
        def dma_fault(engine):
            return Mux(engine.error_code == isa.ErrorCode.DMA_OUT_OF_WINDOW, engine.fault_addr, 0)
        causes = [
            (l_fail, load.error_code, l_idx, dma_fault(load)),
            (c_fail, Const(isa.ErrorCode.BUFFER_OUT_OF_RANGE, 8), c_idx, 0),
            (s_fail, store.error_code, s_idx, dma_fault(store)),
            (overflow, Const(isa.ErrorCode.TOKEN_OVERFLOW, 8), overflow_idx, 0),
            (self.fetch.error, self.fetch.error_code, self.fetch.index, self.fetch.addr),
            (deadlock, Const(isa.ErrorCode.TOKEN_DEADLOCK, 8), oldest, 0),
            (hung, Const(isa.ErrorCode.WATCHDOG, 8), Mux(found, oldest, self.fetch.index), 0),
        ]
        for cond, code, info, addr in reversed(causes):
            with m.If(cond):
                m.d.comb += [self.end.stop.eq(1), self.end.code.eq(code), self.end.info.eq(info),
                             self.end.addr.eq(addr)]

        # --- counter events -------------------------------------------------------
        # m_len*k_len*n_len (* taps): the two factors kept in the queue (above)
        m.d.comb += [self.macs.eq(Mux(c_issue_gemm, c_head.mk * c_head.nt, 0)),
                     self.insns.eq(l_issue + c_issue + s_issue)]
        return m
