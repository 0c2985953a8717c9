"""Simulation speed of the RTL back ends on the same program, measured in one run.

    python benchmarks/sim_speed.py [--array 8x8] [--layer 8x8x16:16k3]
                                   [--samples 256] [--pysim-samples 1] [--cocotb-samples 4]
                                   [--repeat 5] [--model digits_mlp]

Compiles one convolution layer (default: 8x8x16 input, 16 filters of 3x3, pad 1,
ReLU; random weights, random non-negative input; small enough for the Amaranth
simulator to run one sample in half a minute) for the array, builds one job
(the program, the inputs, the host's CSR writes and readback) and performs that
same job on

* ``verilator/cpp``: the Verilator model driven by the C++ harness
  (``sim/harness.cpp``; the default back end),
* ``verilator/cocotb``: the same Verilog under the cocotb bench,
* ``pysim``: the Amaranth simulator,

checks every output against the golden model, and prints simulated cycles (the
accelerator's cycle counter), wall seconds (excluding the one-time Verilator builds,
which are cached) and cycles per second of each, and the ratios. For the C++
harness it also prints the rate measured inside the harness (all simulated cycles,
host traffic included, over the simulation's own wall time: no process start,
Python or file I/O), per wall second and per CPU second of the harness process,
as the median and the best of ``--repeat`` runs of the same job: on a machine
shared with other work the wall time, and even the CPU time, of one run varies by
tens of percent, and the best run is the least disturbed one (the end-to-end wall
time of the C++ harness is the median too). The figures in README's performance
section come from this script. ``--model digits_mlp`` runs the digits MLP instead
of the conv layer.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

from celosia.rtl.config import AccelConfig
from celosia.sim import pysim, verilator
from celosia.sw.cli import parse_array
from celosia.sw.compiler import compile_model
from celosia.sw.data import digits_split
from celosia.sw.demo import MODEL
from celosia.sw.driver import build_job, golden_forward, pgo_training_job
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph
from celosia.sw.zoo import conv_layer


def parse_layer(spec: str):
    """``HxWxC:NkK[sS]`` -> (h, w, cin, cout, k, stride)."""
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+):(\d+)k(\d+)(?:s(\d+))?", spec)
    if not m:
        raise SystemExit(f"--layer must look like 16x16x16:32k3 or 56x56x64:64k3s1, not {spec!r}")
    h, w, c, n, k, s = m.groups()
    return int(h), int(w), int(c), int(n), int(k), int(s or 1)


def model_and_inputs(args, rng):
    if args.model == "digits_mlp":
        x_train, x_test, _, _ = digits_split()
        return quantize_graph(load_onnx(MODEL), x_train), x_test
    h, w, c, n, k, s = parse_layer(args.layer)
    graph = conv_layer(h, w, c, n, k, stride=s, seed=1)
    calib = np.maximum(rng.standard_normal((8, h, w, c), dtype=np.float32), 0)  # a ReLU output
    x = np.maximum(rng.standard_normal((max(args.samples, 1), h, w, c), dtype=np.float32), 0)
    return quantize_graph(graph, calib), x


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="8x8")
    ap.add_argument("--model", choices=("conv", "digits_mlp"), default="conv")
    ap.add_argument("--layer", default="8x8x16:16k3", help="conv layer HxWxC:NkK[sS]")
    ap.add_argument("--samples", type=int, default=256, help="samples on the C++ harness")
    ap.add_argument("--cocotb-samples", type=int, default=4, help="samples on the cocotb bench")
    ap.add_argument("--pysim-samples", type=int, default=1, help="samples on the Amaranth simulator")
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs of the C++ harness (median and best of its own rates)")
    args = ap.parse_args(argv)
    rows, cols = parse_array(args.array)
    config = AccelConfig(rows=rows, cols=cols)
    rng = np.random.default_rng(0)
    qmodel, x = model_and_inputs(args, rng)
    x_q = qmodel.quantize_input(x).reshape(len(x), -1)
    program = compile_model(qmodel, config)
    print(f"model {qmodel.name}: {qmodel.macs_per_sample()} MACs/sample, "
          f"{program.n_insns} instructions, array {rows}x{cols}")

    plan = [("verilator/cpp", args.samples), ("verilator/cocotb", args.cocotb_samples),
            ("pysim", args.pysim_samples)]
    for name, n in plan:
        if n > 0 and name.startswith("verilator"):
            _, secs = timed(lambda: verilator.build(config, harness=name.split("/")[1], training_job=pgo_training_job))
            print(f"{name} build (or cache hit): {secs:.1f} s")
    golden = golden_forward(qmodel, x_q)
    rows_out = []
    for name, n in plan:
        if n <= 0:
            continue
        job, _, lead = build_job(program, x_q[:n])
        runs = max(args.repeat, 1) if name == "verilator/cpp" else 1
        stats, walls = [], []
        for _ in range(runs):
            if name == "pysim":
                results, wall = timed(lambda: pysim.run(config, job))
            else:
                results, wall = timed(lambda: verilator.run(config, job, harness=name.split("/")[1],
                                                           training_job=pgo_training_job))
                if verilator.last_stats:
                    stats.append(verilator.last_stats)
            assert all(r.error == 0 and not r.timed_out for r in results), f"{name}: run failed"
            results = results[len(lead):]  # the inferences, not the initialization run
            y_q = np.frombuffer(b"".join(r.data[0] for r in results), np.int8)
            assert np.array_equal(y_q.reshape(n, -1), golden[:n]), f"{name} differs from golden"
            walls.append(wall)
        wall = statistics.median(walls)
        cycles = sum(r.counters["cycles"] for r in results)
        busy = {k: sum(r.counters[k] for r in results)
                for k in ("load_busy", "compute_busy", "store_busy", "load_compute_overlap")}
        rows_out.append((name, n, cycles, wall, cycles / wall, stats, busy))
    print(f"{'backend':<18}{'samples':>8}{'cycles':>12}{'wall s':>10}{'cycles/s':>14}")
    for name, n, cycles, wall, rate, _, _ in rows_out:
        print(f"{name:<18}{n:>8}{cycles:>12}{wall:>10.2f}{rate:>14.0f}")
    for name, n, cycles, wall, rate, stats, busy in rows_out:
        if stats:
            sim_cycles = stats[0]["cycles"]
            per_wall = [st["cycles"] / st["seconds"] for st in stats]
            per_cpu = [st["cycles"] / st["cpu_seconds"] for st in stats]
            print(f"{name} inside the harness ({sim_cycles} cycles, {len(stats)} runs): "
                  f"median {statistics.median(per_wall):.0f} cycles/s wall, "
                  f"{statistics.median(per_cpu):.0f} per CPU second; "
                  f"best {max(per_wall):.0f} wall, {max(per_cpu):.0f} per CPU second")
    name, n, cycles, _, _, _, busy = rows_out[0]
    print(f"engines ({name}, {n} samples): " + ", ".join(
        f"{k} {v} ({v / cycles:.0%})" for k, v in busy.items()))
    by_name = {r[0]: r[4] for r in rows_out}
    for other in ("verilator/cocotb", "pysim"):
        if "verilator/cpp" in by_name and other in by_name:
            print(f"verilator/cpp / {other} speed ratio: {by_name['verilator/cpp'] / by_name[other]:.0f}x")
    print("(wall time includes loading DRAM and reading back; for the C++ harness the process "
          "start and the job files, for cocotb Python on every host access)")


if __name__ == "__main__":
    main()
