"""The model zoo: layer shapes against published MAC and parameter counts, lazy weights, resolve()."""

import time

import numpy as np
import pytest

from celosia.sw import zoo
from celosia.sw.data import MODELS
from celosia.errors import InputError
from celosia.sw.graph import fuse_activations, run_float

# (MACs, params) as published; the tolerance is a few per cent (BN folded into a
# conv bias, no LRN, etc.).
PUBLISHED = {
    "lenet5": (416_520, 61_706),          # 32x32 LeNet-5, C3 fully connected, C5 5x5 conv
    "alexnet": (724e6, 61e6),             # seed 003: 724M MACs, 61M params
    "vgg16": (15.5e9, 138e6),             # seed 003: 138M params
    "resnet18": (1.8e9, 11.7e6),
    "resnet50": (4.1e9, 25.6e6),
    "mobilenet_v1": (569e6, 4.2e6),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_totals_match_published(name):
    g = zoo.build(name)
    g.validate()
    macs, params = PUBLISHED[name]
    assert g.total_macs() == pytest.approx(macs, rel=0.03)
    assert g.num_params() == pytest.approx(params, rel=0.03)
    assert g.total_macs(batch=4) == 4 * g.total_macs()
    assert g.tensors[g.outputs[0]].shape == (None, 10 if name == "lenet5" else 1000)


def test_zoo_names():
    assert set(zoo.ZOO) == {"lenet5", "alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v1"}


def test_alexnet_grouped_convs_seed003():
    """Seed 003: CONV1-5 666M MACs with CONV2/4/5 in two groups; 724M with the FC layers."""
    g = zoo.build("alexnet")
    conv = {n.name: g.node_macs(n) for n in g.nodes if n.op == "conv"}
    assert sum(conv.values()) == pytest.approx(666e6, rel=0.005)
    assert g.total_macs() == pytest.approx(724e6, rel=0.005)
    assert {n.name: n.attrs["groups"] for n in g.nodes if n.op == "conv"} == {
        "conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}
    assert conv["conv1"] == 55 * 55 * 96 * 11 * 11 * 3
    assert conv["conv2"] == 27 * 27 * 256 * 5 * 5 * 48
    assert g.tensors["flatten.out"].shape == (None, 9216)
    assert g.tensors["conv2.weight"].shape == (256, 5, 5, 48)


def test_exact_lenet5():
    g = zoo.build("lenet5")
    assert g.total_macs() == 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert g.num_params() == 156 + 2_416 + 48_120 + 10_164 + 850
    assert g.total_param_bytes() == (150 + 2400 + 48000 + 10080 + 840) + 4 * (6 + 16 + 120 + 84 + 10)


def test_vgg16_is_lazy_and_instant():
    t0 = time.perf_counter()
    g = zoo.build("vgg16")
    assert time.perf_counter() - t0 < 2.0
    consts = [t for t in g.tensors.values() if t.is_const]
    assert consts and all(t.is_lazy and t.data is None for t in consts)
    summary = g.summary()
    assert sum(r["macs"] for r in summary) == g.total_macs()
    assert g.fmap_bytes("input") == 224 * 224 * 3


def test_lazy_weights_deterministic_and_runnable():
    a, b, c = zoo.build("lenet5", seed=0), zoo.build("lenet5", seed=0), zoo.build("lenet5", seed=1)
    np.testing.assert_array_equal(a.const("c1.weight"), b.const("c1.weight"))
    assert not np.array_equal(a.const("c1.weight"), c.const("c1.weight"))
    assert not np.array_equal(a.const("c1.weight"), a.const("c3.weight")[:6, :, :, :1])
    w = a.const("f6.weight")
    assert w.dtype == np.float32 and w.shape == (120, 84) and 0.05 < w.std() < 0.2
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 1)).astype(np.float32)
    y = run_float(a, x)
    assert y.shape == (2, 10) and np.isfinite(y).all()
    np.testing.assert_array_equal(y, run_float(b.materialize(), x))
    assert b.tensors["c1.weight"].data is not None
    # activations are already fused: fuse_activations changes nothing
    assert [n.op for n in fuse_activations(a).nodes] == [n.op for n in a.nodes]


def test_mobilenet_depthwise_and_resnet_blocks():
    g = zoo.build("mobilenet_v1")
    dw = g.node("conv1.dw")
    assert dw.attrs["groups"] == 32 and g.tensors["conv1.dw.weight"].shape == (32, 3, 3, 1)
    assert dw.attrs["activation"] == "relu6"
    assert g.tensors["conv13.pw.out"].shape == (None, 7, 7, 1024)
    r = zoo.build("resnet50")
    assert sum(n.op == "add" for n in r.nodes) == 16
    assert r.tensors["layer4.2.add.out"].shape == (None, 7, 7, 2048)
    r18 = zoo.build("resnet18")
    assert [n.name for n in r18.nodes if n.name.endswith("downsample")] == [
        "layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample"]


def test_resolve(tmp_path):
    digits = MODELS["digits_mlp"]
    assert [n.op for n in zoo.resolve(digits).nodes][0] == "fc"
    g = zoo.resolve("zoo:resnet18")
    assert g.name == "resnet18" and g.total_macs() == zoo.build("resnet18").total_macs()
    assert zoo.resolve("zoo:MobileNet-v1").name == "mobilenet_v1"
    with pytest.raises(InputError, match="no model 'resnet152' in the zoo; models: lenet5"):
        zoo.resolve("zoo:resnet152")
    with pytest.raises(InputError, match="expected 'zoo:NAME'"):
        zoo.resolve("resnet18")


# The big models take minutes to quantize and compile (millions of instructions):
# they run in the slow target (`pytest -m slow`, README "Long tests").
_FAST_ZOO = ("lenet5", "mobilenet_v1", "resnet18")


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
@pytest.mark.parametrize("array", ["8x8", "16x16"])
@pytest.mark.parametrize("name", [n if n in _FAST_ZOO else pytest.param(n, marks=pytest.mark.slow)
                                  for n in PUBLISHED])
def test_zoo_compiles(name, array, dataflow):
    """Every zoo model quantizes (one random calibration image) and compiles, for the
    plain-GEMM lowering (ws, os, feie) and the row-stationary one; the program performs
    exactly the graph's MACs and has parameters for every layer."""
    from celosia.rtl.config import AccelConfig, parse_array
    from celosia.sw.compiler import compile_model
    from celosia.sw.quant import quantize_graph

    graph = zoo.build(name)
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    qmodel = quantize_graph(graph, np.random.default_rng(0).random((1, *shape), dtype=np.float32))
    rows, cols = parse_array(array)
    program = compile_model(qmodel, AccelConfig(rows=rows, cols=cols, dataflow=dataflow))
    assert sum(node.macs for node in program.nodes) == graph.total_macs(1)
    assert [node.name for node in program.nodes] == [layer.name for layer in qmodel.layers]
    assert all(node.insns for node in program.nodes)
    assert len(program.static) >= sum(l.w.size for l in qmodel.layers if l.w is not None)


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
@pytest.mark.parametrize("array", ["4x4", "8x16"])
@pytest.mark.parametrize("name", ["lenet5"] + [pytest.param(n, marks=pytest.mark.slow)
                                               for n in ("mobilenet_v1", "resnet18", "alexnet")])
def test_zoo_compiles_on_other_shapes(name, array, dataflow):
    """As :func:`test_zoo_compiles`, on a small and a non-square array in every dataflow:
    before 64186b7 the LOAD scheduler stopped on an assertion for ResNet-18 on 4x4 in
    every dataflow and on 8x16 feie (docs/compiler.md, "LOAD queue room")."""
    test_zoo_compiles(name, array, dataflow)
