import io

import numpy as np
import pytest

from celosia.examples.digits import sklearn_digits_split
from celosia.sw.data import digits_split
from celosia.sw.demo import demo
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


def test_demo_runs_all_three_models_by_default():
    out = io.StringIO()
    assert demo(AccelConfig(), backend="golden", samples=4, out=out) == 0
    text = out.getvalue()
    for name in ("digits_mlp.onnx", "digits_cnn.onnx", "digits_resnet.onnx"):
        assert f"model {name}" in text
    assert text.count("bit-exact against the golden model: yes (4/4 images)") == 3
    assert "conv -> conv -> maxpool -> fc" in text and "add -> gap -> fc" in text


def test_demo_model_choice_and_unknown_model():
    from celosia.errors import InputError

    out = io.StringIO()
    assert demo(AccelConfig(), backend="golden", samples=2, out=out, models=("digits_resnet",)) == 0
    assert "digits_resnet.onnx" in out.getvalue() and "digits_mlp" not in out.getvalue()
    with pytest.raises(InputError, match="no demo model 'lenet'"):
        demo(AccelConfig(), backend="golden", out=io.StringIO(), models=("lenet",))
