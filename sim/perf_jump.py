"""The ``perf`` model's jump: steps taken once are replayed, exactly (docs/perf.md, "Speed").

A *segment* of a run goes from the cycle fetch pushes one instruction into its queue to
the cycle it pushes the next. At the start of a segment the machine's state is written
down *canonically*, relative to that cycle ``T`` and to the index ``P`` of the instruction
fetch assembles next: every pending cycle minus ``T`` (heap, queue entries, tokens, bus,
DMA requests and responses, engine registers, event counters not yet counted, ...), every
live instruction index minus ``P``, every cycle that only a comparison "before now" still
reads clamped to 0, every running total (busy intervals, counters, fetch addresses) left
out. What the segment does then depends only on that state and on the *timing key* of the
instructions it looks at: the live ones and instruction ``P`` (:meth:`Jump.label`: the
fields with those removed that no timing rule reads, see there). So the first time a
(state, keys) pair occurs the model steps through the segment and writes down what it did
relative to ``T`` and ``P`` (the issue / ``done`` cycles it set, the busy intervals and
event counts it added, the state at its end); every later time it replays that instead of
stepping, and goes on from the state at the end, until a pair it has not seen: there it
writes the state back into the machine (:meth:`Jump.restore`) and steps again.

Only the timing model jumps: no functional execution (``execute=False``, not ``feie``,
whose timing reads the data), no grant log, no race check. A segment in which fetch takes
a descriptor or requests one, a node's counters are snapshotted, or anything stops is never
replayed (it is always stepped through).
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from celosia.rtl import isa
from celosia.rtl.arrays.engine import legal_gemm
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT
from celosia.rtl.dma import load_plan, store_plan
from celosia.rtl.isa import Opcode

__all__ = ["Jump"]

_BUSY = 1 << 62          # an engine's ready_at while it runs
#: Fields no timing rule reads, per opcode; the DRAM address fields are added back as
#: :meth:`Jump.label` says.
_DROP = {
    Opcode.LOAD: ("buf", "buf_row", "buf_stride1", "buf_stride2", "lane0", "pad_value",
                  "dram_offset", "dram_stride1", "dram_stride2"),
    Opcode.STORE: ("psum_row", "param_row", "out_zp", "act_min", "act_max", "single_round",
                   "buf_row", "buf_stride", "lane0", "dram_offset", "dram_stride"),
    Opcode.GEMM: ("ifmap_row", "weight_row"),
}


def _rel(x, t):
    return None if x is None else x - t


def _clamp(x, t):
    """A cycle only compared with later cycles ("has it passed?"): any one up to ``t``
    reads the same from ``t + 1`` on."""
    if x is None:
        return None
    if x >= _BUSY:
        return "busy"
    return x - t if x > t else 0


def _unclamp(x, t):
    if x is None:
        return None
    if x == "busy":
        return _BUSY
    return x + t


class Jump:
    """The jump of one run of :class:`celosia.sim.perf._Machine` ``m`` (see the module
    docstring). :attr:`hits` counts the segments replayed, :attr:`misses` those stepped."""

    def __init__(self, m):
        self.m = m
        self.labels = []             # per instruction (fetch order): its timing key's id
        self.drop = dict(_DROP)
        if m.df != "ws":
            self.drop[Opcode.GEMM] += ("psum_row",)
        self.keys = {}               # timing key -> id
        self.by_word = {}            # instruction word -> (decoded, key id, queue and pops)
        self.table_key = self.table = None   # the node's instructions (:meth:`_node_table`)
        self.by_id = {}              # id of a decoded instruction -> key id
        self.states = {}             # canonical state -> id
        self.canon = []              # id -> (state, live indices - P, clamped totals)
        self.memo = {}               # (state id, key ids) -> (next state id, cycles, effects)
        self.max_load = 0            # the most requests a LOAD seen so far can make
        self.clamp_left = 3 * m.cfg.queue_depth + GEMMS_IN_FLIGHT + 8
        self.clamp_node = m.f_depth // isa.INSN_WORDS + 4
        self.rec = None              # the segment being stepped through
        self.hits = self.misses = 0

    # -- timing keys ---------------------------------------------------------------------
    def label(self, d) -> int:
        """The id of the timing key of the decoded instruction ``d``: its fields less
        those no timing rule reads (:data:`_DROP`), checked against each rule:

        * LOAD (rtl/dma.py ``load_plan``): a run of ``n0`` elements from byte ``a`` makes
          one request per element (``dram_stride0 != 1``) or one per bus word it touches
          (``dram_stride0 == 1``), which depends on ``a`` modulo the bus word ``B``; ``a`` is
          the base register (fixed in a run) plus ``dram_offset + i1 * dram_stride1 + i2 *
          dram_stride2``: with ``dram_stride0 == 1`` those three are kept modulo ``B``,
          otherwise dropped. The buffer side (``buf``, rows, strides, lanes, the pad value)
          only places the data.
        * STORE (``store_plan``): its chunks split at bus words from ``dram_offset + m *
          dram_stride``: both kept modulo ``B`` (dropped for ``to_buf``); the psum, param and
          buffer rows and the PPU parameters only place and compute the data.
        * GEMM: every engine's timing reads the buffer rows only through
          :func:`~celosia.rtl.arrays.engine.legal_gemm` (whether the GEMM is in range): the
          ifmap and weight rows are replaced by that; ``psum_row`` is kept for ``ws`` (its
          psum hazard, ``ws.WSTiming``) and dropped for ``os`` and ``rs``.
        * VEC, NOP: every field.
        """
        op = d["op"]
        drop = self.drop.get(op, ())
        key = [op]
        for name, v in d.items():
            if name in drop:
                continue
            key.append(tuple(v.values()) if isinstance(v, dict) else v)
        nb = self.m.cfg.bus_bytes
        if op == Opcode.LOAD:
            if d["dram_stride0"] == 1:
                key += (d["dram_offset"] % nb, d["dram_stride1"] % nb, d["dram_stride2"] % nb)
            self.max_load = max(self.max_load, d["n1"] * d["n2"] * (d["n0"] + 1))
        elif op == Opcode.STORE:
            if not d["to_buf"]:
                key += (d["dram_offset"] % nb, d["dram_stride"] % nb)
        elif op == Opcode.GEMM:
            key.append(legal_gemm(d, self.m.cfg) is None)
        key = tuple(key)
        lab = self.keys.get(key)
        if lab is None:
            lab = self.keys[key] = len(self.keys)
        return lab

    def _word(self, word):
        """The instruction ``word`` decoded, its key id (None: illegal) and, for a legal
        one, :meth:`~celosia.sim.perf._Machine.queue_pops`."""
        got = self.by_word.get(word)
        if got is None:
            m = self.m
            d = m.memo.get(word)
            if d is None:
                d = m.memo[word] = isa.decode(word)
            illegal = d.get("illegal")
            got = self.by_word[word] = (d, None if illegal else self.label(d),
                                        None if illegal else m.queue_pops(d))
        return got

    def _node_table(self):
        """The instructions of the node fetch walks, as :meth:`_word` gives them, one entry
        per instruction (None where its block is not all in the DRAM). The jump runs only
        without functional execution, which writes no DRAM, so these are the words fetch
        reads; each distinct word is decoded once."""
        m = self.m
        key = (m.f_node_first, m.f_node_n, m.f_node_base)
        if self.table_key != key:
            self.table_key, self.table = key, None
            n, base = m.f_node_n, m.f_node_base
            if 0 <= base and base + n * isa.INSN_BYTES <= len(m.sim.dram):
                rows = np.frombuffer(m.sim.dram, dtype=f"V{isa.INSN_BYTES}", count=n, offset=base)
                uniq, inverse = np.unique(rows, return_inverse=True)
                gots = [self._word(int.from_bytes(u.tobytes(), "little")) for u in uniq]
                self.table = [gots[i] for i in inverse.tolist()]
        return self.table

    def fetch(self, p):
        """Instruction ``p`` of the node fetch walks: its :meth:`_word` entry (None when it
        lies outside the node)."""
        m = self.m
        k = p - m.f_node_first
        if not 0 <= k < m.f_node_n:
            return None
        table = self._node_table()
        if table is not None:
            return table[k]
        a = m.f_node_base + k * isa.INSN_BYTES
        return self._word(int.from_bytes(m.sim.dram[a:a + isa.INSN_BYTES], "little"))

    # -- canonical state -----------------------------------------------------------------
    def state(self, T):
        """The machine's canonical state after the push in cycle ``T`` (see the module
        docstring), the live instruction indices relative to ``P`` (those a segment can
        read or give an issue / ``done``) and the clamped totals (:meth:`_agrees`); None where
        the jump does not apply (a stop, an error, fetch outside one readable node)."""
        m = self.m
        P = m.f_insn
        if (m.stops or m.fails or m.stopped is not None or m.f_req_err or not m.f_block_ok
                or m.f_req_end or m.f_words_node != m.f_node
                or any(node != m.f_node for _, _, node in m.f_arr)):
            return None
        live = []
        queues = []
        for q in m.queues:
            j = q.issued
            items = q.items[j:]
            live.extend(items)
            queues.append((tuple(w - T for w in q.W[j:]), tuple(r - T for r in q.R[j:]),
                           tuple(i - P for i in items), _clamp(q.last_issue, T)))
        load = None
        if m.l_reqs is not None:
            if m.l_endless:
                return None
            live.append(m.l_idx)
            load = (m.l_idx - P, m.l_accept - T, m.l_i, tuple(x - T for x in m.l_pops),
                    _clamp(m.l_run_from, T), _clamp(m.l_last_pop, T))
        store = None
        if m.s_ready_at >= _BUSY:
            live.append(m.s_idx)
            store = (m.s_idx - P, m.s_accept - T, _clamp(m.s_want, T), m.s_fi)
        n = len(m.g_accepts)
        g_lo = max(0, n - GEMMS_IN_FLIGHT)
        os_state = None
        if m.os is not None:
            o = m.os
            refs = [s[0] for s in o.stages if s] + [s[0] for s in o.fill_rest]
            if o.reg is not None:
                refs.append(o.reg[0])
            g_lo = min([g_lo] + refs)
            os_state = (tuple(s and (s[0] - n,) + tuple(s[1:]) for s in o.stages),
                        tuple((s[0] - n,) + tuple(s[1:]) for s in o.fill_rest),
                        _rel(o.boundary, T),
                        o.reg and (o.reg[0] - n, o.reg[1] - T, o.reg[2] is None),
                        _clamp(o.leave, T), _clamp(o.idle_from, T), _clamp(o.last_end, T))
        gemms = []
        for j in range(g_lo, n):
            e = m.g_ends[j]
            if e is None:
                live.append(m.g_idx[j])
                gemms.append((m.g_accepts[j] - T, None, m.g_idx[j] - P))
            else:
                gemms.append((_clamp(m.g_accepts[j], T), _clamp(e, T), None))
        ws = m.ws
        nd = m.f_node
        desc = tuple((k - nd, min(m.desc_left[k], self.clamp_left), _clamp(m.desc_max[k], T))
                     for k in range(len(m.desc_snaps), len(m.desc_left)))
        st = (
            tuple(sorted(c - T for c in m.queued)),
            tuple(queues),
            tuple(m.tok.value.values()),
            tuple(sorted((a - T, name, dl, _rel(i, P)) for a, name, dl, i in m.tok.pending)),
            m.tok.changed - T,
            _clamp(m.dram_free, T), m.rr_last,
            m.f_desc_pending and m.f_desc_resp > T, _clamp(m.f_desc_resp, T),
            m.f_slot is not None, _clamp(m.f_slot_from, T),
            m.f_desc_ok.get(m.f_desc_idx), m.f_insn_ok,
            min(m.f_node_left, self.clamp_node), m.f_req_word,
            m.f_count, tuple(a - T for a, _, _ in m.f_arr),
            _rel(m.f_blocked_at, T), _rel(m.f_last_push, T),
            load, _clamp(m.l_ready_at, T),
            store, _clamp(m.s_ready_at, T),
            tuple(gemms), n - g_lo, os_state,
            _clamp(m.v_end, T), _clamp(m.v_accept, T),
            None if m.nop_at is None or m.nop_at < T else m.nop_at - T,
            _clamp(m.e_ready_at, T),
            (_clamp(ws.ready_at, T), _clamp(ws.last_read, T), _clamp(ws.last_end, T),
             tuple((row, _clamp(t, T)) for row, t in ws.recent)),
            self._rs_state(T),
            tuple(sorted((c - T, name, v) for c, name, v in m.future)),
            len(m.insns) - m.n_done, _rel(m.last_done, T),
            desc,
            m.last_progress - T, tuple(sorted(c - T for c in m.fin_heap)),
        )
        return st, tuple(sorted({i - P for i in live})), (min(m.f_node_left, self.clamp_node), m.f_count + len(m.f_arr),
                        tuple(left for _, left, _ in desc))

    def _rs_state(self, T):
        """``rs.RSTiming``: its GEMM's window, last-step and last-MAC cycles are compared with
        acceptances (from ``T`` on) and its ``done`` starts the next GEMM: kept relative to
        ``T`` while the window is open, the idle cycle only clamped once it has closed."""
        r = self.m.rs
        if r.cur is None or r.cur[2] < T:
            idle = r.idle_at if r.cur is None else max(r.idle_at, r.cur[4] + 1)
            return (_clamp(idle, T), None)
        return (_clamp(r.idle_at, T), tuple(x - T if i != 3 else x for i, x in enumerate(r.cur)))

    def restore(self, sid, T):
        """Write the canonical state ``sid`` back into the machine at cycle ``T`` (its
        instruction index ``P`` is ``m.f_insn``)."""
        m = self.m
        P = m.f_insn
        st = self.canon[sid][0]
        (queued, queues, tok_value, tok_pending, tok_changed, dram_free, m.rr_last,
         desc_pending, desc_resp, slot_valid, slot_from, _, _, _, m.f_req_word,
         m.f_count, f_arr, blocked_at, last_push, load, l_ready_at, store, s_ready_at,
         gemms, n_out, os_state, v_end, v_accept, nop_at, e_ready_at, ws, rs, future,
         outstanding, last_done, desc, last_progress, fin_heap) = st
        m.now = T
        m.heap = [c + T for c in queued]
        m.queued = set(m.heap)
        for q, (W, R, items, last_issue) in zip(m.queues, queues):
            q.W, q.R = [w + T for w in W], [r + T for r in R]
            q.items, q.issued = [i + P for i in items], 0
            q.last_issue = _unclamp(last_issue, T)
        tok = m.tok
        tok.value = dict(zip(tok.value, tok_value))
        tok.pending = [(a + T, name, dl, None if i is None else i + P) for a, name, dl, i in tok_pending]
        tok.changed = tok_changed + T
        m.dram_free = _unclamp(dram_free, T)
        # (a replayed segment requests no descriptor: f_desc_pending and f_slot stay)
        m.f_desc_resp = _unclamp(desc_resp, T)
        m.f_slot_from = _unclamp(slot_from, T)
        # fetch: the words requested and not pushed are the next ones of the node
        nwords = m.f_count + len(f_arr)
        first = m.f_node_base + (P - m.f_node_first) * isa.INSN_BYTES
        words = [int.from_bytes(m.sim.dram[a:a + 8], "little") for a in range(first, first + 8 * nwords, 8)]
        m.f_words = words[:m.f_count]
        m.f_dec = None
        m.f_arr = deque((a + T, w, m.f_node) for a, w in zip(f_arr, words[m.f_count:]))
        m.f_req_addr = first + 8 * nwords
        m.f_words_req = m.f_taken + len(f_arr)
        m.f_node_left = m.f_node_n - (P - m.f_node_first) - nwords // isa.INSN_WORDS
        m.f_blocked_at, m.f_last_push = _unclamp(blocked_at, T), _unclamp(last_push, T)
        # the DMA engines
        m.l_ready_at = _unclamp(l_ready_at, T)
        if load is None:
            m.l_reqs = None
        else:
            idx, acc, m.l_i, pops, run_from, last_pop = load
            m.l_idx, m.l_accept = idx + P, acc + T
            m.l_reqs = load_plan(m.insns[m.l_idx], m.cfg, m.sim.base)
            m.l_pops = deque(x + T for x in pops)
            m.l_run_from, m.l_last_pop = _unclamp(run_from, T), _unclamp(last_pop, T)
            m.l_endless = False
        m.s_ready_at = _unclamp(s_ready_at, T)
        if store is None:
            m.s_want = None
        else:
            idx, acc, want, m.s_fi = store
            m.s_idx, m.s_accept = idx + P, acc + T
            m.s_want = _unclamp(want, T)
            m.s_T, m.s_flushes = store_plan(m.insns[m.s_idx], m.cfg, m.sim.base)
        # compute
        n = len(m.g_accepts)
        for j, (a, e, idx) in zip(range(n - n_out, n), gemms):
            if e is None:
                m.g_accepts[j], m.g_ends[j], m.g_idx[j] = a + T, None, idx + P
            else:
                m.g_accepts[j], m.g_ends[j] = _unclamp(a, T), _unclamp(e, T)
        if os_state is not None:
            o = m.os
            stages, fill_rest, boundary, reg, leave, idle_from, last_end = os_state
            o.stages = [s and (s[0] + n,) + tuple(s[1:]) for s in stages]
            o.fill_rest = [(s[0] + n,) + tuple(s[1:]) for s in fill_rest]
            o.boundary = _unclamp(boundary, T)
            if reg is None:
                o.reg = None
            else:
                j = reg[0] + n
                o.reg = (j, reg[1] + T, legal_gemm(m.insns[m.g_idx[j]], m.cfg))
            o.leave, o.idle_from, o.last_end = (_unclamp(x, T) for x in (leave, idle_from, last_end))
        m.v_end, m.v_accept = _unclamp(v_end, T), _unclamp(v_accept, T)
        m.nop_at = None if nop_at is None else nop_at + T
        m.e_ready_at = _unclamp(e_ready_at, T)
        w = m.ws
        w.ready_at, w.last_read, w.last_end = (_unclamp(x, T) for x in ws[:3])
        w.recent = [(row, _unclamp(t, T)) for row, t in ws[3]]
        r = m.rs
        r.idle_at = _unclamp(rs[0], T)
        r.cur = None if rs[1] is None else tuple(x + T if i != 3 else x for i, x in enumerate(rs[1]))
        # counters and progress
        m.future = [(c + T, name, v) for c, name, v in future]
        heapq.heapify(m.future)
        m.n_done = len(m.insns) - outstanding
        m.last_done = _unclamp(last_done, T)
        for k, _, dmax in desc:
            m.desc_max[k + m.f_node] = max(m.desc_max[k + m.f_node], _unclamp(dmax, T))
        m.last_progress = last_progress + T
        m.fin_heap = [c + T for c in fin_heap]

    def intern(self, T):
        got = self.state(T)
        if got is None:
            return None
        sid = self.states.get(got[0])
        if sid is None:
            sid = self.states[got[0]] = len(self.canon)
            self.canon.append(got)
        return sid

    def _agrees(self, sid):
        """The running totals the canonical state ``sid`` holds clamped (instructions of
        the node fetch has still to request, instructions of each node not done) read the
        same from the machine's totals (a replay carries the state at the end of a segment
        stepped through elsewhere, where they may have been larger)."""
        m = self.m
        _, _, (node_left, nwords, desc_left) = self.canon[sid]
        left = m.f_node_n - (m.f_insn - m.f_node_first) - nwords // isa.INSN_WORDS
        if min(left, self.clamp_node) != node_left:
            return False
        first, c = len(m.desc_snaps), self.clamp_left
        return all(min(m.desc_left[first + k], c) == v for k, v in enumerate(desc_left))

    # -- segments ------------------------------------------------------------------------
    def window(self, sid, P):
        """The key ids the segment from state ``sid`` at ``P`` reads (None: it leaves the
        node), instruction ``P`` decoded and its key id."""
        nxt = self.fetch(P)
        if nxt is None or nxt[1] is None:
            return None, None
        labels = self.labels
        return tuple([labels[P + i] for i in self.canon[sid][1]] + [nxt[1]]), nxt

    def _begin(self, sid, T, win):
        """Step through the segment from state ``sid`` in cycle ``T`` (``win``: the key
        ids it reads), remembering what is needed to write down what it does."""
        m = self.m
        P = m.f_insn
        live = [P + i for i in self.canon[sid][1]]
        tl = m.tl
        self.rec = (sid, T, P, live, [(tl.issue[i], tl.done[i]) for i in live],
                    {k: len(v) for k, v in m.busy.items()}, dict(m.tot), len(m.g_accepts),
                    m.f_desc_idx, m.f_node, len(m.desc_snaps), win,
                    list(m.desc_left[len(m.desc_snaps):]))

    def _end(self, sid, T):
        """The segment being stepped through ends in ``T`` in state ``sid``: write down
        what it did."""
        m = self.m
        (sid0, T0, P0, live, before, busy0, tot0, g0, desc_idx, node, snaps, win,
         left0) = self.rec
        self.rec = None
        if (win is None or m.f_desc_idx != desc_idx or m.f_node != node or len(m.desc_snaps) != snaps
                or m.f_insn != P0 + 1):
            return
        tl = m.tl
        issues, dones = [], []
        # only the live instructions and the one pushed can have got an issue or a done
        for i, was in zip(live + [P0], before + [(None, None)]):
            if was[0] is None and tl.issue[i] is not None:
                issues.append((i - P0, tl.issue[i] - T0))
            if was[1] is None and tl.done[i] is not None:
                dones.append((i - P0, tl.done[i] - T0))
        busy = tuple((k, tuple((lo_ - T0, hi - T0) for lo_, hi in m.busy[k][n:]))
                     for k, n in busy0.items() if len(m.busy[k]) > n)
        tot = tuple((k, v - tot0[k]) for k, v in m.tot.items() if v != tot0[k])
        first = len(m.desc_snaps)
        left = tuple(m.desc_left[first + k] - v for k, v in enumerate(left0))
        self.memo[(sid0, win)] = (sid, T - T0, (tuple(issues), tuple(dones), busy, tot,
                                                len(m.g_accepts) - g0, left))

    def at_push(self, T):
        """Fetch pushed an instruction in cycle ``T``: end the segment stepped through,
        replay every following one already seen; returns the cycle the machine is in
        (written back where it replayed)."""
        m = self.m
        d = m.insns[-1]
        lab = self.by_id.get(id(d))
        if lab is None:
            lab = self.by_id[id(d)] = self.label(d)
        self.labels.append(lab)
        sid = self.intern(T)
        if self.rec is not None and sid is not None:
            self._end(sid, T)
        self.rec = None
        if sid is None:
            return T
        t, replayed = T, False
        limit = m.limit
        while True:
            if replayed and not self._agrees(sid):
                # the state carried over reads differently here: write the machine back
                # and take its own state
                self.restore(sid, t)
                replayed = False
                sid = self.intern(t)
                if sid is None:
                    return t
            win, nxt = self.window(sid, m.f_insn)
            got = self.memo.get((sid, win)) if win is not None else None
            if got is None or (limit is not None and t + got[1] + self.max_load + 2 >= limit):
                break
            sid, dt, effects = got
            self._replay(t, effects, nxt)
            t += dt
            replayed = True
            self.hits += 1
        if replayed:
            self.restore(sid, t)
        self.misses += 1
        self._begin(sid, t, win)
        return t

    def _replay(self, T, effects, nxt):
        """One segment from cycle ``T`` whose effects are ``effects``, ending with the push
        of the instruction ``nxt`` (:meth:`fetch`'s entry)."""
        m = self.m
        P = m.f_insn
        issues, dones, busy, tot, ng, left = effects
        tl = m.tl
        for i, c in issues:
            tl.issue[P + i] = T + c
        for i, c in dones:
            tl.done[P + i] = T + c
        for k, ivs in busy:
            m.busy[k].extend((lo + T, hi + T) for lo, hi in ivs)
        for k, v in tot:
            m.tot[k] += v
        if ng:
            m.g_accepts.extend([None] * ng)
            m.g_ends.extend([None] * ng)
            m.g_idx.extend([None] * ng)
        first = len(m.desc_snaps)
        for k, v in enumerate(left):
            m.desc_left[first + k] += v
        d, lab, entry = nxt
        m._record(d, m.f_node, entry)
        self.labels.append(lab)
        m.f_insn = P + 1
