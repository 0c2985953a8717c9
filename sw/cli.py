"""``celosia`` command line: thin wrappers over the library.

Every error the library reports (a :class:`~celosia.errors.CelosiaError`, which
includes :class:`~celosia.errors.ConfigError`) is printed as one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from celosia.errors import CelosiaError, CompileError, ConfigError, InputError, ModelError
from celosia.rtl.config import DATAFLOWS, RANGES, AccelConfig, parse_array

BACKENDS = ("golden", "perf", "pysim", "verilator", "board")


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


# -- configuration options -------------------------------------------------------------

def _add_config_args(p: argparse.ArgumentParser):
    p.add_argument("--array", metavar="RxC",
                   help="PE array rows x cols (default 8x8; each 1..64)")
    p.add_argument("--dataflow", metavar="|".join(DATAFLOWS),
                   help="PE-array dataflow: ws (weight stationary, default), os (output stationary), "
                        "rs (row stationary) or feie (input broadcast, zero skipping); "
                        "docs/dataflows.md")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other AccelConfig field, e.g. --set weight_rows=64 "
                        "(fields: " + ", ".join(k for k in RANGES if k not in ("rows", "cols")) + ")")


def _add_calib_args(p: argparse.ArgumentParser):
    p.add_argument("--strict", action="store_true",
                   help="make degenerate calibration data an error instead of a warning: fewer "
                        "than 100 distinct samples, constant data, a tensor whose range collapses "
                        "to one value (docs/numerics.md)")


def _add_compile_args(p: argparse.ArgumentParser):
    p.add_argument("--no-resident-weights", dest="resident_weights", action="store_false",
                   help="stream every weight tile from DRAM in every run instead of loading the "
                        "weights that fit the weight buffer once, by the initialization graph "
                        "(for comparison; docs/compiler.md)")
    p.add_argument("--no-keep-outputs", dest="keep_outputs", action="store_false",
                   help="send every layer's output through DRAM instead of keeping the outputs "
                        "that fit in the ifmap buffer as the next layer's input (for comparison; "
                        "docs/compiler.md)")


def config_from_args(args, **defaults) -> AccelConfig:
    """The config of ``--array`` (default 8x8), ``--dataflow`` (default ws) and ``--set``;
    ``defaults``: values of the fields these options do not give (e.g. a board's
    ``dram_bytes``, or a whole config read from a board)."""
    fields = {"rows": 8, "cols": 8, "dataflow": "ws", **defaults}
    if args.array is not None:
        fields["rows"], fields["cols"] = parse_array(args.array)
    if args.dataflow is not None:
        fields["dataflow"] = args.dataflow
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, not {item!r}")
        key = key.strip().replace("-", "_")
        if key not in RANGES:
            raise ConfigError(f"--set: unknown config field {key!r}; fields: {', '.join(RANGES)}")
        try:
            fields[key] = int(value, 0)
        except ValueError:
            raise ConfigError(f"--set {key}: expected an integer, not {value!r}") from None
    return AccelConfig(**fields)


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such {what} file")
    if not p.is_file():
        raise InputError(f"{path}: not a file; expected a .npy {what} file")
    try:
        with open(p, "rb") as f:
            magic = f.read(len(np.lib.format.MAGIC_PREFIX))
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} file ({e.strerror})") from None
    if magic != np.lib.format.MAGIC_PREFIX:
        raise InputError(f"{path}: not a .npy file (expected one array saved with numpy.save)")
    try:
        x = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise InputError(f"{path}: holds Python objects, not numbers; save a numeric array "
                             f"(e.g. float32)") from None
        raise InputError(f"{path}: not a readable .npy {what} file ({e})") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(f"{path}: not a readable .npy {what} file ({e})") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{path}: not a single array (.npy) {what} file")
    return x


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _load_model(spec: str):
    """An ONNX file or ``zoo:NAME`` (random weights, see :mod:`celosia.sw.zoo`) as a float
    graph, or an int8 ``.tflite`` file or quantized ONNX file (QDQ, QOperator, QONNX) as a
    ready :class:`~celosia.sw.quant.QModel`."""
    from celosia.sw.zoo import resolve
    if not spec.startswith("zoo:") and not Path(spec).is_file():
        raise InputError(f"{spec}: no such file (give an .onnx or int8 .tflite file or zoo:NAME; "
                         f"`celosia zoo` lists the models)")
    if Path(spec).suffix.lower() == ".tflite":
        from celosia.sw.importer import load_tflite
        return load_tflite(spec)
    from celosia.sw.importer.onnx_quant_import import is_quantized_onnx, load_onnx_quant
    if not spec.startswith("zoo:") and is_quantized_onnx(spec):  # QDQ / QOperator / QONNX
        return load_onnx_quant(spec)
    return resolve(spec)


def _is_quantized(model) -> bool:
    """Whether ``model`` (from :func:`_load_model`) is already quantized (needs no calibration)."""
    from celosia.sw.quant import QModel
    return isinstance(model, QModel)


def _random_samples(graph, n: int, what: str) -> np.ndarray:
    """``n`` samples of uniform [0, 1) noise shaped like ``graph``'s input (seed 0)."""
    shape = graph.input_shape if _is_quantized(graph) else graph.tensors[graph.inputs[0]].shape[1:]
    _log(f"{what}: {n} random samples of shape {list(shape)} (uniform [0, 1), seed 0)")
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


def _samples(args, graph, which: str, what: str, random: bool = True) -> np.ndarray | None:
    """The ``--input`` / ``--calib`` array, or (where ``random``: ``--random`` stands for
    this option) ``--random N`` samples; giving both is an error."""
    path = getattr(args, which)
    if random and path and args.random:
        raise InputError(f"--{which} {path} and --random {args.random} both give the {what} "
                         f"samples; give one of them")
    if path:
        return _load_npy(path, what)
    if random and args.random:
        return _random_samples(graph, args.random, what)
    return None


def _write(path: str, what: str, write) -> None:
    """Call ``write(file)`` on ``path`` opened for binary writing, exactly that path (no
    suffix added); an error names the file, e.g. ``/dev/full: cannot write the outputs
    (No space left on device)``."""
    try:
        with open(path, "wb") as f:
            write(f)
    except OSError as e:
        raise CelosiaError(f"{path}: cannot write the {what} ({e.strerror or e})") from None


def _write_text(path: str, what: str, text: str) -> None:
    _write(path, what, lambda f: f.write(text.encode()))


def _quantize(model: str, graph, calib, calib_source: str, strict: bool = False):
    """``quantize_graph`` with its errors naming the model or the calibration data, and
    each :class:`~celosia.sw.quant.CalibrationWarning` printed as one ``warning:`` line
    naming the calibration data (an error with ``strict``: ``--strict``)."""
    from celosia.sw.quant import CalibrationWarning, quantize_graph
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            qmodel = quantize_graph(graph, calib, on_degenerate="error" if strict else "warn")
    except InputError as e:
        raise InputError(f"{calib_source}: {e}") from None
    except ModelError as e:
        raise ModelError(f"{model}: {e}") from None
    for w in caught:
        if issubclass(w.category, CalibrationWarning):
            _log(f"warning: {calib_source}: {w.message} (--strict makes this an error)")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return qmodel


def _compile(model: str, qmodel, config: AccelConfig, args):
    """The program of ``qmodel`` for ``config`` (``--batch``, ``--no-resident-weights``,
    ``--no-keep-outputs``), proven to map onto the buffers and, with one run's data, to
    fit ``dram_bytes``; errors name the model."""
    from celosia.sw.compiler import compile_model
    try:
        program = compile_model(qmodel, config, batch=args.batch, resident_weights=args.resident_weights,
                                keep_outputs=args.keep_outputs)
        program.check_dram()
    except CompileError as e:
        raise CompileError(f"{model}: {e}") from None
    return program


def _progress(prefix: str):
    last = [0.0]

    def show(done, total):
        now = time.monotonic()
        if done == total or now - last[0] > 1.0:
            last[0] = now
            _log(f"{prefix}: {done}/{total} runs")
    return show


class _LiveProgress:
    """``celosia run`` on verilator, stderr a terminal: a rich status line with the
    inference, the layer just finished and the simulated cycles per second, fed by the
    driver's ``on_event`` (the harness's node snapshots); a no-op otherwise."""

    def __init__(self, show: bool):
        self._progress = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(stderr=True), transient=True)
        self._task, self._t0 = None, time.perf_counter()
        self._run, self._layer, self._cycles, self._before = None, "-", 0, 0

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: dict):
        if self._progress is None or event["run"] is None:
            return
        if self._task is None:
            self._task = self._progress.add_task("simulating", total=event["runs"])
        if event["run"] != self._run:  # the next inference: its cycles count from 0
            self._run, self._layer, self._before = event["run"], "-", self._before + self._cycles
        self._cycles, self._layer = event["cycles"], event["layer"] or self._layer
        rate = (self._before + self._cycles) / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, completed=event["run"],
                              description=f"image {event['run'] + 1}/{event['runs']}, after layer "
                                          f"{self._layer}, {rate / 1e6:.2f} M cycles/s")


# -- commands ----------------------------------------------------------------------------

def _board_options(args) -> dict | None:
    """``--backend board``: the driver's board options (``--port``, ``--baud``)."""
    if args.backend != "board":
        return None
    if not args.port:
        raise InputError("--backend board needs --port PORT, the board's serial port (e.g. "
                         "/dev/ttyUSB0; docs/boards.md)")
    return {"port": args.port, "baud": args.baud}


def _run_config(args, board: dict | None) -> AccelConfig:
    """The config of a run; on a board, the board's (its ``INFO``) where ``--array``,
    ``--dataflow`` and ``--set`` do not say otherwise (the run then stops, in one line, if
    they ask for another config than the bitstream's)."""
    if board is None:
        return config_from_args(args)
    from celosia.sim.board import board_info
    info = board_info(board["port"], board["baud"])
    if info["config"] is None:
        raise InputError(f"{board['port']}: the board's bitstream reports no configuration this "
                         f"version of Celosia knows; rebuild it with `celosia build`")
    return config_from_args(args, **info["config"].to_dict())


def cmd_run(args) -> int:
    from celosia.sw.driver import pgo_training_job, run
    from celosia.sw.driver.driver import check_input

    board = _board_options(args)
    config = _run_config(args, board)
    if args.trace and args.backend not in ("perf", "pysim", "verilator"):
        raise InputError(f"--trace {args.trace}: needs a back end that measures cycles "
                         "(--backend perf, pysim or verilator)")
    for out in (args.out, args.report, args.trace):  # fail before a long run, not after it
        if out and not Path(out).resolve().parent.is_dir():
            raise InputError(f"{out}: the folder {str(Path(out).parent)!r} does not exist")
    graph = _load_model(args.model)  # a QModel already for an int8 .tflite file
    x = _samples(args, graph, "input", "input")
    if x is None:
        raise InputError("give the samples to run: --input X.npy, or --random N for N random samples")
    source = args.input or f"--random {args.random}"
    if _is_quantized(graph):
        if args.calib:
            _log(f"warning: {args.model} is already quantized; --calib is ignored")
        qmodel = graph
    else:
        calib = _samples(args, graph, "calib", "calibration", random=False)
        if calib is None:
            _log(f"warning: no --calib given; calibrating the quantizer on the input ({source})")
            calib = x
        qmodel = _quantize(args.model, graph, calib, args.calib or source, args.strict)
    x = _raw_input(qmodel, x, source) if args.raw else check_input(qmodel, x, source)
    program = _compile(args.model, qmodel, config, args)
    _log(f"{args.model}: {len(qmodel.layers)} layers, {qmodel.macs_per_sample()} MACs per sample; "
         f"running {len(x)} samples on {args.backend} ({config.array} {config.dataflow})")
    if args.backend == "verilator":
        from celosia.sim import verilator
        t0 = time.perf_counter()
        _log("building the Verilator model (cached after the first time) ...")
        verilator.build(config, training_job=pgo_training_job)
        _log(f"  ready in {time.perf_counter() - t0:.1f} s")
    live = _LiveProgress(args.backend == "verilator" and sys.stderr.isatty())
    options = dict(backend=args.backend, batch=args.batch, progress=_progress("simulating"),
                   resident_weights=args.resident_weights, keep_outputs=args.keep_outputs,
                   program=program, on_event=live, trace=bool(args.trace), board=board)
    with live:
        if args.raw:
            from celosia.sw.driver import run_quantized
            result = run_quantized(qmodel, x, config, **options)
        else:
            result = run(qmodel, x, config, source=source, **options)
    if args.out:  # np.save on a file object: exactly args.out, no ".npy" appended
        _write(args.out, "outputs",
               lambda f: np.save(f, result.y_q if args.raw else result.y.astype(np.float32)))
    report = result.report
    if args.report:
        _write_text(args.report, "report", json.dumps(report, indent=2, default=_json_default))
    if args.trace:
        from celosia.sw.driver.driver import trace_events
        _write_text(args.trace, "trace", json.dumps(result.trace or trace_events(report)))
    _print_summary(report)
    return 0


def _raw_input(model, x: np.ndarray, source: str) -> np.ndarray:
    """``--raw``: ``x`` as int8 ``[samples, in_features]`` (integers in -128..127 already in the
    model's input quantization), or an :class:`InputError` naming ``source``."""
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0 or int(np.prod(x.shape[1:], dtype=np.int64)) != model.in_features:
        raise InputError(f"{source}: --raw input must be [samples, {model.in_features} values], "
                         f"not {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.integer) or x.min() < -128 or x.max() > 127:
        raise InputError(f"{source}: --raw input must be int8 values (-128..127), not {x.dtype}"
                         + (f" in {x.min()}..{x.max()}" if np.issubdtype(x.dtype, np.number) else ""))
    return x.astype(np.int8).reshape(len(x), -1)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _print_summary(report: dict):
    print(f"backend {report['backend']}: {report['samples']} samples, {report['macs']} MACs; "
          f"quantization from {report['source']}")
    if report.get("cycles") is not None:
        print(f"cycles {report['cycles']} ({report['cycles_per_run']} per run of {report['batch']}), "
              f"utilization {report['utilization']:.2%}, DRAM read {report['dram_bytes_read']} B, "
              f"written {report['dram_bytes_written']} B")
        c = report["cycles"] or 1
        print(f"engines: load busy {report['load_busy']} ({report['load_busy'] / c:.0%}), compute "
              f"busy {report['compute_busy']} ({report['compute_busy'] / c:.0%}), store busy "
              f"{report['store_busy']} ({report['store_busy'] / c:.0%}); load and compute at once "
              f"{report['load_compute_overlap']} ({report['load_compute_overlap'] / c:.0%})"
              + (f"; MAC cycles {report['mac_cycles']}, skipped for zero inputs {report['zero_skips']}"
                 if report.get("mac_cycles") or report.get("zero_skips") else ""))
        w = _name_width(report)
        print(f"{'layer':<{w}}{'op':<6}{'MACs':>10}{'cycles':>10}{'compute':>10}{'util':>8}")
        for layer in report["layers"]:
            # a back end without per-node snapshots (board) has no per-layer figures
            print(f"{layer['name']:<{w}}{layer['op']:<6}{layer['macs']:>10}{_fmt(layer['cycles']):>10}"
                  f"{_fmt(layer['compute_cycles']):>10}{_fmt(layer['utilization'], '.1%'):>8}")
    _print_roofline(report)


def _name_width(report: dict) -> int:
    """Width of the layer-name column: the longest name (at least 16 wide) and a space."""
    return max([15] + [len(layer["name"]) for layer in report["layers"]]) + 1


def _fmt(value, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _print_roofline(report: dict):
    """The per-layer roofline table and the totals (``report["roofline"]``)."""
    roof = report.get("roofline")
    if roof is None:
        return
    print(f"roofline, one run of {roof['batch']} sample(s): peak {roof['peak_macs_per_cycle']} "
          f"MACs/cycle, {roof['peak_bytes_per_cycle']} DRAM B/cycle")
    w = _name_width(report)
    print(f"{'layer':<{w}}{'MACs':>12}{'DRAM B':>12}{'B/MAC':>8}{'reread i/w':>12}  {'bound':<10}"
          f"{'bound cyc':>10}{'cycles':>10}{'eff':>7}")

    def row(name, e):
        rr = e["reread"]
        reread = f"{_fmt(rr['ifmap'], '.1f')}/{_fmt(rr['weights'], '.1f')}"
        print(f"{name:<{w}}{e['macs_per_run']:>12}{e['dram_read_bytes'] + e['dram_write_bytes']:>12}"
              f"{_fmt(e['dram_bytes_per_mac'], '.2f'):>8}{reread:>12}  {e['bound']:<10}"
              f"{e['bound_cycles']:>10}{_fmt(e['cycles']):>10}{_fmt(e['roofline_efficiency'], '.1%'):>7}")

    for layer in report["layers"]:
        row(layer["name"], layer)
    row("total", roof)
    per_inference = roof["dram_bytes_per_inference"]
    digits = 0 if per_inference == int(per_inference) else 1
    print(f"DRAM bytes per inference {per_inference:.{digits}f} (per run: read {roof['dram_read_bytes']} B "
          f"= ifmap {roof['dram_ifmap_bytes']} + weights {roof['dram_weight_bytes']} + params "
          f"{roof['dram_param_bytes']} + instructions {roof['dram_fetch_bytes']}; written "
          f"{roof['dram_write_bytes']} B)")
    _print_resident(report)
    _print_kept(report)


def _print_resident(report: dict):
    """Which weights stay on chip, what the initialization graph costs and what it saves."""
    res = report.get("resident_weights")
    if not res:
        return
    if not res["enabled"]:
        print("weights on chip: none (every weight tile streams from DRAM in every run)")
        return
    init = report.get("init")
    measured = (f"; measured: {init['cycles']} cycles, {init['dram_bytes_read']} B read"
                f" in {init['runs']} run(s)" if init else "")
    print(f"weights on chip: {len(res['layers'])} layer(s), {res['weight_rows']} of "
          f"{res['weight_rows_config']} weight-buffer rows; the initialization graph reads "
          f"{res['init_dram_bytes']} B once per job{measured}")
    print(f"DRAM bytes per inference {res['dram_bytes_per_inference']:g} with them, "
          f"{res['dram_bytes_per_inference_streamed']:g} with every weight streamed")


def _print_kept(report: dict):
    """Which layer outputs stay on chip as the next layer's input and what that saves."""
    kept = report.get("kept_outputs")
    if not kept:
        return
    layers = ", ".join(kept["layers"]) if kept["enabled"] else "none"
    print(f"outputs kept on chip: {layers}; DRAM bytes per inference "
          f"{kept['dram_bytes_per_inference']:g}, {kept['dram_bytes_per_inference_through_dram']:g} "
          f"with every output through DRAM")


def cmd_verilog(args) -> int:
    from celosia.sim.verilog import generate
    config = config_from_args(args)
    _log(f"generating Verilog for {config.array} {config.dataflow} ...")
    text = generate(config, top="sim_top" if args.with_dram else "accelerator")
    _write_text(args.output, "Verilog", text)
    _log(f"wrote {args.output} ({len(text.splitlines())} lines)")
    return 0


def cmd_build(args) -> int:
    from celosia.boards.build import board, build, report_table
    b = board(args.board)  # an unknown board fails before anything else
    config = config_from_args(args, **b.defaults)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{args.output}: not a folder; -o takes the output folder")
    if args.program and args.synth_only:
        raise InputError("--program needs a bitstream; leave out --synth-only")
    report = build(b.name, config, out, baud=args.baud, program=args.program, synth_only=args.synth_only,
                   log=_log, clock_mhz=args.clock_mhz)
    print(report_table(report))
    made = [out / report[k] for k in ("bitstream", "netlist") if report[k]]
    _log(f"wrote {', '.join(map(str, made))} and {out / 'report.json'}")
    return 0


def cmd_synth(args) -> int:
    from celosia.boards.build import board
    from celosia.boards.synth_sweep import plot, print_table, synth_sweep, write_table
    from celosia.sw.sweep_grid import parse_arrays, parse_dataflows
    b = board(args.board)  # an unknown board fails before anything else
    b.platform_class()     # so does a missing celosia[boards] extra
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{args.output}: not a folder; -o takes the output folder")
    arrays = parse_arrays(args.array or "1x1,2x2,4x4")
    flows = parse_dataflows(args.dataflow or ",".join(DATAFLOWS))
    configs = []
    for rows, cols in arrays:
        for flow in flows:
            args.array, args.dataflow = f"{rows}x{cols}", flow
            configs.append(config_from_args(args, **b.defaults))   # every point checked up front
    _log(f"synth: {len(configs)} point(s) ({len(arrays)} array(s) x {len(flows)} dataflow(s)) for the "
         f"{b.name}, {'synthesis, place and route' if args.pnr else 'synthesis only'}")
    out.mkdir(parents=True, exist_ok=True)
    rows = synth_sweep(b.name, configs, out, pnr=args.pnr, log=_log)
    write_table(out / "synth.csv", rows)
    plots = plot(out, rows, b.capacity)
    print_table(rows, b.capacity)
    _log(f"wrote {out / 'synth.csv'} and {', '.join(str(out / f) for f in plots)}")
    return 0


def cmd_compile(args) -> int:
    config = config_from_args(args)
    graph = _load_model(args.model)
    if _is_quantized(graph):
        qmodel = graph
    else:
        calib = _samples(args, graph, "calib", "calibration")
        if calib is None:
            raise InputError("give calibration samples: --calib C.npy, or --random N for N random samples")
        qmodel = _quantize(args.model, graph, calib, args.calib or f"--random {args.random}", args.strict)
    t0 = time.perf_counter()
    program = _compile(args.model, qmodel, config, args)
    _log(f"compiled {len(program.nodes)} layers into {program.n_insns} instructions "
         f"in {time.perf_counter() - t0:.1f} s")
    text = _program_summary(program, qmodel) if args.summary else program.disassemble()
    if args.output:
        _write_text(args.output, "program", text + "\n")
    else:
        print(text)
    return 0


def _program_summary(program, qmodel=None) -> str:
    """Per-layer instruction counts, MACs and tiling, the DRAM footprint and (given the
    model) where its quantization came from and each layer's parameters."""
    lines = [f"{'layer':<24}{'op':<9}{'MACs':>14}{'insns':>10}  tiling"]
    for node in program.nodes:
        tiles = " ".join(f"{k}={v}" for k, v in node.tiles.items())
        lines.append(f"{node.name:<24}{node.op:<9}{node.macs:>14}{len(node.insns):>10}  {tiles}")
    lines.append(f"total: {program.n_insns} instructions, {sum(n.macs for n in program.nodes)} MACs "
                 f"per run of {program.batch}; DRAM: {len(program.static)} B weights + parameters, "
                 f"{program.scratch_bytes} B scratch, {program.input_bytes} B in, "
                 f"{program.output_bytes} B out per run")
    if program.init is not None:
        res = program.resident
        lines.append(f"initialization graph: {len(program.init.insns)} LOADs keep the weights of "
                     f"{len(res['layers'])} layer(s) in {res['rows']} of {program.config.weight_rows} "
                     f"weight-buffer rows; each run reads {res['saved_bytes']} B less")
    if qmodel is not None:
        lines += _quant_lines(qmodel)
    return "\n".join(lines)


def _quant_lines(qmodel) -> list[str]:
    """The summary's quantization table: source format, then per layer scales / zero points."""
    def span(v, fmt):
        return "-" if v is None else (format(v[0], fmt) if v[0] == v[1] else
                                      f"{format(v[0], fmt)}..{format(v[1], fmt)}")

    lines = [f"quantization from {qmodel.source}"
             + (f" ({qmodel.meta['source_file']})" if "source_file" in qmodel.meta else ""),
             f"{'layer':<24}{'in scale/zp':>18}{'out scale/zp':>18}{'weight scales':>22}"
             f"{'shift':>9}  clamp"]
    for q in qmodel.quant_summary():
        w = span(q["w_scale"], ".3g") + (" /ch" if q["per_channel"] else "")
        lines.append(f"{q['name'][:23]:<24}{q['in_scale']:>12.4g}/{q['in_zp']:<5}"
                     f"{q['out_scale']:>12.4g}/{q['out_zp']:<5}{w:>22}{span(q['shift'], 'd'):>9}  "
                     f"{q['clamp'][0]}..{q['clamp'][1]}")
    return lines


def cmd_zoo(args) -> int:
    from celosia.sw.zoo import ZOO, build, describe
    print(f"{'model':<18}{'input':>12}{'layers':>8}{'MACs':>16}{'params':>14}")
    for name in ZOO:
        graph = build(name)
        d = describe(graph)
        shape = "x".join(str(v) for v in graph.tensors[graph.inputs[0]].shape[1:])
        print(f"zoo:{name:<14}{shape:>12}{len(graph.nodes):>8}{d['macs']:>16,}{d['params']:>14,}")
    print("(random weights; run with e.g. `celosia compile zoo:resnet18 --random 1 --set "
          "dram_bytes=33554432 --summary`)")
    return 0


def cmd_demo(args) -> int:
    from celosia.sw.demo import MODELS, demo
    config = config_from_args(args)
    models = tuple(MODELS) if args.model == "all" else (args.model,)
    return demo(config, backend=args.backend, samples=args.samples, models=models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="celosia", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="quantize a float ONNX model (or take an int8 .tflite or quantized "
                                   "ONNX one), run it, "
                                   "write outputs and a report")
    p.add_argument("model", help="float ONNX model, int8 .tflite or quantized ONNX model, or zoo:NAME "
                                 "(random weights; `celosia zoo` lists them)")
    p.add_argument("--input", help=".npy input, first axis = samples")
    p.add_argument("--raw", action="store_true",
                   help="--input holds int8 values in the model's input quantization; --out gets "
                        "the int8 output unchanged (not dequantized)")
    p.add_argument("--random", type=_positive_int, metavar="N",
                   help="instead of --input: N random samples (uniform [0, 1), seed 0)")
    p.add_argument("--calib", help=".npy calibration samples (default: the input, with a warning)")
    p.add_argument("--backend", choices=BACKENDS, default="golden",
                   help="golden (NumPy, no cycles), perf (the cycle model: the RTL's cycles and "
                        "counters, fast), pysim (Amaranth simulator), verilator or board (an FPGA "
                        "running `celosia build`'s bitstream, at --port; default golden)")
    p.add_argument("--port", help="--backend board: the board's serial port (e.g. /dev/ttyUSB0)")
    p.add_argument("--baud", type=_positive_int, default=115200,
                   help="--backend board: the bitstream's baud rate (default 115200)")
    p.add_argument("--batch", type=_positive_int, default=1,
                   help="samples per hardware run (default 1)")
    p.add_argument("--out", help="write dequantized float32 outputs to exactly this file (.npy format)")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--trace", metavar="OUT.json",
                   help="write a Chrome / Perfetto trace of the first inference (one track per "
                        "engine; perf and verilator: one slice per instruction, pysim: one per layer; "
                        "open it in ui.perfetto.dev)")
    _add_calib_args(p)
    _add_compile_args(p)
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("verilog", help="write synthesizable Verilog of the accelerator")
    p.add_argument("-o", "--output", required=True, help="Verilog file to write")
    p.add_argument("--with-dram", action="store_true",
                   help="include the simulation DRAM model (the design the simulators run)")
    _add_config_args(p)
    p.set_defaults(func=cmd_verilog)

    p = sub.add_parser("build", help="build a bitstream of the accelerator with its UART host bridge "
                                     "for an FPGA board (YoWASP tools; docs/boards.md)")
    p.add_argument("--board", required=True, metavar="ulx3s-85f|icebreaker",
                   help="the board: ulx3s-85f (ECP5-85F) or icebreaker (iCE40UP5K)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder: the bitstream, the synthesized netlist, report.json, logs")
    p.add_argument("--baud", type=_positive_int, default=115200,
                   help="UART baud rate of the host bridge (default 115200)")
    p.add_argument("--clock-mhz", type=_positive_float, default=None, metavar="MHZ",
                   help="run the accelerator at this clock from a PLL (ECP5 boards; the fastest "
                        "the PLL makes not above it) instead of the board's oscillator, e.g. "
                        "below a design's Fmax (docs/boards.md)")
    p.add_argument("--program", action="store_true",
                   help="then load the bitstream onto the attached board with openFPGALoader")
    p.add_argument("--synth-only", action="store_true",
                   help="stop after synthesis: resource counts from Yosys and the fit check, no "
                        "place and route or bitstream (minutes instead of tens of minutes)")
    _add_config_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("synth", help="resources (and Fmax with --pnr) of board builds across array "
                                     "shapes and dataflows: synth.csv and a plot (docs/boards.md)")
    p.add_argument("--board", required=True, metavar="ulx3s-85f|icebreaker",
                   help="the board whose device and top are synthesized")
    p.add_argument("--array", metavar="RxC,...", help="array shapes, comma-separated (default 1x1,2x2,4x4)")
    p.add_argument("--dataflow", metavar="D1,D2", help="dataflows, comma-separated (default all four)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other AccelConfig field, the same for every point (the board's "
                        "dram_bytes and ifmap_rows unless given)")
    p.add_argument("--pnr", action="store_true",
                   help="also place and route each point for its Fmax (minutes per point, against "
                        "under a minute for synthesis)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder: synth.csv, synth.png/.svg, points/ (resumes what is there)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("compile", help="compile a model and print the program (disassembly)")
    p.add_argument("model", help="float ONNX model, int8 .tflite or quantized ONNX model (needs no "
                                 "--calib), or zoo:NAME "
                                 "(random weights; `celosia zoo` lists them)")
    p.add_argument("--calib", help=".npy calibration samples, first axis = samples")
    p.add_argument("--random", type=_positive_int, metavar="N",
                   help="instead of --calib: N random calibration samples (uniform [0, 1), seed 0)")
    p.add_argument("--summary", action="store_true",
                   help="print per-layer instruction counts and the DRAM footprint, not the disassembly")
    p.add_argument("--batch", type=_positive_int, default=1, help="samples per hardware run (default 1)")
    p.add_argument("-o", "--output", help="write the disassembly (or summary) here instead of stdout")
    _add_calib_args(p)
    _add_compile_args(p)
    _add_config_args(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("zoo", help="list the model zoo (layer shapes of published CNNs) with MAC "
                                   "and parameter totals")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("demo", help="run the bundled digits MLP, CNN and residual CNN on the "
                                    "simulated hardware")
    p.add_argument("--backend", choices=[b for b in BACKENDS if b != "board"], default="verilator",
                   help="back end for the hardware runs (default verilator)")
    p.add_argument("--samples", type=_positive_int, default=32, help="held-out images run on the hardware")
    p.add_argument("--model", choices=("all", "digits_mlp", "digits_cnn", "digits_resnet",
                                       "digits_cnn_tflite", "digits_resnet_tflite"),
                   default="all", help="which bundled model (default: the three ONNX models; "
                                       "digits_cnn_tflite / digits_resnet_tflite: the int8 "
                                       ".tflite CNNs against LiteRT)")
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)

    from celosia.sw.sweep import add_parser as add_sweep_parser
    add_sweep_parser(sub, _positive_int)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    try:
        return args.func(args)
    except CelosiaError as e:
        msg = " ".join(str(e).split())  # always one line
        print(f"celosia {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. an output file in a missing folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"celosia {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
