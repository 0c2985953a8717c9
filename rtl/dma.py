"""DMA engines: LOAD (DRAM -> on-chip buffer) and STORE (psum -> PPU -> DRAM).

Both share :class:`LoopNest` (the three nested loops of DRAM addresses, buffer
rows and lanes), :func:`span_last` / :func:`window_check` (the bounds check
made before the first access) and the FSM prologue :func:`accept_state` +
:func:`check_state` (IDLE takes an instruction, CHECK reports it done / failed
or starts it). The check's products are registered in the acceptance cycle from the
offered instruction (``span_last(..., load=)``; a LOAD's pad ranges clamped to its loops
come with it from the load queue, ``pre``: :data:`~.controller.signatures.LoadPre`); CHECK
adds the start address and compares: no multiplier between the instruction register and
``error`` and no clamp before the multipliers (issue 15), no cycle added.

Timing
------
Both engines move DRAM data a bus word (``B = config.bus_bytes = bus_bits / 8`` bytes:
8, 16 or 32) at a time: a *run* is the innermost loop (``i0``) of one ``(i1, i2)``,
which always lands in one buffer row (LOAD) or comes out of one psum row (STORE).

``LoadEngine``: ``insn`` accepted in cycle ``t`` (``ready`` only while idle);
cycle ``t+1`` checks bounds: ``error`` (or ``done`` for an empty instruction)
pulses in cycle ``t+2``. Otherwise *requests* are issued in loop order from cycle
``t+2``, one per cycle. A request covers the next elements of the current run:

* a read run with ``dram_stride0 == 1``: the bytes from the current address to
  the end of its bus word or of the run, one bus read (a run of ``n`` bytes
  starting at byte address ``a`` takes ``ceil((a % B + n) / B)`` reads);
* a read run with another stride: one element per bus read;
* a padded run (``pad_en``, ``i1`` / ``i2`` outside the pad ranges): up to ``B``
  lanes of ``pad_value`` per request, without touching the bus
  (``ceil(n0 / B)`` requests).

A read request issues as the bus accepts it, a pad request straight away. Every
request enters the in-flight FIFO (depth ``dram_latency + 2``; entry: buffer row,
first lane, first byte in the word, count, pad flag), so buffer writes happen in
issue order even when padded and read requests hit the same buffer bytes: a read
entry at the FIFO head writes its ``count`` lanes (per-lane write enables, the
word rotated onto the lanes) in the cycle its response arrives, a pad entry as
soon as it is at the head. This relies on the bus contract (``rtl/dram.py``: a
read is answered exactly ``dram_latency`` cycles after acceptance): a pad takes an
issue slot, which leaves a response-free cycle for it at the head. ``done`` pulses
the cycle after the last write. With a bus that accepts every request
(``dram_bytes_per_cycle == B``, no other master), an instruction of ``R``
requests (the sum above over its runs) takes ``R + dram_latency + 2`` cycles from
acceptance to ``done`` when it reads anything, ``R + 3`` when every run is padded
(:func:`load_cycles`). A throttled or shared bus adds its stalls.

``StoreEngine``: bounds check in ``t+1`` as above; from ``t+1`` channel 0's
param row and the first psum row are read, from ``t+2`` one *chunk* per cycle enters
the PPU: the channels ``n .. n + c - 1`` of one psum row, through ``L =
config.ppu_lanes`` PPU lanes in lockstep (:class:`~celosia.rtl.ppu.PpuLanes`; lane
``j`` takes channel ``n + j``, the psum row shifted by ``n``). The parameter buffer
gives one record per cycle, so row 0 goes one channel per cycle (``c = 1``; the next
channel's param row, and the next psum row in the cycle of the row's last chunk, are
read as a chunk enters, so there are no bubbles); with ``L > 1`` row 0's ``n_len``
records are also kept in registers as they arrive, and every later row takes
``c = min(L, B - a % B, n_len - n)`` channels from that cache (``a``: the channel's DRAM
byte address; ``to_buf``: ``c = min(L, n_len - n)``), so a chunk never crosses a bus
word. A chunk's count travels down the PPU beside it; at the output a loop nest walks
the DRAM addresses (and ifmap rows / lanes) by the counts. PPU outputs are gathered
into their DRAM bus word: the chunk that fills the word's last byte (``B - 1``) or ends
a run (channel ``n_len - 1``) leaves with the gathered ones as ONE masked write
(``wmask``) in the cycle the PPU offers it; other chunks are taken without a bus
request. A run of ``n`` bytes from byte address ``a`` takes ``ceil((a % B + n) / B)``
writes at any ``L``; runs sharing a word write it separately.
A STORE with ``to_buf`` (a layer's output kept on chip) writes each chunk straight
into the ifmap buffer through the buffer's second write port (row ``buf_row +
m*buf_stride``, lanes ``lane0 + n ..``, per-lane write enables) in the cycle the PPU
offers it, with no bus request.
``done`` pulses the cycle after the last write was accepted: ``T + ppu.LATENCY + 2``
cycles for ``T`` chunks with a bus that accepts every request (:func:`store_chunks`,
:func:`store_cycles`): ``T = n_len * m_len`` with one lane (the default), at every
bus width; plus bus stalls (a throttled bus stalls the PPU only at the writes).

``bytes`` (DRAM_RD / DRAM_WR) counts the bytes an instruction uses, not whole
words: a read response adds its entry's ``count``, an accepted write the bytes set
in its ``wmask``; padded bytes are not counted. Its width,
:data:`~celosia.rtl.controller.signatures.DRAM_BYTES_BITS`, holds a word of the
widest bus.

``busy`` is high from the cycle after acceptance until ``done``/``error`` (those
pulse in the first idle cycle).
"""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .buffers import BufferReadSignature, BufferWriteSignature
from .config import ceil_div
from .controller.signatures import DRAM_BYTES_BITS, LoadPre
from .dram import DramBusSignature
from .isa import NUM_BASE_REGS, PARAM_BYTES, Buffer, ErrorCode, LoadInsn, ParamRecord, StoreInsn
from .ppu import LATENCY as PPU_LATENCY, PpuLanes

__all__ = ["LoopNest", "dram_start", "span_last", "window_check", "accept_state", "check_state",
           "LoadEngine", "StoreEngine", "load_plan", "load_requests", "load_cycles",
           "store_plan", "store_chunks", "store_cycles"]

#: Width of DRAM byte addresses inside the engines. Addresses of elements actually
#: accessed fit 32 bits after the bounds check; the walk itself is modulo 2^33, so a
#: negative start (signed ``dram_offset``) still gives the right in-window addresses.
ADDR_BITS = 33

#: Width of the engines' ``bytes`` output (DRAM bytes moved in a cycle, 0 .. a bus word)
#: and of :class:`LoopNest`'s ``step``: from the controller's engine signature.
BYTES_BITS = DRAM_BYTES_BITS


def dram_start(m, name, base, offset, load=None):
    """``base`` (unsigned 32) + ``offset`` (32-bit two's complement): a signed Signal, no wrap.

    ``load`` (issue 15, FPGA clock): ``base`` and ``offset`` are then those of the
    instruction *offered* to the engine (its stream payload) and ``load`` the cycle the
    engine takes it: the sum is a register loaded then, valid from CHECK for as long as
    the instruction holds (the base registers are CSRs that hold during a run). No cycle
    added; CHECK is left one adder and the compares of :func:`window_check`."""
    start = Signal(signed(34), name=f"{name}_start")
    m.d.comb += start.eq(_registered(m, f"{name}_start_reg", load, base + offset.as_signed()))
    return start


def span_last(m, name, start, loops, load=None):
    """``start + sum((n - 1) * stride)`` for ``loops`` = [(n, stride), ...] without wrapping.

    Valid when every ``n >= 1``. Returns a Signal wide enough for the sum, signed
    when ``start`` is.

    ``load`` (the range-check pipeline, issue 15): ``loops`` are then fields of the
    instruction *offered* to the engine (its stream payload, a register of the controller's
    queue) and ``load`` the cycle the engine takes it: the sum of the products is registered
    in that cycle (one multiplier and the adders between two registers), and the result,
    ``start`` (of the taken instruction) plus that register, is valid from the next cycle
    (the CHECK state) for as long as the instruction holds. Same value, no cycle added.
    """
    terms = []
    for k, (n, stride) in enumerate(loops):
        nm1 = Signal(len(n), name=f"{name}_n{k}m1")
        m.d.comb += nm1.eq(n - 1)
        terms.append(nm1 * stride)
    width = max([len(start)] + [len(t) for t in terms]) + len(loops) + 1
    last = Signal(signed(width) if start.shape().signed else unsigned(width), name=f"{name}_last")
    total = _registered(m, f"{name}_span", load, _sum(terms))
    m.d.comb += last.eq(start + total)
    return last


def _sum(terms):
    """The sum of the unsigned ``terms`` (Amaranth widens every add: no wrap)."""
    return functools.reduce(operator.add, terms)


def _registered(m, name, load, expr):
    """``expr`` itself if ``load`` is None, else a register of its shape loaded from it in
    the cycles ``load`` is high."""
    if load is None:
        return expr
    reg = Signal(Value.cast(expr).shape(), name=name)
    with m.If(load):
        m.d.sync += reg.eq(expr)
    return reg


def window_check(m, first, last, window_base, window_size, dram_bytes):
    """DRAM bytes ``[first, last]`` inside ``[window_base, window_base + window_size)``
    (size 0: the whole DRAM) and inside the DRAM. ``first`` / ``last`` may be signed
    (a negative address is outside).

    Returns ``(ok, fault)``: ``ok`` a 1-bit Signal; ``fault`` (32 bit) the byte address
    FAULT_ADDR reports when ``ok`` is low: ``first`` when it lies below the window, else
    ``last`` (the low 32 bits, two's complement for a negative address).

    The window's bounds are registers loaded every cycle from ``window_base`` /
    ``window_size``: the check sees the CSRs of the cycle before (they hold during a run).
    """
    end = Signal(34)
    lo = Signal(32)
    # registered (issue 15): the window CSRs hold during a run (docs/hardware.md), so their
    # end is computed the cycle before, off the check's path
    m.d.sync += [end.eq(Mux(window_size == 0, dram_bytes, window_base + window_size)),
                 lo.eq(Mux(window_size == 0, 0, window_base))]
    ok, below = Signal(), Signal()
    m.d.comb += [below.eq(first < lo), ok.eq(~below & (last < end) & (last < dram_bytes))]
    fault = Signal(32)
    m.d.comb += fault.eq(Mux(below, first, last))
    return ok, fault


def accept_state(m, insn_stream, insn, next_state="CHECK"):
    """FSM state IDLE (call inside ``with m.FSM()``): ``insn_stream.ready`` while idle;
    an offered instruction is latched into ``insn`` and the FSM goes to ``next_state``.

    Shared by every engine that takes one instruction at a time (the DMA engines and
    the compute engines).
    """
    with m.State("IDLE"):
        m.d.comb += insn_stream.ready.eq(1)
        with m.If(insn_stream.valid):
            m.d.sync += insn.eq(insn_stream.payload)
            m.next = next_state


def check_state(m, engine, nest, *, empty, dram_ok, fault, buf_ok, on_check=(), on_run=None):
    """FSM state CHECK of a DMA engine (call inside ``with m.FSM()``), one cycle.

    ``engine.busy`` and ``nest.start`` are high; the ``on_check`` sync statements
    are applied. Then, by priority: ``empty`` -> ``done`` pulse; ``~dram_ok`` ->
    ``error`` with :attr:`ErrorCode.DMA_OUT_OF_WINDOW` and ``engine.fault_addr`` set to
    ``fault`` (held until the next fault); ``~buf_ok`` -> ``error``
    with :attr:`ErrorCode.BUFFER_OUT_OF_RANGE` (all three back to IDLE); otherwise
    ``on_run()`` (if given) adds what starting takes and the FSM goes to RUN.
    ``engine.done`` / ``engine.error`` are registered pulses: the engine resets them
    to 0 every cycle before the FSM.
    """
    with m.State("CHECK"):
        m.d.comb += [engine.busy.eq(1), nest.start.eq(1)]
        m.d.sync += on_check
        with m.If(empty):
            m.d.sync += engine.done.eq(1)
            m.next = "IDLE"
        with m.Elif(~dram_ok):
            m.d.sync += [engine.error.eq(1), engine.error_code.eq(ErrorCode.DMA_OUT_OF_WINDOW),
                         engine.fault_addr.eq(fault)]
            m.next = "IDLE"
        with m.Elif(~buf_ok):
            m.d.sync += [engine.error.eq(1), engine.error_code.eq(ErrorCode.BUFFER_OUT_OF_RANGE)]
            m.next = "IDLE"
        with m.Else():
            if on_run is not None:
                on_run()
            m.next = "RUN"


class LoopNest(wiring.Component):
    """Three nested loops (``i0`` innermost) walking a DRAM byte address, a buffer row and a lane.

    At ``(i0, i1, i2)``: ``addr = first + i0*s0 + i1*s1 + i2*s2`` (modulo 2^33),
    ``row = row0 + i1*r1 + i2*r2``, ``lane = lane0 + i0``.

    Members
    -------
    n0, n1, n2 : In(16)
        Loop counts (all >= 1 while iterating; the engine checks for 0).
    s0, s1, s2 : In(24)
        DRAM byte strides.
    r1, r2 : In(16)
        Buffer row strides.
    first : In(33), row0 : In(16), lane0 : In(12)
        Start values. The parameters must hold while iterating.
    start : In(1)
        Go to ``(0, 0, 0)``.
    next : In(1)
        Advance by ``step`` elements of the innermost loop (ignored in the cycle of ``start``);
        past the end of the innermost loop, to the next ``(i1, i2)``.
    step : In(BYTES_BITS, init=1)
        Innermost elements consumed by ``next`` (1 .. ``bus_bits / 8``, at most ``n0 - i0``):
        the engines move a bus word's worth of bytes at once. ``addr`` moves by ``step``
        where ``s0 == 1`` and by ``s0`` otherwise (no multiplier: issue 15's critical path),
        so a ``step`` above 1 with ``s0 != 1`` leaves ``addr`` wrong until the innermost
        loop ends; the load engine takes such steps only in a padded run, whose addresses
        it does not use, and ``i0``, ``lane``, ``row`` and every later loop stay exact.
    addr : Out(33), row : Out(18), lane : Out(13)
        The current element.
    i0, i1, i2 : Out(16)
        Its loop indices.
    end0 : Out(1)
        ``step`` elements reach the end of the innermost loop (``i0 + step >= n0``).
    end1 : Out(1)
        ``i1`` is the last of its loop (``i1 == n1 - 1``).
    last : Out(1)
        ``end0`` in the last ``(i1, i2)``: the step takes the last element.
    """

    n0: In(16)
    n1: In(16)
    n2: In(16)
    s0: In(24)
    s1: In(24)
    s2: In(24)
    r1: In(16)
    r2: In(16)
    first: In(ADDR_BITS)
    row0: In(16)
    lane0: In(12)
    start: In(1)
    next: In(1)
    step: In(BYTES_BITS, init=1)
    addr: Out(ADDR_BITS)
    row: Out(18)
    lane: Out(13)
    i0: Out(16)
    i1: Out(16)
    i2: Out(16)
    end0: Out(1)
    end1: Out(1)
    last: Out(1)

    def elaborate(self, platform):
        m = Module()
        i0, i1, i2 = self.i0, self.i1, self.i2
        a1, a2 = Signal(ADDR_BITS), Signal(ADDR_BITS)  # addresses at the start of the i1 / i2 loop
        row2 = Signal(18)  # row at the start of the current i2 iteration
        end0, end1, end2 = self.end0, self.end1, Signal()
        m.d.comb += [
            end0.eq(i0 + self.step >= self.n0),
            end1.eq(i1 == self.n1 - 1),
            end2.eq(i2 == self.n2 - 1),
            self.last.eq(end0 & end1 & end2),
        ]
        with m.If(self.start):
            m.d.sync += [
                i0.eq(0), i1.eq(0), i2.eq(0),
                self.addr.eq(self.first), a1.eq(self.first), a2.eq(self.first),
                self.row.eq(self.row0), row2.eq(self.row0),
                self.lane.eq(self.lane0),
            ]
        with m.Elif(self.next):
            with m.If(~end0):
                m.d.sync += [
                    i0.eq(i0 + self.step),
                    self.addr.eq(self.addr + Mux(self.s0 == 1, self.step, self.s0)),
                    self.lane.eq(self.lane + self.step),
                ]
            with m.Elif(~end1):
                m.d.sync += [
                    i0.eq(0), i1.eq(i1 + 1),
                    a1.eq(a1 + self.s1), self.addr.eq(a1 + self.s1),
                    self.row.eq(self.row + self.r1),
                    self.lane.eq(self.lane0),
                ]
            with m.Else():
                m.d.sync += [
                    i0.eq(0), i1.eq(0), i2.eq(i2 + 1),
                    a2.eq(a2 + self.s2), a1.eq(a2 + self.s2), self.addr.eq(a2 + self.s2),
                    row2.eq(row2 + self.r2), self.row.eq(row2 + self.r2),
                    self.lane.eq(self.lane0),
                ]
        return m


def _engine_members(config):
    return {
        "base": In(data.ArrayLayout(unsigned(32), NUM_BASE_REGS)),
        "window_base": In(32),
        "window_size": In(32),
        "bus": Out(DramBusSignature.of(config)),
        "done": Out(1),
        "error": Out(1),
        "error_code": Out(8),
        "fault_addr": Out(32),
        "busy": Out(1),
        "bytes": Out(BYTES_BITS),
    }


class LoadEngine(wiring.Component):
    """LOAD: DRAM -> ifmap / weight / param buffer, up to a bus word per cycle (see module docstring).

    Members
    -------
    insn : In(stream.Signature(LoadInsn))
        ``ready`` while idle.
    pre : In(LoadPre)
        :func:`~celosia.rtl.controller.signatures.load_pre` of ``insn.payload``, valid with
        it (the load queue computes it as the LOAD is pushed; a bench driving the engine
        sets :func:`~celosia.rtl.controller.signatures.load_pre_const`).
    base : In(ArrayLayout(32, 8))
        Base registers.
    window_base, window_size : In(32)
        The window DRAM reads must stay in (size 0: the whole DRAM): the read window
        (``WINDOW_BASE`` / ``WINDOW_SIZE``).
    bus : Out(DramBusSignature.of(config))
        Reads only (tag 0).
    ifmap_wr : Out(BufferWriteSignature(ifmap_rows, rows, 8))
    weight_wr : Out(BufferWriteSignature(weight_rows, cols, 8))
    param_wr : Out(BufferWriteSignature(param_rows * cols, PARAM_BYTES, 8))
        One output channel's parameters (a :data:`~celosia.rtl.isa.ParamRecord`) per row.
        Each write enables the 1 .. ``bus_bits / 8`` consecutive lanes of one request;
        ``data`` is the bus word rotated so that its bytes meet their lanes, repeated
        along the row.
    done, error : Out(1)
        One-cycle pulses; ``error_code`` (:class:`ErrorCode`) is valid with ``error``.
    fault_addr : Out(32)
        With a DMA_OUT_OF_WINDOW ``error``: the byte address outside the window
        (:func:`window_check`); set in the cycle of the pulse, held until the next fault.
    busy : Out(1)
    bytes : Out(BYTES_BITS)
        Bytes read from DRAM this cycle, 0 .. ``bus_bits / 8``: the ones a response brings
        for the instruction (padded bytes and unused bytes of the word are not counted).
    """

    def __init__(self, config):
        self._config = config
        members = {"insn": In(stream.Signature(LoadInsn)), "pre": In(LoadPre)}
        members.update(_engine_members(config))
        members.update({
            "ifmap_wr": Out(BufferWriteSignature(config.ifmap_rows, config.rows, 8)),
            "weight_wr": Out(BufferWriteSignature(config.weight_rows, config.cols, 8)),
            "param_wr": Out(BufferWriteSignature(config.param_depth, PARAM_BYTES, 8)),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        nb = cfg.bus_bytes                   # bytes per bus word
        ob = (nb - 1).bit_length()           # bits of a byte's offset in its word
        cb = nb.bit_length()                 # bits of a count 0 .. nb
        insn = Signal(LoadInsn)
        m.submodules.nest = nest = LoopNest()
        m.submodules.track = track = SyncFIFO(width=18 + 13 + ob + cb + 1,
                                              depth=cfg.dram_latency + 2)

        pay = self.insn.payload
        take = self.insn.valid & self.insn.ready
        start = dram_start(m, "load", self.base[pay.base_reg], pay.dram_offset, load=take)
        m.d.comb += [
            nest.n0.eq(insn.n0), nest.n1.eq(insn.n1), nest.n2.eq(insn.n2),
            nest.s0.eq(insn.dram_stride0), nest.s1.eq(insn.dram_stride1),
            nest.s2.eq(insn.dram_stride2),
            nest.r1.eq(insn.buf_stride1), nest.r2.eq(insn.buf_stride2),
            nest.first.eq(start), nest.row0.eq(insn.buf_row), nest.lane0.eq(insn.lane0),
        ]

        # Bounds check (valid while insn holds, from CHECK on). DRAM: only the elements
        # actually read, i1 in [lo1, hi1), i2 in [lo2, hi2) (the pad ranges clamped to the
        # loops: the load queue's LoadPre, computed as the LOAD was pushed). The products of
        # strides are computed from the offered instruction (pay, pre) and registered with
        # insn (take: span_last's load); CHECK adds the start address (registered with insn
        # too: dram_start's load) and compares.
        empty = Signal()
        m.d.comb += empty.eq((insn.n0 == 0) | (insn.n1 == 0) | (insn.n2 == 0))
        pre = self.pre
        lo1, hi1, lo2, hi2 = pre.lo1, pre.hi1, pre.lo2, pre.hi2
        reads = _registered(m, "rd_reads", take, pre.reads)  # some element is read
        rd_first = Signal(signed(40))  # 34-bit start + two 36-bit products
        first_off = _registered(m, "rd_first_off", take, lo1 * pay.dram_stride1 + lo2 * pay.dram_stride2)
        m.d.comb += rd_first.eq(start + first_off)
        rd_last = span_last(m, "dram", start, [(pay.n0, pay.dram_stride0),
                                               (hi1, pay.dram_stride1),
                                               (hi2, pay.dram_stride2)], load=take)
        dram_ok = Signal()
        dram_in, fault = window_check(m, rd_first, rd_last, self.window_base, self.window_size,
                                      cfg.dram_bytes)
        m.d.comb += dram_ok.eq(~reads | dram_in)
        row_last = span_last(m, "row", insn.buf_row, [(pay.n1, pay.buf_stride1),
                                                      (pay.n2, pay.buf_stride2)], load=take)
        lane_last = span_last(m, "lane", insn.lane0, [(insn.n0, Const(1, 1))])
        depth, lanes = Signal(17), Signal(13)
        with m.Switch(insn.buf):
            with m.Case(Buffer.IFMAP):
                m.d.comb += [depth.eq(cfg.ifmap_rows), lanes.eq(cfg.rows)]
            with m.Case(Buffer.WEIGHT):
                m.d.comb += [depth.eq(cfg.weight_rows), lanes.eq(cfg.cols)]
            with m.Case(Buffer.PARAM):
                m.d.comb += [depth.eq(cfg.param_depth), lanes.eq(PARAM_BYTES)]
            # buf = 3 names no buffer: depth 0 fails the check.
        buf_ok = Signal()
        m.d.comb += buf_ok.eq((row_last < depth) & (lane_last < lanes))

        # The current element is padded (i1 < n1, i2 < n2, so the unclamped ranges do).
        # ``in1`` / ``in2``: i1 in [pad_lo1, pad_hi1), i2 in [pad_lo2, pad_hi2), registered:
        # each is computed for the index the nest moves to, as it moves (start: 0; the end
        # of the innermost loop: i1 + 1, or 0 and i2 + 1), so that no compare of the
        # indices sits in front of the request logic (issue 15's critical path).
        cur_pad, in1, in2 = Signal(), Signal(), Signal()

        def inside(i, lo, hi):
            return (i >= lo) & (i < hi)

        with m.If(nest.start):
            m.d.sync += [in1.eq(inside(0, insn.pad_lo1, insn.pad_hi1)),
                         in2.eq(inside(0, insn.pad_lo2, insn.pad_hi2))]
        with m.Elif(nest.next & nest.end0):
            with m.If(~nest.end1):
                m.d.sync += in1.eq(inside(nest.i1 + 1, insn.pad_lo1, insn.pad_hi1))
            with m.Else():
                m.d.sync += [in1.eq(inside(0, insn.pad_lo1, insn.pad_hi1)),
                             in2.eq(inside(nest.i2 + 1, insn.pad_lo2, insn.pad_hi2))]
        m.d.comb += cur_pad.eq(insn.pad_en & ~(in1 & in2))

        # The current request: up to a word's worth of the run from the current element
        # (dram_stride0 == 1: the bytes up to the end of the word; other strides: one
        # element; a padded run: nb lanes, no bus).
        rem, room, step = Signal(16), Signal(range(nb + 1)), Signal(range(nb + 1))
        with m.If(cur_pad):
            m.d.comb += room.eq(nb)
        with m.Elif(insn.dram_stride0 == 1):
            m.d.comb += room.eq(nb - nest.addr[:ob])
        with m.Else():
            m.d.comb += room.eq(1)
        m.d.comb += [
            rem.eq(insn.n0 - nest.i0),
            step.eq(Mux(rem < room, rem, room)),
            nest.step.eq(step),
        ]

        m.d.sync += [self.done.eq(0), self.error.eq(0)]
        issued_all = Signal()
        req = self.bus.req
        rsp = self.bus.rsp

        with m.FSM():
            accept_state(m, self.insn, insn)
            check_state(m, self, nest, empty=empty, dram_ok=dram_ok, fault=fault, buf_ok=buf_ok,
                        on_check=issued_all.eq(0))
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                # One request per cycle while there is room to remember where its bytes
                # go: a read when the bus accepts it, a pad straight away.
                issue = Signal()
                m.d.comb += [
                    req.valid.eq(~issued_all & track.w_rdy & ~cur_pad),
                    req.payload.addr.eq(nest.addr[ob:]),
                    req.payload.we.eq(0),
                    issue.eq(~issued_all & track.w_rdy & (cur_pad | req.ready)),
                    track.w_data.eq(Cat(nest.row, nest.lane, nest.addr[:ob], step, cur_pad)),
                    track.w_en.eq(issue),
                    nest.next.eq(issue),
                ]
                with m.If(issue & nest.last):
                    m.d.sync += issued_all.eq(1)
                with m.If(issued_all & track.r_en & (track.r_level == 1)):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"

        # The FIFO head is written in issue order: a read entry the cycle its response
        # arrives (only ever for our reads), a pad entry as soon as it is at the head.
        # Entry: ``count`` lanes from ``lane`` of ``row`` get bytes ``byte ..`` of the word.
        w_row, w_lane, w_byte, w_count, w_pad = Signal(18), Signal(13), Signal(ob), Signal(cb), Signal()
        write = Signal()
        m.d.comb += [
            Cat(w_row, w_lane, w_byte, w_count, w_pad).eq(track.r_data),
            write.eq(rsp.valid | (track.r_rdy & w_pad)),
            track.r_en.eq(write),
            self.bytes.eq(Mux(rsp.valid, w_count, 0)),
        ]
        # Lane l of the row takes byte (l - lane + byte) mod nb of the word: rotate the word
        # so that byte ``byte`` lands on lane ``lane`` mod nb, and repeat it along the row.
        shift, word, mask = Signal(ob), Signal(8 * nb), Signal(nb)
        rdata = rsp.payload.rdata
        m.d.comb += [
            shift.eq(w_byte - w_lane[:ob]),
            word.eq(Mux(rsp.valid, Cat(rdata, rdata).bit_select(shift * 8, 8 * nb),
                        Cat([insn.pad_value] * nb))),
            mask.eq(~(Const((1 << nb) - 1, nb) << w_count)[:nb]),  # the low w_count bits
        ]
        for buf, port in ((Buffer.IFMAP, self.ifmap_wr), (Buffer.WEIGHT, self.weight_wr),
                          (Buffer.PARAM, self.param_wr)):
            lanes = len(port.en)
            lane = w_lane[:max(1, (lanes - 1).bit_length())]  # < lanes after the check
            m.d.comb += [
                port.addr.eq(w_row),
                port.data.eq(Cat([word] * ceil_div(lanes, nb))),
                port.en.eq(Mux(write & (insn.buf == buf), mask << lane, 0)),
            ]
        return m


class StoreEngine(wiring.Component):
    """STORE: psum rows -> PPU -> int8 bytes in DRAM, up to ``config.ppu_lanes`` bytes per
    cycle (one per cycle in the first row) gathered into masked word writes (see module
    docstring).

    Members
    -------
    insn : In(stream.Signature(StoreInsn))
        ``ready`` while idle.
    base : In(ArrayLayout(32, 8))
        As for :class:`LoadEngine`.
    window_base, window_size : In(32)
        The window DRAM writes must stay in (size 0: the whole DRAM): the write window
        (``WR_BASE`` / ``WR_SIZE``). A STORE with ``to_buf`` touches no DRAM and is not
        checked against it.
    bus : Out(DramBusSignature.of(config))
        Masked word writes: ``wmask`` the bytes of one run in one bus word, ``wdata``
        holds them in place (the other bytes are don't-care).
    psum_rd : Out(BufferReadSignature(psum_rows, cols * 32))
        psum buffer read port 1.
    param_rd : Out(BufferReadSignature(param_rows * cols, ParamRecord.size))
        Row ``param_row + n`` (a :data:`~celosia.rtl.isa.ParamRecord`) for channel ``n``, read
        the cycle before the channel enters the PPU in the first psum row (later rows use
        the records cached then when ``ppu_lanes > 1``); relies on ``data`` holding while
        the PPU stalls.
    ifmap_wr : Out(BufferWriteSignature(ifmap_rows, rows, 8))
        ifmap buffer write port 1, for ``to_buf``: one chunk (its lanes enabled) per cycle.
    done, error, error_code, fault_addr, busy : as for :class:`LoadEngine`
    bytes : Out(BYTES_BITS)
        Bytes written to DRAM this cycle, 0 .. ``bus_bits / 8`` (the ``wmask`` bits of an
        accepted write).
    """

    def __init__(self, config):
        self._config = config
        members = {"insn": In(stream.Signature(StoreInsn))}
        members.update(_engine_members(config))
        members.update({
            "psum_rd": Out(BufferReadSignature(config.psum_rows, config.cols * 32)),
            "param_rd": Out(BufferReadSignature(config.param_depth, PARAM_BYTES * 8)),
            "ifmap_wr": Out(BufferWriteSignature(config.ifmap_rows, config.rows, 8)),
        })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        nl = cfg.ppu_lanes                   # channels per PPU transfer (at most)
        nb = cfg.bus_bytes
        ob = (nb - 1).bit_length()
        insn = Signal(StoreInsn)
        to_buf = insn.to_buf
        m.submodules.nest = nest = LoopNest()  # output side: DRAM byte addresses, ifmap rows / lanes
        m.submodules.ppu = ppu = PpuLanes(nl, range(nl + 1))  # meta: the chunk's channel count

        pay = self.insn.payload
        take = self.insn.valid & self.insn.ready
        first = dram_start(m, "store", self.base[pay.base_reg], pay.dram_offset, load=take)
        m.d.comb += [
            nest.n0.eq(insn.n_len), nest.s0.eq(1),
            nest.n1.eq(insn.m_len), nest.s1.eq(insn.dram_stride),
            nest.n2.eq(1), nest.s2.eq(0),
            # Buffer side (to_buf): ifmap row buf_row + m*buf_stride, lane lane0 + n.
            nest.r1.eq(insn.buf_stride), nest.r2.eq(0),
            nest.first.eq(first), nest.row0.eq(insn.buf_row), nest.lane0.eq(insn.lane0),
        ]

        empty = Signal()
        m.d.comb += empty.eq((insn.m_len == 0) | (insn.n_len == 0))
        # the products of the bounds check and the start address registered with insn
        # (span_last's and dram_start's load), as LOAD
        dram_last = span_last(m, "dram", first, [(pay.n_len, Const(1, 1)),
                                                 (pay.m_len, pay.dram_stride)], load=take)
        dram_in, fault = window_check(m, first, dram_last, self.window_base, self.window_size,
                                      cfg.dram_bytes)
        dram_ok = Signal()
        m.d.comb += dram_ok.eq(dram_in | to_buf)
        row_last = span_last(m, "row", insn.psum_row, [(insn.m_len, Const(1, 1))])
        ifmap_last = span_last(m, "ifmap", insn.buf_row, [(pay.m_len, pay.buf_stride)], load=take)
        buf_ok = Signal()
        m.d.comb += buf_ok.eq((row_last < cfg.psum_rows) & (insn.n_len <= cfg.cols)
                              & (insn.param_row + insn.n_len <= cfg.param_depth)
                              & (~to_buf | ((ifmap_last < cfg.ifmap_rows)
                                            & (insn.lane0 + insn.n_len <= cfg.rows))))

        # Input side: the chunk of channels in_n .. in_n + count - 1 of psum row in_m offered
        # to the PPU lanes. row_off: the row's first DRAM byte's offset in its bus word.
        in_m, in_n = Signal(16), Signal(8)
        row_off = Signal(ob)
        have_row = Signal()  # psum_rd.data / param_rd.data hold the current row
        count, row_end, block_end = Signal(range(nl + 1)), Signal(), Signal()
        if nl == 1:
            m.d.comb += count.eq(1)
        else:
            # Row 0 one channel per cycle (its parameters arrive one per cycle); later rows
            # up to nl channels, never past the run's end nor (DRAM) past a bus word.
            rem, room = Signal(9), Signal(range(nb + 1))
            m.d.comb += [
                rem.eq(insn.n_len - in_n),
                room.eq(Mux(to_buf, nl, nb - (row_off + in_n)[:ob])),
                count.eq(Mux(in_m == 0, 1, Mux((rem < room) & (rem < nl), rem,
                                                Mux(room < nl, room, nl)))),
            ]
        m.d.comb += [
            row_end.eq(in_n + count >= insn.n_len),
            block_end.eq(row_end & (in_m == insn.m_len - 1)),
        ]
        # Lane j takes channel in_n + j: the psum row shifted by in_n words (zero-extended
        # past the last column), and the parameters of row 0's channel (param_rd) or, in
        # later rows, the parameter cache (the row-0 records, kept as they were read).
        pbits = PARAM_BYTES * 8
        accs = Signal(32 * nl)
        m.d.comb += accs.eq(Cat(self.psum_rd.data, Const(0, 32 * (nl - 1)))
                            .bit_select(in_n * 32, 32 * nl))
        params = Signal(pbits * nl)
        if nl == 1:
            m.d.comb += params.eq(self.param_rd.data)
        else:
            cache = Signal(pbits * cfg.cols)
            cached = Signal(pbits * nl)
            m.d.comb += [
                cached.eq(Cat(cache, Const(0, pbits * (nl - 1))).bit_select(in_n * pbits, pbits * nl)),
                params.eq(Mux(in_m == 0, self.param_rd.data, cached)),
            ]
            with m.If(ppu.i.valid & ppu.i.ready & (in_m == 0)):
                m.d.sync += cache.word_select(in_n, pbits).eq(self.param_rd.data)
        for j in range(nl):
            lane, param = ppu.i.payload.lanes[j], ParamRecord(params.word_select(j, pbits))
            m.d.comb += [
                lane.acc.eq(accs.word_select(j, 32)),
                lane.bias.eq(param.bias),
                lane.m0.eq(param.m0),
                lane.shift.eq(param.shift),
                lane.out_zp.eq(insn.out_zp),
                lane.act_min.eq(insn.act_min),
                lane.act_max.eq(insn.act_max),
                lane.single.eq(insn.single_round),
            ]
        m.d.comb += [ppu.i.payload.meta.eq(count), ppu.i.valid.eq(have_row)]
        with m.If(ppu.i.valid & ppu.i.ready):
            # The next channel's parameters arrive as this channel leaves (row 0 is what
            # counts when nl > 1: later rows use the cache).
            m.d.comb += [self.param_rd.en.eq(1),
                         self.param_rd.addr.eq(insn.param_row + Mux(row_end, 0, in_n + 1))]
            with m.If(~row_end):
                m.d.sync += in_n.eq(in_n + count)
            with m.Else():
                m.d.sync += [in_n.eq(0), in_m.eq(in_m + 1), row_off.eq(row_off + insn.dram_stride)]
                with m.If(block_end):
                    m.d.sync += have_row.eq(0)
                with m.Else():
                    # Next row's data arrives just as this row's last chunk leaves.
                    m.d.comb += [self.psum_rd.en.eq(1),
                                 self.psum_rd.addr.eq(insn.psum_row + in_m + 1)]

        # Output side: PPU results (``cnt`` bytes from the word's byte ``off``) are gathered
        # into the word they go to (``acc_*``); the chunk that completes the word (reaches its
        # byte nb - 1) or ends a run goes out with the gathered ones as one masked write, in
        # the cycle the PPU offers it.
        acc_data, acc_mask, acc_n = Signal(8 * nb), Signal(nb), Signal(range(nb))
        req = self.bus.req
        cnt, off = ppu.o.payload.meta, nest.addr[:ob]

        def spread(value, at, n):
            # ``n`` bytes where bytes at .. at + nl - 1 are ``value``'s (the others are
            # don't-care: the enables / mask leave them out); one lane: ``value`` repeated.
            return Cat([value] * n) if nl == 1 else (value << (at * 8))[:8 * n]

        ys = Signal(8 * nl)
        low, chunk_mask, shifted, flush, take = Signal(nl), Signal(nb), Signal(8 * nb), Signal(), Signal()
        m.d.comb += [
            ys.eq(Cat(ppu.o.payload.y[j] for j in range(nl))),
            low.eq(~(Const((1 << nl) - 1, nl) << cnt)[:nl]),  # the low cnt bits
            chunk_mask.eq(low << off),
            shifted.eq(spread(ys, off, nb)),
            flush.eq(nest.end0 | (off + cnt == nb)),
            req.valid.eq(ppu.o.valid & flush & ~to_buf),
            ppu.o.ready.eq(~flush | req.ready | to_buf),
            take.eq(ppu.o.valid & ppu.o.ready),
            nest.step.eq(cnt),
            req.payload.addr.eq(nest.addr[ob:]),
            req.payload.we.eq(1),
            req.payload.wmask.eq(acc_mask | chunk_mask),
            nest.next.eq(take),
            self.bytes.eq(Mux(req.valid & req.ready, acc_n + cnt, 0)),
        ]
        lanes = cfg.rows
        lane = nest.lane[:max(1, (lanes - 1).bit_length())]  # < lanes after the check
        m.d.comb += [
            self.ifmap_wr.addr.eq(nest.row),
            self.ifmap_wr.data.eq(spread(ys, lane, lanes)),
            self.ifmap_wr.en.eq(Mux(take & to_buf, low << lane, 0)),
        ]
        for b in range(nb):
            m.d.comb += req.payload.wdata.word_select(b, 8).eq(
                Mux(chunk_mask[b], shifted.word_select(b, 8), acc_data.word_select(b, 8)))
        with m.If(take):
            with m.If(flush):
                m.d.sync += [acc_mask.eq(0), acc_n.eq(0)]
            with m.Else():
                m.d.sync += [acc_data.eq(req.payload.wdata), acc_mask.eq(req.payload.wmask),
                             acc_n.eq(acc_n + cnt)]

        m.d.sync += [self.done.eq(0), self.error.eq(0)]

        def start_rows():
            # The first psum row and channel 0's parameters, read as RUN begins.
            m.d.comb += [
                self.psum_rd.en.eq(1), self.psum_rd.addr.eq(insn.psum_row),
                self.param_rd.en.eq(1), self.param_rd.addr.eq(insn.param_row),
            ]
            m.d.sync += have_row.eq(1)

        with m.FSM():
            accept_state(m, self.insn, insn)
            check_state(m, self, nest, empty=empty, dram_ok=dram_ok, fault=fault, buf_ok=buf_ok,
                        on_check=[in_m.eq(0), in_n.eq(0), acc_mask.eq(0), acc_n.eq(0),
                                  row_off.eq(first[:ob])],
                        on_run=start_rows)
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(take & nest.last):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m


# -- executable timing ------------------------------------------------------------------

def _field(insn, name):
    return int(insn.get(name, 0))


def load_plan(insn, config, base=None):
    """The requests of the LOAD ``insn`` (field name -> int, missing = 0) on ``config``'s
    bus of ``B = bus_bits / 8`` bytes, in issue order, as the module docstring describes
    them: ``(pad, nbytes)`` per request, ``nbytes`` the bytes a read brings (0 for a pad).
    Per run of ``n0`` elements from byte address ``a``: the bytes up to the end of each bus
    word (``dram_stride0 == 1``: ``ceil((a % B + n0) / B)`` reads), one element per read
    (other strides) or ``ceil(n0 / B)`` pads (a padded run).

    ``base`` holds the base register values (default all 0): the start address's
    position in its word decides how many words a run touches.
    """
    nb = config.bus_bytes
    base = [0] * NUM_BASE_REGS if base is None else base
    n0, n1, n2 = (_field(insn, f"n{k}") for k in range(3))
    start = base[_field(insn, "base_reg")] + _field(insn, "dram_offset")
    s0, s1, s2 = (_field(insn, f"dram_stride{k}") for k in range(3))
    pad_en = _field(insn, "pad_en")
    lo1, hi1, lo2, hi2 = (_field(insn, f) for f in ("pad_lo1", "pad_hi1", "pad_lo2", "pad_hi2"))
    reqs = []
    for i2 in range(n2):
        for i1 in range(n1):
            if pad_en and not (lo1 <= i1 < hi1 and lo2 <= i2 < hi2):
                reqs.extend([(True, 0)] * ceil_div(n0, nb))
            elif s0 == 1:
                a, left = start + i1 * s1 + i2 * s2, n0
                while left:
                    step = min(left, nb - a % nb)
                    reqs.append((False, step))
                    a, left = a + step, left - step
            else:
                reqs.extend([(False, 1)] * n0)
    return reqs


def load_requests(insn, config, base=None):
    """``(reads, pads)``: the bus reads and pad requests of the LOAD ``insn``
    (:func:`load_plan`)."""
    plan = load_plan(insn, config, base)
    pads = sum(1 for pad, _ in plan if pad)
    return len(plan) - pads, pads


def load_cycles(insn, config, base=None):
    """Acceptance to ``done`` of the LOAD ``insn`` (field name -> int, missing = 0) on
    :class:`LoadEngine` with a bus that accepts every request (``dram_bytes_per_cycle
    == bus_bits / 8``, no other master): ``R + dram_latency + 2`` for ``R`` requests
    (:func:`load_requests`) when some run is read, ``R + 3`` when all are padded, 2
    for an empty instruction. Assumes the instruction passes the bounds checks (a
    failing one takes 2). ``base``: the base register values (default all 0)."""
    if min(_field(insn, "n0"), _field(insn, "n1"), _field(insn, "n2")) == 0:
        return 2
    reads, pads = load_requests(insn, config, base)
    return reads + pads + (config.dram_latency + 2 if reads else 3)


def store_plan(insn, config, base=None):
    """The PPU transfers of the STORE ``insn`` (field name -> int, missing = 0) on
    ``config``: ``(T, flushes)``, ``T`` the transfers (chunks) and ``flushes`` the
    ``(chunk index, nbytes)`` of each chunk that leaves with a bus write (none for
    ``to_buf``). Row 0 goes one channel per chunk (its parameters arrive one per cycle),
    every later row ``m`` in chunks of up to ``L = ppu_lanes`` channels; a chunk never
    crosses a bus word of ``B = bus_bits / 8`` bytes: a run from byte address ``a`` falls
    into word segments of ``s`` bytes, ``ceil(s / L)`` chunks each, the last of which
    writes the segment (``to_buf``: one segment, ``ceil(n_len / L)``). With ``L = 1``:
    ``T = n_len * m_len``.

    ``base`` holds the base register values (default all 0): the start address's
    position in its word decides how a run splits.
    """
    n_len, m_len = _field(insn, "n_len"), _field(insn, "m_len")
    lanes, nb = config.ppu_lanes, config.bus_bytes
    base = [0] * NUM_BASE_REGS if base is None else base
    start = base[_field(insn, "base_reg")] + _field(insn, "dram_offset")
    stride, to_buf = _field(insn, "dram_stride"), _field(insn, "to_buf")
    flushes, chunks = [], 0
    for mi in range(m_len if n_len else 0):
        if to_buf:
            chunks += n_len if mi == 0 else ceil_div(n_len, lanes)
            continue
        a, end = start + mi * stride, start + mi * stride + n_len
        while a < end:
            seg = min(end, (a // nb + 1) * nb) - a  # bytes of the run in a's word
            chunks += seg if mi == 0 else ceil_div(seg, lanes)
            flushes.append((chunks - 1, seg))
            a += seg
    return chunks, flushes


def store_chunks(insn, config, base=None):
    """PPU transfers of the STORE ``insn`` on ``config`` (:func:`store_plan`'s ``T``)."""
    return store_plan(insn, config, base)[0]


def store_cycles(insn, config, base=None):
    """Acceptance to ``done`` of the STORE ``insn`` (field name -> int, missing = 0) on
    :class:`StoreEngine` with a bus that accepts every request: ``T + ppu.LATENCY + 2``
    for ``T`` PPU transfers (:func:`store_chunks`; ``n_len * m_len`` with one PPU lane),
    2 for an empty instruction (or one failing the bounds checks). ``base``: the base
    register values (default all 0)."""
    chunks = store_chunks(insn, config, base)
    return chunks + PPU_LATENCY + 2 if chunks else 2
