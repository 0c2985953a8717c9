"""Simulation speed of the RTL back ends on the same program, measured in one run.

    python benchmarks/sim_speed.py [--array 8x8] [--samples 16] [--pysim-samples 1]

Runs the digits MLP on the Verilator and Amaranth-simulator back ends and
prints simulated cycles, wall seconds (excluding the one-time Verilator build,
which is cached) and cycles per second of each, and their ratio. The figures
in README's performance section come from this script.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from celosia.examples.demo import MODEL
from celosia.examples.digits import digits_split
from celosia.rtl.config import AccelConfig, parse_array
from celosia.sim import verilator
from celosia.sw.driver import run
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph


def measure(qmodel, x, config, backend, batch):
    t0 = time.perf_counter()
    result = run(qmodel, x, config, backend=backend, batch=batch, profile=False)
    wall = time.perf_counter() - t0
    return result, wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="8x8")
    ap.add_argument("--samples", type=int, default=16, help="images on the verilator back end")
    ap.add_argument("--pysim-samples", type=int, default=1, help="images on the pysim back end")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    rows, cols = parse_array(args.array)
    config = AccelConfig(rows=rows, cols=cols)
    x_train, x_test, _, _ = digits_split()
    qmodel = quantize_graph(load_onnx(MODEL), x_train)

    t0 = time.perf_counter()
    verilator.build(config)
    print(f"verilator build (or cache hit): {time.perf_counter() - t0:.1f} s")
    golden = run(qmodel, x_test, config, backend="golden")
    rows_out = []
    for backend, n in (("verilator", args.samples), ("pysim", args.pysim_samples)):
        result, wall = measure(qmodel, x_test[:n], config, backend, args.batch)
        assert np.array_equal(result.y_q, golden.y_q[:n]), f"{backend} differs from golden"
        cycles = result.report["cycles"]
        rows_out.append((backend, n, cycles, wall, cycles / wall))
    print(f"{'backend':<10}{'images':>8}{'cycles':>12}{'wall s':>10}{'cycles/s':>14}")
    for backend, n, cycles, wall, rate in rows_out:
        print(f"{backend:<10}{n:>8}{cycles:>12}{wall:>10.2f}{rate:>14.0f}")
    print(f"verilator / pysim speed ratio: {rows_out[0][4] / rows_out[1][4]:.0f}x "
          f"(wall time includes loading DRAM and process start)")


if __name__ == "__main__":
    main()
