"""Speed of the ``perf`` cycle model (celosia.sim.perf) per design point, measured in one run.

    python benchmarks/perf_speed.py [--model zoo:lenet5 --model zoo:resnet18 ...]
                                    [--array 8x8,16x16] [--dataflow ws] [--profile]

For each model (zoo layer shapes, random weights, one random sample) and array: the time
to compile the program, the time of the cycle model on it (the run the sweep's ``perf``
back end does: timing only, no functional execution except for ``feie``), the
instructions, the simulated cycles and the simulated cycles per wall second of the model,
and the whole point's time (compile + model) against the issue's target of one second per
design point, and the process's peak memory so far (it includes the compiler's and the
DRAM image's). ``--profile`` prints the model's ten most expensive functions (cProfile) for
the last point.
"""

from __future__ import annotations

import argparse
import dataclasses
import cProfile
import pstats
import resource
import time

import numpy as np

from celosia.rtl.config import AccelConfig, parse_array
from celosia.sim import perf
from celosia.sw.compiler import compile_model
from celosia.sw.driver.driver import build_job
from celosia.sw.quant import CalibrationWarning, quantize_graph
from celosia.sw.zoo import resolve


def point(spec: str, config: AccelConfig, profile: bool = False) -> dict:
    import warnings

    graph = resolve(spec)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        q = quantize_graph(graph, x, on_degenerate="ignore")
    t0 = time.perf_counter()
    program = compile_model(q, config)
    t1 = time.perf_counter()
    need = program.layout(1)["end"]
    if need > config.dram_bytes:   # the DRAM size changes no instruction: grow it to fit
        config = dataclasses.replace(config, dram_bytes=1 << (need - 1).bit_length())
        program = dataclasses.replace(program, config=config)
    job, _, _ = build_job(program, q.quantize_input(x).reshape(1, -1))
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    res = perf.run(config, job, execute=False)[-1]
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(10)
    t2 = time.perf_counter()
    return {"compile_s": t1 - t0, "model_s": t2 - t1, "insns": program.n_insns,
            "cycles": res.counters["cycles"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="zoo:NAME (repeatable; default zoo:lenet5, zoo:resnet18)")
    ap.add_argument("--array", default="8x8,16x16")
    ap.add_argument("--dataflow", default="ws")
    ap.add_argument("--dram-bytes", type=int, default=1 << 26)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    models = args.model or ["zoo:lenet5", "zoo:resnet18"]
    print(f"{'model':16} {'array':6} {'insns':>9} {'cycles':>12} {'compile s':>10} {'model s':>9} "
          f"{'point s':>8} {'Mcycles/s':>10} {'vs 1 s':>7} {'peak MB':>8}")
    for spec in models:
        for arr in args.array.split(","):
            rows, cols = parse_array(arr)
            config = AccelConfig(rows=rows, cols=cols, dataflow=args.dataflow, dram_bytes=args.dram_bytes)
            r = point(spec, config, args.profile)
            total = r["compile_s"] + r["model_s"]
            print(f"{spec:16} {arr:6} {r['insns']:9d} {r['cycles']:12d} {r['compile_s']:10.2f} "
                  f"{r['model_s']:9.2f} {total:8.2f} {r['cycles'] / r['model_s'] / 1e6:10.2f} "
                  f"{total:6.1f}x {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
