"""Files shipped with the library: the digits data split and the demo models.

These are package data (``pyproject.toml``), so an installed wheel has them too;
find them through :data:`DATA_DIR`, :data:`MODELS` and :data:`SPLIT_FILE`, never
through the source tree.

* ``digits_split.npz``: scikit-learn's bundled 8x8 digits in a fixed stratified
  train / test split (uint8 pixels 0..16, about 40 kB), so the demo and the tests
  run without scikit-learn; :func:`digits_split` reads it. The split is recomputed
  and the file rewritten by ``python -m celosia.examples.digits``.
* ``digits_mlp.onnx``, ``digits_cnn.onnx``, ``digits_resnet.onnx``: the float
  models ``celosia demo`` runs, trained on that split by
  ``python -m celosia.examples.train_digits_mlp`` and ``train_digits_cnn``.
* ``digits_*_int8.tflite``, ``digits_*_int8_conv.tflite``: the three models quantized
  to int8 TFLite
  (:data:`TFLITE_MODELS`), written by ``python -m celosia.examples.make_tflite``.
* ``digits_*_qdq.onnx``, ``digits_*_qop.onnx``: the three models quantized by onnxruntime's
  ``quantize_static`` in the QDQ and QOperator formats, written by
  ``python -m celosia.examples.make_qdq``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DATA_DIR", "MODELS", "TFLITE_MODELS", "SPLIT_FILE", "SPLIT_SEED", "TEST_FRACTION", "digits_split"]

DATA_DIR = Path(__file__).resolve().parent
SPLIT_FILE = DATA_DIR / "digits_split.npz"
#: The bundled float models by name (``celosia demo --model NAME``).
MODELS = {name: DATA_DIR / f"{name}.onnx" for name in ("digits_mlp", "digits_cnn", "digits_resnet")}
#: The bundled int8 TFLite models by name (``celosia demo --model digits_cnn_tflite``).
TFLITE_MODELS = {"digits_mlp_tflite": DATA_DIR / "digits_mlp_int8.tflite",
                 "digits_cnn_tflite": DATA_DIR / "digits_cnn_int8_conv.tflite",
                 "digits_cnn_fc_tflite": DATA_DIR / "digits_cnn_int8.tflite",
                 "digits_resnet_tflite": DATA_DIR / "digits_resnet_int8_conv.tflite"}

#: Seed and size of the train/test split; changing them changes every reported accuracy.
SPLIT_SEED = 0
TEST_FRACTION = 0.25


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: images as float32 ``[n, 64]`` in [0, 1].

    Pixels of the bundled set are 0..16; dividing by 16 maps them onto [0, 1].
    The split is stratified by label with a fixed seed (read from ``digits_split.npz``).
    """
    with np.load(SPLIT_FILE) as f:
        return ((f["x_train"] / 16.0).astype(np.float32), (f["x_test"] / 16.0).astype(np.float32),
                f["y_train"].astype(np.int64), f["y_test"].astype(np.int64))
