"""FEIE zero skipping: layer cycles against activation sparsity, measured in one run.

    python benchmarks/feie_density.py [--array 8x8] [--quick] [--layers resnet18.conv4_x,...]
                                      [--sparsities 0,0.25,0.5,0.7,0.9] [--no-digits]
                                      [--backend verilator|perf] [--set FIELD=VALUE ...]

Part 1 runs full-size 3x3 convolution layers (random weights; ResNet-18's conv2_x ..
conv5_x 3x3 layers, stride 1, and VGG-16's conv3_1) on the Verilator model of the
``feie`` array with ReLU-like inputs (uniform in [0, 1), a fraction of them 0: the
calibration range is [0, 1), so a real zero is the input zero point -128, which feie
skips) at 0, 25, 50, 70 and 90% zeros, and each layer once on ``os`` and ``ws`` (dense
arrays: their cycles do not depend on the data). Each sparsity's feie run uses the layer
quantized on calibration data of that sparsity, as a user calibrates on representative
inputs: the compiler maps feie's GEMMs for the zeros the calibration measured
(``QLayer.in_zeros``; docs/dataflows.md, FEIE), so the dense run and a sparse one may run
different programs. ``--quick`` runs two small layers
instead (seconds). Columns: ``cycles`` (the accelerator's cycle counter: the whole layer,
loads included), ``util`` (MACs / (PEs * cycles)), ``speed-up`` (feie's dense cycles /
these), ``ideal`` (``1 / (1 - zeros)``), ``of ideal`` (speed-up / ideal), ``os/feie`` and
``ws/feie`` (their cycles over these: above 1, feie is faster), ``mac_cycles`` (cycles in
which the array multiplied an input), ``zero_skips`` and ``bound`` (the report's roofline
bound of the program: compute, bandwidth or latency; the compute bound counts the MACs on
non-zero inputs, ``effective_macs``) and ``taps`` (how the compiler cut the kernel rows
into GEMMs for the calibration's zeros, ``lower_gemm.row_taps``: the taps per GEMM of the
program's windowed GEMMs, ``3``, ``2+1`` or ``1``; docs/dataflows.md, "The mapping follows
the zeros").

Part 2 runs the bundled digits CNNs (``digits_cnn``, ``digits_resnet``) on 8 held-out
images on feie, os and ws, per layer: the fraction of the layer's inputs that are real
zeros (the golden model's activations equal to the layer's input zero point), and the
per-layer cycles of each array.

Every output is checked against the golden model (the script exits with status 1 if one
differs). ``--backend perf`` runs the perf model instead of Verilator: the same cycles
(tests/sim/test_perf.py holds it equal to the RTL), in seconds per full-size layer.
``--set FIELD=VALUE`` sets a config field on every array as ``celosia --set`` does (e.g.
``--set feie_read_ports=1``: the feie engine with one ifmap read port).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from types import SimpleNamespace

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.sim import verilator
from celosia.sw.cli import config_from_args, parse_array
from celosia.sw.compiler import compile_model
from celosia.sw.driver import golden_forward, pgo_training_job, run_quantized
from celosia.sw.quant import CalibrationWarning, quantize_graph
from celosia.sw.zoo import conv_layer

#: name -> (H, W, C, N, K): the stride-1, pad-1 3x3 layers
LAYERS = {
    "resnet18.conv2_x": (56, 56, 64, 64, 3),
    "resnet18.conv3_x": (28, 28, 128, 128, 3),
    "resnet18.conv4_x": (14, 14, 256, 256, 3),
    "resnet18.conv5_x": (7, 7, 512, 512, 3),
    "vgg16.conv3_1": (56, 56, 128, 256, 3),
}
QUICK = {"small.14x14x16": (14, 14, 16, 16, 3), "small.8x8x32": (8, 8, 32, 32, 3)}
SPARSITIES = (0.0, 0.25, 0.5, 0.7, 0.9)
DATAFLOWS = ("feie", "os", "ws")
#: The config fields of ``--set`` (main fills it): on every config this script builds.
FIELDS: dict = {}


def dram_size(need: int) -> int:
    size = AccelConfig().dram_bytes
    while size < need:
        size *= 2
    return size


def relu_model(shape, seed, sparsity=0.0, stride=1):
    """A one-layer conv model (``shape`` = H, W, C, N, K; pad ``K // 2``) quantized on
    ReLU-like data with a fraction ``sparsity`` of zeros (representative inputs, as a user
    calibrates: the layer's ``in_zeros``, which feie's compiler maps for): input zero point
    -128. benchmarks/feie_phase_sets.py uses it too."""
    h, w, c, n, k = shape
    graph = conv_layer(h, w, c, n, k, stride=stride, pad=k // 2, seed=seed)
    rng = np.random.default_rng(seed)
    calib = rng.uniform(0, 1, (4, h, w, c)).astype(np.float32)
    calib[rng.random(calib.shape) < sparsity] = 0.0
    calib.reshape(4, -1)[0, 0] = 0.0
    with warnings.catch_warnings():           # 4 samples: enough for one layer's range
        warnings.simplefilter("ignore", CalibrationWarning)
        return quantize_graph(graph, calib)


def relu_input(shape, sparsity, seed):
    h, w, c, _, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 1, (1, h, w, c)).astype(np.float32)
    x[rng.random(x.shape) < sparsity] = 0.0
    return x


#: the back end hw_run uses (``--backend``)
BACKEND = {"name": "verilator"}


def hw_run(qmodel, x, config, profile=False, program=None):
    """Run on the back end (Verilator unless ``--backend perf``; ``program``: compiled
    already); the report, after checking the output against golden. On perf only ``feie``
    runs compute their outputs (its timing reads the data); the ``os`` / ``ws`` reference
    runs there model the timing only (``report["outputs"] == "golden"``), so only their
    cycles are figures."""
    x_q = qmodel.quantize_input(x).reshape(len(x), -1)
    result = run_quantized(qmodel, x_q, config, backend=BACKEND["name"], profile=profile, program=program)
    if not np.array_equal(result.y_q, golden_forward(qmodel, x_q)):
        raise SystemExit(f"{qmodel.name} on {config.array} {config.dataflow}: differs from golden")
    return result.report


def part1(layers, rows, cols, sparsities):
    """Each layer quantized once per sparsity, on calibration data of that sparsity (feie's
    compiler chooses its GEMMs for the zeros the calibration measured; os and ws run the
    dense one), compiled once per dataflow (for the largest DRAM), the DRAM then sized to
    the largest program, one Verilator model per dataflow."""
    levels = sorted({0.0, *sparsities})
    models = {(name, s): relu_model(shape, seed=i, sparsity=s)
              for i, (name, shape) in enumerate(layers.items()) for s in levels}
    programs, configs = {}, {}
    for df in DATAFLOWS:
        base = AccelConfig(**{"dram_bytes": 1 << 28, **FIELDS, "rows": rows, "cols": cols, "dataflow": df})
        progs = {key: compile_model(qm, base) for key, qm in models.items()
                 if df == "feie" or key[1] == 0.0}
        configs[df] = dataclasses.replace(base, dram_bytes=dram_size(max(p.layout(1)["end"]
                                                                         for p in progs.values())))
        programs[df] = {name: dataclasses.replace(p, config=configs[df]) for name, p in progs.items()}
        if BACKEND["name"] == "verilator":
            verilator.build(configs[df], training_job=pgo_training_job)
    pe = rows * cols
    print(f"\n3x3 layers on {rows}x{cols}, one sample, ReLU-like inputs (zero point "
          f"-128); feie at each sparsity, os / ws dense; back end {BACKEND['name']}")
    head = (f"{'layer':<18}{'zeros':>6}{'cycles':>10}{'util':>7}{'speed-up':>9}{'ideal':>7}{'of ideal':>9}"
            f"{'os/feie':>8}{'ws/feie':>8}{'mac_cycles':>11}{'zero_skips':>11}  {'bound':<10} taps")
    print(head, flush=True)
    for i, (name, shape) in enumerate(layers.items()):
        qm = models[name, 0.0]
        dense = relu_input(shape, 0.0, 100 + i)
        ref = {df: hw_run(qm, dense, configs[df], program=programs[df][name, 0.0])["cycles"]
               for df in ("os", "ws")}
        base = None
        for s in sparsities:
            rep = hw_run(models[name, s], relu_input(shape, s, 100 + i), configs["feie"],
                         program=programs["feie"][name, s])
            cyc = rep["cycles"]
            base = base or cyc
            ideal = 1 / (1 - s)
            bound = (rep.get("roofline") or {}).get("bound", "")
            print(f"{name:<18}{s:>6.0%}{cyc:>10}{rep['macs'] / (pe * cyc):>7.1%}{base / cyc:>9.2f}"
                  f"{ideal:>7.2f}{base / cyc / ideal:>9.2f}{ref['os'] / cyc:>8.2f}{ref['ws'] / cyc:>8.2f}"
                  f"{rep['mac_cycles']:>11}{rep['zero_skips']:>11}  {bound:<10} "
                  f"{gemm_taps(programs['feie'][name, s])}", flush=True)
        print(f"{name:<18}{'':>6}  os {ref['os']} cycles ({qm.macs_per_sample() / (pe * ref['os']):.1%}), "
              f"ws {ref['ws']} cycles ({qm.macs_per_sample() / (pe * ref['ws']):.1%})", flush=True)


def gemm_taps(program) -> str:
    """The distinct taps per windowed GEMM of ``program`` (``win_w``), largest first,
    joined by ``+`` (``2+1``: a kernel row cut into GEMMs of 2 and 1 taps)."""
    taps = {d["win_w"] for node in program.nodes for d in map(isa.decode, node.insns)
            if d["op"] == isa.Opcode.GEMM and d["window"]}
    return "+".join(map(str, sorted(taps, reverse=True))) or "-"


def layer_input_zeros(qmodel, x_q):
    """Per layer: the fraction of its (first) input equal to its input zero point, from the
    golden model's activations."""
    def tensor(name):
        if name == qmodel.INPUT:
            return x_q
        i = next(i for i, layer in enumerate(qmodel.layers) if layer.output == name)
        view = SimpleNamespace(INPUT=qmodel.INPUT, layers=qmodel.layers[:i + 1],
                               layer_inputs=qmodel.layer_inputs)
        return golden_forward(view, x_q)
    return [float((tensor(qmodel.layer_inputs(i)[0]) == layer.in_zp).mean())
            for i, layer in enumerate(qmodel.layers)]


def part2(rows, cols):
    from celosia.sw.data import MODELS, digits_split
    from celosia.sw.importer import load_onnx
    x_train, x_test, _, _ = digits_split()
    for name in ("digits_cnn", "digits_resnet"):
        graph = load_onnx(MODELS[name])
        shape = graph.tensors[graph.inputs[0]].shape[1:]
        qm = quantize_graph(graph, x_train.reshape(-1, *shape))
        x = x_test[:8].reshape(-1, *shape)
        x_q = qm.quantize_input(x).reshape(len(x), -1)
        zeros = layer_input_zeros(qm, x_q)
        reps = {}
        for df in DATAFLOWS:
            reps[df] = hw_run(qm, x, AccelConfig(rows=rows, cols=cols, dataflow=df, **FIELDS), profile=True)
        print(f"\n{name} on {rows}x{cols}, 8 images: per-layer cycles (one run of one image)")
        print(f"{'layer':<14}{'op':<8}{'zeros':>7}{'feie':>8}{'os':>8}{'ws':>8}{'os/feie':>9}{'ws/feie':>9}"
              f"{'zero_skips':>11}")
        for k, layer in enumerate(qm.layers):
            c = {df: reps[df]["layers"][k]["cycles"] for df in DATAFLOWS}
            print(f"{layer.name[:13]:<14}{layer.op:<8}{zeros[k]:>7.0%}{c['feie']:>8}{c['os']:>8}{c['ws']:>8}"
                  f"{c['os'] / max(c['feie'], 1):>9.2f}{c['ws'] / max(c['feie'], 1):>9.2f}"
                  f"{reps['feie']['layers'][k]['zero_skips']:>11}")
        tot = {df: reps[df]["cycles_per_run"] for df in DATAFLOWS}
        print(f"{'total':<14}{'':<8}{'':>7}{tot['feie']:>8}{tot['os']:>8}{tot['ws']:>8}"
              f"{tot['os'] / tot['feie']:>9.2f}{tot['ws'] / tot['feie']:>9.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="8x8")
    ap.add_argument("--quick", action="store_true", help="two small layers instead of the full-size ones")
    ap.add_argument("--layers", help=f"comma list of {', '.join(LAYERS)}")
    ap.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--no-digits", action="store_true", help="skip part 2 (the digits CNNs)")
    ap.add_argument("--backend", choices=("verilator", "perf"), default="verilator",
                    help="verilator (default) or perf (the cycle model: the RTL's cycles, faster)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a config field on every array (as celosia --set), e.g. feie_read_ports=1")
    args = ap.parse_args(argv)
    BACKEND["name"] = args.backend
    rows, cols = parse_array(args.array)
    config = config_from_args(argparse.Namespace(array=args.array, dataflow="feie", set=args.set))
    default = AccelConfig(rows=rows, cols=cols, dataflow="feie")
    FIELDS.update({k: v for k, v in config.to_dict().items() if v != getattr(default, k)})
    if FIELDS:
        print("config:", " ".join(args.set))
    layers = QUICK if args.quick else LAYERS
    if args.layers:
        layers = {n: LAYERS[n] for n in args.layers.split(",")}
    part1(layers, rows, cols, [float(s) for s in args.sparsities.split(",")])
    if not args.no_digits:
        part2(rows, cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
