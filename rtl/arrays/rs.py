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
  set's channel in a scratchpad (:data:`~celosia.rtl.config.RS_SPAD` entries, one
  per PE row since all PEs of a row hold the same filter row), loaded once per pass;
* ifmap rows are reused diagonally: the ``rs_lines`` line registers hold one
  pixel (``k_len`` channels) of every ifmap line the window touches, and PE
  ``(r, j)`` reads line ``j*stride_h + fh*dil_h`` -- the PEs on a diagonal share a
  line, and a stride skips lines;
* psums go vertically: the ``win_h`` PEs of a set in column ``j`` are summed
  (a chain up the column) into output row ``j``'s psum for the set's channel.

The compiler folds a larger logical set (docs/dataflows.md): filter rows beyond
``rows`` (or beyond the scratchpad / weight buffer) into several accumulating
GEMMs, output rows beyond ``cols`` into several output tiles. A fully connected
layer maps as a convolution whose "filter rows" are ``k_len``-feature lines of
the input vector (Eyeriss's FC mapping, ``out_h`` = samples).

Operation and timing (cycle 0 = the cycle ``insn.valid & insn.ready``): cycle 1
CHECK (:func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`; ``m_len = 0`` or
``n_len = 0`` -> ``done``), cycle 2 SETUP (per-row filter row / set and per-PE
line index registered). Then for each pass ``g``:

* LOADW, ``win_h*win_w*k_len`` cycles: weight rows ``weight_row + q`` are read,
  one per cycle; each lands in the scratchpads of the PE rows holding its filter
  row (lane ``g*S + t`` for set ``t``);
* for each output column ``x < out_w`` and filter column ``fw < win_w``:
  FILL, ``lines`` cycles (``lines = (out_h-1)*stride_h + (win_h-1)*dil_h + 1``):
  ifmap row ``ifmap_row + y*row_pitch + x*stride_w + fw*dil_w`` into line ``y``;
  MAC, ``k_len`` cycles: scratchpad entry ``fw*k_len + c`` is read and one cycle
  later every PE multiplies it with channel ``c`` of its line;
* after the ``win_w`` steps of column ``x``, WRITE, ``out_h`` cycles: psum row
  ``psum_row + j*out_w + x`` is read (if ``accumulate``) and written one cycle later,
  lanes ``g*S .. g*S+S-1`` (below ``n_len``) from the column sums of PE column ``j``.

So with ``G = ceil(n_len / S)`` passes, ``done`` pulses in cycle
``4 + G * (win_h*win_w*k_len + out_w * (win_w * (lines + k_len) + out_h))``; the
next instruction can be accepted the cycle after.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib.memory import Memory

from celosia.rtl import isa
from celosia.rtl.arrays.engine import ComputeEngine, gemm_insn_in_range, insn_check_state
from celosia.rtl.config import RS_SPAD
from celosia.rtl.dma import accept_state

__all__ = ["RSArray"]


class RSArray(ComputeEngine):
    """Row-stationary engine implementing :class:`ComputeEngineSignature` for windowed
    GEMMs (see the module docstring for the mapping and the timing)."""

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C, L = cfg.rows, cfg.cols, cfg.rs_lines
        ab, wb, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        insn = Signal(isa.GemmInsn)

        # -- mapping of the logical set onto the rows (combinational from insn, registered
        #    in SETUP): filter row fh, set t, first line offset fh*dil_h, last row of a set.
        fh_c = [Signal(range(R), name=f"fh_c_{r}") for r in range(R)]
        set_c = [Signal(range(R), name=f"set_c_{r}") for r in range(R)]
        off_c = [Signal(16, name=f"off_c_{r}") for r in range(R)]
        for r in range(1, R):
            wrap = fh_c[r - 1] == insn.win_h - 1
            m.d.comb += [fh_c[r].eq(Mux(wrap, 0, fh_c[r - 1] + 1)),
                         set_c[r].eq(set_c[r - 1] + wrap),
                         off_c[r].eq(Mux(wrap, 0, off_c[r - 1] + insn.dil_h))]
        nsets_c = set_c[R - 1] + (fh_c[R - 1] == insn.win_h - 1)
        col_c = [Signal(16, name=f"col_c_{j}") for j in range(C)]
        for j in range(1, C):
            m.d.comb += col_c[j].eq(col_c[j - 1] + insn.stride_h)

        fh = [Signal(range(R), name=f"fh_{r}") for r in range(R)]
        tset = [Signal(range(R), name=f"set_{r}") for r in range(R)]
        last = [Signal(name=f"last_{r}") for r in range(R)]
        nsets = Signal(range(R + 1))
        line = [[Signal(range(L), name=f"line_{r}_{j}") for j in range(C)] for r in range(R)]
        setup = Signal()
        with m.If(setup):
            m.d.sync += nsets.eq(nsets_c)
            for r in range(R):
                m.d.sync += [fh[r].eq(fh_c[r]), tset[r].eq(set_c[r]),
                             last[r].eq(fh_c[r] == insn.win_h - 1)]
                for j in range(C):
                    m.d.sync += line[r][j].eq(off_c[r] + col_c[j])

        lines = Signal(16)   # ifmap lines of the window
        fwk = Signal(16)     # scratchpad entries per filter row: win_w * k_len
        wtot = Signal(16)    # weight rows of the instruction: win_h * fwk
        with m.If(setup):
            m.d.sync += [lines.eq((insn.out_h - 1) * insn.stride_h + (insn.win_h - 1) * insn.dil_h + 1),
                         fwk.eq(insn.win_w * insn.k_len),
                         wtot.eq(insn.win_h * insn.win_w * insn.k_len)]

        # -- filter scratchpads, one per PE row ---------------------------------------------
        g0 = Signal(8)                      # first output channel of the pass (g*S)
        w_land = Signal()
        q_fh, q_rem = Signal(range(R)), Signal(16)      # filter row / entry of the weight row read
        q_fh_d, q_rem_d = Signal(range(R)), Signal(16)
        w_lanes = Array(self.weight.data[n * wb:(n + 1) * wb] for n in range(C))
        sp_addr = Signal(16)
        spads = []
        for r in range(R):
            mem = Memory(shape=wb, depth=RS_SPAD, init=[])
            m.submodules[f"spad_{r}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(q_rem_d), wp.data.eq(w_lanes[g0 + tset[r]]),
                         wp.en.eq(w_land & (fh[r] == q_fh_d) & (tset[r] < nsets)),
                         rp.addr.eq(sp_addr)]
            spads.append(rp.data.as_signed())

        # -- ifmap line registers: channel c of every line is lane 0 during MAC step c --------
        ylines = [Signal(R * ab, name=f"y_{y}") for y in range(L)]
        y_land = Signal()
        y_idx, y_idx_d = Signal(range(L)), Signal(range(L))
        mac_issue, mac_land, clear = Signal(), Signal(), Signal()
        m.d.sync += [w_land.eq(0), y_land.eq(0), mac_land.eq(mac_issue), y_idx_d.eq(y_idx),
                     q_fh_d.eq(q_fh), q_rem_d.eq(q_rem)]
        for y in range(L):
            with m.If(y_land & (y_idx_d == y)):
                m.d.sync += ylines[y].eq(self.ifmap.data)
            with m.Elif(mac_land):
                m.d.sync += ylines[y].eq(ylines[y] >> ab)
        lane0 = Array(ylines[y][:ab].as_signed() for y in range(L))

        # -- the PEs -------------------------------------------------------------------------
        acc = [[Signal(signed(acc_bits), name=f"acc_{r}_{j}") for j in range(C)] for r in range(R)]
        for r in range(R):
            for j in range(C):
                with m.If(clear):
                    m.d.sync += acc[r][j].eq(0)
                with m.Elif(mac_land):
                    m.d.sync += acc[r][j].eq(acc[r][j] + lane0[line[r][j]] * spads[r])  # wraps

        # -- WRITE: the column sums of PE column wr_j, set t -> lane g0 + t -----------------------
        wr_issue, wr_land = Signal(), Signal()
        wr_j = Signal(range(C))
        wr_addr = Signal.like(self.psum_wr.addr)
        rd_addr = Signal(16)
        cnt = Signal(16)
        wr_g0 = Signal.like(g0)  # the pass of the psum row in flight (g0 moves on at the last issue)
        m.d.sync += [wr_land.eq(wr_issue), wr_j.eq(cnt), wr_addr.eq(rd_addr), wr_g0.eq(g0)]
        chain = []
        for r in range(R):
            here = Array(acc[r])[wr_j]
            s = Signal(signed(acc_bits), name=f"vsum_{r}")
            m.d.comb += s.eq(here if r == 0 else (here + Mux(fh[r] == 0, 0, chain[r - 1]))[:acc_bits])
            chain.append(s)
        old = Mux(insn.accumulate, self.psum_rd.data, 0)
        lanes, en = [], []
        for n in range(C):
            pick = [last[r] & (tset[r] + wr_g0 == n) for r in range(R)]
            val = Signal(signed(acc_bits), name=f"out_{n}")
            m.d.comb += val.eq(sum(Mux(pick[r], chain[r], 0) for r in range(R))[:acc_bits])
            lanes.append((val + old[n * acc_bits:(n + 1) * acc_bits].as_signed())[:acc_bits])
            en.append((n >= wr_g0) & (n < wr_g0 + nsets) & (n < insn.n_len))
        m.d.comb += [self.psum_wr.addr.eq(wr_addr), self.psum_wr.data.eq(Cat(lanes)),
                     self.psum_rd.addr.eq(rd_addr), self.psum_rd.en.eq(wr_issue & insn.accumulate)]
        with m.If(wr_land):
            m.d.comb += self.psum_wr.en.eq(Cat(en))

        # -- sequencing ------------------------------------------------------------------------
        q = Signal(16)
        x, xoff, fw, sp_base = Signal(16), Signal(16), Signal(8), Signal(16)
        y_addr = Signal(16)
        m.d.comb += [self.weight.addr.eq(insn.weight_row + q), self.ifmap.addr.eq(y_addr),
                     sp_addr.eq(sp_base + cnt)]
        xbase = Signal(16)  # x * stride_w

        def start_column(col_base):
            """Next state FILL for the first filter column of output column ``x``."""
            m.d.sync += [xbase.eq(col_base), xoff.eq(col_base), fw.eq(0), sp_base.eq(0), cnt.eq(0),
                         y_addr.eq(insn.ifmap_row + col_base)]
            m.next = "FILL"

        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, gemm_insn_in_range(insn, cfg),
                                  (insn.m_len == 0) | (insn.n_len == 0)):
                m.d.comb += setup.eq(1)
                m.d.sync += g0.eq(0)
                m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [q.eq(0), q_fh.eq(0), q_rem.eq(0)]
                m.next = "LOADW"
            with m.State("LOADW"):
                m.d.comb += [self.busy.eq(1), self.weight.en.eq(1)]
                m.d.sync += [w_land.eq(1), q.eq(q + 1), q_rem.eq(q_rem + 1), x.eq(0)]
                with m.If(q_rem == fwk - 1):
                    m.d.sync += [q_rem.eq(0), q_fh.eq(q_fh + 1)]
                with m.If(q == wtot - 1):
                    start_column(0)
            with m.State("FILL"):
                m.d.comb += [self.busy.eq(1), self.ifmap.en.eq(1), y_idx.eq(cnt)]
                with m.If((cnt == 0) & (fw == 0)):
                    m.d.comb += clear.eq(1)
                m.d.sync += [y_land.eq(1), cnt.eq(cnt + 1), y_addr.eq(y_addr + insn.row_pitch)]
                with m.If(cnt == lines - 1):
                    m.d.sync += cnt.eq(0)
                    m.next = "MAC"
            with m.State("MAC"):
                m.d.comb += [self.busy.eq(1), mac_issue.eq(1)]
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == insn.k_len - 1):
                    m.d.sync += cnt.eq(0)
                    with m.If(fw == insn.win_w - 1):
                        m.d.sync += rd_addr.eq(insn.psum_row + x)
                        m.next = "WRITE"
                    with m.Else():
                        nxt = xoff + insn.dil_w
                        m.d.sync += [fw.eq(fw + 1), xoff.eq(nxt), sp_base.eq(sp_base + insn.k_len),
                                     y_addr.eq(insn.ifmap_row + nxt)]
                        m.next = "FILL"
            with m.State("WRITE"):
                m.d.comb += [self.busy.eq(1), wr_issue.eq(1)]
                m.d.sync += [cnt.eq(cnt + 1), rd_addr.eq(rd_addr + insn.out_w)]
                with m.If(cnt == insn.out_h - 1):
                    m.d.sync += cnt.eq(0)
                    with m.If(x != insn.out_w - 1):
                        m.d.sync += x.eq(x + 1)
                        start_column(xbase + insn.stride_w)
                    with m.Elif(g0 + nsets < insn.n_len):
                        m.d.sync += [g0.eq(g0 + nsets), q.eq(0), q_fh.eq(0), q_rem.eq(0)]
                        m.next = "LOADW"
                    with m.Else():
                        m.next = "FLUSH"
            with m.State("FLUSH"):
                # The last psum row is written in this cycle; done the next.
                m.d.comb += self.busy.eq(1)
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        return m
