"""ONNX import checked against onnxruntime, the file's own initializers and the seed 000 formulas."""


import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from celosia.sw.data import MODELS, digits_split
from celosia.errors import CelosiaError, ModelError
from celosia.sw.graph import fuse_activations, run_float
from celosia.sw.importer import SUPPORTED_OPS, load_onnx

DIGITS = MODELS["digits_mlp"]
RNG = np.random.default_rng(1234)


def save_model(tmp_path, nodes, inits, in_shape, out_shape, name="m.onnx"):
    """A float model with input 'x' and output 'y'; integer initializers named shape*."""
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k.startswith("shape") else np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def ort_run(path, x, in_name="x"):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {in_name: x})[0]


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --- the digits demo model -----------------------------------------------------------

@pytest.fixture(scope="module")
def test_images():
    _, x_test, _, y_test = digits_split()
    return x_test, y_test


def test_digits_model_file():
    assert DIGITS.is_file(), "run python -m celosia.examples.train_digits_mlp"
    assert DIGITS.stat().st_size < 200_000


def test_digits_structure_and_bookkeeping():
    g = load_onnx(DIGITS)
    assert g.inputs == ["input"] and g.tensors["input"].shape == (None, 64)
    assert g.outputs == ["logits"] and g.tensors["logits"].shape == (None, 10)
    assert [n.op for n in g.nodes] == ["fc", "relu", "fc", "relu", "fc"]
    # Independent shapes: the file's Gemm B initializers (transB=1, so [N, K]).
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(DIGITS)).graph.initializer}
    layers = [inits[f"fc{i}.weight"].shape for i in range(3)]
    rows = [r for r in fuse_activations(g).summary(batch=7)]
    assert len(rows) == 3
    for r, (n, k) in zip(rows, layers):
        assert r["macs"] == 7 * k * n
        assert r["params"] == k * n + 4 * n
        assert (r["in_bytes"], r["out_bytes"]) == (7 * k, 7 * n)


@pytest.mark.parametrize("fused", [False, True])
def test_digits_float_matches_onnxruntime(test_images, fused):
    x_test, y_test = test_images
    g = load_onnx(DIGITS)
    if fused:
        g = fuse_activations(g)
    ours = run_float(g, x_test)
    ref = ort_run(DIGITS, x_test, "input")
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert np.array_equal(ours.argmax(1), ref.argmax(1))
    assert (ours.argmax(1) == y_test).mean() >= 0.95


# --- Gemm ----------------------------------------------------------------------------

@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.0)])
@pytest.mark.parametrize("c_shape", [(3,), (1, 3), (1,), None])
def test_gemm(tmp_path, trans_b, alpha, beta, c_shape):
    k, n = 5, 3
    b = rand(n, k) if trans_b else rand(k, n)
    inits = {"B": b}
    ins = ["x", "B"]
    if c_shape is not None:
        inits["C"] = rand(*c_shape)
        ins.append("C")
    node = helper.make_node("Gemm", ins, ["y"], name="gemm", alpha=alpha, beta=beta, transB=trans_b)
    path = save_model(tmp_path, [node], inits, ["batch", k], ["batch", n])
    g = load_onnx(path)
    assert [n.op for n in g.nodes] == ["fc"]
    w = g.tensors[g.nodes[0].inputs[1]]
    assert w.shape == (k, n)
    x = rand(4, k)
    np.testing.assert_allclose(run_float(g, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_gemm_trans_a_rejected(tmp_path):
    node = helper.make_node("Gemm", ["x", "B"], ["y"], name="g0", transA=1)
    path = save_model(tmp_path, [node], {"B": rand(4, 3)}, [4, 2], [2, 3])
    with pytest.raises(ModelError, match=r"node 'g0' \(Gemm\): transA=1 is not supported"):
        load_onnx(path)


# --- MatMul (+ Add) ------------------------------------------------------------------

@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_fused(tmp_path, bias_first):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm0"),
             helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["y"], name="add0")]
    path = save_model(tmp_path, nodes, {"W": rand(6, 4), "b": rand(4)}, ["N", 6], ["N", 4])
    g = load_onnx(path)
    assert [(n.name, n.op, len(n.inputs)) for n in g.nodes] == [("mm0", "fc", 3)]
    assert g.outputs == ["y"] and g.param_bytes("mm0") == 6 * 4 + 4 * 4
    x = rand(3, 6)
    np.testing.assert_allclose(run_float(g, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_matmul_alone(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm0"),
             helper.make_node("Relu", ["h"], ["y"], name="act")]
    path = save_model(tmp_path, nodes, {"W": rand(6, 4)}, ["N", 6], ["N", 4])
    g = load_onnx(path)
    assert [(n.op, len(n.inputs)) for n in g.nodes] == [("fc", 2), ("relu", 1)]
    assert g.param_bytes("mm0") == 6 * 4
    f = fuse_activations(g)
    assert [(n.op, n.attrs.get("activation")) for n in f.nodes] == [("fc", "relu")]
    x = rand(3, 6)
    np.testing.assert_allclose(run_float(f, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_add_without_matmul_rejected(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="r0"),
             helper.make_node("Add", ["r", "b"], ["y"], name="lonely_add")]
    path = save_model(tmp_path, nodes, {"b": rand(4)}, ["N", 4], ["N", 4])
    with pytest.raises(ModelError, match=r"node 'lonely_add' \(Add\).*only as the bias of a MatMul"):
        load_onnx(path)


# --- Flatten, Reshape, pass-through ops ----------------------------------------------

@pytest.mark.parametrize("kind", ["flatten", "reshape0", "reshape_minus1", "reshape_full"])
def test_flattening(tmp_path, kind):
    if kind == "flatten":
        first = helper.make_node("Flatten", ["x"], ["v"], name="flat", axis=1)
        inits = {}
    else:
        shape = {"reshape0": [0, -1], "reshape_minus1": [-1, 12], "reshape_full": [0, 12]}[kind]
        first = helper.make_node("Reshape", ["x", "shape"], ["v"], name="flat")
        inits = {"shape": shape}
    nodes = [first, helper.make_node("Gemm", ["v", "W", "b"], ["y"], name="fc", transB=1)]
    path = save_model(tmp_path, nodes, {**inits, "W": rand(5, 12), "b": rand(5)}, ["N", 3, 2, 2], ["N", 5])
    g = load_onnx(path)
    assert g.tensors["x"].shape == (None, 3, 2, 2)
    assert [n.op for n in g.nodes] == ["flatten", "fc"] and g.tensors["v"].shape == (None, 12)
    x = rand(2, 3, 2, 2)
    np.testing.assert_allclose(run_float(g, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


def test_reshape_other_than_flatten_rejected(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")]
    path = save_model(tmp_path, nodes, {"shape": [0, 6, 2]}, ["N", 12], ["N", 6, 2])
    with pytest.raises(ModelError, match=r"node 'rs' \(Reshape\): only flattening to \[batch, -1\]"):
        load_onnx(path)


def test_fixed_batch_recorded_symbolic(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["v"], name="rs"),
             helper.make_node("Relu", ["v"], ["y"], name="r")]
    path = save_model(tmp_path, nodes, {"shape": [1, -1]}, [1, 2, 3], [1, 6])
    g = load_onnx(path)
    assert g.tensors["x"].shape == (None, 2, 3) and g.tensors["y"].shape == (None, 6)


def test_identity_and_dropout_pass_through(tmp_path):
    nodes = [helper.make_node("Identity", ["x"], ["i0"], name="id0"),
             helper.make_node("Gemm", ["i0", "W"], ["h"], name="fc0"),
             helper.make_node("Dropout", ["h"], ["d"], name="drop"),
             helper.make_node("Relu", ["d"], ["r"], name="act"),
             helper.make_node("Identity", ["r"], ["y"], name="id_out")]
    path = save_model(tmp_path, nodes, {"W": rand(4, 3)}, ["N", 4], ["N", 3])
    g = load_onnx(path)
    assert [n.op for n in g.nodes] == ["fc", "relu"]
    assert g.outputs == ["y"]  # the file's output name survives the trailing Identity
    x = rand(5, 4)
    np.testing.assert_allclose(run_float(g, x), ort_run(path, x), rtol=1e-5, atol=1e-5)


# --- errors --------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["LRN", "Sigmoid"])
def test_unsupported_op(tmp_path, op):
    if op == "LRN":  # AlexNet's local response normalization: not supported
        nodes = [helper.make_node("LRN", ["x"], ["y"], name="lrn1", size=5)]
        inits, shape, out = {}, ["N", 2, 5, 5], ["N", 2, 5, 5]
    else:
        nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc0"),
                 helper.make_node("Sigmoid", ["h"], ["y"], name="sig")]
        inits, shape, out = {"W": rand(4, 3)}, ["N", 4], ["N", 3]
    path = save_model(tmp_path, nodes, inits, shape, out, name="model.onnx")
    with pytest.raises(ModelError) as exc:
        load_onnx(path)
    msg = str(exc.value)
    node = "lrn1" if op == "LRN" else "sig"
    assert f"model.onnx: node '{node}' has op {op}, which is not supported" in msg
    assert "supported: " + ", ".join(SUPPORTED_OPS) in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelError, match=r"nowhere\.onnx: no such model file"):
        load_onnx(path)


@pytest.mark.parametrize("content", [b"", b"this is not protobuf \xff\xfe\x00", b"\x08\x07"])
def test_unparsable_file(tmp_path, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(CelosiaError) as exc:
        load_onnx(path)
    assert isinstance(exc.value, ModelError)
    assert "junk.onnx: not a valid ONNX model" in str(exc.value) and "\n" not in str(exc.value)


def test_symbolic_feature_dim_rejected(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    path = save_model(tmp_path, nodes, {}, ["N", "F"], ["N", "F"])
    with pytest.raises(ModelError, match=r"input 'x': dimension 1 is symbolic \(F\)"):
        load_onnx(path)


def test_input_checks_name_the_tensor(tmp_path):
    """A 0 dimension is not "symbolic"; an input without a shape is named (issue 14)."""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    path = save_model(tmp_path, nodes, {}, ["N", 0], ["N", 0])
    with pytest.raises(ModelError, match=r"input 'x': dimension 1 is 0; every dimension must be at least 1"):
        load_onnx(path)
    path = save_model(tmp_path, nodes, {}, None, ["N", 3], name="noshape.onnx")
    with pytest.raises(ModelError, match=r"noshape\.onnx: input 'x' has no shape"):
        load_onnx(path)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_type_invalid_initializer_rejected(tmp_path, dtype):
    """A Gemm weight of another type than the input: onnxruntime refuses the model, so do we,
    naming the node (strict type inference of onnx.checker's full check)."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["y"], name="fc_typed")], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.ones((4, 3), dtype), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "typed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Exception):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(ModelError, match=r"typed\.onnx: not a valid ONNX model .*fc_typed"):
        load_onnx(path)


def test_averagepool_ceil_mode_without_extra_window(tmp_path):
    """AveragePool ceil_mode=1 where the windows tile the input exactly: accepted, the
    float reference equals onnxruntime; with an overhanging window: rejected naming the node."""
    node = helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[2, 2], strides=[2, 2],
                            ceil_mode=1)
    path = save_model(tmp_path, [node], {}, ["N", 3, 8, 6], ["N", 3, 4, 3])
    x = rand(2, 3, 8, 6)
    np.testing.assert_allclose(run_float(load_onnx(path), x), ort_run(path, x), rtol=1e-6, atol=1e-6)
    path = save_model(tmp_path, [node], {}, ["N", 3, 7, 6], ["N", 3, 4, 3], name="over.onnx")
    with pytest.raises(ModelError, match=r"over\.onnx: avgpool node 'ap': ceil_mode=1 adds windows"):
        load_onnx(path)


def test_weight_must_be_constant(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "two_inputs.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"node 'mm' \(MatMul\): right-hand side 'w' must be a constant"):
        load_onnx(path)
