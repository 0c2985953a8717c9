"""Row-stationary PE array (``dataflow = "rs"``, Eyeriss style).

A PE convolves one filter row with one ifmap row (a 1-D convolution) and the
psums of a column of PEs add up into one output row. The windowed GEMM
(:data:`~celosia.rtl.isa.GemmInsn`, ``window = 1``) gives the array a
``win_h x win_w`` window of ``k_len`` input channels over raw (not im2col) ifmap
rows, ``out_h`` output rows of ``out_w`` pixels and ``n_len`` output channels.

Mapping (the *logical PE set* of ``win_h`` filter rows x ``out_h`` output rows,
folded onto the ``rows x cols`` physical array)::

    PE(r, j), r = t*win_h + fh:   filter row fh of output channel (g*S + t),
                                  ifmap line j*stride_h + fh*dil_h  ->  output row j
    S = rows // win_h sets stacked vertically, one output channel each; the
    n_len channels go in ceil(n_len / S) passes g.

* filter rows are reused horizontally: PE row ``r`` keeps filter row ``fh`` of its
  set's channel in a scratchpad (one per PE row since all PEs of a row hold the same
  filter row), loaded once per pass. The scratchpad is double-buffered: two banks of
  :data:`~celosia.rtl.config.RS_SPAD` entries (2 x 224, not one bank split in two, so
  the legality rule ``win_w*k_len <= RS_SPAD`` of
  :func:`~celosia.rtl.arrays.engine.gemm_insn_in_range` is unchanged); the MACs of
  pass ``g`` read one bank while pass ``g+1``'s filter rows load into the other;
* ifmap rows are reused diagonally: the ``rs_lines`` line registers (two banks) hold
  one pixel (``k_len`` channels) of every ifmap line the window touches, and PE
  ``(r, j)`` reads line ``j*stride_h + fh*dil_h`` -- the PEs on a diagonal share a
  line, and a stride skips lines (with one filter row, line ``j``: the lines a stride
  skips are not filled);
* psums go vertically: the ``win_h`` PEs of a set in column ``j`` are summed
  (a chain up the column, from the hold copy of the accumulators) into output row
  ``j``'s psum for the set's channel.

The compiler folds a larger logical set (docs/dataflows.md): filter rows beyond
``rows`` (or beyond the scratchpad / weight buffer) into several accumulating
GEMMs, output rows beyond ``cols`` into several output tiles. A fully connected
layer maps as a convolution whose "filter rows" are ``k_len``-feature lines of
the input vector (Eyeriss's FC mapping, ``out_h`` = samples).

Operation and timing (cycle 0 = the cycle ``insn.valid & insn.ready``): cycle 1
CHECK (:func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`, computed at acceptance and
registered, :func:`~celosia.rtl.arrays.engine.gemm_check_register`; ``m_len = 0`` or
``n_len = 0`` -> ``done``; the per-row filter row / set and the per-PE line index
are registered). From CHECK on, two things load together (state LOADW):

* the loader reads weight rows ``weight_row + q``, ``q < W = win_h*win_w*k_len``,
  one per cycle (cycles 2 .. W+1); each lands a cycle later in scratchpad bank 0 of
  the PE rows holding its filter row (lane ``t`` for set ``t``); when it is done and
  there is a second pass, it goes on at once with the second pass's rows into bank 1;
* the filler reads the first step's pixels into line bank 0 (below).

The first pass's MACs start once its pixels are in and the loader is past the first
entry of its last filter row (a MAC step reads entry ``fw*k_len + c`` no earlier
than the loader lands it): its *start* ``s0 = max(1, W - win_w*k_len + 3 - lines)``,
its MACs from ``s0 + lines + 1``. For each pass ``g``, its filter rows in bank
``g mod 2``:

* for a pass ``g >= 1`` with a pass ``g+1``, the loader reads the ``W`` weight rows
  of pass ``g+1`` from the pass's first cycle on, into bank ``(g+1) mod 2``, lane
  ``(g+1)*S + t`` (the weight buffer read port is used by nothing else meanwhile);
* then the steps ``(x, fw)``, output column ``x < out_w``, filter column
  ``fw < win_w``. A step's pixels go into one of two banks of line registers, one
  per cycle: ifmap row ``ifmap_row + l*row_pitch + x*stride_w + fw*dil_w`` into
  line ``l``, ``lines = (out_h-1)*stride_h + (win_h-1)*dil_h + 1`` of them; with one
  filter row (``win_h = 1``) only the lines ``j*stride_h`` are touched, so line
  ``j`` gets ifmap line ``j*stride_h`` and ``lines = out_h`` (*compact lines*; the
  legality bound on the touched lines is unchanged). The pass's first step is
  filled alone (FILL, ``lines`` cycles; the first pass's during LOADW); then each
  step is a MAC phase -- ``k_len`` cycles: scratchpad entry ``fw*k_len + c`` is read
  and one cycle later every PE multiplies it with channel ``c`` of its line --
  while the next step's pixels are read into the other bank (from the MAC's second
  cycle on), so a step takes ``D = max(k_len, lines + 1)`` cycles, the pass's last
  one ``k_len``;
* the last MAC of output column ``x`` lands its PEs' sums in the *hold* registers
  (a copy of the accumulators) and WRITE runs from the next cycle, ``out_h``
  cycles alongside the next column's (or the next pass's) FILL and MACs: psum row
  ``psum_row + j*out_w + x`` is read (if ``accumulate``) and written one cycle
  later, lanes ``g*S .. g*S+S-1`` (below ``n_len``) from the column sums of hold
  column ``j`` (``D >= lines + 1 >= out_h + 1``, so a WRITE ends before the next
  column's sums land). A pass thus takes ``B = lines + (out_w*win_w - 1)*D + k_len``
  from its start to its last MAC cycle;
* the next pass starts (its FILL) the cycle after the pass's last MAC cycle if the
  loader has issued the last read of its filter rows by then, else (NEXTW) the cycle
  after that read: pass 1 at ``s1 = max(s0 + B, 2W + 1)``, pass ``g >= 2`` at
  ``s_g = s_{g-1} + max(W, B)``; after the last pass's last MAC cycle, DRAIN waits for
  its last column's WRITE.

So with ``G = ceil(n_len / S)`` passes, ``done`` pulses in cycle
``s_{G-1} + B + out_h + 2`` (:func:`gemm_cycles`; before, with the WRITE between
columns, all lines filled whatever the stride and the first pass's weights loaded
before its pixels, it was ``3 + W + B' + (G-1)*max(W, B')``, ``B'`` the pass body
with a column of ``(win_w-1)*D + max(k_len + out_h, lines + 1)``) on an idle engine
(:func:`gemm_cycles`, :func:`gemm_timing`).

Consecutive GEMMs (:class:`RSTiming`, :func:`sequence_timing`). The engine takes the next
GEMM (``insn.ready``) into a second instruction register during the current one's last
pass: from the cycle after that pass starts (``a + 2`` with one pass; ``s_{G-1} + 1``)
through its last MAC cycle ``T = s_{G-1} + B``. In the first cycle ``P = T - k_len + 1`` of
the last step it checks the next GEMM (taken by ``P - 1``): if it is legal, not empty and
``k_len' + 1 >= out_h`` (its first column cannot end before this GEMM's last WRITE), its
first step's pixels go into the free line bank from ``P`` on (its own ``lines'``, pitch,
``ifmap_row``) and in ``T`` it becomes the current GEMM: its set-up (the PEs' line picks a
cycle later, when this GEMM's last MAC has landed), its first pass's filter rows into the
free scratchpad bank from ``T`` (as from CHECK), LOADW from ``T + 1``. It then runs as if
accepted in ``T - 1`` with its first pass starting no earlier than ``P`` (``first = P - T +
1 = 2 - k_len`` in :func:`gemm_timing`), so with one filter row its MACs start in ``T + 3``
when ``lines' <= k_len + 1``: two idle MAC cycles between GEMMs instead of ``lines + out_h +
4``. The last column's WRITE goes on alongside with its own copy of the GEMM's fields and
row mapping, and its ``done`` pulses in ``T + out_h + 2`` as before, so up to three GEMMs
are in flight (the one writing, the one running, the one taken). Otherwise (taken after
``P - 1``, illegal, empty, or ``k_len' + 1 < out_h``) the current GEMM ends as alone
(DRAIN, FLUSH, DONE) and the next goes to CHECK the cycle after its ``done``, as if
accepted in that ``done`` cycle (an error then pulses a cycle after the ``done``).
"""

from __future__ import annotations

import functools
import operator

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.arrays.blocks import Block, place
from celosia.rtl.arrays.engine import (ComputeEngine, gemm_check_register, insn_check_state, legal_gemm,
                                       offered_sequence)
from celosia.rtl.config import RS_SPAD, ceil_div
from celosia.rtl.dma import accept_state

__all__ = ["RSArray", "RSRow", "RSLine", "RSLane", "RSTiming", "gemm_cycles", "gemm_timing", "cycles",
           "sequence_timing", "sequence_cycles"]


def gemm_timing(rows: int, *, win_h: int, win_w: int, k_len: int, n_len: int, out_h: int, out_w: int,
                stride_h: int = 1, dil_h: int = 1, first: int = 1) -> tuple[int, int, int]:
    """``(ready, last, done)`` of one legal windowed GEMM on a ``rows``-row array, cycles after
    its (virtual) acceptance, the timing of the module docstring: from ``ready`` on the
    engine takes the next GEMM (its last pass has started), ``last`` is its last MAC cycle,
    ``done`` its ``done``. ``first``: the earliest start of its first pass (1 when accepted
    idle; ``2 - k_len`` of the GEMM before when its first step was filled during that
    GEMM's last step)."""
    passes = ceil_div(n_len, rows // win_h)
    lines = out_h if win_h == 1 else (out_h - 1) * stride_h + (win_h - 1) * dil_h + 1
    step = max(k_len, lines + 1)
    fwk = win_w * k_len
    load = win_h * fwk
    body = lines + (out_w * win_w - 1) * step + k_len
    start = max(first, load - fwk + 3 - lines)    # the first pass's (its MACs from start + lines + 1)
    ready = 2
    if passes > 1:                                # the second pass's filter rows load after the first's
        start = max(start + body, 2 * load + 1) + (passes - 2) * max(load, body)
        ready = start + 1
    return ready, start + body, start + body + out_h + 2


def gemm_cycles(rows: int, *, win_h: int, win_w: int, k_len: int, n_len: int, out_h: int, out_w: int,
                stride_h: int = 1, dil_h: int = 1) -> int:
    """Acceptance to ``done`` of one legal windowed GEMM on an idle ``rows``-row array, the
    timing of the module docstring."""
    if n_len == 0:
        return 1
    return gemm_timing(rows, win_h=win_h, win_w=win_w, k_len=k_len, n_len=n_len, out_h=out_h,
                       out_w=out_w, stride_h=stride_h, dil_h=dil_h)[2]


class RSTiming:
    """The timing of consecutive GEMMs on :class:`RSArray` (module docstring, "Consecutive
    GEMMs"), one GEMM at a time, for a caller that learns when each is offered only as it
    goes (:mod:`celosia.sim.perf`, :func:`sequence_timing`).

    :meth:`accept_at` is the first cycle from ``c`` on in which the engine takes a GEMM
    (``insn.ready``); :meth:`accept` takes a GEMM accepted in such a cycle and returns the
    cycle of its ``done`` / ``error``. The state: :attr:`cur` = ``(win_from, prefill, last,
    out_h, done)`` of the last legal GEMM taken (its window of early acceptance
    ``win_from .. last``, the cycle ``prefill`` of its last step's first MAC, its last MAC
    cycle, ...; None after an error) and :attr:`idle_at`, from when an idle engine takes one.
    """

    def __init__(self, config):
        self.config = config
        self.cur = None
        self.idle_at = 0

    def accept_at(self, c: int) -> int:
        cur = self.cur
        if cur is None:
            return max(c, self.idle_at)
        lo = max(c, cur[0])
        return lo if lo <= cur[2] else max(c, cur[4] + 1)

    def accept(self, insn, a: int) -> int:
        g = legal_gemm(insn, self.config)
        ok = g is not None and g.m_len != 0 and g.n_len != 0
        cur = self.cur
        early = cur is not None and a <= cur[2]
        first = 1
        if not early:
            av = a                                # accepted idle: CHECK the cycle after
        elif ok and a < cur[1] and g.k_len + 1 >= cur[3]:
            av, first = cur[2] - 1, cur[1] - cur[2] + 1   # its first step filled from cur's last step
        else:
            av = cur[4]                           # CHECK the cycle after cur's done
        if not ok:
            self.cur, self.idle_at = None, av + 2
            return av + 1
        ready, last, done = gemm_timing(self.config.rows, win_h=g.win_h, win_w=g.win_w, k_len=g.k_len,
                                        n_len=g.n_len, out_h=g.out_h, out_w=g.out_w,
                                        stride_h=g.stride_h, dil_h=g.dil_h, first=first)
        self.cur = (av + ready, av + last - g.k_len + 1, av + last, g.out_h, av + done)
        return av + done


def sequence_timing(insns, config, gaps=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` (field dicts as for
    :func:`cycles`) on :class:`RSArray`, ``end`` the cycle of its ``done`` / ``error``.
    Instruction ``i`` is offered (``valid`` held high until accepted) from the cycle
    ``gaps[i]`` cycles after the acceptance cycle of instruction ``i-1`` plus one (the
    first from cycle ``gaps[0]``); ``gaps`` defaults to all 0 (back to back)
    (:func:`~celosia.rtl.arrays.engine.offered_sequence`)."""
    return offered_sequence(RSTiming(config), insns, gaps)


def sequence_cycles(insns, config) -> int:
    """Cycles from the acceptance of the first of ``insns`` (issued back to back to an idle
    :class:`RSArray`) to the ``done`` / ``error`` of the last."""
    return sequence_timing(insns, config)[-1][1] if insns else 0


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the windowed GEMM ``insn`` (field name -> int,
    missing = 0) on :class:`RSArray`: :func:`gemm_cycles`; 1 for ``m_len = 0``,
    ``n_len = 0`` or an illegal instruction. ``ifmap`` is not needed."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0 or g.n_len == 0:
        return 1
    return gemm_cycles(config.rows, win_h=g.win_h, win_w=g.win_w, k_len=g.k_len, n_len=g.n_len,
                       out_h=g.out_h, out_w=g.out_w, stride_h=g.stride_h, dil_h=g.dil_h)


def _mapping_layout(rows: int) -> data.StructLayout:
    """What :class:`RSArray` works out from a GEMM to map it on its ``rows`` PE rows
    (:func:`_mapping`)."""
    row = unsigned(max(1, (rows - 1).bit_length()))
    return data.StructLayout({
        "fh": data.ArrayLayout(row, rows), "set": data.ArrayLayout(row, rows),
        "off": data.ArrayLayout(16, rows), "last": data.ArrayLayout(1, rows),
        "nsets": range(rows + 1), "compact": 1, "lstep": 8,
        "lines": 16, "lpitch": 16, "fwk": 16, "wtot": 16,
    })


def _mapping(m, g, rows: int, name: str):
    """The mapping of the GEMM ``g`` (a GemmInsn view) on ``rows`` PE rows, combinational:
    per PE row its filter row ``fh`` (0, 1, .. win_h - 1, then again), its logical set
    ``set``, its first line offset ``off = fh * dil_h`` and whether it is the last row of
    its set; ``nsets`` sets in all; ``compact`` (one filter row: only the lines ``j *
    stride_h`` are touched, so line register ``j`` holds ifmap line ``j * stride_h``,
    ``out_h`` of them, and ``lstep`` = 1; otherwise line ``y`` holds ifmap line ``y``,
    ``lstep`` = ``stride_h``); the line registers a step fills (``lines``) and the ifmap
    rows between them (``lpitch``); scratchpad entries per filter row ``fwk = win_w *
    k_len`` and weight rows ``wtot = win_h * fwk``."""
    v = Signal(_mapping_layout(rows), name=name)
    for r in range(1, rows):
        wrap = v.fh[r - 1] == g.win_h - 1
        m.d.comb += [v.fh[r].eq(Mux(wrap, 0, v.fh[r - 1] + 1)),
                     v.set[r].eq(v.set[r - 1] + wrap),
                     v.off[r].eq(Mux(wrap, 0, v.off[r - 1] + g.dil_h))]
    compact = g.win_h == 1
    m.d.comb += [v.fh[0].eq(0), v.set[0].eq(0), v.off[0].eq(0),
                 v.nsets.eq(v.set[rows - 1] + (v.fh[rows - 1] == g.win_h - 1)),
                 v.compact.eq(compact), v.lstep.eq(Mux(compact, 1, g.stride_h)),
                 v.lines.eq(Mux(compact, g.out_h, (g.out_h - 1) * g.stride_h + (g.win_h - 1) * g.dil_h + 1)),
                 v.lpitch.eq(Mux(compact, g.stride_h * g.row_pitch, g.row_pitch)),
                 v.fwk.eq(g.win_w * g.k_len), v.wtot.eq(g.win_h * g.win_w * g.k_len)]
    m.d.comb += [v.last[r].eq(v.fh[r] == g.win_h - 1) for r in range(rows)]
    return v


class RSLine(Block):
    """Ifmap line register ``y`` of :class:`RSArray`, both banks
    (:mod:`~celosia.rtl.arrays.blocks`: inline for pysim, one module instanced ``rs_lines``
    times in Verilog).

    Ports
    -----
    data : In(width)
        The ifmap read data (one pixel, ``k_len`` channels).
    land, land_bank : In(1), In(1)
        Bank ``land_bank`` takes ``data`` at the next edge.
    shift, bank : In(1), In(1)
        Otherwise bank ``bank`` shifts down one lane (``lane_bits``) at the next edge.
    lane0 : Out(lane_bits)
        Lane 0 of bank ``bank`` (combinational).
    """

    def __init__(self, width, lane_bits):
        self.width, self.lane_bits = width, lane_bits
        super().__init__({"data": In(width), "land": In(1), "land_bank": In(1), "shift": In(1),
                          "bank": In(1), "lane0": Out(lane_bits)}, (width, lane_bits))

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(self.width, name=f"y{bk}") for bk in range(2)]
        for bk in range(2):
            with m.If(self.land & (self.land_bank == bk)):
                m.d.sync += regs[bk].eq(self.data)
            with m.Elif(self.shift & (self.bank == bk)):
                m.d.sync += regs[bk].eq(regs[bk].shift_right(self.lane_bits))  # (a slice)
        ab = self.lane_bits
        m.d.comb += self.lane0.eq(Mux(self.bank, regs[1][:ab], regs[0][:ab]))
        return m


class RSLane(Block):
    """The psum lane ``n`` written by :class:`RSArray`: the column sum of the set whose
    channel goes to lane ``n``, plus the old psum (:mod:`~celosia.rtl.arrays.blocks`:
    inline for pysim, one module instanced ``cols`` times in Verilog).

    Ports
    -----
    n : In(9)
        The lane number (a constant per instance).
    chain, tgt, last : In(rows * acc_bits), In(rows * 9), In(rows)
        Per PE row ``r``: the column sum up to row ``r``, the lane its set writes, whether
        it is its set's last filter row.
    old : In(acc_bits)
        Lane ``n`` of the old psum (0 unless accumulating).
    out : Out(acc_bits)
        ``chain[r] + old`` for the row ``r`` with ``last[r]`` and ``tgt[r] == n`` (``old``
        if none), int32 wrap (combinational).
    """

    clocked = False

    def __init__(self, rows, acc_bits):
        self.rows, self.acc_bits = rows, acc_bits
        super().__init__({"n": In(9), "chain": In(rows * acc_bits), "tgt": In(rows * 9), "last": In(rows),
                          "old": In(acc_bits), "out": Out(acc_bits)}, (rows, acc_bits))

    def elaborate(self, platform):
        m = Module()
        R, acc_bits = self.rows, self.acc_bits
        pick = [self.last[r] & (self.tgt[r * 9:(r + 1) * 9] == self.n) for r in range(R)]
        val = Signal(signed(acc_bits))
        m.d.comb += val.eq(functools.reduce(operator.or_, (
            Mux(pick[r], self.chain[r * acc_bits:(r + 1) * acc_bits].as_signed(), 0) for r in range(R))))
        m.d.comb += self.out.eq((val + self.old.as_signed())[:acc_bits])
        return m


class RSRow(Block):
    """PE row ``r`` of :class:`RSArray`: its filter scratchpad (two banks of
    :data:`~celosia.rtl.config.RS_SPAD` entries) and its ``cols`` PEs, each an accumulator
    and a hold register (:mod:`~celosia.rtl.arrays.blocks`: inline for pysim, one module
    instanced ``rows`` times in Verilog).

    Ports
    -----
    wdata : In(cols * weight_bits)
        The weight buffer read data.
    lane, spad_waddr, spad_we : In(10), In(range(2*RS_SPAD)), In(1)
        Scratchpad write: entry ``spad_waddr`` takes lane ``lane`` of ``wdata``.
    spad_raddr : In(range(2*RS_SPAD))
        Scratchpad read address (synchronous read: the entry is there a cycle later).
    lines : In(rs_lines * act_bits)
        Lane 0 of every ifmap line register (of the MAC bank).
    off, lstep : In(range(rs_lines)), In(8)
        PE ``j`` reads line ``off + j*lstep`` (for ``j*lstep`` up to ``rs_lines-1``).
    clear, mac_land : In(1)
        The accumulators clear / add their PE's product (int32 wrap) at the next edge.
    hold : In(1)
        The hold registers take the accumulators plus this cycle's products at the next edge.
    col : In(range(max(cols, 2)))
        The hold register read.
    out : Out(signed(acc_bits))
        Hold register ``col`` (combinational).
    """

    def __init__(self, cols, lines, act_bits, weight_bits, acc_bits):
        self.cols, self.lines_n = cols, lines
        self.act_bits, self.weight_bits, self.acc_bits = act_bits, weight_bits, acc_bits
        super().__init__({
            "wdata": In(cols * weight_bits), "lane": In(10),
            "spad_waddr": In(range(2 * RS_SPAD)), "spad_we": In(1), "spad_raddr": In(range(2 * RS_SPAD)),
            "lines": In(lines * act_bits), "off": In(range(lines)), "lstep": In(8),
            "clear": In(1), "mac_land": In(1), "hold": In(1), "col": In(range(max(cols, 2))),
            "out": Out(signed(acc_bits)),
        }, (cols, lines, act_bits, weight_bits, acc_bits))

    def elaborate(self, platform):
        m = Module()
        C, L = self.cols, self.lines_n
        ab, wb, acc_bits = self.act_bits, self.weight_bits, self.acc_bits
        m.submodules.spad = mem = Memory(shape=wb, depth=2 * RS_SPAD, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        w_lanes = Array(self.wdata[n * wb:(n + 1) * wb] for n in range(C))
        m.d.comb += [wp.addr.eq(self.spad_waddr), wp.data.eq(w_lanes[self.lane]), wp.en.eq(self.spad_we),
                     rp.addr.eq(self.spad_raddr)]
        spad = rp.data.as_signed()
        acc = [Signal(signed(acc_bits), name=f"acc_{j}") for j in range(C)]
        mac = [Signal(signed(acc_bits), name=f"mac_{j}") for j in range(C)]
        hold = [Signal(signed(acc_bits), name=f"hold_{j}") for j in range(C)]
        row_lines = Signal(L * ab)   # its line y: line off + y
        m.d.comb += row_lines.eq(self.lines >> (self.off * ab))
        for j in range(C):
            # line j*lstep; only the strides that keep it inside the registers are wired
            # (a PE beyond out_h, unused, may read anything)
            picks = [row_lines.word_select(j * s, ab) for s in range(1, (L - 1) // j + 1)] if j else []
            pix = (row_lines[:ab] if not picks else
                   picks[0] if len(picks) == 1 else Array(picks)[self.lstep - 1])
            m.d.comb += mac[j].eq(acc[j] + pix.as_signed() * spad)  # wraps
            with m.If(self.clear):
                m.d.sync += acc[j].eq(0)
            with m.Elif(self.mac_land):
                m.d.sync += acc[j].eq(mac[j])
            with m.If(self.hold):
                m.d.sync += hold[j].eq(mac[j])
        m.d.comb += self.out.eq(Array(hold)[self.col])
        return m


class RSArray(ComputeEngine):
    """Row-stationary engine implementing :class:`ComputeEngineSignature` for windowed
    GEMMs (see the module docstring for the mapping and the timing). It takes the next
    GEMM during the current one's last pass, so at most :attr:`MAX_IN_FLIGHT` are in
    flight: the one whose last column is being written, the one running and the one taken
    next."""

    MAX_IN_FLIGHT = 3

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, L = cfg.rows, cfg.cols, cfg.rs_lines
        ab, wb, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        insn = Signal(isa.GemmInsn)
        # The next GEMM, taken during the current one's last pass (``early``); ``src`` is the
        # instruction the mapping below is worked out from: ``insn`` in CHECK, ``insn_n``
        # where the next GEMM is checked (the last step) and set up (the switch).
        insn_n, nxt_valid, early = Signal(isa.GemmInsn), Signal(), Signal()
        src, use_next = Signal(isa.GemmInsn), Signal()
        m.d.comb += src.eq(insn)
        with m.If(use_next):
            m.d.comb += src.eq(insn_n)
        # The range checks of insn and insn_n, registered with them (gemm_check_register):
        # insn is loaded from the offered GEMM in IDLE, or from insn_n (``take_next``: at a
        # switch, or in DONE); insn_n from the offered GEMM during the last pass.
        idle, take_next = Signal(), Signal()
        ok_n = gemm_check_register(m, [(early & ~nxt_valid & self.insn.valid, self.offered)], cfg, "ok_n")
        ok = gemm_check_register(m, [(idle & self.insn.valid, self.offered), (take_next, ok_n)], cfg)
        src_ok = Signal()
        m.d.comb += src_ok.eq(Mux(use_next, ok_n, ok) & (src.m_len != 0) & (src.n_len != 0))

        # -- mapping of the logical set onto the rows (_mapping of src, registered in CHECK /
        #    at the switch): filter row fh, set t, first line offset fh*dil_h, last row of a
        #    set. It is worked out from the offered GEMM as insn / insn_n take it and registered
        #    with them, as their range checks are (issue 15: src's choice, a pass counter
        #    compare away, no longer feeds the chain over the rows and the multiplies).
        layout = _mapping_layout(R)
        pay_map = _mapping(m, self.insn.payload, R, "pay_map")
        map_n, map_i, src_map = Signal(layout, name="map_n"), Signal(layout, name="map_i"), Signal(layout)
        with m.If(early & ~nxt_valid & self.insn.valid):
            m.d.sync += map_n.eq(pay_map)
        with m.If(idle & self.insn.valid):
            m.d.sync += map_i.eq(pay_map)
        with m.Elif(take_next):
            m.d.sync += map_i.eq(map_n)
        m.d.comb += src_map.eq(Mux(use_next, map_n.as_value(), map_i.as_value()))
        fh_c, set_c, off_c = src_map.fh, src_map.set, src_map.off
        nsets_c = src_map.nsets

        fh = [Signal(range(R), name=f"fh_{r}") for r in range(R)]
        tset = [Signal(range(R), name=f"set_{r}") for r in range(R)]
        last = [Signal(name=f"last_{r}") for r in range(R)]
        nsets_lt = Signal()   # (combinational) src has a second pass
        nsets = Signal(range(R + 1))
        # PE (r, j) reads line off[r] + j*lstep: a per-row shift of the line registers by
        # off[r], then per PE a pick among the multiples j*s that fit (s = lstep, the stride
        # or 1), instead of an rs_lines-way mux per PE (R*C*L mux inputs, which made 64x64
        # Verilog generation take minutes).
        off = [Signal(range(L), name=f"off_{r}") for r in range(R)]
        lstep = Signal(8)
        setup = Signal()
        with m.If(setup):
            m.d.sync += nsets.eq(nsets_c)
            for r in range(R):
                m.d.sync += [fh[r].eq(fh_c[r]), tset[r].eq(set_c[r]), last[r].eq(src_map.last[r])]
        # the PEs' line picks a cycle later: at a switch the previous GEMM's last MAC lands
        # (and reads its lines) in the cycle after (src is then insn, already the new GEMM)
        setup_d = Signal()
        m.d.sync += setup_d.eq(setup)
        with m.If(setup_d):
            m.d.sync += lstep.eq(src_map.lstep)
            m.d.sync += [off[r].eq(off_c[r]) for r in range(R)]
        m.d.comb += nsets_lt.eq(nsets_c < src.n_len)

        lines = Signal(16)   # line registers filled per step
        lpitch = Signal(16)  # ifmap rows from one line register to the next
        fwk = Signal(16)     # scratchpad entries per filter row: win_w * k_len
        wtot = Signal(16)    # weight rows of the instruction: win_h * fwk
        lines_c, lpitch_c = src_map.lines, src_map.lpitch
        with m.If(setup):
            m.d.sync += [lines.eq(lines_c), lpitch.eq(lpitch_c), fwk.eq(src_map.fwk), wtot.eq(src_map.wtot)]

        # -- filter scratchpads, one per PE row, two banks of RS_SPAD entries: the MACs of a
        #    pass read bank ``sbank`` while the loader fills the other one with the next pass's
        #    filter rows (the weight read port is otherwise idle once LOADW is over).
        g0 = Signal(8)                      # first output channel of the pass (g*S)
        sbank = Signal()                    # scratchpad bank of the pass's MACs
        w_land = Signal()
        ld_active, ld_go = Signal(), Signal()           # the loader: wtot weight rows, one a cycle
        ld_go_g, ld_go_bank = Signal(9), Signal()       # lane base / bank of the load starting
        ld_g, ld_bank = Signal(9), Signal()
        ld_g_d, ld_bank_d = Signal(9), Signal()
        q_fh, q_rem = Signal(range(R)), Signal(16)      # filter row / entry of the weight row read
        q_fh_d, q_rem_d = Signal(range(R)), Signal(16)
        sp_addr = Signal(16)

        # -- ifmap line registers, two banks: the MAC steps use one while the next step's
        #    pixels land in the other. Channel c of every line is lane 0 during MAC step c.
        filling, fill_go = Signal(), Signal()
        fcnt, faddr, fbank = Signal(16), Signal(16), Signal()
        go_addr, go_bank = Signal(16), Signal()
        go_src = Signal()                        # the fill of src's first step (else insn's next)
        f_lines, f_lpitch = Signal(16), Signal(16)   # of the fill running
        y_land, y_bank_d = Signal(), Signal()
        y_idx_d = Signal(range(L))
        mac_issue, mac_land, clear = Signal(), Signal(), Signal()
        bank, use_bank = Signal(), Signal()   # bank of the MAC step issuing / of the MAC landing
        fill_last = filling & (fcnt == f_lines - 1)
        with m.If(fill_go):
            m.d.sync += [filling.eq(1), fcnt.eq(0), faddr.eq(go_addr), fbank.eq(go_bank),
                         f_lines.eq(Mux(go_src, lines_c, lines)), f_lpitch.eq(Mux(go_src, lpitch_c, lpitch))]
        with m.Elif(filling):
            m.d.sync += [fcnt.eq(fcnt + 1), faddr.eq(faddr + f_lpitch)]
            with m.If(fill_last):
                m.d.sync += filling.eq(0)
        m.d.comb += [self.ifmap.en.eq(filling), self.ifmap.addr.eq(faddr)]
        m.d.sync += [y_land.eq(filling), y_idx_d.eq(fcnt), y_bank_d.eq(fbank),
                     mac_land.eq(mac_issue), use_bank.eq(bank)]
        # (signals, not expressions: an expression is rebuilt at every use)
        lane0 = Signal(L * ab)
        line_regs = []
        for y in range(L):
            line = place(m, f"line_{y}", RSLine(R * ab, ab), self._blocks)
            m.d.comb += [line.data.eq(self.ifmap.data), line.land.eq(y_land & (y_idx_d == y)),
                         line.land_bank.eq(y_bank_d), line.shift.eq(mac_land), line.bank.eq(use_bank)]
            line_regs.append(line.lane0)
        m.d.comb += lane0.eq(Cat(line_regs))

        # -- the PE rows (RSRow): each its filter scratchpad and its C PEs ---------------------
        sp_waddr, sp_raddr = Signal(range(2 * RS_SPAD)), Signal(range(2 * RS_SPAD))
        m.d.comb += [sp_waddr.eq(Mux(ld_bank_d, RS_SPAD, 0) + q_rem_d),
                     sp_raddr.eq(Mux(sbank, RS_SPAD, 0) + sp_addr)]
        pe_rows = []
        for r in range(R):
            row = place(m, f"row_{r}", RSRow(C, L, ab, wb, acc_bits), self._blocks)
            m.d.comb += [row.wdata.eq(self.weight.data), row.lane.eq(ld_g_d + tset[r]),
                         row.spad_waddr.eq(sp_waddr),
                         row.spad_we.eq(w_land & (fh[r] == q_fh_d) & (tset[r] < nsets)),
                         row.spad_raddr.eq(sp_raddr), row.lines.eq(lane0), row.off.eq(off[r]),
                         row.lstep.eq(lstep), row.clear.eq(clear), row.mac_land.eq(mac_land)]
            pe_rows.append(row)

        x, fw, sp_base = Signal(16), Signal(8), Signal(16)   # the step (x, fw), its first spad entry
        # -- the column sums: the hold registers take the PE's sum of a column at its last MAC
        #    landing, so the WRITE of column x runs while the MACs of column x+1 go on in acc.
        col_end, col_end_land = Signal(), Signal()   # the last MAC issue / landing of a column
        m.d.sync += col_end_land.eq(col_end)
        for row in pe_rows:
            m.d.comb += row.hold.eq(col_end_land)

        # -- WRITE, out_h cycles from the cycle after a column's last MAC issue, alongside the
        #    next column's (or pass's) MACs: the column sums of PE column wr_j, set t -> lane
        #    wr_g0 + t.
        wr_active, wr_land = Signal(), Signal()
        wr_go = Signal()
        wr_j = Signal(range(C))
        wr_addr = Signal.like(self.psum_wr.addr)
        rd_addr = Signal(16)
        wcnt = Signal(16)
        wr_g0 = Signal.like(g0)   # the pass of the column being written (g0 moves on meanwhile)
        wr_g0_d = Signal.like(g0)
        # The WRITE's own copy of its GEMM's fields and row mapping, taken at wr_go: the
        # next GEMM's set-up replaces those while the last column of this one is written.
        wr_outh, wr_outw, wr_nlen, wr_nsets = Signal(16), Signal(16), Signal(16), Signal.like(nsets)
        wr_acc, wr_final = Signal(), Signal()   # wr_final: its GEMM's done comes from the WRITE
        wr_top = [Signal(name=f"wr_top_{r}") for r in range(R)]
        wr_lst = [Signal(name=f"wr_last_{r}") for r in range(R)]
        wr_tset = [Signal(range(R), name=f"wr_set_{r}") for r in range(R)]
        wr_final_go = Signal()
        wr_last = wr_active & (wcnt == wr_outh - 1)
        m.d.sync += [wr_land.eq(wr_active), wr_j.eq(wcnt), wr_addr.eq(rd_addr), wr_g0_d.eq(wr_g0)]
        with m.If(wr_active):
            m.d.sync += [wcnt.eq(wcnt + 1), rd_addr.eq(rd_addr + wr_outw)]
            with m.If(wr_last):
                m.d.sync += wr_active.eq(0)
        with m.If(wr_go):
            m.d.sync += [wr_active.eq(1), wcnt.eq(0), rd_addr.eq(insn.psum_row + x), wr_g0.eq(g0),
                         wr_outh.eq(insn.out_h), wr_outw.eq(insn.out_w), wr_nlen.eq(insn.n_len),
                         wr_nsets.eq(nsets), wr_acc.eq(insn.accumulate), wr_final.eq(wr_final_go)]
            m.d.sync += [wr_top[r].eq(fh[r] == 0) for r in range(R)]
            m.d.sync += [wr_lst[r].eq(last[r]) for r in range(R)]
            m.d.sync += [wr_tset[r].eq(tset[r]) for r in range(R)]
        # a GEMM whose last column's WRITE runs alongside the next GEMM: its done two cycles
        # after that WRITE's last read (as FLUSH, DONE otherwise)
        fin1, fin2 = Signal(), Signal()
        m.d.sync += [fin1.eq(wr_last & wr_final), fin2.eq(fin1)]
        chain = []
        for r in range(R):
            m.d.comb += pe_rows[r].col.eq(wr_j)
            here = pe_rows[r].out
            s = Signal(signed(acc_bits), name=f"vsum_{r}")
            m.d.comb += s.eq(here if r == 0 else (here + Mux(wr_top[r], 0, chain[r - 1]))[:acc_bits])
            chain.append(s)
        # (a signal: each lane's slice of the expression would lower the whole Mux again)
        old = Signal.like(self.psum_rd.data, name="old")
        m.d.comb += old.eq(Mux(wr_acc, self.psum_rd.data, 0))
        # the psum lane each row's set writes (tset + wr_g0_d), picked per lane (RSLane)
        tgt = [Signal(9, name=f"tgt_{r}") for r in range(R)]
        m.d.comb += [tgt[r].eq(wr_tset[r] + wr_g0_d) for r in range(R)]
        lanes, en = [], []
        for n in range(C):
            lane = place(m, f"lane_{n}", RSLane(R, acc_bits), self._blocks)
            m.d.comb += [lane.n.eq(n), lane.chain.eq(Cat(chain)), lane.tgt.eq(Cat(tgt)), lane.last.eq(Cat(wr_lst)),
                         lane.old.eq(old[n * acc_bits:(n + 1) * acc_bits])]
            lanes.append(lane.out)
            en.append((n >= wr_g0_d) & (n < wr_g0_d + wr_nsets) & (n < wr_nlen))
        m.d.comb += [self.psum_wr.addr.eq(wr_addr), self.psum_wr.data.eq(Cat(lanes)),
                     self.psum_rd.addr.eq(rd_addr), self.psum_rd.en.eq(wr_active & wr_acc)]
        with m.If(wr_land):
            m.d.comb += self.psum_wr.en.eq(Cat(en))

        # -- the loader: weight rows weight_row + q, q < wtot, one per cycle from the cycle
        #    after ld_go; each lands a cycle later in scratchpad bank ld_bank of the PE rows
        #    holding its filter row, lane ld_g + t for set t.
        q = Signal(16)
        ld_last = ld_active & (q == wtot - 1)
        m.d.comb += [self.weight.addr.eq(insn.weight_row + q), self.weight.en.eq(ld_active)]
        m.d.sync += [w_land.eq(ld_active), q_fh_d.eq(q_fh), q_rem_d.eq(q_rem), ld_g_d.eq(ld_g),
                     ld_bank_d.eq(ld_bank)]
        with m.If(ld_active):
            m.d.sync += [q.eq(q + 1), q_rem.eq(q_rem + 1)]
            with m.If(q_rem == fwk - 1):
                m.d.sync += [q_rem.eq(0), q_fh.eq(q_fh + 1)]
            with m.If(ld_last):
                m.d.sync += ld_active.eq(0)
        with m.If(ld_go):
            m.d.sync += [ld_active.eq(1), q.eq(0), q_fh.eq(0), q_rem.eq(0), ld_g.eq(ld_go_g),
                         ld_bank.eq(ld_go_bank)]

        # -- sequencing: steps (x, fw) of a pass; the MAC of a step runs while the filler
        #    brings the next step's pixels into the other bank.
        cnt = Signal(16)   # the cycle of a MAC step
        xbase, xoff = Signal(16), Signal(16)   # x * stride_w, xbase + fw * dil_w
        m.d.comb += sp_addr.eq(sp_base + cnt)
        last_fw, last_x = fw == insn.win_w - 1, x == insn.out_w - 1
        has_next = ~(last_fw & last_x)
        next_off = Mux(last_fw, xbase + insn.stride_w, xoff + insn.dil_w)

        ready = ~fill_go & (~filling | fill_last)   # the next step's pixels are in by next cycle
        # the next pass's filter rows: the loader's last read for them issues by this cycle
        next_free = (ld_g == g0 + nsets) & (~ld_active | ld_last)
        # the first pass: its MACs may start once the loader reads past the first entry of
        # the last filter row (a MAC step reads entry fw*k_len + c no earlier than the loader
        # lands it)
        first_ok = (ld_g != 0) | ~ld_active | (q > wtot - fwk)
        # the first pass's filter rows loaded: the second pass's follow at once
        with m.If(ld_last & (ld_g == 0) & (nsets < insn.n_len)):
            m.d.comb += [ld_go.eq(1), ld_go_g.eq(nsets), ld_go_bank.eq(~ld_bank)]

        # -- the next GEMM: taken during the current one's last pass (``early``, up to its
        #    last MAC cycle); see the module docstring ("Consecutive GEMMs")
        with m.If(early & ~nxt_valid):
            m.d.comb += self.insn.ready.eq(1)
            with m.If(self.insn.valid):
                m.d.sync += [insn_n.eq(self.insn.payload), nxt_valid.eq(1)]
        last_pass = g0 + nsets >= insn.n_len
        pre = Signal()     # the next GEMM's first step is being filled (from the last step on)
        pf = Signal()      # that fill starts now
        m.d.comb += self.done.eq(fin2)

        def to_mac():
            """The MAC of the (already advanced) next step, once its pixels are in."""
            m.d.sync += cnt.eq(0)
            with m.If(ready):
                m.next = "MAC"
            with m.Else():
                m.next = "WAIT"

        def first_step(g0_new, bank_new):
            """Pass g0_new (its filter rows in scratchpad bank bank_new from the next cycle):
            its first step (x, fw) = (0, 0) into line bank 0."""
            m.d.comb += [fill_go.eq(1), go_addr.eq(insn.ifmap_row), go_bank.eq(0)]
            m.d.sync += [x.eq(0), fw.eq(0), xbase.eq(0), xoff.eq(0), sp_base.eq(0),
                         bank.eq(0), cnt.eq(0), g0.eq(g0_new), sbank.eq(bank_new)]

        def start_pass(g0_new, bank_new):
            """A later pass g0_new: :func:`first_step` and the loading of the next pass's filter
            rows into the other scratchpad bank, if there is a next pass."""
            first_step(g0_new, bank_new)
            with m.If(g0_new + nsets < insn.n_len):
                m.d.comb += [ld_go.eq(1), ld_go_g.eq(g0_new + nsets), ld_go_bank.eq(~bank_new)]
            with m.Else():
                m.d.sync += early.eq(1)
            m.next = "FILL"

        def switch():
            """The current GEMM's last MAC cycle, the next one's first step filled or filling:
            the next GEMM becomes the current one (its set-up, its first pass's filter rows into
            the other scratchpad bank); the last column's WRITE goes on with its own copy."""
            m.d.comb += [setup.eq(1), wr_final_go.eq(1), take_next.eq(1),
                         ld_go.eq(1), ld_go_g.eq(0), ld_go_bank.eq(~sbank)]
            m.d.sync += [insn.eq(insn_n), nxt_valid.eq(0), pre.eq(0), early.eq(~nsets_lt),
                         x.eq(0), fw.eq(0), xbase.eq(0), xoff.eq(0), sp_base.eq(0), cnt.eq(0),
                         g0.eq(0), sbank.eq(~sbank)]
            m.next = "LOADW"

        with m.FSM() as fsm:
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, ok, (src.m_len == 0) | (src.n_len == 0)):
                # The first pass's filter rows and its first step's pixels load together.
                m.d.comb += [setup.eq(1), ld_go.eq(1), ld_go_g.eq(0), ld_go_bank.eq(0), go_src.eq(1)]
                m.d.sync += early.eq(~nsets_lt)
                first_step(0, 0)
                m.next = "LOADW"
            with m.State("LOADW"):
                # The first pass's first pixels and the start of its last filter row (later
                # passes' filter rows load during the pass before).
                m.d.comb += self.busy.eq(1)
                with m.If(ready & first_ok):
                    m.next = "MAC"
            with m.State("FILL"):
                m.d.comb += self.busy.eq(1)
                with m.If(fill_last):
                    m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += [self.busy.eq(1), mac_issue.eq(1),
                             use_next.eq(~has_next & last_pass)]   # (the GEMM's last step: src = insn_n)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == 0):
                    m.d.comb += clear.eq(fw == 0)   # a new output column
                    with m.If(has_next):
                        m.d.comb += [fill_go.eq(1), go_addr.eq(insn.ifmap_row + next_off),
                                     go_bank.eq(~bank)]
                    with m.Elif(last_pass):
                        # the GEMM's last step: the next GEMM's first step into the other line
                        # bank, if one is here, legal, not empty, and its first column cannot
                        # end before this GEMM's last WRITE (k_len' + 1 >= out_h)
                        with m.If(nxt_valid & src_ok & (insn_n.k_len + 1 >= insn.out_h)):
                            m.d.comb += [pf.eq(1), fill_go.eq(1), go_src.eq(1),
                                         go_addr.eq(insn_n.ifmap_row), go_bank.eq(~bank)]
                            m.d.sync += pre.eq(1)
                with m.If(cnt == insn.k_len - 1):
                    m.d.sync += bank.eq(~bank)
                    with m.If(last_fw):   # the end of output column x: its psums go out
                        m.d.comb += [col_end.eq(1), wr_go.eq(1)]
                        with m.If(~last_x):
                            # Its first step's pixels have been landing since this MAC step.
                            m.d.sync += [x.eq(x + 1), fw.eq(0), xbase.eq(xbase + insn.stride_w),
                                         xoff.eq(xbase + insn.stride_w), sp_base.eq(0)]
                            to_mac()
                        with m.Elif(g0 + nsets < insn.n_len):
                            with m.If(next_free):
                                start_pass(g0 + nsets, ~sbank)
                            with m.Else():
                                m.next = "NEXTW"
                        with m.Elif(pre | pf):
                            switch()
                        with m.Else():
                            m.d.sync += early.eq(0)
                            m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += [fw.eq(fw + 1), xoff.eq(next_off), sp_base.eq(sp_base + insn.k_len)]
                        to_mac()
            with m.State("WAIT"):
                # The next step's pixels are still landing.
                m.d.comb += self.busy.eq(1)
                with m.If(ready):
                    m.next = "MAC"
            with m.State("DRAIN"):
                # The last column's WRITE.
                m.d.comb += self.busy.eq(1)
                with m.If(wr_last):
                    m.next = "FLUSH"
            with m.State("NEXTW"):
                # The next pass's filter rows are still loading (win_h*win_w*k_len > the pass).
                m.d.comb += self.busy.eq(1)
                with m.If(next_free):
                    start_pass(g0 + nsets, ~sbank)
            with m.State("FLUSH"):
                m.d.comb += self.busy.eq(1)
                m.next = "DONE"
            with m.State("DONE"):
                # done; a next GEMM taken meanwhile goes to CHECK at once
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                with m.If(nxt_valid):
                    m.d.comb += take_next.eq(1)
                    m.d.sync += [insn.eq(insn_n), nxt_valid.eq(0)]
                    m.next = "CHECK"
                with m.Else():
                    m.next = "IDLE"
        m.d.comb += idle.eq(fsm.ongoing("IDLE"))
        return m
