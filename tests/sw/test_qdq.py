"""Quantized ONNX models (QDQ and QOperator, written by onnxruntime's quantizer): import with the
file's own scales and zero points, agreement with onnxruntime, accuracy, errors and the CLI."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from celosia.errors import ModelError
from celosia.sim.golden.network import golden_forward
from celosia.sw.data import DATA_DIR, MODELS, digits_split
from celosia.sw.importer import load_onnx_quant
from celosia.sw.importer.onnx_quant_import import is_quantized_onnx, single_rounding_multiplier
from tflite_cases import assert_cli_one_line_error

QDQ_FILES = [f"{m}_{f}.onnx" for m in ("digits_mlp", "digits_cnn", "digits_resnet")
             for f in ("qdq", "qop")]


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def exact_float_input(model, x_q: np.ndarray, shape: tuple) -> np.ndarray:
    """Float input that quantizes to exactly ``x_q`` (so that the comparison with a runtime
    does not depend on how it rounds ties in QuantizeLinear), in the file's layout."""
    xf = (x_q.astype(np.float32) - model.input_zp) * np.float32(model.input_scale)
    if model.input_layout == "NCHW":
        c, h, w = model.input_shape
        xf = xf.reshape(-1, h, w, c).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(xf.reshape(-1, *shape))


def ort_int8(path, x: np.ndarray, model) -> np.ndarray:
    """onnxruntime's int8 output for float input ``x`` (its float output, quantized back with the
    output's scale and zero point: exact, the output is a DequantizeLinear). QDQ graphs run with
    ORT_ENABLE_BASIC (the float ops between DequantizeLinear and QuantizeLinear: the format's
    meaning); ORT_ENABLE_ALL fuses them into x86 int8 kernels that differ by up to 16 steps
    (docs/numerics.md)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x})[0].reshape(len(x), -1)
    return (np.round(y / np.float32(model.output_scale)) + model.output_zp).astype(np.int64)


@pytest.mark.parametrize("name", QDQ_FILES)
def test_agrees_with_onnxruntime(name, digits):
    """Every held-out image: at most 1 step from onnxruntime (measured: 0 elements differ,
    docs/numerics.md); and the model keeps the float model's accuracy within 1 point."""
    path = DATA_DIR / name
    model = load_onnx_quant(path)
    assert model.source == ("onnx-qdq" if "qdq" in name else "onnx-qoperator")
    shape = (64,) if "mlp" in name else (1, 8, 8)
    x = digits[1].reshape(-1, *shape)
    x_q = model.quantize_input(x)
    y_q = golden_forward(model, x_q).astype(np.int64)
    ref = ort_int8(path, exact_float_input(model, x_q, shape), model)
    diff = np.abs(y_q - ref)
    print(f"{name}: {int((diff > 0).sum())} of {diff.size} elements differ, max {int(diff.max())}")
    assert diff.max() <= 1
    s = ort.InferenceSession(str(MODELS[name.rsplit("_", 1)[0]]), providers=["CPUExecutionProvider"])
    float_acc = (s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1) == digits[3]).mean()
    int8_acc = (y_q.argmax(1) == digits[3]).mean()
    assert int8_acc >= float_acc - 0.01, (int8_acc, float_acc)


def test_qdq_and_qoperator_import_the_same_model():
    """The two formats of one quantization hold the same integers: same layers, same outputs."""
    a = load_onnx_quant(DATA_DIR / "digits_resnet_qdq.onnx")
    b = load_onnx_quant(DATA_DIR / "digits_resnet_qop.onnx")
    assert [l.op for l in a.layers] == ["conv", "conv", "conv", "add", "gap", "fc"]
    assert [l.op for l in b.layers] == [l.op for l in a.layers]
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.w, lb.w)
        np.testing.assert_array_equal(la.bias, lb.bias)
        np.testing.assert_array_equal(la.m0, lb.m0)
    assert a.layers[3].inputs == [a.layers[0].name, a.layers[2].name]  # the residual


def test_flatten_of_nchw_permutes_fc_rows():
    """digits_cnn flattens a 16x4x4 NCHW map into its Gemm: the hardware's rows are (H, W, C)."""
    m = onnx.load(DATA_DIR / "digits_cnn_qop.onnx")
    w = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "fc.weight_quantized"))
    fc = load_onnx_quant(DATA_DIR / "digits_cnn_qop.onnx").layers[-1]
    # row (h, w, c) of the hardware weights is column c*16 + h*4 + w of the file's [N, K]
    for h, wd, c in [(0, 0, 0), (1, 2, 3), (3, 3, 15)]:
        np.testing.assert_array_equal(fc.w[(h * 4 + wd) * 16 + c], w[:, c * 16 + h * 4 + wd])


def test_single_rounding_multiplier_rounds_once():
    """(M0, 0) with M0 = round(real 2^31): MBQM then equals round(acc * real) (half away)."""
    from celosia.sim.golden import multiply_by_quantized_multiplier
    real = 0.059603091 / (0.028139336 * 16)
    m0, shift = single_rounding_multiplier(real)
    assert shift == 0 and m0 == round(real * 2 ** 31)
    acc = np.arange(-2048, 2048)
    want = np.sign(acc) * np.floor(np.abs(acc) * (m0 / 2 ** 31) + 0.5)
    np.testing.assert_array_equal(multiply_by_quantized_multiplier(acc, m0, shift), want)
    assert single_rounding_multiplier(0.75)[1] >= 0  # >= 0.5: TFLite's, a left shift
    assert single_rounding_multiplier(2.0 ** -20)[1] < 0  # too small for 2^24: TFLite's


def test_dispatch_float_and_quantized_onnx():
    from celosia.sw.cli import _is_quantized, _load_model
    assert is_quantized_onnx(DATA_DIR / "digits_cnn_qdq.onnx")
    assert not is_quantized_onnx(MODELS["digits_cnn"])
    assert _is_quantized(_load_model(str(DATA_DIR / "digits_cnn_qop.onnx")))
    assert not _is_quantized(_load_model(str(MODELS["digits_cnn"])))


# -- errors ----------------------------------------------------------------------------------

def _edit(kind: str):
    """A bundled model broken in one way."""
    m = onnx.load(DATA_DIR / ("digits_cnn_qdq.onnx" if kind == "outside" else "digits_cnn_qop.onnx"))
    g = m.graph
    inits = {t.name: t for t in g.initializer}

    def replace(name, array):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    if kind == "uint8":
        replace("input_zero_point", np.array(128, np.uint8))
    elif kind == "int16":
        replace("/conv1/Conv_output_0_zero_point", np.array(0, np.int16))
    elif kind == "per_axis":
        replace("/conv1/Conv_output_0_scale", np.full(8, 0.1, np.float32))
        replace("/conv1/Conv_output_0_zero_point", np.zeros(8, np.int8))
    elif kind == "asymmetric":
        zp = np.zeros(16, np.int8)
        zp[3] = 5
        replace("conv2.weight_zero_point", zp)
    elif kind == "unknown":
        g.node[2].op_type = "QLinearFoo"
    elif kind == "outside":  # a float op reading a float op's output: not quantized
        relu = helper.make_node("Relu", ["/Relu_output_0"], ["r"], name="extra_relu")
        g.node.insert(10, relu)
        conv2 = next(n for n in g.node if n.op_type == "Conv" and n.input[1].startswith("conv2"))
        conv2.input[0] = "r"
    return m


@pytest.mark.parametrize("kind, words", [
    ("uint8", ["'input_quantized'", "uint8", "QInt8"]),
    ("int16", ["/conv1/Conv_quant' (QLinearConv)", "int16", "int8 activations"]),
    ("per_axis", ["tensor '/conv1/Conv_output_0_quantized'", "8 scales (per-axis)"]),
    ("asymmetric", ["/conv2/Conv_quant' (QLinearConv)", "conv2.weight_quantized", "zero point 5",
                    "symmetric"]),
    ("unknown", ["(QLinearFoo) is not supported"]),
    ("outside", ["extra_relu", "(Relu)", "a float op outside QDQ"]),
])
def test_unsupported_models_give_one_line_errors(kind, words, tmp_path):
    assert_rejected(_edit(kind), tmp_path / f"{kind}.onnx", words)


def assert_rejected(model: onnx.ModelProto, path, words) -> None:
    """``model`` saved at ``path``: a ModelError from the importer, and from the CLI one line
    holding ``words`` and exit 1."""
    onnx.save(model, path)
    with pytest.raises(ModelError):
        load_onnx_quant(path)
    assert_cli_one_line_error(path, words)


# -- the CLI ---------------------------------------------------------------------------------

def test_cli_run_float_input_and_summary(digits, tmp_path, capsys):
    from celosia.sw.cli import main
    path = DATA_DIR / "digits_cnn_qdq.onnx"
    model = load_onnx_quant(path)
    x_q = model.quantize_input(digits[1][:3].reshape(3, 1, 8, 8))
    x = exact_float_input(model, x_q, (1, 8, 8))
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "y.npy")]) == 0
    assert "quantization from onnx-qdq" in capsys.readouterr().out
    y_q = np.round(np.load(tmp_path / "y.npy") / np.float32(model.output_scale)) + model.output_zp
    assert np.abs(y_q - ort_int8(path, x, model)).max() <= 1
    assert main(["compile", str(DATA_DIR / "digits_resnet_qop.onnx"), "--summary"]) == 0
    out = capsys.readouterr().out
    assert f"quantization from onnx-qoperator ({DATA_DIR / 'digits_resnet_qop.onnx'})" in out


def test_make_qdq_rebuilds_the_bundled_file(tmp_path):
    """examples/make_qdq.py writes the committed file (onnxruntime's quantizer is deterministic)."""
    from celosia.examples.make_qdq import build
    a = load_onnx_quant(DATA_DIR / "digits_mlp_qop.onnx")
    path = tmp_path / "digits_mlp_qop.onnx"
    path.write_bytes(build("digits_mlp_qop.onnx"))
    b = load_onnx_quant(path)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.w, lb.w)
        np.testing.assert_array_equal(la.m0, lb.m0)
        assert (la.out_scale, la.out_zp) == (lb.out_scale, lb.out_zp)


# -- ops the digits models do not have -------------------------------------------------------

def _float_model(rng) -> onnx.ModelProto:
    """Conv -> Relu -> depthwise Conv -> AveragePool -> MaxPool -> Flatten -> MatMul (float)."""
    def init(name, a):
        return numpy_helper.from_array(np.asarray(a, np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], group=4, pads=[1, 1, 1, 1],
                              strides=[1, 1], name="dw"),
             helper.make_node("AveragePool", ["c2"], ["p1"], kernel_shape=[2, 2], strides=[2, 2],
                              name="avg"),
             helper.make_node("MaxPool", ["p1"], ["p2"], kernel_shape=[2, 2], strides=[1, 1],
                              name="max"),
             helper.make_node("Flatten", ["p2"], ["f"], axis=1, name="flat"),
             helper.make_node("MatMul", ["f", "w3"], ["y"], name="matmul")]
    inits = [init("w1", rng.normal(0, 0.3, (4, 3, 3, 3))), init("b1", rng.normal(0, 0.1, 4)),
             init("w2", rng.normal(0, 0.5, (4, 1, 3, 3))), init("b2", rng.normal(0, 0.1, 4)),
             init("w3", rng.normal(0, 0.3, (36, 10)))]
    g = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", 1, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", 1, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_pools_depthwise_matmul_against_onnxruntime(fmt, tmp_path):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    rng = np.random.default_rng(5)
    onnx.save(_float_model(rng), tmp_path / "f.onnx")
    calib = rng.random((32, 3, 8, 8), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": calib}])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    model = load_onnx_quant(tmp_path / "q.onnx")
    assert [l.op for l in model.layers] == ["conv", "conv", "avgpool", "maxpool", "fc"]
    assert model.layers[1].attrs["groups"] == 4
    x_q = rng.integers(-128, 128, (64, 3 * 8 * 8)).astype(np.int8)
    x_q[0] = 127
    x_q[1] = -128
    y_q = golden_forward(model, x_q).astype(np.int64)
    ref = ort_int8(tmp_path / "q.onnx", exact_float_input(model, x_q, (3, 8, 8)), model)
    diff = np.abs(y_q - ref)
    print(f"{fmt}: {int((diff > 0).sum())} of {diff.size} elements differ, max {int(diff.max())}")
    assert diff.max() <= 1
