"""Issue 12's sweep target: 4 dataflows x 5 arrays x 3 bus widths x the 6 zoo models in
under 5 minutes on 2 cores, measured in one run.

    python benchmarks/zoo_sweep.py [--sample N] [--jobs 2] [--models lenet5,resnet18]
                                   [--arrays 4x4,8x8,16x16,32x32,64x64] [--out DIR]

The grid is the one ``celosia sweep`` evaluates for

    celosia sweep --model zoo:lenet5 --model zoo:alexnet ... --dataflow ws,os,rs,feie
                  --array 4x4,8x8,16x16,32x32,64x64 --set bus_bits=64,128,256
                  --set dram_bytes=268435456 --backend perf

(the issue names 5 array sizes without saying which; these are the powers of two from
4x4, and the DRAM is the largest a config allows: :data:`DRAM_BYTES`).

* Without ``--sample`` every point runs through :func:`celosia.sw.sweep.run_sweep` with
  ``--jobs`` workers (the sweep's own process pool), into ``--out`` (a temporary folder by
  default), and the benchmark prints the wall time against the 300 s target.
* With ``--sample N`` it evaluates ``N`` points drawn at random (seed 0) from the grid, one
  after the other in this process, and prints each point's time, their mean per model and
  the whole grid's time *estimated* from them (the sum over models of the model's mean
  time x its points, divided by ``--jobs``), marked as an estimate: the full grid takes
  hours while the per-point time is far from its target.

Per point it prints the model, the configuration, the instructions' cycles (the sum of the
per-layer rows) and the point's wall seconds (compile and cycle model: ``summary.csv``'s
``wall_seconds``).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from collections import defaultdict

from celosia.rtl.config import RANGES
from celosia.sw.quant import CalibrationWarning
from celosia.sw.sweep import run_sweep
from celosia.sw.sweep_eval import timed_point
from celosia.sw.sweep_grid import Grid, expand, parse_arrays

MODELS = ("lenet5", "alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v1")
DATAFLOWS = ("ws", "os", "rs", "feie")
ARRAYS = "4x4,8x8,16x16,32x32,64x64"
BUS_BITS = (64, 128, 256)
TARGET_S = 300.0
#: The largest DRAM a config allows, for every point: the DRAM size changes no instruction
#: and the zoo's big models do not fit the default 1 MiB (the model's DRAM image is
#: allocated lazily, so the size costs nothing it does not touch).
DRAM_BYTES = RANGES["dram_bytes"][1]


def points_of(models, arrays) -> list:
    """The grid's points (every one with :data:`DRAM_BYTES`)."""
    points = []
    for m in models:
        grid = Grid(models=[f"zoo:{m}"], dataflows=list(DATAFLOWS), arrays=arrays,
                    sets={"bus_bits": list(BUS_BITS), "dram_bytes": [DRAM_BYTES]}, backend="perf")
        points += expand(grid)
    return points


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="time N random points and estimate the grid")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--arrays", default=ARRAYS)
    ap.add_argument("--out", help="the sweep's output folder (default: a temporary one)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", CalibrationWarning)
    models = args.models.split(",")
    points = points_of(models, parse_arrays(args.arrays))
    print(f"grid: {len(models)} model(s) x {len(DATAFLOWS)} dataflows x {len(args.arrays.split(','))} "
          f"arrays x {len(BUS_BITS)} bus widths = {len(points)} points, backend perf", flush=True)
    if not args.sample:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_sweep(points, args.out or tmp, jobs=args.jobs, plots=False, log=True)
            wall = time.perf_counter() - t0
        print(f"whole grid: {wall:.1f} s on {args.jobs} worker(s), {len(res.failed)} point(s) failed; "
              f"target {TARGET_S:.0f} s: {wall / TARGET_S:.2f}x of it "
              f"({'met' if wall <= TARGET_S else 'not met'})")
        return 0
    sample = random.Random(0).sample(points, min(args.sample, len(points)))
    per_model = defaultdict(list)
    print(f"{'model':18} {'point':34} {'cycles':>12} {'wall s':>8}")
    for p in sample:
        r = timed_point(p)
        cycles = sum(row["cycles"] or 0 for row in r["rows"])
        f = p.fields
        label = f"{f['dataflow']} {f['rows']}x{f['cols']} bus {f['bus_bits']}"
        print(f"{p.model:18} {label:34} {cycles:12d} {r['wall_seconds']:8.2f}"
              + (f"  error: {r['error']}" if r["error"] else ""), flush=True)
        per_model[p.model].append(r["wall_seconds"])
    counts = defaultdict(int)
    for p in points:
        counts[p.model] += 1
    estimate = 0.0
    for m, times in per_model.items():
        mean = sum(times) / len(times)
        estimate += mean * counts[m]
        print(f"{m:18} mean {mean:8.2f} s per point over {len(times)} sampled, {counts[m]} in the grid")
    unsampled = [m for m in counts if m not in per_model]
    estimate /= args.jobs
    print(f"ESTIMATE (from {len(sample)} sampled points{', models not sampled: ' + ', '.join(unsampled) if unsampled else ''}):"
          f" whole grid about {estimate:.0f} s on {args.jobs} worker(s); target {TARGET_S:.0f} s: "
          f"{estimate / TARGET_S:.1f}x of it ({'met' if estimate <= TARGET_S else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
