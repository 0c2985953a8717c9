"""Graph controller: CSRs, program fetch, the three instruction queues, dependency
tokens, dispatch to the engines, counters, error and deadlock detection.

Program (``rtl/isa.py``): a table of 64-bit :data:`isa.NodeDescriptor` at
``PROG_BASE`` ended by ``n_insn == 0``; each descriptor points at ``n_insn``
256-bit instructions at ``PROG_BASE + insn_offset``.

Fetch is a DRAM bus master (client 0 of the arbiter in ``rtl/top.py``): one
descriptor read, then per instruction the four word reads are issued back to
back (pipelined), the instruction is assembled and pushed into the queue its
opcode selects. Fetch keeps one instruction in flight; with ``dram_latency = L``
an instruction takes about ``L + 5`` cycles, which is hidden behind the engines
as long as the queues are not empty.

Queues are ``lib.fifo.SyncFIFOBuffered`` of ``queue_depth`` entries. An entry is
the 256-bit instruction plus its 32-bit index in fetch order (for ERROR_INFO).

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

Flags that name a missing neighbour (LOAD pop_prev/push_prev, STORE
pop_next/push_next) are ignored. Counters are 8 bit; a push into a counter at
255 is TOKEN_OVERFLOW.

"GEMM/NOP" in the table means any compute-queue instruction (GEMM, VEC, NOP).

Dispatch: the head of a queue starts in a cycle where the machine is running,
its engine's ``insn.ready`` is high (engines are ready only when idle) and every
token it pops is available; the pops happen in that cycle. The compute queue
feeds two engines, GEMM -> PE array (``compute``), VEC -> vector engine
(``vector``), strictly in order: its head is offered to its engine only while
the other engine is idle and has nothing of ours in flight, so one compute
instruction runs at a time (and the top may share buffer ports between them).
A NOP on the compute queue starts when both compute engines are idle, and
"ends" the next cycle (only moving tokens), so it is ordered after the GEMMs /
VECs before it.

Stop: an engine error (``*_error`` pulse; LOAD/STORE give a code, a compute or
vector error is BUFFER_OUT_OF_RANGE), a fetch error (BAD_DESCRIPTOR: descriptor or
instruction block outside ``[WINDOW_BASE, WINDOW_BASE + WINDOW_SIZE)``
(size 0: whole DRAM) or outside the DRAM or misaligned; ILLEGAL_OPCODE), a token
overflow, or a deadlock (fetch ended or blocked on a full queue, no engine busy,
every non-empty queue's head waits for a token, for 4 consecutive cycles) sets
STATUS to done=1, busy=0, error=code and ERROR_INFO to the fetch-order index of
the instruction concerned (deadlock: the oldest waiting head). Engines may finish
the instruction they are executing; nothing new starts. Completion pulses of an
engine count only for the instruction the controller gave it in this run, so a
restart (CTRL=1, which also flushes the queues) after an error is clean once the
engine is idle again.

Counters (32 bit, wrap) count only while STATUS.busy. DRAM_RD = load DMA bytes +
8 per fetched word; MACS += m_len * k_len * n_len at each GEMM issue (times
win_h * win_w for the windowed GEMMs of the rs array; VECs add none); COMPUTE_BUSY and LOAD_COMPUTE_OVERLAP count cycles where the PE array or
the vector engine is busy; INSNS counts instructions started (NOPs included).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from . import isa
from .config import AccelConfig, check_config
from .dram import DramBusSignature

__all__ = ["CsrSignature", "Controller"]


#: CSR bus, host (master) view. Components take it as ``In(CsrSignature)``: there
#: ``addr``, ``w_en``, ``w_data`` are inputs and ``r_data`` (combinational read of
#: the register at ``addr``) is an output.
CsrSignature = wiring.Signature({
    "addr": Out(8),
    "w_en": Out(1),
    "w_data": Out(32),
    "r_data": In(32),
})

_COUNTERS = (isa.Csr.CYCLES, isa.Csr.LOAD_BUSY, isa.Csr.COMPUTE_BUSY, isa.Csr.STORE_BUSY,
             isa.Csr.MACS, isa.Csr.DRAM_RD, isa.Csr.DRAM_WR, isa.Csr.LOAD_COMPUTE_OVERLAP,
             isa.Csr.INSNS, isa.Csr.ZERO_SKIPS)

_DEADLOCK_CYCLES = 4
_IDX_BITS = 32
_TOKEN_MAX = 255


class Controller(wiring.Component):
    """Graph controller.

    Parameters
    ----------
    config : AccelConfig

    Ports
    -----
    csr : In(CsrSignature)
    bus : Out(DramBusSignature(config.dram_words))
        Fetch master (reads only).
    load : Out(stream.Signature(isa.LoadInsn))
    compute : Out(stream.Signature(isa.GemmInsn))
        GEMMs of the compute queue, to the PE array.
    vector : Out(stream.Signature(isa.VecInsn))
        VECs of the compute queue, to the vector engine.
    store : Out(stream.Signature(isa.StoreInsn))
        Instructions to the engines; an engine takes one when ``ready`` (= idle).
    load_done, load_error, compute_done, compute_error, vector_done, vector_error,
    store_done, store_error : In(1)
        One-cycle completion pulses of the engines.
    load_error_code, store_error_code : In(8)
        Valid with the error pulse (``isa.ErrorCode``).
    load_busy, compute_busy, vector_busy, store_busy : In(1)
        Engine busy (counters, deadlock detection).
    rd_bytes, wr_bytes : In(1)
        One pulse per DRAM byte read by the load DMA / written by the store DMA.
    zero_skips : In(16)
        Added to ZERO_SKIPS each cycle (the compute engine's skipped MAC cycles).
    base : Out(data.ArrayLayout(32, 8))
        Base registers BASE0..BASE0+7.
    window_base, window_size : Out(32)
        The DRAM window (bytes; size 0 = whole DRAM).
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "csr": In(CsrSignature),
            "bus": Out(DramBusSignature(config.dram_words)),
            "load": Out(stream.Signature(isa.LoadInsn)),
            "compute": Out(stream.Signature(isa.GemmInsn)),
            "vector": Out(stream.Signature(isa.VecInsn)),
            "store": Out(stream.Signature(isa.StoreInsn)),
            "load_done": In(1), "load_error": In(1), "load_error_code": In(8),
            "compute_done": In(1), "compute_error": In(1),
            "vector_done": In(1), "vector_error": In(1), "vector_busy": In(1),
            "store_done": In(1), "store_error": In(1), "store_error_code": In(8),
            "load_busy": In(1), "compute_busy": In(1), "store_busy": In(1),  # vector_busy above
            "zero_skips": In(16),
            "rd_bytes": In(1), "wr_bytes": In(1),
            "base": Out(data.ArrayLayout(32, isa.NUM_BASE_REGS)),
            "window_base": Out(32),
            "window_size": Out(32),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()

        # --- CSR writes -----------------------------------------------------
        csr = self.csr
        start = Signal()
        m.d.comb += start.eq(csr.w_en & (csr.addr == isa.Csr.CTRL) & csr.w_data[0])

        prog_base = Signal(32)
        busy = Signal()
        done = Signal()
        err_code = Signal(8)
        err_info = Signal(32)
        counters = {c: Signal(32, name=f"cnt_{c.name.lower()}") for c in _COUNTERS}

        with m.If(csr.w_en):
            with m.Switch(csr.addr):
                with m.Case(isa.Csr.PROG_BASE):
                    m.d.sync += prog_base.eq(csr.w_data)
                with m.Case(isa.Csr.WINDOW_BASE):
                    m.d.sync += self.window_base.eq(csr.w_data)
                with m.Case(isa.Csr.WINDOW_SIZE):
                    m.d.sync += self.window_size.eq(csr.w_data)
                for i in range(isa.NUM_BASE_REGS):
                    with m.Case(isa.Csr.BASE0 + i):
                        m.d.sync += self.base[i].eq(csr.w_data)

        with m.Switch(csr.addr):
            with m.Case(isa.Csr.STATUS):
                m.d.comb += csr.r_data.eq(Cat(busy, done, Const(0, 6), err_code))
            with m.Case(isa.Csr.PROG_BASE):
                m.d.comb += csr.r_data.eq(prog_base)
            with m.Case(isa.Csr.WINDOW_BASE):
                m.d.comb += csr.r_data.eq(self.window_base)
            with m.Case(isa.Csr.WINDOW_SIZE):
                m.d.comb += csr.r_data.eq(self.window_size)
            for i in range(isa.NUM_BASE_REGS):
                with m.Case(isa.Csr.BASE0 + i):
                    m.d.comb += csr.r_data.eq(self.base[i])
            for c, sig in counters.items():
                with m.Case(c):
                    m.d.comb += csr.r_data.eq(sig)
            with m.Case(isa.Csr.ERROR_INFO):
                m.d.comb += csr.r_data.eq(err_info)

        def in_window(addr, nbytes):
            end = addr + nbytes
            in_dram = end <= cfg.dram_bytes
            in_win = ((self.window_size == 0) |
                      ((addr >= self.window_base) &
                       (end <= self.window_base + self.window_size)))
            return in_dram & in_win

        # --- queues -----------------------------------------------------------
        width = isa.INSN_BITS + _IDX_BITS
        queues = {}
        for name in ("load", "compute", "store"):
            q = SyncFIFOBuffered(width=width, depth=cfg.queue_depth)
            m.submodules[f"{name}_q"] = ResetInserter(start)(q)
            queues[name] = q
        lq, cq, sq = queues["load"], queues["compute"], queues["store"]

        # --- fetch --------------------------------------------------------------
        bus = self.bus
        outstanding = Signal(8)
        req_fire = bus.req.valid & bus.req.ready
        m.d.sync += outstanding.eq(outstanding + req_fire - bus.rsp.valid)
        m.d.comb += [bus.req.p.we.eq(0), bus.req.p.wmask.eq(0), bus.req.p.tag.eq(0)]

        desc_idx = Signal(32)
        insn_idx = Signal(_IDX_BITS)   # fetch-order index of the next instruction
        node_left = Signal(16)
        insn_addr = Signal(34)         # byte address of the next instruction
        insn_ok = Signal()             # insn_offset was 32-aligned
        word_req = Signal(range(isa.INSN_WORDS + 1))
        word_rsp = Signal(range(isa.INSN_WORDS))
        words = [Signal(64, name=f"insn_w{i}") for i in range(isa.INSN_WORDS)]
        insn = Cat(*words)
        opcode = insn[:4]

        fetch_err = Signal()
        fetch_err_code = Signal(8)
        fetch_words = Signal()          # a fetched word arrives (counts DRAM_RD)
        fetch_blocked = Signal()
        fetch_ended = Signal()

        desc_addr = prog_base + (desc_idx << 3)

        def restart_or_stop():
            # in every state (last, so it wins): a start (re)starts fetch, a stop ends it
            with m.If(start):
                m.d.sync += [desc_idx.eq(0), insn_idx.eq(0)]
                m.next = "DRAIN"
            with m.Elif(~busy):
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
                    m.d.comb += [fetch_err.eq(1),
                                 fetch_err_code.eq(isa.ErrorCode.BAD_DESCRIPTOR)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += [bus.req.valid.eq(1), bus.req.p.addr.eq(desc_addr >> 3)]
                    with m.If(bus.req.ready):
                        m.next = "DESC_WAIT"
                restart_or_stop()
            with m.State("DESC_WAIT"):
                with m.If(bus.rsp.valid):
                    desc = data.View(isa.NodeDescriptor, bus.rsp.p.rdata)
                    m.d.comb += fetch_words.eq(1)
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
                    m.d.comb += [fetch_err.eq(1),
                                 fetch_err_code.eq(isa.ErrorCode.BAD_DESCRIPTOR)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "WORDS"
                restart_or_stop()
            with m.State("WORDS"):
                m.d.comb += [bus.req.valid.eq(word_req != isa.INSN_WORDS),
                             bus.req.p.addr.eq((insn_addr >> 3) + word_req)]
                with m.If(req_fire):
                    m.d.sync += word_req.eq(word_req + 1)
                with m.If(bus.rsp.valid):
                    m.d.comb += fetch_words.eq(1)
                    with m.Switch(word_rsp):
                        for i in range(isa.INSN_WORDS):
                            with m.Case(i):
                                m.d.sync += words[i].eq(bus.rsp.p.rdata)
                    m.d.sync += word_rsp.eq(word_rsp + 1)
                    with m.If(word_rsp == isa.INSN_WORDS - 1):
                        m.next = "PUSH"
                restart_or_stop()
            with m.State("PUSH"):
                target = {isa.Opcode.LOAD: lq, isa.Opcode.GEMM: cq, isa.Opcode.VEC: cq,
                          isa.Opcode.NOP: cq, isa.Opcode.STORE: sq}
                pushed = Signal()
                with m.Switch(opcode):
                    for op, q in target.items():
                        with m.Case(op):
                            m.d.comb += [q.w_en.eq(1), q.w_data.eq(Cat(insn, insn_idx)),
                                         pushed.eq(q.w_rdy), fetch_blocked.eq(~q.w_rdy)]
                    with m.Default():
                        m.d.comb += [fetch_err.eq(1),
                                     fetch_err_code.eq(isa.ErrorCode.ILLEGAL_OPCODE)]
                        m.next = "IDLE"
                with m.If(pushed):
                    m.d.sync += [insn_idx.eq(insn_idx + 1), node_left.eq(node_left - 1),
                                 insn_addr.eq(insn_addr + isa.INSN_BYTES)]
                    with m.If(node_left == 1):
                        m.next = "DESC"
                    with m.Else():
                        m.next = "CHECK"
                restart_or_stop()
            with m.State("END"):
                m.d.comb += fetch_ended.eq(1)
                restart_or_stop()

        # --- dispatch -----------------------------------------------------------
        def head(q):
            return data.View(isa.Insn, q.r_data[:isa.INSN_BITS]), q.r_data[isa.INSN_BITS:]

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
        # what each engine is executing for us
        l_inflight, c_inflight, v_inflight, s_inflight = Signal(), Signal(), Signal(), Signal()
        # The compute queue is in order across its two engines: an instruction goes to
        # one engine only while the other is idle (its own engine's ready says the rest).
        gemm_idle = ~self.compute_busy & ~c_inflight
        vec_idle = ~self.vector_busy & ~v_inflight
        l_go = busy & lq.r_rdy & l_tok_ok
        c_go = busy & cq.r_rdy & c_tok_ok & ~nop_pending
        s_go = busy & sq.r_rdy & s_tok_ok

        m.d.comb += [
            self.load.valid.eq(l_go),
            self.load.payload.eq(lq.r_data[:isa.LoadInsn.size]),
            self.compute.valid.eq(c_go & c_is_gemm & vec_idle),
            self.compute.payload.eq(cq.r_data[:isa.GemmInsn.size]),
            self.vector.valid.eq(c_go & c_is_vec & gemm_idle),
            self.vector.payload.eq(cq.r_data[:isa.VecInsn.size]),
            self.store.valid.eq(s_go),
            self.store.payload.eq(sq.r_data[:isa.StoreInsn.size]),
        ]
        l_issue = l_go & self.load.ready
        c_issue_gemm = c_go & c_is_gemm & vec_idle & self.compute.ready
        c_issue_vec = c_go & c_is_vec & gemm_idle & self.vector.ready
        c_issue_nop = (c_go & c_is_nop & self.compute.ready & self.vector.ready &
                       gemm_idle & vec_idle)
        c_issue = c_issue_gemm | c_issue_vec | c_issue_nop
        s_issue = s_go & self.store.ready
        m.d.comb += [lq.r_en.eq(l_issue), cq.r_en.eq(c_issue), sq.r_en.eq(s_issue)]

        l_push_next, c_push_prev, c_push_next, s_push_prev = Signal(), Signal(), Signal(), Signal()
        l_idx, c_idx, s_idx = Signal(_IDX_BITS), Signal(_IDX_BITS), Signal(_IDX_BITS)

        l_fin = self.load_done & l_inflight
        c_fin = (self.compute_done & c_inflight) | (self.vector_done & v_inflight) | nop_pending
        s_fin = self.store_done & s_inflight
        l_fail = self.load_error & l_inflight
        c_fail = (self.compute_error & c_inflight) | (self.vector_error & v_inflight)
        s_fail = self.store_error & s_inflight

        m.d.sync += nop_pending.eq(c_issue_nop)
        with m.If(l_fin | l_fail):
            m.d.sync += l_inflight.eq(0)
        with m.If(c_fin | c_fail):
            m.d.sync += [c_inflight.eq(0), v_inflight.eq(0)]
        with m.If(s_fin | s_fail):
            m.d.sync += s_inflight.eq(0)
        with m.If(l_issue):
            m.d.sync += [l_inflight.eq(1), l_push_next.eq(lh.hdr.dep.push_next), l_idx.eq(lh_idx)]
        with m.If(c_issue):
            m.d.sync += [c_inflight.eq(c_issue_gemm), v_inflight.eq(c_issue_vec),
                         c_push_prev.eq(ch.hdr.dep.push_prev),
                         c_push_next.eq(ch.hdr.dep.push_next), c_idx.eq(ch_idx)]
        with m.If(s_issue):
            m.d.sync += [s_inflight.eq(1), s_push_prev.eq(sh.hdr.dep.push_prev), s_idx.eq(sh_idx)]
        with m.If(start):
            m.d.sync += [l_inflight.eq(0), c_inflight.eq(0), v_inflight.eq(0),
                         s_inflight.eq(0), nop_pending.eq(0)]

        overflow = Signal()
        overflow_idx = Signal(_IDX_BITS)
        tokens = [  # counter, inc, dec, index of the pushing instruction
            (l2c, l_fin & l_push_next, c_issue & ch.hdr.dep.pop_prev, l_idx),
            (c2l, c_fin & c_push_prev, l_issue & lh.hdr.dep.pop_next, c_idx),
            (c2s, c_fin & c_push_next, s_issue & sh.hdr.dep.pop_prev, c_idx),
            (s2c, s_fin & s_push_prev, c_issue & ch.hdr.dep.pop_next, s_idx),
        ]
        for tok, inc, dec, idx in reversed(tokens):
            with m.If(start):
                m.d.sync += tok.eq(0)
            with m.Elif(inc & ~dec):
                with m.If(tok == _TOKEN_MAX):
                    m.d.comb += [overflow.eq(1), overflow_idx.eq(idx)]
                with m.Else():
                    m.d.sync += tok.eq(tok + 1)
            with m.Elif(dec & ~inc):
                m.d.sync += tok.eq(tok - 1)

        # --- completion and deadlock ---------------------------------------------
        compute_busy = self.compute_busy | self.vector_busy
        engines_idle = ~(self.load_busy | compute_busy | self.store_busy |
                         l_inflight | c_inflight | v_inflight | s_inflight | nop_pending)
        any_fin = l_fin | c_fin | s_fin | l_fail | c_fail | s_fail
        empty = (lq.level == 0) & (cq.level == 0) & (sq.level == 0)
        heads = [(lq, l_tok_ok, lh_idx), (cq, c_tok_ok, ch_idx), (sq, s_tok_ok, sh_idx)]
        all_wait = Const(1)
        for q, ok, _ in heads:
            all_wait = all_wait & ((q.level == 0) | (q.r_rdy & ~ok))
        stuck = Signal()
        m.d.comb += stuck.eq(busy & (fetch_ended | fetch_blocked) & engines_idle & ~any_fin &
                             ~empty & all_wait)
        stuck_cycles = Signal(range(_DEADLOCK_CYCLES))
        with m.If(stuck & ~start):
            m.d.sync += stuck_cycles.eq(stuck_cycles + 1)
        with m.Else():
            m.d.sync += stuck_cycles.eq(0)
        deadlock = stuck & (stuck_cycles == _DEADLOCK_CYCLES - 1)
        # ERROR_INFO of a deadlock: the oldest waiting head
        oldest = Const(0, _IDX_BITS)
        found = Const(0)
        for q, _, idx in heads:
            oldest = Mux(q.r_rdy & (~found | (idx < oldest)), idx, oldest)
            found = found | q.r_rdy

        finished = busy & fetch_ended & empty & engines_idle & ~any_fin

        # --- stop: first cause wins --------------------------------------------
        causes = [
            (l_fail, self.load_error_code, l_idx),
            (c_fail, Const(isa.ErrorCode.BUFFER_OUT_OF_RANGE, 8), c_idx),
            (s_fail, self.store_error_code, s_idx),
            (overflow, Const(isa.ErrorCode.TOKEN_OVERFLOW, 8), overflow_idx),
            (fetch_err, fetch_err_code, insn_idx),
            (deadlock, Const(isa.ErrorCode.TOKEN_DEADLOCK, 8), oldest),
        ]
        stop = Signal()
        stop_code = Signal(8)
        stop_info = Signal(_IDX_BITS)
        for cond, code, info in reversed(causes):
            with m.If(cond):
                m.d.comb += [stop.eq(1), stop_code.eq(code), stop_info.eq(info)]

        with m.If(start):
            m.d.sync += [busy.eq(1), done.eq(0), err_code.eq(0), err_info.eq(0)]
        with m.Elif(busy & stop):
            m.d.sync += [busy.eq(0), done.eq(1), err_code.eq(stop_code),
                         err_info.eq(stop_info)]
        with m.Elif(finished):
            m.d.sync += [busy.eq(0), done.eq(1)]

        # --- counters -------------------------------------------------------------
        gemm = ch.gemm
        macs = gemm.m_len * gemm.k_len * gemm.n_len
        if self._config.dataflow == "rs":  # windowed GEMMs: win_h * win_w taps per output
            macs = macs * gemm.win_h * gemm.win_w
        incs = {
            isa.Csr.CYCLES: 1,
            isa.Csr.LOAD_BUSY: self.load_busy,
            isa.Csr.COMPUTE_BUSY: compute_busy,
            isa.Csr.STORE_BUSY: self.store_busy,
            isa.Csr.MACS: Mux(c_issue_gemm, macs, 0),
            isa.Csr.DRAM_RD: Mux(fetch_words, 8, 0) + self.rd_bytes,
            isa.Csr.DRAM_WR: self.wr_bytes,
            isa.Csr.LOAD_COMPUTE_OVERLAP: self.load_busy & compute_busy,
            isa.Csr.INSNS: l_issue + c_issue + s_issue,
            isa.Csr.ZERO_SKIPS: self.zero_skips,
        }
        for c, sig in counters.items():
            with m.If(start):
                m.d.sync += sig.eq(0)
            with m.Elif(busy):
                m.d.sync += sig.eq(sig + incs[c])

        return m
