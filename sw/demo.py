"""``celosia demo``: the bundled digits models on the simulated accelerator.

For each model (the MLP, the CNN conv-relu-conv-relu-maxpool-fc, the residual
CNN with a stride-2 conv, Add and average pooling; all shipped in
:mod:`celosia.sw.data` and trained by the scripts in ``examples/``): calibrates on
the training split, measures float and int8 accuracy on every held-out image with
the golden model, runs ``samples`` held-out images on the chosen back end and
checks them bit for bit against the golden model.

``digits_cnn_tflite`` (not in the default set) is the CNN as an int8 ``.tflite``
file: imported with its own quantization (no calibration), run through LiteRT's
reference kernels (when ``ai-edge-litert`` is installed) and on the hardware, and
the two compared bit for bit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from celosia.errors import InputError
from celosia.rtl.config import AccelConfig
from celosia.sw.data import MODELS, TFLITE_MODELS, digits_split

__all__ = ["MODELS", "MODEL", "demo"]

#: The demo's default single model (benchmarks, tests).
MODEL = MODELS["digits_mlp"]


def demo(config: AccelConfig, backend: str = "verilator", samples: int = 32, out=sys.stdout,
         models=tuple(MODELS)) -> int:
    """Run the demo for ``models``; 0 if every hardware output equals the golden model."""
    def say(msg):
        print(msg, file=out, flush=True)

    if backend == "verilator":
        from celosia.sim import verilator
        from celosia.sw.driver import pgo_training_job
        t0 = time.perf_counter()
        say(f"building the Verilator model of the {config.array} array (about a minute the "
            f"first time; cached) ...")
        verilator.build(config, training_job=pgo_training_job)
        say(f"  ready in {time.perf_counter() - t0:.1f} s")
    failed = 0
    for name in models:
        if name in TFLITE_MODELS:
            failed += _demo_tflite(TFLITE_MODELS[name], config, backend, samples, say)
            continue
        if name not in MODELS:
            raise InputError(f"no demo model '{name}'; models: {', '.join([*MODELS, *TFLITE_MODELS])}")
        failed += _demo_model(MODELS[name], config, backend, samples, say)
    return 1 if failed else 0


def _demo_model(path: Path, config: AccelConfig, backend: str, samples: int, say) -> int:
    from celosia.sw.driver import run
    from celosia.sw.graph import run_float
    from celosia.sw.importer import load_onnx
    from celosia.sw.quant import quantize_graph

    x_train, x_test, y_train, y_test = digits_split()
    graph = load_onnx(path)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    x_train, x_test = x_train.reshape(-1, *shape), x_test.reshape(-1, *shape)
    qmodel = quantize_graph(graph, x_train)
    say(f"\nmodel {path.name}: {' -> '.join(l.op for l in qmodel.layers)}, "
        f"{qmodel.macs_per_sample()} MACs per image")
    float_acc = float((run_float(graph, x_test).argmax(1) == y_test).mean())
    golden = run(qmodel, x_test, config, backend="golden")
    int8_acc = float((golden.y.argmax(1) == y_test).mean())
    say(f"accuracy on {len(y_test)} held-out images: float {float_acc:.2%}, int8 {int8_acc:.2%} "
        f"(golden model)")

    n = min(samples, len(x_test))
    say(f"running {n} held-out images on the {backend} back end, array {config.array} "
        f"({config.dataflow}) ...")
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
        say(f"engines: load busy {rep['load_busy'] / rep['cycles']:.0%}, compute busy "
            f"{rep['compute_busy'] / rep['cycles']:.0%}, store busy "
            f"{rep['store_busy'] / rep['cycles']:.0%}, load and compute at once "
            f"{rep['load_compute_overlap'] / rep['cycles']:.0%} of the cycles")
        for layer in rep["layers"]:
            say(f"  {layer['name']:<24} {layer['op']:<8} {layer['macs'] // n:>7} MACs/image "
                f"{layer['cycles']:>7} cycles  array busy {layer['compute_cycles']:>7}  "
                f"utilization {layer['utilization']:.2%}")
    say(f"wall time {wall:.1f} s")
    return 0 if exact else 1


def _demo_tflite(path: Path, config: AccelConfig, backend: str, samples: int, say) -> int:
    """An int8 .tflite model: LiteRT's reference kernels against the hardware, bit for bit."""
    from celosia.sw.driver import run_quantized
    from celosia.sw.importer import load_tflite

    model = load_tflite(path)
    _, x_test, _, y_test = digits_split()
    n = min(samples, len(x_test))
    x = x_test[:n].reshape(n, *model.input_shape)
    x_q = model.quantize_input(x)
    say(f"\nmodel {path.name} (int8 TFLite, quantization from the file): "
        f"{' -> '.join(l.op for l in model.layers)}")
    say(f"running {n} held-out images on the {backend} back end, array {config.array} "
        f"({config.dataflow}) ...")
    result = run_quantized(model, x_q, config, backend=backend)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        say("LiteRT is not installed (pip install ai-edge-litert): compared with the golden model only")
        from celosia.sim.golden import golden_forward
        ref = golden_forward(model, x_q)
        what = "the golden model"
    else:
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        # The int8 output before the file's DEQUANTIZE, from the int8 input after its QUANTIZE.
        details = {d["name"]: d["index"] for d in it.get_tensor_details()}
        ref = np.zeros((n, model.out_features), np.int8)
        for i in range(n):
            it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1].astype(np.float32))
            it.invoke()
            ref[i] = it.get_tensor(details[model.meta["output_tensor"]]).reshape(-1)
        what = "LiteRT (reference kernels)"
    same = (result.y_q == ref).all(axis=1)
    say(f"bit-exact against {what}: {'yes' if same.all() else 'NO'} ({int(same.sum())}/{n} images); "
        f"accuracy {float((result.y_q.argmax(1) == y_test[:n]).mean()):.2%}")
    return 0 if same.all() else 1
