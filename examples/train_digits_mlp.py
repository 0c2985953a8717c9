"""Train the demo MLP on digits and write it as a float ONNX model.

    python -m celosia.examples.train_digits_mlp [--out sw/data/digits_mlp.onnx]

A 64-64-32-10 ReLU MLP trained with scikit-learn's ``MLPClassifier`` (fixed
seeds), written by hand with ``onnx.helper`` as ``Gemm, Relu, Gemm, Relu, Gemm``
(``transB=1``, weights stored ``[N, K]`` as PyTorch exports them), logits out
(no softmax: argmax is unchanged and the accelerator has no softmax). The ONNX
model is checked against scikit-learn with onnxruntime before it is kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from celosia.sw.data import MODELS, digits_split

HIDDEN = (64, 32)
SEED = 0
DEFAULT_OUT = MODELS["digits_mlp"]  # the library's package data (celosia.sw.data)
# Opset / IR pinned so any onnxruntime >= 1.17 (our floor) loads the file.
OPSET = 13
IR_VERSION = 8


def train(x_train: np.ndarray, y_train: np.ndarray):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", solver="adam",
                        alpha=1e-4, max_iter=1000, random_state=SEED)
    return clf.fit(x_train, y_train)


def to_onnx(clf) -> onnx.ModelProto:
    """The trained classifier as ONNX: one Gemm (+ Relu) per layer, logits out."""
    nodes, inits = [], []
    x = "input"
    n_layers = len(clf.coefs_)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        # sklearn keeps W as [K, N]; store [N, K] with transB=1 like torch.nn.Linear.
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T, dtype=np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"fc{i}.bias")]
        last = i == n_layers - 1
        y = "logits" if last else f"fc{i}_out"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y],
                                      name=f"fc{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}_out"], name=f"relu{i}"))
            y = f"relu{i}_out"
        x = y
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="celosia.examples.train_digits_mlp")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    x_train, x_test, y_train, y_test = digits_split()
    clf = train(x_train, y_train)
    model = to_onnx(clf)

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": x_test})[0]
    # sklearn's predict_proba is softmax(logits): same argmax, and log-ratios equal logit gaps.
    # Compare against the predicted class only where the probability is not
    # underflowed (a probability of ~0 has no usable log).
    prob = clf.predict_proba(x_test)
    if not np.array_equal(logits.argmax(1), clf.predict(x_test)):
        raise SystemExit("ONNX model disagrees with scikit-learn's predictions")
    top = logits.argmax(1)
    gaps = logits - logits[np.arange(len(top)), top][:, None]
    usable = prob > 1e-12
    ref_gaps = np.log(np.where(usable, prob, 1.0)) - np.log(prob[np.arange(len(top)), top])[:, None]
    if not np.allclose(gaps[usable], ref_gaps[usable], atol=1e-3, rtol=1e-3):
        raise SystemExit("ONNX logits differ from scikit-learn's log-probabilities")

    args.out.write_bytes(model.SerializeToString())
    acc = float((logits.argmax(1) == y_test).mean())
    print(f"MLP {64}-{'-'.join(map(str, HIDDEN))}-10, {clf.n_iter_} epochs; "
          f"float test accuracy {acc:.4f} on {len(y_test)} held-out images; "
          f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
