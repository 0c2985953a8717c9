"""Layer outputs kept on chip: a layer's STOREs write the next layer's input into the
ifmap buffer (``StoreInsn.to_buf``) instead of DRAM, and the next layer loads nothing.

A layer ``i`` keeps its output when all of these hold:

* layers ``i`` and ``i + 1`` are both fully connected and both lowered resident (each
  unit reads the whole ``[batch, K]`` input as one block in one ifmap half,
  :func:`~celosia.sw.compiler.lower_gemm.lower_fc`);
* layer ``i + 1`` reads layer ``i``'s output and nothing else, and no other layer reads
  it (no residual add, no second reader), and layer ``i`` is not the model's last;
* ``rows % cols == 0`` (an output tile of ``cols`` channels lands in one ifmap row).

The STOREs write the block layout the next layer's LOADs would produce: channel ``c`` of
sample ``b`` at ifmap row ``half_row + (c // rows) * line_pitch + b * sample_pitch``, lane
``c % rows``, the pitches from the lowering family's ``fc_block_pitches`` (ws, os, feie:
``(batch, 1)``; rs: ``(1, ceil(K / rows))``) and ``half_row`` the first row of the ifmap
half layer ``i`` does not read. An output tile of samples ``b0 ..`` and channels ``c0 ..``
(``c0`` a multiple of ``cols``, so its channels share one ``c // rows``) goes to
``buf_row`` = that row of ``(b0, c0)``, ``buf_stride = sample_pitch``, ``lane0 = c0 % rows``. Layer ``i + 1``'s units then take that half as their
first ifmap half (:attr:`~celosia.sw.compiler.tiling.Unit.half`) and lose their block
LOADs. Chains alternate halves. The barrier between units (last STORE ``s2c`` -> NOP
-> ``c2l`` -> the next unit's first LOAD, its PPU-parameter LOAD, which every unit has)
orders the STOREs before the next layer's first GEMM.

The driver's profiling prefixes read counters only, not outputs, so they need no
exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.rtl.dataflows import dataflow
from celosia.sw.analysis import load_bytes
from celosia.sw.compiler.tiling import Unit
from celosia.sw.quant.model import QModel

__all__ = ["KeepPlan", "plan_keep"]


@dataclass
class KeepPlan:
    """Which layers keep their output on chip (:func:`plan_keep`)."""
    layers: tuple[str, ...] = ()   # the producers
    saved_bytes: int = 0           # DRAM bytes one run no longer moves (STOREs, LOADs, their fetch)
    saved_insns: dict = field(default_factory=dict)  # consumer layer -> ifmap LOADs removed per run


def _keepable(model: QModel, i: int, units: list[Unit], nxt: list[Unit], config: AccelConfig) -> bool:
    layers = model.layers
    if i + 1 >= len(layers) or layers[i].op != "fc" or layers[i + 1].op != "fc":
        return False
    if config.rows % config.cols:
        return False
    out = layers[i].output
    readers = [j for j in range(len(layers)) if out in model.layer_inputs(j)]
    if readers != [i + 1] or model.layer_inputs(i + 1) != [out]:
        return False
    return all(u.resident for u in units) and all(u.resident for u in nxt)


def plan_keep(model: QModel, lowered: list[list[Unit]], allocs: list, config: AccelConfig,
              batch: int, enabled: bool = True) -> KeepPlan:
    """Choose the layers that keep their output on chip (module docstring) and rewrite
    their units in place: the producers' STOREs go to the ifmap buffer, the consumers'
    units start in the other ifmap half and load no ifmap block. ``lowered``: the units
    of every layer of ``model``, in order; ``allocs``: their
    :class:`~celosia.sw.compiler.alloc.Allocation` objects (a tile's first output channel is
    its STORE's offset from the layer's output)."""
    if not enabled:
        return KeepPlan()
    R = config.rows
    half_rows = config.ifmap_rows // 2
    pitches = dataflow(config.dataflow).lowering.fc_block_pitches
    kept, saved, saved_insns = [], 0, {}
    for i in range(len(lowered) - 1):
        units, nxt = lowered[i], lowered[i + 1]
        if not _keepable(model, i, units, nxt, config):
            continue
        out_half = 1 - units[0].half
        n_out = model.layers[i].out_features
        line_pitch, sample_pitch = pitches(batch, ceil_div(n_out, R))
        for unit in units:
            for tile in unit.tiles:
                st = tile.store
                b0, c0 = divmod(st.dram_offset - allocs[i].dst[1], n_out)  # DRAM row = sample
                saved += tile.m_len * st.n_len
                st.to_buf, st.buf_stride, st.lane0 = 1, sample_pitch, c0 % R
                st.buf_row = out_half * half_rows + (c0 // R) * line_pitch + b0 * sample_pitch
        removed = 0
        for unit in nxt:
            unit.half = out_half
            seen = set()
            for tile in unit.tiles:
                if tile.block not in seen:  # a block's LOADs are emitted once, with its first tile
                    seen.add(tile.block)
                    saved += sum(load_bytes(ld.__dict__) for ld in tile.block_loads)
                    saved += isa.INSN_BYTES * len(tile.block_loads)
                    removed += len(tile.block_loads)
                tile.block_loads = []
        kept.append(model.layers[i].name)
        saved_insns[model.layers[i + 1].name] = removed
    return KeepPlan(layers=tuple(kept), saved_bytes=saved, saved_insns=saved_insns)
