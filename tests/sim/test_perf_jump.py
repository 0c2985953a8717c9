"""The ``perf`` model's jump (celosia.sim.perf_jump): replaying the segments whose state and
instructions repeat gives exactly what stepping through every one gives.

Each case runs a job twice on the cycle model, timing only (``execute=False``, the sweep's and
the driver's ``perf`` run), with the jump and without: every counter, every per-node snapshot,
every instruction event and each instruction's issue and ``done`` cycle must be equal, and so
must the status (the mutated programs stop with deadlocks, token overflows, the watchdog,
the harness's bound). The run without the jump is the model the Verilator differential tests
(tests/sim/test_perf.py) hold equal to the RTL.
"""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celosia.errors import CompileError
from celosia.rtl.config import AccelConfig
from celosia.sim import perf
from celosia.sw.compiler import compile_model
from celosia.sw.driver.driver import build_job
from perf_trace import case_model, counter_differences
from test_fuzz import _settings, config_of, mutated_job, mutations


def _compare(config, job):
    """Run ``job`` with and without the jump; assert the results equal; the segments the
    jump replayed."""
    fast = perf.run(config, job, execute=False, events=True, jump=True)
    slow = perf.run(config, job, execute=False, events=True, jump=False)
    for a, b in zip(fast, slow, strict=True):
        assert b.jumped == 0
        assert (a.status, a.error, a.error_info, a.fault_addr, a.timed_out) == \
            (b.status, b.error, b.error_info, b.fault_addr, b.timed_out)
        assert a.counters == b.counters
        assert a.nodes == b.nodes
        assert a.events == b.events
        assert a.timeline.issue == b.timeline.issue
        assert a.timeline.done == b.timeline.done
    return sum(r.jumped for r in fast)


def _job(config, name):
    q, x_q = case_model(name)
    return build_job(compile_model(q, config), x_q)[0]


CASES = ([(dict(rows=n, cols=n, dataflow=df), name)
          for n in (2, 4, 8, 16) for df in ("ws", "os", "rs") for name in ("tiny_cnn", "digits_cnn")]
         + [(dict(rows=4, cols=4, dataflow=df, **extra), "digits_resnet")
            for df in ("ws", "os", "rs")
            for extra in ({}, dict(bus_bits=128, dram_bytes_per_cycle=16), dict(dram_latency=1),
                          dict(queue_depth=2), dict(dram_bytes_per_cycle=2))]
         + [(dict(rows=4, cols=8, dataflow=df, ppu_lanes=8), "conv:13,11,6,12,3,2,1") for df in ("ws", "os", "rs")])


@pytest.mark.parametrize("fields,name", CASES,
                         ids=["-".join(map(str, f.values())) + "-" + n for f, n in CASES])
def test_jump_equals_stepping(fields, name):
    config = AccelConfig(**fields)
    try:
        job = _job(config, name)
    except CompileError:      # a model that does not map onto this config
        pytest.skip("does not map")
    _compare(config, job)


VERILATOR_CASES = [(dict(rows=4, cols=4, dataflow="ws"), "digits_resnet"),
                   (dict(rows=4, cols=4, dataflow="os"), "digits_resnet"),
                   (dict(rows=4, cols=4, dataflow="rs"), "digits_mlp")]


@pytest.mark.parametrize("fields,name", VERILATOR_CASES,
                         ids=["-".join(map(str, f.values())) + "-" + n for f, n in VERILATOR_CASES])
def test_jump_equals_verilator(fields, name):
    """With the jump, the model's counters, per-node snapshots and instruction events equal
    the generated Verilog's (configurations tests/sim/test_perf.py builds already)."""
    from celosia.sim import verilator
    from celosia.sw.driver.driver import pgo_training_job

    config = AccelConfig(**fields)
    job = _job(config, name)
    fast = perf.run(config, job, execute=False, jump=True)
    assert sum(r.jumped for r in fast) > 0
    rtl = verilator.run(config, job, training_job=pgo_training_job, trace=True)
    assert counter_differences(fast, rtl) == []


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs"])
def test_a_long_layer_jumps(dataflow):
    """A convolution of many tiles on a 2x2 array: most of its segments repeat, and the jump
    replays them (so the jump cannot silently switch off)."""
    config = AccelConfig(rows=2, cols=2, dataflow=dataflow)
    job = _job(config, "conv:16,16,8,16,3,1,1")
    _compare(config, job)
    res = perf.run(config, job, execute=False)[-1]     # the inference run (1,201 or 865 insns)
    assert res.jumped > len(res.timeline.issue) // 2, (res.jumped, len(res.timeline.issue))


def test_jump_at_the_harness_bound():
    """A bound that cuts the run short (the last replay must not pass it)."""
    config = AccelConfig(rows=2, cols=2, dataflow="ws")
    job = _job(config, "conv:12,12,8,8,3,1,1")
    full = perf.run(config, job, execute=False)[-1].counters["cycles"]
    for cut in (full // 3, full // 2 + 7):
        short = dataclasses.replace(job, max_cycles=cut)
        _compare(config, short)
        assert perf.run(config, short, execute=False)[-1].timed_out


def test_what_does_not_jump(monkeypatch):
    """Functional execution, ``feie`` (its timing reads the data), and the environment's
    switch: stepping only."""
    config = AccelConfig(rows=2, cols=2, dataflow="ws")
    job = _job(config, "digits_cnn")
    assert sum(r.jumped for r in perf.run(config, job, execute=False)) > 0
    assert sum(r.jumped for r in perf.run(config, job)) == 0
    feie = AccelConfig(rows=2, cols=2, dataflow="feie")
    assert sum(r.jumped for r in perf.run(feie, _job(feie, "digits_cnn"), execute=False)) == 0
    monkeypatch.setenv("CELOSIA_PERF_JUMP", "0")
    assert sum(r.jumped for r in perf.run(config, job, execute=False)) == 0


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs"])
@_settings(10)
@given(name=st.sampled_from(("digits_cnn", "tiny_cnn")), muts=mutations())
def test_jump_on_mutated_programs(dataflow, name, muts):
    """Compiled programs with instructions dropped, duplicated or bit-flipped (the fuzz
    test's mutations): deadlocks, token overflows, watchdog stops, bad descriptors."""
    _compare(config_of(dataflow), mutated_job(dataflow, name, muts))
