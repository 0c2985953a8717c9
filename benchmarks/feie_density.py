"""FEIE zero skipping: compute cycles against activation sparsity, measured in one run.

    python benchmarks/feie_density.py [--array 8x8] [--layer 8x8x16:16k3] [--samples 4]

Runs one convolution layer (random weights) on the Verilator model of the ``feie``
array and, for reference, of the ``os`` array (the same engine without skipping),
with inputs whose activations are zero with probability 0%, 25%, 50%, 75% and 90%
(the rest uniform in [0, 1)). Every output is checked against the golden model.
Prints, per sparsity: the array-busy cycles of both, the MAC cycles FEIE skipped
(``zero_skips``) and the ratio.

FEIE skips an input equal to the zero point (a real zero; the GEMM carries the zero
point, ``in_zp``). The calibration range here is [0, 1): like a ReLU output, zero
point -128. A reduction step is skipped only when its input is zero in every row of
a block of ``rows`` output pixels, so the gain appears at high sparsity.
"""

from __future__ import annotations

import argparse

import numpy as np

from celosia.rtl.config import AccelConfig
from celosia.sw.cli import parse_array
from celosia.sw.driver import run
from celosia.sw.quant import quantize_graph
from celosia.sw.zoo import conv_layer

try:  # the same layer spec as benchmarks/sim_speed.py
    from sim_speed import parse_layer
except ImportError:  # run from another folder
    import importlib.util
    from pathlib import Path
    _spec = importlib.util.spec_from_file_location("sim_speed", Path(__file__).with_name("sim_speed.py"))
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    parse_layer = _mod.parse_layer

SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="8x8")
    ap.add_argument("--layer", default="8x8x16:16k3", help="conv layer HxWxC:NkK[sS]")
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args(argv)
    rows, cols = parse_array(args.array)
    h, w, c, n, k, s = parse_layer(args.layer)
    rng = np.random.default_rng(0)
    graph = conv_layer(h, w, c, n, k, stride=s, seed=1)
    calib = rng.uniform(0, 1, (8, h, w, c)).astype(np.float32)
    calib[0, 0, 0, 0] = 0.0  # range [0, 1): a ReLU output, zero point -128
    qmodel = quantize_graph(graph, calib)
    configs = {df: AccelConfig(rows=rows, cols=cols, dataflow=df) for df in ("os", "feie")}
    print(f"layer {qmodel.name} on {args.array}, {args.samples} samples, input zero point "
          f"{qmodel.input_zp}; array-busy cycles (compute_busy) summed over the samples")
    print(f"{'zeros':>6}{'os busy':>10}{'feie busy':>11}{'zero_skips':>12}{'feie/os':>9}")
    for sparsity in SPARSITIES:
        x = rng.uniform(0, 1, (args.samples, h, w, c)).astype(np.float32)
        x[rng.random(x.shape) < sparsity] = 0.0
        golden = run(qmodel, x, configs["os"], backend="golden")
        rep = {}
        for df, config in configs.items():
            result = run(qmodel, x, config, backend="verilator", profile=False)
            assert np.array_equal(result.y_q, golden.y_q), f"{df} differs from golden"
            rep[df] = result.report
        os_busy, feie_busy = rep["os"]["compute_busy"], rep["feie"]["compute_busy"]
        print(f"{sparsity:>6.0%}{os_busy:>10}{feie_busy:>11}{rep['feie']['zero_skips']:>12}"
              f"{feie_busy / os_busy:>9.2f}")


if __name__ == "__main__":
    main()
