"""The digits data set (scikit-learn's bundled 8x8 images) and its fixed split.

The training script and the tests both take the held-out images from
:func:`digits_split`, so "test accuracy" always means the same 25 % of images.
scikit-learn is a dev dependency, imported only when the split is asked for.
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits_split", "SPLIT_SEED", "TEST_FRACTION"]

#: Seed and size of the train/test split; changing them changes every reported accuracy.
SPLIT_SEED = 0
TEST_FRACTION = 0.25


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: images as float32 ``[n, 64]`` in [0, 1].

    Pixels of the bundled set are 0..16; dividing by 16 maps them onto [0, 1].
    The split is stratified by label with a fixed seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return x_train, x_test, y_train, y_test
