"""The bus width (``AccelConfig.bus_bits``) on the software side: programs compiled for a
64-, 128- or 256-bit bus run on the instruction-level simulator (byte-addressed, so
width-independent) bit-exact against the golden model, and the job format addresses
DRAM in 64-bit host words at every width."""

import dataclasses

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Csr
from celosia.sim.isa_sim import run_program
from celosia.sw.compiler import compile_model
from celosia.sw.driver import build_job, golden_forward
from celosia.sw.quant.model import QModel
from layer_cases import conv_layer, random_fc_model


@pytest.mark.parametrize("bus_bits", [64, 128, 256])
def test_isa_sim_at_every_width(bus_bits):
    rng = np.random.default_rng(bus_bits)
    layer = conv_layer(rng, "conv", (6, 7, 5), 6, 3, 1, 1, 1, in_zp=-9)
    conv = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=(6, 7, 5))
    fc = random_fc_model(rng, [23, 9, 5])
    config = AccelConfig(rows=4, cols=4, bus_bits=bus_bits, dram_bytes_per_cycle=bus_bits // 8)
    for model in (conv, fc):
        program = compile_model(model, config)
        x = rng.integers(-128, 128, size=(1, model.in_features)).astype(np.int8)
        got, tokens = run_program(program, x)
        np.testing.assert_array_equal(got, golden_forward(model, x))
        assert all(v == 0 for v in tokens.values())


@pytest.mark.parametrize("bus_bits", [128, 256])
def test_job_is_the_same_at_every_width(bus_bits):
    """The driver's job (DRAM image, CSR writes, readback) does not depend on the width:
    the host back door is 64 bits wide at every width (rtl/dram.py, DramModel)."""
    rng = np.random.default_rng(5)
    model = random_fc_model(rng, [19, 13, 7])
    x_q = rng.integers(-128, 128, (2, 19)).astype(np.int8)
    narrow = AccelConfig(rows=4, cols=4, weight_rows=8, dram_bytes=1 << 16)
    wide = AccelConfig(**dict(narrow.to_dict(), bus_bits=bus_bits))
    job, _, _ = build_job(compile_model(model, narrow), x_q)
    wide_job, _, _ = build_job(compile_model(model, wide), x_q)
    # ... except the hang bounds: the watchdog scales with the DRAM's cycles per request,
    # which the wider word (at the same bytes per cycle) raises
    assert _without_hang_bounds(wide_job) == _without_hang_bounds(job)
    assert wide_job.max_cycles > job.max_cycles
    assert wide.host_words == narrow.host_words == (1 << 16) // 8


def _without_hang_bounds(job):
    """``job`` without its WATCHDOG CSR writes and its harness bound."""
    return dataclasses.replace(job, max_cycles=0, runs=[
        dataclasses.replace(r, csr_writes=[(a, v) for a, v in r.csr_writes if a != Csr.WATCHDOG])
        for r in job.runs])
