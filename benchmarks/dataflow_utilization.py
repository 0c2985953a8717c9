"""PE-array utilization of every implemented dataflow on cropped AlexNet / VGG-16 layers.

    python benchmarks/dataflow_utilization.py [--array 8x8] [--samples 2]
                                              [--dataflows ws,os,feie]
                                              [--layers alexnet.conv1,vgg16.conv4_1]

Runs single layers of AlexNet and VGG-16 (random weights; the layer's kernel, stride,
padding and groups are read from the model zoo, :mod:`celosia.sw.zoo`) on the Verilator
model of the array, once per dataflow of ``celosia.rtl.config.DATAFLOWS``
(a dataflow added to the registry, rtl/dataflows.py, shows up here by itself). The feature maps and channel
counts are cropped so that one RTL simulation takes seconds:

=================  =============================================  ======================
layer              original (zoo)                                 cropped (run here)
=================  =============================================  ======================
``alexnet.conv1``  227x227x3 -> 55x55x96, 11x11 s4 p0             27x27x3 -> 5x5x16
``alexnet.conv2``  27x27x96 -> 27x27x256, 5x5 s1 p2, groups 2     7x7x32 -> 7x7x32 (g2)
``alexnet.conv3``  13x13x256 -> 13x13x384, 3x3 s1 p1              6x6x32 -> 6x6x32
``vgg16.conv1_1``  224x224x3 -> 224x224x64, 3x3 s1 p1             12x12x3 -> 12x12x16
``vgg16.conv4_1``  28x28x256 -> 28x28x512, 3x3 s1 p1              6x6x64 -> 6x6x64
``alexnet.fc6``    fc 9216 -> 4096 (batch 1)                      fc 256 -> 64
=================  =============================================  ======================

(the script prints this table from the zoo graphs, with the MACs of both). Inputs are
uniform in [-1, 1) with the calibration range pinned to [-1, 127/128] (input zero point
0, as in ``benchmarks/feie_density.py``), so almost no input is an int8 zero: FEIE skips
little beyond the zero-padded borders. Every output is checked against the golden
model; the script exits with status 1 if any differs, or if a run fails (the error is
printed in the table and the other runs go on).

Printed per (layer, dataflow), summed over the samples: total cycles (the accelerator's
cycle counter: DMA, compute, PPU, store), array-busy cycles (``compute_busy``), DMA
load-busy cycles (``load_busy``, for reference: it bounds the total on these small
layers), MACs, utilization ``MACs / (rows * cols * cycles)``, compute-only utilization
``MACs / (rows * cols * busy)``, the MAC steps FEIE skipped (``zero_skips``), the
dataflow's total cycles over those of ``ws`` (when ``ws`` is among the dataflows run) and
the simulation's wall time; then the same summed over the layers. The Verilator models
are built (or found in the cache) first, one per dataflow, about a minute each on a miss.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from celosia.rtl.config import DATAFLOWS, AccelConfig, ConfigError
from celosia.sim import verilator
from celosia.sw.cli import parse_array
from celosia.sw.driver import pgo_training_job, run, run_quantized
from celosia.errors import CelosiaError
from celosia.sw.graph import Graph
from celosia.sw.quant import quantize_graph
from celosia.sw.zoo import build, conv_layer

try:  # the wall-clock helper of benchmarks/sim_speed.py
    from sim_speed import timed
except ImportError:  # run from another folder
    import importlib.util
    from pathlib import Path
    _spec = importlib.util.spec_from_file_location("sim_speed",
                                                   Path(__file__).with_name("sim_speed.py"))
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    timed = _mod.timed


@dataclass(frozen=True)
class Crop:
    """Layer ``node`` of zoo model ``model``, cropped to an ``h x w x cin`` input and
    ``cout`` output channels (``fc``: ``cin`` inputs, ``cout`` outputs)."""

    name: str
    model: str
    node: str
    cin: int
    cout: int
    h: int = 1
    w: int = 1


LAYERS = (
    Crop("alexnet.conv1", "alexnet", "conv1", h=27, w=27, cin=3, cout=16),
    Crop("alexnet.conv2", "alexnet", "conv2", h=7, w=7, cin=32, cout=32),
    Crop("alexnet.conv3", "alexnet", "conv3", h=6, w=6, cin=32, cout=32),
    Crop("vgg16.conv1_1", "vgg16", "conv1_1", h=12, w=12, cin=3, cout=16),
    Crop("vgg16.conv4_1", "vgg16", "conv4_1", h=6, w=6, cin=64, cout=64),
    Crop("alexnet.fc6", "alexnet", "fc6", cin=256, cout=64),
)
BY_NAME = {layer.name: layer for layer in LAYERS}


# -- layer shapes ------------------------------------------------------------------------

@lru_cache(maxsize=None)
def zoo_graph(model: str) -> Graph:
    return build(model)  # lazy weights: only shapes, instant


def zoo_node(crop: Crop):
    graph = zoo_graph(crop.model)
    return graph, graph.node(crop.node)


def _hwc(shape) -> str:
    return "x".join(str(d) for d in shape[1:])


def describe(graph: Graph, node) -> str:
    """``HxWxC -> HxWxC, KxK sS pP[, groups G]`` (conv) or ``fc K -> N``."""
    x, y = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
    if node.op == "fc":
        return f"fc {x[1]} -> {y[1]}"
    k = graph.tensors[node.inputs[1]].shape[1]
    a = node.attrs
    text = f"{_hwc(x)} -> {_hwc(y)}, {k}x{k} s{a['stride'][0]} p{a['pads'][0]}"
    return text + (f", groups {a['groups']}" if a.get("groups", 1) > 1 else "")


def cropped_graph(crop: Crop, seed: int = 1) -> Graph:
    """The cropped layer with random weights: kernel, stride, padding, groups and
    activation as in the zoo."""
    graph, node = zoo_node(crop)
    act = node.attrs.get("activation")
    if node.op == "conv":
        k = graph.tensors[node.inputs[1]].shape[1]
        return conv_layer(crop.h, crop.w, crop.cin, crop.cout, k, stride=node.attrs["stride"][0],
                          pad=node.attrs["pads"][0], groups=node.attrs.get("groups", 1),
                          act=act, seed=seed)
    assert node.op == "fc", node.op
    rng = np.random.default_rng(seed)
    g = Graph(f"fc_{crop.cin}_{crop.cout}")
    g.add_input("input", (None, crop.cin))
    w = rng.standard_normal((crop.cin, crop.cout), dtype=np.float32) * np.sqrt(2 / crop.cin)
    b = rng.standard_normal(crop.cout, dtype=np.float32) * np.float32(0.01)
    g.add_const("fc.weight", w.astype(np.float32))
    g.add_const("fc.bias", b)
    g.add_node("fc", "fc", ["input", "fc.weight", "fc.bias"], ["fc.out"], activation=act)
    g.add_output("fc.out")
    g.validate()
    return g


def print_shapes(crops) -> None:
    rows = []
    for crop in crops:
        graph, node = zoo_node(crop)
        small = cropped_graph(crop)
        rows.append((crop.name, describe(graph, node), graph.node_macs(node),
                     describe(small, small.nodes[0]), small.node_macs(small.nodes[0])))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    widths = [max(w, len(h)) for w, h in zip(widths, ("layer", "original (zoo)", "MACs",
                                                     "cropped", "MACs"))]
    print(f"{'layer':<{widths[0]}}  {'original (zoo)':<{widths[1]}}  {'MACs':>{widths[2]}}  "
          f"{'cropped':<{widths[3]}}  {'MACs':>{widths[4]}}")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  "
              f"{r[3]:<{widths[3]}}  {r[4]:>{widths[4]}}")


# -- measurement -------------------------------------------------------------------------

def model_and_inputs(graph: Graph, samples: int, seed: int):
    """The quantized one-layer ``graph`` (input zero point 0) and ``samples`` float inputs,
    from a generator seeded by ``seed`` (here the layer's place in :data:`LAYERS`: the same
    inputs whichever ``--layers`` are run)."""
    rng = np.random.default_rng(seed)
    shape = graph.tensors["input"].shape[1:]
    calib = rng.uniform(-1, 1, (8, *shape)).astype(np.float32)
    calib.reshape(8, -1)[0, :2] = (-1.0, 127 / 128)  # range [-1, 127/128]: zero point 0
    x = rng.uniform(-1, 1, (samples, *shape)).astype(np.float32)
    return quantize_graph(graph, calib), x


def measure(qmodel, x, config: AccelConfig, golden: np.ndarray, batch: int = 1,
            program=None, backend: str = "verilator", execute: bool = False) -> dict:
    """Run on ``backend`` (Verilator by default, or ``"perf"``: the cycle model, which gives
    the RTL's cycles, with ``execute`` every instruction executed; ``batch`` samples per run;
    ``program``: already compiled for ``config``); the report's figures plus ``ok`` (equal
    to golden; ``None`` where the outputs were not computed: perf timing only) and
    ``wall``, or ``{"error": message}`` if the compiler, driver or simulation reports an
    error."""
    try:
        result, wall = timed(lambda: run_quantized(qmodel, qmodel.quantize_input(x), config,
                                                   backend=backend, batch=batch, profile=False,
                                                   program=program, execute=execute))
    except CelosiaError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    rep = result.report
    pe = config.rows * config.cols
    return {"cycles": rep["cycles"], "busy": rep["compute_busy"], "load": rep["load_busy"],
            "macs": rep["macs"], "dram": rep["dram_bytes_read"] + rep["dram_bytes_written"],
            "roofline": rep["roofline"],
            "util": rep["macs"] / (pe * rep["cycles"]),
            "busy_util": rep["macs"] / (pe * rep["compute_busy"]) if rep["compute_busy"] else 0.0,
            "skips": rep["zero_skips"], "ok": (bool(np.array_equal(result.y_q, golden))
                                                 if rep["outputs"] == "computed" else None),
            "wall": wall}


HEADER = (f"{'layer':<15}{'dataflow':<9}{'cycles':>10}{'busy':>10}{'load':>10}{'MACs':>10}"
          f"{'util':>8}{'busy util':>10}{'skips':>7}{'/ws':>7}{'wall s':>8}  check")


#: The check column: the outputs equal to the golden model's, not equal, or not computed
#: (the perf back end without ``execute`` models the timing only).
CHECK_TEXT = {True: "ok", False: "MISMATCH", None: "timing only"}


def format_row(layer: str, df: str, m: dict, ws_cycles: int | None) -> str:
    if "error" in m:
        return f"{layer:<15}{df:<9}  {m['error']}"
    ratio = f"{m['cycles'] / ws_cycles:.2f}" if ws_cycles else "-"
    wall = f"{m['wall']:.1f}" if "wall" in m else ""
    check = CHECK_TEXT[m["ok"]] if "ok" in m else ""
    return (f"{layer:<15}{df:<9}{m['cycles']:>10}{m['busy']:>10}{m['load']:>10}{m['macs']:>10}"
            f"{m['util']:>8.1%}{m['busy_util']:>10.1%}{m['skips']:>7}{ratio:>7}{wall:>8}  {check}")


def total(ms: list[dict], pe: int) -> dict:
    """The sums over layers, utilization of the sums (an error if a layer failed)."""
    if any("error" in m for m in ms):
        return {"error": "(a layer failed: no total)"}
    s = {k: sum(m[k] for m in ms) for k in ("cycles", "busy", "load", "macs", "skips")}
    return {**s, "util": s["macs"] / (pe * s["cycles"]),
            "busy_util": s["macs"] / (pe * s["busy"]) if s["busy"] else 0.0}


def prebuild(configs: dict[str, AccelConfig]) -> dict[str, dict]:
    """Build (or find in the cache) each dataflow's Verilator model, printing the time;
    ``{dataflow: {"error": message}}`` for those whose build failed."""
    errors = {}
    for df, config in configs.items():
        try:
            _, secs = timed(lambda: verilator.build(config, training_job=pgo_training_job))
        except CelosiaError as e:
            errors[df] = {"error": f"build failed: {type(e).__name__}: {e}"}
            print(f"verilator build of {config.array} {df} FAILED: {e}")
            continue
        print(f"verilator build of {config.array} {df} (or cache hit): {secs:.1f} s")
    return errors


# -- command line ------------------------------------------------------------------------

def pick(text: str | None, known, what: str) -> list[str]:
    """The comma list ``text`` (all of ``known`` if None), each checked against ``known``."""
    if text is None:
        return list(known)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SystemExit(f"--{what}: unknown {', '.join(unknown) or '(empty)'}; "
                         f"choose from {', '.join(known)}")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--array", default="8x8", help="PE array ROWSxCOLS (default 8x8)")
    ap.add_argument("--samples", type=int, default=2, help="random samples per run (default 2)")
    ap.add_argument("--dataflows", help="comma list (default: all: "
                                        f"{','.join(DATAFLOWS)})")
    ap.add_argument("--layers", help=f"comma list (default all: {','.join(BY_NAME)})")
    args = ap.parse_args(argv)
    if args.samples < 1:
        raise SystemExit("--samples must be at least 1")
    dataflows = pick(args.dataflows, DATAFLOWS, "dataflows")
    crops = [BY_NAME[n] for n in pick(args.layers, tuple(BY_NAME), "layers")]
    try:
        rows, cols = parse_array(args.array)
        configs = {df: AccelConfig(rows=rows, cols=cols, dataflow=df) for df in dataflows}
    except ConfigError as e:
        raise SystemExit(f"--array: {e}") from None

    print_shapes(crops)
    build_errors = prebuild(configs)
    print(f"\narray {rows}x{cols}, {args.samples} sample(s) per run, Verilator; cycles, busy "
          f"(compute_busy), load (load_busy: DMA into the buffers), MACs and skips (zero_skips) "
          f"summed over the samples; /ws = cycles over ws's; wall s = simulation wall time")
    print(HEADER)
    results: dict[str, dict[str, dict]] = {df: {} for df in dataflows}
    for crop in crops:
        qmodel, x = model_and_inputs(cropped_graph(crop), args.samples, LAYERS.index(crop))
        golden = run(qmodel, x, configs[dataflows[0]], backend="golden").y_q
        for df in dataflows:
            results[df][crop.name] = build_errors.get(df) or measure(qmodel, x, configs[df], golden)
        ws = results.get("ws", {}).get(crop.name, {})
        for df in dataflows:
            print(format_row(crop.name, df, results[df][crop.name], ws.get("cycles")),
                  flush=True)
    ws_all = total(list(results["ws"].values()), rows * cols) if "ws" in results else {}
    for df in dataflows:
        print(format_row("all layers", df, total(list(results[df].values()), rows * cols),
                         ws_all.get("cycles")))
    failed = [(df, name) for df in dataflows for name, m in results[df].items() if "error" in m]
    bad = [(df, name) for df in dataflows for name, m in results[df].items()
           if "error" not in m and m["ok"] is False]
    return verdict([f"{n} on {d}" for d, n in failed], [f"{n} on {d}" for d, n in bad])


def verdict(failed: list[str], bad: list[str], unchecked: int = 0) -> int:
    """Print the runs that ``failed`` and those whose output was ``bad`` (differs from the
    golden model's) on stderr; the exit status: 1 if there are any, else 0. ``unchecked``:
    how many runs computed no outputs (perf, timing only)."""
    if failed:
        print("FAILED to run: " + ", ".join(failed), file=sys.stderr)
    if bad:
        print("MISMATCH against the golden model: " + ", ".join(bad), file=sys.stderr)
    if failed or bad:
        return 1
    if unchecked:
        print(f"{unchecked} run(s) modelled the timing only (perf): their outputs were not computed "
              "nor checked (--execute checks them); no computed output differs from the golden "
              "model's")
    else:
        print("every output equals the golden model's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
