"""FEIE PE array (``dataflow = "feie"``, seed 003): the output-stationary array with
input broadcast and zero skipping, as a GEMM engine.

``rtl/arrays/feie_core.py`` is the literal PE row of the seed's cycle tables; this is
the accelerator's engine, :class:`FEIEArray`, and its timing, :func:`cycles`.
"""

from __future__ import annotations

import numpy as np

from celosia.rtl.arrays.engine import legal_gemm
from celosia.rtl.arrays.os import OSArray, block_sequence_timing, epoch_cycles
from celosia.rtl.arrays.window import window_rows

__all__ = ["FEIEArray", "cycles", "nnz_steps", "sequence_timing"]


class FEIEArray(OSArray):
    """FEIE (seed 003) as a GEMM engine implementing :class:`ComputeEngineSignature`.

    Every PE ``(i, n)`` accumulates one output psum; the input ``x[m0+i][k]`` is
    broadcast to all PEs of row ``i`` and the weights ``w[k][:]`` are time-multiplexed
    to the columns, as in :class:`~celosia.rtl.arrays.os.OSArray`, but a ``k`` whose
    inputs are zero in every row of the block takes no cycle: the block's non-zero
    ``k`` (a mask built as the ifmap rows land) are taken lowest first, one per cycle.
    "Zero" is the real zero of the quantized input, the int8 value ``in_zp`` (the
    GEMM's input zero point): the PEs multiply ``x - in_zp`` (9 bits) and the compiler
    leaves the zero point out of the bias, so a skipped input contributes exactly
    nothing. For ``m < m_len``, ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
            + sum_{k<k_len} (int8(ifmap[row(m)][k]) - in_zp) * int8(weight[weight_row+k][n])

    (``row(m)``: ``ifmap_row + m``, or the window of a one-tap windowed GEMM, as in
    :class:`OSArray`).

    Ports: those of :class:`OSArray`; ``zero_skips`` reports, in the block's first MAC
    cycle, the ``k_len - nnz`` MAC cycles the block skips.

    Timing: the block pipeline of :class:`OSArray` (in each epoch FILL loads a block, MAC
    computes the previous epoch's block, DRAIN writes the one before; consecutive GEMMs
    follow each other without a gap, each block carrying its own GEMM's ``k_len`` and
    ``in_zp``, so the mask of a block follows that block's instruction), with a block's
    MAC stage taking ``nnz`` cycles (``nnz`` = the ``k < k_len`` with an input other than
    ``in_zp`` in some row of the block). The mask of each bank is built as its rows land;
    the block's last row lands in the first cycle of its MAC epoch and is seen by the
    priority encoder in that same cycle, so no cycle is spent on the mask. On an idle
    engine ``done`` pulses ``3 + sum over the nb + 2 epochs of max(1, fill rows, nnz,
    drain rows)`` cycles after acceptance (cycle 0 = the cycle ``insn.valid &
    insn.ready``; :func:`cycles`, via :func:`~celosia.rtl.arrays.os.epoch_cycles`); 1
    cycle for ``m_len = 0`` or an illegal instruction; a sequence: :func:`sequence_timing`.
    """

    ZERO_SKIP = True


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) issued to an idle :class:`FEIEArray`, the timing of its docstring. ``ifmap`` (the
    ifmap buffer rows, int8 or their bytes) gives each block's non-zero count ``nnz`` (over
    the rows the GEMM reads: :func:`~celosia.rtl.arrays.window.window_rows`). Instructions
    that overlap: :func:`sequence_timing`."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    return 3 + epoch_cycles(g.m_len, config.rows, nnz_steps(g, config, ifmap))


def nnz_steps(g, config, ifmap) -> list[int]:
    """MAC steps of each block of the legal GEMM ``g`` on :class:`FEIEArray`: the ``k <
    k_len`` with an input other than ``in_zp`` in some row of the block of ``ifmap``."""
    if ifmap is None:
        raise ValueError("feie timing depends on the data: pass the ifmap buffer rows")
    rows = np.asarray(ifmap, dtype=np.int64)[window_rows(g), :g.k_len] & 0xFF
    return [int((rows[m0:m0 + config.rows] != g.in_zp & 0xFF).any(axis=0).sum())
            for m0 in range(0, g.m_len, config.rows)]


def sequence_timing(insns, config, gaps=None, ifmap=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` on :class:`FEIEArray`:
    :func:`~celosia.rtl.arrays.os.block_sequence_timing` with ``nnz`` MAC steps per block
    (``ifmap`` as for :func:`cycles`)."""
    return block_sequence_timing(insns, config, lambda g: nnz_steps(g, config, ifmap), gaps)
