"""The shipped digits CNNs (``sw/data/digits_cnn.onnx``, ``sw/data/digits_resnet.onnx``).

Written by ``python -m celosia.examples.train_digits_cnn`` (needs PyTorch); these
tests need only onnx / onnxruntime: the files import, the float graph matches
onnxruntime on the held-out images, and the float accuracy is what the training
script reported.
"""


import numpy as np
import onnx
import onnxruntime as ort
import pytest

from celosia.sw.data import DATA_DIR, digits_split
from celosia.sw.graph import fuse_activations, run_float
from celosia.sw.importer import load_onnx

EXAMPLES = DATA_DIR  # the shipped models (celosia.sw.data)
TOL = dict(rtol=1e-4, atol=1e-4)
MAX_BYTES = 100_000
MIN_ACCURACY = 0.95

#: ONNX op types of each file, in node order (BatchNormalization folded by the exporter).
MODELS = {
    "digits_cnn": ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"],
    "digits_resnet": ["Conv", "Relu", "Conv", "Relu", "Conv", "Add", "Relu",
                      "GlobalAveragePool", "Flatten", "Gemm"],
}


@pytest.fixture(scope="module")
def test_images():
    _, x_test, _, y_test = digits_split()
    return x_test.reshape(-1, 1, 8, 8), y_test


@pytest.mark.parametrize("name", sorted(MODELS))
def test_file(name):
    path = EXAMPLES / f"{name}.onnx"
    assert path.stat().st_size < MAX_BYTES
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == MODELS[name]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 1, 8, 8]
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert 13 <= opset <= 17


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_onnxruntime(name, test_images):
    x, y = test_images
    path = EXAMPLES / f"{name}.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]
    g = load_onnx(path)
    got = run_float(g, x)
    assert got.shape == ref.shape == (len(y), 10)
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(run_float(fuse_activations(g), x), ref, **TOL)
    acc = float((got.argmax(1) == y).mean())
    assert acc >= MIN_ACCURACY, f"{name}: float test accuracy {acc:.4f}"
