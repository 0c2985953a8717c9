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
from celosia.rtl.arrays.window import WindowAddr
from celosia.rtl.dma import accept_state

__all__ = ["OSArray", "cycles", "epoch_cycles"]


class OSArray(ComputeEngine):
    """Output-stationary GEMM engine implementing :class:`ComputeEngineSignature`.

    Same instruction semantics as :class:`~celosia.rtl.arrays.ws.WSArray`: for
    ``m < m_len``, ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
                              + sum_{k<k_len} int8(ifmap[row(m)][k]) * int8(weight[weight_row+k][n])

    (int32 wrapping; lanes ``n >= n_len`` of the written rows are left as they were;
    ``row(m)``: ``ifmap_row + m``, or the window of a one-tap windowed GEMM, as in
    :class:`~celosia.rtl.arrays.ws.WSArray`).

    Operation and timing (cycle 0 = the cycle ``insn.valid & insn.ready``): cycle 1
    CHECK (:func:`gemm_insn_in_range`; out of range -> ``error``, ``m_len = 0`` ->
    ``done``, in this cycle). Then the ``m_len`` rows go in ``nb = ceil(m_len / rows)``
    blocks of ``mb = min(rows, rows left)`` through a three-stage block pipeline: the
    PE rows' input registers and the accumulators are double-buffered (banks 0 / 1, block
    ``b`` uses bank ``b % 2``), and in epoch ``e = 0 .. nb+1``

    * FILL loads block ``e``: ifmap rows ``row(m0) .. row(m0+mb-1)`` are read, one per
      cycle, into the block's input registers (each lands the next cycle); the window
      address generator (:class:`~celosia.rtl.arrays.window.WindowAddr`, started by the
      instruction's first FILL read) gives ``row(m)`` without a cycle of its own;
    * MAC computes block ``e-1``: weight row ``weight_row+k`` is read, one per cycle for
      ``k < k_len``; one cycle later every PE multiplies it with its row's current input
      and accumulates (the block's accumulator bank is cleared in the epoch's first cycle);
    * DRAIN writes block ``e-2``: psum row ``psum_row+m0+i`` is read (if ``accumulate``)
      and written one cycle later with the PE row ``i``'s outputs added.

    Each stage uses its own buffer port (FILL the ifmap read port, MAC the weight read
    port, DRAIN the psum read and write ports), so they never compete; the blocks' psum
    rows are distinct, so DRAIN needs no hazard check. An epoch lasts
    ``max(1, fill rows, MAC steps, drain rows)`` cycles (a stage with no block counts
    0); the next starts the cycle after the last issue of the longest stage, when the
    previous epoch's last reads land. The first epoch starts in cycle 2; the last psum
    write is in the cycle after the last epoch (FLUSH) and ``done`` pulses the cycle after
    that: ``done`` in cycle ``3 + sum over epochs of max(1, fill, k_len, drain)``
    (:func:`cycles`, :func:`epoch_cycles`). In steady state a block costs
    ``max(rows, k_len)`` cycles instead of ``2*rows + k_len``. The next instruction can be
    accepted the cycle after ``done``.

    With ``ZERO_SKIP`` (the subclass :class:`~celosia.rtl.arrays.feie.FEIEArray`) the MAC
    stage takes only the ``k`` with a non-zero input in the block (rtl/arrays/feie.py).
    """

    #: Skip the k whose inputs are zero in every row of the block (``FEIEArray``).
    ZERO_SKIP = False

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        ab, wb, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        insn = Signal(isa.GemmInsn)
        # Block pipeline: in epoch e, FILL loads block e, MAC computes block e-1, DRAIN
        # writes block e-2; each stage has its first row m0_*, its rows mb_*, an "on"
        # flag and a step counter, and uses bank (its block % 2) of the double buffers.
        m0_f, m0_m, m0_d = Signal(16), Signal(16), Signal(16)
        mb_f, mb_m, mb_d = (Signal(range(rows + 1), name=f"mb_{s}") for s in "fmd")
        on_f, on_m, on_d = Signal(), Signal(), Signal()
        cnt_f, cnt_m, cnt_d = Signal(16), Signal(16), Signal(16)
        bank = Signal()                    # bank of the FILL stage (= DRAIN's); MAC uses ~bank
        left = Signal(16)                  # rows not yet filled
        first = Signal()                   # first cycle of an epoch

        # Input shift registers, two banks per PE row: lane 0 is the current activation.
        xreg = [[Signal(rows * ab, name=f"x{b}_{i}") for i in range(rows)] for b in range(2)]
        acc = [[[Signal(signed(acc_bits), name=f"acc{b}_{i}_{n}") for n in range(cols)]
                for i in range(rows)] for b in range(2)]

        run = Signal()                     # in an epoch
        x_issue = Signal()
        mac_issue = Signal()
        wr_issue = Signal()
        last_f, last_m, last_d = Signal(), Signal(), Signal()   # stage idle or on its last step

        # FILL: the read issued in cycle t lands in bank x_b, PE row x_i at t+1.
        x_land, x_b = Signal(), Signal()
        x_i = Signal(range(rows))
        m.d.sync += [x_land.eq(x_issue), x_i.eq(cnt_f), x_b.eq(bank)]
        for b in range(2):
            for i in range(rows):
                with m.If(x_land & (x_b == b) & (x_i == i)):
                    m.d.sync += xreg[b][i].eq(self.ifmap.data)

        # MAC: the weight read issued in cycle t is used at t+1, on bank mac_b.
        mac_land, mac_b = Signal(), Signal()
        m.d.sync += [mac_land.eq(mac_issue), mac_b.eq(~bank)]
        w_addr = Signal.like(self.weight.addr)
        if self.ZERO_SKIP:
            # kmask per bank: the k < k_len where some row of the block has a non-zero input,
            # built as the rows land (the landing row is seen the same cycle); each MAC cycle
            # takes the lowest k of its bank's mask (a priority encoder).
            kmask = [Signal(rows, name=f"kmask{b}") for b in range(2)]
            k_star = Signal(range(rows))
            k_land = Signal(range(rows))
            nz = Cat((self.ifmap.data[l * ab:(l + 1) * ab] != insn.in_zp.as_unsigned()) & (insn.k_len > l)
                     for l in range(rows))
            kmask_now = [Signal(rows, name=f"kmask_now{b}") for b in range(2)]
            for b in range(2):
                m.d.comb += kmask_now[b].eq(kmask[b] | Mux(x_land & (x_b == b), nz, 0))
            kmac = Signal(rows)
            m.d.comb += kmac.eq(Mux(bank, kmask_now[0], kmask_now[1]))
            for l in reversed(range(rows)):
                with m.If(kmac[l]):
                    m.d.comb += k_star.eq(l)
            kbit = Signal(rows)
            m.d.comb += kbit.eq(Mux(mac_issue, Const(1, rows) << k_star, 0))
            for b in range(2):
                with m.If(x_issue & (cnt_f == 0) & (bank == b)):   # a new block's mask
                    m.d.sync += kmask[b].eq(0)
                with m.Elif(bank == b):
                    m.d.sync += kmask[b].eq(kmask_now[b])
                with m.Else():
                    m.d.sync += kmask[b].eq(kmask_now[b] & ~kbit)
            with m.If(mac_issue):
                m.d.sync += k_land.eq(k_star)
            m.d.comb += [w_addr.eq(insn.weight_row + k_star),
                         last_m.eq(~on_m | ((kmac & ~(Const(1, rows) << k_star))[:rows] == 0)),
                         mac_issue.eq(run & on_m & (kmac != 0))]
            with m.If(run & first & on_m):  # the k < k_len this block skips
                m.d.comb += self.zero_skips.eq(insn.k_len - sum(kmac[l] for l in range(rows)))
            xs = [[Array(xreg[b][i][l * ab:(l + 1) * ab] for l in range(rows))[k_land].as_signed()
                   - insn.in_zp.as_signed() for i in range(rows)] for b in range(2)]
        else:
            m.d.comb += [w_addr.eq(insn.weight_row + cnt_m),
                         last_m.eq(~on_m | (cnt_m + 1 >= insn.k_len)),
                         mac_issue.eq(run & on_m & (cnt_m < insn.k_len))]
            xs = [[xreg[b][i][:ab].as_signed() for i in range(rows)] for b in range(2)]
            for b in range(2):
                for i in range(rows):
                    with m.If(mac_land & (mac_b == b) & ~(x_land & (x_b == b))):
                        m.d.sync += xreg[b][i].eq(xreg[b][i] >> ab)
        for b in range(2):
            for i in range(rows):
                for n in range(cols):
                    w = self.weight.data[n * wb:(n + 1) * wb].as_signed()
                    # the MAC bank is cleared in its epoch's first cycle (its last drain
                    # read, if any, is that cycle; its first MAC lands a cycle later)
                    with m.If(run & first & on_m & (bank != b)):
                        m.d.sync += acc[b][i][n].eq(0)
                    with m.Elif(mac_land & (mac_b == b)):
                        m.d.sync += acc[b][i][n].eq(acc[b][i][n] + xs[b][i] * w)  # wraps to int32

        # DRAIN: psum row read in cycle t, written at t+1 with bank wr_b's PE row wr_i added.
        wr_land, wr_b = Signal(), Signal()
        wr_i = Signal(range(rows))
        wr_addr = Signal.like(self.psum_wr.addr)
        m.d.sync += [wr_land.eq(wr_issue), wr_i.eq(cnt_d), wr_b.eq(bank),
                     wr_addr.eq(insn.psum_row + m0_d + cnt_d)]
        acc_rows = [Array(Cat(acc[b][i]) for i in range(rows)) for b in range(2)]
        out_row = Mux(wr_b, acc_rows[1][wr_i], acc_rows[0][wr_i])
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

        # FILL's ifmap rows (m = 0, 1, ... in order) from the window address generator,
        # started by the instruction's first FILL read.
        m.submodules.window = win = WindowAddr(len(self.ifmap.addr))
        fill_first = Signal()              # the next FILL read is row 0
        with m.If(x_issue):
            m.d.sync += fill_first.eq(0)
        m.d.comb += [win.insn.eq(insn), win.start.eq(x_issue & fill_first), win.step.eq(x_issue)]

        m.d.comb += [
            x_issue.eq(run & on_f & (cnt_f < mb_f)),
            last_f.eq(~on_f | (cnt_f + 1 >= mb_f)),
            wr_issue.eq(run & on_d & (cnt_d < mb_d)),
            last_d.eq(~on_d | (cnt_d + 1 >= mb_d)),
            self.ifmap.addr.eq(win.addr),
            self.ifmap.en.eq(x_issue),
            self.weight.addr.eq(w_addr),
            self.weight.en.eq(mac_issue),
            self.psum_rd.addr.eq(insn.psum_row + m0_d + cnt_d),
            self.psum_rd.en.eq(wr_issue & insn.accumulate),
        ]
        with m.If(x_issue):
            m.d.sync += cnt_f.eq(cnt_f + 1)
        with m.If(mac_issue):
            m.d.sync += cnt_m.eq(cnt_m + 1)
        with m.If(wr_issue):
            m.d.sync += cnt_d.eq(cnt_d + 1)

        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, gemm_insn_in_range(insn, cfg), insn.m_len == 0):
                m.d.sync += [m0_f.eq(0), left.eq(insn.m_len), on_f.eq(1), on_m.eq(0), on_d.eq(0),
                             fill_first.eq(1),
                             mb_f.eq(Mux(insn.m_len < rows, insn.m_len, rows)), bank.eq(0),
                             cnt_f.eq(0), cnt_m.eq(0), cnt_d.eq(0), first.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), run.eq(1)]
                m.d.sync += first.eq(0)
                with m.If(last_f & last_m & last_d):   # the epoch's last cycle
                    rest = left - Mux(on_f, mb_f, 0)
                    m.d.sync += [first.eq(1), cnt_f.eq(0), cnt_m.eq(0), cnt_d.eq(0), bank.eq(~bank),
                                 left.eq(rest), on_f.eq(rest != 0), on_m.eq(on_f), on_d.eq(on_m),
                                 m0_f.eq(m0_f + mb_f), m0_m.eq(m0_f), m0_d.eq(m0_m),
                                 mb_f.eq(Mux(rest < rows, rest, rows)), mb_m.eq(mb_f), mb_d.eq(mb_m)]
                    with m.If(~on_f & ~on_m):   # this epoch drained the last block
                        m.next = "FLUSH"
            finish_states(m, self)
        return m


def epoch_cycles(m_len: int, rows: int, mac_steps) -> int:
    """Cycles of the block pipeline of :class:`OSArray` / ``FEIEArray`` from its first FILL
    cycle to the last DRAIN issue: ``nb + 2`` epochs (``nb = ceil(m_len / rows)`` blocks),
    epoch ``e`` filling block ``e``, MAC-ing block ``e-1`` and draining block ``e-2``, each
    ``max(1, fill rows, MAC steps, drain rows)`` cycles long. ``mac_steps[b]`` = the MAC
    cycles of block ``b``."""
    mbs = [min(rows, m_len - m0) for m0 in range(0, m_len, rows)]
    nb = len(mbs)
    total = 0
    for e in range(nb + 2):
        fill = mbs[e] if e < nb else 0
        mac = mac_steps[e - 1] if 1 <= e <= nb else 0
        drain = mbs[e - 2] if 2 <= e <= nb + 1 else 0
        total += max(1, fill, mac, drain)
    return total


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) on :class:`OSArray`, the timing of its docstring:
    ``3 + sum over the nb + 2 epochs of max(1, fill rows, k_len, drain rows)``
    (:func:`epoch_cycles`); 1 for ``m_len = 0`` or an illegal instruction. ``ifmap`` is
    not needed."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    blocks = -(-g.m_len // config.rows)
    return 3 + epoch_cycles(g.m_len, config.rows, [g.k_len] * blocks)
