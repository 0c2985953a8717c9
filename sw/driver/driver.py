"""The driver: one API, several back ends, identical outputs.

``run(qmodel, x, config, backend)`` quantizes the float input, runs it on the
back end and returns the dequantized output with a report:

* ``golden`` — the NumPy golden model (:func:`celosia.sim.golden.golden_forward`); no cycles.
* ``pysim`` — the compiled program on the RTL in Amaranth's simulator.
* ``verilator`` — the compiled program on the generated Verilog (cocotb + Verilator).
* ``perf`` — the compiled program on the cycle model (:mod:`celosia.sim.perf`): the
  counters the RTL back ends read, equal to the Verilog's; the outputs come from the
  golden model. Per-layer figures come from the counters at each node boundary of the
  one run (no prefix runs).
* ``board`` — the compiled program on an FPGA board running a Celosia bitstream
  (``celosia build --board``), over its UART bridge (:mod:`celosia.sim.board`;
  ``board={"port": ..., "baud": ...}``).

The RTL back ends link the program like a board driver would (seed 000's software
flow): program, static data and every input sample are loaded into DRAM once; the
initialization graph (the resident weights, :attr:`Program.init
<celosia.sw.compiler.Program.init>`) runs once per job; then each run writes the
INPUT / OUTPUT base registers and starts the execution graph. Cycle and traffic
figures come from the hardware counters; the initialization run's are reported
apart (``report["init"]``), not in the per-inference figures. Per-layer figures come
from the same run: the controller snapshots its counters at every node boundary (the
cycle by which every instruction of nodes 0..k has completed; rtl/controller/nodes.py)
and the harness records each snapshot, so ``cycles(layer k) = snapshot(k) -
snapshot(k - 1)`` on the first inference run, the last layer ending at the run's end.

A hang cannot last: the driver sets the machine's progress watchdog
(:func:`watchdog_cycles`: the machine stops with error WATCHDOG when no instruction was
pushed or completed for that long) and gives the harness an absolute bound derived from
it (:func:`cycle_limit`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from celosia.errors import CelosiaError, DriverError, InputError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import dataflow
from celosia.rtl.isa import BaseReg, Csr
from celosia.sim.golden.network import golden_forward, golden_tensors
from celosia.sim.isa_sim import protection_windows
from celosia.sim.job import Job, Run
from celosia.sw.analysis import (ProgramTraffic, _fields, _slices, layer_report, node_traffic,
                                 nonzero_macs, program_traffic, total_report)
from celosia.sw.compiler import Program, compile_model
from celosia.sw.compiler.program import DESC_KINDS
from celosia.sw.quant.model import QModel

__all__ = ["BACKENDS", "run", "run_quantized", "golden_forward", "check_input", "build_job", "DriverError",
           "Result", "pgo_training_job", "resident_weights_report", "kept_outputs_report",
           "cycle_limit", "watchdog_cycles", "layer_boundaries", "trace_events", "instruction_trace"]

BACKENDS = ("golden", "perf", "pysim", "verilator", "board")


@dataclass
class Result:
    y_q: np.ndarray                      # int8 [samples, out_features]
    y: np.ndarray                        # float32, dequantized
    report: dict = field(default_factory=dict)
    #: With ``trace`` on the verilator or perf back end: the first inference's instruction
    #: trace (:func:`instruction_trace`), else ``None``.
    trace: dict | None = None


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


def build_job(program: Program, x_q: np.ndarray, profile: bool = False) -> tuple[Job, dict, list]:
    """The :class:`~celosia.sim.job.Job` (DRAM image and runs) of ``program`` on the int8
    samples ``x_q`` (``[samples, in_features]``), as :func:`run_quantized` hands it to a back
    end: DRAM ``[program][static][inputs][scratch][outputs]``, the read window over all of
    it, the write window over scratch and outputs
    (:func:`~celosia.sim.isa_sim.protection_windows`), the progress watchdog
    (:func:`watchdog_cycles`) and the harness's bound (:func:`cycle_limit`). Its runs: the
    initialization graph's (if the program has one; it fills the weight buffer for every
    later run), then one per ``batch`` samples. Returns ``(job, layout, lead)``, ``lead``
    naming the runs before the inferences (``["init"]`` or ``[]``; the inferences are
    ``job.runs[len(lead):]``). ``profile`` is accepted for old callers and has no effect:
    per-layer figures come from every run's node snapshots."""
    batch = program.batch
    runs = math.ceil(len(x_q) / batch)
    padded = np.zeros((runs * batch, program.in_features), dtype=np.int8)
    padded[:len(x_q)] = x_q
    lay = program.check_dram(runs)
    image = [(lay["program"], program.image()), (lay["static"], program.static)]
    for r in range(runs):
        image.append((lay["input"] + r * lay["input_stride"],
                      padded[r * batch:(r + 1) * batch].tobytes()))
    image = [(a, d.ljust((len(d) + 7) // 8 * 8, b"\0")) for a, d in image if d]

    # Protected regions: reads over the whole image, writes over scratch + outputs only.
    read, write = protection_windows(lay)
    watchdog = watchdog_cycles(program)

    def csrs(run_index, prog_base):
        return [(Csr.PROG_BASE, prog_base), (Csr.WINDOW_BASE, read[0]), (Csr.WINDOW_SIZE, read[1]),
                (Csr.WR_BASE, write[0]), (Csr.WR_SIZE, write[1]), (Csr.WATCHDOG, watchdog),
                (Csr.BASE0 + BaseReg.PROGRAM, prog_base),
                (Csr.BASE0 + BaseReg.STATIC, lay["static"]),
                (Csr.BASE0 + BaseReg.SCRATCH, lay["scratch"]),
                (Csr.BASE0 + BaseReg.INPUT, lay["input"] + run_index * lay["input_stride"]),
                (Csr.BASE0 + BaseReg.OUTPUT, lay["output"] + run_index * lay["output_stride"])]

    lead = ["init"] if program.init is not None else []
    job_runs = [Run(csr_writes=csrs(0, lay["program"] + program.init_offset), readback=[])
                for _ in lead]
    for r in range(runs):
        job_runs.append(Run(csr_writes=csrs(r, lay["program"]),
                            readback=[(lay["output"] + r * lay["output_stride"], program.output_bytes)]))
    return (Job(dram_bytes=program.config.dram_bytes, image=image, runs=job_runs,
                max_cycles=cycle_limit(program, watchdog)), lay, lead)


# The instruction fields watchdog_cycles reads, straight from the layouts (decoding
# every field of 10^5 instructions would take seconds).
_OP_MASK = isa.field_max(isa.Header, "op")
_WORK_FIELDS = {
    isa.Opcode.LOAD.value: _slices(isa.LoadInsn, ("n0", "n1", "n2")),
    isa.Opcode.STORE.value: _slices(isa.StoreInsn, ("m_len", "n_len")),
    isa.Opcode.VEC.value: _slices(isa.VecInsn, ("m_len", "win")),
    isa.Opcode.GEMM.value: _slices(isa.GemmInsn, ("m_len", "k_len", "n_len", "window", "win_h",
                                                  "win_w")),
}


def _work(word: int) -> int:
    """An upper bound on the cycles one instruction keeps its engine busy, in units of
    the slowest step: a LOAD's elements and a STORE's bytes (at worst one bus request
    each), a VEC's ifmap reads, a GEMM's MACs (every array does at least one per cycle)."""
    slices = _WORK_FIELDS.get(word & _OP_MASK)
    if slices is None:
        return 0
    f = _fields(word, slices)
    taps = (f.pop("win_h") * f.pop("win_w") if f.pop("window") else 1) if "window" in f else 1
    return math.prod(f.values()) * taps


def watchdog_cycles(program: Program) -> int:
    """The WATCHDOG CSR for ``program``: the cycles without progress (no instruction pushed
    into a queue or completed) after which the machine stops with error WATCHDOG.

    ``3 * k * W + 64 * (dram_latency + rows + cols) + 1024`` for the largest work ``W``
    of any one instruction (:func:`_work`: elements, bytes, reads or MACs), ``k`` the
    DRAM's cycles per bus request (:func:`~celosia.rtl.dram.request_interval`) and 3 the
    bus masters sharing it; the second term covers the fixed latencies (DRAM, array fill
    and drain, PPU). While the machine is not hung, an instruction completes at the
    latest one instruction's time after the previous completion (queues and engines
    work in order), so a run that trips it is stuck."""
    from celosia.rtl.dram import request_interval

    cfg = program.config
    nodes = program.nodes + ([program.init] if program.init is not None else [])
    most = max((_work(w) for node in nodes for w in node.insns), default=0)
    return 3 * request_interval(cfg) * most + 64 * (cfg.dram_latency + cfg.rows + cfg.cols) + 1024


def cycle_limit(program: Program, watchdog: int | None = None) -> int:
    """The cycles after which a back end gives up on one run of ``program`` (the
    harness's last resort behind the machine's own watchdog): ``watchdog`` (default
    :func:`watchdog_cycles`) times one more than the progress events a run can have (a
    push and a completion per instruction, a fetch per descriptor). A run that does not
    trip the watchdog makes progress at least that often, so it ends before this."""
    watchdog = watchdog_cycles(program) if watchdog is None else watchdog
    nodes = program.nodes + ([program.init] if program.init is not None else [])
    events = sum(2 * len(n.insns) + len(program.descriptor_counts(n)) + 1 for n in nodes)
    return watchdog * (events + 2)


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


def _chunks(program: Program, samples: int) -> list[tuple[int, int]]:
    """Split the samples into jobs whose inputs and outputs fit the DRAM with the program."""
    first = program.check_dram(1)["end"]
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
                  keep_outputs: bool = True, on_event=None, trace: bool = False,
                  board: dict | None = None, execute: bool = False) -> Result:
    """Run int8 inputs ``[samples, in_features]``; see :func:`run`. ``program``: ``model``
    already compiled for ``config`` at ``batch`` (e.g. by a benchmark that sized the DRAM
    from it, or the CLI, which checks it before building a simulator), instead of
    compiling it again (``resident_weights`` and ``keep_outputs`` are then ignored).
    ``profile`` is kept for old callers and has no effect (the per-layer figures come
    from the run itself). ``on_event``: on the verilator back end, called while the
    simulation runs with ``{"run": inference index or None (initialization), "runs":
    inferences, "layer": name of the layer just finished or None, "cycles": cycles of the
    run so far}`` at every node boundary and every couple of million cycles (progress
    displays; :data:`celosia.sim.job.PROGRESS_CYCLES`). ``trace``: on the verilator and perf
    back ends, also record every instruction's start and end and return the first inference's
    :func:`instruction_trace` as ``Result.trace``.
    ``board``: the ``board`` back end's options, :func:`celosia.sim.board.run`'s keywords
    (``port``, required; ``baud``, ``timeout``).
    ``execute``: on the perf back end, run every instruction on the ISA simulator as the
    RTL issues it (no replay: slower), so ``y_q`` is what the program computes; without it
    perf models the timing only (``feie``, whose timing reads the data, always executes)
    and ``y_q`` is the golden model's. ``report["outputs"]`` says which: ``"computed"``
    (every RTL back end, perf with execution) or ``"golden"`` (golden, timing-only perf).

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
        report.update(outputs="golden", cycles=None, utilization=None, dram_bytes_read=None,
                      dram_bytes_written=None,
                      layers=[{"name": l.name, "op": l.op, "macs": l.macs * samples, "cycles": None,
                               "compute_cycles": None} for l in model.layers])
        # the static traffic and roofline of the program the hardware would run
        _add_roofline(report, program, model, config, None, x_q)
    else:
        perf = backend == "perf"
        chunks = _chunks(program, len(x_q))
        results, inits = [], []
        for lo, hi in chunks:
            job, lay, lead = build_job(program, x_q[lo:hi])
            if backend == "pysim":
                from celosia.sim import pysim
                part = pysim.run(config, job, progress=progress)
            elif perf:
                from celosia.sim import perf as perf_model
                part = perf_model.run(config, job, execute=execute, events=trace)
            elif backend == "board":
                from celosia.sim import board as board_backend
                if not (board or {}).get("port"):
                    raise DriverError("the board back end needs the serial port of the board "
                                      "(board={'port': ...}; celosia run --port PORT)")
                part = board_backend.run(config, job, **board)
            else:
                from celosia.sim import verilator
                relay = _event_relay(on_event, program, model, len(lead), len(results),
                                     math.ceil(len(x_q) / batch))
                part = verilator.run(config, job, training_job=pgo_training_job, on_event=relay,
                                     trace=trace)
            for i, res in enumerate(part):
                _check_run(backend, i, res, job)
            inits.extend(part[:len(lead)])
            results.extend(part[len(lead):])
            if progress is not None and len(chunks) > 1:
                progress(hi, len(x_q))
        main = results
        out = b"".join(r.data[0] for r in main)
        computed = not perf or execute or config.dataflow == "feie"
        report["outputs"] = "computed" if computed else "golden"
        y_q = (np.frombuffer(out, dtype=np.int8).reshape(-1, model.out_features)[:samples]
               if computed else golden_forward(model, x_q))
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
        # Per layer, from the first inference run's node snapshots.
        bounds = layer_boundaries(program, main[0])
        layers = []
        for k, (layer, node) in enumerate(zip(model.layers, program.nodes)):
            entry = {"name": layer.name, "op": layer.op, "macs": layer.macs * samples,
                     "cycles": None, "compute_cycles": None, "utilization": None, "zero_skips": None,
                     "mac_cycles": None, "mapping": config.dataflow, **node.tiles}
            if bounds is not None:
                before = bounds[k - 1] if k else dict.fromkeys(bounds[k], 0)
                delta = {c: bounds[k][c] - before[c] for c in bounds[k]}
                cycles = delta["cycles"]
                entry.update(start_cycle=before["cycles"], cycles=cycles,
                             compute_cycles=delta["compute_busy"], zero_skips=delta["zero_skips"],
                             mac_cycles=delta["mac_cycles"], load_busy=delta["load_busy"],
                             store_busy=delta["store_busy"], hw_macs=delta["macs"],
                             hw_dram_bytes_read=delta["dram_bytes_read"],
                             hw_dram_bytes_written=delta["dram_bytes_written"],
                             utilization=node.macs / (cycles * pe) if cycles > 0 else 0.0)
            layers.append(entry)
        report["layers"] = layers
        _add_roofline(report, program, model, config, main[0].counters["cycles"], x_q)
        report["layer_cycles_note"] = (
            f"per-layer figures are for one run ({batch} sample(s)), the first, from the "
            "counter snapshots the controller takes at node boundaries (the cycle by which "
            "every instruction of layers 0..k has completed): layer k's figures are the "
            "counters between layer k-1's boundary and its own (the last layer's ends with "
            "the run); work of a later layer done before that boundary counts toward layer k"
            if bounds is not None else
            "per-layer figures are not available: the back end recorded no node snapshots")
    report["wall_seconds"] = time.perf_counter() - t0
    y = model.dequantize_output(y_q)
    events = main[0].events if backend != "golden" else []
    return Result(y_q=y_q, y=y, report=report,
                  trace=instruction_trace(program, model, events) if events else None)


def _check_run(backend: str, i: int, res, job: Job) -> None:
    """A :class:`DriverError` if run ``i`` of ``job`` failed: hit the harness's bound or
    stopped with an error (the watchdog's named as such)."""
    if res.timed_out:
        raise DriverError(f"{backend}: run {i} did not finish within {job.max_cycles} cycles "
                          "(the bound derived from the program's watchdog)")
    if res.error == isa.ErrorCode.WATCHDOG:
        watchdog = dict(job.runs[i].csr_writes).get(Csr.WATCHDOG)
        raise DriverError(f"{backend}: run {i} hung: no instruction was fetched or completed for "
                          f"{watchdog} cycles (the watchdog; oldest waiting instruction "
                          f"#{res.error_info})")
    if res.error:
        at = (f", DRAM byte {res.fault_addr:#x}"
              if res.error in (isa.ErrorCode.DMA_OUT_OF_WINDOW, isa.ErrorCode.BAD_DESCRIPTOR)
              else "")
        raise DriverError(f"{backend}: the accelerator stopped with error {res.error_name} "
                          f"(instruction #{res.error_info}{at}) in run {i}")


def _snapshot_nodes(program: Program) -> list[int]:
    """The program node of each node boundary the controller snapshots its counters at, in
    order. The controller's node is a run of consecutive descriptors with the same ``kind``
    (the node index modulo 256, rtl/controller/fetch.py): a program node without
    instructions has no descriptor (its boundary is its predecessor's), and one of more
    than :data:`~celosia.sw.compiler.program.MAX_DESC_INSNS` instructions has several, run
    back to back, with one boundary at the end of its last."""
    out, prev = [], None
    for k, node in enumerate(program.nodes):
        for _ in program.descriptor_counts(node):
            kind = k % DESC_KINDS
            if kind == prev:
                out[-1] = k
            else:
                out.append(k)
            prev = kind
    return out


def layer_boundaries(program: Program, result) -> list[dict] | None:
    """The counters (:data:`celosia.sim.job.COUNTERS` names) at each layer's boundary in
    the run ``result`` (a :class:`~celosia.sim.job.RunResult` of ``program``'s execution
    graph): node ``k``'s snapshot (:func:`_snapshot_nodes`), a node without instructions
    taking its predecessor's (zeros before the first), and the run's final counters from
    the last node with instructions on (so the layers add up to the run). ``None`` when
    the run has not one snapshot per such node (a back end that records none)."""
    nodes = _snapshot_nodes(program)
    if not result.nodes or len(result.nodes) != len(nodes) or not nodes:
        return None
    zero = dict.fromkeys(result.counters, 0)
    snap = dict(zip(nodes, result.nodes))
    bounds, current = [], zero
    for k in range(len(program.nodes)):
        if k >= nodes[-1]:
            current = result.counters
        elif k in snap:
            current = {c: snap[k][c] for c in zero}
        bounds.append(current)
    return bounds


def _event_relay(on_event, program: Program, model: QModel, lead: int, first: int, runs: int):
    """The verilator harness's stream events, as :func:`run_quantized`'s ``on_event``
    calls (``lead``: runs of the job before its inferences; ``first``: the inference
    index of the job's first)."""
    if on_event is None:
        return None
    # the layer each snapshot finishes
    names = [model.layers[k].name if k < len(model.layers) else program.nodes[k].name
             for k in _snapshot_nodes(program)]

    def relay(kind, run, *values):
        inference = run - lead + first if run >= lead else None
        layer = names[values[0] - 1] if kind == "node" and inference is not None and \
            0 < values[0] <= len(names) else None
        on_event({"run": inference, "runs": runs, "layer": layer, "cycles": values[-1]})
    return relay


#: The layer ops the vector engine runs (VEC instructions), not the PE array.
VECTOR_OPS = ("maxpool", "avgpool", "gap", "add")


def _track(word: int) -> tuple[str, int]:
    """The trace track of an instruction: (its slice's last word, tid)."""
    return {isa.Opcode.LOAD.value: ("LOAD", 1), isa.Opcode.VEC.value: ("VECTOR", 3),
            isa.Opcode.STORE.value: ("STORE", 4), isa.Opcode.NOP.value: ("NOP", 2),
            }.get(word & _OP_MASK, ("COMPUTE", 2))


def _trace(events: list[dict], source: str) -> dict:
    """The trace file around ``events``: the engines' track names first."""
    names = [{"ph": "M", "pid": 0, "tid": tid, "name": "thread_name", "args": {"name": name}}
             for name, tid in (("LOAD", 1), ("COMPUTE", 2), ("VECTOR", 3), ("STORE", 4))]
    return {"traceEvents": names + events, "displayTimeUnit": "ns",
            "otherData": {"time_unit": "cycles", "source": source}}


def instruction_trace(program: Program, model: QModel, events) -> dict:
    """A Chrome / Perfetto trace (``{"traceEvents": [...]}``) of one run of ``program``
    from its instruction events (:attr:`RunResult.events
    <celosia.sim.job.RunResult.events>`): one "X" slice per instruction from the cycle it
    starts to the cycle it completes, inclusive (``ts``, ``dur`` in cycles from the
    start), on its engine's track (pid 0; tid 1 LOAD, 2 COMPUTE, 3 VECTOR, 4 STORE; a
    NOP, which only moves tokens, on COMPUTE), named like ``"L3 conv2 LOAD"`` (``"...
    COMPUTE"`` for a GEMM, ``"... NOP"``), with its fetch-order index in
    ``args``. Each queue starts and completes in order, so its ``i``-th start and
    ``i``-th completion are its ``i``-th instruction."""
    queue_of = {isa.Opcode.LOAD.value: 0, isa.Opcode.STORE.value: 2}
    per_queue = ([], [], [])  # (node, fetch index, word) in fetch order
    index = 0
    for k, node in enumerate(program.nodes):
        for word in node.insns:
            per_queue[queue_of.get(word & _OP_MASK, 1)].append((k, index, word))
            index += 1
    starts, ends = ([], [], []), ([], [], [])
    for cycle, issue, fin in events:
        for q in range(3):
            if issue >> q & 1:
                starts[q].append(cycle)
            if fin >> q & 1:
                ends[q].append(cycle)
    out = []
    for q in range(3):
        for (k, index, word), start, end in zip(per_queue[q], starts[q], ends[q]):
            what, tid = _track(word)
            name = model.layers[k].name if k < len(model.layers) else program.nodes[k].name
            out.append({"ph": "X", "pid": 0, "tid": tid, "ts": start, "dur": end - start + 1,
                        "name": f"L{k} {name} {what}", "args": {"index": index}})
    return _trace(out, "instruction events")


def trace_events(report: dict) -> dict:
    """A Chrome / Perfetto trace (``{"traceEvents": [...]}``) of the first inference run
    of an RTL ``report``: one track per engine (pid 0; tid 1 LOAD, 2 COMPUTE (the PE
    array), 3 VECTOR, 4 STORE), one "X" slice per layer on each engine busy in it, from
    the layer's start to its boundary (``ts`` and ``dur`` in cycles), named like ``"L3
    conv2 LOAD"``, with the engine's busy cycles in ``args`` (the compute-queue busy
    cycles go to VECTOR for the layers the vector engine runs: pooling, add). Empty when
    the report has no per-layer cycles."""
    tracks = (("LOAD", 1, "load_busy"), ("COMPUTE", 2, "compute_cycles"),
              ("VECTOR", 3, "compute_cycles"), ("STORE", 4, "store_busy"))
    events = []
    for k, layer in enumerate(report.get("layers", [])):
        if layer.get("cycles") is None:
            return {"traceEvents": []}
        vector = layer["op"] in VECTOR_OPS
        for name, tid, key in tracks:
            if layer.get(key) and (name not in ("COMPUTE", "VECTOR") or vector == (name == "VECTOR")):
                events.append({"ph": "X", "pid": 0, "tid": tid, "ts": layer["start_cycle"],
                               "dur": layer["cycles"], "name": f"L{k} {layer['name']} {name}",
                               "args": {"busy_cycles": layer[key], "op": layer["op"]}})
    return _trace(events, "per-node counter snapshots")


def _add_roofline(report: dict, program: Program, model: QModel, config: AccelConfig,
                  cycles_per_run: int | None, x_q: np.ndarray | None = None):
    """Per layer and in total (``report["roofline"]``): the program's static DRAM traffic for
    one run, re-read factors and roofline bound (:mod:`celosia.sw.analysis`), against the
    measured cycles where there are any. On a dataflow that skips zero inputs, with the
    inputs ``x_q``, the compute bounds are those of the first run's non-zero MACs
    (:func:`effective_macs`)."""
    traffic = program_traffic(program, model)
    effective = (effective_macs(model, x_q[:program.batch], [t.macs for t in traffic.layers])
                 if x_q is not None and dataflow(config.dataflow).zero_point_in_gemm else None)
    for k, (entry, t) in enumerate(zip(report["layers"], traffic.layers)):
        entry.update(layer_report(t, config, entry["cycles"], effective and effective[k]))
    roof = report["roofline"] = total_report(traffic, config, cycles_per_run,
                                             effective and sum(effective))
    report["resident_weights"] = resident_weights_report(program, traffic)
    report["kept_outputs"] = kept_outputs_report(program, traffic)
    roof["dram_bytes_per_inference_outputs_through_dram"] = \
        report["kept_outputs"]["dram_bytes_per_inference_through_dram"]
    roof["dram_bytes_per_inference_streamed"] = report["resident_weights"]["dram_bytes_per_inference_streamed"]
    roof["init_dram_bytes"] = report["resident_weights"]["init_dram_bytes"]


def effective_macs(model: QModel, x_q: np.ndarray, macs_per_run: list[int]) -> list[int]:
    """Per layer, of its ``macs_per_run``, the MACs whose input operand is not the input
    zero point (:func:`~celosia.sw.analysis.nonzero_macs`) on the samples ``x_q`` (a run's),
    from the golden model's activations: ``macs_per_run`` times the fraction of the
    layer's MACs on ``x_q`` that are non-zero."""
    tensors = golden_tensors(model, x_q)
    out = []
    for k, (layer, macs) in enumerate(zip(model.layers, macs_per_run)):
        dense = layer.macs * len(x_q)
        if not dense or not layer.is_gemm:
            out.append(macs)
            continue
        x = tensors[model.layer_inputs(k)[0]]
        out.append(round(macs * nonzero_macs(layer, x) / dense))
    return out


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
        keep_outputs: bool = True, program: Program | None = None, on_event=None,
        trace: bool = False, board: dict | None = None, execute: bool = False) -> Result:
    """Quantize float ``x`` (first axis = samples), run it, dequantize the output.

    ``resident_weights``: compile with the initialization graph that keeps the weights
    that fit on chip (default), or stream every weight tile every run (for comparison);
    ``keep_outputs``: keep a layer's output that fits in the ifmap buffer as the next
    layer's input (default), or send every output through DRAM;
    :func:`~celosia.sw.compiler.compile_model`; ``program``: ``model`` already compiled
    (:func:`run_quantized`); ``board``: the board back end's options, ``execute``: perf with
    every instruction executed (:func:`run_quantized`)."""
    x = check_input(model, x, source)
    return run_quantized(model, model.quantize_input(x), config, backend, batch, profile, progress,
                         resident_weights, program=program, keep_outputs=keep_outputs,
                         on_event=on_event, trace=trace, board=board, execute=execute)


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
