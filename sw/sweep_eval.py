"""One design point of ``celosia sweep`` evaluated into result rows: :func:`evaluate_point`.

A point (:class:`~celosia.sw.sweep_grid.Point`) names a model, a configuration and a back
end. Its evaluation loads the model (cached per process: a worker quantizes each model
once, whatever the number of configs it runs it on), runs one random sample on the back
end through the driver (:func:`celosia.sw.driver.run`, the same call as ``celosia run
MODEL --random 1``) and turns the report into one row per layer (:data:`ROW_FIELDS`).

Models:

* ``zoo:NAME``: the zoo's layer shapes with random weights (:mod:`celosia.sw.zoo`);
* an ``.onnx`` file (float, quantized here) or an int8 ``.tflite`` file;
* a SCALE-Sim topology ``.csv`` (:mod:`celosia.sw.sweep_topology`): each line is a
  single-layer model, run on its own; its row is the layer of that name.

Programs: a point's program is compiled once per process for all the points that differ
only in fields the compiler does not read (:data:`~celosia.sw.compiler.RUN_ONLY_FIELDS`:
bus width, DRAM size, latency and bandwidth, PPU lanes): the last
:data:`PROGRAM_CACHE` models' programs are kept (:func:`programs_for`), and a sweep over those fields
compiles each model once per array and dataflow.

Float models are quantized on the sample they run (uniform ``[0, 1)``, seed 0), as
``celosia run --random 1`` does without ``--calib``. The calibration warning about so few
samples is not shown: a sweep measures cycles and DRAM traffic, which do not depend on
the quantization, except FEIE's zero skips (they depend on how many activations are zero).

Back ends:

* ``verilator``: cycles per layer from the hardware counters (the driver's per-layer
  figures, ``report["layers"][i]["cycles"]``), utilization, zero skips;
* ``golden``: MACs and DRAM bytes (from the compiled program's instructions,
  :mod:`celosia.sw.analysis`, which count what the hardware's counters count) and the
  energy estimate, but no cycles: ``cycles``, ``compute_cycles``, ``utilization`` are
  ``None`` (empty in the CSV) and the plots that need them leave the point out;
* ``perf`` (the default): the cycle model (:mod:`celosia.sim.perf`), the same per-layer
  figures as ``verilator`` (the counters at each layer's node boundary), equal to the RTL's.

Energy (:func:`energy`) is an *estimate* from the counters with Eyeriss's normalized
per-access costs (Chen et al., ISCA 2016: one RF access = 1): see :data:`ENERGY_COSTS`.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from celosia.errors import CelosiaError, ConfigError
from celosia.rtl.config import AccelConfig
from .sweep_grid import Point

__all__ = ["ROW_FIELDS", "ENERGY_COSTS", "energy", "buffer_bytes", "evaluate_point", "timed_point", "timed_points",
           "load_model", "programs_for", "PROGRAM_CACHE"]

#: The columns of a result row, in order (the swept ``--set`` fields follow ``cols``).
ROW_FIELDS = ("point", "model", "backend", "dataflow", "rows", "cols", "layer", "op", "macs",
              "cycles", "compute_cycles", "utilization", "dram_bytes", "dram_read_bytes",
              "dram_write_bytes", "bound", "energy", "zero_skips")

#: Normalized energy per access (Eyeriss, Chen et al. ISCA 2016, table IV: the cost of one
#: access relative to a MAC's register-file access) and the counter each is charged to:
#:
#: * ``dram`` (200): every DRAM byte read or written (``dram_read_bytes + dram_write_bytes``);
#: * ``buffer`` (6, the global buffer): twice per DRAM byte (a byte a LOAD brings in is
#:   written into the ifmap / weight / parameter buffer and read out once; a byte a STORE
#:   sends is written by the PPU and read by the DMA). No counter sees the operand re-reads
#:   of the buffers by the array, so this term is a lower bound;
#: * ``array`` (2, inter-PE): one operand hop per MAC (``macs``);
#: * ``rf`` (1): one register-file access per MAC (``macs``).
#:
#: ``energy = 200 * dram + 6 * 2 * dram + 2 * macs + 1 * macs`` in units of one RF access.
ENERGY_COSTS = {"dram": 200, "buffer": 6, "array": 2, "rf": 1}

def energy(macs: int, dram_bytes: int) -> float:
    """The :data:`ENERGY_COSTS` estimate of ``macs`` MACs moving ``dram_bytes`` DRAM bytes,
    in units of one register-file access."""
    c = ENERGY_COSTS
    return float(c["dram"] * dram_bytes + c["buffer"] * 2 * dram_bytes
                 + (c["array"] + c["rf"]) * macs)


def buffer_bytes(config: AccelConfig) -> int:
    """On-chip buffer bytes of ``config``: ifmap (``ifmap_rows * rows``), weight
    (``weight_rows * cols``), psum (``psum_rows * cols * 4``) and PPU parameters
    (``param_rows * cols * 9``)."""
    c = config
    return (c.ifmap_rows * c.rows + c.weight_rows * c.cols + c.psum_rows * c.cols * 4
            + c.param_rows * c.cols * 9)


_CACHE: dict[tuple[str, str], list] = {}


def _sample(shape) -> np.ndarray:
    """One uniform ``[0, 1)`` sample (seed 0) shaped ``shape``: ``celosia run --random 1``."""
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def _graphs(spec: str) -> list:
    """The graph(s) or int8 model of a model spec, unquantized."""
    from .zoo import ZOO, resolve
    p = Path(spec)
    if not spec.startswith("zoo:"):
        if not p.is_file():
            raise ConfigError(f"model {spec!r}: no such file (give zoo:NAME (one of "
                              f"{', '.join(ZOO)}), an .onnx, .tflite or SCALE-Sim topology .csv file)")
        suffix = p.suffix.lower()
        if suffix == ".csv":
            from .sweep_topology import topology_graphs
            return topology_graphs(p)
        if suffix == ".tflite":
            from .importer import load_tflite
            return [load_tflite(p)]
    return [resolve(spec)]


def load_model(spec: str, digest: str = "") -> list[tuple[object, np.ndarray]]:
    """``[(qmodel, x)]`` of a model spec: each int8 model (one, or one per line of a topology
    CSV) with the float sample it runs on. Cached per process by ``(spec, digest)``."""
    key = (spec, digest)
    if key not in _CACHE:
        from .quant import CalibrationWarning, QModel, quantize_graph
        out = []
        for g in _graphs(spec):
            if isinstance(g, QModel):
                out.append((g, _sample(g.input_shape)))
            else:
                x = _sample(g.tensors[g.inputs[0]].shape[1:])
                with warnings.catch_warnings():  # one sample, on purpose: see the module docstring
                    warnings.simplefilter("ignore", CalibrationWarning)
                    out.append((quantize_graph(g, x), x))
        _CACHE[key] = out
    return _CACHE[key]


#: The models' program sets :func:`programs_for` keeps per process (the most recently used).
PROGRAM_CACHE = 4

_PROGRAMS: "OrderedDict[tuple, list]" = OrderedDict()


def programs_for(qmodels: list, config: AccelConfig, key: tuple = ()) -> list:
    """Each of ``qmodels`` (the graphs of one model, :func:`load_model`) compiled for
    ``config`` (:func:`~celosia.sw.compiler.compile_model`, defaults), reusing the programs
    of an earlier call with the same ``key`` (what names the model: spec, digest) and the
    same :func:`~celosia.sw.compiler.program_key` (the same programs,
    :meth:`~celosia.sw.compiler.Program.with_config`). A model's programs are kept together,
    so a topology with more layers than :data:`PROGRAM_CACHE` still compiles each once."""
    from .compiler import compile_model, program_key
    k = (key, tuple(map(id, qmodels)), program_key(config))
    if k in _PROGRAMS:
        _PROGRAMS.move_to_end(k)
    else:   # (the models kept with their programs: their ids stay their own)
        _PROGRAMS[k] = (qmodels, [compile_model(q, config) for q in qmodels])
        while len(_PROGRAMS) > PROGRAM_CACHE:
            _PROGRAMS.popitem(last=False)
    return [program.with_config(config) for program in _PROGRAMS[k][1]]


def _layer_row(entry: dict, base: dict, pe: int) -> dict:
    dram_read, dram_write = entry.get("dram_read_bytes"), entry.get("dram_write_bytes")
    dram = None if dram_read is None else dram_read + dram_write
    cycles = entry.get("cycles")
    return {**base, "layer": entry["name"], "op": entry["op"], "macs": entry["macs"],
            "cycles": cycles, "compute_cycles": entry.get("compute_cycles"),
            "utilization": (round(entry["macs"] / (cycles * pe), 6) if cycles else None),
            "dram_bytes": dram, "dram_read_bytes": dram_read, "dram_write_bytes": dram_write,
            "bound": entry.get("bound"),
            "energy": None if dram is None else energy(entry["macs"], dram),
            "zero_skips": entry.get("zero_skips")}


def evaluate_point(point: Point) -> list[dict]:
    """The result rows of ``point``, one per layer (:data:`ROW_FIELDS` plus the swept
    fields); a :class:`~celosia.errors.CelosiaError` when the point cannot be evaluated
    (its configuration is impossible, the model cannot be read or does not compile or
    fit the DRAM of this configuration)."""
    from .driver import run
    if point.error:
        raise ConfigError(point.error)
    config = AccelConfig.from_dict(point.fields)
    f = point.fields
    base = {"point": point.key, "model": point.model, "backend": point.backend,
            "dataflow": f["dataflow"], "rows": f["rows"], "cols": f["cols"],
            **point.swept_values}
    rows = []
    models = load_model(point.model, point.digest)
    programs = programs_for([q for q, _ in models], config, (point.model, point.digest))
    for (qmodel, x), program in zip(models, programs):
        report = run(qmodel, x, config, backend=point.backend, source="random sample",
                     program=program).report
        if report.get("roofline") is None and report.get("roofline_note"):
            raise CelosiaError(report["roofline_note"])
        rows += [_layer_row(entry, base, config.rows * config.cols) for entry in report["layers"]]
    return rows


def timed_point(point: Point) -> dict:
    """:func:`evaluate_point` as the sweep's workers run it: never raises. Returns
    ``{"key", "rows", "wall_seconds", "error"}``, ``error`` a one-line message (the
    :class:`~celosia.errors.CelosiaError`'s text, or the type and text of any other
    exception) or ``None``."""
    t0 = time.perf_counter()
    try:
        rows, error = evaluate_point(point), None
    except CelosiaError as e:
        rows, error = [], " ".join(str(e).split())
    except Exception as e:  # noqa: BLE001 - one bad point must not stop the sweep
        rows, error = [], f"{type(e).__name__}: {' '.join(str(e).split())}"
    return {"key": point.key, "rows": rows, "wall_seconds": round(time.perf_counter() - t0, 4),
            "error": error}


def timed_points(points: list[Point]) -> list[dict]:
    """:func:`timed_point` of each of ``points``, in order, in this process (a sweep
    worker's batch: points that share a compiled program)."""
    return [timed_point(p) for p in points]
