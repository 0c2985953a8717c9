"""Weight-stationary PE array (``dataflow = "ws"``).

``rows x cols`` PEs; PE ``(k, n)`` holds the int8 weight ``w[k][n]`` and
multiplies it with the int8 activation ``x[k]`` broadcast along its row. The
psums of a column are reduced down the column by a pipelined per-column adder
tree (not a skewed systolic chain: same throughput, no skew buffers, and a
latency that does not grow with ``rows`` in cycles).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.arrays.blocks import Block, place
from celosia.rtl.arrays.engine import ComputeEngine, gemm_check_register, legal_gemm, offered_sequence
from celosia.rtl.arrays.window import WindowAddr
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT

__all__ = ["WSArray", "WSColumn", "cycles", "sequence_timing", "sequence_cycles", "WSTiming"]


def _adder_tree(terms):
    """Balanced sum of ``terms`` (log2 depth instead of a chain)."""
    terms = list(terms)
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


class WSColumn(Block):
    """PE column ``n`` of :class:`WSArray`: the ``rows`` PEs ``(k, n)`` and the column's
    pipelined adder tree (:mod:`~celosia.rtl.arrays.blocks`: inline for pysim, one module
    instanced ``cols`` times in Verilog).

    Ports
    -----
    x : In(rows * act_bits)
        The ifmap row (lane ``k`` is PE ``k``'s int8 activation).
    wdata : In(weight_bits)
        Lane ``n`` of the weight buffer read data.
    landing : In(rows)
        Bit ``k``: shadow weight register ``k`` takes ``wdata`` at the next edge.
    clear : In(1)
        Clear the shadow registers at the next edge (over ``landing``).
    take : In(1)
        Active registers <= shadow registers (the landing one bypassed) at the next edge.
    mul : In(1)
        Register the products ``x[k] * w[k]`` and the old psum at the next edge.
    acc_en : In(1)
        With ``mul``: the old psum is ``psum`` (else 0).
    psum : In(acc_bits)
        Lane ``n`` of the psum buffer read data.
    sum : Out(signed(acc_bits))
        Registered: the old psum plus the products registered one cycle before (int32
        wrap).

    Timing: ``mul`` in cycle ``t`` -> products in ``t+1`` -> ``sum`` from ``t+2``.
    """

    def __init__(self, rows, act_bits, weight_bits, acc_bits):
        self.rows, self.act_bits, self.weight_bits, self.acc_bits = rows, act_bits, weight_bits, acc_bits
        super().__init__({
            "x": In(rows * act_bits), "wdata": In(weight_bits), "landing": In(rows),
            "clear": In(1), "take": In(1), "mul": In(1), "acc_en": In(1),
            "psum": In(acc_bits), "sum": Out(signed(acc_bits)),
        }, (rows, act_bits, weight_bits, acc_bits))

    def elaborate(self, platform):
        m = Module()
        rows, ab, wb, acc = self.rows, self.act_bits, self.weight_bits, self.acc_bits
        # PE weight registers w[k] (used by the products) and their shadow copies (filled by
        # the preload).
        w = [Signal(signed(wb), name=f"w_{k}") for k in range(rows)]
        w_sh = [Signal(signed(wb), name=f"wsh_{k}") for k in range(rows)]
        wdata = self.wdata.as_signed()
        for k in range(rows):
            with m.If(self.clear):
                m.d.sync += w_sh[k].eq(0)
            with m.Elif(self.landing[k]):
                m.d.sync += w_sh[k].eq(wdata)
            with m.If(self.take):
                m.d.sync += w[k].eq(Mux(self.landing[k], wdata, w_sh[k]))
        prod = [Signal(signed(ab + wb), name=f"p_{k}") for k in range(rows)]
        old = Signal(signed(acc))
        with m.If(self.mul):
            for k in range(rows):
                m.d.sync += prod[k].eq(self.x[k * ab:(k + 1) * ab].as_signed() * w[k])
            m.d.sync += old.eq(Mux(self.acc_en, self.psum.as_signed(), 0))
        # Assignment to a signed(acc) register gives the int32 wrap.
        m.d.sync += self.sum.eq(_adder_tree([old] + prod))
        return m


class WSArray(ComputeEngine):
    """Weight-stationary GEMM engine implementing :class:`ComputeEngineSignature`,
    with double-buffered (shadow) PE weight registers: the next GEMM's weight
    preload overlaps the current GEMM's stream.

    For one accepted :data:`~celosia.rtl.isa.GemmInsn`, for ``m < m_len`` and
    ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
                              + sum_{k<k_len} int8(ifmap[row(m)][k]) * int8(weight[weight_row+k][n])

    with int32 wrapping, ``row(m) = ifmap_row + m`` for a plain GEMM and, for a windowed
    GEMM of one kernel tap (``window = 1``, ``win_h = win_w = 1``), ``m = e*out_w + x``,
    ``row(m) = ifmap_row + e*stride_h*row_pitch + x*stride_w`` (the window address
    generator, :class:`~celosia.rtl.arrays.window.WindowAddr`). Lanes ``n >= n_len`` of the written rows are left as
    they were (the write enables cover lanes ``n < n_len`` only). Rows
    ``k >= k_len`` of the weight tile are held at 0 in the PEs, so ifmap lanes
    ``k >= k_len`` are ignored. Instructions take effect in acceptance order
    (results are those of running them one after the other).

    Ports (see :class:`ComputeEngineSignature`): ``insn``, ``done`` / ``error`` /
    ``busy``, read ports ``ifmap``, ``weight``, ``psum_rd`` and write port ``psum_wr``.

    Structure: a *loader* (owns ``insn``, the range check and the weight read
    port; fills the shadow registers) and a *streamer* (owns the ifmap / psum
    ports; multiplies with the active registers). The loader hands a loaded
    GEMM to the streamer (the *take*: active <= shadow) in the first cycle the
    streamer has no row left of the previous one; so up to 4 GEMMs are in
    flight (one loading, the rest streaming or in the 4-cycle pipeline tail).

    Operation and timing (cycle ``a`` = the cycle ``insn.valid & insn.ready``):

    * ``insn.ready`` is high while the loader is free: when it is idle, and in
      the take cycle of the GEMM it holds (so a back-to-back GEMM is accepted in
      the cycle the previous one starts streaming).
    * cycle ``a+1`` (CHECK): :func:`gemm_insn_in_range` (computed in cycle ``a`` from
      ``insn.payload`` and registered: :func:`~celosia.rtl.arrays.engine.gemm_check_register`,
      no cycle added); out of range ->
      ``error``, ``m_len = 0`` -> ``done``, each pulsed in the first cycle
      (from ``a+1`` on) in which no earlier instruction is left in the
      streamer (so completions stay in order); then the loader is idle again.
      Otherwise the shadow weight registers are cleared.
    * cycles ``a+2 .. a+k_len+1`` (PRELOAD): weight rows ``weight_row+k`` are
      read, one per cycle, into shadow row ``k`` (landing one cycle after the
      read); from ``L = a+k_len+2`` the GEMM is loaded.
    * take, cycle ``s = max(L, e)`` (``e``: the cycle after the previous GEMM's
      last row read; plus psum stalls, below): the shadow registers (the row
      landing this cycle bypassed) are copied into the active ones, and row 0
      is read. Then STREAM: ifmap row ``row(m)`` and psum row
      ``psum_row+m`` (if ``accumulate``) are read, one per cycle (the window address
      generator, started by the take, adds no cycle). Pipeline from
      the read cycle ``t``: ``t+1`` data arrive, the products and the old psum
      are registered; ``t+2`` the column sums plus the old psum are registered;
      ``t+3`` the row is written through ``psum_wr``; ``done`` pulses in
      ``t+4`` after the last row's read.
    * psum hazard: an accumulating row read in cycle ``t`` waits while the same
      psum row was read in ``t-1`` or ``t-2`` (its write, in ``t+2`` / ``t+1``,
      is still ahead; the write of a row read in ``t-3`` lands in ``t``, which
      the read sees: the psum buffer's read ports are transparent). So two
      reads of one psum row are at least 3 cycles apart; the stall holds the
      stream (and the take), nothing else.
    * ``busy`` is high while any accepted instruction has not had its
      ``done`` / ``error``: from the cycle after its acceptance through its
      ``done`` / ``error`` cycle. Each accepted instruction gets exactly one
      ``done`` or ``error`` pulse, in acceptance order (at most one per cycle).

    So one GEMM issued to an idle engine takes ``k_len + m_len + 5`` cycles from
    acceptance to ``done`` (1 cycle for ``m_len = 0`` or an error;
    :func:`cycles`), as without the overlap; a sequence issued back to back
    takes :func:`sequence_timing` (in steady state ``max(m_len, k_len' + 2)``
    cycles per GEMM, ``k_len'`` the next one's, at least 3 when the next one
    accumulates onto the same psum rows; ``k_len + m_len + 6`` without the overlap).
    """

    #: Cycles from an ifmap/psum read to the psum write of that row.
    PIPELINE = 3
    #: Most instructions in flight (accepted, no ``done`` / ``error`` yet).
    MAX_IN_FLIGHT = GEMMS_IN_FLIGHT

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        ab, wb, acc = cfg.act_bits, cfg.weight_bits, cfg.acc_bits
        paddr = self.psum_wr.addr.shape()

        nxt = Signal(isa.GemmInsn)   # the loader's instruction
        cur = Signal(isa.GemmInsn)   # the streamer's instruction
        k_cnt = Signal(range(rows + 1))
        m_cnt = Signal(16)
        streaming = Signal()         # rows of cur left (row m_cnt next)
        loaded = Signal()            # the loader holds a loaded GEMM
        take = Signal()
        check_fin = Signal()         # the loader completes an error / m_len = 0 this cycle

        clear_sh = Signal()

        # Preload pipeline: a weight read issued in cycle t lands in shadow row k at t+1.
        wload_valid = Signal()
        wload_k = Signal(range(rows + 1))
        wload_issue = Signal()
        landing = Signal(rows)       # bit k: shadow row k lands this cycle
        m.d.sync += [wload_valid.eq(wload_issue), wload_k.eq(k_cnt)]
        m.d.comb += landing.eq(Cat(wload_valid & (wload_k == k) for k in range(rows)))

        # The row offered to the stream this cycle: the next of cur, or row 0 of nxt (its
        # ifmap row: the window address generator below).
        row_psum = Signal(paddr)
        row_acc, row_last, row_cand = Signal(), Signal(), Signal()
        row_nlen = Signal.like(nxt.n_len)
        with m.If(streaming):
            m.d.comb += [row_psum.eq(cur.psum_row + m_cnt),
                         row_acc.eq(cur.accumulate), row_nlen.eq(cur.n_len),
                         row_last.eq(m_cnt == cur.m_len - 1), row_cand.eq(1)]
        with m.Else():
            m.d.comb += [row_psum.eq(nxt.psum_row),
                         row_acc.eq(nxt.accumulate), row_nlen.eq(nxt.n_len),
                         row_last.eq(nxt.m_len == 1), row_cand.eq(loaded)]

        # Stream pipeline, row read in cycle t: t+1 data here, products and old psum
        # registered; t+2 column sums registered; t+3 psum_wr from those registers;
        # t+4 done after the last row. s{i}_* describe the row at t+i.
        s0_valid = Signal()
        sv = [Signal(name=f"s{i}_valid") for i in (1, 2, 3)]
        sa = [Signal(paddr, name=f"s{i}_addr") for i in (1, 2, 3)]
        sn = [Signal.like(nxt.n_len, name=f"s{i}_nlen") for i in (1, 2, 3)]
        sl = [Signal(name=f"s{i}_last") for i in (1, 2, 3)]
        s1_acc = Signal()
        done_r = Signal()
        m.d.sync += [sv[0].eq(s0_valid), sa[0].eq(row_psum), sn[0].eq(row_nlen),
                     sl[0].eq(row_last), s1_acc.eq(row_acc), done_r.eq(sv[2] & sl[2])]
        for i in (1, 2):
            m.d.sync += [sv[i].eq(sv[i - 1]), sa[i].eq(sa[i - 1]), sn[i].eq(sn[i - 1]),
                         sl[i].eq(sl[i - 1])]

        def psum_hazard(acc_, row):
            return acc_ & ((sv[0] & (sa[0] == row)) | (sv[1] & (sa[1] == row)))
        hazard = psum_hazard(row_acc, row_psum)
        # The take (and so insn.ready) only happens while not streaming, where the row
        # offered is nxt's row 0: its hazard from nxt's own fields, the same value without
        # the path from m_cnt through cur.psum_row + m_cnt (issue 15: that path ran on
        # through dispatch's issue and stop logic into the CSRs, the 4x4 ws board build's
        # critical path). No cycle changes.
        take_hazard = psum_hazard(nxt.accumulate, nxt.psum_row[:len(row_psum)])
        m.d.comb += [s0_valid.eq(row_cand & ~hazard), take.eq(~streaming & loaded & ~take_hazard)]
        # Ifmap rows from the window address generator: started by the take (row 0 of nxt),
        # advanced by every row read.
        m.submodules.window = win = WindowAddr(len(self.ifmap.addr))
        m.d.comb += [win.insn.eq(nxt), win.start.eq(take), win.step.eq(s0_valid)]
        with m.If(s0_valid):
            with m.If(streaming):
                m.d.sync += m_cnt.eq(m_cnt + 1)
                with m.If(row_last):
                    m.d.sync += streaming.eq(0)
            with m.Else():
                m.d.sync += [cur.eq(nxt), m_cnt.eq(1), streaming.eq(~row_last)]

        # The PE columns (WSColumn): weight registers, products and the column sum.
        colsum = []
        for n in range(cols):
            col = place(m, f"col_{n}", WSColumn(rows, ab, wb, acc), self._blocks)
            m.d.comb += [col.x.eq(self.ifmap.data), col.wdata.eq(self.weight.data[n * wb:(n + 1) * wb]),
                         col.landing.eq(landing), col.clear.eq(clear_sh), col.take.eq(take),
                         col.mul.eq(sv[0]), col.acc_en.eq(s1_acc),
                         col.psum.eq(self.psum_rd.data[n * acc:(n + 1) * acc])]
            colsum.append(col.sum)

        lane_en = Cat(sn[2] > n for n in range(cols))
        m.d.comb += [
            self.psum_wr.addr.eq(sa[2]),
            self.psum_wr.data.eq(Cat(colsum)),
        ]
        with m.If(sv[2]):
            m.d.comb += self.psum_wr.en.eq(lane_en)

        m.d.comb += [
            self.ifmap.addr.eq(win.addr),
            self.psum_rd.addr.eq(row_psum),
            self.weight.addr.eq(nxt.weight_row + k_cnt),
            self.weight.en.eq(wload_issue),
            self.ifmap.en.eq(s0_valid),
            self.psum_rd.en.eq(s0_valid & row_acc),
        ]

        # Nothing of an earlier instruction left in the streamer.
        stream_empty = ~(streaming | sv[0] | sv[1] | sv[2] | done_r)
        # the range check of nxt, registered with it (gemm_check_register)
        ok = gemm_check_register(m, [(self.insn.valid & self.insn.ready, self.offered)], cfg)

        with m.FSM(name="loader") as loader:
            with m.State("IDLE"):
                m.d.comb += self.insn.ready.eq(1)
                with m.If(self.insn.valid):
                    m.d.sync += nxt.eq(self.insn.payload)
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(~ok | (nxt.m_len == 0)):
                    with m.If(stream_empty):
                        m.d.comb += [check_fin.eq(1), self.error.eq(~ok)]
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += k_cnt.eq(0)
                    m.d.comb += clear_sh.eq(1)
                    with m.If(nxt.k_len == 0):
                        m.next = "LOADED"
                    with m.Else():
                        m.next = "PRELOAD"
            with m.State("PRELOAD"):
                m.d.comb += wload_issue.eq(1)
                m.d.sync += k_cnt.eq(k_cnt + 1)
                with m.If(k_cnt == nxt.k_len - 1):
                    m.next = "LOADED"
            with m.State("LOADED"):
                m.d.comb += loaded.eq(1)
                with m.If(take):
                    m.d.comb += self.insn.ready.eq(1)
                    with m.If(self.insn.valid):
                        m.d.sync += nxt.eq(self.insn.payload)
                        m.next = "CHECK"
                    with m.Else():
                        m.next = "IDLE"

        m.d.comb += [
            self.done.eq(done_r | (check_fin & ok)),
            self.busy.eq(~loader.ongoing("IDLE") | ~stream_empty),
        ]
        return m


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) issued to an idle :class:`WSArray`, the timing of its docstring:
    ``k_len + m_len + 5``; 1 for ``m_len = 0`` or an illegal instruction. ``ifmap`` is
    not needed. Instructions that overlap: :func:`sequence_timing`."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    return 2 + g.k_len + g.m_len + WSArray.PIPELINE


def sequence_timing(insns, config, gaps=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` (field dicts as for
    :func:`cycles`) on :class:`WSArray`, ``end`` the cycle of its ``done`` / ``error``.
    Instruction ``i`` is offered (``valid`` held high until accepted) from the cycle
    ``gaps[i]`` cycles after the acceptance cycle of instruction ``i-1`` plus one (the
    first from cycle ``gaps[0]``); ``gaps`` defaults to all 0 (back to back). The
    recurrence of the :class:`WSArray` docstring:

    * accepted in ``a = max(offer, F)``, ``F`` the cycle the loader is free: the take
      cycle of the previous GEMM, or one after the previous error / ``m_len = 0``
      completion;
    * error / ``m_len = 0``: ends in ``max(a + 1, E + 1)``, ``E`` the previous end;
    * GEMM: row ``j`` is read in ``t_j = max(t_{j-1} + 1, P + 3)`` (``P``: the last
      read of the same psum row, if ``accumulate``), ``t_{-1} + 1 = max(a + 2 + k_len,
      R + 1)`` (``R``: the previous GEMM's last row read); the take is ``t_0``; it ends
      in ``t_{m_len-1} + 4``.
    """
    return offered_sequence(WSTiming(config), insns, gaps)


class WSTiming:
    """:func:`sequence_timing` one GEMM at a time, for a caller that learns when each GEMM
    is offered only as it goes (the whole-machine cycle model, :mod:`celosia.sim.perf`).

    :attr:`ready_at` is the first cycle the loader takes the next GEMM (``insn.ready``);
    :meth:`accept` takes a GEMM accepted in cycle ``a >= ready_at`` and returns the cycle
    of its ``done`` / ``error``. The psum hazard only ever involves the last two rows read
    (a row is read at least one cycle after the previous GEMM's last, and waits for a read
    of the same row at most two cycles back), so only those are kept.
    """

    def __init__(self, config):
        self.config = config
        self.ready_at = 0
        self.last_read = self.last_end = -10
        self.recent = []                  # the last two (psum row, read cycle)

    def accept_at(self, c: int) -> int:
        """The first cycle from ``c`` on in which the loader takes a GEMM."""
        return max(c, self.ready_at)

    def accept(self, insn, a: int) -> int:
        g = legal_gemm(insn, self.config)
        if g is None or g.m_len == 0:
            end = max(a + 1, self.last_end + 1)
            self.ready_at = end + 1
        else:
            t = max(a + 2 + g.k_len, self.last_read + 1)
            recent = dict(self.recent)
            reads = []
            for j in range(min(g.m_len, 3)):  # later rows never wait (see above)
                row = g.psum_row + j
                if g.accumulate and row in recent:
                    t = max(t, recent[row] + 3)
                reads.append((row, t))
                t += 1
            self.ready_at = reads[0][1]       # the take: the first row's read
            last = reads[-1][1] + g.m_len - len(reads)
            if g.m_len > len(reads):
                reads += [(g.psum_row + g.m_len - 2, last - 1), (g.psum_row + g.m_len - 1, last)]
            self.recent = reads[-2:]
            self.last_read = last
            end = last + 1 + WSArray.PIPELINE
        self.last_end = end
        return end


def sequence_cycles(insns, config) -> int:
    """Cycles from the acceptance of the first of ``insns`` (issued back to back to an
    idle :class:`WSArray`) to the ``done`` / ``error`` of the last:
    ``sequence_timing(insns, config)[-1][1]``; ``cycles(insn, config)`` for one."""
    return sequence_timing(insns, config)[-1][1] if insns else 0
