"""CNN ONNX models (conv, BN, pools, residual add, clip, flatten + Gemm) against onnxruntime.

The graph computes NHWC; the imported graph takes the file's NCHW input (a
``transpose`` node converts) and gives NCHW 4-D outputs, so results compare
directly with onnxruntime.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from celosia.errors import ModelError
from celosia.sw.graph import fuse_activations, run_float
from celosia.sw.importer import load_onnx

RNG = np.random.default_rng(77)
TOL = dict(rtol=1e-4, atol=1e-4)


def w(*shape):
    """Random conv / fc weight scaled by 1/sqrt(fan-in) so values stay O(1)."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (RNG.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def save(tmp_path, nodes, inits, in_shape, opset=13, name="cnn.onnx", outputs=("y",)):
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k.startswith("shape") else np.float32), k)
         for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)  # the outputs' shapes, for the checker
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def check(path, x, fused=True):
    """Import, compare with onnxruntime (and again after fuse_activations); return the graph."""
    g = load_onnx(path)
    ref = ort_run(path, x)[0]
    got = run_float(g, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, **TOL)
    if fused:
        np.testing.assert_allclose(run_float(fuse_activations(g), x), ref, **TOL)
    return g


def bn_inits(prefix, c):
    return {f"{prefix}.g": RNG.uniform(0.5, 1.5, c), f"{prefix}.b": rand(c),
            f"{prefix}.m": rand(c), f"{prefix}.v": RNG.uniform(0.5, 2.0, c)}


def bn(prefix, x, y, eps=1e-3):
    return helper.make_node("BatchNormalization", [x, f"{prefix}.g", f"{prefix}.b", f"{prefix}.m",
                                                   f"{prefix}.v"], [y], name=prefix, epsilon=eps)


# --- the building blocks ---------------------------------------------------------------

def test_conv_bn_relu_pool_gap_gemm(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             bn("bn1", "c1", "b1"),
             helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "c2.w"], ["c2"], name="conv2", strides=[2, 2],
                              pads=[0, 1, 1, 0]),
             bn("bn2", "c2", "b2"),
             helper.make_node("Relu", ["b2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    inits = {"c1.w": w(8, 3, 3, 3), "c1.b": rand(8), **bn_inits("bn1", 8),
             "c2.w": w(16, 8, 3, 3), **bn_inits("bn2", 16), "fc.w": w(10, 16), "fc.b": rand(10)}
    path = save(tmp_path, nodes, inits, ["N", 3, 12, 12])
    g = check(path, rand(2, 3, 12, 12))
    assert [n.op for n in g.nodes] == ["transpose", "conv", "relu", "maxpool", "conv", "relu",
                                       "gap", "flatten", "fc"]
    assert g.meta["input_nchw"] and g.tensors["x"].shape == (None, 3, 12, 12)
    assert g.tensors["conv1.weight"].shape == (8, 3, 3, 3) and g.tensors["conv2.weight"].shape == (16, 3, 3, 8)
    assert g.tensors["b2"].shape == (None, 3, 3, 16)              # NHWC inside
    conv2 = g.node("conv2")
    assert conv2.attrs["stride"] == (2, 2) and conv2.attrs["pads"] == (0, 1, 1, 0)
    assert g.node_macs("conv1", batch=2) == 2 * 12 * 12 * 8 * 3 * 3 * 3
    assert g.node_macs("conv2") == 3 * 3 * 16 * 3 * 3 * 8
    assert g.param_bytes("conv1") == 8 * 3 * 3 * 3 + 4 * 8
    f = fuse_activations(g)
    assert [n.op for n in f.nodes] == ["transpose", "conv", "maxpool", "conv", "gap", "flatten", "fc"]
    assert f.node("conv1").attrs["activation"] == "relu"


def test_bn_folding_values(tmp_path):
    """The folded weights and bias follow w*gamma/sqrt(var+eps), (b-mean)*gamma/sqrt(var+eps)+beta."""
    inits = {"c.w": w(4, 2, 3, 3), "c.b": rand(4), **bn_inits("bn", 4)}
    nodes = [helper.make_node("Conv", ["x", "c.w", "c.b"], ["c"], name="conv"), bn("bn", "c", "y", eps=1e-5)]
    path = save(tmp_path, nodes, inits, ["N", 2, 6, 6])
    g = check(path, rand(3, 2, 6, 6))
    k = inits["bn.g"] / np.sqrt(inits["bn.v"] + 1e-5)
    np.testing.assert_allclose(g.const("conv.weight"),
                               (inits["c.w"] * k[:, None, None, None]).transpose(0, 2, 3, 1), rtol=1e-6)
    np.testing.assert_allclose(g.const("conv.bias"), (inits["c.b"] - inits["bn.m"]) * k + inits["bn.b"],
                               rtol=1e-5, atol=1e-6)
    assert [n.op for n in g.nodes] == ["transpose", "conv", "transpose"]  # 4-D output back to NCHW
    assert g.outputs == ["y"]


def test_depthwise_separable_relu6(tmp_path):
    c = 6
    nodes = [helper.make_node("Conv", ["x", "dw.w", "dw.b"], ["d"], name="dw", group=c,
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"], name="relu6a"),
             helper.make_node("Conv", ["d6", "pw.w"], ["p"], name="pw"),
             helper.make_node("Clip", ["p", "lo", "hi"], ["y"], name="relu6b")]
    inits = {"dw.w": w(c, 1, 3, 3), "dw.b": rand(c), "pw.w": w(10, c, 1, 1),
             "lo": np.float32(0), "hi": np.float32(6)}
    path = save(tmp_path, nodes, inits, ["N", c, 9, 9])
    x = 4 * rand(2, c, 9, 9)
    g = check(path, x)
    assert g.node("dw").attrs["groups"] == c and g.tensors["dw.weight"].shape == (c, 3, 3, 1)
    assert g.node_macs("dw") == 5 * 5 * c * 3 * 3 * 1
    f = fuse_activations(g)
    assert f.node("dw").attrs["activation"] == "relu6" and f.node("pw").attrs["activation"] == "relu6"


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_conv(tmp_path, groups):
    nodes = [helper.make_node("Conv", ["x", "c.w", "c.b"], ["y"], name="conv", group=groups,
                              pads=[2, 2, 2, 2], kernel_shape=[5, 5])]
    inits = {"c.w": w(8, 8 // groups, 5, 5), "c.b": rand(8)}
    g = check(save(tmp_path, nodes, inits, ["N", 8, 7, 7]), rand(2, 8, 7, 7))
    assert g.node_macs("conv") == 7 * 7 * 8 * 5 * 5 * (8 // groups)


@pytest.mark.parametrize("auto_pad,stride,dil", [
    ("SAME_UPPER", 2, 1), ("SAME_LOWER", 2, 1), ("VALID", 1, 1), ("NOTSET", 1, 2), ("SAME_LOWER", 3, 1)])  # ORT: no dilation with SAME_*
def test_conv_padding_stride_dilation(tmp_path, auto_pad, stride, dil):
    kw = dict(auto_pad=auto_pad, strides=[stride, stride], dilations=[dil, dil])
    if auto_pad == "NOTSET":
        kw["pads"] = [1, 0, 2, 1]
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["y"], name="conv", **kw)]
    check(save(tmp_path, nodes, {"c.w": w(3, 2, 3, 3)}, ["N", 2, 8, 7]), rand(2, 2, 8, 7))


@pytest.mark.parametrize("include", [0, 1])
def test_avgpool(tmp_path, include):
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=include)]
    g = check(save(tmp_path, nodes, {}, ["N", 3, 7, 7]), rand(2, 3, 7, 7))
    assert g.node("ap").attrs["count_include_pad"] == bool(include)
    assert g.node_macs("ap") == 0


@pytest.mark.parametrize("ceil", [0, 1])
def test_maxpool(tmp_path, ceil):
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[3, 3],
                              strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=ceil)]
    check(save(tmp_path, nodes, {}, ["N", 3, 8, 8]), rand(2, 3, 8, 8))


def test_residual_add(tmp_path):
    """ResNet basic block: the skip path reads the NCHW input (transposed once)."""
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu_out")]
    inits = {"c1.w": w(4, 4, 3, 3), "c1.b": rand(4), "c2.w": w(4, 4, 3, 3), "c2.b": rand(4)}
    g = check(save(tmp_path, nodes, inits, ["N", 4, 6, 6]), rand(2, 4, 6, 6))
    assert sum(n.op == "transpose" for n in g.nodes) == 2  # x -> NHWC once, y -> NCHW
    f = fuse_activations(g)
    assert f.node("add").attrs["activation"] == "relu"
    assert [n.op for n in f.nodes] == ["transpose", "conv", "conv", "add", "transpose"]


@pytest.mark.parametrize("kind", ["flatten", "reshape"])
def test_flatten_gemm_permutes_fc_rows(tmp_path, kind):
    """ONNX flattens (C, H, W); the graph flattens NHWC as (H, W, C) and permutes fc rows."""
    if kind == "flatten":
        flat, inits = helper.make_node("Flatten", ["p"], ["f"], name="flat"), {}
    else:
        flat, inits = helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"), {"shape": [0, -1]}
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             flat,
             helper.make_node("Dropout", ["f"], ["d"], name="drop"),
             helper.make_node("Gemm", ["d", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    inits.update({"c.w": w(5, 3, 3, 3), "fc.w": w(7, 5 * 3 * 4), "fc.b": rand(7)})
    g = check(save(tmp_path, nodes, inits, ["N", 3, 6, 8]), rand(3, 3, 6, 8))
    assert [n.op for n in g.nodes] == ["transpose", "conv", "maxpool", "flatten", "fc"]
    # row (h, w, c) of the graph's weight is row (c, h, w) of the file's
    fw = inits["fc.w"].T.reshape(5, 3, 4, 7)
    np.testing.assert_array_equal(g.const("fc.weight"), fw.transpose(1, 2, 0, 3).reshape(60, 7))


def test_flatten_matmul_add(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "m.w"], ["mm"], name="mm"),
             helper.make_node("Add", ["mm", "m.b"], ["y"], name="bias")]
    inits = {"c.w": w(2, 1, 3, 3), "m.w": rand(2 * 3 * 3, 4) / 4, "m.b": rand(4)}
    g = check(save(tmp_path, nodes, inits, ["N", 1, 5, 5]), rand(2, 1, 5, 5))
    assert [n.op for n in g.nodes] == ["transpose", "conv", "flatten", "fc"]


def test_flatten_not_into_fc_transposes_back(tmp_path):
    """A flattened map that is a graph output (or read by a non-fc op) keeps ONNX order."""
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Relu", ["f"], ["y"], name="relu")]
    g = check(save(tmp_path, nodes, {"c.w": w(3, 2, 2, 2)}, ["N", 2, 4, 5]), rand(2, 2, 4, 5))
    assert [n.op for n in g.nodes] == ["transpose", "conv", "transpose", "flatten", "relu"]


def test_clip_attributes_opset10(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("Clip", ["c"], ["y"], name="clip", min=-0.5, max=0.75)]
    g = check(save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1)}, ["N", 2, 3, 3], opset=10), rand(2, 2, 3, 3))
    f = fuse_activations(g)
    assert f.node("conv").attrs["activation"] == ("clip", -0.5, 0.75)


def test_clip_min_only_is_relu(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("Clip", ["c", "lo"], ["y"], name="clip")]
    g = check(save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1), "lo": np.float32(0)}, ["N", 2, 3, 3]),
              rand(2, 2, 3, 3))
    assert fuse_activations(g).node("conv").attrs["activation"] == "relu"


def test_identity_between_spatial_ops(tmp_path):
    nodes = [helper.make_node("Identity", ["x"], ["i"], name="id"),
             helper.make_node("Conv", ["i", "c.w"], ["c"], name="conv"),
             helper.make_node("Dropout", ["c"], ["d"], name="drop"),
             helper.make_node("GlobalAveragePool", ["d"], ["y"], name="gap")]
    g = check(save(tmp_path, nodes, {"c.w": w(3, 2, 3, 3)}, ["N", 2, 5, 5]), rand(2, 2, 5, 5))
    assert g.tensors["y"].shape == (None, 3, 1, 1)


# --- errors ----------------------------------------------------------------------------

def test_bn_not_after_conv_rejected(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             bn("bn", "r", "y")]
    path = save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1), **bn_inits("bn", 3)}, ["N", 2, 3, 3])
    with pytest.raises(ModelError, match=r"node 'bn' \(BatchNormalization\): supported only directly after a Conv"):
        load_onnx(path)


def test_bn_after_shared_conv_rejected(tmp_path):
    """A Conv output read by BN and by something else cannot be folded."""
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             bn("bn", "c", "b"),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    path = save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1), **bn_inits("bn", 3)}, ["N", 2, 3, 3])
    with pytest.raises(ModelError, match=r"'bn' \(BatchNormalization\)"):
        load_onnx(path)


@pytest.mark.parametrize("op", ["LRN", "ConvTranspose", "Sigmoid"])
def test_unsupported_ops(tmp_path, op):
    if op == "ConvTranspose":
        node, inits = helper.make_node(op, ["c", "k"], ["y"], name="bad"), {"k": w(3, 2, 2, 2)}
    elif op == "LRN":
        node, inits = helper.make_node(op, ["c"], ["y"], name="bad", size=3), {}
    else:
        node, inits = helper.make_node(op, ["c"], ["y"], name="bad"), {}
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"), node]
    path = save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1), **inits}, ["N", 2, 3, 3], name="bad.onnx")
    with pytest.raises(ModelError, match=rf"bad\.onnx: node 'bad' has op {op}, which is not supported"):
        load_onnx(path)


def test_conv1d_rejected(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["y"], name="c1d")]
    path = save(tmp_path, nodes, {"c.w": w(3, 2, 3)}, ["N", 2, 9])
    with pytest.raises(ModelError, match=r"node 'c1d' \(Conv\): input 'x' must be 4-D NCHW"):
        load_onnx(path)


def test_broadcast_add_rejected(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Add", ["c", "g"], ["y"], name="add")]
    path = save(tmp_path, nodes, {"c.w": w(3, 2, 1, 1)}, ["N", 2, 3, 3])
    with pytest.raises(ModelError, match=r"node 'add' \(Add\): inputs must have the same shape"):
        load_onnx(path)
