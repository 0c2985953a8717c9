"""DRAM allocation: static data (GEMM weights, PPU parameters) and feature-map slots; and
the weight buffer's resident region (:func:`plan_weights`).

Layouts: GEMM weights int8 ``[K, N]`` row-major (conv: ``K = (fh, fw, cin)`` per
group); PPU parameters one row of ``cols`` x 9 bytes per parameter chunk
(:func:`~celosia.sw.compiler.tiling.param_chunks`): bias int32 LE with the input zero
point folded in -- except where the GEMMs subtract it (feie, ``in_zp``) -- M0 int32 LE,
shift int8. Each layer's weights and parameters start 8-byte aligned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import PARAM_BYTES, BaseReg
from celosia.sw.analysis import load_bytes
from celosia.sw.compiler.program import align
from celosia.sw.compiler.tiling import GemmOp, Load, Unit, param_chunks, subtracts_zero_point
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["Allocation", "allocate", "WeightPlan", "plan_weights", "streaming_plan", "weight_key",
           "weight_tile_rows"]


@dataclass(frozen=True)
class Allocation:
    """Where one layer's data lives in DRAM: byte offsets in the static segment
    (``BaseReg.STATIC``) and ``(base register, offset)`` of its feature maps."""
    weights: int                 # its GEMM weights (static)
    params: int                  # its PPU parameter rows (static)
    srcs: tuple                  # its input feature maps, ``(BaseReg, offset)`` each
    dst: tuple                   # its output feature map

    @property
    def src(self) -> tuple:
        """The first (for most layers the only) input feature map."""
        return self.srcs[0]


def _params_blob(layer: QLayer, config: AccelConfig) -> bytes:
    """One row of ``cols`` :data:`~celosia.rtl.isa.ParamRecord`\\ s per chunk (zeros past the
    chunk's channels): bias (the input zero point folded in, except for feie:
    :func:`subtracts_zero_point`), M0, shift."""
    C = config.cols
    bias = np.asarray(layer.bias if subtracts_zero_point(config) else layer.folded_bias()).astype("<i4")
    m0 = np.asarray(layer.m0, dtype="<i4")
    shift = np.asarray(layer.shift, dtype=np.int8)
    empty = bytes(PARAM_BYTES)
    return b"".join(isa.pack_bytes(isa.ParamRecord, bias=int(bias[c0 + j]), m0=int(m0[c0 + j]),
                                   shift=int(shift[c0 + j])) if j < n else empty
                    for c0, n in param_chunks(layer, config) for j in range(C))


def allocate(model: QModel, config: AccelConfig, batch: int) -> tuple[bytes, list[Allocation], int]:
    """Static data and the DRAM slot of every tensor; returns (static, per-layer allocations,
    scratch bytes).

    Feature maps live in SCRATCH slots reused after their last reader (first
    fit); the model input is at INPUT and the last layer writes to OUTPUT.
    """
    static = bytearray()
    last_use = {}
    for i in range(len(model.layers)):
        for name in model.layer_inputs(i):
            last_use[name] = i
    where = {QModel.INPUT: (BaseReg.INPUT, 0)}
    free: list[tuple[int, int]] = []   # (offset, size) of free scratch slots
    live: dict[str, tuple[int, int]] = {}
    scratch_end = 0
    allocs = []
    for i, layer in enumerate(model.layers):
        w_off = len(static)
        gw = layer.gemm_weights()
        static += np.ascontiguousarray(gw, dtype=np.int8).tobytes()
        static += bytes(align(len(static), 8) - len(static))
        p_off = len(static)
        static += _params_blob(layer, config)
        static += bytes(align(len(static), 8) - len(static))
        srcs = tuple(where[name] for name in model.layer_inputs(i))
        if i == len(model.layers) - 1:
            dst = (BaseReg.OUTPUT, 0)
        else:
            size = align(batch * layer.out_features, 8)
            slot = next((f for f in free if f[1] >= size), None)
            if slot:
                free.remove(slot)
                off = slot[0]
            else:
                off, scratch_end = scratch_end, scratch_end + size
            live[layer.output] = (off, size)
            dst = (BaseReg.SCRATCH, off)
        allocs.append(Allocation(weights=w_off, params=p_off, srcs=srcs, dst=dst))
        where[layer.output] = dst
        # Free the slots of tensors whose last reader was this layer (after choosing dst:
        # a layer never writes over its own input).
        for name in model.layer_inputs(i):
            if last_use.get(name) == i and name in live:
                free.append(live.pop(name))
    return bytes(static), allocs, scratch_end


# -- weight-buffer residency ----------------------------------------------------------------------

def weight_key(op: GemmOp) -> tuple:
    """The identity of a GEMM's weight tile: its weight LOADs' fields (two GEMMs with the
    same key read the same bytes into the same rows, e.g. one conv weight tile per ifmap
    block). Computed once per op (kept in its ``__dict__``: a GEMM's weight LOADs do not
    change after lowering), as the planning and emission passes ask for it several times."""
    key = op.__dict__.get("_weight_key")
    if key is None:
        key = op.__dict__["_weight_key"] = tuple(tuple(ld.__dict__.values()) for ld in op.weight)
    return key   # (its fields are ints)


def weight_tile_rows(op: GemmOp) -> int:
    """Weight-buffer rows a GEMM's weight tile spans from its ``weight_row``: the rows its
    LOADs write and the rows the GEMM reads (``k_len``, times ``win_h * win_w`` windowed).
    Computed once per op, as :func:`weight_key`."""
    rows = op.__dict__.get("_weight_rows")
    if rows is None:
        written = max(ld.buf_row + (ld.n1 - 1) * ld.buf_stride1 + (ld.n2 - 1) * ld.buf_stride2 + 1
                      for ld in op.weight)
        w = op.window
        rows = op.__dict__["_weight_rows"] = max(written, op.k_len * (w.win_h * w.win_w if w is not None else 1))
    return rows


@dataclass(frozen=True)
class WeightPlan:
    """Where the GEMM weight tiles live in the weight buffer.

    ``rows`` maps the :func:`weight_key` of every *resident* tile to its first buffer
    row: the initialization graph LOADs it there once per job and the execution graph's
    GEMMs read it with no LOAD. Every other GEMM streams its tile into one of the two
    streaming halves of ``half_rows`` rows each, from rows ``halves``, in *weight groups*
    (:mod:`~celosia.sw.compiler.emit`).
    """
    rows: dict                   # weight_key -> first row of the resident tile
    halves: tuple[int, int]      # first rows of the two streaming halves
    half_rows: int               # rows of each streaming half
    layers: tuple[str, ...] = () # the layers whose weights are resident
    used_rows: int = 0           # rows of the resident region (the streaming halves excluded)
    # DRAM bytes one run no longer reads (weight LOADs + their fetch) and layer -> weight
    # LOADs removed per run: plan_weights' estimate (one LOAD per GEMM), which compile_model
    # replaces with emit's exact figures (weight groups, emit.weight_fetch)
    saved_bytes: int = 0
    saved_insns: dict = field(default_factory=dict)

    def row(self, op) -> int | None:
        """The resident row of ``op``'s weight tile, or ``None`` (streamed, or not a GEMM)."""
        if not self.rows or not isinstance(op, GemmOp) or not op.weight:
            return None
        return self.rows.get(weight_key(op))

    def init_loads(self, layers: dict) -> list[tuple[Load, int]]:
        """``(LOAD, row base)`` of every resident tile, in buffer-row order: the
        initialization graph. ``layers``: layer name -> its units."""
        seen = {}
        for name in self.layers:
            for op in _gemm_ops(layers[name]):
                key = weight_key(op)
                if key not in seen:
                    seen[key] = [(ld, self.rows[key]) for ld in op.weight]
        return [pair for key in sorted(seen, key=self.rows.get) for pair in seen[key]]


def streaming_plan(config: AccelConfig) -> WeightPlan:
    """No resident weights: every GEMM streams its tile into the two weight-buffer halves."""
    return WeightPlan(rows={}, halves=(0, config.weight_rows // 2), half_rows=config.weight_rows // 2)


def _gemm_ops(units: list[Unit]):
    return [op for unit in units for tile in unit.tiles for op in tile.ops
            if isinstance(op, GemmOp) and op.weight]


def plan_weights(layers: dict, config: AccelConfig, enabled: bool = True) -> WeightPlan:
    """Choose the layers whose weights stay resident in the weight buffer.

    ``layers``: layer name -> its lowered units, in program order. A layer's candidates
    are its unique weight tiles (:func:`weight_key`); keeping them costs the sum of their
    :func:`weight_tile_rows` and saves, per run, every weight LOAD of the layer (the
    bytes it reads, each tile as often as the tiling loads it, plus 32 bytes of
    instruction fetch each).

    * If every layer's tiles fit ``weight_rows``, all are resident.
    * Otherwise the streamed layers keep two halves of at least ``S`` rows each, ``S``
      the largest tile of any layer, and the layers are taken greedily by bytes saved per
      run per buffer row (ties: more bytes first), each one that still fits the rest of
      the buffer. The streaming halves then share what the resident tiles leave
      (``(weight_rows - resident rows) // 2`` rows each, room for weight groups).
    * If nothing fits (or ``enabled`` is false), every layer streams into halves of
      ``weight_rows // 2`` rows, exactly as without this pass. (So does
      :func:`~celosia.sw.compiler.compile_model` when the plan would move more bytes per
      run than streaming everything: smaller streaming halves mean smaller weight groups,
      more LOAD instructions.)
    """
    cands = []
    for name, units in layers.items():
        ops = _gemm_ops(units)
        if not ops:
            continue
        tiles = {}
        for op in ops:
            key = weight_key(op)
            if key not in tiles:
                tiles[key] = weight_tile_rows(op)
        loads = [ld for op in ops for ld in op.weight]
        saved = sum(load_bytes(ld.__dict__) for ld in loads) + isa.INSN_BYTES * len(loads)
        cands.append((name, tiles, saved, len(loads)))
    if not enabled or not cands:
        return streaming_plan(config)
    need = {name: sum(tiles.values()) for name, tiles, _, _ in cands}
    if sum(need.values()) <= config.weight_rows:
        chosen, halves = [c[0] for c in cands], (0, config.weight_rows // 2)
        start = 0
    else:
        biggest = max(r for _, tiles, _, _ in cands for r in tiles.values())
        budget = config.weight_rows - 2 * biggest
        chosen = []
        for name, _, saved, _ in sorted(cands, key=lambda c: (-c[2] / need[c[0]], -c[2])):
            if need[name] <= budget:
                chosen.append(name)
                budget -= need[name]
        if not chosen:
            return streaming_plan(config)
        s = (config.weight_rows - sum(need[name] for name in chosen)) // 2
        halves, start = (0, s), 2 * s
    rows, cursor = {}, start
    for name, tiles, _, _ in cands:  # program order, so the init graph walks the buffer upwards
        if name in chosen:
            for key, r in tiles.items():
                rows[key] = cursor
                cursor += r
    assert cursor <= config.weight_rows
    picked = [c for c in cands if c[0] in chosen]
    return WeightPlan(rows=rows, halves=halves, half_rows=halves[1], layers=tuple(c[0] for c in picked),
                      used_rows=cursor - start, saved_bytes=sum(c[2] for c in picked),
                      saved_insns={c[0]: c[3] for c in picked})
