"""Emission: a lowered :class:`~celosia.sw.compiler.tiling.Unit` -> instruction words.

Token protocol (VTA-style; counts balance and every pop refers to an earlier
push in program order, so an in-order fetch never deadlocks), per unit:

* load group ``t`` (the LOADs feeding compute instruction ``t``) pushes ``l2c``;
  instruction ``t`` pops it;
* instruction ``t`` pushes ``c2l`` when group ``t+2`` exists (it overwrites the weight
  and ifmap halves instruction ``t`` read); that group pops it;
* the last instruction of output tile ``u`` pushes ``c2s``; STORE ``u`` pops it;
* STORE ``u`` pushes ``s2c`` when tile ``u+2`` exists (same psum half); the first
  instruction of tile ``u+2`` pops it;
* between units (layers, or parts of a layer whose PPU parameters do not fit one
  parameter-buffer half), a NOP on the compute queue pops ``s2c`` from the last
  STORE and pushes ``c2l``, which the next unit's first LOAD pops: a barrier,
  since the next unit may read what the stores wrote.

Double buffering: weight tiles alternate between the buffer halves with the compute
instruction's index ``t``, psum tiles with the tile's index ``u``, and ifmap tiles with
the index of their *ifmap group* in the unit: the run of consecutive compute
instructions that read one ifmap tile, loaded once by the load group of the first of
them. A group is a whole block of output tiles in a resident unit (``OutTile.block``,
loaded by ``block_loads``), the GEMMs of one output tile with the same
``GemmOp.ifmap_group`` (e.g. the kernel taps of one input-channel chunk of a conv), or
a single instruction. The ``c2l`` tokens above also cover the ifmap halves: the group
opening at instruction ``t`` overwrites the half of the group two before it, whose
instructions all precede the group in between. Its LOADs go into the LOAD group of the
second instruction ``t'`` of the group in between (``t'`` = ``t`` when that group has a
single instruction): ``t' - 2`` is the last instruction of the group two before, so the
``c2l`` pop of LOAD group ``t'`` (instruction ``t' - 2`` done) frees the
half, and the tile loads while the group in between computes. When ``t' < t`` these
LOADs come after the ``l2c`` push of LOAD group ``t'`` (instruction ``t'`` does not wait
for them); the in-order LOAD queue finishes them before the push of LOAD group ``t``.
"""

from __future__ import annotations

from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Buffer, Opcode
from celosia.sw.compiler.tiling import Unit, VecOp, dep_flags, encode

__all__ = ["emit_unit"]


def emit_unit(unit: Unit, config: AccelConfig, first: bool, last: bool) -> list[int]:
    """Instructions of one unit (see the module docstring for the tokens); ``first`` /
    ``last``: whether it is the program's first / last unit. An instruction field out of
    range is an :class:`~celosia.sw.compiler.tiling.EncodeError`."""
    w_half, i_half = config.weight_rows // 2, config.ifmap_rows // 2
    p_half = config.psum_rows // 2
    ops = [(u, g) for u, tile in enumerate(unit.tiles) for g in range(len(tile.ops))]
    T = len(ops)
    ifmap_rows, ifmap_loads = _ifmap_groups(unit)
    out: list[int] = []

    def load_group(t):
        u, g = ops[t]
        op = unit.tiles[u].ops[g]
        group = []   # (Load, buffer, row base): what instruction t reads
        if t == 0:
            group.append((unit.params, Buffer.PARAM, 0))
        group.extend((ld, Buffer.IFMAP, half * i_half) for half, ld, ahead in ifmap_loads[t] if not ahead)
        if not isinstance(op, VecOp):
            group.extend((ld, Buffer.WEIGHT, (t % 2) * w_half) for ld in op.weight)
        assert group, "every compute instruction is fed by at least one LOAD"
        n_push = len(group)
        # then the next ifmap group's tile, after the push: instruction t does not wait for it
        group.extend((ld, Buffer.IFMAP, half * i_half) for half, ld, ahead in ifmap_loads[t] if ahead)
        return [ld.encode(buf, base, dep_flags(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                                                push_next=(i == n_push - 1)))
                for i, (ld, buf, base) in enumerate(group)]

    def compute(t):
        u, g = ops[t]
        tile, op = unit.tiles[u], unit.tiles[u].ops[g]
        half, row = ifmap_rows[t]
        ifmap_row = half * i_half + row
        dep = dep_flags(pop_prev=True, pop_next=(g == 0 and u >= 2),
                        push_prev=t + 2 < T, push_next=g == len(tile.ops) - 1)
        if isinstance(op, VecOp):
            return op.encode(ifmap_row=ifmap_row, psum_row=(u % 2) * p_half, m_len=tile.m_len, dep=dep)
        return op.encode(accumulate=int(g > 0), ifmap_row=ifmap_row, weight_row=(t % 2) * w_half,
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


def _ifmap_groups(unit: Unit) -> tuple[list[tuple[int, int]], list[list[tuple[int, object, bool]]]]:
    """The ifmap groups of ``unit`` (see the module docstring): per compute instruction, in
    order, ``(half, row)``, the ifmap buffer half of its group (the group's index in the
    unit mod 2) and its ifmap row inside that half; and per LOAD group ``t``, the ``(half,
    Load, ahead)`` of the ifmap tiles it loads, ``ahead`` for a later group's tile
    (instruction ``t`` does not read it). A group's tile is loaded by the LOAD group of the
    second instruction of the group before it: the earliest LOAD group whose ``c2l`` pop
    (instruction ``t-2`` done) follows the last reader of the half, the group two before."""
    rows, firsts, loads = [], [], []
    prev = None
    for u, tile in enumerate(unit.tiles):
        for g, op in enumerate(tile.ops):
            shared = getattr(op, "ifmap_group", None)
            if unit.resident:
                key, tile_loads, row = ("block", tile.block), tile.block_loads, op.ifmap_row
            elif shared is not None:
                key, tile_loads, row = ("ops", u, shared), op.ifmap, op.ifmap_row
            else:
                key, tile_loads, row = ("op", u, g), op.ifmap, 0
            t = len(rows)
            if key != prev:
                firsts.append(t)
                loads.append(tile_loads)
            else:
                assert unit.resident or not tile_loads, "only a group's first GEMM loads its tile"
            prev = key
            rows.append(((len(firsts) - 1) % 2, row))
    at = [[] for _ in rows]
    for i, first in enumerate(firsts):
        t = first if i == 0 else firsts[i - 1] + 1
        at[t].extend((i % 2, ld, t < first) for ld in loads[i])
    return rows, at
