"""FEIE PE array (``dataflow = "feie"``, seed 003): the output-stationary array with
input broadcast and zero skipping, as a GEMM engine.

``rtl/arrays/feie_core.py`` is the literal PE row of the seed's cycle tables; this is
the accelerator's engine, :class:`FEIEArray`, and its timing, :func:`cycles`.
"""

from __future__ import annotations

import numpy as np

from celosia.rtl.arrays.engine import legal_gemm
from celosia.rtl.arrays.os import OSArray

__all__ = ["FEIEArray", "cycles"]


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
            + sum_{k<k_len} (int8(ifmap[ifmap_row+m][k]) - in_zp) * int8(weight[weight_row+k][n])

    Ports: those of :class:`OSArray`; ``zero_skips`` reports, in the block's first MAC
    cycle, the ``k_len - nnz`` MAC cycles the block skips.

    Timing (cycle 0 = the cycle ``insn.valid & insn.ready``): as :class:`OSArray`
    except that a block of ``mb`` rows takes ``2*mb + 1 + max(nnz, 1)`` cycles (one
    cycle for the mask to settle; ``nnz`` = the ``k < k_len`` with an input other than
    ``in_zp`` in some row of the block), so ``done`` pulses
    ``sum over blocks (2*mb + 1 + max(nnz, 1)) + 3`` cycles after acceptance
    (:func:`cycles`); 1 cycle for ``m_len = 0`` or an illegal instruction.
    """

    ZERO_SKIP = True


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) on :class:`FEIEArray`, the timing of its docstring. ``ifmap`` (the ifmap buffer
    rows, int8 or their bytes) gives each block's non-zero count ``nnz``."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    if ifmap is None:
        raise ValueError("feie timing depends on the data: pass the ifmap buffer rows")
    rows = np.asarray(ifmap, dtype=np.int64)[g.ifmap_row:g.ifmap_row + g.m_len, :g.k_len] & 0xFF
    total = 3
    for m0 in range(0, g.m_len, config.rows):
        block = rows[m0:m0 + config.rows]
        nnz = int((block != g.in_zp & 0xFF).any(axis=0).sum())
        total += 2 * len(block) + 1 + max(nnz, 1)
    return total
