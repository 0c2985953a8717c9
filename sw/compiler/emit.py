"""Emission: a lowered :class:`~celosia.sw.compiler.tiling.Unit` -> instruction words.

The instruction stream of a unit is LOAD group 0, then for each compute instruction
``t``: compute instruction ``t``, LOAD group ``t+1`` (and the STORE of a tile after its
last GEMM). Every LOAD sits in some LOAD group; the LOAD queue runs them in that order.
Compute instruction ``t`` comes before LOAD group ``t+1`` (it needs none of its LOADs):
the fetch is in order and stops at an instruction whose queue is full, so with the
group first, a LOAD queue full of LOADs still waiting for a buffer half kept the fetch
from pushing ``t`` and left the PE array idle (docs/compiler.md, "Emission order").

Token protocol (VTA-style; counts balance and every pop refers to an earlier push in
program order, so an in-order fetch never deadlocks), per unit:

* ``c2l``: the first LOAD of LOAD group ``s >= 2`` pops it, pushed by compute
  instruction ``s-2`` (when group ``s`` has LOADs): a LOAD may go into LOAD group ``s``
  only if every instruction that read the rows it overwrites is ``s-2`` or earlier
  (instructions finish in order).
* ``l2c``: a compute instruction that needs LOADs pops one, pushed by the last LOAD (in
  queue order) of those it needs; the LOADs are placed so that these pushes come in the
  order of the instructions (asserted), so pushes and pops pair up.
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

Double buffering. Each LOAD *item* (the LOADs some instruction ``d`` needs) has a
*release*, the first LOAD group it may go into, and a place in the queue at most ``d``;
the queue is sorted by place (the last item of each instruction's no earlier than the
last of every earlier instruction's, so that the ``l2c`` pushes stay in instruction
order) and each LOAD goes into LOAD group ``max(release, the previous LOAD's group)``,
or a later one up to ``d`` (and up to the ``d`` of every item after it in the queue)
while that group already holds ``queue_depth / 2`` LOADs (:func:`_schedule`). The fetch is in order: the LOADs of group
``s`` come after compute instruction ``s-1``, and the first of them waits (``c2l``) for
instruction ``s-2``; a group of more LOADs than the LOAD queue holds would stop the fetch
before instruction ``s`` until instruction ``s-2`` is done, leaving the compute queue
empty. The items:

* the unit's PPU parameters, in pieces of whole parameter rows, each for the last
  instruction of the first output tile that reads it (only STOREs read them;
  :func:`_params_items`);
* **ifmap groups**: the runs of consecutive compute instructions that read one ifmap
  tile, loaded once, alternating between the ifmap halves (plus ``Unit.half``, 1 for a
  layer whose input the previous layer keeps in ifmap half 1:
  :mod:`~celosia.sw.compiler.keep`). A group is a whole block of output tiles in a
  resident unit (``OutTile.block``, loaded by ``block_loads``), the GEMMs of one output
  tile with the same ``GemmOp.ifmap_group`` (e.g. the kernel taps of one input-channel
  chunk of a conv), in a psum block the GEMMs of all its tiles with the same
  ``ifmap_group`` (one input chunk; the LOADs of the block's first tile), or a single
  instruction. Group ``i`` overwrites the half of group ``i-2``, whose instructions all
  precede group ``i-1``: its release is the second instruction of group ``i-1``, so it
  loads while group ``i-1`` computes, its LOADs placed evenly in the queue up to the
  group's first instruction (the last one there). When weight groups are due in between,
  the tile is split by input rows into about one piece more than those groups (each of
  its ``n`` LOADs into ``ceil((groups + 1) / n)``, each piece at least
  ``AHEAD_PIECE_BYTES``), so that their LOADs do not wait behind the whole tile; no more,
  as every piece is one more LOAD in the queue;
* **weight groups**: the unit's streamed GEMMs (weight tiles not resident,
  :class:`~celosia.sw.compiler.alloc.WeightPlan`) in runs of 1, 2, 4, ... tiles up to a
  streaming half (a short wait for the unit's first GEMM, then few, long LOADs),
  alternating between the two halves, tile ``j`` of a group at ``j`` times the unit's
  largest tile; the tiles' LOADs are merged where they form a progression
  (:func:`~celosia.sw.compiler.tiling.merge_loads`: a conv's taps, an fc layer's k
  tiles). With ``Unit.group_loads`` set, a group ends early rather than be more merged
  LOADs than that: a group's LOADs queue at its first GEMM (after the ifmap pieces due
  before it), so a long unmerged group piles up in the LOAD groups just before that GEMM,
  however ``_schedule`` spreads them (the rs lowering sets ``queue_depth // 2``). Group
  ``w`` overwrites the half of group ``w-2``: its release is the instruction after the
  first GEMM of group ``w-1``, and so is its place in the queue: a weight group loads as
  soon as its half is free, ahead of an ifmap tile that waits for its own half (with
  the weights placed at their deadline, the LOAD queue waited behind such a tile while
  the weight half stood free: 5.8% more cycles on 16x16 ws ResNet-18 conv4_x).

A compute instruction whose weight tile is resident and whose ifmap is already in the
buffer needs no LOAD and pops no ``l2c``.
"""

from __future__ import annotations

from bisect import bisect_left
import dataclasses
from dataclasses import dataclass

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.rtl.isa import Buffer, Opcode
from celosia.sw.analysis import load_bytes
from celosia.sw.compiler.alloc import WeightPlan, streaming_plan, weight_tile_rows
from celosia.sw.compiler.tiling import Unit, VecOp, dep_bits, encode, merge_loads

__all__ = ["emit_unit", "weight_fetch", "AHEAD_PIECE_BYTES"]

#: The smallest piece an ifmap tile loaded ahead is split into (bytes moved, padding
#: included): each piece is one more 32-byte LOAD instruction to fetch, at most ~6% more.
AHEAD_PIECE_BYTES = 16 * isa.INSN_BYTES


def emit_unit(unit: Unit, config: AccelConfig, first: bool, last: bool,
              weights: WeightPlan | None = None, memo: dict | None = None) -> list[int]:
    """Instructions of one unit (see the module docstring for the tokens); ``first`` /
    ``last``: whether it is the program's first / last unit; ``weights``: where the weight
    tiles live (default: every tile streams into the two buffer halves); ``memo``: a dict
    shared with :func:`weight_fetch` calls on the same units and plan (their weight groups
    are computed once). An instruction field out of range is an
    :class:`~celosia.sw.compiler.tiling.EncodeError`."""
    weights = weights or streaming_plan(config)
    p_half = config.psum_rows // 2
    ops, psum_at, s2c_push, s2c_pop = _psum_blocks(unit, p_half)
    T = len(ops)
    i_half = config.ifmap_rows // 2
    weight_rows, w_items = _memo_weight_groups(unit, ops, weights, memo)
    ifmap_rows, items = _ifmap_groups(unit, ops, i_half, sorted(it.deadline for it in w_items))
    items += w_items
    items += _params_items(unit, ops, items, config.cols)
    slots, pops = _schedule(items, T, max(1, config.queue_depth // 2))

    def load_group(t):
        return [ld.encode(buf, base, dep_bits(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                                              push_next=push))
                for i, (ld, buf, base, push) in enumerate(slots[t])]

    pop_prev, pop_next, push_prev, push_next = (dep_bits(**{flag: True}) for flag in
                                                ("pop_prev", "pop_next", "push_prev", "push_next"))

    def compute(t):
        u, g = ops[t]
        tile = unit.tiles[u]
        op = tile.ops[g]
        half, row = ifmap_rows[t]
        ifmap_row = half * i_half + row
        dep = ((pop_prev if t in pops else 0) | (pop_next if g == 0 and u in s2c_pop else 0)
               | (push_prev if t + 2 < T and slots[t + 2] else 0)
               | (push_next if g == len(tile.ops) - 1 else 0))
        if isinstance(op, VecOp):
            return op.encode(ifmap_row=ifmap_row, psum_row=psum_at[u], m_len=tile.m_len, dep=dep)
        assert g > 0 or not op.m_skip and op.m_rows is None, "a tile's first GEMM covers the tile"
        return op.encode(accumulate=int(g > 0), ifmap_row=ifmap_row, weight_row=weight_rows[t],
                         psum_row=psum_at[u] + op.m_skip,
                         m_len=tile.m_len - op.m_skip if op.m_rows is None else op.m_rows,
                         dep=dep, in_zp=unit.in_zp)

    def store(u):
        """The tile's STOREs (one per run: the first waits for the GEMMs, the last frees the slot)."""
        n_tiles = len(unit.tiles)
        tile, st = unit.tiles[u], unit.tiles[u].store
        pitch, rows = st.run_rows(tile.m_len)
        return [st.encode(psum_row=psum_at[u] + r * pitch, param_row=tile.param_row * config.cols, m_len=rows,
                          dep=dep_bits(pop_prev=r == 0, push_prev=r == st.runs - 1 and (
                              (u in s2c_push) or (u == n_tiles - 1 and not last))), run=r)
                for r in range(st.runs)]

    out: list[int] = []
    out.extend(load_group(0))
    for t in range(T):
        out.append(compute(t))
        if t + 1 < T and slots[t + 1]:
            out.extend(load_group(t + 1))
        u, g = ops[t]
        if g == len(unit.tiles[u].ops) - 1:
            out.extend(store(u))
    if not last:
        out.append(encode(Opcode.NOP, dep=dep_bits(pop_next=True, push_prev=True)))
    return out


def weight_fetch(units: list[Unit], weights: WeightPlan, memo: dict | None = None) -> tuple[int, int]:
    """``(DRAM bytes, LOAD instructions)`` of the weight LOADs :func:`emit_unit` emits for
    ``units`` under ``weights``: the bytes they read plus their 32-byte instructions (e.g.
    what a layer's weights cost per run when they stream instead of staying resident).
    ``memo``: as for :func:`emit_unit`."""
    loads = [ld for unit in units
             for item in _memo_weight_groups(unit, _psum_blocks(unit, 1 << 30)[0], weights, memo)[1]
             for ld, _, _ in item.loads]
    return sum(load_bytes(ld.__dict__) for ld in loads) + isa.INSN_BYTES * len(loads), len(loads)


def _memo_weight_groups(unit: Unit, ops: list[tuple[int, int]], weights: WeightPlan, memo: dict | None):
    """:func:`_weight_groups`, looked up in / stored into ``memo``: keyed by the unit object
    and what of the plan they depend on (its resident rows -- the dict object, shared by
    copies of a plan that differ only in their report fields -- and its streaming halves);
    the objects are kept in the memo, so their ids stay theirs. The emission order ``ops``
    of a unit does not depend on the psum half size: every caller passes the same."""
    if memo is None:
        return _weight_groups(unit, ops, weights)
    key = (id(unit), id(weights.rows) if weights.rows else None, weights.halves, weights.half_rows)
    if key not in memo:
        memo[key] = (unit, weights.rows, _weight_groups(unit, ops, weights))
    return memo[key][2]


@dataclass
class _Item:
    """LOADs that compute instruction ``deadline`` needs, which may go into any LOAD group
    from ``release`` on (the buffer rows they write were last read by instruction
    ``release - 2`` or earlier); ``order``: its wished place in the LOAD queue (at most
    ``deadline``: the deadline for the parameters, spread from the release to the deadline
    for an ifmap tile's pieces, the release for a weight group), which :func:`_schedule`
    moves on where the l2c pushes would otherwise come out of order."""
    release: int
    deadline: int
    order: int
    rank: int                    # ties: parameters, then ifmap, then weights
    loads: list                  # (Load, Buffer, row base)


def _params_items(unit: Unit, ops: list[tuple[int, int]], items: list[_Item],
                  cols: int) -> list[_Item]:
    """The LOAD items of the unit's PPU parameters, in pieces of whole parameter rows (of
    ``cols`` channels), each at least :data:`AHEAD_PIECE_BYTES`. Only STOREs read them,
    and the STORE of a tile waits (``c2s``) for the tile's last instruction ``d``: a
    piece's deadline is the ``d`` of the first tile (in emission order) whose row it
    holds, and its place in the LOAD queue just before ``d``'s own LOADs, so the
    instructions before ``d`` do not wait behind it. In one piece, a 16x16 unit's 512
    channels were 4.6 KB, about 1,100 cycles on the 64-bit bus, in the middle of the
    weight stream (677 cycles of idle PE array on 16x16 feie ResNet-18 conv5_x); in
    pieces they fill the bus's gaps. The first piece stays first (deadline and place 0)
    when no other LOAD opens LOAD group 0, whose first LOAD pops the barrier token of the
    previous unit."""
    prm = unit.params
    n_rows = prm.n1 // cols
    per = max(1, -(-AHEAD_PIECE_BYTES // (cols * prm.n0)))
    due = {}                    # param row -> the last instruction of its first tile
    for t, (u, g) in enumerate(ops):
        if g == len(unit.tiles[u].ops) - 1:
            due.setdefault(unit.tiles[u].param_row, t)
    out = []
    for r0 in range(0, n_rows, per):
        r1 = min(n_rows, r0 + per)
        d = min((due[r] for r in range(r0, r1) if r in due), default=len(ops) - 1)
        piece = dataclasses.replace(prm, dram_offset=prm.dram_offset + r0 * cols * prm.dram_stride1,
                                    n1=(r1 - r0) * cols, buf_row=prm.buf_row + r0 * cols * prm.buf_stride1)
        out.append(_Item(0, d, d, 0, [(piece, Buffer.PARAM, 0)]))
    if not any(it.loads and it.release == 0 and it.order == 0 for it in items):
        first = min(out, key=lambda it: it.deadline)
        first.deadline = first.order = 0
    return out


def _schedule(items: list[_Item], T: int, per_group: int) -> tuple[list[list], set[int]]:
    """The LOAD groups and the ``l2c`` pairing (see the module docstring): the LOADs in
    queue order (``order``), each in LOAD group ``max(its release, the previous LOAD's
    group)``, moved on while that group holds ``per_group`` LOADs, never past the
    item's deadline nor the deadline of any item after it in the queue (a later item goes
    into the same group or a later one: a weight group of 10 LOADs spread from its release
    left the ifmap piece queued behind it, due one group later, no group; 16x16 and 4x4
    ``feie`` ResNet-18 layers failed to compile), so that group holds more; each compute instruction that needs LOADs pops one ``l2c``, pushed by the
    last LOAD (in queue order) of the items it needs. Returns per LOAD group its
    ``(Load, Buffer, row base, push l2c)`` and the instructions that pop ``l2c``."""
    slots: list[list] = [[] for _ in range(T)]
    last: dict[int, tuple[int, int]] = {}    # instruction -> (LOAD group, index) of its l2c push
    slot = 0
    # the last item of each instruction's items (its LOADs push the l2c) goes no earlier in
    # the queue than the last item of an earlier instruction's, so the pushes come in order
    place = {id(it): it.order for it in items}
    finals: dict[int, _Item] = {}
    for item in items:
        if item.loads and (item.deadline not in finals or (item.order, item.rank) >= (
                finals[item.deadline].order, finals[item.deadline].rank)):
            finals[item.deadline] = item
    reach = 0
    for d in sorted(finals):
        place[id(finals[d])] = reach = max(reach, finals[d].order)
    queue = sorted((it for it in items if it.loads), key=lambda it: (place[id(it)], it.deadline, it.rank))
    # an item's LOADs move on to later groups no further than its own deadline nor the
    # deadline of any item after it in the queue (which goes into the same group or later)
    caps = [0] * len(queue)
    cap = T - 1
    for i in range(len(queue) - 1, -1, -1):
        cap = caps[i] = min(cap, queue[i].deadline)
    for item, cap in zip(queue, caps):
        slot = max(slot, item.release)
        assert slot <= cap, (slot, item)
        for ld, buf, base in item.loads:
            while len(slots[slot]) >= per_group and slot < cap:
                slot += 1
            slots[slot].append([ld, buf, base, False])
        last[item.deadline] = (slot, len(slots[slot]) - 1)
    pushes = [last[t] for t in sorted(last)]
    assert pushes == sorted(pushes) and len(set(pushes)) == len(pushes), "l2c pairs out of order"
    for s, i in pushes:
        slots[s][i][3] = True
    return [[tuple(x) for x in group] for group in slots], set(last)


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


def _ifmap_groups(unit: Unit, ops: list[tuple[int, int]], i_half: int, weight_due: list[int]
                  ) -> tuple[list[tuple[int, int]], list[_Item]]:
    """The ifmap groups of ``unit`` (see the module docstring).

    Returns, per compute instruction ``t`` in order, ``(half, row)``: the ifmap buffer
    half of its group (the group's index in the unit, plus ``Unit.half``, mod 2) and its
    ifmap row inside that half; and the LOAD items of the groups' tiles. Group ``i``'s
    tile may load from the LOAD group of the second instruction of group ``i-1`` on (the
    earliest whose ``c2l`` pop follows the last reader of the half, the last instruction
    of group ``i-2``); its LOADs are spread in queue order over the instructions up to
    the group's first one (the last one at it), split (:meth:`Load.split
    <celosia.sw.compiler.tiling.Load.split>`) into about one piece more than the weight
    groups due in between (``weight_due``: their first GEMMs, sorted): each of the tile's
    ``n`` LOADs into ``ceil((groups + 1) / n)`` pieces of at least ``AHEAD_PIECE_BYTES``. (Pieces by size alone, 512 bytes, filled the LOAD queue:
    ResNet-18 conv3_x on 8x8 ws took 962,782 cycles with them and 909,696 with this
    rule; AlexNet FC6 at batch 16, whose input tiles are long next to its 16-row GEMMs,
    needs them: 9.80 M cycles unsplit, 9.46 M split.)"""
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
    items = []
    for i, first in enumerate(firsts):
        base = (i + unit.half) % 2 * i_half
        release = min(firsts[i - 1] + 1, first) if i > 0 else first
        span = first - release
        between = bisect_left(weight_due, first) - bisect_left(weight_due, release)
        each = ceil_div(between + 1, len(loads[i])) if loads[i] else 0
        pieces = ([p for ld in loads[i] for p in ld.split(
                      min(span // len(loads[i]), each, ld.n0 * ld.n1 * ld.n2 // AHEAD_PIECE_BYTES))]
                  if span and loads[i] else loads[i])
        for k, piece in enumerate(pieces):
            items.append(_Item(release, first, release + (k + 1) * span // len(pieces), 1,
                               [(piece, Buffer.IFMAP, base)]))
    return rows, items


def _weight_groups(unit: Unit, ops: list[tuple[int, int]], weights: WeightPlan
                   ) -> tuple[list[int | None], list[_Item]]:
    """The weight groups of ``unit`` (see the module docstring): its streamed GEMMs (not
    resident, :class:`~celosia.sw.compiler.alloc.WeightPlan`) in runs of 1, 2, 4, ... tiles
    (a short wait for the unit's first GEMM), up to what a streaming half holds at a pitch
    of the unit's largest tile and, with ``Unit.group_loads``, as many as merge into at
    most that many LOADs (at least one tile); group ``w`` in half ``w % 2``, its tiles'
    LOADs merged (:func:`~celosia.sw.compiler.tiling.merge_loads`).

    Returns each compute instruction's weight row (``None`` for a VEC) and the LOAD items:
    group ``w`` may load from LOAD group ``t + 1`` on, ``t`` the first GEMM of group
    ``w-1`` (the half's last readers, group ``w-2``, all come before ``t``)."""
    rows: list[int | None] = [None] * len(ops)
    streamed, sops = [], []   # the streamed GEMMs' instruction indices, and the GEMMs
    tiles, resident = unit.tiles, weights.rows
    for t, (u, g) in enumerate(ops):
        op = tiles[u].ops[g]
        if isinstance(op, VecOp):
            continue
        if resident:
            rows[t] = weights.row(op)
            if rows[t] is not None:
                continue
        if op.weight:
            streamed.append(t)
            sops.append(op)
    if not streamed:
        return rows, []
    pitch = max(map(weight_tile_rows, sops))
    cap = max(1, weights.half_rows // pitch)

    def few_loads(i, n):   # the LOADs of group sops[i:i+n], merged, within Unit.group_loads
        return unit.group_loads is None or len(merge_loads(
            [ld for op in sops[i:i + n] for ld in op.weight])) <= unit.group_loads

    groups, size, i = [], 1, 0   # (first, members) in the streamed GEMMs
    while i < len(streamed):
        n = min(size, len(streamed) - i)
        if not few_loads(i, n):   # the most members that merge into few LOADs
            lo, hi = 1, n - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if few_loads(i, mid) else (lo, mid - 1)
            n = lo
        groups.append((i, n))
        i += n
        size = min(2 * size, cap)
    items = []
    for w, (i, n) in enumerate(groups):
        base = weights.halves[w % 2]
        tile_loads = []
        for j in range(n):
            rows[streamed[i + j]] = base + j * pitch
            for ld in sops[i + j].weight:
                moved = object.__new__(type(ld))   # copy.copy, without its generic protocol
                moved.__dict__.update(ld.__dict__, buf_row=ld.buf_row + j * pitch)
                tile_loads.append(moved)
        release = streamed[groups[w - 1][0]] + 1 if w > 0 else 0
        items.append(_Item(release, streamed[i], release, 2,
                           [(ld, Buffer.WEIGHT, base) for ld in merge_loads(tile_loads)]))
    return rows, items
