"""Speed of the ``perf`` cycle model (celosia.sim.perf) per design point, measured in one run.

    python benchmarks/perf_speed.py [--model zoo:lenet5 --model zoo:resnet18 ...]
                                    [--array 8x8,16x16] [--dataflow ws] [--profile]
                                    [--no-jump | --compare]

For each model (zoo layer shapes, random weights, one random sample) and array (times are
CPU seconds of this single-threaded process, so a shared, loaded machine does not inflate
them as it does wall time): the time to compile the program, the time of the cycle model on it (the run the sweep's ``perf``
back end does: timing only, no functional execution except for ``feie``), the
instructions, the simulated cycles and the simulated cycles per wall second of the model,
and the whole point's time (compile + model) against the issue's target of one second per
design point, and the process's peak memory so far (it includes the compiler's and the
DRAM image's), and the share of the instructions whose segment the model replayed instead
of stepping through (its jump, docs/perf.md "Speed"). ``--no-jump`` models every point
stepping through every segment; ``--compare`` models each point both ways in the same run,
prints the model's time without the jump and the speed-up, and checks that both give the
same counters, per-node snapshots and instruction timeline. ``--profile`` prints the
model's ten most expensive functions (cProfile) for the last point.
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


def model(config, job, jump, profile=False):
    """Seconds of the cycle model on ``job`` and its results."""
    prof = cProfile.Profile() if profile else None
    t0 = time.process_time()
    if prof:
        prof.enable()
    res = perf.run(config, job, execute=False, jump=jump)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(10)
    return time.process_time() - t0, res


def point(spec: str, config: AccelConfig, profile: bool = False, jump: bool = True,
          compare: bool = False) -> dict:
    import warnings

    graph = resolve(spec)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        q = quantize_graph(graph, x, on_degenerate="ignore")
    t0 = time.process_time()
    program = compile_model(q, config)
    t1 = time.process_time()
    need = program.layout(1)["end"]
    if need > config.dram_bytes:   # the DRAM size changes no instruction: grow it to fit
        config = dataclasses.replace(config, dram_bytes=1 << (need - 1).bit_length())
        program = dataclasses.replace(program, config=config)
    job, _, _ = build_job(program, q.quantize_input(x).reshape(1, -1))
    build_s = time.process_time() - t1      # the job (DRAM image): counted with the model
    model_s, runs = model(config, job, jump, profile)
    out = {"compile_s": t1 - t0, "model_s": build_s + model_s, "insns": program.n_insns,
           "cycles": runs[-1].counters["cycles"],
           "jumped": sum(r.jumped for r in runs) / max(1, sum(len(r.timeline.issue) for r in runs))}
    if compare:
        stepping_s, slow = model(config, job, False)
        out["stepping_s"] = build_s + stepping_s
        for a, b in zip(runs, slow, strict=True):
            same = (a.counters == b.counters and a.nodes == b.nodes
                    and a.timeline.issue == b.timeline.issue and a.timeline.done == b.timeline.done)
            if not same:
                raise SystemExit(f"{spec} {config.rows}x{config.cols} {config.dataflow}: "
                                 "the jump's results differ from stepping's")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="zoo:NAME (repeatable; default zoo:lenet5, zoo:resnet18)")
    ap.add_argument("--array", default="8x8,16x16")
    ap.add_argument("--dataflow", default="ws")
    ap.add_argument("--dram-bytes", type=int, default=1 << 26)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-jump", action="store_true", help="step through every segment")
    ap.add_argument("--compare", action="store_true",
                    help="also model each point without the jump: its time, the speed-up, equal results")
    args = ap.parse_args(argv)
    models = args.model or ["zoo:lenet5", "zoo:resnet18"]
    print(f"{'model':16} {'array':6} {'df':4} {'insns':>9} {'cycles':>12} {'compile s':>10} {'model s':>9} "
          f"{'point s':>8} {'Mcycles/s':>10} {'vs 1 s':>7} {'peak MB':>8} {'jumped':>7}"
          + (f" {'stepping s':>10} {'speed-up':>8}" if args.compare else ""))
    for spec in models:
        for arr in args.array.split(","):
            rows, cols = parse_array(arr)
            config = AccelConfig(rows=rows, cols=cols, dataflow=args.dataflow, dram_bytes=args.dram_bytes)
            r = point(spec, config, args.profile, not args.no_jump, args.compare)
            total = r["compile_s"] + r["model_s"]
            print(f"{spec:16} {arr:6} {args.dataflow:4} {r['insns']:9d} {r['cycles']:12d} "
                  f"{r['compile_s']:10.2f} {r['model_s']:9.2f} {total:8.2f} "
                  f"{r['cycles'] / r['model_s'] / 1e6:10.2f} {total:6.1f}x "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} {r['jumped']:6.0%}"
                  + (f" {r['stepping_s']:10.2f} {r['stepping_s'] / r['model_s']:7.1f}x"
                     if args.compare else ""), flush=True)


if __name__ == "__main__":
    main()
