"""QONNX models (Brevitas-style ``Quant`` nodes, built here without torch): import as int8,
agreement with qonnx's own executor, sub-8-bit and other unsupported models."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from celosia.examples.make_qdq import qdq_to_qonnx
from celosia.sim.golden.network import golden_forward
from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.importer import load_onnx_quant
from celosia.sw.importer.qonnx_import import quant_range
from test_qdq import assert_rejected, exact_float_input

QONNX = DATA_DIR / "digits_cnn_qonnx.onnx"


def qonnx_int8(model_proto, x: np.ndarray, model) -> np.ndarray:
    """qonnx's executor (``execute_onnx``) on float input ``x``, its float output quantized back."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    for vi in list(m.graph.input) + list(m.graph.output):  # the executor needs static shapes
        vi.type.tensor_type.shape.dim[0].dim_value = len(x)
    mw = ModelWrapper(m).transform(InferShapes())
    y = execute_onnx(mw, {mw.graph.input[0].name: x})[mw.graph.output[0].name]
    return (np.round(y.reshape(len(x), -1) / np.float32(model.output_scale))
            + model.output_zp).astype(np.int64)


def test_quant_range_as_qonnx():
    """min_int / max_int of qonnx's IntQuant (its docstring's examples)."""
    assert quant_range(True, True, 8) == (-127, 127)
    assert quant_range(True, False, 8) == (-128, 127)
    assert quant_range(False, True, 8) == (0, 254)
    assert quant_range(False, False, 8) == (0, 255)
    assert quant_range(True, False, 4) == (-8, 7)


def test_qonnx_digits_cnn_agrees_with_qonnx_executor():
    """The bundled QONNX CNN (unsigned 8-bit activations after ReLU, per-channel weights, float
    biases): every held-out image within one step of qonnx's executor (measured: 0 differ)."""
    model = load_onnx_quant(QONNX)
    assert model.source == "qonnx"
    assert set(model.meta["bits"].values()) <= {(8, 8), (None, 8)}
    _, x_test, _, y_test = digits_split()
    x_q = model.quantize_input(x_test.reshape(-1, 1, 8, 8))
    y_q = golden_forward(model, x_q).astype(np.int64)
    ref = qonnx_int8(onnx.load(QONNX), exact_float_input(model, x_q, (1, 8, 8)), model)
    diff = np.abs(y_q - ref)
    print(f"qonnx: {int((diff > 0).sum())} of {diff.size} elements differ, max {int(diff.max())}")
    assert diff.max() <= 1
    assert (y_q.argmax(1) == y_test).mean() > 0.95


def test_qonnx_holds_the_integers_of_the_qdq_model_it_came_from():
    """Quant(w_float) gives back the int8 weights, unsigned activations the int8 zero point -128,
    the float bias the int32 one."""
    a = load_onnx_quant(QONNX)
    b = load_onnx_quant(DATA_DIR / "digits_cnn_qdq.onnx")
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.w, lb.w)
        np.testing.assert_array_equal(la.bias, lb.bias)
        np.testing.assert_array_equal(la.m0, lb.m0)
        assert (la.out_zp, la.act_min, la.act_max) == (lb.out_zp, lb.act_min, lb.act_max)


def _quant_nodes(m):
    return [n for n in m.graph.node if n.op_type == "Quant"]


def _set(m, name, value):
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))


def _bad(kind):
    qdq = onnx.load(DATA_DIR / "digits_cnn_qdq.onnx")
    if kind == "w4":
        return qdq_to_qonnx(qdq, weight_bits=4)
    m = qdq_to_qonnx(qdq)
    act = next(n for n in _quant_nodes(m) if n.input[0] == "/Relu_output_0")
    wq = next(n for n in _quant_nodes(m) if n.input[0].startswith("conv2.weight"))
    if kind == "a4":
        _set(m, act.input[3], 4)
    elif kind == "asymmetric":
        _set(m, wq.input[2], 3)
    elif kind == "floor":
        next(a for a in act.attribute if a.name == "rounding_mode").s = b"FLOOR"
    elif kind == "per_axis":
        _set(m, act.input[1], np.full((1, 8, 1, 1), 0.05))
    elif kind == "a16":
        _set(m, act.input[3], 16)
    return m


@pytest.mark.parametrize("kind, words", [
    ("w4", ["(Conv)", "not supported by this accelerator config: 4 bits"]),
    ("a4", ["/Relu_output_0", "not supported by this accelerator config: 4 bits"]),
    ("a16", ["not supported by this accelerator config: 16 bits"]),
    ("asymmetric", ["(Quant)", "conv2.weight", "zero point 3", "symmetric"]),
    ("floor", ["(Quant)", "rounding_mode FLOOR"]),
    ("per_axis", ["(Quant)", "'/Relu_output_0_QuantizeLinear_Output'", "8 scales (per-axis)"]),
])
def test_unsupported_qonnx_models_give_one_line_errors(kind, words, tmp_path):
    assert_rejected(_bad(kind), tmp_path / f"{kind}.onnx", words)


def test_narrow_activation_narrows_the_clamp(tmp_path):
    """signed narrow 8-bit: -127..127, the producing layer's clamp."""
    m = qdq_to_qonnx(onnx.load(DATA_DIR / "digits_cnn_qdq.onnx"))
    q = next(n for n in _quant_nodes(m) if n.input[0] == "logits_QuantizeLinear_Input")
    next(a for a in q.attribute if a.name == "narrow").i = 1
    onnx.save(m, tmp_path / "narrow.onnx")
    model = load_onnx_quant(tmp_path / "narrow.onnx")
    assert (model.layers[-1].act_min, model.layers[-1].act_max) == (-127, 127)
    x_q = np.full((2, 64), 127, np.int8)
    x_q[1] = -128
    ref = qonnx_int8(m, exact_float_input(model, x_q, (1, 8, 8)), model)
    assert np.abs(golden_forward(model, x_q).astype(np.int64) - ref).max() <= 1


def test_make_qdq_qonnx_file_is_current(tmp_path):
    from celosia.examples.make_qdq import build
    path = tmp_path / "q.onnx"
    path.write_bytes(build("digits_cnn_qonnx.onnx"))
    for la, lb in zip(load_onnx_quant(path).layers, load_onnx_quant(QONNX).layers):
        np.testing.assert_array_equal(la.w, lb.w)
        np.testing.assert_array_equal(la.bias, lb.bias)


def test_maxpool_and_flatten_without_a_quant_after_them(tmp_path):
    """Brevitas exports MaxPool / Flatten of a quantized tensor with no Quant behind them: their
    outputs keep the input's quantization."""
    m = qdq_to_qonnx(onnx.load(DATA_DIR / "digits_cnn_qdq.onnx"))
    drop = {n.output[0]: n.input[0] for n in _quant_nodes(m)
            if n.input[0] in ("/pool/MaxPool_output_0", "/Flatten_output_0")}
    kept = [n for n in m.graph.node if n.output[0] not in drop]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    for n in m.graph.node:
        for k, i in enumerate(n.input):
            n.input[k] = drop.get(i, i)
    onnx.save(m, tmp_path / "brevitas_style.onnx")
    model = load_onnx_quant(tmp_path / "brevitas_style.onnx")
    assert [l.op for l in model.layers] == ["conv", "conv", "maxpool", "fc"]
    x_q = model.quantize_input(digits_split()[1][:50].reshape(-1, 1, 8, 8))
    np.testing.assert_array_equal(golden_forward(model, x_q),
                                  golden_forward(load_onnx_quant(QONNX), x_q))
    ref = qonnx_int8(m, exact_float_input(model, x_q, (1, 8, 8)), model)
    assert np.abs(golden_forward(model, x_q).astype(np.int64) - ref).max() <= 1
