import io

import numpy as np
import pytest

from celosia.examples.demo import demo
from celosia.examples.digits import digits_split, sklearn_digits_split
from celosia.rtl.config import AccelConfig


def test_shipped_split_equals_scikit_learns():
    pytest.importorskip("sklearn")  # the dev extra installs it; the demo itself does not need it
    for shipped, fresh in zip(digits_split(), sklearn_digits_split()):
        assert shipped.dtype == fresh.dtype
        np.testing.assert_array_equal(shipped, fresh)


def test_split_sizes_and_ranges():
    x_train, x_test, y_train, y_test = digits_split()
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))


def test_demo_on_golden_back_end_reports_accuracy_and_bit_exactness():
    out = io.StringIO()
    assert demo(AccelConfig(), backend="golden", samples=8, out=out) == 0
    text = out.getvalue()
    assert "accuracy on 450 held-out images: float" in text
    assert "bit-exact against the golden model: yes (8/8 images)" in text
