"""The driver's progress watchdog and cycle bound (sw/driver/driver.py): derived from the
program, above every single instruction's time, and what a hung run reports."""

import numpy as np
import pytest

from celosia.errors import DriverError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import dataflow
from celosia.rtl.dma import load_cycles, store_cycles
from celosia.rtl.isa import Csr, Opcode
from celosia.sw import driver as driver_pkg
from celosia.sw.compiler import compile_model
from celosia.sw.driver import build_job, run_quantized
from celosia.sw.driver.driver import cycle_limit, watchdog_cycles
from layer_cases import conv_layer, random_fc_model
from celosia.sw.quant.model import QModel


def conv_model(seed=1):
    layer = conv_layer(np.random.default_rng(seed), "conv", (9, 9, 5), 6, 3, 1, 1, in_zp=-3)
    return QModel("conv", [layer], 0.05, layer.in_zp, input_shape=(9, 9, 5))


def insn_cycles(word, config):
    """The executable timing next to each engine (rtl/dma.py, rtl/dataflows.py) of one
    instruction on an idle machine; feie on a dense ifmap (its slowest case); VEC: its
    reads, one per cycle (none of its own timing function)."""
    d = isa.decode(word)
    op = d.pop("op")
    d.pop("dep", None)
    if op == Opcode.LOAD:
        return load_cycles(d, config)
    if op == Opcode.STORE:
        return store_cycles(d, config)
    if op == Opcode.GEMM:
        ifmap = np.ones((config.ifmap_rows, config.rows), np.int8) if config.dataflow == "feie" else None
        return dataflow(config.dataflow).cycles(d, config, ifmap)
    if op == Opcode.VEC:
        return d["m_len"] * d["win"]
    return 1


@pytest.mark.parametrize("df", ["ws", "os", "rs", "feie"])
def test_watchdog_exceeds_every_instruction(df):
    """Three bus masters share the DRAM: each instruction alone on the machine, three times
    over, stays under the watchdog (the engines' own timing functions, not the bound's
    formula)."""
    config = AccelConfig(rows=4, cols=4, dataflow=df, dram_latency=20, dram_bytes_per_cycle=2)
    for model in (conv_model(), random_fc_model(np.random.default_rng(3), [40, 30, 10])):
        program = compile_model(model, config)
        n = watchdog_cycles(program)
        words = [w for node in program.nodes for w in node.insns]
        worst = max(insn_cycles(w, config) for w in words)
        assert 3 * worst < n


def test_watchdog_and_bound_follow_the_program():
    """A bigger layer gets a longer watchdog, and the bound is the watchdog times the
    progress events (two per instruction, one per descriptor) plus slack; the driver's job
    carries both."""
    config = AccelConfig(rows=4, cols=4)
    small = compile_model(random_fc_model(np.random.default_rng(3), [8, 8]), config)
    big = compile_model(random_fc_model(np.random.default_rng(3), [200, 64]), config)
    assert watchdog_cycles(big) > watchdog_cycles(small)
    for program in (small, big):
        n = watchdog_cycles(program)
        nodes = program.nodes + ([program.init] if program.init is not None else [])
        events = sum(2 * len(nd.insns) + len(program.descriptor_counts(nd)) + 1 for nd in nodes)
        assert cycle_limit(program) == n * (events + 2)
        job, _, _ = build_job(program, np.zeros((1, program.in_features), np.int8))
        assert job.max_cycles == cycle_limit(program)
        assert all(dict(r.csr_writes)[Csr.WATCHDOG] == n for r in job.runs)


def test_a_hung_run_names_the_watchdog(monkeypatch):
    """With a watchdog shorter than a legitimate quiet stretch (the first instruction
    arrives 2 * dram_latency + 8 cycles after the start) the machine stops with WATCHDOG,
    as it would on a hang: the driver's error says so, naming the cycles; the same run
    with the derived watchdog completes (pysim)."""
    config = AccelConfig(rows=2, cols=2)
    model = random_fc_model(np.random.default_rng(5), [6, 3])
    x_q = np.zeros((1, 6), np.int8)
    ok = run_quantized(model, x_q, config, backend="pysim")
    assert ok.report["cycles"] > 0
    monkeypatch.setattr(driver_pkg.driver, "watchdog_cycles", lambda program: 3)
    with pytest.raises(DriverError, match=r"pysim: run 0 hung: no instruction was fetched or "
                                          r"completed for 3 cycles \(the watchdog"):
        run_quantized(model, x_q, config, backend="pysim")
