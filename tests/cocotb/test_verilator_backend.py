"""The Verilator back end's two harnesses (C++ and cocotb) agree exactly.

The same small job (a two-layer random model, two runs with per-run input writes
and the driver's readback) runs on the C++ harness (sim/harness.cpp) and on the
cocotb bench; every RunResult field, all counters included, must be identical and
the outputs must match the golden model.
"""

from pathlib import Path

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sim import verilator
from celosia.rtl import isa
from celosia.sim.job import COUNTERS, Job, Run, decode_results, encode_job, harness_header
from celosia.sw.compiler import compile_model
from celosia.sw.driver import golden_forward
from celosia.sw.driver import build_job, pgo_training_job
from layer_cases import random_fc_model


@pytest.fixture(autouse=True)
def pgo_on(monkeypatch):
    """This module's builds are profile-guided (the rest of the suite builds without PGO,
    tests/conftest.py), so the PGO build is tested and its model built once."""
    monkeypatch.setenv(verilator.PGO_ENV, "1")


@pytest.fixture(scope="module")
def small_job():
    config = AccelConfig(rows=4, cols=4, weight_rows=8, dram_bytes=1 << 16)
    rng = np.random.default_rng(11)
    model = random_fc_model(rng, [19, 13, 7])
    x_q = rng.integers(-128, 128, (2, 19)).astype(np.int8)
    program = compile_model(model, config)
    job, _, lead = build_job(program, x_q)
    return config, model, x_q, job, len(lead)


def test_cpp_and_cocotb_harnesses_agree(small_job, monkeypatch):
    config, model, x_q, job, n_prefix = small_job
    monkeypatch.delenv(verilator.HARNESS_ENV, raising=False)
    cpp = verilator.run(config, job, harness="cpp", training_job=pgo_training_job)
    stats = verilator.last_stats
    # the profile-guided build: trained on pgo_training_job (its job file is kept)
    assert (verilator.build_cpp(config, training_job=pgo_training_job) / "train.job").exists()
    cocotb = verilator.run(config, job, harness="cocotb")
    assert len(cpp) == len(cocotb) == len(job.runs)
    for a, b in zip(cpp, cocotb):
        assert a == b  # status, error, error_info, every counter, snapshot, readback byte
        assert set(a.counters) == set(COUNTERS)
        assert a.error == 0 and not a.timed_out and a.counters["cycles"] > 0
    # one snapshot per node (2 layers; the init run: 1), the last one the cycle before the end
    assert [len(r.nodes) for r in cpp] == [1] * n_prefix + [2, 2]
    for r in cpp:
        assert [n["index"] for n in r.nodes] == list(range(1, len(r.nodes) + 1))
        assert r.nodes[-1]["cycles"] == r.counters["cycles"] - 1
        assert r.nodes[-1]["macs"] == r.counters["macs"]
    out = b"".join(r.data[0] for r in cpp[n_prefix:])
    y_q = np.frombuffer(out, np.int8).reshape(-1, model.out_features)[:len(x_q)]
    np.testing.assert_array_equal(y_q, golden_forward(model, x_q))
    assert stats["cycles"] >= sum(r.counters["cycles"] for r in cpp) and stats["seconds"] > 0


def test_harness_choice(small_job, monkeypatch):
    config, _, _, job, _ = small_job
    monkeypatch.setenv(verilator.HARNESS_ENV, "cpp")
    verilator.run(config, job, harness="cocotb", training_job=pgo_training_job)  # env overrides harness=
    assert verilator.last_stats is not None
    monkeypatch.setenv(verilator.HARNESS_ENV, "spice")
    with pytest.raises(verilator.SimulationError, match="harness"):
        verilator.run(config, job)


def test_missing_compiler_is_a_clear_error(small_job, monkeypatch, tmp_path):
    config, _, _, job, _ = small_job
    monkeypatch.setattr(verilator, "cache_dir", lambda: tmp_path)  # nothing built there
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(verilator.SimulationError, match="C\\+\\+ compiler"):
        verilator.build_cpp(config)


def test_cocotb_build_key_names_the_cocotb_install(monkeypatch):
    """A cocotb model loads cocotb's VPI library by absolute path: a model built with another
    cocotb install (another venv) gets another cache entry."""
    import cocotb_tools.config

    key = verilator.cocotb_build_key(b"module m; endmodule", "wrapper")
    assert verilator.cocotb_build_key(b"module m; endmodule", "wrapper") == key
    monkeypatch.setattr(cocotb_tools.config, "libs_dir", Path("/elsewhere/cocotb/libs"))
    assert verilator.cocotb_build_key(b"module m; endmodule", "wrapper") != key


def test_job_file_round_trip():
    """encode_job covers every step of run_job; decode_results rebuilds RunResults."""
    job = Job(dram_bytes=4096, image=[(0, bytes(8) + (5).to_bytes(8, "little"))],
              runs=[Run(csr_writes=[(3, 0x1_0000_0007)], readback=[(13, 6)],
                        writes=[(64, bytes(range(16)))])], max_cycles=1000)
    words = np.frombuffer(encode_job(job, poll_cycles=7), "<u8").tolist()
    n_ctr = len(COUNTERS)
    assert words[0] == int.from_bytes(b"CLSELJ03", "little") and words[1:4] == [7, 1000, 0]
    assert np.frombuffer(encode_job(job, stream=True), "<u8")[3] == 1  # FLAG_STREAM
    assert np.frombuffer(encode_job(job, stream=True, trace=True), "<u8")[3] == 3  # and FLAG_TRACE
    rest = words[4:]
    assert rest[:3] == [1, 1, 5]  # one non-zero image word: (word 1, value 5)
    assert rest[3:4] == [1]  # one run
    assert rest[4] == 2 and rest[9:12] == [1, 3, 7]  # two input words; CSR value masked
    assert rest[12:15] == [1, 1, 3]  # readback bytes 13..18 are words 1..2
    magic = int.from_bytes(b"CELSER03", "little")
    snaps = [2, 1, *range(100, 100 + n_ctr), 2, *range(200, 200 + n_ctr),  # two node records
             2, (5 << 6) | (1 << 3), (9 << 6) | 0b101]  # two events: LOAD starts; LOAD, STORE end
    result = [magic, 1, 2, 0, *range(n_ctr), 9, 0x4321, *snaps, 0x1122334455667788,
              0xAABBCCDDEEFF0011, 123, 456, 400]
    (res,), stats = decode_results(job, np.array(result, "<u8").tobytes())
    assert res.status == 2 and res.error_info == 9 and res.fault_addr == 0x4321 and list(res.counters.values()) == list(range(n_ctr))
    assert [n["index"] for n in res.nodes] == [1, 2]
    assert res.events == [(5, 1, 0), (9, 0, 5)]
    assert [list(n.values())[1:] for n in res.nodes] == [list(range(100, 100 + n_ctr)),
                                                           list(range(200, 200 + n_ctr))]
    both = (0x1122334455667788).to_bytes(8, "little") + (0xAABBCCDDEEFF0011).to_bytes(8, "little")
    assert res.data == [both[5:11]]
    assert stats == pytest.approx({"cycles": 123, "seconds": 456e-9, "cpu_seconds": 400e-9})


def test_harness_header():
    """harness.cpp's header: the ISA's numbers (celosia.rtl.isa.c_header) and the file magics."""
    text = harness_header()
    for line in ("constexpr uint64_t CSR_CTRL = 0ULL;", "constexpr uint64_t CSR_STATUS = 1ULL;",
                 "constexpr uint64_t CSR_ERROR_INFO = 25ULL;", "constexpr uint64_t STATUS_DONE_MASK = 2ULL;",
                 f"constexpr uint64_t MAGIC_JOB = {int.from_bytes(b'CLSELJ03', 'little'):#x}ULL;",
                 f"constexpr uint64_t MAGIC_RES = {int.from_bytes(b'CELSER03', 'little'):#x}ULL;",
                 "constexpr uint64_t FLAG_STREAM = 1ULL;", "constexpr uint64_t FLAG_TRACE = 2ULL;",
                 "constexpr uint64_t CSR_FAULT_ADDR = 28ULL;",
                 "constexpr uint64_t COUNTERS[N_COUNTERS] = {16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27};"):
        assert line in text, line
    # the result file lists the counters in COUNTERS order, which the header gives the harness
    assert list(COUNTERS.values()) == list(isa.COUNTERS)
