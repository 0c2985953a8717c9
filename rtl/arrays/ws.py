"""Weight-stationary PE array (``dataflow = "ws"``).

``rows x cols`` PEs; PE ``(k, n)`` holds the int8 weight ``w[k][n]`` and
multiplies it with the int8 activation ``x[k]`` broadcast along its row. The
psums of a column are reduced down the column by a pipelined per-column adder
tree (not a skewed systolic chain: same throughput, no skew buffers, and a
latency that does not grow with ``rows`` in cycles).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed

from celosia.rtl import isa
from celosia.rtl.arrays.engine import ComputeEngine, gemm_insn_in_range, insn_check_state, legal_gemm
from celosia.rtl.dma import accept_state

__all__ = ["WSArray", "cycles"]


def _adder_tree(terms):
    """Balanced sum of ``terms`` (log2 depth instead of a chain)."""
    terms = list(terms)
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]


class WSArray(ComputeEngine):
    """Weight-stationary GEMM engine implementing :class:`ComputeEngineSignature`.

    For one accepted :data:`~celosia.rtl.isa.GemmInsn`, for ``m < m_len`` and
    ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
                              + sum_{k<k_len} int8(ifmap[ifmap_row+m][k]) * int8(weight[weight_row+k][n])

    with int32 wrapping. Lanes ``n >= n_len`` of the written rows are left as
    they were (the write enables cover lanes ``n < n_len`` only). Rows
    ``k >= k_len`` of the weight tile are held at 0 in the PEs, so ifmap lanes
    ``k >= k_len`` are ignored.

    Ports (see :class:`ComputeEngineSignature`): ``insn`` (stream, ready when
    idle), ``done`` / ``error`` / ``busy``, read ports ``ifmap``, ``weight``,
    ``psum_rd`` and write port ``psum_wr``.

    Operation and timing (cycle 0 = the cycle ``insn.valid & insn.ready``):

    * cycle 1 (CHECK): :func:`gemm_insn_in_range`; out of range -> ``error``
      pulse in this cycle; ``m_len = 0`` -> ``done`` pulse in this cycle.
      Otherwise the PE weight registers are cleared.
    * cycles 2 .. k_len+1 (PRELOAD): weight rows ``weight_row+k`` are read, one
      per cycle, into PE row ``k`` (each lands one cycle after its read).
    * cycles k_len+2 .. k_len+m_len+1 (STREAM): ifmap row ``ifmap_row+m`` and
      psum row ``psum_row+m`` (if ``accumulate``) are read, one per cycle.
      Pipeline from the read cycle ``t``: ``t+1`` data arrive, the ``rows*cols``
      products are registered; ``t+2`` the column sums plus the old psum are
      registered; ``t+3`` the row is written through ``psum_wr``.
    * the last write is in cycle ``k_len + m_len + 4``; ``done`` pulses in cycle
      ``k_len + m_len + 5`` = ``2 + k_len + m_len + PIPELINE``; the next
      instruction can be accepted in the cycle after ``done``.

    So issue-to-done latency is ``k_len + m_len + 5`` cycles for ``m_len > 0``
    (1 cycle for ``m_len = 0`` or an error; :func:`cycles`), and the throughput is
    one ifmap row per cycle after the preload.
    """

    #: Cycles from an ifmap/psum read to the psum write of that row.
    PIPELINE = 3

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        ab, wb, acc = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        insn = Signal(isa.GemmInsn)
        k_cnt = Signal(range(rows + 1))
        m_cnt = Signal(16)
        drain = Signal(range(self.PIPELINE + 1))

        # PE weight registers, w[k][n].
        w = [[Signal(signed(wb), name=f"w_{k}_{n}") for n in range(cols)] for k in range(rows)]
        clear_w = Signal()

        # Preload pipeline: a weight read issued in cycle t lands in PE row k at t+1.
        wload_valid = Signal()
        wload_k = Signal(range(rows + 1))
        wload_issue = Signal()
        m.d.sync += [wload_valid.eq(wload_issue), wload_k.eq(k_cnt)]
        for k in range(rows):
            for n in range(cols):
                with m.If(clear_w):
                    m.d.sync += w[k][n].eq(0)
                with m.Elif(wload_valid & (wload_k == k)):
                    m.d.sync += w[k][n].eq(self.weight.data[n * wb:(n + 1) * wb].as_signed())

        # Stream pipeline, row read in cycle t: t+1 data here, products and old psum
        # registered; t+2 column sums registered; t+3 psum_wr from those registers.
        # s{i}_valid / s{i}_addr say which row is at t+i.
        s0_valid = Signal()
        s1_valid, s2_valid, s3_valid = Signal(), Signal(), Signal()
        s1_addr = Signal.like(self.psum_wr.addr)
        s2_addr = Signal.like(self.psum_wr.addr)
        s3_addr = Signal.like(self.psum_wr.addr)
        prod = [[Signal(signed(ab + wb), name=f"p_{k}_{n}") for n in range(cols)] for k in range(rows)]
        old = [Signal(signed(acc), name=f"old_{n}") for n in range(cols)]
        colsum = [Signal(signed(acc), name=f"sum_{n}") for n in range(cols)]

        m.d.sync += [s1_valid.eq(s0_valid), s2_valid.eq(s1_valid), s3_valid.eq(s2_valid)]
        m.d.sync += [s1_addr.eq(insn.psum_row + m_cnt), s2_addr.eq(s1_addr), s3_addr.eq(s2_addr)]
        with m.If(s1_valid):
            for k in range(rows):
                x = self.ifmap.data[k * ab:(k + 1) * ab].as_signed()
                for n in range(cols):
                    m.d.sync += prod[k][n].eq(x * w[k][n])
            for n in range(cols):
                with m.If(insn.accumulate):
                    m.d.sync += old[n].eq(self.psum_rd.data[n * acc:(n + 1) * acc].as_signed())
                with m.Else():
                    m.d.sync += old[n].eq(0)
        for n in range(cols):
            # Assignment to a signed(acc) register gives the int32 wrap.
            m.d.sync += colsum[n].eq(_adder_tree([old[n]] + [prod[k][n] for k in range(rows)]))

        lane_en = Cat(insn.n_len > n for n in range(cols))
        m.d.comb += [
            self.psum_wr.addr.eq(s3_addr),
            self.psum_wr.data.eq(Cat(colsum)),
        ]
        with m.If(s3_valid):
            m.d.comb += self.psum_wr.en.eq(lane_en)

        m.d.comb += [
            self.ifmap.addr.eq(insn.ifmap_row + m_cnt),
            self.psum_rd.addr.eq(insn.psum_row + m_cnt),
            self.weight.addr.eq(insn.weight_row + k_cnt),
            self.weight.en.eq(wload_issue),
            self.ifmap.en.eq(s0_valid),
            self.psum_rd.en.eq(s0_valid & insn.accumulate),
        ]

        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, gemm_insn_in_range(insn, cfg), insn.m_len == 0):
                m.d.sync += [k_cnt.eq(0), m_cnt.eq(0), drain.eq(0)]
                m.d.comb += clear_w.eq(1)
                with m.If(insn.k_len == 0):
                    m.next = "STREAM"
                with m.Else():
                    m.next = "PRELOAD"
            with m.State("PRELOAD"):
                m.d.comb += [self.busy.eq(1), wload_issue.eq(1)]
                m.d.sync += k_cnt.eq(k_cnt + 1)
                with m.If(k_cnt == insn.k_len - 1):
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += [self.busy.eq(1), s0_valid.eq(1)]
                with m.If(m_cnt == insn.m_len - 1):
                    m.next = "DRAIN"
                with m.Else():
                    m.d.sync += m_cnt.eq(m_cnt + 1)
            with m.State("DRAIN"):
                # PIPELINE cycles of the last row in flight, then done one cycle after its write.
                m.d.comb += self.busy.eq(1)
                m.d.sync += drain.eq(drain + 1)
                with m.If(drain == self.PIPELINE):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) on :class:`WSArray`, the timing of its docstring: ``k_len + m_len + 5``; 1 for
    ``m_len = 0`` or an illegal instruction. ``ifmap`` is not needed."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    return 2 + g.k_len + g.m_len + WSArray.PIPELINE
