"""Emission: a lowered :class:`~celosia.sw.compiler.tiling.Unit` -> instruction words.

Token protocol (VTA-style; counts balance and every pop refers to an earlier
push in program order, so an in-order fetch never deadlocks), per unit:

* load group ``t`` (the LOADs feeding compute instruction ``t``) pushes ``l2c``;
  instruction ``t`` pops it (if the group has LOADs);
* instruction ``t`` pushes ``c2l`` when group ``t+2`` exists and has LOADs (it
  overwrites the weight and ifmap halves instruction ``t`` read); that group pops it;
* the last instruction of output tile ``u`` pushes ``c2s``; STORE ``u`` pops it;
* STORE ``u`` pushes ``s2c`` when tile ``u+2`` exists (same psum half); the first
  instruction of tile ``u+2`` pops it. With *psum blocks* (consecutive tiles with the
  same ``OutTile.psum_block``, side by side in one psum half, block ``b`` in half
  ``b % 2``; a tile without one is a block of its own): STORE of tile ``i`` of block
  ``b`` pushes ``s2c`` when block ``b+2`` has a tile ``i`` (the one reusing its rows),
  whose first instruction pops it. A block's GEMMs are emitted ifmap group by ifmap
  group, each group's GEMMs of every tile of the block in tile order (so one ifmap
  tile serves the whole block); the tiles' last GEMMs, hence their STOREs, come in tile
  order, so the ``s2c`` pushes and pops pair up in order (asserted);
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

Double buffering: streamed weight tiles alternate between the buffer halves with the
compute instruction's index ``t`` (the halves of the
:class:`~celosia.sw.compiler.alloc.WeightPlan`; resident weight tiles stay at their own
rows), psum tiles (blocks) with their block's index, and ifmap tiles with the index of their
*ifmap group* in the unit (plus ``Unit.half``, 1 for a layer whose input the previous
layer keeps in ifmap half 1: :mod:`~celosia.sw.compiler.keep`): the run of consecutive
compute instructions that read one ifmap tile, loaded once. A group is a whole block of output tiles in a resident unit
(``OutTile.block``, loaded by ``block_loads``), the GEMMs of one output tile with the
same ``GemmOp.ifmap_group`` (e.g. the kernel taps of one input-channel chunk of a conv),
in a psum block the GEMMs of all its tiles with the same ``ifmap_group`` (e.g. one input
chunk of an fc layer; the LOADs of the block's first tile), or a single instruction. The ``c2l`` tokens above also cover the ifmap halves: the group
opening at instruction ``t`` overwrites the half of the group two before it, whose
instructions all precede the group in between. The tile's LOADs go ahead into the LOAD
group of the second instruction ``t'`` of the group in between (``t' - 2`` is the last
instruction of the group two before, so the ``c2l`` pop of LOAD group ``t'`` frees the
half, and the tile loads while the group in between computes), after that group's own
``l2c`` push (instruction ``t'`` does not wait for them), when either

* LOAD group ``t`` streams weights: its ``l2c`` push, later in the in-order LOAD queue,
  tells instruction ``t`` that the tile is in too (the tile's LOADs are then split into
  pieces of a few input rows, at least ``AHEAD_PIECE_BYTES`` each, spread over the LOAD
  groups ``t' .. t-1``, so that the weight LOADs of the group in between do not wait
  behind the whole tile); or
* no LOAD group strictly between ``t'`` and ``t`` has LOADs of its own (resident
  weights): the ahead LOADs push one more ``l2c``, which instruction ``t`` pops (the
  instructions in between pop none, so the tokens still pair up in order).

Otherwise (or when ``t' = t``) they are LOAD group ``t``'s own.
"""

from __future__ import annotations

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Buffer, Opcode
from celosia.sw.compiler.alloc import WeightPlan, streaming_plan
from celosia.sw.compiler.tiling import Unit, VecOp, dep_flags, encode

__all__ = ["emit_unit", "AHEAD_PIECE_BYTES"]

#: The smallest piece an ifmap tile loaded ahead is split into (bytes moved, padding
#: included): each piece is one more 32-byte LOAD instruction to fetch, at most ~6% more.
AHEAD_PIECE_BYTES = 16 * isa.INSN_BYTES


def emit_unit(unit: Unit, config: AccelConfig, first: bool, last: bool,
              weights: WeightPlan | None = None) -> list[int]:
    """Instructions of one unit (see the module docstring for the tokens); ``first`` /
    ``last``: whether it is the program's first / last unit; ``weights``: where the weight
    tiles live (default: every tile streams into the two buffer halves). An instruction
    field out of range is an :class:`~celosia.sw.compiler.tiling.EncodeError`."""
    weights = weights or streaming_plan(config)
    i_half = config.ifmap_rows // 2
    p_half = config.psum_rows // 2
    ops, psum_at, s2c_push, s2c_pop = _psum_blocks(unit, p_half)
    T = len(ops)
    out: list[int] = []

    def streamed(t):
        """The weight LOADs of instruction ``t`` (none for a resident tile or a VEC)."""
        u, g = ops[t]
        op = unit.tiles[u].ops[g]
        return [] if isinstance(op, VecOp) or weights.row(op) is not None else op.weight

    ifmap_rows, ifmap_loads, ahead_push = _ifmap_groups(unit, ops, lambda t: bool(streamed(t)))
    ahead_pop = set(ahead_push.values())   # instructions popping the l2c of ahead LOADs

    def group(t):
        """``(Load, buffer, row base)`` of LOAD group ``t``, and how many of them feed
        compute instruction ``t`` (the rest: a later ifmap group's tile, loaded ahead)."""
        ifmap = {ahead: [(ld, Buffer.IFMAP, half * i_half) for half, ld, a in ifmap_loads[t] if a == ahead]
                 for ahead in (False, True)}
        own = [(unit.params, Buffer.PARAM, 0)] if t == 0 else []
        own += ifmap[False] + [(ld, Buffer.WEIGHT, weights.halves[t % 2]) for ld in streamed(t)]
        return own + ifmap[True], len(own)

    groups = [group(t) for t in range(T)]

    def load_group(t):
        loads, n_own = groups[t]
        push = {n_own - 1} | ({len(loads) - 1} if t in ahead_push else set())
        return [ld.encode(buf, base, dep_flags(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                                                push_next=i in push))
                for i, (ld, buf, base) in enumerate(loads)]

    def compute(t):
        u, g = ops[t]
        tile, op = unit.tiles[u], unit.tiles[u].ops[g]
        half, row = ifmap_rows[t]
        ifmap_row = half * i_half + row
        dep = dep_flags(pop_prev=groups[t][1] > 0 or t in ahead_pop, pop_next=(g == 0 and u in s2c_pop),
                        push_prev=t + 2 < T and bool(groups[t + 2][0]), push_next=g == len(tile.ops) - 1)
        if isinstance(op, VecOp):
            return op.encode(ifmap_row=ifmap_row, psum_row=psum_at[u], m_len=tile.m_len, dep=dep)
        row = weights.row(op)
        return op.encode(accumulate=int(g > 0), ifmap_row=ifmap_row,
                         weight_row=weights.halves[t % 2] if row is None else row,
                         psum_row=psum_at[u], m_len=tile.m_len, dep=dep, in_zp=unit.in_zp)

    def store(u):
        n_tiles = len(unit.tiles)
        tile = unit.tiles[u]
        return tile.store.encode(
            psum_row=psum_at[u], param_row=tile.param_row * config.cols, m_len=tile.m_len,
            dep=dep_flags(pop_prev=True, push_prev=(u in s2c_push) or (u == n_tiles - 1 and not last)))

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


def _psum_blocks(unit: Unit, p_half: int) -> tuple[list[tuple[int, int]], list[int], set[int], set[int]]:
    """The psum blocks of ``unit`` (consecutive tiles with the same ``OutTile.psum_block``;
    any other tile is a block of its own) and the emission order of its instructions.
    Tile ``i`` of every block starts at row ``i * pitch`` of its half, ``pitch`` the unit's
    longest tile (e.g. a conv's full spatial block; its last block may be shorter).

    Returns the ``(tile u, op g)`` of each compute instruction in emission order (tile by
    tile; in a psum block of several tiles, ifmap group by ifmap group, each group's GEMMs
    of every tile in tile order), each tile's psum row (block ``b`` in half ``b % 2``, its
    tiles side by side from row 0), the tiles whose STORE pushes ``s2c`` and the tiles whose
    first instruction pops it: tile ``i`` of block ``b + 2`` reuses the rows of tile ``i``
    of block ``b`` (and no other tile's), so that STORE frees them; pushes (in STORE order)
    and pops (in compute order) pair up in order, which is asserted."""
    blocks: list[list[int]] = []
    for u, tile in enumerate(unit.tiles):
        prev = unit.tiles[u - 1].psum_block if u else None
        if u and tile.psum_block is not None and tile.psum_block == prev:
            blocks[-1].append(u)
        else:
            blocks.append([u])
    ops, psum_at, slots = [], [0] * len(unit.tiles), []
    pitch = max(tile.m_len for tile in unit.tiles)   # slot i at the same rows in every block
    for b, block in enumerate(blocks):
        spans = []
        for i, u in enumerate(block):
            psum_at[u] = (b % 2) * p_half + i * pitch
            spans.append((i * pitch, i * pitch + unit.tiles[u].m_len))
        assert spans[-1][1] <= p_half, (spans, p_half)   # the lowering sizes psum blocks to a half
        slots.append(spans)
        if len(block) == 1:
            ops.extend((block[0], g) for g in range(len(unit.tiles[block[0]].ops)))
            continue
        by_group: dict = {}
        for u in block:
            for g, op in enumerate(unit.tiles[u].ops):
                assert op.ifmap_group is not None, "a psum block's GEMMs name their ifmap group"
                by_group.setdefault(op.ifmap_group, []).append((u, g))
        block_ops = [x for group in by_group.values() for x in group]
        seen = dict.fromkeys(block, -1)
        for u, g in block_ops:   # each tile's GEMMs keep their order (the first one starts accumulating)
            assert g == seen[u] + 1, (u, g)
            seen[u] = g
        ops.extend(block_ops)
    pops, pushes = [], []   # (STORE tile freeing the rows, tile reusing them)
    for b in range(2, len(blocks)):
        for i, (lo, hi) in enumerate(slots[b]):
            users = [j for j, (l2, h2) in enumerate(slots[b - 2]) if l2 < hi and lo < h2]
            assert users in ([], [i]), (b, i, users)   # only the same slot's rows are reused
            if users:
                pushes.append((blocks[b - 2][i], blocks[b][i]))
    firsts = list(dict.fromkeys(u for u, _ in ops))
    stores = {u: i for i, u in enumerate(u for u, g in ops if g == len(unit.tiles[u].ops) - 1)}
    by_user = dict((user, owner) for owner, user in pushes)
    pops = [(by_user[u], u) for u in firsts if u in by_user]
    assert sorted(pushes, key=lambda p: stores[p[0]]) == pops, "s2c pairs out of order"
    return ops, psum_at, {owner for owner, _ in pushes}, {user for _, user in pushes}


def _ifmap_groups(unit: Unit, ops: list[tuple[int, int]], streams
                  ) -> tuple[list[tuple[int, int]], list[list], dict[int, int]]:
    """The ifmap groups of ``unit`` (see the module docstring).

    Returns, per compute instruction ``t`` in order, ``(half, row)``: the ifmap buffer
    half of its group (the group's index in the unit mod 2) and its ifmap row inside that
    half; per LOAD group ``t``, the ``(half, Load, ahead)`` of the ifmap tiles it loads,
    ``ahead`` for a later group's tile; and ``{t': t}`` for the LOAD groups ``t'`` whose
    ahead LOADs push ``l2c`` for the later group's first instruction ``t``.

    A group's tile goes ahead, into the LOAD group ``t'`` of the second instruction of the
    group before it (the earliest LOAD group whose ``c2l`` pop, instruction ``t' - 2``
    done, follows the last reader of the half), when the LOAD group of the group's first
    instruction ``t`` streams weights (``streams(t)``: its ``l2c`` push, later in the
    LOAD queue, then covers the tile too), or when no LOAD group strictly between ``t'``
    and ``t`` streams weights (the ahead LOADs push ``l2c`` themselves and instruction
    ``t`` pops it; the instructions in between pop none). Otherwise it is LOAD group
    ``t``'s own. In the first case the tile's LOADs are split (:meth:`Load.split
    <celosia.sw.compiler.tiling.Load.split>`) and spread over the LOAD groups ``t' .. t-1``,
    so that no weight LOAD of the group in between waits behind the whole tile."""
    rows, firsts, loads = [], [], []
    prev = None
    for u, g in ops:
        tile = unit.tiles[u]
        op = tile.ops[g]
        shared = getattr(op, "ifmap_group", None)
        if unit.resident:
            key, tile_loads, row = ("block", tile.block), tile.block_loads, op.ifmap_row
        elif shared is not None:
            owner = ("psum", tile.psum_block) if tile.psum_block is not None else ("tile", u)
            key, tile_loads, row = ("ops", owner, shared), op.ifmap, op.ifmap_row
        else:
            key, tile_loads, row = ("op", u, g), op.ifmap, 0
        t = len(rows)
        if key != prev:
            firsts.append(t)
            loads.append(tile_loads)
        else:   # a psum block's other tiles carry copies of the group's LOADs, unused
            assert unit.resident or tile.psum_block is not None or not tile_loads, \
                "only a group's first GEMM loads its tile"
        prev = key
        rows.append(((len(firsts) - 1 + unit.half) % 2, row))
    at, pushes = [[] for _ in rows], {}
    for i, first in enumerate(firsts):
        t = firsts[i - 1] + 1 if i > 0 else first
        half = (i + unit.half) % 2
        if t < first and streams(first) and loads[i]:
            # spread over the LOAD groups t .. first-1, a few input rows at a time, so that
            # the weight LOADs in between wait for no long ifmap LOAD (in-order queue)
            span = first - t
            pieces = [p for ld in loads[i]
                      for p in ld.split(min(span // len(loads[i]), ld.n0 * ld.n1 * ld.n2 // AHEAD_PIECE_BYTES))]
            for k, piece in enumerate(pieces):
                at[t + k * span // len(pieces)].append((half, piece, True))
            continue
        if t < first and not streams(first):
            if any(streams(x) for x in range(t + 1, first)) or not loads[i]:
                t = first
            else:
                pushes[t] = first
        at[t].extend((half, ld, t < first) for ld in loads[i])
    return rows, at, pushes
