"""FEIE ("Fast Efficient Inference Engine") PE-row core, with optional zero skipping.

Source: the seed document ``/work/shared/seeds/003_22a9a7a7ade5ad2b.txt``,
sections "# Fast Efficient Inference Engine (FEIE)" (lines 588-1110) and
"# Skipping Noncontributory Computations in FEIE" (lines 1137-1197). The seed
example convolves a 2x8 input (X1..X8 / X9..X16) with a 1x3 filter (W1..W3)
into 2x6 psums (#1..#6 / #7..#12), using 3 PEs.

What the seed states (line numbers in the seed):

* 605-632: one input pixel per clock cycle (CC #k reads Xk), "Inputs are
  shared among all PEs" (broadcast), "Weights are multiplexed and passed to
  each PE using shift registers", "The width of weight vector and the stride
  denote the number of required PEs (which is 3 in this example)".
* 663: "Input pixels are read sequentially".
* 718: "The first partial sum is ready after 3 clock cycles"; 719: the next
  ones follow one per cycle, pipelined.
* 833: "there will be two pipeline stalls to accommodate the input row change".
* 1077-1095 (the last, complete dense table): 16 cycles CC #1..#16, psum #12
  receives W3 (its last product) in CC #16; 1164: "Performing computations on
  dense model requires 16 clock cycles!".
* 1139-1160: the sparse example, X6..X11 = 0 (row 1 = X1..X5,0,0,0; row 2 =
  0,0,0,X12..X16); 1170-1182: with skipping, CC #1..#5 read X1..X5 and CC
  #6..#10 read X12..X16: 10 cycles. The header of that table (line 1172) has
  no columns #6 and #7: those psums cover only zeros and are never computed
  (line 1157 shows them as 0).

Derived per-cycle behaviour (0-based: pixel column ``c`` of row ``r``, psum
``j`` of a row covers columns ``j .. j+F-1``; F = filter width, P = n_pe):

* psum ``j`` of every row is held by PE ``j mod P`` (row 1 of the seed: #1,#4
  in PE0, #2,#5 in PE1, #3,#6 in PE2; the same for row 2 since 6 mod 3 = 0);
* when column ``c`` is broadcast, PE ``p`` multiplies it with weight
  ``(c - p) mod P`` (W1 = weight 0) if that index is ``< F`` and the psum
  ``j = c - ((c - p) mod P)`` exists (``0 <= j <= row_width - F``). This is
  the seed's diagonal: in CC #k (row 1) psum #n gets W(k-n+1), e.g. CC #3 gives
  W3/W2/W1 to #1/#2/#3 (line 1080). Equivalently slot ``p`` of a circular
  weight shift register of P slots that advances by one slot per column and is
  re-aligned at each row start; it is implemented as the equivalent mux on
  ``c mod P`` because with zero skipping the column can advance by more than
  one per cycle.
* a psum is complete after the product with its last weight (column ``j+F-1``).
  Dense, seed example: psum #n (row 1) completes in CC #n+2 (#1 in CC #3 -- "ready
  after 3 clock cycles", #6 in CC #8), psum #6+n (row 2) in CC #8+n+2 (#7 in
  CC #11, #12 in CC #16). CC #9 and #10 complete nothing: these are the two
  row-change stalls of line 833 (the new row refills the F-1 = 2 deep
  pipeline). They are idle *output* slots, not extra cycles: 2 (fill) + 12
  psums + 2 (stalls) = 16 cycles = one per input pixel.

The seed tables for row 2 are garbled in places (e.g. lines 1084-1093 give CC
#12 and #13 the same row and line 1178 gives X12 the psums #4/#5/#8, which is
not the convolution); the rule above is row 1's pattern (lines 1078-1085),
applied to row 2 shifted by 8 cycles, and is the one consistent with the
convolution, with the 16-cycle total and with psum #12 finishing in CC #16.

Zero skipping (``zero_skip = 1``): zero pixels take no broadcast cycle. The
pixels arrive ``lanes`` per stream beat (default 8 int8 = the seed's 64-bit
memory interface, line 603); the core broadcasts the lanes of a word one per
cycle, lowest lane first, and with ``zero_skip`` only the non-zero ones (a
priority encoder picks the next one, so skipped zeros cost nothing; the next
word is accepted in the cycle of the word's last broadcast). Because the column
may jump, a psum whose remaining columns were all zero cannot complete on its
last weight; it completes lazily at the first broadcast past its window (or a
new row, or the end of the run). Psums whose window is all zero are never
started and never emitted (the seed's #6/#7): the consumer must treat missing
output indices as 0. In the seed example this gives CC #1..#5 = X1..X5 and CC
#6..#10 = X12..X16: 10 cycles, ``zero_skips`` = 6.

Outputs: each PE pushes completed psums into its own 2-entry queue (at most
two per cycle: a lazily completed one and one completing on its last weight);
the ``out`` stream presents the queue head with the smallest output index.
A broadcast (or the end-of-run flush) waits while a PE's queue would overflow,
so backpressure on ``out`` stalls the core; with ``out.ready`` held high the
dense run never stalls.

Parameters
----------
n_pe : int -- number of PEs (``>= filter_width``; the seed uses 3).
filter_width : int -- F, filter taps (stride 1).
row_width : int -- pixels per input row (a multiple of ``lanes``).
n_rows : int -- input rows per run.
lanes : int -- int8 pixels per input stream beat.

Ports
-----
wload : In(stream.Signature(signed(8)))
    Weight load, ready only while idle: each beat shifts a weight in; the last
    F beats are W1..WF in this order.
pixels : In(stream.Signature(ArrayLayout(signed(8), lanes)))
    Input words, row-major, lane 0 = lowest column. A run is exactly
    ``n_rows * row_width / lanes`` beats; the first beat accepted while idle
    starts a run. Ready while idle, and during a run when the word buffer is
    empty or its last pending pixel is broadcast in this cycle.
out : Out(stream.Signature(StructLayout({"index": unsigned, "value": signed(32)})))
    Completed psums; ``index = row * (row_width - F + 1) + j``. ``value`` is the
    int32 (wrapping) sum of ``pixel * weight``. A psum completing (last product)
    in cycle t is valid from cycle t+1 (registered).
zero_skip : In(1)
    Skip zero pixels; hold it stable during a run.
zero_skips : Out(32)
    Zero pixels skipped in the current / last run (reset when a run starts).
cycles : Out(32)
    Run length: cycles from CC #1 (the cycle after the first word is accepted)
    through the cycle the last pixel of the run is broadcast (or its word
    consumed), stalls included; it excludes the final flush / output drain.
busy : Out(1)
    High from the cycle after the first word is accepted until every psum has
    left through ``out``.
bcast : Out(1), bcast_row, bcast_col : Out(...), bcast_data : Out(signed(8))
    Observation of the broadcast bus: high / position / pixel in a cycle in
    which a pixel is broadcast to the PEs.

Timing (dense, seed example, ``out.ready`` high, words supplied back to back):
the first word is accepted in cycle 0; CC #k (cycle k) broadcasts Xk,
k = 1..16; psums complete in CC #3..#8 and #11..#16 and are valid on ``out``
one cycle later; ``cycles`` ends at 16.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FEIECore"]

_IDLE, _RUN, _FLUSH, _DRAIN = range(4)


class FEIECore(wiring.Component):
    """FEIE PE row (see the module docstring for the derived cycle behaviour)."""

    def __init__(self, n_pe=3, filter_width=3, row_width=8, n_rows=2, lanes=8):
        if filter_width < 1 or n_pe < filter_width:
            raise ValueError("need 1 <= filter_width <= n_pe")
        if row_width < filter_width or n_rows < 1:
            raise ValueError("need row_width >= filter_width and n_rows >= 1")
        if lanes < 1 or row_width % lanes:
            raise ValueError("row_width must be a multiple of lanes")
        self.n_pe = n_pe
        self.filter_width = filter_width
        self.row_width = row_width
        self.n_rows = n_rows
        self.lanes = lanes
        self.out_width = row_width - filter_width + 1
        self.n_out = n_rows * self.out_width
        self.words_per_row = row_width // lanes
        self.n_words = n_rows * self.words_per_row
        self.out_layout = data.StructLayout({
            "index": unsigned(max(1, (self.n_out - 1).bit_length())),
            "value": signed(32),
        })
        super().__init__({
            "wload": In(stream.Signature(signed(8))),
            "pixels": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "out": Out(stream.Signature(self.out_layout)),
            "zero_skip": In(1),
            "zero_skips": Out(32),
            "cycles": Out(32),
            "busy": Out(1),
            "bcast": Out(1),
            "bcast_row": Out(range(n_rows)),
            "bcast_col": Out(range(row_width)),
            "bcast_data": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        P, F, W, L = self.n_pe, self.filter_width, self.row_width, self.lanes
        idx_shape = self.out_layout["index"].shape

        phase = Signal(range(4), init=_IDLE)
        m.d.comb += self.busy.eq(phase != _IDLE)

        # -- weights: a shift chain loaded through ``wload`` (while idle) --
        wreg = [Signal(signed(8), name=f"w{i}") for i in range(F)]
        m.d.comb += self.wload.ready.eq(phase == _IDLE)
        with m.If(self.wload.valid & self.wload.ready):
            for i in range(F - 1):
                m.d.sync += wreg[i].eq(wreg[i + 1])
            m.d.sync += wreg[F - 1].eq(self.wload.payload)
        wsel_arr = Array(wreg)

        # -- input word buffer --
        buf = [Signal(signed(8), name=f"buf{i}") for i in range(L)]
        mask = Signal(L)                       # lanes still to broadcast
        b_row = Signal(range(self.n_rows))
        b_colbase = Signal(range(W))
        in_row = Signal(range(self.n_rows))    # position of the next word
        in_wcol = Signal(range(self.words_per_row))
        words_in = Signal(range(self.n_words + 1))

        has = Signal()
        lane = Signal(range(L))
        m.d.comb += has.eq(mask.any())
        for l in reversed(range(L)):           # lowest pending lane wins
            with m.If(mask[l]):
                m.d.comb += lane.eq(l)
        mask_rest = Signal(L)
        m.d.comb += mask_rest.eq(mask & (mask - 1))
        last = Signal()
        m.d.comb += last.eq(mask_rest == 0)

        x = Signal(signed(8))
        c = Signal(range(W))
        r = Signal(range(self.n_rows))
        m.d.comb += [x.eq(Array(buf)[lane]), c.eq(b_colbase + lane), r.eq(b_row)]
        cmod = Signal(range(P))
        m.d.comb += cmod.eq(c % P)

        mode_bc = Signal()
        mode_fl = Signal()
        m.d.comb += [mode_bc.eq((phase == _RUN) & has), mode_fl.eq(phase == _FLUSH)]

        # -- PEs --
        pes = []
        for p in range(P):
            pe = dict(
                act=Signal(name=f"pe{p}_act"),
                row=Signal(range(self.n_rows), name=f"pe{p}_row"),
                j=Signal(range(self.out_width), name=f"pe{p}_j"),
                acc=Signal(signed(32), name=f"pe{p}_acc"),
                qv=[Signal(name=f"pe{p}_qv{k}") for k in range(2)],
                qi=[Signal(idx_shape, name=f"pe{p}_qi{k}") for k in range(2)],
                qd=[Signal(signed(32), name=f"pe{p}_qd{k}") for k in range(2)],
            )
            w = Signal(range(P), name=f"pe{p}_widx")
            m.d.comb += w.eq(Mux(cmod >= p, cmod - p, cmod + (P - p)))
            j = Signal(signed(len(c) + 1), name=f"pe{p}_jnew")
            m.d.comb += j.eq(c - w)
            contrib = Signal(name=f"pe{p}_contrib")
            m.d.comb += contrib.eq((w < F) & (j >= 0) & (j <= self.out_width - 1))
            stale_bc = Signal(name=f"pe{p}_stale")
            m.d.comb += stale_bc.eq(pe["act"] & ((pe["row"] != r) | (pe["j"] + (F - 1) < c)))
            same = Signal(name=f"pe{p}_same")
            m.d.comb += same.eq(pe["act"] & ~stale_bc)
            prod = Signal(signed(16), name=f"pe{p}_prod")
            m.d.comb += prod.eq(x * wsel_arr[w])
            new_acc = Signal(signed(32), name=f"pe{p}_newacc")
            m.d.comb += new_acc.eq(Mux(same, pe["acc"], 0) + prod)
            eager = Signal(name=f"pe{p}_eager")
            m.d.comb += eager.eq(contrib & (w == F - 1))
            sa = Signal(name=f"pe{p}_sa")   # push the held psum (completed lazily)
            sb = Signal(name=f"pe{p}_sb")   # push the psum completing on its last weight
            m.d.comb += [
                sa.eq(Mux(mode_bc, stale_bc, mode_fl & pe["act"])),
                sb.eq(mode_bc & eager),
            ]
            pe.update(w=w, j_new=j, contrib=contrib, new_acc=new_acc, eager=eager, sa=sa, sb=sb,
                      pop=Signal(name=f"pe{p}_pop"))
            pes.append(pe)

        # -- output arbiter: the queue head with the smallest index --
        best_v, best_i, best_d = Const(0, 1), Const(0, idx_shape), Const(0, signed(32))
        sels = []
        for p, pe in enumerate(pes):
            take = Signal(name=f"pe{p}_take")
            m.d.comb += take.eq(pe["qv"][0] & (~best_v | (pe["qi"][0] < best_i)))
            nv, ni, nd = Signal(name=f"arb{p}_v"), Signal(idx_shape, name=f"arb{p}_i"), \
                Signal(signed(32), name=f"arb{p}_d")
            m.d.comb += [nv.eq(best_v | pe["qv"][0]), ni.eq(Mux(take, pe["qi"][0], best_i)),
                         nd.eq(Mux(take, pe["qd"][0], best_d))]
            sels.append(take)
            best_v, best_i, best_d = nv, ni, nd
        # ``take`` of a later PE overrides earlier ones: the winner is the last taker.
        winner = Signal(range(P))
        for p in range(P):
            with m.If(sels[p]):
                m.d.comb += winner.eq(p)
        m.d.comb += [self.out.valid.eq(best_v), self.out.payload.index.eq(best_i),
                     self.out.payload.value.eq(best_d)]
        out_fire = Signal()
        m.d.comb += out_fire.eq(self.out.valid & self.out.ready)
        for p, pe in enumerate(pes):
            m.d.comb += pe["pop"].eq(out_fire & (winner == p))

        # -- queue space: every PE must fit its pushes --
        oks = []
        for p, pe in enumerate(pes):
            ok = Signal(name=f"pe{p}_ok")
            m.d.comb += ok.eq(pe["qv"][0] + pe["qv"][1] + pe["sa"] + pe["sb"] <= 2 + pe["pop"])
            oks.append(ok)
        space_ok = Signal()
        m.d.comb += space_ok.eq(Cat(*oks).all())
        go_bc = Signal()
        go_fl = Signal()
        m.d.comb += [go_bc.eq(mode_bc & space_ok), go_fl.eq(mode_fl & space_ok)]
        go = go_bc | go_fl

        m.d.comb += [self.bcast.eq(go_bc), self.bcast_row.eq(r), self.bcast_col.eq(c),
                     self.bcast_data.eq(x)]

        # -- PE state and queue updates --
        for p, pe in enumerate(pes):
            # pop first
            v0 = Signal(name=f"pe{p}_v0p")
            v1 = Signal(name=f"pe{p}_v1p")
            m.d.comb += [v0.eq(Mux(pe["pop"], pe["qv"][1], pe["qv"][0])),
                         v1.eq(Mux(pe["pop"], 0, pe["qv"][1]))]
            with m.If(pe["pop"]):
                m.d.sync += [pe["qv"][0].eq(pe["qv"][1]), pe["qi"][0].eq(pe["qi"][1]),
                             pe["qd"][0].eq(pe["qd"][1]), pe["qv"][1].eq(0)]
            idx_a = Signal(idx_shape, name=f"pe{p}_idxa")
            idx_b = Signal(idx_shape, name=f"pe{p}_idxb")
            m.d.comb += [idx_a.eq(pe["row"] * self.out_width + pe["j"]),
                         idx_b.eq(r * self.out_width + pe["j_new"][:len(pe["j"])])]
            first_i = Signal(idx_shape, name=f"pe{p}_fi")
            first_d = Signal(signed(32), name=f"pe{p}_fd")
            m.d.comb += [first_i.eq(Mux(pe["sa"], idx_a, idx_b)),
                         first_d.eq(Mux(pe["sa"], pe["acc"], pe["new_acc"]))]
            with m.If(go & (pe["sa"] | pe["sb"])):
                with m.If(~v0):
                    m.d.sync += [pe["qv"][0].eq(1), pe["qi"][0].eq(first_i), pe["qd"][0].eq(first_d)]
                    with m.If(pe["sa"] & pe["sb"]):
                        m.d.sync += [pe["qv"][1].eq(1), pe["qi"][1].eq(idx_b),
                                     pe["qd"][1].eq(pe["new_acc"])]
                with m.Else():
                    m.d.sync += [pe["qv"][1].eq(1), pe["qi"][1].eq(first_i), pe["qd"][1].eq(first_d)]
            # accumulator
            with m.If(go_bc):
                with m.If(pe["contrib"] & ~pe["eager"]):
                    m.d.sync += [pe["act"].eq(1), pe["acc"].eq(pe["new_acc"]), pe["row"].eq(r),
                                 pe["j"].eq(pe["j_new"][:len(pe["j"])])]
                with m.Elif(pe["sa"] | pe["eager"]):
                    m.d.sync += pe["act"].eq(0)
            with m.If(go_fl):
                m.d.sync += pe["act"].eq(0)

        # -- input acceptance, counters, phases --
        in_done = Signal()
        m.d.comb += in_done.eq(words_in == self.n_words)
        with m.Switch(phase):
            with m.Case(_IDLE):
                m.d.comb += self.pixels.ready.eq(1)
            with m.Case(_RUN):
                m.d.comb += self.pixels.ready.eq(~in_done & (~has | (go_bc & last)))
        with m.If(go_bc):
            m.d.sync += mask.eq(mask_rest)

        words = self.pixels.payload
        nz = Signal(L)
        m.d.comb += nz.eq(Cat(*(words[l] != 0 for l in range(L))))
        zeros = Signal(range(L + 1))
        m.d.comb += zeros.eq(sum((words[l] == 0) for l in range(L)))
        with m.If(self.pixels.valid & self.pixels.ready):
            m.d.sync += [mask.eq(Mux(self.zero_skip, nz, (1 << L) - 1)), b_row.eq(in_row),
                         b_colbase.eq(in_wcol * L)]
            for l in range(L):
                m.d.sync += buf[l].eq(words[l])
            with m.If(in_wcol == self.words_per_row - 1):
                m.d.sync += [in_wcol.eq(0), in_row.eq(Mux(in_row == self.n_rows - 1, 0, in_row + 1))]
            with m.Else():
                m.d.sync += in_wcol.eq(in_wcol + 1)
            skipped = Mux(self.zero_skip, zeros, 0)
            with m.If(phase == _IDLE):
                m.d.sync += [phase.eq(_RUN), words_in.eq(1), self.cycles.eq(0),
                             self.zero_skips.eq(skipped)]
            with m.Else():
                m.d.sync += [words_in.eq(words_in + 1), self.zero_skips.eq(self.zero_skips + skipped)]

        with m.If(phase == _RUN):
            with m.If(has | ~in_done):
                m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.Else():
                m.d.sync += phase.eq(_FLUSH)
        with m.If(go_fl):
            m.d.sync += phase.eq(_DRAIN)
        with m.If(phase == _DRAIN):
            pending = Cat(*(pe["qv"][k] for pe in pes for k in range(2)))
            # idle once the queues are empty (the cycle after the last psum left)
            with m.If(~pending.any()):
                m.d.sync += phase.eq(_IDLE)
        return m
