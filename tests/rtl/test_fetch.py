# amaranth: UnusedElaboratable=no
"""Instruction fetch (rtl/controller/fetch.py) alone, its program in a DramModel.

Every cycle of a run is recorded (counted from the ``run.start`` cycle as 0): what
``push`` offers and whether it is taken, the status outputs, the bus requests and
responses. Expected orders come from the program itself, expected cycles from the
timing the docstring states (:func:`fetch_timing`, itself checked by hand).
"""

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.fetch import Fetch, fetch_timing, fetch_words
from celosia.rtl.dram import BusArbiter, DramModel
from celosia.rtl.isa import ErrorCode, Opcode
from helpers import host_write, program_words, simulate

PROG_BASE = 0x400
ALT_BASE = 0x2000  # a second program (restart tests)


def cfg_of(latency=8, **kw):
    return AccelConfig(dram_bytes=1 << 14, dram_latency=latency, **kw)


def insn(i):
    """A distinct legal instruction per ``i`` (the opcode cycles through the queues)."""
    kind = i % 4
    if kind == 0:
        return isa.encode(Opcode.LOAD, n0=i + 1, n1=1, n2=1)
    if kind == 1:
        return isa.encode(Opcode.GEMM, m_len=i % 200 + 1, k_len=3, n_len=5)
    if kind == 2:
        return isa.encode(Opcode.STORE, m_len=i % 200 + 1, n_len=8)
    return isa.encode(Opcode.NOP, dep={"push_next": i & 1})


def make_nodes(sizes, first=0):
    """Nodes of ``sizes`` instructions, numbered from ``first`` on."""
    nodes, i = [], first
    for n in sizes:
        nodes.append([insn(i + j) for j in range(n)])
        i += n
    return nodes


class Bench(Elaboratable):
    """Fetch and a DramModel, optionally through a 2-client BusArbiter whose client 1
    (the rival) reads DRAM word 0 while the bench holds its ``valid``."""

    def __init__(self, cfg, rival=False):
        self.cfg = cfg
        self.fetch = Fetch(cfg)
        self.dram = DramModel(cfg)
        self.arbiter = BusArbiter(2, cfg.dram_words, cfg.bus_bits) if rival else None

    def elaborate(self, platform):
        m = Module()
        m.submodules.fetch = self.fetch
        m.submodules.dram = self.dram
        if self.arbiter is None:
            wiring.connect(m, fetch=self.fetch.bus, dram=self.dram.bus)
        else:
            m.submodules.arbiter = self.arbiter
            wiring.connect(m, fetch=self.fetch.bus, arbiter=self.arbiter.clients[0])
            wiring.connect(m, arbiter=self.arbiter.bus, dram=self.dram.bus)
        return m


def run_fetch(cfg, words, cycles, *, starts=(0,), bases=None, ready=lambda c: True,
              rival=None, window=(0, 0)):
    """Load ``words`` into DRAM, pulse ``run.start`` in the cycles ``starts`` (with
    ``prog_base = bases[i]``, default PROG_BASE), keep ``running`` high, and record
    ``cycles`` cycles. ``ready(c)`` drives ``push.ready``, ``rival(c)`` the rival
    master's request. Returns one dict per cycle."""
    bench = Bench(cfg, rival=rival is not None)
    f = bench.fetch
    bases = bases or [PROG_BASE] * len(starts)
    trace = []

    async def tb(ctx):
        await host_write(ctx, bench.dram, words)
        ctx.set(f.window_base, window[0])
        ctx.set(f.window_size, window[1])
        ctx.set(f.run.running, 1)
        ctx.set(f.bound.ready, 1)  # the node tracker always has room
        for c in range(cycles):
            if c in starts:
                ctx.set(f.prog_base, bases[starts.index(c)])
            ctx.set(f.run.start, c in starts)
            ctx.set(f.push.ready, ready(c))
            if rival is not None:
                ctx.set(bench.arbiter.clients[1].req.valid, rival(c))
            entry = ctx.get(f.push.payload.as_value())
            trace.append({
                "valid": ctx.get(f.push.valid), "ready": ctx.get(f.push.ready),
                "insn": entry & ((1 << isa.INSN_BITS) - 1), "index": entry >> isa.INSN_BITS,
                "error": ctx.get(f.status.error), "code": ctx.get(f.status.error_code),
                "status_index": ctx.get(f.status.index), "ended": ctx.get(f.status.ended),
                "blocked": ctx.get(f.status.blocked), "words": ctx.get(f.words),
                "req": ctx.get(f.bus.req.valid) and ctx.get(f.bus.req.ready),
                "rsp": ctx.get(f.bus.rsp.valid),
                "bound": (list(ctx.get(f.bound.payload)) if ctx.get(f.bound.valid) else None),
            })
            await ctx.tick()

    simulate(bench, tb)
    return trace


def pushes(trace):
    """(cycle, insn, index) of every instruction ``push`` handed over."""
    return [(c, t["insn"], t["index"]) for c, t in enumerate(trace) if t["valid"] and t["ready"]]


def bounds(trace):
    """The ``bound`` payloads fetch sent, in order."""
    return [t["bound"] for t in trace if t["bound"] is not None]


def queue_of(word):
    """The queue (0 LOAD, 1 COMPUTE, 2 STORE) an instruction goes to."""
    op = isa.decode(word)["op"]
    return {Opcode.LOAD: 0, Opcode.STORE: 2}.get(op, 1)


def expected_bounds(nodes):
    """Per node (a list of instructions), the instructions of it and the nodes before it
    that go to each queue."""
    counts, out = [0, 0, 0], []
    for node in nodes:
        for word in node:
            counts[queue_of(word)] += 1
        out.append(list(counts))
    return out


@pytest.mark.parametrize("latency", [1, 8])
def test_node_bounds_count_each_queue(latency):
    """With each node's last instruction fetch reports the instructions pushed into each
    queue so far (single-instruction nodes, several in flight at once, included)."""
    cfg = cfg_of(latency)
    nodes = make_nodes([5, 1, 1, 1, 12, 2, 1])
    _, ended = fetch_timing(cfg, [len(n) for n in nodes])
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), ended + 20)
    assert bounds(trace) == expected_bounds(nodes)
    # each bound comes with the push of its node's last instruction
    last = {sum(len(n) for n in nodes[:k + 1]) - 1 for k in range(len(nodes))}
    assert [c for c, t in enumerate(trace) if t["bound"] is not None] == \
        [c for c, _, i in pushes(trace) if i in last]


def test_descriptors_of_one_kind_are_one_node():
    """Consecutive descriptors with the same kind (a node split over several descriptors)
    give one bound; the kind changing starts a node."""
    cfg = cfg_of(4)
    nodes = make_nodes([3, 2, 4, 1])
    _, ended = fetch_timing(cfg, [len(n) for n in nodes])
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE, kinds=[7, 7, 8, 7]), ended + 20)
    assert bounds(trace) == expected_bounds([nodes[0] + nodes[1], nodes[2], nodes[3]])


def errors(trace):
    return [(c, t["code"], t["status_index"]) for c, t in enumerate(trace) if t["error"]]


def first_ended(trace):
    return next(c for c, t in enumerate(trace) if t["ended"])


# -- the timing function, by hand ------------------------------------------------------

def test_fetch_timing_by_hand():
    # L = 8, a request per cycle: descriptor 0 at 2, back at 10, node 0 starts at 11
    # (descriptor 1 requested then), words 12..15 -> offered at 15 + 9 = 24 (2L + 8),
    # words 16..19 -> 28; the end marker (back at 19) starts at 20; ended at 29.
    assert fetch_timing(cfg_of(8), [2]) == ([24, 28], 29)
    # L = 64, one-instruction nodes wait for their descriptor: node 0 starts at 67,
    # words 68..71 -> 136; descriptor 1 (requested at 67) is back at 131, node 1
    # starts at 132, words 133..136 -> 201; the end marker starts at 132 + 65 = 197.
    assert fetch_timing(cfg_of(64), [1, 1]) == ([136, 201], 202)
    # L = 4, the DRAM takes a request every 2 cycles (4 of 8 bytes per cycle):
    # descriptor 0 at 2, node 0 starts at 7, descriptor 1 at 7, words 9, 11, 13, 15
    # -> 20, then 17..23 -> 28: 8 = INSN_WORDS * 2 cycles per instruction.
    assert fetch_timing(cfg_of(4, dram_bytes_per_cycle=4), [2]) == ([20, 28], 29)
    # long nodes: 4 cycles per instruction, one more per node start
    pushes_, _ = fetch_timing(cfg_of(8), [5, 6])
    gaps = [b - a for a, b in zip(pushes_, pushes_[1:])]
    assert gaps == [4] * 4 + [5] + [4] * 5
    with pytest.raises(ValueError):
        fetch_timing(cfg_of(8), [3, 0])


# -- order, indices and timing ---------------------------------------------------------

@pytest.mark.parametrize("latency", [1, 8, 64])
def test_program_in_order_at_the_documented_rate(latency):
    cfg = cfg_of(latency)
    sizes = [5, 1, 12, 2]
    nodes = make_nodes(sizes)
    expect_cycles, expect_ended = fetch_timing(cfg, sizes)
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), expect_ended + 20)
    got = pushes(trace)
    flat = [i for node in nodes for i in node]
    assert [(i, x) for _, i, x in got] == [(i, x) for x, i in enumerate(flat)]
    assert [c for c, _, _ in got] == expect_cycles
    assert first_ended(trace) == expect_ended
    assert all(t["ended"] for t in trace[expect_ended:])
    assert errors(trace) == []
    # DRAM_RD: the descriptors (end marker included) and 4 words per instruction
    assert sum(t["words"] for t in trace) == len(sizes) + 1 + isa.INSN_WORDS * len(flat)
    # the docstring's first-instruction latency and steady state
    assert expect_cycles[0] == 2 * latency + 8
    long_node = expect_cycles[6:18]
    assert all(b - a == isa.INSN_WORDS for a, b in zip(long_node, long_node[1:]))


@pytest.mark.parametrize("bits, per_cycle", [(64, 4), (128, 16), (256, 8)])
def test_rate_set_by_the_dram_bandwidth_and_width(bits, per_cycle):
    """k = ceil(bus_bytes / dram_bytes_per_cycle) cycles per request: 4k per
    instruction; a program in the middle of wide bus words comes out the same."""
    cfg = cfg_of(8, bus_bits=bits, dram_bytes_per_cycle=per_cycle)
    k = -(-(bits // 8) // per_cycle)
    sizes = [7, 3]
    nodes = make_nodes(sizes)
    base = PROG_BASE + 8
    expect_cycles, expect_ended = fetch_timing(cfg, sizes)
    trace = run_fetch(cfg, program_words(nodes, base), expect_ended + 5, bases=[base])
    got = pushes(trace)
    assert [i for _, i, _ in got] == [i for node in nodes for i in node]
    assert [c for c, _, _ in got] == expect_cycles
    assert all(b - a == isa.INSN_WORDS * k for a, b in zip(expect_cycles[:7], expect_cycles[1:7]))
    assert first_ended(trace) == expect_ended


def test_queue_back_pressure():
    cfg = cfg_of(8)
    sizes = [9, 4, 11]
    nodes = make_nodes(sizes)
    rng = random.Random(10)
    pattern = [rng.random() < 0.4 for _ in range(2000)]
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), 400, ready=lambda c: pattern[c])
    got = pushes(trace)
    flat = [i for node in nodes for i in node]
    assert [(i, x) for _, i, x in got] == [(i, x) for x, i in enumerate(flat)]
    for t in trace:
        assert t["blocked"] == (t["valid"] and not t["ready"])
    assert any(t["blocked"] for t in trace)
    last = got[-1][0]
    assert not any(t["ended"] for t in trace[:last + 1]) and trace[last + 1]["ended"]


def test_rate_comes_back_after_a_long_stall():
    """The word FIFO (fetch_words) covers the DRAM latency: after the queue had no room
    for 100 cycles, instructions come every INSN_WORDS cycles again at once."""
    for latency in (8, 64):
        cfg = cfg_of(latency)
        assert fetch_words(cfg) == latency + isa.INSN_WORDS
        nodes = make_nodes([40])
        release = 2 * latency + 150
        trace = run_fetch(cfg, program_words(nodes, PROG_BASE), release + 4 * 30 + 10,
                          ready=lambda c: c <= 2 * latency + 8 or c >= release)
        got = pushes(trace)
        assert [i for _, i, _ in got[:31]] == nodes[0][:31]
        assert [c for c, _, _ in got[1:31]] == [release + 4 * j for j in range(30)]
        # before the release: descriptors 0 and 1, instruction 0 (pushed), instruction 1
        # (in the assembler) and a full FIFO were requested, nothing more
        assert sum(t["req"] for t in trace[:release]) == 2 + 2 * isa.INSN_WORDS + fetch_words(cfg)


def test_competing_bus_master():
    """Round robin with a master that requests every cycle: fetch gets every other
    request, one instruction per 2 * INSN_WORDS cycles; responses stay apart."""
    cfg = cfg_of(8)
    nodes = make_nodes([16, 3])
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), 400, rival=lambda c: True)
    got = pushes(trace)
    assert [(i, x) for _, i, x in got] == [(i, x) for x, i in enumerate(nodes[0] + nodes[1])]
    cycles = [c for c, _, _ in got[:16]]
    assert all(b - a == 2 * isa.INSN_WORDS for a, b in zip(cycles, cycles[1:]))
    assert sum(t["words"] for t in trace) == 3 + isa.INSN_WORDS * 19
    assert errors(trace) == []
    # the rival on and off: order unchanged
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), 400, rival=lambda c: c % 7 < 3)
    assert [i for _, i, _ in pushes(trace)] == nodes[0] + nodes[1]


# -- errors ------------------------------------------------------------------------

def test_illegal_opcode_mid_stream():
    cfg = cfg_of(8)
    node = make_nodes([10])[0]
    node[3] = 0x7  # opcode 7 has no queue
    expect_cycles, _ = fetch_timing(cfg, [10])
    trace = run_fetch(cfg, program_words([node], PROG_BASE), 200)
    got = pushes(trace)
    assert [(i, x) for _, i, x in got] == [(node[x], x) for x in range(3)]
    # raised once, in the cycle the instruction would have been offered
    assert errors(trace) == [(expect_cycles[3], ErrorCode.ILLEGAL_OPCODE, 3)]
    assert not any(t["valid"] for t in trace[expect_cycles[3]:])
    assert not any(t["ended"] for t in trace)


def test_bad_descriptor_after_a_node():
    """Descriptor 1 (read ahead while node 0 streams) points at a misaligned block:
    node 0 is pushed whole, then the error, in the cycle after the last push."""
    cfg = cfg_of(8)
    nodes = make_nodes([6, 2])
    words = program_words(nodes, PROG_BASE)
    words[(PROG_BASE >> 3) + 1] = isa.encode_descriptor(32 + 6 * 32 + 8, 2)
    expect_cycles, _ = fetch_timing(cfg, [6])
    trace = run_fetch(cfg, words, 200)
    got = pushes(trace)
    assert [(i, x) for _, i, x in got] == [(nodes[0][x], x) for x in range(6)]
    assert [c for c, _, _ in got] == expect_cycles
    assert errors(trace) == [(expect_cycles[-1] + 1, ErrorCode.BAD_DESCRIPTOR, 6)]
    assert not any(t["valid"] for t in trace[expect_cycles[-1] + 1:])


def test_instruction_block_leaves_the_window():
    cfg = cfg_of(8)
    nodes = make_nodes([6])
    # the table takes 32 bytes, instruction j is at PROG_BASE + 32 + 32 j: two fit
    trace = run_fetch(cfg, program_words(nodes, PROG_BASE), 200, window=(PROG_BASE, 32 + 64))
    got = pushes(trace)
    assert [(i, x) for _, i, x in got] == [(nodes[0][0], 0), (nodes[0][1], 1)]
    assert errors(trace) == [(got[-1][0] + 1, ErrorCode.BAD_DESCRIPTOR, 2)]
    # nothing outside the window was read: 2 descriptors, 2 instructions
    assert sum(t["words"] for t in trace) == 2 + 2 * isa.INSN_WORDS


def test_misaligned_program():
    cfg = cfg_of(8)
    words = program_words(make_nodes([2]), PROG_BASE)
    words[PROG_BASE >> 3] = isa.encode_descriptor(0x28, 2)  # not 32-aligned
    trace = run_fetch(cfg, words, 100)
    assert pushes(trace) == []
    assert [(code, index) for _, code, index in errors(trace)] == [(ErrorCode.BAD_DESCRIPTOR, 0)]
    trace = run_fetch(cfg, program_words(make_nodes([2]), PROG_BASE), 100, bases=[PROG_BASE + 4])
    assert pushes(trace) == [] and sum(t["req"] for t in trace) == 0
    assert errors(trace) == [(2, ErrorCode.BAD_DESCRIPTOR, 0)]


def test_first_error_in_program_order_wins():
    """An illegal opcode at 1 and an instruction outside the window at 3: the request
    side refuses 3 early, but ILLEGAL_OPCODE (earlier in the program) is raised."""
    cfg = cfg_of(8)
    node = make_nodes([6])[0]
    node[1] = 0xF
    trace = run_fetch(cfg, program_words([node], PROG_BASE), 200,
                      window=(PROG_BASE, 32 + 3 * 32))
    assert [x for _, _, x in pushes(trace)] == [0]
    assert [(code, index) for _, code, index in errors(trace)] == [(ErrorCode.ILLEGAL_OPCODE, 1)]


# -- restart ----------------------------------------------------------------------------

@pytest.mark.parametrize("abort", ["error", "restart"])
def test_restart_waits_for_the_aborted_responses(abort):
    """A start while reads are in flight (after an ILLEGAL_OPCODE, or in the middle
    of a run) issues nothing until they are back, then fetches from index 0."""
    latency = 64
    cfg = cfg_of(latency)
    first = make_nodes([20])[0]
    first[1] = 0x7
    second = make_nodes([3, 5], first=100)
    words = {**program_words([first], PROG_BASE), **program_words(second, ALT_BASE)}
    if abort == "error":
        restart = fetch_timing(cfg, [20])[0][1] + 1   # the cycle after the error
    else:
        restart = 2 * latency + 10                     # node 0 streaming
    trace = run_fetch(cfg, words, restart + 700, starts=(0, restart), bases=[PROG_BASE, ALT_BASE])
    before, after = trace[:restart + 1], trace[restart + 1:]
    in_flight = sum(t["req"] for t in before) - sum(t["rsp"] for t in before)
    assert in_flight > 0
    back = next(c for c, t in enumerate(after) if sum(u["rsp"] for u in after[:c + 1]) == in_flight)
    first_req = next(c for c, t in enumerate(after) if t["req"])
    assert first_req > back
    # the second program runs as from an idle start in the cycle its drain ended
    drain_end = restart + 1 + back  # the last aborted response's cycle
    got = [(c, i, x) for c, i, x in pushes(trace) if c > restart]
    flat = [i for node in second for i in node]
    assert [(i, x) for _, i, x in got] == [(i, x) for x, i in enumerate(flat)]
    expect_cycles, expect_ended = fetch_timing(cfg, [3, 5])
    assert [c - drain_end for c, _, _ in got] == expect_cycles
    assert first_ended(trace) - drain_end == expect_ended
    assert len(errors(trace)) == (abort == "error")
