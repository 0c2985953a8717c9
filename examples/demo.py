"""``celosia demo``: the bundled digits MLP on the simulated accelerator.

Calibrates on the training split, measures float and int8 accuracy on every
held-out image with the golden model, runs ``samples`` held-out images on the
chosen back end and checks them bit for bit against the golden model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from celosia.rtl.config import AccelConfig

MODEL = Path(__file__).resolve().parent / "digits_mlp.onnx"


def demo(config: AccelConfig, backend: str = "verilator", samples: int = 32, out=sys.stdout) -> int:
    from celosia.examples.digits import digits_split
    from celosia.sw.driver import run
    from celosia.sw.graph import run_float
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    def say(msg):
        print(msg, file=out, flush=True)

    x_train, x_test, y_train, y_test = digits_split()
    graph = load_onnx(MODEL)
    qmodel = quantize_graph(graph, x_train)
    say(f"model {MODEL.name}: {' -> '.join(str(l.in_features) for l in qmodel.layers)} -> "
        f"{qmodel.out_features}, {qmodel.macs_per_sample()} MACs per image")
    float_acc = float((run_float(graph, x_test).argmax(1) == y_test).mean())
    golden = run(qmodel, x_test, config, backend="golden")
    int8_acc = float((golden.y.argmax(1) == y_test).mean())
    say(f"accuracy on {len(y_test)} held-out images: float {float_acc:.2%}, int8 {int8_acc:.2%} "
        f"(golden model)")

    n = min(samples, len(x_test))
    say(f"running {n} held-out images on the {backend} back end, array {config.array} "
        f"({config.dataflow}) ...")
    if backend == "verilator":
        from celosia.sim import verilator
        t0 = time.perf_counter()
        say("building the Verilator model (about a minute the first time; cached) ...")
        verilator.build(config)
        say(f"  ready in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    result = run(qmodel, x_test[:n], config, backend=backend)
    wall = time.perf_counter() - t0
    exact = bool(np.array_equal(result.y_q, golden.y_q[:n]))
    hw_acc = float((result.y.argmax(1) == y_test[:n]).mean())
    say(f"bit-exact against the golden model: {'yes' if exact else 'NO'} "
        f"({int((result.y_q == golden.y_q[:n]).all(axis=1).sum())}/{n} images)")
    say(f"accuracy of the {n} hardware runs: {hw_acc:.2%}")
    rep = result.report
    if rep.get("cycles") is not None:
        say(f"cycles: {rep['cycles']} total, {rep['cycles'] / n:.0f} per image; "
            f"utilization {rep['utilization']:.2%} of {config.rows * config.cols} PEs; "
            f"DRAM {rep['dram_bytes_read']} B read, {rep['dram_bytes_written']} B written")
        for layer in rep["layers"]:
            say(f"  {layer['name']:<6} {layer['macs'] // n:>6} MACs/image  {layer['cycles']:>6} cycles  "
                f"array busy {layer['compute_cycles']:>6}  utilization {layer['utilization']:.2%}")
    say(f"wall time {wall:.1f} s")
    return 0 if exact else 1
