"""Compile time per design point: ``compile_model`` of zoo models, measured in one run.

    python benchmarks/compile_speed.py [--model zoo:resnet18 --model zoo:resnet50 ...]
                                       [--array 8x8,16x16] [--dataflow ws,os,rs]

For each model (zoo layer shapes, random weights, quantized once on one random sample:
its time is printed too) and each array and dataflow: the wall and CPU seconds of
:func:`~celosia.sw.compiler.compile_model`, the instructions, the time to build the DRAM
image (``Program.image``) and the share of the issue's one second per design point the
compile alone takes. It uses only the public API, so the same script measures another
checkout (``/path/to/other/.venv/bin/python benchmarks/compile_speed.py``): that is how
docs/perf.md's before / after figures were taken.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from celosia.rtl.config import AccelConfig, parse_array
from celosia.sw.compiler import compile_model
from celosia.sw.quant import CalibrationWarning, quantize_graph
from celosia.sw.zoo import resolve


def quantized(spec: str):
    """``spec`` quantized on one uniform random sample (seed 0), as ``celosia run --random 1``."""
    graph = resolve(spec)
    x = np.random.default_rng(0).random((1, *graph.tensors[graph.inputs[0]].shape[1:]), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return quantize_graph(graph, x, on_degenerate="ignore")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="zoo:NAME (repeatable; default zoo:resnet18, zoo:resnet50)")
    ap.add_argument("--array", default="8x8,16x16")
    ap.add_argument("--dataflow", default="ws,os,rs")
    args = ap.parse_args(argv)
    print(f"{'model':14} {'array':6} {'flow':5} {'insns':>8} {'compile s':>10} {'cpu s':>7} {'image s':>8} "
          f"{'vs 1 s':>7}")
    for spec in args.model or ["zoo:resnet18", "zoo:resnet50"]:
        t0 = time.perf_counter()
        q = quantized(spec)
        print(f"{spec:14} quantize {time.perf_counter() - t0:.2f} s", flush=True)
        for arr in args.array.split(","):
            rows, cols = parse_array(arr)
            for flow in args.dataflow.split(","):
                config = AccelConfig(rows=rows, cols=cols, dataflow=flow, dram_bytes=1 << 26)
                w0, c0 = time.perf_counter(), time.process_time()
                program = compile_model(q, config)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                w1 = time.perf_counter()
                program.image()
                image = time.perf_counter() - w1
                print(f"{spec:14} {arr:6} {flow:5} {program.n_insns:8d} {wall:10.2f} {cpu:7.2f} {image:8.2f} "
                      f"{wall:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
