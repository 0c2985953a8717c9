"""Output-stationary PE array (``dataflow = "os"``, ShiDianNao style).

``rows x cols`` PEs; PE ``(i, n)`` owns one output, ``psum[m0 + i][n]`` of the
current block of ``rows`` output rows, and accumulates it in place while the
inputs and weights stream past: in each MAC cycle the weight row ``k``
(``cols`` weights) is broadcast down the columns and every PE row ``i`` takes
the activation ``x[m0 + i][k]`` from its own shift register (loaded with the
ifmap row ``m0 + i`` before the block, shifted one lane per cycle). Only when the
block's ``k`` loop is over do the outputs leave the array (one psum row per
cycle, adding the old psum when ``accumulate``).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed

from celosia.rtl import isa
from celosia.rtl.arrays.engine import (ComputeEngine, finish_states, gemm_insn_in_range, insn_check_state,
                                       legal_gemm)
from celosia.rtl.dma import accept_state

__all__ = ["OSArray", "cycles"]


class OSArray(ComputeEngine):
    """Output-stationary GEMM engine implementing :class:`ComputeEngineSignature`.

    Same instruction semantics as :class:`~celosia.rtl.arrays.ws.WSArray`: for
    ``m < m_len``, ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
                              + sum_{k<k_len} int8(ifmap[ifmap_row+m][k]) * int8(weight[weight_row+k][n])

    (int32 wrapping; lanes ``n >= n_len`` of the written rows are left as they were).

    Operation and timing (cycle 0 = the cycle ``insn.valid & insn.ready``): cycle 1
    CHECK (:func:`gemm_insn_in_range`; out of range -> ``error``, ``m_len = 0`` ->
    ``done``, in this cycle). Then the ``m_len`` rows go in blocks of
    ``mb = min(rows, rows left)``; a block starting in cycle ``s`` takes
    ``2*mb + k_len`` cycles:

    * ``s .. s+mb-1`` (LOADX): ifmap rows ``ifmap_row+m0 .. +mb-1`` are read, one per
      cycle, into the PE rows' input shift registers (each lands the next cycle);
      the accumulators are cleared;
    * ``s+mb .. s+mb+k_len-1`` (MAC): weight row ``weight_row+k`` is read; one cycle
      later every PE multiplies it with its row's current input and accumulates;
    * ``s+mb+k_len .. s+2*mb+k_len-1`` (WRITE): psum row ``psum_row+m0+i`` is read
      (if ``accumulate``) and written one cycle later with the PE row ``i``'s
      outputs added.

    The next block starts right after (its first read is the cycle of the previous
    block's last write). With ``nb = ceil(m_len / rows)`` blocks, the last write is in
    cycle ``2*m_len + nb*k_len + 2`` and ``done`` pulses in cycle
    ``2*m_len + nb*k_len + 3`` (:func:`cycles`); the next instruction can be accepted the
    cycle after.

    With ``ZERO_SKIP`` (the subclass :class:`~celosia.rtl.arrays.feie.FEIEArray`) the MAC
    phase takes only the ``k`` with a non-zero input in the block (rtl/arrays/feie.py).
    """

    #: Skip the k whose inputs are zero in every row of the block (``FEIEArray``).
    ZERO_SKIP = False

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        ab, wb, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        insn = Signal(isa.GemmInsn)
        m0 = Signal(16)                    # first output row of the block
        mb = Signal(range(rows + 1))       # rows in the block
        cnt = Signal(16)                   # step inside the current phase

        # Input shift registers, one per PE row: lane 0 is the current activation.
        xreg = [Signal(rows * ab, name=f"x_{i}") for i in range(rows)]
        acc = [[Signal(signed(acc_bits), name=f"acc_{i}_{n}") for n in range(cols)]
               for i in range(rows)]

        # LOADX: the read issued in cycle t lands in PE row x_i at t+1.
        x_issue, x_land = Signal(), Signal()
        x_i = Signal(range(rows))
        m.d.sync += [x_land.eq(x_issue), x_i.eq(cnt)]
        for i in range(rows):
            with m.If(x_land & (x_i == i)):
                m.d.sync += xreg[i].eq(self.ifmap.data)

        # MAC: the weight read issued in cycle t is used at t+1.
        mac_issue, mac_land = Signal(), Signal()
        clear = Signal()
        m.d.sync += mac_land.eq(mac_issue)
        w_addr = Signal.like(self.weight.addr)
        if self.ZERO_SKIP:
            # kmask: the k < k_len where some row of the block has a non-zero input, built
            # as the rows land; each MAC cycle takes its lowest k (a priority encoder).
            kmask = Signal(rows)
            first_mac = Signal()
            k_star = Signal(range(rows))
            k_land = Signal(range(rows))
            nz = Cat((self.ifmap.data[l * ab:(l + 1) * ab] != insn.in_zp.as_unsigned()) & (insn.k_len > l)
                     for l in range(rows))
            with m.If(clear):
                m.d.sync += kmask.eq(0)
            with m.Elif(x_land):
                m.d.sync += kmask.eq(kmask | nz)
            for l in reversed(range(rows)):
                with m.If(kmask[l]):
                    m.d.comb += k_star.eq(l)
            with m.If(mac_issue):
                m.d.sync += [kmask.eq(kmask & ~(Const(1, rows) << k_star)), k_land.eq(k_star)]
            m.d.comb += w_addr.eq(insn.weight_row + k_star)
            lanes_of = [Array(xreg[i][l * ab:(l + 1) * ab] for l in range(rows)) for i in range(rows)]
            xs = [lanes_of[i][k_land].as_signed() - insn.in_zp.as_signed() for i in range(rows)]
        else:
            m.d.comb += w_addr.eq(insn.weight_row + cnt)
            xs = [xreg[i][:ab].as_signed() for i in range(rows)]
            for i in range(rows):
                with m.If(mac_land):
                    m.d.sync += xreg[i].eq(xreg[i] >> ab)
        for i in range(rows):
            x = xs[i]
            for n in range(cols):
                w = self.weight.data[n * wb:(n + 1) * wb].as_signed()
                with m.If(clear):
                    m.d.sync += acc[i][n].eq(0)
                with m.Elif(mac_land):
                    m.d.sync += acc[i][n].eq(acc[i][n] + x * w)  # wraps to int32

        # WRITE: psum row read in cycle t, written at t+1 with PE row wr_i added.
        wr_issue, wr_land = Signal(), Signal()
        wr_i = Signal(range(rows))
        wr_addr = Signal.like(self.psum_wr.addr)
        m.d.sync += [wr_land.eq(wr_issue), wr_i.eq(cnt), wr_addr.eq(insn.psum_row + m0 + cnt)]
        acc_rows = Array(Cat(acc[i]) for i in range(rows))
        out_row = acc_rows[wr_i]
        old = Mux(insn.accumulate, self.psum_rd.data, 0)
        m.d.comb += [
            self.psum_wr.addr.eq(wr_addr),
            self.psum_wr.data.eq(Cat(
                (out_row[n * acc_bits:(n + 1) * acc_bits].as_signed()
                 + old[n * acc_bits:(n + 1) * acc_bits].as_signed())[:acc_bits]
                for n in range(cols))),
        ]
        with m.If(wr_land):
            m.d.comb += self.psum_wr.en.eq(Cat(insn.n_len > n for n in range(cols)))

        m.d.comb += [
            self.ifmap.addr.eq(insn.ifmap_row + m0 + cnt),
            self.ifmap.en.eq(x_issue),
            self.weight.addr.eq(w_addr),
            self.weight.en.eq(mac_issue),
            self.psum_rd.addr.eq(insn.psum_row + m0 + cnt),
            self.psum_rd.en.eq(wr_issue & insn.accumulate),
        ]

        left = Signal(16)  # rows of the instruction not yet in a finished block
        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, gemm_insn_in_range(insn, cfg), insn.m_len == 0):
                m.d.sync += [m0.eq(0), cnt.eq(0), left.eq(insn.m_len),
                             mb.eq(Mux(insn.m_len < rows, insn.m_len, rows))]
                m.next = "LOADX"
            with m.State("LOADX"):
                m.d.comb += [self.busy.eq(1), x_issue.eq(1)]
                with m.If(cnt == 0):
                    m.d.comb += clear.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == mb - 1):
                    m.d.sync += cnt.eq(0)
                    if self.ZERO_SKIP:
                        m.next = "SCAN"
                    else:
                        with m.If(insn.k_len == 0):
                            m.next = "WRITE"
                        with m.Else():
                            m.next = "MAC"
            if self.ZERO_SKIP:
                with m.State("SCAN"):
                    # The block's last ifmap row lands; kmask is complete after this cycle.
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += first_mac.eq(1)
                    m.next = "MAC"
                with m.State("MAC"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += first_mac.eq(0)
                    with m.If(first_mac):  # the k < k_len this block skips
                        m.d.comb += self.zero_skips.eq(insn.k_len - sum(kmask[l] for l in range(rows)))
                    with m.If(kmask == 0):  # every input of the block is zero
                        m.next = "WRITE"
                    with m.Else():
                        m.d.comb += mac_issue.eq(1)
                        with m.If((kmask & ~(Const(1, rows) << k_star))[:rows] == 0):
                            m.next = "WRITE"
            else:
                with m.State("MAC"):
                    m.d.comb += [self.busy.eq(1), mac_issue.eq(1)]
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == insn.k_len - 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [self.busy.eq(1), wr_issue.eq(1)]
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == mb - 1):
                    m.d.sync += [cnt.eq(0), m0.eq(m0 + mb), left.eq(left - mb)]
                    rest = left - mb
                    m.d.sync += mb.eq(Mux(rest < rows, rest, rows))
                    with m.If(rest == 0):
                        m.next = "FLUSH"
                    with m.Else():
                        m.next = "LOADX"
            finish_states(m, self)
        return m


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) on :class:`OSArray`, the timing of its docstring: ``2*m_len + nb*k_len + 3``
    with ``nb = ceil(m_len / rows)`` blocks; 1 for ``m_len = 0`` or an illegal
    instruction. ``ifmap`` is not needed."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    blocks = -(-g.m_len // config.rows)
    return 2 * g.m_len + blocks * g.k_len + 3
