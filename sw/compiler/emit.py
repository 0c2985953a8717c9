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
instructions all precede the group in between, so end at ``t-2`` at the latest, and
its LOADs wait for instruction ``t-2``.
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
    groups = _ifmap_groups(unit)
    out: list[int] = []

    def load_group(t):
        u, g = ops[t]
        op = unit.tiles[u].ops[g]
        group = []   # (Load, buffer, row base)
        if t == 0:
            group.append((unit.params, Buffer.PARAM, 0))
        half, loads, _ = groups[t]
        group.extend((ld, Buffer.IFMAP, half * i_half) for ld in loads)
        if not isinstance(op, VecOp):
            group.extend((ld, Buffer.WEIGHT, (t % 2) * w_half) for ld in op.weight)
        assert group, "every compute instruction is fed by at least one LOAD"
        return [ld.encode(buf, base, dep_flags(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                                                push_next=(i == len(group) - 1)))
                for i, (ld, buf, base) in enumerate(group)]

    def compute(t):
        u, g = ops[t]
        tile, op = unit.tiles[u], unit.tiles[u].ops[g]
        half, _, row = groups[t]
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


def _ifmap_groups(unit: Unit) -> list[tuple[int, list, int]]:
    """Per compute instruction of ``unit``, in order: ``(half, loads, row)``, the ifmap
    buffer half of its ifmap group (the group's index in the unit mod 2; see the module
    docstring), the group's LOADs if the instruction opens the group (else none) and its
    ifmap row inside the half."""
    out, prev, index = [], None, -1
    for u, tile in enumerate(unit.tiles):
        for g, op in enumerate(tile.ops):
            shared = getattr(op, "ifmap_group", None)
            if unit.resident:
                key, loads, row = ("block", tile.block), tile.block_loads, op.ifmap_row
            elif shared is not None:
                key, loads, row = ("ops", u, shared), op.ifmap, op.ifmap_row
            else:
                key, loads, row = ("op", u, g), op.ifmap, 0
            opens = key != prev
            assert opens or unit.resident or not loads, "only a group's first GEMM loads its tile"
            index += opens
            prev = key
            out.append((index % 2, loads if opens else [], row))
    return out
