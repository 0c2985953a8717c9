"""SCALE-Sim's analytical cycle counts, for comparing Celosia's measured cycles with them.

SCALE-Sim (Samajdar et al., "A Systematic Methodology for Characterizing Scalability of
DNN Accelerators using SCALE-Sim", ISPASS 2020; source: github.com/scalesim-project/
scale-sim-v2) models a layer as one GEMM on an ``R x C`` systolic array and counts
its compute cycles fold by fold; a *fold* is one mapping of a block of the GEMM onto the
array, and folds run one after another with nothing overlapped between them.

Notation: the GEMM multiplies an ``M x K`` operand matrix (``M`` output pixels, or the
samples of a fully connected layer; ``K`` the taps of one output, ``Fh*Fw*Cin/groups``)
by a ``K x N`` filter matrix (``N`` output channels per group).

* **Weight stationary** (``scalesim/compute/systolic_compute_ws.py``): ``Sr = K`` on the
  rows, ``Sc = N`` on the columns, ``T = M`` streamed; ``ceil(K/R) * ceil(N/C)`` folds of
  ``2R + C + T - 2`` cycles each. In the source, each fold's ifmap demand matrix is
  ``R`` idle rows (the weight preload, not hidden), ``T`` rows of inputs and ``C - 1``
  rows for the last psums to drain, skewed by ``R - 1`` rows (``skew_matrix`` adds
  ``columns - 1`` rows): ``R + T + (C - 1) + (R - 1)``. This is the formula of the
  ISPASS paper (eq. 1).
* **Output stationary** (``scalesim/compute/systolic_compute_os.py``): ``Sr = M`` on the
  rows, ``Sc = N`` on the columns, ``T = K`` streamed; ``ceil(M/R) * ceil(N/C)`` folds of
  ``R + C + T - 2`` cycles each. In the source, the ifmap demand of a fold is ``T`` rows
  plus ``C - 1`` drain rows, skewed by ``R - 1`` rows (the filter and ofmap demand
  matrices have the same length): ``T + (C - 1) + (R - 1)``. There is no preload in
  the os mapping, hence one ``R`` fewer than ws.

A grouped (e.g. depthwise) convolution is ``groups`` independent GEMMs (SCALE-Sim has no
groups: a depthwise layer is entered as ``groups`` layers of one channel), run one after
the other; a batch of ``B`` samples multiplies ``M`` by ``B`` (one GEMM whose rows are the
output pixels of every sample, as SCALE-Sim's GEMM input ``M x K x N`` does for a fully
connected layer at batch ``B``).

SCALE-Sim 3.0.0's ``COMPUTE_REPORT.csv`` gives one cycle fewer per layer than these counts in
its ``Total Cycles`` column (with ``Stall Cycles`` 0): it reports the cycle *index*, from 0,
of the layer's last ofmap write (``int(max(ofmap_serviced_cycles))`` in
``scalesim/memory/double_buffered_scratchpad_mem.py``), not the number of cycles.
:func:`reported_cycles` is that figure: ``benchmarks/scalesim_compare.py`` checks it against
the real tool on every layer it runs (AlexNet CONV1-5, ws), and its slow tests
(``tests/benchmarks/test_scalesim_compare.py``) on small ws and os layers.

These are the formulas only: SCALE-Sim's memory model (SRAM sizes, DRAM bandwidth
stalls) is not included, so the counts assume operands are always on chip in time.
"""

from __future__ import annotations

from dataclasses import dataclass

from celosia.rtl.config import ceil_div

__all__ = ["GemmShape", "DATAFLOWS", "fold_cycles", "folds", "gemm_cycles", "reported_cycles",
           "layer_gemm", "layer_cycles"]

#: The SCALE-Sim dataflows this module gives formulas for.
DATAFLOWS = ("ws", "os")



@dataclass(frozen=True)
class GemmShape:
    """``count`` independent GEMMs of ``m x k`` by ``k x n`` (``count`` = groups)."""

    m: int
    k: int
    n: int
    count: int = 1

    @property
    def macs(self) -> int:
        return self.count * self.m * self.k * self.n


def _check(dataflow: str) -> None:
    if dataflow not in DATAFLOWS:
        raise ValueError(f"SCALE-Sim formula for dataflow {dataflow!r}: choose from "
                         f"{', '.join(DATAFLOWS)}")


def folds(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> int:
    """How many folds SCALE-Sim maps an ``m x k x n`` GEMM onto ``rows x cols`` in:
    ``ceil(k/rows) * ceil(n/cols)`` (ws), ``ceil(m/rows) * ceil(n/cols)`` (os)."""
    _check(dataflow)
    sr = k if dataflow == "ws" else m
    return ceil_div(sr, rows) * ceil_div(n, cols)


def fold_cycles(dataflow: str, m: int, k: int, rows: int, cols: int) -> int:
    """Cycles of one fold: ``2R + C + T - 2`` with ``T = m`` (ws), ``R + C + T - 2`` with
    ``T = k`` (os)."""
    _check(dataflow)
    if dataflow == "ws":
        return 2 * rows + cols + m - 2
    return rows + cols + k - 2


def gemm_cycles(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> int:
    """SCALE-Sim's compute cycles of one ``m x k x n`` GEMM on a ``rows x cols`` array:
    :func:`folds` x :func:`fold_cycles` (the folds do not overlap)."""
    return folds(dataflow, m, k, n, rows, cols) * fold_cycles(dataflow, m, k, rows, cols)


def reported_cycles(dataflow: str, m: int, k: int, n: int, rows: int, cols: int) -> int:
    """The ``Total Cycles`` SCALE-Sim 3.0.0 reports for one ``m x k x n`` GEMM without stalls:
    :func:`gemm_cycles` - 1 (the 0-based cycle of its last ofmap write; module docstring)."""
    return gemm_cycles(dataflow, m, k, n, rows, cols) - 1


def layer_gemm(layer, batch: int = 1) -> GemmShape:
    """The GEMM(s) of a ``conv`` or ``fc`` :class:`~celosia.sw.quant.QLayer` at ``batch``:
    conv ``M = batch*Ho*Wo``, ``K = Fh*Fw*Cin/groups``, ``N = Cout/groups``, ``groups``
    GEMMs; fc ``M = batch``, ``K x N`` its weights."""
    if layer.op == "fc":
        k, n = layer.w.shape
        return GemmShape(batch, int(k), int(n))
    if layer.op != "conv":
        raise ValueError(f"layer {layer.name!r}: no GEMM for op {layer.op!r}")
    cout, fh, fw, cin_g = layer.w.shape
    ho, wo, _ = layer.out_shape
    groups = int(layer.attrs.get("groups", 1))
    return GemmShape(batch * ho * wo, int(fh * fw * cin_g), int(cout) // groups, groups)


def layer_cycles(dataflow: str, layer, rows: int, cols: int, batch: int = 1) -> int:
    """SCALE-Sim's cycles of a conv / fc layer (:func:`layer_gemm`): its GEMMs one after
    the other, each :func:`gemm_cycles`."""
    g = layer_gemm(layer, batch)
    return g.count * gemm_cycles(dataflow, g.m, g.k, g.n, rows, cols)
