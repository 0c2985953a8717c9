"""DRAM bytes and cycles per inference with resident weights (the initialization graph) and
with every weight streamed, on the bundled digits models.

    python benchmarks/resident_weights.py [--array 8x8] [--dataflows ws,os,feie,rs]
                                          [--set weight_rows=1024] [--backend golden|verilator]
                                          [--samples 8] [--no-keep-outputs]

For each model and dataflow the model is compiled twice, with resident weights (the
default) and with ``resident_weights=False``, and run on the back end. Printed per row:
the layers whose weights stay on chip, the weight-buffer rows they take, the DRAM bytes
the initialization graph reads once per job, the DRAM bytes per inference streamed and
resident and their ratio (from the report: the programs' static traffic, which the RTL
counters equal); with ``--backend verilator`` also the measured cycles per inference both
ways and their ratio, and the initialization run's cycles. The last two columns are the
layers whose output stays on chip as the next layer's input (``keep_outputs``, on unless
``--no-keep-outputs``) and the resident program's DRAM bytes per inference with every
output through DRAM instead. Every hardware output is checked against the golden model;
the script exits with status 1 if any differs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from celosia.sw.cli import _add_config_args, config_from_args
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.driver import run
from celosia.sw.importer import load_onnx
from celosia.sw.quant import quantize_graph

MODELS = ("digits_mlp", "digits_cnn", "digits_resnet")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataflows", default="ws,os,feie,rs")
    p.add_argument("--backend", choices=("golden", "verilator"), default="golden")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--no-keep-outputs", dest="keep_outputs", action="store_false",
                   help="every layer's output through DRAM (docs/compiler.md)")
    _add_config_args(p)
    args = p.parse_args(argv)
    x_train, x_test, _, _ = digits_split()
    print(f"{'model':<14}{'df':<6}{'resident layers':>16}{'rows':>7}{'init B':>8}"
          f"{'B/inf streamed':>16}{'B/inf resident':>16}{'ratio':>7}"
          + (f"{'cyc streamed':>14}{'cyc resident':>14}{'ratio':>7}{'init cyc':>10}"
             if args.backend != "golden" else "") + f"{'kept':>6}{'B/inf via DRAM':>16}")
    failed = 0
    for name in MODELS:
        graph = load_onnx(DATA_DIR / f"{name}.onnx")
        shape = graph.tensors[graph.inputs[0]].shape[1:]
        qmodel = quantize_graph(graph, x_train.reshape(-1, *shape))
        x = x_test[:args.samples].reshape(-1, *shape)
        golden = run(qmodel, x, config_from_args(args), backend="golden").y_q
        for df in args.dataflows.split(","):
            args.dataflow = df
            config = config_from_args(args)
            on = run(qmodel, x, config, backend=args.backend, profile=False, keep_outputs=args.keep_outputs)
            off = run(qmodel, x, config, backend=args.backend, profile=False, resident_weights=False,
                      keep_outputs=args.keep_outputs)
            failed += not (np.array_equal(on.y_q, golden) and np.array_equal(off.y_q, golden))
            res = on.report["resident_weights"]
            before, after = res["dram_bytes_per_inference_streamed"], res["dram_bytes_per_inference"]
            line = (f"{name:<14}{df:<6}{len(res['layers']):>16}{res['weight_rows']:>7}"
                    f"{res['init_dram_bytes']:>8}{before:>16g}{after:>16g}{after / before:>7.2f}")
            if args.backend != "golden":
                c_on, c_off = on.report["cycles_per_run"], off.report["cycles_per_run"]
                init = on.report.get("init", {}).get("cycles", 0)
                line += f"{c_off:>14}{c_on:>14}{c_on / c_off:>7.2f}{init:>10}"
            kept = on.report["kept_outputs"]
            line += f"{len(kept['layers']):>6}{kept['dram_bytes_per_inference_through_dram']:>16g}"
            print(line, flush=True)
    if failed:
        print(f"{failed} run(s) differ from the golden model", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
