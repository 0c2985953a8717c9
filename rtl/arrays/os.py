"""Output-stationary PE array (``dataflow = "os"``, ShiDianNao style).

``rows x cols`` PEs; PE ``(i, n)`` owns one output, ``psum[m0 + i][n]`` of the
current block of ``rows`` output rows, and accumulates it in place while the
inputs and weights stream past: in each MAC cycle the weight row ``k``
(``cols`` weights) is broadcast down the columns and every PE row ``i`` takes
the activation ``x[m0 + i][k]`` from its own shift register (loaded with the
ifmap row ``m0 + i`` before the block, shifted one lane per cycle). Only when the
block's ``k`` loop is over do the outputs leave the array (one psum row per
cycle, adding the old psum when ``accumulate``).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.arrays.blocks import Block, place
from celosia.rtl.arrays.engine import ComputeEngine, gemm_check_register, legal_gemm
from celosia.rtl.arrays.window import WindowAddr
from celosia.rtl.config import ceil_div
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT

__all__ = ["OSArray", "OSColumn", "StageInsn", "cycles", "epoch_cycles", "sequence_timing", "sequence_cycles",
           "block_sequence_timing", "OSTiming"]

#: The fields of a GEMM that a block carries through the MAC and DRAIN stages of
#: :class:`OSArray` (FILL carries ``k_len`` / ``in_zp`` too: the former masked FEIE array
#: used them), and ``last``:
#: the block is its GEMM's last.
StageInsn = data.StructLayout({
    "weight_row": unsigned(16),
    "k_len": unsigned(8),
    "in_zp": signed(8),
    "psum_row": unsigned(16),
    "accumulate": unsigned(1),
    "n_len": unsigned(8),
    "last": unsigned(1),
})


def stage_fields(insn):
    """The :data:`StageInsn` fields of the ``GemmInsn`` view ``insn`` (``last`` = 0), as a
    value to assign to a ``StageInsn`` signal."""
    return Cat(*(insn[name] if name != "last" else Const(0, 1) for name in StageInsn.members))


class OSColumn(Block):
    """PE column ``n`` of :class:`OSArray`: the ``rows`` PEs ``(i, n)``, each one multiplier
    and two accumulator banks, and the pick of the row being drained
    (:mod:`~celosia.rtl.arrays.blocks`: inline for pysim, one module instanced ``cols``
    times in Verilog).

    Ports
    -----
    x : In(rows * act_bits)
        Lane ``i``: PE row ``i``'s current int8 activation (of the MAC bank).
    w : In(weight_bits)
        Lane ``n`` of the weight buffer read data (int8).
    clear : In(2)
        Bit ``b``: clear accumulator bank ``b`` at the next edge.
    land : In(2)
        Bit ``b`` (and not ``clear``): bank ``b``'s accumulators add ``x[i] * w`` at the next
        edge (int32 wrap).
    bank, row : In(1), In(range(max(rows, 2)))
        The accumulator drained.
    out : Out(signed(acc_bits))
        Accumulator ``row`` of bank ``bank`` (combinational).
    """

    def __init__(self, rows, act_bits, weight_bits, acc_bits):
        self.rows, self.act_bits, self.weight_bits, self.acc_bits = rows, act_bits, weight_bits, acc_bits
        super().__init__({
            "x": In(rows * act_bits), "w": In(weight_bits), "clear": In(2), "land": In(2),
            "bank": In(1), "row": In(range(max(rows, 2))), "out": Out(signed(acc_bits)),
        }, (rows, act_bits, weight_bits, acc_bits))

    def elaborate(self, platform):
        m = Module()
        rows, ab, wb, acc_bits = self.rows, self.act_bits, self.weight_bits, self.acc_bits
        acc = [[Signal(signed(acc_bits), name=f"acc{b}_{i}") for i in range(rows)] for b in range(2)]
        for i in range(rows):
            # (the product is a signal: an expression would be rebuilt at every use)
            prod = Signal(signed(ab + wb), name=f"prod_{i}")
            m.d.comb += prod.eq(self.x[i * ab:(i + 1) * ab].as_signed() * self.w.as_signed())
            for b in range(2):
                with m.If(self.clear[b]):
                    m.d.sync += acc[b][i].eq(0)
                with m.Elif(self.land[b]):
                    m.d.sync += acc[b][i].eq(acc[b][i] + prod)  # wraps to int32
        m.d.comb += self.out.eq(Mux(self.bank, Array(acc[1])[self.row], Array(acc[0])[self.row]))
        return m


class OSArray(ComputeEngine):
    """Output-stationary GEMM engine implementing :class:`ComputeEngineSignature`.

    Same instruction semantics as :class:`~celosia.rtl.arrays.ws.WSArray`: for
    ``m < m_len``, ``n < n_len``::

        psum[psum_row+m][n] = (accumulate ? psum[psum_row+m][n] : 0)
                              + sum_{k<k_len} int8(ifmap[row(m)][k]) * int8(weight[weight_row+k][n])

    (int32 wrapping; lanes ``n >= n_len`` of the written rows are left as they were;
    ``row(m)``: ``ifmap_row + m``, or the window of a one-tap windowed GEMM, as in
    :class:`~celosia.rtl.arrays.ws.WSArray`). Instructions take effect in acceptance
    order.

    Block pipeline: the ``m_len`` rows of a GEMM go in ``nb = ceil(m_len / rows)`` blocks
    of ``mb = min(rows, rows left)`` through three stages. The PE rows' input registers
    and the accumulators are double-buffered (banks 0 / 1, alternating from one epoch to
    the next), and in each *epoch*

    * FILL loads a block: its ifmap rows ``row(m0) .. row(m0+mb-1)`` are read, one per
      cycle, into the block's input registers (each lands the next cycle); the window
      address generator (:class:`~celosia.rtl.arrays.window.WindowAddr`, started by a
      GEMM's first FILL read) gives ``row(m)`` without a cycle of its own;
    * MAC computes the block FILL loaded in the previous epoch: weight row
      ``weight_row+k`` is read, one per cycle for ``k < k_len``; one cycle later every PE
      multiplies it with its row's current input and accumulates (the block's accumulator
      bank is cleared in the epoch's first cycle);
    * DRAIN writes the block MAC computed in the previous epoch: psum row
      ``psum_row+m0+i`` is read (if ``accumulate``) and written one cycle later with the
      PE row ``i``'s outputs added.

    The stages follow the blocks of consecutive GEMMs without a gap: when FILL has loaded
    the last block of a GEMM, the next epoch's FILL takes block 0 of the next accepted
    GEMM while the last blocks of the current one are in MAC / DRAIN. Each stage holds
    the fields of the GEMM its block belongs to (FILL: the window, through the address
    generator; MAC: ``weight_row``, ``k_len``,
    ``in_zp``; DRAIN: ``psum_row``, ``accumulate``, ``n_len``), moving with the block from
    stage to stage. Each stage uses its own buffer port (FILL the ifmap read port, MAC the
    weight read port, DRAIN the psum read and write ports), so they never compete. An
    epoch lasts ``max(1, fill rows, MAC steps, drain rows)`` cycles (a stage with no block
    counts 0); the next starts the cycle after the last issue of the longest stage.

    Psum hazards: none, without a stall. Blocks drain in order, one stage per epoch, so a
    GEMM's blocks (distinct psum rows) all drain before any block of a later GEMM; the
    last write of a GEMM lands at the latest in the first cycle of the next epoch, the
    first cycle a later GEMM's DRAIN can read, and the psum buffer's read ports are
    transparent for its write port (a read sees the write of the same cycle). So a tap
    chain accumulating into the same psum rows, even ``m_len = 1`` GEMMs in 1-cycle
    epochs, reads every row after the previous GEMM wrote it.

    Instructions and timing (cycle ``a`` = the cycle ``insn.valid & insn.ready``):

    * ``insn.ready`` is high while the *next-instruction register* is empty and fewer
      than :attr:`MAX_IN_FLIGHT` accepted instructions have not had their ``done`` /
      ``error`` (``busy`` tells whether any has); an accepted GEMM waits there from
      cycle ``a+1``.
    * a legal GEMM with ``m_len > 0`` leaves the register at an *epoch boundary* (the last
      cycle of an epoch; while no stage holds a block, every cycle) at which FILL has no
      block of an earlier GEMM left, ``b >= a+1``; its block 0 is filled in the epoch that
      starts at ``b+1``. On an idle engine ``b = a+1``: the first epoch starts in cycle
      ``a+2``.
    * ``done`` pulses two cycles after the GEMM's last DRAIN issue (the last write lands
      in between): an epoch starting in ``s`` that drains the GEMM's last block of ``mb``
      rows gives ``done`` in ``s + mb + 1``.
    * an illegal GEMM (:func:`gemm_insn_in_range`, computed at acceptance and registered:
      :func:`~celosia.rtl.arrays.engine.gemm_check_register`; ``error``, nothing read or written) or
      ``m_len = 0`` (``done``) completes from the register in the first cycle ``c >= a+1``
      in which nothing earlier is left in the engine (``c = max(a+1, E+1)``, ``E`` the
      previous ``done``), and it blocks the register until then.

    So one GEMM on an idle engine ends ``3 + sum over its nb + 2 epochs of max(1, fill
    rows, MAC steps, drain rows)`` cycles after acceptance (:func:`cycles`,
    :func:`epoch_cycles`; 1 for an error or ``m_len = 0``), and a sequence
    :func:`sequence_timing`: in steady state an epoch per block of ``max(mb, k_len)``
    cycles (``mb`` and ``k_len`` of the blocks in FILL, MAC and DRAIN), with no bubble
    between the GEMMs, provided each is accepted before the previous one's last FILL
    epoch ends. Each accepted instruction gets exactly one ``done`` or ``error``, in
    acceptance order (at most one per cycle).
    """

    #: Most instructions in flight (accepted, no ``done`` / ``error`` yet): what the
    #: controller's dispatch tracks.
    MAX_IN_FLIGHT = GEMMS_IN_FLIGHT

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        ab, wb, acc_bits = cfg.act_bits, cfg.weight_bits, cfg.acc_bits

        # The next-instruction register, and the instructions in flight.
        nxt = Signal(isa.GemmInsn)
        nxt_valid = Signal()
        outstanding = Signal(range(self.MAX_IN_FLIGHT + 1))
        # the range check of nxt, registered with it (gemm_check_register)
        nxt_ok = gemm_check_register(m, [(self.insn.valid & self.insn.ready, self.offered)], cfg)
        # Block pipeline: each stage (FILL, MAC, DRAIN) has an "on" flag, its block's first
        # row m0_* and rows mb_*, the fields of the block's GEMM (si_*: StageInsn, with
        # "last" = the GEMM's last block), and a step counter; FILL also has the rows of its
        # GEMM not yet filled (left, the current block's included). FILL and DRAIN use bank
        # "bank" of the double buffers, MAC ~bank.
        m0_f, m0_m, m0_d = Signal(16), Signal(16), Signal(16)
        mb_f, mb_m, mb_d = (Signal(range(rows + 1), name=f"mb_{s}") for s in "fmd")
        on_f, on_m, on_d = Signal(), Signal(), Signal()
        si_f, si_m, si_d = (Signal(StageInsn, name=f"si_{s}") for s in "fmd")
        cnt_f, cnt_m, cnt_d = Signal(16), Signal(16), Signal(16)
        bank = Signal()
        left = Signal(16)
        first = Signal()                   # first cycle of an epoch

        # Input shift registers, two banks per PE row: lane 0 is the current activation.
        xreg = [[Signal(rows * ab, name=f"x{b}_{i}") for i in range(rows)] for b in range(2)]

        run = Signal()                     # some stage holds a block: an epoch is on
        x_issue = Signal()
        mac_issue = Signal()
        wr_issue = Signal()
        last_f, last_m, last_d = Signal(), Signal(), Signal()   # stage idle or on its last step
        m.d.comb += run.eq(on_f | on_m | on_d)

        # FILL: the read issued in cycle t lands in bank x_b, PE row x_i at t+1.
        x_land, x_b = Signal(), Signal()
        x_i = Signal(range(rows))
        m.d.sync += [x_land.eq(x_issue), x_i.eq(cnt_f), x_b.eq(bank)]
        for b in range(2):
            for i in range(rows):
                with m.If(x_land & (x_b == b) & (x_i == i)):
                    m.d.sync += xreg[b][i].eq(self.ifmap.data)

        # MAC: the weight read issued in cycle t is used at t+1, on bank mac_b.
        mac_land, mac_b = Signal(), Signal()
        m.d.sync += [mac_land.eq(mac_issue), mac_b.eq(~bank)]
        w_addr = Signal.like(self.weight.addr)
        m.d.comb += [w_addr.eq(si_m.weight_row + cnt_m),
                     last_m.eq(~on_m | (cnt_m + 1 >= si_m.k_len)),
                     mac_issue.eq(run & on_m & (cnt_m < si_m.k_len))]
        xs = [[xreg[b][i][:ab].as_signed() for i in range(rows)] for b in range(2)]
        for b in range(2):
            for i in range(rows):
                with m.If(mac_land & (mac_b == b) & ~(x_land & (x_b == b))):
                    m.d.sync += xreg[b][i].eq(xreg[b][i].shift_right(ab))  # (a slice, not an operator)
        # One multiplier per PE, on the MAC bank's activation (the bank conditions and the
        # products are signals: an expression would be rebuilt at every use).
        clear_b = [Signal(name=f"clear_b{b}") for b in range(2)]
        land_b = [Signal(name=f"land_b{b}") for b in range(2)]
        x_mac = [Signal(signed(ab), name=f"x_mac_{i}") for i in range(rows)]
        for b in range(2):
            # the MAC bank is cleared in its epoch's first cycle (its last drain write, if
            # any, is that cycle; its first MAC lands a cycle later)
            m.d.comb += [clear_b[b].eq(run & first & on_m & (bank != b)),
                         land_b[b].eq(mac_land & (mac_b == b))]
        for i in range(rows):
            m.d.comb += x_mac[i].eq(Mux(mac_b, xs[1][i], xs[0][i]))
        # The PE columns (OSColumn): products, accumulators and the drain row pick.
        pe_cols = [place(m, f"col_{n}", OSColumn(rows, ab, wb, acc_bits), self._blocks) for n in range(cols)]
        for n, col in enumerate(pe_cols):
            m.d.comb += [col.x.eq(Cat(x_mac)), col.w.eq(self.weight.data[n * wb:(n + 1) * wb]),
                         col.clear.eq(Cat(clear_b)), col.land.eq(Cat(land_b))]

        # DRAIN: psum row read in cycle t, written at t+1 with bank wr_b's PE row wr_i added
        # (the GEMM's accumulate and n_len registered with the read).
        wr_land, wr_b, wr_acc = Signal(), Signal(), Signal()
        wr_i = Signal(range(rows))
        wr_nlen = Signal.like(si_d.n_len)
        wr_addr = Signal.like(self.psum_wr.addr)
        m.d.sync += [wr_land.eq(wr_issue), wr_i.eq(cnt_d), wr_b.eq(bank), wr_acc.eq(si_d.accumulate),
                     wr_nlen.eq(si_d.n_len), wr_addr.eq(si_d.psum_row + m0_d + cnt_d)]
        for col in pe_cols:
            m.d.comb += [col.bank.eq(wr_b), col.row.eq(wr_i)]
        # (a signal: each lane's slice of the expression would lower the whole Mux again)
        old = Signal.like(self.psum_rd.data, name="old")
        m.d.comb += old.eq(Mux(wr_acc, self.psum_rd.data, 0))
        m.d.comb += [
            self.psum_wr.addr.eq(wr_addr),
            self.psum_wr.data.eq(Cat(
                (col.out + old[n * acc_bits:(n + 1) * acc_bits].as_signed())[:acc_bits]
                for n, col in enumerate(pe_cols))),
        ]
        with m.If(wr_land):
            m.d.comb += self.psum_wr.en.eq(Cat(wr_nlen > n for n in range(cols)))

        # FILL's ifmap rows (m = 0, 1, ... in order) from the window address generator,
        # started by a GEMM's first FILL read: the cycle after the GEMM left nxt, which
        # still holds it then (nxt is written again at the earliest a cycle later).
        m.submodules.window = win = WindowAddr(len(self.ifmap.addr))
        m.d.comb += [win.insn.eq(nxt), win.start.eq(x_issue & first & (m0_f == 0)),
                     win.step.eq(x_issue)]

        m.d.comb += [
            x_issue.eq(run & on_f & (cnt_f < mb_f)),
            last_f.eq(~on_f | (cnt_f + 1 >= mb_f)),
            wr_issue.eq(run & on_d & (cnt_d < mb_d)),
            last_d.eq(~on_d | (cnt_d + 1 >= mb_d)),
            self.ifmap.addr.eq(win.addr),
            self.ifmap.en.eq(x_issue),
            self.weight.addr.eq(w_addr),
            self.weight.en.eq(mac_issue),
            self.psum_rd.addr.eq(si_d.psum_row + m0_d + cnt_d),
            self.psum_rd.en.eq(wr_issue & si_d.accumulate),
        ]
        with m.If(x_issue):
            m.d.sync += cnt_f.eq(cnt_f + 1)
        with m.If(mac_issue):
            m.d.sync += cnt_m.eq(cnt_m + 1)
        with m.If(wr_issue):
            m.d.sync += cnt_d.eq(cnt_d + 1)

        # Completion: done two cycles after the last DRAIN issue of a GEMM's last block
        # (fin1: its write lands); an error / m_len = 0 completes from nxt once nothing
        # earlier is left (no block in the pipeline, no done to come).
        fin1, fin2 = Signal(), Signal()
        m.d.sync += [fin1.eq(wr_issue & (cnt_d + 1 >= mb_d) & si_d.last), fin2.eq(fin1)]
        check_fin = Signal()
        m.d.comb += check_fin.eq(nxt_valid & (~nxt_ok | (nxt.m_len == 0)) & ~run & ~fin1 & ~fin2)

        # Epoch boundary: the epoch's last cycle; every cycle while no stage holds a block.
        # The blocks move on one stage; FILL takes the next block of its GEMM, else block 0
        # of the GEMM in nxt (legal, m_len > 0), else nothing.
        bound = Signal()
        m.d.comb += bound.eq(~run | (last_f & last_m & last_d))
        m.d.sync += first.eq(bound)
        with m.If(bound):
            rest = left - Mux(on_f, mb_f, 0)
            more = on_f & (rest != 0)
            m.d.sync += [cnt_f.eq(0), cnt_m.eq(0), cnt_d.eq(0), bank.eq(~bank),
                         on_m.eq(on_f), on_d.eq(on_m), m0_m.eq(m0_f), m0_d.eq(m0_m),
                         mb_m.eq(mb_f), mb_d.eq(mb_m), si_m.eq(si_f), si_d.eq(si_m)]
            with m.If(more):
                m.d.sync += [left.eq(rest), m0_f.eq(m0_f + mb_f), mb_f.eq(Mux(rest < rows, rest, rows)),
                             si_f.last.eq(rest <= rows)]
            with m.Elif(nxt_valid & nxt_ok & (nxt.m_len != 0)):
                m.d.sync += [on_f.eq(1), left.eq(nxt.m_len), m0_f.eq(0),
                             mb_f.eq(Mux(nxt.m_len < rows, nxt.m_len, rows)),
                             si_f.eq(stage_fields(nxt)), si_f.last.eq(nxt.m_len <= rows),
                             nxt_valid.eq(0)]
            with m.Else():
                m.d.sync += on_f.eq(0)

        completed = fin2 | check_fin
        m.d.comb += [
            self.insn.ready.eq(~nxt_valid & (outstanding < self.MAX_IN_FLIGHT)),
            self.done.eq(fin2 | (check_fin & nxt_ok)),
            self.error.eq(check_fin & ~nxt_ok),
            self.busy.eq(outstanding != 0),
        ]
        accept = self.insn.valid & self.insn.ready
        with m.If(accept):
            m.d.sync += [nxt.eq(self.insn.payload), nxt_valid.eq(1)]
        with m.If(check_fin):
            m.d.sync += nxt_valid.eq(0)
        m.d.sync += outstanding.eq(outstanding + accept - completed)
        return m


def epoch_cycles(m_len: int, rows: int, mac_steps) -> int:
    """Cycles of the block pipeline of :class:`OSArray` from its first FILL
    cycle to the last DRAIN issue: ``nb + 2`` epochs (``nb = ceil(m_len / rows)`` blocks),
    epoch ``e`` filling block ``e``, MAC-ing block ``e-1`` and draining block ``e-2``, each
    ``max(1, fill rows, MAC steps, drain rows)`` cycles long. ``mac_steps[b]`` = the MAC
    cycles of block ``b``."""
    mbs = [min(rows, m_len - m0) for m0 in range(0, m_len, rows)]
    nb = len(mbs)
    total = 0
    for e in range(nb + 2):
        fill = mbs[e] if e < nb else 0
        mac = mac_steps[e - 1] if 1 <= e <= nb else 0
        drain = mbs[e - 2] if 2 <= e <= nb + 1 else 0
        total += max(1, fill, mac, drain)
    return total


def cycles(insn, config, ifmap=None) -> int:
    """Acceptance to ``done`` / ``error`` of the GEMM ``insn`` (field name -> int, missing
    = 0) issued to an idle :class:`OSArray`, the timing of its docstring:
    ``3 + sum over the nb + 2 epochs of max(1, fill rows, k_len, drain rows)``
    (:func:`epoch_cycles`); 1 for ``m_len = 0`` or an illegal instruction. ``ifmap`` is
    not needed. Instructions that overlap: :func:`sequence_timing`."""
    g = legal_gemm(insn, config)
    if g is None or g.m_len == 0:
        return 1
    return 3 + epoch_cycles(g.m_len, config.rows, dense_steps(g, config))


def dense_steps(g, config) -> list[int]:
    """MAC steps of each block of the legal GEMM ``g`` on :class:`OSArray`: ``k_len``."""
    return [g.k_len] * ceil_div(g.m_len, config.rows)


def block_sequence_timing(insns, config, block_steps, gaps=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` (field dicts as for
    :func:`cycles`) on the block pipeline of :class:`OSArray`, ``end`` the
    cycle of its ``done`` / ``error``; ``block_steps(g)`` gives the MAC steps of each block
    of a legal GEMM ``g`` (:func:`dense_steps`). Instruction ``i``
    is offered (``valid`` held high until accepted) from the cycle ``gaps[i]`` cycles after
    the acceptance cycle of instruction ``i-1`` plus one (the first from cycle
    ``gaps[0]``); ``gaps`` defaults to all 0 (back to back). The rules of the
    :class:`OSArray` docstring, epoch by epoch:

    * accepted in ``a = max(offer, F, E' + 1)``: ``F`` the cycle after the previous
      instruction left the next-instruction register, ``E'`` the end of the instruction
      ``MAX_IN_FLIGHT`` before;
    * error / ``m_len = 0``: ends in ``max(a + 1, E + 1)``, ``E`` the previous end, and
      leaves the register then;
    * GEMM: leaves the register at the first epoch boundary ``b >= a + 1`` where FILL has
      no earlier block left (the last cycle of an epoch; any cycle once the pipeline is
      empty); the epochs start ``b + 1``, ``b + 1 + L``, ...: each lasts ``L = max(1, fill
      rows, MAC steps, drain rows)`` of the blocks in its stages; an epoch starting in ``s``
      that drains a GEMM's last block of ``mb`` rows ends it in ``s + mb + 1``.
    """
    most = OSArray.MAX_IN_FLIGHT
    gaps = [0] * len(insns) if gaps is None else gaps
    n = len(insns)
    accept, end = [None] * n, [None] * n
    timer = OSTiming(config, block_steps, end.__setitem__)
    i = 0
    while i < n or timer.boundary is not None:
        a = None                     # when instruction i is accepted, if known by now
        if i < n and timer.reg is None:
            offer = gaps[0] if i == 0 else accept[i - 1] + 1 + gaps[i]
            a = max(offer, timer.leave + 1)
            if i >= most:
                a = None if end[i - most] is None else max(a, end[i - most] + 1)
        if a is not None and (timer.boundary is None or a < timer.boundary):
            accept[i] = a
            timer.accept(i, legal_gemm(insns[i], config), a)
            i += 1
        else:                        # the boundary comes first (it sees acceptances before it)
            timer.at_boundary()
    return list(zip(accept, end))


class OSTiming:
    """The block pipeline of :class:`OSArray` event by event (:func:`block_sequence_timing`
    drives it; so does the whole-machine cycle model, :mod:`celosia.sim.perf`, which learns
    when each GEMM is offered only as it goes).

    :meth:`accept` puts a GEMM accepted in cycle ``a`` into the next-instruction register
    (only while :attr:`reg` is ``None`` and ``a > leave``); :meth:`at_boundary` is called in
    the cycle :attr:`boundary` (the current epoch's last cycle; ``None`` while no stage
    holds a block), before any acceptance of that cycle; ``on_end(j, cycle)`` is called with
    each instruction's ``done`` / ``error`` cycle as soon as it is known (at the latest when
    its last block's DRAIN epoch starts). ``j`` is the caller's name for the instruction.
    """

    def __init__(self, config, block_steps, on_end):
        self.rows = config.rows
        self.block_steps = block_steps
        self.on_end = on_end
        self.stages = [None, None, None]  # FILL, MAC, DRAIN: (j, mb, steps, last) or None
        self.fill_rest = []               # the FILL GEMM's blocks after the one in FILL
        self.boundary = None
        self.reg = None                   # (j, a, g) in the next-instruction register
        self.leave = -10                  # the cycle the last instruction left it
        self.idle_from = 0                # the first cycle with no block in a stage
        self.last_end = -10

    def accept(self, j, g, a):
        """GEMM ``j`` (``g``: its :func:`legal_gemm`, None if illegal) accepted in ``a``."""
        self.reg = (j, a, g)
        if self.boundary is None:
            self._start_idle()

    def _blocks(self, j, g):
        mbs = [min(self.rows, g.m_len - m0) for m0 in range(0, g.m_len, self.rows)]
        return [(j, mb, st, b == len(mbs) - 1)
                for b, (mb, st) in enumerate(zip(mbs, self.block_steps(g)))]

    def _start_idle(self):
        j, a, g = self.reg
        self.reg = None
        if g is None or g.m_len == 0:     # completes from the register
            self.leave = self.last_end = max(a + 1, self.last_end + 1)
            self.on_end(j, self.last_end)
            return
        self.leave = max(a + 1, self.idle_from)
        self.fill_rest = self._blocks(j, g)
        self.stages = [self.fill_rest.pop(0), None, None]
        self._epoch(self.leave + 1)

    def _epoch(self, s):
        fill, mac, drain = self.stages
        length = max(1, fill[1] if fill else 0, mac[2] if mac else 0, drain[1] if drain else 0)
        if drain and drain[3]:
            self.last_end = s + drain[1] + 1
            self.on_end(drain[0], self.last_end)
        self.boundary = s + length - 1

    def at_boundary(self):
        """The epoch boundary ``b = boundary``: FILL takes its GEMM's next block, else the
        GEMM in the register if accepted before ``b``; the next epoch starts ``b + 1``."""
        b = self.boundary
        nxt = None
        if self.fill_rest:
            nxt = self.fill_rest.pop(0)
        elif self.reg is not None:
            j, a, g = self.reg
            if a <= b - 1 and g is not None and g.m_len > 0:
                self.fill_rest = self._blocks(j, g)
                nxt = self.fill_rest.pop(0)
                self.leave, self.reg = b, None
        fill, mac, _ = self.stages
        self.stages = [nxt, fill, mac]
        if any(self.stages):
            self._epoch(b + 1)
        else:
            self.boundary = None
            self.idle_from = b + 1
            if self.reg is not None:
                self._start_idle()


def sequence_timing(insns, config, gaps=None, ifmap=None) -> list[tuple[int, int]]:
    """``(accept, end)`` cycles of each of the GEMMs ``insns`` on :class:`OSArray`
    (:func:`block_sequence_timing` with ``k_len`` MAC steps per block; ``ifmap`` is not
    needed). One GEMM: ``[(gaps[0], gaps[0] + cycles(insn))]``."""
    return block_sequence_timing(insns, config, lambda g: dense_steps(g, config), gaps)


def sequence_cycles(insns, config, ifmap=None) -> int:
    """Cycles from the acceptance of the first of ``insns`` (issued back to back to an
    idle :class:`OSArray`) to the ``done`` / ``error`` of the last."""
    return sequence_timing(insns, config, ifmap=ifmap)[-1][1] if insns else 0
