"""FEIE PE array (``dataflow = "feie"``, seed 003): inputs broadcast, weights
time-multiplexed per PE, one output psum per PE, zero inputs skipped one by one.

:class:`FEIEArray` is the seed's FEIE PE row (the 2x8 by 1x3 tables) extended to a 2-D
array of GEMM engines: groups of PE rows, each a seed PE row walking its own output rows,
the columns taking output channels. Its timing depends on where the zeros are:
:func:`row_trace` runs the engine's control cycle by cycle (:func:`cycles` is the
registry's timing); docs/dataflows.md, "feie", has the mapping, a picture and the cycle
formula of a dense run.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.arrays.blocks import Block, place
from celosia.rtl.arrays.engine import ComputeEngine, gemm_check_register, insn_check_state, legal_gemm
from celosia.rtl.config import FEIE_TAPS
from celosia.rtl.dataflows import ifmap_read_ports, psum_write_ports
from celosia.rtl.dma import accept_state

#: Pixels a group's queue (:class:`FEIEQueue`) holds: the head and two read ahead, so that a
#: pixel dropped on landing (every input zero) seldom leaves the group without work.
QUEUE_DEPTH = 3

__all__ = ["QUEUE_DEPTH", "FEIEArray", "FEIEColumn", "FEIEQueue", "FEIETiming", "cycles", "sequence_timing", "group_plan", "row_geometry", "row_trace",
           "RowTrace"]


def row_geometry(g, rows: int) -> SimpleNamespace:
    """How the broadcast engine maps the legal GEMM ``g`` (GemmInsn fields as attributes) on
    ``rows`` PE rows (see :class:`FEIEArray`).

    Returns a namespace with ``S`` (taps per output), ``s`` (pixel step between consecutive
    outputs of a row), ``pstep`` (buffer rows between consecutive pixels), ``T`` (output
    rows; a plain GEMM's rows are rows of one output each), ``n_out`` (outputs per row),
    ``Wp`` (pixels per row), ``lstep`` (buffer rows between the first pixels of consecutive
    rows), ``P`` (PEs per group: the outputs one pixel reaches), ``G`` (groups, ``rows //
    P``), ``W`` (weight rows, ``S * k_len``), ``Q`` (outputs per group: ``T // G`` whole
    rows and ``ceil((T % G) * n_out / G)`` more) and ``groups``: per group, a
    :func:`group_plan`."""
    if g.window:
        S, T, n_out, lstep = g.win_w, g.out_h, g.out_w, g.stride_h * g.row_pitch
        # one tap: the outputs' own pixels, stride_w buffer rows apart; a phase set
        # (dil_w = stride_w = d > 1): output x over pixels (x + fw)*d, so in units of d
        # buffer rows a window at step 1; consecutive taps: stride_w pixels per output
        s, pstep = (1, g.stride_w) if S == 1 or g.dil_w > 1 else (g.stride_w, 1)
    else:
        S, T, n_out, lstep, s, pstep = 1, g.m_len, 1, 1, 1, 1
    P = 1 + (s <= S - 1) + (2 * s <= S - 1)
    G = rows // P
    qn, qx = T // G, -(-(T % G) * n_out // G)
    geo = SimpleNamespace(S=S, s=s, pstep=pstep, T=T, n_out=n_out, Wp=(n_out - 1) * s + S,
                          lstep=lstep, P=P, G=G, W=S * g.k_len, Q=qn * n_out + qx)
    geo.groups = [group_plan(geo, gi) for gi in range(G)]
    return geo


def group_plan(geo, gi: int) -> SimpleNamespace:
    """The outputs group ``gi`` of :func:`row_geometry` ``geo`` takes: outputs ``gi*Q`` up
    to (not including) ``(gi+1)*Q`` of the GEMM, in row-major order (the last group's
    fewer, or none), from ``(e0, x0)`` (output row, output in it) to ``(e1, x1)``. They form
    its *tasks* ``pieces``, one per output row they touch: ``(e, x, n)``, ``n`` consecutive
    outputs of row ``e`` from output ``x``, over ``(n-1)*s + S`` consecutive pixels."""
    def pos(i):
        i = min(i, geo.T * geo.n_out)
        return divmod(i, geo.n_out) if geo.n_out else (geo.T, 0)
    (e0, x0), (e1, x1) = pos(gi * geo.Q), pos((gi + 1) * geo.Q)
    pieces = [(e, x0 if e == e0 else 0, (x1 if e == e1 else geo.n_out) - (x0 if e == e0 else 0))
              for e in range(e0, e1 + (x1 > 0))]
    return SimpleNamespace(e0=e0, x0=x0, e1=e1, x1=x1, pieces=[p for p in pieces if p[2] > 0])


class RowTrace(SimpleNamespace):
    """What :func:`row_trace` returns: ``cycles`` (acceptance to ``done``), ``mac_cycles``
    (cycles in which some group multiplies an input), ``zero_skips`` (inputs equal to
    ``in_zp`` that no PE multiplies), ``macs`` (per MAC cycle: ``(cycle, group, pixel
    address, k, [(slot, output m, tap fw), ...])``, with ``log=True``) and ``writes``
    (``(cycle granted, group, output m)`` in grant order, with ``log=True``), ``reads``
    (``(cycle granted, group, ifmap buffer row)`` in grant order, the read port 0's first in a
    cycle, with ``log=True``), ``last_grant``
    (the last write's grant cycle; None for an illegal or empty GEMM)."""


def row_trace(insn, config, ifmap, log: bool = False, start: int = 2) -> RowTrace:
    """Run the broadcast FEIE engine's control on the GEMM ``insn`` (field name -> int),
    cycle by cycle exactly as :class:`FEIEArray` does (its docstring is the text of this
    model): which input each group multiplies in which cycle, which output each write
    takes, when ``done`` pulses. ``ifmap`` is the ifmap buffer (one row of ``rows`` int8
    lanes, or their bytes, per buffer row). Cycles count from the acceptance (cycle 0);
    the groups start in cycle ``start``: 2 for a GEMM taken by an idle engine, the cycle
    after the previous GEMM ends (the cycle before its ``done``) for one taken while that
    one ran (:class:`FEIETiming`); the weights land at the same cycles either way."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0 or g.n_len == 0:
        return RowTrace(cycles=1, mac_cycles=0, zero_skips=0, macs=[], writes=[], reads=[], last_grant=None)
    geo = row_geometry(g, config.rows)
    S, s, P, G = geo.S, geo.s, geo.P, geo.G
    gp = geo.groups
    buf = np.asarray(ifmap, dtype=np.int64) & 0xFF
    zp = g.in_zp & 0xFF
    pieces = [p.pieces for p in gp]
    npc = [len(pc) for pc in pieces]

    def wp_of(gi, t):                       # pixels of task t of group gi
        return (pieces[gi][t][2] - 1) * s + S

    def start_of(gi, t):                    # its first pixel's buffer row
        e, x, _ = pieces[gi][t]
        return g.ifmap_row + e * geo.lstep + x * s * geo.pstep

    # reader (per group): next task, pixel in it, address; queue of (seq, addr, nz ks)
    rt = [0] * G
    rp = [0] * G
    raddr = [start_of(gi, 0) if npc[gi] else 0 for gi in range(G)]
    aseq = [0] * G
    queue = [[] for _ in range(G)]
    arriving = []                          # (group, addr) of the reads issued last cycle
    ports = config.feie_read_ports
    wports = config.feie_write_ports
    # writer (per group): write task, output in it, its slot, seq base, ...
    wt = [0] * G
    xw = [0] * G
    wslot = [0] * G
    wb = [0] * G
    wm = [p.e0 * geo.n_out + p.x0 for p in gp]
    fs = [[j * s for j in range(P)] for _ in range(G)]
    sv = [[bool(npc[gi]) and j < pieces[gi][0][2] for j in range(P)] for gi in range(G)]
    wptr = rptr = 0
    macs, writes, reads = [], [], []
    mac_cycles = zero_skips = 0
    wready_at = geo.W + 3
    c = start
    last_grant = None
    while True:
        if all(wt[gi] >= npc[gi] for gi in range(G)):
            return RowTrace(cycles=max(last_grant + 2, wready_at + 1), mac_cycles=mac_cycles, zero_skips=zero_skips,
                            macs=macs, writes=writes, reads=reads, last_grant=last_grant)
        # 1. up to `wports` psum writes: round robin over the groups whose next output is
        #    complete, each port from the group after the one before; a port no other group
        #    takes writes the granted group's output after that one, if complete in its task
        cpos = [queue[gi][0][0] if queue[gi] else aseq[gi] for gi in range(G)]

        def complete(gi, x):                # output x of the group's task has all its pixels
            return cpos[gi] > wb[gi] + x * s + S - 1
        elig = [wt[gi] < npc[gi] and complete(gi, xw[gi]) for gi in range(G)]
        wgrants = _round_robin_ports(elig, wptr, wports)
        if len(wgrants) == 1 < wports and P > 1:
            # port 1 unused: the granted group's output after it, if complete, in the task
            gi = wgrants[0]
            if xw[gi] + 1 < pieces[gi][wt[gi]][2] and complete(gi, xw[gi] + 1):
                wgrants.append(gi)
        for gi in wgrants:
            wptr = (gi + 1) % G
            last_grant = c
            if log:
                writes.append((c, gi, wm[gi]))
            j, n = wslot[gi], pieces[gi][wt[gi]][2]
            fs[gi][j] += P * s
            sv[gi][j] = xw[gi] + P < n
            wm[gi] += 1
            if xw[gi] == n - 1:                     # the task's last output: the next task
                wb[gi] += wp_of(gi, wt[gi])
                wt[gi] += 1
                xw[gi], wslot[gi] = 0, 0
                fs[gi] = [wb[gi] + jj * s for jj in range(P)]
                sv[gi] = [wt[gi] < npc[gi] and jj < pieces[gi][wt[gi]][2] for jj in range(P)]
            else:
                xw[gi] += 1
                wslot[gi] = (wslot[gi] + 1) % P
        # 2. each group multiplies the lowest non-zero input of its head pixel, if the
        #    outputs it reaches are in its PEs
        retire = [False] * G
        any_mac = False
        for gi in range(G):
            if not queue[gi] or wt[gi] >= npc[gi]:
                continue
            seq, addr, ks = queue[gi][0]
            if seq >= min(wb[gi] + (xw[gi] + P) * s, wb[gi] + wp_of(gi, wt[gi])):
                continue
            # the weights it takes (tap fw, channel k: loader row fw*k_len + k) have landed
            if c < wready_at and any(sv[gi][j] and fs[gi][j] <= seq < fs[gi][j] + S
                                     and (seq - fs[gi][j]) * g.k_len + ks[0] >= c - 3 for j in range(P)):
                continue
            any_mac = True
            k = ks.pop(0)
            if log:
                hits = [(j, wm[gi] - xw[gi] + (fs[gi][j] - wb[gi]) // s, seq - fs[gi][j])
                        for j in range(P) if sv[gi][j] and fs[gi][j] <= seq < fs[gi][j] + S]
                macs.append((c, gi, addr, k, hits))
            retire[gi] = not ks
        mac_cycles += any_mac
        # 3. up to `ports` ifmap reads, of different groups: round robin over the groups with
        #    pixels left and room for them, each port from the group after the one before
        landing = [(ga, addr, [k for k in range(g.k_len) if buf[addr, k] != zp]) for ga, addr in arriving]
        pushed = {ga for ga, _, nz in landing if nz}
        req = [rt[gi] < npc[gi] and len(queue[gi]) - retire[gi] + (gi in pushed) < QUEUE_DEPTH for gi in range(G)]
        rgrants = _round_robin_ports(req, rptr, ports)
        # 4. the pixels read last cycle land (zero pixels are dropped), the heads retire
        for ga, addr, nz in landing:
            zero_skips += g.k_len - len(nz)
            if nz:
                queue[ga].append((aseq[ga], addr, nz))
            aseq[ga] += 1
        for gi in range(G):
            if retire[gi]:
                queue[gi].pop(0)
        arriving = []
        if rgrants:
            rptr = (rgrants[-1] + 1) % G
        for gi in rgrants:
            arriving.append((gi, raddr[gi]))
            if log:
                reads.append((c, gi, raddr[gi]))
            rp[gi] += 1
            raddr[gi] += geo.pstep
            if rp[gi] == wp_of(gi, rt[gi]):
                rp[gi] = 0
                rt[gi] += 1
                if rt[gi] < npc[gi]:
                    raddr[gi] = start_of(gi, rt[gi])
        c += 1


class FEIETiming:
    """When :class:`FEIEArray` takes and ends a sequence of GEMMs (the perf model's
    engine): :meth:`ready` says whether the engine takes a GEMM in a cycle, :meth:`accept`
    takes one and returns its ``done`` / ``error`` cycle and its :class:`RowTrace`.

    The engine takes a GEMM when idle, or while one runs (state RUN, from its first group
    cycle) if none is waiting, the running one's weights have all landed and its groups are
    not all done; one taken then starts its groups the cycle the running one ends (the
    cycle before that one's ``done``), an illegal or empty one ends two cycles after that
    (``done`` of the running one, then its CHECK)."""

    def __init__(self, config):
        self.cfg = config
        self.idle_at = 0        # the first cycle of IDLE (after the last GEMM taken)
        self.win = None         # (from, to): the cycles of RUN in which one may be taken

    def ready(self, c: int) -> bool:
        return c >= self.idle_at or (self.win is not None and self.win[0] <= c < self.win[1])

    def next_ready(self, c: int) -> int:
        """The first cycle ``>= c`` in which :meth:`ready` holds."""
        if self.win is not None and c < self.win[1] and self.win[0] < self.win[1]:
            return max(c, self.win[0])
        return max(c, self.idle_at)

    def wakes(self):
        """The cycles at which :meth:`ready` may turn true."""
        return [self.idle_at] + ([self.win[0]] if self.win is not None else [])

    def accept(self, insn, ifmap, a: int, trace=None):
        """Take the GEMM ``insn`` in cycle ``a`` (``ready(a)``); ``trace(insn, start)``
        computes its :func:`row_trace` (default: on ``ifmap``). Returns ``(end, trace)``:
        ``done`` / ``error`` in ``end``; the trace is None for an illegal or empty GEMM."""
        trace = trace or (lambda d, start: row_trace(d, self.cfg, ifmap, start=start))
        g = legal_gemm(insn, self.cfg)
        running = a < self.idle_at
        if running:
            end_prev = self.idle_at - 1          # the running GEMM's done
        self.win = None
        if g is None or g.m_len == 0 or g.n_len == 0:
            end = end_prev + 1 if running else a + 1
            self.idle_at = end + 1
            return end, None
        start = end_prev - a if running else 2
        tr = trace(insn, start)
        end = a + tr.cycles
        W = row_geometry(g, self.cfg.rows).W
        # taking the next one: in RUN, its weights landed, before its groups are all done
        # (the cycle after the last write's grant)
        self.win = (max(a + start, a + (W + 3 if W else 2)), a + tr.last_grant + 1)
        self.idle_at = end + 1
        return end, tr


def sequence_timing(insns, config, gaps=None, ifmap=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` on :class:`FEIEArray` with the
    ifmap buffer ``ifmap`` (:class:`FEIETiming`). Instruction ``i`` is offered (``valid``
    held high until accepted) from the cycle ``gaps[i]`` cycles after the acceptance cycle of
    instruction ``i-1`` plus one (the first from cycle ``gaps[0]``); ``gaps`` defaults to all
    0 (back to back)."""
    gaps = [0] * len(insns) if gaps is None else gaps
    timer, out, prev = FEIETiming(config), [], None
    for insn, gap in zip(insns, gaps, strict=True):
        a = timer.next_ready(gap if prev is None else prev + 1 + gap)
        out.append((a, timer.accept(insn, ifmap, a)[0]))
        prev = a
    return out


def _geometry(g, pre, R: int) -> dict:
    """:func:`row_geometry` of the GEMM ``g`` (a ``GemmInsn`` view, with its
    :data:`~celosia.rtl.controller.signatures.GemmPre` products ``pre``) on ``R`` PE rows, as
    Amaranth expressions, and the products the engine's setup adds up per group: name ->
    expression. Only GEMMs that pass the range check are set up, so the products ``pre``
    holds (``x_span``, ``taps_k``) are exact where they are used."""
    window = g.window
    wide = window & (g.win_w > 1)
    # consecutive taps (dil_w = 1) step stride_w pixels per output; a phase set (dil_w =
    # stride_w > 1) one pixel of its own, its pixels stride_w buffer rows apart
    consec = wide & (g.dil_w == 1)
    S = Mux(window, g.win_w, 1)
    s = Mux(consec, g.stride_w, 1)
    P = 1 + (wide & (s <= g.win_w - 1)) + (wide & (2 * s <= g.win_w - 1))
    G = Mux(P == 1, R, Mux(P == 2, R // 2, R // 3))
    T = Mux(window, g.out_h, g.m_len)
    nout = Mux(window, g.out_w, 1)
    lstep = Mux(window, g.stride_h * g.row_pitch, 1)

    def per_group(v, fn):
        """``fn(v, G)`` for the three group counts (constant divisors), chosen by P."""
        return Mux(P == 1, fn(v, R), Mux(P == 2, fn(v, max(R // 2, 1)), fn(v, max(R // 3, 1))))

    # group_plan: Q = qn whole rows + qx outputs per group; group g starts at output g*Q
    qn = per_group(T, lambda v, d: v // d)
    qx = per_group((T - qn * G) * nout, lambda v, d: (v + d - 1) // d)
    # buffer rows from output to output: s * pstep (pstep: stride_w for a phase set or a
    # one-tap window, else 1)
    sp = Mux(window, g.stride_w, 1)
    nout_s = Mux(consec, pre.x_span + g.stride_w, nout)      # n_out * s
    return {"S": S, "s": s, "P": P, "G": G, "T": T, "nout": nout, "lstep": lstep,
            "pstep": Mux(consec | ~window, 1, g.stride_w), "wlast0": S - 1, "nfs0": P * s,
            "wp": (nout_s - s + S)[:24],                     # pixels of a whole row
            "taps_k": Mux(window, pre.taps_k, g.k_len),      # S * k_len weight rows
            "qn": qn, "qx": qx, "Q": (qn * nout + qx)[:24],
            # per group's step, taken modulo 2**24 as the registers they add up to
            "qnl": (qn * lstep)[:24], "qxs": (qx * sp)[:24], "ns": (nout * sp)[:24],
            "qx_s": (qx * s)[:24], "nout_s": nout_s[:24]}


def _round_robin(requests, ptr):
    """The first index ``i >= ptr`` with ``requests[i]``, else the first ``i < ptr``; None if
    there is none (the engine's rotating-priority arbiters)."""
    for i in list(range(ptr, len(requests))) + list(range(ptr)):
        if requests[i]:
            return i
    return None


def _round_robin_ports(requests, ptr, ports):
    """The requesters granted by ``ports`` shared ports in one cycle, in port order: port
    0 the first one from ``ptr`` on (:func:`_round_robin`), each further port the next
    requester after the one before (all different)."""
    requests, grants = list(requests), []
    for _ in range(ports):
        gi = _round_robin(requests, ptr)
        if gi is None:
            break
        grants.append(gi)
        requests[gi], ptr = False, gi + 1
    return grants


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` on an idle
    :class:`FEIEArray`: :func:`row_trace`'s ``cycles`` (the timing depends on
    which inputs of ``ifmap`` are zero)."""
    if ifmap is None:
        raise ValueError("feie timing depends on the data: pass the ifmap buffer rows")
    return row_trace(insn, config, ifmap).cycles


def _held(m, name, expr):
    """A signal of ``expr``'s own shape driven by it (combinational): an expression is
    lowered again at every use, a signal once."""
    sig = Signal(Value.cast(expr).shape(), name=name)
    m.d.comb += sig.eq(expr)
    return sig


def _times(v, n: int):
    """``n * v`` for a constant ``n >= 0``, as shifts and adds (no multiplier)."""
    terms = [v << b for b in range(n.bit_length()) if n >> b & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


def _rotating_pick(m, requests, ptr, name):
    """A rotating-priority arbiter: ``(valid, index)`` of the first request at an index
    ``>= ptr``, else the first one below ``ptr`` (:func:`_round_robin` in hardware)."""
    n = len(requests)
    valid = Signal(name=f"{name}_valid")
    index = Signal(range(max(n, 2)), name=f"{name}_index")
    m.d.comb += valid.eq(Cat(requests).any())
    for i in reversed(range(n)):               # the lowest index wins: assigned last
        with m.If(requests[i]):
            m.d.comb += index.eq(i)
    for i in reversed(range(n)):
        with m.If(requests[i] & (i >= ptr)):
            m.d.comb += index.eq(i)
    return valid, index


class FEIEQueue(Block):
    """The pixel queue of one group of :class:`FEIEArray` (:mod:`~celosia.rtl.arrays.blocks`:
    inline for pysim, one module instanced ``rows`` times in Verilog): :data:`QUEUE_DEPTH`
    entries, each a pixel (``rows`` int8 inputs), its sequence number and the mask of its
    inputs still to multiply, filled from entry 0 on; the head's (entry 0's) lowest one is the
    group's MAC input.

    Ports
    -----
    data, nz, seq : In(rows * act_bits), In(rows), In(seq_bits)
        The arriving pixel, its non-zero inputs (the mask) and its sequence number.
    push : In(1)
        The pixel arrives (enters the queue at the next edge, behind what stays).
    take : In(1)
        The head's input ``k`` is multiplied this cycle (leaves the mask; the head retires
        with its last, and the entries behind it move up at the next edge).
    zp : In(signed(act_bits))
        The zero point, subtracted from the input.
    setup : In(1)
        Empty the queue at the next edge (over everything else).
    qv : Out(QUEUE_DEPTH)
        Bit ``i``: entry ``i`` holds a pixel (entry 0 is the head).
    head : Out(seq_bits)
        The head's sequence number.
    k : Out(range(max(rows, 2)))
        The head's lowest input left (0 if none; combinational).
    x : Out(signed(act_bits + 1))
        Input ``k`` of the head minus ``zp`` (combinational).
    retire : Out(1)
        ``take`` of the head's last input (combinational).
    """

    def __init__(self, rows, act_bits, seq_bits):
        self.rows, self.act_bits, self.seq_bits = rows, act_bits, seq_bits
        super().__init__({
            "data": In(rows * act_bits), "nz": In(rows), "seq": In(seq_bits), "push": In(1),
            "take": In(1), "zp": In(signed(act_bits)), "setup": In(1),
            "qv": Out(QUEUE_DEPTH), "head": Out(seq_bits), "k": Out(range(max(rows, 2))),
            "x": Out(signed(act_bits + 1)), "retire": Out(1),
        }, (rows, act_bits, seq_bits))

    def elaborate(self, platform):
        m = Module()
        R, ab, D = self.rows, self.act_bits, QUEUE_DEPTH
        qv = [Signal(name=f"qv_{i}") for i in range(D)]
        qseq = [Signal(self.seq_bits, name=f"qseq_{i}") for i in range(D)]
        qdata = [Signal(R * ab, name=f"qdata_{i}") for i in range(D)]
        qmask = [Signal(R, name=f"qmask_{i}") for i in range(D)]
        m.d.comb += [self.qv.eq(Cat(qv)), self.head.eq(qseq[0])]
        k = self.k
        for i in reversed(range(R)):
            with m.If(qmask[0][i]):
                m.d.comb += k.eq(i)
        m.d.comb += self.x.eq(Array(l.as_signed() for l in
                                    (qdata[0][i * ab:(i + 1) * ab] for i in range(R)))[k] - self.zp)
        mask_n = Signal(R)
        m.d.comb += [mask_n.eq(Mux(self.take, qmask[0] & ~(1 << k), qmask[0])),
                     self.retire.eq(self.take & (mask_n == 0))]
        # the entries after this cycle's departure (retire: each moves up one) ...
        entries = list(zip(qv, qseq, qdata, qmask))
        stay = [(Mux(self.retire, nv, v), Mux(self.retire, nsq, sq), Mux(self.retire, nd, dt),
                 Mux(self.retire, nmk, mask_n if i == 0 else mk))
                for i, ((v, sq, dt, mk), (nv, nsq, nd, nmk))
                in enumerate(zip(entries, entries[1:] + [(Const(0), qseq[-1], qdata[-1], qmask[-1])]))]
        # ... and arrival (push: into the first empty one)
        for i, (v, sq, dt, mk) in enumerate(stay):
            here = self.push & ~v & (stay[i - 1][0] if i else 1)
            m.d.sync += [qv[i].eq(v | here), qseq[i].eq(Mux(here, self.seq, sq)),
                         qdata[i].eq(Mux(here, self.data, dt)), qmask[i].eq(Mux(here, self.nz, mk))]
        with m.If(self.setup):
            m.d.sync += [v.eq(0) for v in qv]
        return m


class FEIEColumn(Block):
    """PE column ``n`` of :class:`FEIEArray`: its two banks of ``FEIE_TAPS x rows`` weight
    registers (the running GEMM's and the next one's, loaded while the first computes) and
    the ``rows`` PEs ``(r, n)``, each a multiplier on the weight entry it selects and an
    accumulator (:mod:`~celosia.rtl.arrays.blocks`: inline for pysim, one module instanced
    ``cols`` times in Verilog).

    Ports
    -----
    wdata : In(weight_bits)
        Lane ``n`` of the weight buffer read data.
    land : In(2 * FEIE_TAPS * rows)
        Bit ``e``: weight entry ``e`` takes ``wdata`` at the next edge.
    sel : In(rows * ((2*FEIE_TAPS*rows).bit_length()))
        Field ``r``: the weight entry PE row ``r`` multiplies (``bank*FEIE_TAPS*rows + fw*rows
        + k``).
    x : In(rows * (act_bits + 1))
        Field ``r``: PE row ``r``'s input minus the zero point (signed).
    hit, clear : In(rows), In(rows)
        Bit ``r``: PE ``r`` accumulates its product / restarts its accumulator (with the
        product if ``hit``, else 0) at the next edge (int32 wrap).
    setup : In(1)
        Clear every accumulator at the next edge (over ``clear`` and ``hit``).
    row : In(range(max(rows, 2)))
        The accumulator written out.
    wval : Out(signed(acc_bits))
        Registered: accumulator ``row`` of the cycle before.
    row1, wval1 : In(range(max(rows, 2))), Out(signed(acc_bits))
        Only with ``write_ports = 2``: a second accumulator written out, alike (the psum
        write port 1's).
    """

    def __init__(self, rows, act_bits, weight_bits, acc_bits, write_ports=1):
        self.rows, self.act_bits, self.weight_bits, self.acc_bits = rows, act_bits, weight_bits, acc_bits
        self.write_ports = write_ports
        self.sel_bits = (2 * FEIE_TAPS * rows).bit_length()
        members = {
            "wdata": In(weight_bits), "land": In(2 * FEIE_TAPS * rows), "sel": In(rows * self.sel_bits),
            "x": In(rows * (act_bits + 1)), "hit": In(rows), "clear": In(rows), "setup": In(1),
            "row": In(range(max(rows, 2))), "wval": Out(signed(acc_bits)),
        }
        if write_ports == 2:
            members.update(row1=In(range(max(rows, 2))), wval1=Out(signed(acc_bits)))
        super().__init__(members, (rows, act_bits, weight_bits, acc_bits, write_ports))

    #: the ``(row, wval)`` member names of each psum write port, in order
    OUT_PORTS = (("row", "wval"), ("row1", "wval1"))

    def elaborate(self, platform):
        m = Module()
        R, xb, wbits, sb = self.rows, self.act_bits + 1, self.weight_bits, self.sel_bits
        wreg = [Signal(signed(wbits), name=f"w_{e}") for e in range(2 * FEIE_TAPS * R)]
        for e in range(2 * FEIE_TAPS * R):
            with m.If(self.land[e]):
                m.d.sync += wreg[e].eq(self.wdata)
        acc = [Signal(signed(self.acc_bits), name=f"acc_{r}") for r in range(R)]
        for r in range(R):
            w = Array(wreg)[self.sel[r * sb:(r + 1) * sb]]
            prod = self.x[r * xb:(r + 1) * xb].as_signed() * w
            hit = self.hit[r]
            with m.If(self.setup):
                m.d.sync += acc[r].eq(0)
            with m.Elif(self.clear[r]):
                m.d.sync += acc[r].eq(Mux(hit, prod, 0))
            with m.Elif(hit):
                m.d.sync += acc[r].eq(acc[r] + prod)   # wraps
        for row, wval in self.OUT_PORTS[:self.write_ports]:
            m.d.sync += getattr(self, wval).eq(Array(acc)[getattr(self, row)])
        return m


class FEIEArray(ComputeEngine):
    """FEIE (seed 003) as a 2-D engine: inputs broadcast, weights time-multiplexed per PE,
    one output psum per PE, a zero input costs no cycle. Implements
    :class:`~celosia.rtl.arrays.engine.ComputeEngineSignature` for plain GEMMs and windowed
    GEMMs of one kernel row (``gemm_window = "row"`` of
    :func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`).

    Mapping (:func:`row_geometry`). A windowed GEMM of ``S = win_w`` taps has ``T = out_h``
    output rows of ``n_out = out_w`` outputs, a row over ``Wp = (out_w-1)*s + S``
    consecutive ifmap pixels (``s = stride_w``, the pixels one buffer row apart, ``pstep =
    1``; with ``S = 1`` the pixels are the outputs' own, ``s = 1``, ``pstep = stride_w``
    buffer rows apart; a *phase set*, ``S > 1`` taps with ``dil_w = stride_w = d > 1``,
    reads output ``x`` over pixels ``(x + fw)*d``: ``s = 1``, ``pstep = d``, a window at
    stride 1 over every ``d``-th buffer row); a plain GEMM's rows ``m`` are output rows of
    one output and one pixel. A pixel is one ifmap buffer row: ``k_len`` channels in its
    lanes. One pixel reaches ``P = 1 + (s <= S-1) + (2s <= S-1)`` consecutive outputs, so
    the ``rows`` PE rows form ``G = rows // P`` *groups* of ``P`` PE rows (PE row ``g*P +
    j`` is slot ``j`` of group ``g``; the rest idle) -- each group is the seed's PE row.
    The outputs, in row-major order, are dealt in contiguous ranges of ``Q = (T // G) *
    n_out + ceil((T % G) * n_out / G)``: group ``g`` takes outputs ``g*Q`` up to
    ``(g+1)*Q - 1`` (the last groups fewer, or none; :func:`group_plan`), as *tasks*, one
    per output row the range touches (``n`` consecutive outputs of the row over ``(n-1)*s
    + S`` consecutive pixels), and walks their pixels in order. The columns are the output
    channels ``n < n_len``. In one cycle a group takes one non-zero input ``x[p][k]``
    (``!= in_zp``) of its head pixel ``p``, lowest ``k`` first, and broadcasts it to its P
    PEs and along the rows to every column; the slot holding output ``x`` with ``x*s <= p <
    x*s + S`` multiplies ``x[p][k] - in_zp`` by its column's weight of tap ``fw = p - x*s``,
    channel ``k``. Slot ``j`` holds the outputs ``x = j, j+P, ...`` of the task in turn.
    Each column keeps the GEMM's ``S*k_len`` weights in registers (tap ``fw``, channel
    ``k``; ``S <= FEIE_TAPS``), which each PE reads at its own ``(fw, k)``: the seed's
    weight shift register, with the rotation made an index. The registers are two banks:
    the next GEMM's weights load into the other while one computes. For ``m < m_len``, ``n <
    n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
            + sum_{fw < S, k < k_len} (ifmap[row(m, fw)][k] - in_zp) * weight[weight_row + fw*k_len + k][n]

    (``row(m, fw)``: :func:`~celosia.rtl.arrays.window.window_rows`; a skipped input adds
    exactly nothing).

    Operation (cycle 0 = the cycle ``insn.valid & insn.ready``). Taken by an idle engine:
    cycle 1 is CHECK (``error`` for an illegal GEMM, ``done`` for ``m_len = 0`` or
    ``n_len = 0``, else the setup below) and the groups run from cycle 2. (Both checks
    below are computed from the offered instruction in cycle 0 and registered:
    :func:`~celosia.rtl.arrays.engine.gemm_check_register`, no cycle added.) Taken while a
    GEMM runs (*the next*; ``ready`` in RUN while none waits, the running one's weights
    have all landed and its groups are not all done): cycle 1 checks it, and a legal,
    non-empty one starts its weight loader (into the other bank); the cycle the running
    one ends (its groups all done, its weights landed: the cycle before its ``done``, which
    then pulses while the next runs) is the next one's setup, its groups run from the
    cycle after. An illegal or empty next one waits: the running one's ``done``, then its
    CHECK (``error`` / ``done``). The setup (every group at its first task, the arbiters'
    pointers at group 0) reads the GEMM's own fields and its geometry (:func:`_geometry`:
    ``S``, ``s``, ``P``, ``G``, ``Q`` and the products the groups' starts add up), which is
    computed from the offered GEMM in the cycle it is taken and registered with it (no
    cycle added; the setup then adds and compares flip-flops only). Every cycle from
    then:

    * the weight loader reads weight rows ``weight_row + i``, ``i < W = S*k_len``, one per
      cycle (cycles 2 .. W+1 of the GEMM, however it was taken), tap by tap (``i =
      fw*k_len + k``); a row lands in the registers a cycle later and is usable from cycle
      ``i + 4``;
    * each group keeps its next pixels in a queue of :data:`QUEUE_DEPTH` (three: the head
      and two read ahead) with each pixel's mask of non-zero inputs, and a count ``aseq`` of
      the pixels landed. Its *head*
      is the oldest queued pixel; ``cpos`` = the head's index in the group's pixel stream,
      or ``aseq`` with an empty queue (every pixel before it is done);
    * **psum write ports** (``feie_write_ports`` of them, 1 or 2: ``psum_wr`` and
      ``psum_wr1``, each with its accumulate read port, ``psum_rd`` / ``psum_rd1``; one row
      per cycle each, shared): a group is *eligible* when its next output ``x`` (in order)
      has all its pixels done (``cpos > x*s + S - 1`` within its task); a rotating-priority
      arbiter grants port 0 to the first eligible group from its pointer on and port 1 (if
      there are two) to the next eligible one after it; if there is none, port 1 writes port
      0's group's output ``x + 1`` when that one is complete too and in the same task (``P
      > 1``: it is in another slot; outputs complete in bunches where zero pixels are
      dropped, and at the end of a task). The pointer moves to the group after the last one
      granted. Each granted slot's sum is captured (the slot restarts from 0 in this cycle:
      it takes output ``x + P``), psum row ``psum_row + m`` is read through the port's
      accumulate read port if ``accumulate`` and written the next cycle with the old value
      added (two writes in a cycle are two outputs: two rows);
    * **MAC**: a group multiplies its head's lowest non-zero input ``k`` if the weights it
      takes are usable (row ``fw*k_len + k`` for the tap ``fw`` of every slot it reaches:
      with dense inputs the MACs never wait for the loader, which stays ahead of them) and
      the head's pixel is reached only by outputs already in its slots (after this
      cycle's write): ``p < (x+P)*s`` for its next output ``x``, in its current task (a
      task's pixels wait for the previous task's last write, which may be in the same
      cycle). A head whose last non-zero input is taken leaves the queue;
    * **ifmap read ports** (``feie_read_ports`` of them, 1 or 2: ``ifmap`` and ``ifmap1``,
      one row per cycle each, shared by the groups): a group with pixels left requests
      when its queue, after this cycle's departure and arrival, holds fewer than ``QUEUE_DEPTH``; a
      rotating-priority arbiter grants port 0 to the first requester from its pointer on
      and port 1 (if there are two) to the next requester after that one (so two
      different groups), and moves its pointer to the group after the last one granted;
      each row lands the next cycle, and a pixel with no non-zero input (every ``k <
      k_len`` equal to ``in_zp``) is dropped on landing: it costs its read but no MAC
      cycle. ``zero_skips`` reports, in the landing cycle, the landing pixels' ``k_len``
      minus their non-zero inputs (each saves a MAC cycle of its group).

    ``done`` pulses two cycles after the last write grant (the write lands in between), and
    not before cycle ``W + 4`` (the weight loader has finished: nothing of this GEMM lands
    after its ``done``).
    :func:`row_trace` is this text as a cycle-by-cycle model (the engine's timing,
    :func:`cycles`; :class:`FEIETiming` / :func:`sequence_timing` for GEMMs in a row): it
    depends on where the zeros are. Back to back, a GEMM's groups start the cycle before
    the previous one's ``done`` (``n - 2`` cycles apart for GEMMs of ``n`` alone, when the
    next was taken in time), and its weights are already in: a sparse GEMM no longer waits
    for its taps' weights. With dense inputs a group takes
    one input per cycle and reads one pixel per ``k_len`` cycles, so a group is busy
    ``k_len`` cycles per pixel of its tasks (``Q*s + (S-s)`` per task); zeros shorten that
    down to the bounds of the
    shared ports (``G`` groups' pixels through ``feie_read_ports`` read ports; ``m_len``
    writes through ``feie_write_ports`` write ports).
    """

    #: GEMMs accepted and not yet done at most: the running one and the next
    MAX_IN_FLIGHT = 2

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        R, C = cfg.rows, cfg.cols
        ab, wbits, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits
        NP = FEIE_TAPS
        insn = Signal(isa.GemmInsn)             # the running GEMM
        insn_nx = Signal(isa.GemmInsn)          # the next one, taken while it runs
        setup = Signal()
        run = Signal()          # state RUN: the groups, ports and arbiters work
        # what a setup / a loader start reads: the GEMM in CHECK, the next one in RUN
        src = Signal(isa.GemmInsn)
        m.d.comb += Value.cast(src).eq(Mux(run, Value.cast(insn_nx), Value.cast(insn)))

        # ld_pay: insn <- the offered GEMM (IDLE), nx_pay: insn_nx <- the offered GEMM (RUN),
        # ld_nx: insn <- insn_nx (a setup from RUN, or the CHECK of a waiting one)
        ld_pay, ld_nx, nx_pay = Signal(), Signal(), Signal()

        # -- geometry (row_geometry): computed from the offered GEMM as it is taken and
        #    registered with it (as its range check, gemm_check_register), so that the setup
        #    below starts from flip-flops (issue 15: the setup's path from the instruction
        #    register through these products into every group was 4x4 feie's critical path,
        #    98 ns). geo: of insn, geo_nx: of insn_nx. No cycle added.
        offered = _geometry(*self.offered, R)
        geo, geo_nx = ({name: Signal(Value.cast(expr).shape(), name=f"{prefix}_{name}")
                        for name, expr in offered.items()} for prefix in ("geo", "geo_nx"))
        with m.If(ld_pay):
            m.d.sync += [geo[name].eq(expr) for name, expr in offered.items()]
        with m.If(nx_pay):
            m.d.sync += [geo_nx[name].eq(expr) for name, expr in offered.items()]
        with m.If(ld_nx):
            m.d.sync += [geo[name].eq(geo_nx[name]) for name in geo]
        # what a setup / a loader start reads: the GEMM in CHECK's, the next one's in RUN
        gs = SimpleNamespace(**{name: _held(m, f"{name}_c", Mux(run, geo_nx[name], geo[name]))
                                for name in geo})
        S, s, P, G = Signal(range(NP + 1)), Signal(8), Signal(range(NP + 1)), Signal(range(R + 1))
        pstep, ps = Signal(16), Signal(16)
        n_out, wp_full, lstep = Signal(16), Signal(24), Signal(24)
        with m.If(setup):
            m.d.sync += [S.eq(gs.S), s.eq(gs.s), P.eq(gs.P), G.eq(gs.G), pstep.eq(gs.pstep),
                         ps.eq(gs.nfs0), n_out.eq(gs.nout), wp_full.eq(gs.wp),
                         lstep.eq(gs.lstep)]
        zp = insn.in_zp

        # -- weights: per column two banks of FEIE_TAPS x R registers (in FEIEColumn), entry
        #    bank*NP*R + fw*R + k; the loader fills the bank the running GEMM does not use ---
        ld_on, ld_i, ld_fw, ld_k = Signal(), Signal(16), Signal(range(NP + 1)), Signal(8)
        ld_base, ld_klen, ld_W = Signal(Value.cast(insn.weight_row).shape()), Signal(8), Signal(16)
        ld_bank, bank = Signal(), Signal()     # the loader's bank; the running GEMM's
        ld_cur = Signal()       # the loader's GEMM is the running one (else the next one)
        ld_start = Signal()     # load src's weights into bank ~bank from the next cycle
        lrdy = Signal()         # the loader's GEMM's weight rows have all landed
        land_on, land_e = Signal(), Signal(range(2 * NP * R))
        wn = Signal(16)         # weight rows of the loader's GEMM landed (readable this cycle)
        wready = Signal()       # every weight of the running GEMM is readable
        m.d.comb += wready.eq(~ld_cur | lrdy)
        with m.If(land_on):
            m.d.sync += wn.eq(wn + 1)
        ld_last = ld_on & (ld_i == ld_W - 1)
        m.d.comb += [self.weight.addr.eq(ld_base + ld_i), self.weight.en.eq(ld_on)]
        m.d.sync += [land_on.eq(ld_on), land_e.eq(ld_bank * (NP * R) + ld_fw * R + ld_k)]
        with m.If(ld_on):
            m.d.sync += [ld_i.eq(ld_i + 1), ld_k.eq(ld_k + 1)]
            with m.If(ld_k == ld_klen - 1):
                m.d.sync += [ld_k.eq(0), ld_fw.eq(ld_fw + 1)]
            with m.If(ld_last):
                m.d.sync += ld_on.eq(0)
        land_last = Signal()
        m.d.sync += land_last.eq(ld_last)
        with m.If(land_last):
            m.d.sync += lrdy.eq(1)
        with m.If(ld_start):
            no_w = src.k_len == 0      # no weights: nothing to load (W = 0)
            m.d.sync += [ld_on.eq(~no_w), ld_i.eq(0), ld_fw.eq(0), ld_k.eq(0), lrdy.eq(no_w), wn.eq(0),
                         ld_base.eq(src.weight_row), ld_klen.eq(src.k_len), ld_W.eq(gs.taps_k),
                         ld_bank.eq(~bank)]
        land = Signal(2 * NP * R)   # bit e: weight entry e of every column lands this cycle
        m.d.comb += land.eq(Cat(land_on & (land_e == e) for e in range(2 * NP * R)))

        # -- groups: reader, pixel queue, writer ---------------------------------------------
        SEQ = 24
        # per ifmap read port (ifmap, and ifmap1 with feie_read_ports = 2): the pixel it
        # brings this cycle (read last cycle), for group g, and its non-zero inputs
        rports = [self.ifmap] + ([self.ifmap1] if ifmap_read_ports(cfg) == 2 else [])
        arr = []
        for pi, port in enumerate(rports):
            a = SimpleNamespace(on=Signal(name=f"arr_on_{pi}"), g=Signal(range(max(R, 2)), name=f"arr_g_{pi}"),
                                nz=Signal(R, name=f"arr_nz_{pi}"), data=port.data)
            lanes = [port.data[k * ab:(k + 1) * ab] for k in range(R)]
            m.d.comb += a.nz.eq(Cat((lanes[k] != zp.as_unsigned()) & (insn.k_len > k) for k in range(R)))
            arr.append(a)
        grp = []
        for gi in range(R):
            d = SimpleNamespace()
            d.active = gi < G
            # reader: output row of its task, pixel in it, the row's first pixel, address
            d.rt, d.rp = Signal(24, name=f"rt_{gi}"), Signal(24, name=f"rp_{gi}")
            d.line, d.raddr = Signal(24, name=f"line_{gi}"), Signal(24, name=f"raddr_{gi}")
            d.aseq = Signal(SEQ, name=f"aseq_{gi}")
            # the group's pixel queue (FEIEQueue): QUEUE_DEPTH entries, the head's lowest input left
            d.q = place(m, f"queue_{gi}", FEIEQueue(R, ab, SEQ), self._blocks)
            # its pixel arrives on port 1 if that one brings it, else (if at all) on port 0
            d.arrive = [_held(m, f"arrive_{gi}_{pi}", a.on & (a.g == gi)) for pi, a in enumerate(arr)]
            d.push = _held(m, f"push_{gi}", Cat(d.arrive[pi] & a.nz.any() for pi, a in enumerate(arr)).any())
            if len(arr) == 2:
                m.d.comb += [d.q.data.eq(Mux(d.arrive[1], arr[1].data, arr[0].data)),
                             d.q.nz.eq(Mux(d.arrive[1], arr[1].nz, arr[0].nz))]
            else:
                m.d.comb += [d.q.data.eq(arr[0].data), d.q.nz.eq(arr[0].nz)]
            m.d.comb += [d.q.seq.eq(d.aseq), d.q.zp.eq(zp), d.q.setup.eq(setup), d.q.push.eq(d.push)]
            d.qv = list(d.q.qv)
            d.wt, d.xw = Signal(24, name=f"wt_{gi}"), Signal(16, name=f"xw_{gi}")
            d.wslot = Signal(range(NP), name=f"wslot_{gi}")
            d.wb, d.wlast = Signal(SEQ, name=f"wb_{gi}"), Signal(SEQ, name=f"wlast_{gi}")
            d.nfs, d.tend = Signal(SEQ, name=f"nfs_{gi}"), Signal(SEQ, name=f"tend_{gi}")
            d.wm = Signal(24, name=f"wm_{gi}")
            # the group's outputs (group_plan): up to output x1 of row e1 (rows < estop);
            # the pixels of a task that ends there; the writer's task: outputs, pixels;
            # the reader's task: pixels
            d.e1, d.x1 = Signal(24, name=f"e1_{gi}"), Signal(16, name=f"x1_{gi}")
            d.estop, d.wplast = Signal(24, name=f"estop_{gi}"), Signal(24, name=f"wplast_{gi}")
            d.n, d.Wp = Signal(16, name=f"n_{gi}"), Signal(24, name=f"Wp_{gi}")
            d.rwp = Signal(24, name=f"rwp_{gi}")
            d.fs = [Signal(SEQ, name=f"fs_{gi}_{j}") for j in range(NP)]
            d.sv = [Signal(name=f"sv_{gi}_{j}") for j in range(NP)]
            d.cpos = Signal(SEQ, name=f"cpos_{gi}")
            m.d.comb += d.cpos.eq(Mux(d.qv[0], d.q.head, d.aseq))
            d.elig = Signal(name=f"elig_{gi}")
            m.d.comb += d.elig.eq(run & d.active & (d.wt < d.estop) & (d.cpos > d.wlast))
            # its output after the next one is complete too, in the same task (a second write)
            d.elig2 = Signal(name=f"elig2_{gi}")
            m.d.comb += d.elig2.eq(d.elig & (P > 1) & (d.xw + 1 < d.n) & (d.cpos > d.wlast + s))
            d.wslot1 = _held(m, f"wslot1_{gi}", Mux(d.wslot == P - 1, 0, d.wslot + 1))
            grp.append(d)

        wptr, rptr = Signal(range(max(R, 2))), Signal(range(max(R, 2)))
        # port 0 takes the first eligible group from wptr on, port 1 the next one after it,
        # else (no other group eligible) the output after port 0's if complete in its task
        wgrants = [_rotating_pick(m, [d.elig for d in grp], wptr, "wgrant")]
        wg_on, wg = wgrants[0]
        dbl = Signal()          # port 1 writes port 0's group's next output
        if psum_write_ports(cfg) == 2:
            o_on, o_g = _rotating_pick(m, [d.elig & (wg != gi) for gi, d in enumerate(grp)], wg + 1, "wgrant1")
            m.d.comb += dbl.eq(wg_on & ~o_on & Array(d.elig2 for d in grp)[wg])
            wgrants.append((_held(m, "wgrant1_on", o_on | dbl), _held(m, "wgrant1_g", Mux(o_on, o_g, wg))))
        wg_last = wg if len(wgrants) == 1 else _held(m, "wgrant_last", Mux(wgrants[1][0], wgrants[1][1], wg))
        with m.If(wg_on):
            m.d.sync += wptr.eq(Mux(wg_last + 1 == G, 0, wg_last + 1))

        # writer next state (after this cycle's grant) and the MACs that use it
        cons, kk, xv = [], [], []
        for gi, d in enumerate(grp):
            granted = _held(m, f"granted_{gi}", Cat(on & (gsel == gi) for on, gsel in wgrants).any())
            d.granted = granted
            last_out = d.xw == d.n - 1
            wt_n, nfs_n, tend_n = Signal(24, name=f"wt_n_{gi}"), Signal(SEQ, name=f"nfs_n_{gi}"), \
                Signal(SEQ, name=f"tend_n_{gi}")
            fs_n = [Signal(SEQ, name=f"fs_n_{gi}_{j}") for j in range(NP)]
            sv_n = [Signal(name=f"sv_n_{gi}_{j}") for j in range(NP)]
            d.clear = [Signal(name=f"clear_{gi}_{j}") for j in range(NP)]
            m.d.comb += [wt_n.eq(d.wt), nfs_n.eq(d.nfs), tend_n.eq(d.tend)]
            m.d.comb += [fs_n[j].eq(d.fs[j]) for j in range(NP)] + [sv_n[j].eq(d.sv[j]) for j in range(NP)]
            wb_n = _held(m, f"wb_n_{gi}", d.wb + d.Wp)
            dbl_g = _held(m, f"dbl_{gi}", dbl & (wg == gi))

            def next_task():
                # the next task: the rest of row wt + 1 (up to x1 if it is row e1)
                to_end = d.wt + 1 == d.e1
                n_nx = _held(m, f"n_nx_{gi}", Mux(to_end, d.x1, n_out))
                wp_nx = _held(m, f"wp_nx_{gi}", Mux(to_end, d.wplast, wp_full))
                m.d.comb += [wt_n.eq(d.wt + 1), nfs_n.eq(wb_n + ps), tend_n.eq(d.tend + wp_nx)]
                m.d.comb += [fs_n[j].eq(wb_n + j * s) for j in range(NP)]
                m.d.comb += [sv_n[j].eq(n_nx > j) for j in range(NP)]
                m.d.sync += [d.wb.eq(wb_n), d.xw.eq(0), d.wslot.eq(0), d.wlast.eq(wb_n + S - 1),
                             d.n.eq(n_nx), d.Wp.eq(wp_nx)]

            with m.If(granted):
                m.d.comb += [d.clear[j].eq((d.wslot == j) | (dbl_g & (d.wslot1 == j))) for j in range(NP)]
                m.d.sync += d.wm.eq(d.wm + 1 + dbl_g)
                with m.If(last_out | (dbl_g & (d.xw + 1 == d.n - 1))):
                    next_task()
                with m.Else():
                    # slot wslot (and with a second write wslot1) takes the output P after its own
                    step = _held(m, f"wstep_{gi}", Mux(dbl_g, 2 * s, s))
                    m.d.comb += nfs_n.eq(d.nfs + step)
                    for j in range(NP):
                        with m.If(d.wslot == j):
                            m.d.comb += [fs_n[j].eq(d.fs[j] + ps), sv_n[j].eq(d.xw + P < d.n)]
                        with m.If(dbl_g & (d.wslot1 == j)):
                            m.d.comb += [fs_n[j].eq(d.fs[j] + ps), sv_n[j].eq(d.xw + 1 + P < d.n)]
                    m.d.sync += [d.xw.eq(d.xw + 1 + dbl_g),
                                 d.wslot.eq(Mux(dbl_g, Mux(d.wslot1 == P - 1, 0, d.wslot1 + 1), d.wslot1)),
                                 d.wlast.eq(d.wlast + step)]
            m.d.sync += [d.wt.eq(wt_n), d.nfs.eq(nfs_n), d.tend.eq(tend_n)]
            m.d.sync += [d.fs[j].eq(fs_n[j]) for j in range(NP)] + [d.sv[j].eq(sv_n[j]) for j in range(NP)]

            # MAC: the head's lowest non-zero input
            head = d.q.head
            c_on = Signal(name=f"cons_{gi}")
            k, x = d.q.k, d.q.x
            d.hit, d.fw, reach, w_ok = [], [], [], []
            for j in range(NP):
                dist = Signal(SEQ, name=f"dist_{gi}_{j}")
                m.d.comb += dist.eq(head - fs_n[j])
                r = _held(m, f"reach_{gi}_{j}", sv_n[j] & (head >= fs_n[j]) & (dist < S))
                reach.append(r)
                # its weight (loader row fw*k_len + k) has landed
                # (fw * k_len for fw < 3 chosen, not multiplied: a multiplier here was on
                # 4x4's critical path; fw = 3 is never reached)
                fwk = Mux(dist[1], insn.k_len << 1, Mux(dist[0], insn.k_len, 0))
                w_ok.append(~r | (fwk + k < wn))
                d.fw.append(dist[:2])
            m.d.comb += c_on.eq(run & (wready | Cat(w_ok).all()) & d.qv[0] & (wt_n < d.estop) & (head < nfs_n)
                                & (head < tend_n))
            m.d.comb += d.q.take.eq(c_on)
            for j in range(NP):
                h = Signal(name=f"hit_{gi}_{j}")
                m.d.comb += h.eq(c_on & reach[j])
                d.hit.append(h)
            d.retire = d.q.retire
            cons.append(c_on)
            kk.append(k)
            xv.append(x)

        m.d.comb += self.mac_cycles.eq(Cat(cons).any())

        # -- the PEs: PE row r is slot r % P of group r // P (per P); its weight entry sel_r
        #    and its accumulators in the columns (FEIEColumn) -----------------------------------
        #: per PE row: it multiplies this cycle, its tap, its input minus in_zp (for tests)
        self.probe = SimpleNamespace(hit=[], fw=[], x=[])
        sel_w = (2 * NP * R).bit_length()
        sels, clears = [], []
        for r in range(R):
            hit, clear = Signal(name=f"pe_hit_{r}"), Signal(name=f"pe_clear_{r}")
            fw, k = Signal(2, name=f"pe_fw_{r}"), Signal(range(max(R, 2)), name=f"pe_k_{r}")
            x = Signal(signed(ab + 1), name=f"pe_x_{r}")
            self.probe.hit.append(hit)
            self.probe.fw.append(fw)
            self.probe.x.append(x)
            for p in range(1, NP + 1):
                gi, j = r // p, r % p
                if gi >= R // p:
                    continue
                d = grp[gi]
                with m.If(P == p):
                    m.d.comb += [hit.eq(d.hit[j]), clear.eq(d.clear[j]), fw.eq(d.fw[j]), k.eq(kk[gi]),
                                 x.eq(xv[gi])]
            sel = Signal(sel_w, name=f"pe_sel_{r}")
            m.d.comb += sel.eq(bank * (NP * R) + fw * R + k)
            sels.append(sel)
            clears.append(clear)
        pe_cols = []
        for n in range(C):
            col = place(m, f"col_{n}", FEIEColumn(R, ab, wbits, acc_bits, len(wgrants)), self._blocks)
            m.d.comb += [col.wdata.eq(self.weight.data[n * wbits:(n + 1) * wbits]), col.land.eq(land),
                         col.sel.eq(Cat(sels)), col.x.eq(Cat(self.probe.x)), col.hit.eq(Cat(self.probe.hit)),
                         col.clear.eq(Cat(clears)), col.setup.eq(setup)]
            pe_cols.append(col)

        # -- psum writes: per write port, capture the granted slot, read the old row, write a
        #    cycle later ----------------------------------------------------------------------
        wr_ports = [(self.psum_rd, self.psum_wr)] + ([(self.psum_rd1, self.psum_wr1)] if len(wgrants) == 2 else [])
        for pi, ((g_on, g), (rdp, wrp)) in enumerate(zip(wgrants, wr_ports)):
            w_row = Signal(range(max(R, 2)), name=f"w_row_{pi}")
            second = dbl if pi == 1 else Const(0)      # port 1 takes the group's next output
            for p in range(1, NP + 1):
                with m.If(P == p):
                    m.d.comb += w_row.eq(g * p + Mux(second, Array(d.wslot1 for d in grp)[g],
                                                     Array(d.wslot for d in grp)[g]))
            wr_on = Signal(name=f"wr_on_{pi}")
            wr_addr = Signal.like(wrp.addr, name=f"wr_addr_{pi}")
            rd_addr = Signal(16, name=f"rd_addr_{pi}")
            m.d.comb += rd_addr.eq(insn.psum_row + Array(d.wm for d in grp)[g] + second)
            m.d.comb += [rdp.addr.eq(rd_addr), rdp.en.eq(g_on & insn.accumulate)]
            m.d.sync += [wr_on.eq(g_on), wr_addr.eq(rd_addr)]
            row_name, wval_name = FEIEColumn.OUT_PORTS[pi]
            for col in pe_cols:
                m.d.comb += getattr(col, row_name).eq(w_row)
            wval = [getattr(col, wval_name) for col in pe_cols]
            # (a signal: each lane's slice of the expression would lower the whole Mux again)
            old = Signal.like(rdp.data, name=f"old_{pi}")
            m.d.comb += old.eq(Mux(insn.accumulate, rdp.data, 0))
            m.d.comb += [wrp.addr.eq(wr_addr),
                         wrp.data.eq(Cat((wval[n] + old[n * acc_bits:(n + 1) * acc_bits].as_signed())
                                         [:acc_bits] for n in range(C)))]
            with m.If(wr_on):
                m.d.comb += wrp.en.eq(Cat(insn.n_len > n for n in range(C)))

        # -- ifmap reads: request, grant, landing ----------------------------------------------
        reqs = []
        for gi, d in enumerate(grp):
            # the queue after this cycle, sum(qv) - retire + push, holds fewer than
            # QUEUE_DEPTH: this cycle's retire (the latest of these inputs, behind the MAC
            # decision) enters last
            held = _held(m, f"qheld_{gi}", sum(d.qv) + d.push)
            rq = Signal(name=f"rreq_{gi}")
            m.d.comb += rq.eq(run & d.active & (d.rt < d.estop)
                              & ((held < QUEUE_DEPTH) | (d.retire & (held == QUEUE_DEPTH))))
            reqs.append(rq)
        # port 0 takes the first requester from rptr on, port 1 the next one after it
        rgrants = [_rotating_pick(m, reqs, rptr, "rgrant")]
        if len(rports) == 2:
            g0_on, g0 = rgrants[0]
            rgrants.append(_rotating_pick(m, [rq & (g0 != gi) for gi, rq in enumerate(reqs)], g0 + 1,
                                          "rgrant1"))
        rg_on, rg = rgrants[0]
        rg_last = rg if len(rgrants) == 1 else _held(m, "rgrant_last", Mux(rgrants[1][0], rgrants[1][1], rg))
        with m.If(rg_on):
            m.d.sync += rptr.eq(Mux(rg_last + 1 == G, 0, rg_last + 1))
        raddrs = Array(d.raddr for d in grp)
        for port, a, (on, gsel) in zip(rports, arr, rgrants):
            m.d.comb += [port.addr.eq(raddrs[gsel]), port.en.eq(on)]
            m.d.sync += [a.on.eq(on), a.g.eq(gsel)]
        m.d.comb += self.zero_skips.eq(sum(Mux(a.on, insn.k_len - sum(a.nz[k] for k in range(R)), 0)
                                           for a in arr))

        for gi, d in enumerate(grp):
            with m.If(Cat(on & (gsel == gi) for on, gsel in rgrants).any()):
                with m.If(d.rp == d.rwp - 1):     # the next task: row rt + 1 from its start
                    m.d.sync += [d.rp.eq(0), d.rt.eq(d.rt + 1), d.line.eq(d.line + lstep),
                                 d.raddr.eq(d.line + lstep),
                                 d.rwp.eq(Mux(d.rt + 1 == d.e1, d.wplast, wp_full))]
                with m.Else():
                    m.d.sync += [d.rp.eq(d.rp + 1), d.raddr.eq(d.raddr + pstep)]
            with m.If(Cat(d.arrive).any()):
                m.d.sync += d.aseq.eq(d.aseq + 1)

        # -- setup in CHECK: every group at its first task -------------------------------------
        with m.If(setup):
            m.d.sync += [wptr.eq(0), rptr.eq(0)] + [a.on.eq(0) for a in arr]
            # group g's start: output g*Q = g*qn rows + g*qx outputs, so (with qx <= n_out)
            # row g*qn + k and output g*qx - k*n_out, k = floor(g*qx / n_out) the carries
            # (the compares g*qx >= j*n_out, j <= g, side by side); its row's first pixel,
            # its own pixel and output offsets (x*s) likewise. Constant multiples (shifts
            # and adds) of the registered geometry: no chain through the groups.
            def start(g):
                """(row, output, line, xoff, x*s, wm) of output g*Q, modulo 2**24."""
                if g == 0:
                    return (Const(0, 24),) * 6
                gq = _held(m, f"gqx_{g}", _times(gs.qx, g))
                carry = [_held(m, f"cyc_{g}_{j}", gq >= _times(gs.nout, j)) for j in range(1, g + 1)]

                def by_k(v):    # k * v for the carries k
                    out = Const(0)
                    for j in range(1, g + 1):
                        out = Mux(carry[j - 1], _times(v, j), out)
                    return out
                return tuple(_held(m, f"{name}_s{g}", val[:w]) for name, val, w in (
                    ("e", _times(gs.qn, g) + sum(carry), 24), ("x", gq - by_k(gs.nout), 16),
                    ("line", _times(gs.qnl, g) + by_k(gs.lstep), 24),
                    ("xoff", _times(gs.qxs, g) - by_k(gs.ns), 24),
                    ("xs", _times(gs.qx_s, g) - by_k(gs.nout_s), 24), ("wm", _times(gs.Q, g), 24)))

            starts = [start(g) for g in range(len(grp) + 1)]
            for gi, d in enumerate(grp):
                (ce, cx, cline, cxoff, cxs, cwm), (en, xn, _, _, nxs, _) = starts[gi], starts[gi + 1]
                past = _held(m, f"past_{gi}", en >= gs.T)       # the end, clamped to (T, 0)
                e1 = _held(m, f"e1c_{gi}", Mux(past, gs.T, en))
                x1 = _held(m, f"x1c_{gi}", Mux(past, 0, xn))
                x1s = _held(m, f"x1s_{gi}", Mux(past, 0, nxs))          # x1 * s
                last = _held(m, f"lastrow_{gi}", ce == e1)
                n0 = _held(m, f"n0_{gi}", Mux(last, x1, gs.nout) - cx)
                # (n0 - 1) * s + S, (x1 - 1) * s + S
                wp0 = _held(m, f"wp0_{gi}", (Mux(last, x1s, gs.nout_s) - cxs - gs.s + gs.S)[:24])
                m.d.sync += [d.rt.eq(ce), d.rp.eq(0), d.line.eq(src.ifmap_row + cline),
                             d.raddr.eq(src.ifmap_row + cline + cxoff), d.aseq.eq(0),
                             d.wt.eq(ce), d.xw.eq(0), d.wslot.eq(0),
                             d.wb.eq(0), d.wlast.eq(gs.wlast0), d.nfs.eq(gs.nfs0), d.tend.eq(wp0),
                             d.wm.eq(cwm), d.n.eq(n0), d.Wp.eq(wp0), d.rwp.eq(wp0),
                             d.e1.eq(e1), d.x1.eq(x1), d.estop.eq(e1 + (x1 != 0)),
                             d.wplast.eq(x1s - gs.s + gs.S)]
                m.d.sync += [d.fs[j].eq(j * gs.s) for j in range(NP)] + [d.sv[j].eq(n0 > j) for j in range(NP)]

        all_done = Signal()
        m.d.comb += all_done.eq(Cat((d.wt >= d.estop) | ~d.active for d in grp).all())
        # the next GEMM, taken in RUN: checked the cycle after (prechk); a legal one's weights
        # load into the other bank, and it starts in the cycle the running one ends
        pend, prechk, pend_go, done_r = Signal(), Signal(), Signal(), Signal()
        # the range checks of insn / insn_nx, registered with them (gemm_check_register);
        ok_nx = gemm_check_register(m, [(nx_pay, self.offered)], cfg, "ok_nx")
        ok = gemm_check_register(m, [(ld_pay, self.offered), (ld_nx, ok_nx)], cfg)
        go_nx = _held(m, "go_nx", ok_nx & (insn_nx.m_len != 0) & (insn_nx.n_len != 0))
        m.d.comb += ld_pay.eq(self.insn.valid & self.insn.ready & ~run)   # (IDLE)
        take = Signal()
        m.d.comb += take.eq(~pend & wready & ~all_done)
        m.d.sync += done_r.eq(0)
        m.d.comb += self.done.eq(done_r)
        with m.FSM():
            accept_state(m, self.insn, insn)
            with insn_check_state(m, self, ok,
                                  (insn.m_len == 0) | (insn.n_len == 0)):
                m.d.comb += [setup.eq(1), ld_start.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), run.eq(1), self.insn.ready.eq(take)]
                with m.If(self.insn.valid & take):
                    m.d.comb += nx_pay.eq(1)
                    m.d.sync += [insn_nx.eq(self.insn.payload), pend.eq(1), prechk.eq(1)]
                with m.If(prechk):
                    m.d.sync += [prechk.eq(0), pend_go.eq(go_nx)]
                    with m.If(go_nx):
                        m.d.comb += ld_start.eq(1)
                        m.d.sync += ld_cur.eq(0)
                with m.If(all_done & wready):   # (the loader done: nothing lands later)
                    with m.If(pend & (pend_go | (prechk & go_nx))):
                        # the next GEMM starts: done of this one the next cycle (its last
                        # write lands now)
                        m.d.comb += [setup.eq(1), ld_nx.eq(1)]
                        m.d.sync += [insn.eq(insn_nx), pend.eq(0), pend_go.eq(0), done_r.eq(1)]
                    with m.Else():
                        m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                with m.If(pend):                # an illegal or empty next GEMM: its CHECK
                    m.d.comb += ld_nx.eq(1)
                    m.d.sync += [insn.eq(insn_nx), pend.eq(0)]
                    m.next = "CHECK"
                with m.Else():
                    m.next = "IDLE"
        with m.If(setup):       # (after the loader start of prechk: a start in this cycle wins)
            m.d.sync += [bank.eq(~bank), ld_cur.eq(1)]
        return m
