"""Full-size layers of real networks on every dataflow, against the roofline and SCALE-Sim.

    python benchmarks/layers.py [--arrays 8x8,16x16] [--dataflows ws,os,rs,feie]
                                [--layers resnet18.conv2_x,alexnet.fc6.b16] [--quick]
                                [--set FIELD=VALUE ...] [--backend perf|verilator [--execute]]
                                [--out table.md]

Runs single layers at their real size (not cropped; random weights, shapes from the model
zoo, :mod:`celosia.sw.zoo`) on the Verilator model of each array x dataflow (every
dataflow of the registry, ``celosia.rtl.config.DATAFLOWS``), or with ``--backend perf``
on the cycle model (:mod:`celosia.sim.perf`: the RTL's cycles, checked against Verilator
by tests/sim/test_perf.py; no Verilator build, and much faster on the large layers):

===========================  ===========================================================
layer                        zoo node (shape printed by the script)
===========================  ===========================================================
``resnet18.conv2_x``         ``layer1.0.conv1``, the first 3x3 layer of conv2_x
``resnet18.conv3_x``         ``layer2.0.conv1`` (stride 2)
``resnet18.conv4_x``         ``layer3.0.conv1`` (stride 2)
``resnet18.conv5_x``         ``layer4.0.conv1`` (stride 2)
``resnet18.conv3_x.ds``      ``layer2.0.downsample``, the 1x1 stride-2 shortcut of conv3_x
``vgg16.conv3_1``            ``conv3_1``
``alexnet.conv3``            ``conv3``
``mobilenet_v1.conv2.dw``    ``conv2.dw``, 3x3 depthwise, stride 2
``mobilenet_v1.conv2.pw``    ``conv2.pw``, the pointwise 1x1 after it
``alexnet.fc6.b1``           ``fc6`` (9216 -> 4096), batch 1
``alexnet.fc6.b16``          ``fc6``, batch 16 (one run of 16 samples)
===========================  ===========================================================

``--quick`` runs two small full-size LeNet-5 layers (``lenet5.c3``, ``lenet5.f6``) on
8x8 in seconds (CI runs it, tests/benchmarks); ``pytest -m slow -k layers_full`` runs the
whole set.

Every configuration uses the default buffers and DRAM timing (``AccelConfig()``; ``--set
FIELD=VALUE``, as on the ``celosia`` command line, changes a field for every run, e.g.
``--set ppu_lanes=8``); only ``dram_bytes`` is sized, to the smallest power of two (at least the default) that holds
the program and data of the largest layer run on that array and dataflow, so each
Verilator model is built once. Each layer is compiled once per configuration (the program
that sized the DRAM is the one run). Inputs are uniform in [-1, 1) with the input zero
point 0 (as ``benchmarks/dataflow_utilization.py``). Every output is checked against the
golden model; the script exits with status 1 if any differs or a run fails (the error is
in the table and the other runs go on). ``--backend perf`` models the timing only and
computes no outputs (``feie``, whose timing reads the data, excepted): its check column
says ``timing only``; ``--backend perf --execute`` executes every instruction as the RTL
issues it and checks the outputs (slower: nothing is replayed).

Columns: ``cycles`` (the accelerator's cycle counter, one run), ``util`` = MACs / (rows *
cols * cycles), ``B/MAC`` = DRAM bytes read and written (the hardware's counters) per MAC,
``bound`` and ``roofline`` = the report's roofline bound for the program (compute,
bandwidth or latency; :mod:`celosia.sw.analysis`; on ``feie`` the compute bound counts the
MACs on non-zero inputs, padding left out) and its cycles, ``/roof`` = cycles /
roofline (1.00 = at the bound), ``SCALE-Sim ws`` / ``os`` = SCALE-Sim's analytical cycles
for the same GEMM on the same array (:mod:`celosia.sw.scalesim`: no memory stalls), and
``/ws``, ``/os`` = our cycles over them (below 1: fewer cycles than SCALE-Sim's model).
The table is printed as markdown and, with ``--out``, written to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
from argparse import Namespace
import sys
import time
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from dataflow_utilization import (CHECK_TEXT, Crop, cropped_graph, describe, measure, model_and_inputs,
                                  pick, prebuild, verdict, zoo_node)

from celosia.errors import CelosiaError
from celosia.rtl.config import DATAFLOWS, AccelConfig, ConfigError
from celosia.sw.cli import config_from_args, parse_array
from celosia.sw.compiler import compile_model
from celosia.sw.driver import golden_forward
from celosia.sw.scalesim import layer_cycles

#: The largest ``dram_bytes`` a config takes (the programs are first compiled for it).
MAX_DRAM = 1 << 28


#: A benchmark layer: node ``node`` of zoo model ``model`` at full size, ``batch`` samples
#: per run.
Bench = namedtuple("Bench", "name model node batch", defaults=(1,))


LAYERS = (
    Bench("resnet18.conv2_x", "resnet18", "layer1.0.conv1"),
    Bench("resnet18.conv3_x", "resnet18", "layer2.0.conv1"),
    Bench("resnet18.conv4_x", "resnet18", "layer3.0.conv1"),
    Bench("resnet18.conv5_x", "resnet18", "layer4.0.conv1"),
    Bench("resnet18.conv3_x.ds", "resnet18", "layer2.0.downsample"),
    Bench("vgg16.conv3_1", "vgg16", "conv3_1"),
    Bench("alexnet.conv3", "alexnet", "conv3"),
    Bench("mobilenet_v1.conv2.dw", "mobilenet_v1", "conv2.dw"),
    Bench("mobilenet_v1.conv2.pw", "mobilenet_v1", "conv2.pw"),
    Bench("alexnet.fc6.b1", "alexnet", "fc6"),
    Bench("alexnet.fc6.b16", "alexnet", "fc6", batch=16),
)
#: ``--quick``: small full-size layers that fit the default DRAM (the cached default models).
QUICK = (
    Bench("lenet5.c3", "lenet5", "c3"),
    Bench("lenet5.f6", "lenet5", "f6"),
)
BY_NAME = {b.name: b for b in LAYERS + QUICK}


def full_crop(bench: Bench) -> Crop:
    """The zoo node's own sizes as a :class:`Crop` (nothing cropped)."""
    graph, node = zoo_node(Crop(bench.name, bench.model, bench.node, 0, 0))
    x, y = graph.tensors[node.inputs[0]].shape, graph.tensors[node.outputs[0]].shape
    if node.op == "fc":
        return Crop(bench.name, bench.model, bench.node, cin=x[1], cout=y[1])
    return Crop(bench.name, bench.model, bench.node, cin=x[3], cout=y[3], h=x[1], w=x[2])


def shape_text(bench: Bench) -> str:
    graph, node = zoo_node(full_crop(bench))
    return describe(graph, node) + (f", batch {bench.batch}" if bench.batch > 1 else "")


@dataclass
class Prepared:
    """A layer ready to run: the quantized model, its inputs and the golden output."""

    bench: Bench
    qmodel: object
    x: np.ndarray
    golden: np.ndarray

    @property
    def layer(self):
        return self.qmodel.layers[0]


def prepare(bench: Bench) -> Prepared:
    seed = list(BY_NAME).index(bench.name)
    qmodel, x = model_and_inputs(cropped_graph(full_crop(bench), seed=seed), bench.batch, seed)
    golden = golden_forward(qmodel, qmodel.quantize_input(x).reshape(len(x), -1))
    return Prepared(bench, qmodel, x, golden)


def dram_size(need: int) -> int:
    """The smallest power of two >= ``need``, at least the default ``dram_bytes``."""
    size = AccelConfig().dram_bytes
    while size < need:
        size *= 2
    return size


# -- progress ------------------------------------------------------------------------------

class Progress:
    """A rich progress bar over ``total`` steps; plain lines (each step, with the time)
    where the output is not a terminal (logs, CI) or rich is missing."""

    def __init__(self, total: int):
        self.total, self.done, self.t0, self.bar = total, 0, time.perf_counter(), None
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeElapsedColumn)
        except ImportError:
            return
        if sys.stdout.isatty():
            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn())
            self.task = self.bar.add_task("", total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def step(self, text: str, advance: int = 0) -> None:
        if self.bar is None:
            self.done += advance
            print(f"[{self.done}/{self.total} {time.perf_counter() - self.t0:7.0f} s] {text}",
                  flush=True)
        else:
            self.bar.update(self.task, description=text, advance=advance)


# -- measurement ---------------------------------------------------------------------------

def set_fields(items: list[str], rows: int, cols: int, dataflow: str) -> dict:
    """The config fields the ``--set FIELD=VALUE`` ``items`` change from the defaults of
    this array and dataflow (parsed and checked as ``celosia --set`` does)."""
    config = config_from_args(Namespace(array=f"{rows}x{cols}", dataflow=dataflow, set=items))
    default = AccelConfig(rows=rows, cols=cols, dataflow=dataflow)
    return {k: v for k, v in config.to_dict().items() if v != getattr(default, k)}


def run_config(rows: int, cols: int, dataflow: str, layers: list[Prepared],
               progress: Progress, fields: dict | None = None,
               backend: str = "verilator", execute: bool = False) -> dict[str, dict]:
    """Every layer on one array x dataflow (and the config ``fields`` of ``--set``): compile
    each (for the largest DRAM), size the DRAM to the largest, build the Verilator model
    once (``backend = "verilator"``), run on ``backend`` and check each."""
    array = f"{rows}x{cols}"
    base = AccelConfig(**{"rows": rows, "cols": cols, "dataflow": dataflow,
                          "dram_bytes": MAX_DRAM, **(fields or {})})
    programs, results = {}, {}
    for p in layers:
        progress.step(f"compile {p.bench.name} for {array} {dataflow}")
        try:
            programs[p.bench.name] = compile_model(p.qmodel, base, batch=p.bench.batch)
        except CelosiaError as e:
            results[p.bench.name] = {"error": f"{type(e).__name__}: {e}"}
    if programs:
        need = max(prog.layout(1)["end"] for prog in programs.values())
        config = dataclasses.replace(base, dram_bytes=dram_size(need))
        failed = None
        if backend == "verilator":
            progress.step(f"verilator model of {array} {dataflow}, dram_bytes={config.dram_bytes}")
            failed = prebuild({dataflow: config}).get(dataflow)
    for p in layers:
        name = p.bench.name
        if name in programs:
            progress.step(f"run {name} on {array} {dataflow}")
            results[name] = failed or measure(
                p.qmodel, p.x, config, p.golden, batch=p.bench.batch,
                program=dataclasses.replace(programs.pop(name), config=config), backend=backend,
                execute=execute)
        progress.step(f"{name} on {array} {dataflow} done", advance=1)
    return results


def row(p: Prepared, rows: int, cols: int, dataflow: str, m: dict) -> list[str]:
    """One table row (see the module docstring for the columns)."""
    ss = {df: layer_cycles(df, p.layer, rows, cols, p.bench.batch) for df in ("ws", "os")}
    head = [p.bench.name, f"{rows}x{cols}", dataflow]
    if "error" in m:
        return head + [""] * 7 + [str(ss["ws"]), str(ss["os"]), "", "", m["error"]]
    roof = m["roofline"]
    return head + [str(m["cycles"]), f"{m['util']:.1%}", f"{m['dram'] / m['macs']:.3f}",
                   roof["bound"], str(roof["bound_cycles"]),
                   f"{m['cycles'] / roof['bound_cycles']:.2f}", str(m["macs"]),
                   str(ss["ws"]), str(ss["os"]), f"{m['cycles'] / ss['ws']:.2f}",
                   f"{m['cycles'] / ss['os']:.2f}", CHECK_TEXT[m["ok"]]]


COLUMNS = ("layer", "array", "dataflow", "cycles", "util", "B/MAC", "bound", "roofline", "/roof",
           "MACs", "SCALE-Sim ws", "SCALE-Sim os", "/ws", "/os", "check")


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS) - 1)) + "|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_of(prepared, shapes, dataflows, results) -> list[list[str]]:
    """The table rows of the results measured so far, in layer, array, dataflow order."""
    return [row(p, rows, cols, df, results[p.bench.name, rows, cols, df])
            for p in prepared for rows, cols in shapes for df in dataflows
            if (p.bench.name, rows, cols, df) in results]


def write(path: str, table: list[list[str]]) -> None:
    with open(path, "w") as f:
        f.write(markdown(table))


# -- command line --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arrays", help="comma list of ROWSxCOLS (default 8x8,16x16; --quick: 8x8)")
    ap.add_argument("--dataflows", help=f"comma list (default all: {','.join(DATAFLOWS)})")
    ap.add_argument("--layers", help=f"comma list (default all: {','.join(b.name for b in LAYERS)}; "
                                     f"also {','.join(b.name for b in QUICK)})")
    ap.add_argument("--quick", action="store_true",
                    help=f"the small layers {','.join(b.name for b in QUICK)} on 8x8 (seconds)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an AccelConfig field for every run, e.g. --set ppu_lanes=8 (repeatable)")
    ap.add_argument("--backend", choices=("verilator", "perf"), default="verilator",
                    help="run on the Verilator model (default) or the perf cycle model (the RTL's "
                         "cycles, much faster; it models the timing only, so the outputs are not "
                         "checked: 'timing only' in the check column, unless --execute)")
    ap.add_argument("--execute", action="store_true",
                    help="with --backend perf: execute every instruction on the ISA simulator as the "
                         "RTL issues it, so every output is checked against the golden model (slower: "
                         "no replay of repeated segments)")
    ap.add_argument("--out", help="also write the markdown table to this file (rewritten after each "
                                  "array x dataflow, so an interrupted run keeps what it measured)")
    args = ap.parse_args(argv)
    dataflows = pick(args.dataflows, DATAFLOWS, "dataflows")
    default_layers = QUICK if args.quick else LAYERS
    names = pick(args.layers, tuple(BY_NAME), "layers") if args.layers else \
        [b.name for b in default_layers]
    arrays = [a.strip() for a in (args.arrays or ("8x8" if args.quick else "8x8,16x16")).split(",")]
    try:
        shapes = [parse_array(a) for a in arrays]
        for rows, cols in shapes:
            AccelConfig(rows=rows, cols=cols)
    except (ConfigError, CelosiaError) as e:
        raise SystemExit(f"--arrays: {e}") from None
    try:
        fields = {(rows, cols, df): set_fields(args.set, rows, cols, df)
                  for rows, cols in shapes for df in dataflows}
    except (ConfigError, CelosiaError) as e:
        raise SystemExit(str(e) if str(e).startswith("--set") else f"--set: {e}") from None
    if args.set:
        print("config:", " ".join(args.set))
    if args.backend != "verilator":
        print("backend:", args.backend)

    benches = [BY_NAME[n] for n in names]
    width = max(len(b.name) for b in benches)
    for b in benches:
        print(f"{b.name:<{width}}  {shape_text(b)}")
    results = {}
    with Progress(len(benches) * (1 + len(shapes) * len(dataflows))) as progress:
        prepared = []
        for b in benches:
            progress.step(f"quantize {b.name} and run the golden model")
            prepared.append(prepare(b))
            progress.step(f"{b.name} ready", advance=1)
        for rows, cols in shapes:
            for df in dataflows:
                for name, m in run_config(rows, cols, df, prepared, progress,
                                          fields[rows, cols, df], args.backend,
                                          args.execute).items():
                    results[name, rows, cols, df] = m
                if args.out:   # the rows so far, so that an interrupted run loses nothing
                    write(args.out, table_of(prepared, shapes, dataflows, results))
    table = table_of(prepared, shapes, dataflows, results)
    text = markdown(table)
    print()
    print(text, end="")
    if args.out:
        write(args.out, table)
    failed = [f"{r[0]} on {r[1]} {r[2]}" for r in table if r[-1] not in CHECK_TEXT.values()]
    bad = [f"{r[0]} on {r[1]} {r[2]}" for r in table if r[-1] == "MISMATCH"]
    return verdict(failed, bad, sum(r[-1] == CHECK_TEXT[None] for r in table))


if __name__ == "__main__":
    sys.exit(main())
