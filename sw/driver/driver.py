"""The driver: one API, several back ends, identical outputs.

``run(qmodel, x, config, backend)`` quantizes the float input, runs it on the
back end and returns the dequantized output with a report:

* ``golden`` — the NumPy golden model (:func:`celosia.sim.golden.golden_forward`); no cycles.
* ``pysim`` — the compiled program on the RTL in Amaranth's simulator.
* ``verilator`` — the compiled program on the generated Verilog (cocotb + Verilator).
* ``board`` — the compiled program on an FPGA board running a Celosia bitstream
  (``celosia build --board``), over its UART bridge (:mod:`celosia.sim.board`;
  ``board={"port": ..., "baud": ...}``).

The RTL back ends link the program like a board driver would (seed 000's software
flow): program, static data and every input sample are loaded into DRAM once; the
initialization graph (the resident weights, :attr:`Program.init
<celosia.sw.compiler.Program.init>`) runs once per job; then each run writes the
INPUT / OUTPUT base registers and starts the execution graph. Cycle and traffic
figures come from the hardware counters; the initialization run's are reported
apart (``report["init"]``), not in the per-inference figures. Per-layer cycles are
measured by running prefixes of the program (the first ``k`` nodes) on the first sample:
``cycles(layer k) = cycles(prefix k+1) - cycles(prefix k)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from celosia.errors import CelosiaError, DriverError, InputError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Csr
from celosia.sim.golden.network import golden_forward
from celosia.sim.isa_sim import protection_windows
from celosia.sim.job import Job, Run
from celosia.sw.analysis import ProgramTraffic, layer_report, node_traffic, program_traffic, total_report
from celosia.sw.compiler import Program, compile_model
from celosia.sw.quant.model import QModel

__all__ = ["BACKENDS", "run", "run_quantized", "golden_forward", "check_input", "build_job", "DriverError",
           "Result", "pgo_training_job", "resident_weights_report", "kept_outputs_report",
           "cycle_limit"]

BACKENDS = ("golden", "pysim", "verilator", "board")


@dataclass
class Result:
    y_q: np.ndarray                      # int8 [samples, out_features]
    y: np.ndarray                        # float32, dequantized
    report: dict = field(default_factory=dict)


def check_input(model: QModel, x: np.ndarray, source: str = "input") -> np.ndarray:
    """``x`` as an array if it is a non-empty batch of finite real samples of the model's
    input shape (first axis = samples); otherwise an :class:`InputError` naming ``source``."""
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise InputError(f"{source}: expected a batch of samples (first axis), got shape {list(x.shape)}")
    per_sample = int(np.prod(x.shape[1:], dtype=np.int64))
    expected = tuple(model.input_shape) or (model.in_features,)
    if per_sample != model.in_features:
        raise InputError(f"{source}: each sample must have shape {list(expected)} "
                         f"({model.in_features} values), not {list(x.shape[1:])}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{source}: expected real numbers, not {x.dtype}")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise InputError(f"{source}: contains NaN or infinity (first at sample {bad[0]}, "
                         f"value {bad[1]})")
    return x


_check_input = check_input


def _prefix_tables(program: Program, profile: bool) -> list[int]:
    """Node counts of the profiling prefixes (1 .. n-1 nodes)."""
    n = len(program.nodes)
    return list(range(1, n)) if profile and n > 1 else []


def build_job(program: Program, x_q: np.ndarray, profile: bool = False) -> tuple[Job, dict, list]:
    """The :class:`~celosia.sim.job.Job` (DRAM image and runs) of ``program`` on the int8
    samples ``x_q`` (``[samples, in_features]``), as :func:`run_quantized` hands it to a back
    end: DRAM ``[prefix tables][program][static][inputs][scratch][outputs]``, the read
    window over all of it, the write window over scratch and outputs
    (:func:`~celosia.sim.isa_sim.protection_windows`). Its runs:
    the initialization graph's (if the program has one; it fills the weight buffer for
    every later run), with ``profile`` one per node prefix (per-layer counters), then one
    per ``batch`` samples. Returns ``(job, layout, lead)``, ``lead`` naming the runs
    before the inferences: ``"init"``, then the node count of each profiling prefix; for
    benchmarks and tools that drive a back end directly (the inferences are
    ``job.runs[len(lead):]``)."""
    batch = program.batch
    runs = math.ceil(len(x_q) / batch)
    padded = np.zeros((runs * batch, program.in_features), dtype=np.int8)
    padded[:len(x_q)] = x_q
    prefixes = _prefix_tables(program, profile)
    sizes = [len(program.descriptor_table(upto=k)) for k in prefixes]
    lay = program.check_dram(runs, profile)
    image, prefix_addr, cursor = [], {}, 0
    for k, size in zip(prefixes, sizes):
        prefix_addr[k] = cursor
        image.append((cursor, program.descriptor_table(upto=k, delta=lay["program"] - cursor)))
        cursor += size
    image.append((lay["program"], program.image()))
    image.append((lay["static"], program.static))
    for r in range(runs):
        image.append((lay["input"] + r * lay["input_stride"],
                      padded[r * batch:(r + 1) * batch].tobytes()))
    image = [(a, d.ljust((len(d) + 7) // 8 * 8, b"\0")) for a, d in image if d]

    # Protected regions: reads over the whole image, writes over scratch + outputs only.
    read, write = protection_windows(lay)

    def csrs(run_index, prog_base):
        return [(Csr.PROG_BASE, prog_base), (Csr.WINDOW_BASE, read[0]), (Csr.WINDOW_SIZE, read[1]),
                (Csr.WR_BASE, write[0]), (Csr.WR_SIZE, write[1]),
                (Csr.BASE0 + BaseReg.PROGRAM, prog_base),
                (Csr.BASE0 + BaseReg.STATIC, lay["static"]),
                (Csr.BASE0 + BaseReg.SCRATCH, lay["scratch"]),
                (Csr.BASE0 + BaseReg.INPUT, lay["input"] + run_index * lay["input_stride"]),
                (Csr.BASE0 + BaseReg.OUTPUT, lay["output"] + run_index * lay["output_stride"])]

    lead = (["init"] if program.init is not None else []) + prefixes
    if program.init is not None:
        prefix_addr["init"] = lay["program"] + program.init_offset
    job_runs = [Run(csr_writes=csrs(0, prefix_addr[k]), readback=[]) for k in lead]
    for r in range(runs):
        job_runs.append(Run(csr_writes=csrs(r, lay["program"]),
                            readback=[(lay["output"] + r * lay["output_stride"], program.output_bytes)]))
    return (Job(dram_bytes=program.config.dram_bytes, image=image, runs=job_runs,
                max_cycles=cycle_limit(program)), lay, lead)


def cycle_limit(program: Program) -> int:
    """The cycles after which a back end gives up on one run of ``program`` (a hang):
    50 M, or more for a big program: 8 cycles per MAC and per DRAM byte moved plus 1024
    per instruction, far above any legitimate run (the slowest array does a MAC per cycle,
    the slowest DRAM a byte per cycle), so a run that hits it is stuck."""
    t = program_traffic(program)
    return max(Job.max_cycles, 8 * (t.macs + t.read + t.written) + 1024 * program.n_insns)


def pgo_training_job(config: AccelConfig) -> Job:
    """The job the Verilator back end's profile-guided C++ build trains on: one sample of
    :func:`celosia.sw.zoo.tiny_cnn` (every op kind) compiled for ``config``.

    Pass it as ``training_job=`` to :func:`celosia.sim.verilator.build` / ``run`` (which
    cannot build it themselves: ``celosia.sim`` does not import ``celosia.sw``)."""
    from celosia.sw.quant import quantize_graph
    from celosia.sw.zoo import tiny_cnn

    rng = np.random.default_rng(0)
    qmodel = quantize_graph(tiny_cnn(), rng.random((4, 12, 12, 3), dtype=np.float32),
                            on_degenerate="ignore")  # 4 samples: only the cycles matter
    x_q = qmodel.quantize_input(rng.random((1, 12, 12, 3), dtype=np.float32)).reshape(1, -1)
    job, _, _ = build_job(compile_model(qmodel, config), x_q)
    return job


def _chunks(program: Program, samples: int, profile: bool) -> list[tuple[int, int]]:
    """Split the samples into jobs whose inputs and outputs fit the DRAM with the program."""
    first = program.check_dram(1, profile)["end"]
    per_run = program.layout(2)["end"] - program.layout(1)["end"]
    spare = program.config.dram_bytes - first
    runs_per_job = 1 + spare // max(per_run, 1)
    total_runs = math.ceil(samples / program.batch)
    step = runs_per_job * program.batch
    return [(lo, min(lo + step, samples)) for lo in range(0, total_runs * program.batch, step)
            if lo < samples]


def run_quantized(model: QModel, x_q: np.ndarray, config: AccelConfig, backend: str = "golden",
                  batch: int = 1, profile: bool = True, progress=None,
                  resident_weights: bool = True, program: Program | None = None,
                  keep_outputs: bool = True, board: dict | None = None) -> Result:
    """Run int8 inputs ``[samples, in_features]``; see :func:`run`. ``program``: ``model``
    already compiled for ``config`` at ``batch`` (e.g. by a benchmark that sized the DRAM
    from it, or the CLI, which checks it before building a simulator), instead of
    compiling it again (``resident_weights`` and ``keep_outputs`` are then ignored).
    ``board``: the ``board`` back end's options, :func:`celosia.sim.board.run`'s keywords
    (``port``, required; ``baud``, ``timeout``).

    Every back end, ``golden`` included, first compiles the model (a
    :class:`~celosia.errors.CompileError` where it does not map onto the buffers) and
    checks that the program and one run fit ``config.dram_bytes``
    (:meth:`Program.check_dram <celosia.sw.compiler.Program.check_dram>`)."""
    if backend not in BACKENDS:
        raise CelosiaError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    x_q = np.asarray(x_q, dtype=np.int8).reshape(len(x_q), -1)
    samples = len(x_q)
    macs_per_sample = model.macs_per_sample()
    report = {
        "backend": backend, "config": config.to_dict(), "samples": samples,
        "macs": macs_per_sample * samples,
        "source": model.source, "quantization": model.quant_summary(),
    }
    t0 = time.perf_counter()
    # Every back end, golden included, first proves the model maps onto the config:
    # it compiles (buffers) and the program and one run fit the DRAM.
    if program is None:
        program = compile_model(model, config, batch=batch, resident_weights=resident_weights,
                                keep_outputs=keep_outputs)
    if backend == "golden":
        program.check_dram()
        y_q = golden_forward(model, x_q)
        report.update(cycles=None, utilization=None, dram_bytes_read=None, dram_bytes_written=None,
                      layers=[{"name": l.name, "op": l.op, "macs": l.macs * samples, "cycles": None,
                               "compute_cycles": None} for l in model.layers])
        # the static traffic and roofline of the program the hardware would run
        _add_roofline(report, program, model, config, None)
    else:
        chunks = _chunks(program, len(x_q), profile)
        results, prefixes, inits = [], [], []
        for c, (lo, hi) in enumerate(chunks):
            job, lay, lead = build_job(program, x_q[lo:hi], profile and c == 0)
            if c == 0:
                prefixes = [k for k in lead if k != "init"]
            if backend == "pysim":
                from celosia.sim import pysim
                part = pysim.run(config, job, progress=progress)
            elif backend == "board":
                from celosia.sim import board as board_backend
                if not (board or {}).get("port"):
                    raise DriverError("the board back end needs the serial port of the board "
                                      "(board={'port': ...}; celosia run --port PORT)")
                part = board_backend.run(config, job, **board)
            else:
                from celosia.sim import verilator
                part = verilator.run(config, job, training_job=pgo_training_job)
            for i, res in enumerate(part):
                if res.timed_out:
                    raise DriverError(f"{backend}: run {i} did not finish within {job.max_cycles} cycles")
                if res.error:
                    at = (f", DRAM byte {res.fault_addr:#x}"
                          if res.error in (isa.ErrorCode.DMA_OUT_OF_WINDOW, isa.ErrorCode.BAD_DESCRIPTOR)
                          else "")
                    raise DriverError(f"{backend}: the accelerator stopped with error {res.error_name} "
                                      f"(instruction #{res.error_info}{at}) in run {i}")
            n_init = len(lead) - len(prefixes) if c == 0 else len(lead)
            inits.extend(part[:n_init])
            results.extend(part[n_init:])
            if progress is not None and len(chunks) > 1:
                progress(hi, len(x_q))
        prof, main = results[:len(prefixes)], results[len(prefixes):]
        out = b"".join(r.data[0] for r in main)
        y_q = np.frombuffer(out, dtype=np.int8).reshape(-1, model.out_features)[:samples]
        total = {k: sum(r.counters[k] for r in main) for k in main[0].counters}
        pe = config.rows * config.cols
        report.update(
            cycles=total["cycles"],
            cycles_per_run=main[0].counters["cycles"],
            runs=len(main), batch=batch,
            utilization=report["macs"] / (total["cycles"] * pe) if total["cycles"] else 0.0,
            dram_bytes_read=total["dram_bytes_read"],
            dram_bytes_written=total["dram_bytes_written"],
            hw_macs=total["macs"],
            load_busy=total["load_busy"], compute_busy=total["compute_busy"],
            store_busy=total["store_busy"], load_compute_overlap=total["load_compute_overlap"],
            zero_skips=total["zero_skips"], mac_cycles=total["mac_cycles"],
            instructions=total["insns"], program_instructions=program.n_insns,
        )
        if inits:  # the initialization graph, once per job (per chunk of samples)
            report["init"] = {"runs": len(inits), **{k: sum(r.counters[k] for r in inits)
                                                    for k in ("cycles", "dram_bytes_read", "insns")}}
        # Per layer, from prefix runs on the first run's input(s); without them
        # (profile=False, several layers) per-layer cycles are unknown.
        measured = len(prefixes) == len(model.layers) - 1
        snaps = ([{"cycles": 0, "compute_busy": 0, "zero_skips": 0, "mac_cycles": 0}]
                 + [r.counters for r in prof] + [main[0].counters])
        layers = []
        for k, (layer, node) in enumerate(zip(model.layers, program.nodes)):
            entry = {"name": layer.name, "op": layer.op, "macs": layer.macs * samples,
                     "cycles": None, "compute_cycles": None, "utilization": None, "zero_skips": None,
                     "mac_cycles": None,
                     "mapping": config.dataflow, **node.tiles}
            if measured:
                cycles = snaps[k + 1]["cycles"] - snaps[k]["cycles"]
                entry.update(cycles=cycles,
                             compute_cycles=snaps[k + 1]["compute_busy"] - snaps[k]["compute_busy"],
                             zero_skips=snaps[k + 1]["zero_skips"] - snaps[k]["zero_skips"],
                             mac_cycles=snaps[k + 1]["mac_cycles"] - snaps[k]["mac_cycles"],
                             utilization=node.macs / (cycles * pe) if cycles > 0 else 0.0)
            layers.append(entry)
        report["layers"] = layers
        _add_roofline(report, program, model, config, main[0].counters["cycles"])
        report["layer_cycles_note"] = (
            f"per-layer cycles and compute_cycles are for one run ({batch} sample(s)), measured by "
            "running the first k layers of the program on the first run's input"
            if measured else "per-layer cycles were not measured (profile=False)")
    report["wall_seconds"] = time.perf_counter() - t0
    y = model.dequantize_output(y_q)
    return Result(y_q=y_q, y=y, report=report)


def _add_roofline(report: dict, program: Program, model: QModel, config: AccelConfig,
                  cycles_per_run: int | None):
    """Per layer and in total (``report["roofline"]``): the program's static DRAM traffic for
    one run, re-read factors and roofline bound (:mod:`celosia.sw.analysis`), against the
    measured cycles where there are any."""
    traffic = program_traffic(program, model)
    for entry, t in zip(report["layers"], traffic.layers):
        entry.update(layer_report(t, config, entry["cycles"]))
    roof = report["roofline"] = total_report(traffic, config, cycles_per_run)
    report["resident_weights"] = resident_weights_report(program, traffic)
    report["kept_outputs"] = kept_outputs_report(program, traffic)
    roof["dram_bytes_per_inference_outputs_through_dram"] = \
        report["kept_outputs"]["dram_bytes_per_inference_through_dram"]
    roof["dram_bytes_per_inference_streamed"] = report["resident_weights"]["dram_bytes_per_inference_streamed"]
    roof["init_dram_bytes"] = report["resident_weights"]["init_dram_bytes"]


def resident_weights_report(program: Program, traffic: ProgramTraffic | None = None) -> dict:
    """The report's ``resident_weights`` object: which layers' weights the initialization
    graph keeps on chip, the weight-buffer rows they take, the DRAM bytes the
    initialization graph reads (once per job) and the DRAM bytes per inference of the
    execution graph with them (``dram_bytes_per_inference``) and with every weight
    streamed (``dram_bytes_per_inference_streamed``: what the same program would move
    without the initialization graph). ``traffic``: :func:`program_traffic` of
    ``program``, if already computed."""
    traffic = traffic or program_traffic(program)
    res = program.resident
    init_bytes = 0
    if program.init is not None:
        init = program.init
        t = node_traffic(init.name, init.op, 0, init.insns, len(program.descriptor_counts(init)))
        init_bytes = t.total + isa.DESC_BYTES  # and the descriptor that ends its table
    after = traffic.read + traffic.written
    saved = res.get("saved_bytes", 0)
    return {"enabled": program.init is not None, "layers": res.get("layers", []),
            "weight_rows": res.get("rows", 0), "weight_rows_config": program.config.weight_rows,
            "init_dram_bytes": init_bytes,
            "dram_bytes_per_inference": round(after / program.batch, 4),
            "dram_bytes_per_inference_streamed": round((after + saved) / program.batch, 4)}


def run(model: QModel, x: np.ndarray, config: AccelConfig, backend: str = "golden", batch: int = 1,
        profile: bool = True, progress=None, source: str = "input", resident_weights: bool = True,
        keep_outputs: bool = True, program: Program | None = None, board: dict | None = None) -> Result:
    """Quantize float ``x`` (first axis = samples), run it, dequantize the output.

    ``resident_weights``: compile with the initialization graph that keeps the weights
    that fit on chip (default), or stream every weight tile every run (for comparison);
    ``keep_outputs``: keep a layer's output that fits in the ifmap buffer as the next
    layer's input (default), or send every output through DRAM;
    :func:`~celosia.sw.compiler.compile_model`; ``program``: ``model`` already compiled
    (:func:`run_quantized`); ``board``: the board back end's options (:func:`run_quantized`)."""
    x = check_input(model, x, source)
    return run_quantized(model, model.quantize_input(x), config, backend, batch, profile, progress,
                         resident_weights, program=program, keep_outputs=keep_outputs, board=board)


def kept_outputs_report(program: Program, traffic: ProgramTraffic | None = None) -> dict:
    """The report's ``kept_outputs`` object: the layers whose output stays in the ifmap
    buffer as the next layer's input (``layers``), the DRAM bytes per inference of the
    execution graph (``dram_bytes_per_inference``) and with every output through DRAM
    (``dram_bytes_per_inference_through_dram``: what the same program would move with
    ``keep_outputs=False``). ``traffic``: :func:`program_traffic` of ``program``, if
    already computed."""
    traffic = traffic or program_traffic(program)
    after = traffic.read + traffic.written
    saved = program.kept.get("saved_bytes", 0)
    return {"enabled": bool(program.kept), "layers": program.kept.get("layers", []),
            "dram_bytes_per_inference": round(after / program.batch, 4),
            "dram_bytes_per_inference_through_dram": round((after + saved) / program.batch, 4)}
