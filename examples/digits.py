"""The digits data set (scikit-learn's bundled 8x8 images) and its fixed split.

The training scripts and the tests both take the held-out images from
:func:`digits_split`, so "test accuracy" always means the same 25 % of images.
The split is shipped with the library as ``digits_split.npz``
(:mod:`celosia.sw.data`, which reads it) so the demo runs without scikit-learn;
:func:`sklearn_digits_split` recomputes it from scikit-learn's bundled copy (a dev
dependency) and ``python -m celosia.examples.digits`` rewrites the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from celosia.sw.data import SPLIT_FILE, SPLIT_SEED, TEST_FRACTION, digits_split

__all__ = ["digits_split", "sklearn_digits_split", "SPLIT_SEED", "TEST_FRACTION", "SPLIT_FILE"]


def sklearn_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`digits_split` computed from scikit-learn's bundled data set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return x_train, x_test, y_train, y_test


def write_split_file(path: Path = SPLIT_FILE) -> None:
    x_train, x_test, y_train, y_test = sklearn_digits_split()
    np.savez_compressed(path, x_train=np.round(x_train * 16).astype(np.uint8),
                        x_test=np.round(x_test * 16).astype(np.uint8),
                        y_train=y_train.astype(np.uint8), y_test=y_test.astype(np.uint8))


if __name__ == "__main__":
    write_split_file()
    print(f"wrote {SPLIT_FILE}")
