"""The window address generator of the plain-GEMM engines ws and os (feie, whose groups
walk their own pixels, computes the same rows per group: rtl/arrays/feie.py).

It sits on the ifmap-buffer read path and turns the row index ``m`` of a GEMM into the
buffer row the engine reads, so that a convolution's windows are formed on chip from raw
ifmap rows (loaded once) instead of the DMA gathering a copy of the input per kernel tap
(im2col). For a windowed GEMM of one kernel tap (:data:`~celosia.rtl.isa.GemmInsn`,
``window = 1``, ``win_h = win_w = 1``; the compiler folds the tap offset
``fh*dil_h*row_pitch + fw*dil_w`` into ``ifmap_row``), row ``m = e*out_w + x`` is::

    ifmap_row + e*stride_h*row_pitch + x*stride_w

and for a plain GEMM (``window = 0``) it is ``ifmap_row + m``. :func:`window_rows` is the
same mapping in NumPy (any window tap), the reference of the ISA simulator and of the
tests.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa

__all__ = ["WindowAddr", "window_rows"]


class WindowAddr(wiring.Component):
    """Ifmap row address of each ``m`` of a GEMM, in order ``m = 0, 1, ...``, incrementally.

    The engines read a GEMM's rows in increasing ``m`` (ws streams them one per cycle, os
    FILLs them block by block, with pauses in between); the generator advances by
    one row each time the engine reads the row it shows. Per row it uses a comparator and
    two adders (next column: ``+ stride_w``; next output row: ``line + stride_h*row_pitch``),
    no multiplier: the product ``stride_h * row_pitch`` is registered from ``insn`` every
    cycle, one cycle before it can be needed.

    Ports
    -----
    insn : In(GemmInsn)
        The GEMM to start; it must hold its value since the cycle before ``start``.
    start : In(1)
        Row 0 of ``insn`` is read in this cycle: ``addr`` shows ``insn.ifmap_row``, and the
        generator takes over ``insn``'s fields (``window``, ``stride_w``, ``out_w`` and the
        product ``stride_h * row_pitch``) for the rows that follow.
    step : In(1)
        The row shown on ``addr`` is read in this cycle; from the next cycle on ``addr``
        shows the following row (the engine asserts it together with ``start`` for row 0).
    addr : Out(width)
        The buffer row of the next row of the current GEMM (combinational from ``start``
        and registers: ``start ? insn.ifmap_row : the registered address``), truncated to
        ``width`` bits; the range check
        (:func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`) keeps every row of a legal
        GEMM inside the buffer, so the truncation never wraps one.

    Timing: no latency of its own. The address of row ``m+1`` is registered in the cycle
    row ``m`` is read, so an engine reads one row per cycle exactly as with
    ``ifmap_row + m``; the engines' ``cycles()`` are the same for plain and windowed GEMMs.
    A ``step`` after the GEMM's last row leaves a don't-care address.
    """

    def __init__(self, width: int):
        self._width = width
        super().__init__({"insn": In(isa.GemmInsn), "start": In(1), "step": In(1),
                          "addr": Out(width)})

    def elaborate(self, platform):
        m = Module()
        w = self._width
        insn = self.insn
        pend_h = Signal(w)          # stride_h * row_pitch of insn, one cycle late
        win, last_x = Signal(), Signal(16)
        step_w, step_h = Signal(w), Signal(w)
        x = Signal(16)              # column of the row shown (windowed)
        line = Signal(w)            # buffer row of column 0 of the output row shown
        addr = Signal(w)
        m.d.sync += pend_h.eq(insn.stride_h * insn.row_pitch)

        # the state the step starts from: insn's row 0 at start, else the registers
        s_win = Mux(self.start, insn.window, win)
        s_last = Mux(self.start, insn.out_w - 1, last_x)
        s_w = Mux(self.start, Mux(insn.window, insn.stride_w, 1), step_w)
        s_h = Mux(self.start, pend_h, step_h)
        s_x = Mux(self.start, 0, x)
        s_line = Mux(self.start, insn.ifmap_row, line)
        s_addr = Mux(self.start, insn.ifmap_row, addr)
        m.d.comb += self.addr.eq(s_addr)

        with m.If(self.start):
            m.d.sync += [win.eq(s_win), last_x.eq(s_last), step_w.eq(s_w), step_h.eq(s_h)]
        with m.If(self.step):
            with m.If(s_win & (s_x == s_last)):    # next output row
                m.d.sync += [x.eq(0), line.eq(s_line + s_h), addr.eq(s_line + s_h)]
            with m.Else():                          # next column (plain GEMM: next row)
                m.d.sync += [x.eq(s_x + 1), line.eq(s_line), addr.eq(s_addr + s_w)]
        with m.Elif(self.start):
            m.d.sync += [x.eq(0), line.eq(s_line), addr.eq(s_addr)]
        return m


def window_rows(insn, fh: int = 0, fw: int = 0) -> np.ndarray:
    """The ifmap buffer row of each ``m < m_len`` of the GEMM ``insn`` (an object with the
    :data:`~celosia.rtl.isa.GemmInsn` fields as int attributes) for the kernel tap
    ``(fh, fw)``: ``ifmap_row + m`` for a plain GEMM; for a windowed one, ``m = e*out_w + x``
    reads ``ifmap_row + (e*stride_h + fh*dil_h)*row_pitch + x*stride_w + fw*dil_w``."""
    if not insn.window:
        return insn.ifmap_row + np.arange(insn.m_len)
    e = np.arange(insn.out_h)[:, None]
    x = np.arange(insn.out_w)[None, :]
    rows = (insn.ifmap_row + (e * insn.stride_h + fh * insn.dil_h) * insn.row_pitch
            + x * insn.stride_w + fw * insn.dil_w)
    return rows.reshape(-1)
