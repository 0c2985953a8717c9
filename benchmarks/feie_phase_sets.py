"""FEIE at stride 2: phase sets against runs of consecutive taps, dense and sparse.

    python benchmarks/feie_phase_sets.py [--array 8x8] [--sparsities 0,0.5,0.7]
                                         [--layers s2.28x28x128,s2.14x14x256]

The stride-2 3x3 layers of ResNet-18 (the first conv of conv4_x and conv5_x; pad 1, random
weights) on the ``feie`` array, inputs ReLU-like (zero point -128) with a fraction of
zeros, on the perf back end (the RTL's cycles). Each layer is compiled twice: as this
commit's compiler does (``lower_gemm.row_taps``: a kernel row's taps as the phase sets
``{0, 2}``, ``{1}`` where the engine's dense formula gives fewer cycles,
docs/compiler.md) and with ``row_taps`` patched to one run of the 3 taps per kernel row
(the compiler before phase sets). Prints cycles and utilization of both and their ratio
(above 1: the phase sets are faster); every output is checked against the golden model.
The choice is made for dense inputs: with zeros the runs are faster (docs/dataflows.md,
"FEIE", "Measured with phase sets").
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from celosia.rtl.config import AccelConfig
from celosia.sw.cli import parse_array
from celosia.sw.compiler import compile_model, lower_gemm
from celosia.sw.driver import golden_forward, run_quantized
from celosia.sw.quant import quantize_graph
from celosia.sw.zoo import conv_layer

#: name -> (H, W, C, N): 3x3, stride 2, pad 1
LAYERS = {"s2.28x28x128": (28, 28, 128, 256), "s2.14x14x256": (14, 14, 256, 512)}


def runs_only(row_taps):
    """``row_taps`` with a 3-wide undilated kernel row at stride 2 as one run of 3 taps."""
    def taps(Fw, sw, dw, k_len, config, out_h=1, out_w=1):
        if (Fw, sw, dw) == (3, 2, 1):
            return [(0, 3, 1)]
        return row_taps(Fw, sw, dw, k_len, config, out_h, out_w)
    return taps


def relu_model(h, w, c, n, seed):
    graph = conv_layer(h, w, c, n, 3, stride=2, pad=1, seed=seed)
    rng = np.random.default_rng(seed)
    calib = rng.uniform(0, 1, (4, h, w, c)).astype(np.float32)
    calib.reshape(4, -1)[0, 0] = 0.0          # the range starts at 0: zero point -128
    return quantize_graph(graph, calib)


def relu_input(h, w, c, sparsity, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 1, (1, h, w, c)).astype(np.float32)
    x[rng.random(x.shape) < sparsity] = 0.0
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--array", default="8x8", help="ROWSxCOLS (default 8x8)")
    ap.add_argument("--sparsities", default="0,0.5,0.7", help="comma list of zero fractions")
    ap.add_argument("--layers", help=f"comma list of {', '.join(LAYERS)} (default all)")
    args = ap.parse_args(argv)
    rows, cols = parse_array(args.array)
    layers = {n: LAYERS[n] for n in args.layers.split(",")} if args.layers else LAYERS
    config = AccelConfig(rows=rows, cols=cols, dataflow="feie", dram_bytes=1 << 26)
    pe = rows * cols
    print(f"{'array':<7}{'layer':<15}{'zeros':>6}{'runs':>10}{'util':>8}{'phase sets':>12}{'util':>8}"
          f"{'runs/sets':>11}")
    bad = 0
    for name, (h, w, c, n) in layers.items():
        i = list(LAYERS).index(name)        # the seeds: the same layer, the same inputs
        qmodel = relu_model(h, w, c, n, seed=i)
        macs = qmodel.layers[0].macs
        row_taps = lower_gemm.row_taps
        lower_gemm.row_taps = runs_only(row_taps)
        try:
            runs = compile_model(qmodel, config)
        finally:
            lower_gemm.row_taps = row_taps
        programs = {"runs": runs, "sets": compile_model(qmodel, config)}
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            x_q = qmodel.quantize_input(relu_input(h, w, c, sparsity, seed=100 + i)).reshape(1, -1)
            golden = golden_forward(qmodel, x_q)
            cycles = {}
            for kind, program in programs.items():
                result = run_quantized(qmodel, x_q, config, backend="perf", program=program, profile=False)
                bad += not np.array_equal(result.y_q, golden)
                cycles[kind] = result.report["cycles"]
            r, s = cycles["runs"], cycles["sets"]
            print(f"{args.array:<7}{name:<15}{sparsity:>6.0%}{r:>10}{macs / (pe * r):>8.1%}{s:>12}"
                  f"{macs / (pe * s):>8.1%}{r / s:>11.3f}", flush=True)
    print("every output equals the golden model's" if not bad else f"{bad} runs differ from golden")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
