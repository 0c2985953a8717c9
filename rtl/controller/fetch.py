"""Instruction fetch: the descriptor table and the instruction words, from DRAM into
the instruction queues, with many reads in flight."""

from amaranth.hdl import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.signatures import (INDEX_BITS, FetchStatusSignature, NodeBound,
                                               QueueEntry, RunSignature)
from celosia.rtl.dram import DramBusSignature, request_interval

__all__ = ["Fetch", "fetch_words", "fetch_timing", "ends_depth"]

#: Opcodes with a queue (everything else is ILLEGAL_OPCODE).
QUEUED_OPCODES = (isa.Opcode.LOAD, isa.Opcode.GEMM, isa.Opcode.VEC, isa.Opcode.NOP,
                  isa.Opcode.STORE)

#: Cycles from ``run.start`` to fetch's first request (DRAIN, then the first RUN cycle).
FIRST_REQUEST = 2


def fetch_words(config: AccelConfig) -> int:
    """Depth of fetch's word FIFO, the most instruction words it has requested and not
    yet assembled: ``dram_latency + INSN_WORDS``, enough to keep one request per cycle
    in flight for the whole latency with one instruction to spare."""
    return config.dram_latency + isa.INSN_WORDS


def ends_depth(config: AccelConfig) -> int:
    """Entries of fetch's node-end FIFO (node ends the request side has seen and the push
    side has not reached): ``fetch_words // INSN_WORDS + 3``. An end is recorded when the
    next node starts, after the node's last word request, so every node waiting there has
    an instruction requested and not pushed (at most ``fetch_words`` words in flight or in
    the word FIFO, one instruction in the assembler): the FIFO never fills, and the
    request side would wait if it did."""
    return fetch_words(config) // isa.INSN_WORDS + 3


def fetch_timing(config: AccelConfig, nodes) -> tuple[list[int], int]:
    """When :class:`Fetch` offers each instruction of a program, with ``push`` always
    ready and no other bus master (the DRAM idle at the start).

    Parameters
    ----------
    config : AccelConfig
        ``dram_latency`` (``L``) and the DRAM's request interval ``k``
        (:func:`~celosia.rtl.dram.request_interval`) set the timing.
    nodes : sequence of int
        Instructions per node (each >= 1), in table order; the end marker follows.

    Returns
    -------
    (pushes, ended) : (list of int, int)
        The cycle, counted from the ``run.start`` cycle as 0, in which ``push.valid``
        rises for each instruction (fetch order), and the first cycle ``status.ended``
        is high.

    The schedule: requests go out in order, each in the first cycle the DRAM accepts
    one (``k`` cycles after the previous) and no earlier than it is wanted: descriptor
    0 at cycle 2; a node "starts" in the cycle after its descriptor's response (``L``
    cycles after the request) or the cycle after its predecessor's last word request,
    whichever is later, and in that cycle the next descriptor is wanted; the node's
    word requests are wanted from the next cycle on, back to back. An instruction is
    offered ``L + 1`` cycles after its last word's request. ``ended`` rises the cycle
    after both the end marker's node start and the last offer.
    """
    latency, k = config.dram_latency, request_interval(config)
    free = FIRST_REQUEST  # the first cycle the DRAM accepts the next request

    def issue(wanted):
        nonlocal free
        cycle = max(wanted, free)
        free = cycle + k
        return cycle

    desc = issue(FIRST_REQUEST)
    node_start = desc + latency + 1
    pushes = []
    for n_insn in nodes:
        if n_insn < 1:
            raise ValueError(f"a node has at least one instruction, not {n_insn}")
        desc = issue(node_start)               # the next descriptor, prefetched
        wanted = node_start + 1
        for _ in range(n_insn):
            for _ in range(isa.INSN_WORDS):
                last = issue(wanted)
                wanted = last + 1
            pushes.append(last + latency + 1)
        node_start = max(wanted, desc + latency + 1)
    ended = max([node_start] + pushes) + 1
    return pushes, ended


class Fetch(wiring.Component):
    """Program fetch, a DRAM bus master (reads only), with up to
    :func:`fetch_words` instruction words in flight.

    The program (``rtl/isa.py``) is a table of 64-bit :data:`isa.NodeDescriptor` at
    ``prog_base`` ended by ``n_insn == 0``; each descriptor points at ``n_insn``
    256-bit instructions at ``prog_base + insn_offset``. Fetch is two halves joined by
    the bus's in-order responses:

    * the request side walks the program: it reads a descriptor, then requests the
      node's instruction words, one request per cycle the bus accepts, checking each
      instruction's address (window, DRAM, alignment) before its first word. While a
      node's words go out, the next descriptor is read ahead into a one-entry slot
      (a descriptor request goes before a word request), so the next node starts the
      cycle after the last word request. Word requests stop while the words in flight
      plus those waiting in the word FIFO would exceed :func:`fetch_words`.
    * the response side takes each response in the cycle it comes (the bus has no
      backpressure): the descriptor into the slot, an instruction word into a
      4-word assembler directly, or into the word FIFO while the assembler holds a
      whole instruction that ``push`` has not taken. An assembled instruction is
      offered on ``push`` with its fetch-order index; the assembler takes the next
      word in the cycle ``push`` takes it.

    Fetch works in 64-bit words at every bus width (``config.bus_bits``): a request
    reads the bus word holding the next 64-bit word (address ``byte address /
    (bus_bits / 8)``) and the response's 64 bits at ``byte address % (bus_bits / 8)``
    are taken, so the requests, the timing and the DRAM_RD count (8 bytes per word)
    are the same at 64, 128 and 256 bits.

    Node boundaries: consecutive descriptors with the same ``kind`` are one node (the
    compiler splits a node of more than 65535 instructions into several descriptors; the
    kind is the node's index modulo 256, so different nodes differ unless 255 nodes
    without instructions lie between them). When a node starts with another kind (or the
    end marker), the request side queues the fetch-order index where the previous node
    ends (a small FIFO, :func:`ends_depth`); when the push side pushes that node's last
    instruction it sends on ``bound`` the instructions pushed into each queue so far
    (:data:`NodeBound`), for the node tracker (rtl/controller/nodes.py). Neither changes
    when anything is requested or pushed: the end FIFO never fills, and ``bound`` is
    waited for only when the tracker's FIFO is full (:func:`~celosia.rtl.controller.nodes.bound_depth`).

    Errors keep program order: an address the request side refuses (BAD_DESCRIPTOR)
    stops the requests and is raised once every instruction before it has been
    pushed (nothing in flight, the FIFO and the assembler empty), with ``index`` the
    next instruction's; an assembled instruction whose opcode has no queue raises
    ILLEGAL_OPCODE instead of being offered. Either way nothing more is pushed and
    fetch is idle. Words read ahead of an error are not pushed (DRAM_RD counts the
    ones that came back while the run was on).

    Parameters
    ----------
    config : AccelConfig

    Ports
    -----
    run : In(RunSignature)
        ``start`` (re)starts fetch at descriptor 0, index 0, after every response of
        an aborted run has come back (DRAIN); fetch goes idle when ``running`` is low.
    prog_base : In(32)
    window_base, window_size : In(32)
        The read window (bytes; size 0 = whole DRAM) every descriptor and instruction
        block must lie in.
    bus : Out(DramBusSignature.of(config))
    push : Out(stream.Signature(QueueEntry))
        The fetched instruction (valid only for an opcode with a queue); the consumer's
        ``ready`` is the room in the queue the opcode selects.
    status : Out(FetchStatusSignature)
        ``error`` / ``error_code``: BAD_DESCRIPTOR (descriptor or instruction block
        outside the window or the DRAM, or misaligned) or ILLEGAL_OPCODE, one cycle,
        then fetch is idle; ``addr``: with BAD_DESCRIPTOR, the refused descriptor's or
        instruction's byte address (0 otherwise); ``index``: the fetch-order index of the next instruction;
        ``ended``: the table's end was read and every instruction pushed;
        ``blocked``: ``push`` waits for room.
    words : Out(1)
        A fetched 64-bit word (descriptor or instruction) arrives during the run (8
        DRAM bytes read).
    bound : Out(stream.Signature(NodeBound))
        With the push of a node's last instruction: the instructions pushed into the
        LOAD, COMPUTE and STORE queues since the start, that one included.

    Timing (``L = dram_latency``; :func:`fetch_timing` gives every cycle): descriptor
    0 is requested 2 cycles after ``start``; the first instruction is offered ``2L +
    6`` cycles after that request (``2L + 8`` after ``start``). In steady state one
    instruction is fetched every ``INSN_WORDS * k`` cycles (4 at the default
    bandwidth), ``k = ceil(bus_bits / 8 / dram_bytes_per_cycle)`` the DRAM's request
    interval, plus one cycle per node (the node start), or ``L + 1`` cycles per node
    when a node has fewer words than the descriptor read ahead needs (``4 n k <
    L``). What limits it: the bus (one request per accepted cycle; the arbiter in
    ``rtl/top.py`` serves fetch, LOAD and STORE round robin, so while both DMA
    engines request every cycle fetch gets every third request, and one instruction
    takes ``3 * 4 * k`` cycles), the queues (``push.ready``; the word FIFO then fills
    and requests stop, and resume as ``push`` drains it: the FIFO covers the latency,
    so the rate comes back without a gap) and the DRAM's bandwidth (``k``).
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "run": In(RunSignature),
            "prog_base": In(32),
            "window_base": In(32),
            "window_size": In(32),
            "bus": Out(DramBusSignature.of(config)),
            "push": Out(stream.Signature(QueueEntry)),
            "status": Out(FetchStatusSignature),
            "words": Out(1),
            "bound": Out(stream.Signature(NodeBound)),
        })

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        start, running = self.run.start, self.run.running
        prog_base, status, bus, push = self.prog_base, self.status, self.bus, self.push
        depth = fetch_words(cfg)

        def in_window(addr, nbytes):
            end = addr + nbytes
            in_dram = end <= cfg.dram_bytes
            in_win = ((self.window_size == 0) |
                      ((addr >= self.window_base) &
                       (end <= self.window_base + self.window_size)))
            return in_dram & in_win

        # A 64-bit word at byte address ``a``: bus word ``a >> word_shift``, 64 bits
        # number ``(a >> 3) % subs`` of it.
        subs = cfg.bus_bits // 64
        word_shift = (cfg.bus_bytes - 1).bit_length()

        def sub_word(addr64):
            # the 64-bit word ``addr64`` (byte address / 8) of the response
            if subs == 1:
                return bus.rsp.p.rdata
            return bus.rsp.p.rdata.word_select(addr64[:word_shift - 3], 64)

        active = Signal()  # the FSM is in RUN
        rsp_valid = bus.rsp.valid
        req_fire = bus.req.valid & bus.req.ready
        # Requests without a response yet, across runs (DRAIN waits for 0).
        outstanding = Signal(range(depth + 2))
        m.d.sync += outstanding.eq(outstanding + req_fire - rsp_valid)
        m.d.comb += [bus.req.p.we.eq(0), bus.req.p.wmask.eq(0), bus.req.p.tag.eq(0)]

        # -- run state (cleared in DRAIN) ---------------------------------------------
        desc_idx = Signal(32)          # the next descriptor to request
        desc_pending = Signal()        # a descriptor request awaits its response
        desc_ahead = Signal(range(depth + 2))  # responses due before the descriptor's
        slot = Signal(isa.NodeDescriptor)      # the descriptor read ahead
        slot_valid = Signal()
        node_left = Signal(16)         # instructions of the node still to request
        node_some = Signal()           # node_left != 0, kept as a register beside it
        req_addr = Signal(34)          # byte address of the next word to request
        req_word = Signal(range(isa.INSN_WORDS))
        insn_ok = Signal()             # the node's insn_offset is 32-aligned
        req_end = Signal()             # the end marker started: nothing more to request
        req_err = Signal()             # the request side refused an address
        rsp_word = Signal(range(isa.INSN_WORDS))  # the next instruction word's position
        count = Signal(range(isa.INSN_WORDS + 1))  # words in the assembler
        words = [Signal(64, name=f"insn_w{i}") for i in range(isa.INSN_WORDS)]
        insn_idx = Signal(INDEX_BITS)  # fetch-order index of the next instruction
        node_cum = Signal(INDEX_BITS)  # instructions of the descriptors taken so far
        node_kind = Signal(8)          # kind of the node being requested
        node_started = Signal()        # a node with instructions was taken
        pushed = [Signal(INDEX_BITS, name=f"pushed{q}") for q in range(3)]  # per queue
        run_state = [desc_idx, desc_pending, desc_ahead, slot_valid, node_left, node_some, req_word,
                     req_end, req_err, rsp_word, count, insn_idx, node_cum, node_started, *pushed]

        m.submodules.fifo = fifo = ResetInserter(~active)(SyncFIFO(width=64, depth=depth))
        # fetch-order index one past each node's last instruction, request side -> push side
        m.submodules.ends = ends = ResetInserter(~active)(
            SyncFIFO(width=INDEX_BITS, depth=ends_depth(cfg)))

        # -- request side ---------------------------------------------------------------
        # the next descriptor's address, prog_base + 8 * desc_idx: a register kept with the
        # checks below (its adder out of the request and FAULT_ADDR paths; no cycle added)
        desc_addr = Signal(36)
        # The window checks of the next descriptor (desc_ok) and of the next instruction's
        # 32 bytes (insn_in) are registers: each cycle every value the address can take
        # next cycle is checked and the one it takes is registered (issue 15: the adds and
        # compares from the CSRs through bus.req.valid and the arbiter were the clock's
        # critical path). They equal the combinational checks of the current address, as
        # long as PROG_BASE, WINDOW_BASE and WINDOW_SIZE do not change during a run (a
        # write takes effect here one cycle later). No cycle added.
        def desc_check(idx):
            return (prog_base[:3] == 0) & in_window(prog_base + (idx << 3), isa.DESC_BYTES)
        desc_ok, insn_in = Signal(), Signal()
        clearing = Signal()   # DRAIN: desc_idx is 0 next cycle
        walking = active & ~req_end & ~req_err
        node_done = ~node_some         # (node_left == 0, without its compare in the paths)
        take = walking & node_done & slot_valid & ends.w_rdy  # start the node in the slot
        take_end = take & (slot.n_insn == 0)
        want_desc = (walking & ~desc_pending & (~slot_valid | take) & ~take_end & desc_ok)
        words_out = outstanding - desc_pending
        room = (words_out + fifo.level) < depth
        want_word = walking & ~node_done & ((req_word != 0) | insn_in) & room
        m.d.comb += [
            bus.req.valid.eq(want_desc | want_word),
            bus.req.p.addr.eq(Mux(want_desc, desc_addr, req_addr) >> word_shift),
        ]
        # the next descriptor or the next instruction is refused
        refuse = walking & ((node_done & ~slot_valid & ~desc_pending & ~desc_ok) |
                            (~node_done & (req_word == 0) & ~insn_in))
        fault = Signal(32)  # the refused address (FAULT_ADDR of BAD_DESCRIPTOR)
        with m.If(refuse):
            m.d.sync += [req_err.eq(1), fault.eq(Mux(node_done, desc_addr, req_addr))]
        new_node = (slot.kind != node_kind) | (slot.n_insn == 0)
        m.d.comb += [ends.w_en.eq(take & node_started & new_node), ends.w_data.eq(node_cum)]
        with m.If(take):
            m.d.sync += [node_cum.eq(node_cum + slot.n_insn), node_kind.eq(slot.kind),
                         node_started.eq(node_started | (slot.n_insn != 0))]
            m.d.sync += [
                slot_valid.eq(0),
                node_left.eq(slot.n_insn),
                node_some.eq(slot.n_insn != 0),
                req_addr.eq(prog_base + slot.insn_offset),
                insn_ok.eq(slot.insn_offset[:5] == 0),
                req_word.eq(0),
                req_end.eq(slot.n_insn == 0),
            ]
        with m.If(req_fire & want_desc):
            m.d.sync += [desc_idx.eq(desc_idx + 1), desc_pending.eq(1),
                         desc_ahead.eq(outstanding - rsp_valid)]
        with m.Elif(req_fire):
            m.d.sync += [req_addr.eq(req_addr + 8), req_word.eq(req_word + 1)]
            with m.If(req_word == isa.INSN_WORDS - 1):
                m.d.sync += [req_word.eq(0), node_left.eq(node_left - 1), node_some.eq(node_left != 1)]
        # the registered checks (above): the next descriptor's, the next instruction's
        desc_fire, word_fire = req_fire & want_desc, req_fire & ~want_desc
        m.d.sync += desc_ok.eq(Mux(clearing, desc_check(0),
                                   Mux(desc_fire, desc_check(desc_idx + 1), desc_check(desc_idx))))
        m.d.sync += desc_addr.eq(prog_base + (Mux(clearing, 0, Mux(desc_fire, (desc_idx + 1)[:32], desc_idx)) << 3))
        insn_at = (slot.insn_offset[:5] == 0) & in_window(prog_base + slot.insn_offset, isa.INSN_BYTES)
        m.d.sync += insn_in.eq(Mux(take, insn_at,
                                   insn_ok & Mux(word_fire, in_window(req_addr + 8, isa.INSN_BYTES),
                                                 in_window(req_addr, isa.INSN_BYTES))))

        # -- response side --------------------------------------------------------------
        is_desc = active & rsp_valid & desc_pending & (desc_ahead == 0)
        is_word = active & rsp_valid & ~is_desc
        with m.If(active & rsp_valid & desc_pending & (desc_ahead != 0)):
            m.d.sync += desc_ahead.eq(desc_ahead - 1)
        with m.If(is_desc):
            # the descriptor in flight is number desc_idx - 1
            m.d.sync += [slot.eq(sub_word((prog_base >> 3) + desc_idx - 1)),
                         slot_valid.eq(1), desc_pending.eq(0)]
        # insn_offset is 32-aligned, so word w of any instruction is 64-bit word
        # (prog_base / 8 + w) modulo the four of an aligned 32 bytes
        word_data = sub_word((prog_base >> 3) + rsp_word)
        with m.If(is_word):
            m.d.sync += rsp_word.eq(rsp_word + 1)
        m.d.comb += self.words.eq(active & rsp_valid)

        # -- assembler and push -----------------------------------------------------------
        insn = Cat(*words)
        full = count == isa.INSN_WORDS
        queued = Signal()
        with m.Switch(insn[:4]):
            with m.Case(*QUEUED_OPCODES):
                m.d.comb += queued.eq(1)
        # the node's last instruction waits for room in the node tracker's FIFO
        last = ends.r_rdy & ((insn_idx + 1) == ends.r_data)
        offer = active & full & queued
        m.d.comb += [push.valid.eq(offer & (~last | self.bound.ready)),
                     push.payload.eq(Cat(insn, insn_idx)),
                     status.index.eq(insn_idx),
                     status.blocked.eq(offer & ~(push.ready & (~last | self.bound.ready)))]
        push_fire = push.valid & push.ready
        to_queue = [insn[:4] == isa.Opcode.LOAD, 0, insn[:4] == isa.Opcode.STORE]
        to_queue[1] = ~to_queue[0] & ~to_queue[2]
        m.d.comb += [self.bound.valid.eq(push_fire & last), ends.r_en.eq(push_fire & last)]
        for q in range(3):
            m.d.comb += self.bound.payload[q].eq(pushed[q] + to_queue[q])
            with m.If(push_fire):
                m.d.sync += pushed[q].eq(pushed[q] + to_queue[q])
        can_take = ~full | push_fire
        from_fifo = fifo.r_rdy
        take_word = active & can_take & (from_fifo | is_word)
        m.d.comb += [
            fifo.r_en.eq(active & can_take),
            fifo.w_en.eq(is_word & (from_fifo | ~can_take)),
            fifo.w_data.eq(word_data),
        ]
        in_word = Mux(from_fifo, fifo.r_data, word_data)
        position = Mux(full, 0, count)
        with m.If(take_word):
            with m.Switch(position):
                for i in range(isa.INSN_WORDS):
                    with m.Case(i):
                        m.d.sync += words[i].eq(in_word)
            m.d.sync += count.eq(position + 1)
        with m.Elif(push_fire):
            m.d.sync += count.eq(0)
        with m.If(push_fire):
            m.d.sync += insn_idx.eq(insn_idx + 1)

        drained = (outstanding == 0) & ~fifo.r_rdy & (count == 0)
        m.d.comb += status.ended.eq(active & req_end & drained)

        def restart_or_stop():
            # in every state (last, so it wins): a start (re)starts fetch, a stop ends it
            with m.If(start):
                m.d.sync += insn_idx.eq(0)
                m.next = "DRAIN"
            with m.Elif(~running):
                m.next = "IDLE"

        with m.FSM(name="fetch"):
            with m.State("IDLE"):
                restart_or_stop()
            with m.State("DRAIN"):
                # responses of an aborted run are still on their way
                m.d.comb += clearing.eq(1)
                m.d.sync += [s.eq(0) for s in run_state]
                with m.If(outstanding == 0):
                    m.next = "RUN"
                restart_or_stop()
            with m.State("RUN"):
                m.d.comb += active.eq(1)
                with m.If(full & ~queued):
                    m.d.comb += [status.error.eq(1),
                                 status.error_code.eq(isa.ErrorCode.ILLEGAL_OPCODE)]
                    m.next = "IDLE"
                with m.Elif((req_err | refuse) & drained):
                    # the address refused now, or the one held since it was refused
                    refused = Mux(node_done, desc_addr, req_addr)
                    m.d.comb += [status.error.eq(1), status.addr.eq(Mux(req_err, fault, refused)),
                                 status.error_code.eq(isa.ErrorCode.BAD_DESCRIPTOR)]
                    m.next = "IDLE"
                restart_or_stop()
        return m
