"""FEIE at stride 2: the compiler's mapping of a kernel row against fixed ones, dense and sparse.

    python benchmarks/feie_phase_sets.py [--array 8x8] [--sparsities 0,0.5,0.7]
                                         [--layers s2.28x28x128,s2.14x14x256] [--quick]

The stride-2 3x3 layers of ResNet-18 (the first conv of conv4_x and conv5_x; pad 1, random
weights) on the ``feie`` array, inputs ReLU-like (zero point -128) with a fraction of
zeros, on the perf back end (the RTL's cycles). Each layer runs with each fixed mapping of
its kernel rows (:data:`MAPPINGS`: one run of 3 taps, the cuts 2 + 1 and 1 + 2, the phase sets
``{0, 2}`` and ``{1}``; ``lower_gemm.row_taps`` patched) and with the compiler's own
choice for a model calibrated at that sparsity (``row_taps`` by ``row_cost`` for the
zeros the calibration measured, ``QLayer.in_zeros``; docs/compiler.md). Prints the cycles
of each, the compiler's choice and its cycles over the best fixed one's (1.000: it picked
the fastest); every output is checked against the golden model.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import Opcode, decode
from celosia.sw.cli import parse_array
from celosia.sw.compiler import compile_model, lower_gemm
from celosia.sw.driver import golden_forward, run_quantized
from feie_density import relu_input, relu_model  # benchmarks/: the script's directory

#: name -> (H, W, C, N): 3x3, stride 2, pad 1
LAYERS = {"s2.28x28x128": (28, 28, 128, 256), "s2.14x14x256": (14, 14, 256, 512)}
#: ``--quick``: a small layer of the same kind (seconds; the test suite runs it)
QUICK = {"s2.12x12x16": (12, 12, 16, 16)}


#: name -> a 3-wide stride-2 kernel row's GEMMs ``(first tap, taps, step)`` (row_taps)
MAPPINGS = {"run 3": [(0, 3, 1)], "2 + 1": [(0, 2, 1), (2, 1, 1)], "1 + 2": [(0, 1, 1), (1, 2, 1)],
            "sets": [(0, 2, 2), (1, 1, 1)]}


def fixed(row_taps, mapping):
    """``row_taps`` with a 3-wide undilated kernel row at stride 2 mapped as ``mapping``."""
    def taps(Fw, sw, dw, k_len, config, *args):
        if (Fw, sw, dw) == (3, 2, 1):
            return mapping
        return row_taps(Fw, sw, dw, k_len, config, *args)
    return taps


def compile_with(qmodel, config, mapping):
    row_taps = lower_gemm.row_taps
    lower_gemm.row_taps = fixed(row_taps, mapping)
    try:
        return compile_model(qmodel, config)
    finally:
        lower_gemm.row_taps = row_taps


def kinds(program):
    """The mapping a program's GEMMs take: a name of :data:`MAPPINGS`."""
    gemms = [(d["win_w"], d["dil_w"]) for node in program.nodes for d in map(decode, node.insns)
             if d["op"] == Opcode.GEMM]
    got = frozenset(gemms)
    if got == {(2, 1), (1, 1)}:            # a cut into 2 and 1 taps: which comes first
        return "2 + 1" if gemms[0] == (2, 1) else "1 + 2"
    return {frozenset({(3, 1)}): "run 3", frozenset({(2, 2), (1, 1)}): "sets"}.get(got, str(sorted(got)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--array", default="8x8", help="ROWSxCOLS (default 8x8)")
    ap.add_argument("--sparsities", default="0,0.5,0.7", help="comma list of zero fractions")
    ap.add_argument("--layers", help=f"comma list of {', '.join(LAYERS)} (default all)")
    ap.add_argument("--quick", action="store_true", help=f"the small layer {', '.join(QUICK)} instead")
    args = ap.parse_args(argv)
    rows, cols = parse_array(args.array)
    known = {**LAYERS, **QUICK}
    names = args.layers.split(",") if args.layers else []
    if unknown := [n for n in names if n not in known]:
        ap.error(f"unknown layer(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    layers = QUICK if args.quick else {n: known[n] for n in names} if names else LAYERS
    config = AccelConfig(rows=rows, cols=cols, dataflow="feie", dram_bytes=1 << 26)
    pe = rows * cols
    print(f"{'array':<7}{'layer':<15}{'zeros':>6}" + "".join(f"{k:>10}" for k in MAPPINGS)
          + f"{'compiler':>10}{'cycles':>10}{'util':>8}{'/best':>8}")
    bad = 0
    for name, (h, w, c, n) in layers.items():
        i = list(known).index(name)         # the seeds: the same layer, the same inputs
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            qmodel = relu_model((h, w, c, n, 3), seed=i, sparsity=sparsity, stride=2)
            macs = qmodel.layers[0].macs
            programs = {k: compile_with(qmodel, config, m) for k, m in MAPPINGS.items()}
            chosen = compile_model(qmodel, config)
            x_q = qmodel.quantize_input(relu_input((h, w, c, n, 3), sparsity, seed=100 + i)).reshape(1, -1)
            golden = golden_forward(qmodel, x_q)
            cycles = {}
            for kind, program in [*programs.items(), ("compiler", chosen)]:
                result = run_quantized(qmodel, x_q, config, backend="perf", program=program, profile=False)
                bad += not np.array_equal(result.y_q, golden)
                cycles[kind] = result.report["cycles"]
            best = min(cycles[k] for k in MAPPINGS)
            got = cycles["compiler"]
            print(f"{args.array:<7}{name:<15}{sparsity:>6.0%}" + "".join(f"{cycles[k]:>10}" for k in MAPPINGS)
                  + f"{kinds(chosen):>10}{got:>10}{macs / (pe * got):>8.1%}{got / best:>8.3f}", flush=True)
    print("every output equals the golden model's" if not bad else f"{bad} runs differ from golden")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
