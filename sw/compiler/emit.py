"""Emission: a lowered :class:`~celosia.sw.compiler.tiling.Unit` -> instruction words.

Token protocol (VTA-style; counts balance and every pop refers to an earlier
push in program order, so an in-order fetch never deadlocks), per unit:

* load group ``t`` (the LOADs feeding compute instruction ``t``) pushes ``l2c``;
  instruction ``t`` pops it (if the group has LOADs);
* instruction ``t`` pushes ``c2l`` when group ``t+2`` exists and has LOADs (it
  overwrites the weight and ifmap halves instruction ``t`` read); that group pops it;
* the last instruction of output tile ``u`` pushes ``c2s``; STORE ``u`` pops it;
* STORE ``u`` pushes ``s2c`` when tile ``u+2`` exists (same psum half); the first
  instruction of tile ``u+2`` pops it;
* between units (layers, or parts of a layer whose PPU parameters do not fit one
  parameter-buffer half), a NOP on the compute queue pops ``s2c`` from the last
  STORE and pushes ``c2l``, which the next unit's first LOAD pops: a barrier,
  since the next unit may read what the stores wrote.

A compute instruction whose load group is empty (its weight tile is resident,
:class:`~celosia.sw.compiler.alloc.WeightPlan`, and its ifmap is already in the
buffer) pops no ``l2c``, and instruction ``t-2`` pushes no ``c2l`` for it: the
buffer rows a later group overwrites were last read by an instruction at least two
places before it, so the ``c2l`` of the instruction two places before that group
still covers them.

Double buffering: streamed weight and ifmap tiles alternate between the buffer
halves with the compute instruction's index ``t`` (weights: the halves of the
:class:`~celosia.sw.compiler.alloc.WeightPlan`; resident weight tiles stay at their
own rows), psum tiles with the tile's index ``u``, resident ifmap blocks with the
block's index in the unit.
"""

from __future__ import annotations

from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Buffer, Opcode
from celosia.sw.compiler.alloc import WeightPlan, streaming_plan
from celosia.sw.compiler.tiling import Unit, VecOp, dep_flags, encode

__all__ = ["emit_unit"]


def emit_unit(unit: Unit, config: AccelConfig, first: bool, last: bool,
              weights: WeightPlan | None = None) -> list[int]:
    """Instructions of one unit (see the module docstring for the tokens); ``first`` /
    ``last``: whether it is the program's first / last unit; ``weights``: where the weight
    tiles live (default: every tile streams into the two buffer halves). An instruction
    field out of range is an :class:`~celosia.sw.compiler.tiling.EncodeError`."""
    weights = weights or streaming_plan(config)
    i_half = config.ifmap_rows // 2
    p_half = config.psum_rows // 2
    ops = [(u, g) for u, tile in enumerate(unit.tiles) for g in range(len(tile.ops))]
    T = len(ops)
    blocks = sorted({tile.block for tile in unit.tiles})
    block_half = {b: i % 2 for i, b in enumerate(blocks)}
    out: list[int] = []

    def group(t):
        """``(Load, buffer, row base)`` of the LOADs feeding compute instruction ``t``."""
        u, g = ops[t]
        tile, op = unit.tiles[u], unit.tiles[u].ops[g]
        group = []   # (Load, buffer, row base)
        if t == 0:
            group.append((unit.params, Buffer.PARAM, 0))
        if unit.resident and g == 0 and (u == 0 or unit.tiles[u - 1].block != tile.block):
            base = block_half[tile.block] * i_half
            group.extend((ld, Buffer.IFMAP, base) for ld in tile.block_loads)
        if not unit.resident:
            group.extend((ld, Buffer.IFMAP, (t % 2) * i_half) for ld in op.ifmap)
        if not isinstance(op, VecOp) and weights.row(op) is None:
            group.extend((ld, Buffer.WEIGHT, weights.halves[t % 2]) for ld in op.weight)
        return group

    groups = [group(t) for t in range(T)]

    def load_group(t):
        return [ld.encode(buf, base, dep_flags(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                                                push_next=(i == len(groups[t]) - 1)))
                for i, (ld, buf, base) in enumerate(groups[t])]

    def compute(t):
        u, g = ops[t]
        tile, op = unit.tiles[u], unit.tiles[u].ops[g]
        if unit.resident:
            ifmap_row = block_half[tile.block] * i_half + op.ifmap_row
        else:
            ifmap_row = (t % 2) * i_half
        dep = dep_flags(pop_prev=bool(groups[t]), pop_next=(g == 0 and u >= 2),
                        push_prev=t + 2 < T and bool(groups[t + 2]), push_next=g == len(tile.ops) - 1)
        if isinstance(op, VecOp):
            return op.encode(ifmap_row=ifmap_row, psum_row=(u % 2) * p_half, m_len=tile.m_len, dep=dep)
        row = weights.row(op)
        return op.encode(accumulate=int(g > 0), ifmap_row=ifmap_row,
                         weight_row=weights.halves[t % 2] if row is None else row,
                         psum_row=(u % 2) * p_half, m_len=tile.m_len, dep=dep, in_zp=unit.in_zp)

    def store(u):
        n_tiles = len(unit.tiles)
        tile = unit.tiles[u]
        return tile.store.encode(
            psum_row=(u % 2) * p_half, param_row=tile.param_row * config.cols, m_len=tile.m_len,
            dep=dep_flags(pop_prev=True, push_prev=(u + 2 < n_tiles) or (u == n_tiles - 1 and not last)))

    out.extend(load_group(0))
    for t in range(T):
        if t + 1 < T:
            out.extend(load_group(t + 1))
        out.append(compute(t))
        u, g = ops[t]
        if g == len(unit.tiles[u].ops) - 1:
            out.append(store(u))
    if not last:
        out.append(encode(Opcode.NOP, dep=dep_flags(pop_next=True, push_prev=True)))
    return out
