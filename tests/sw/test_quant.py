"""PTQ helpers vs the formulas of the int8 scheme (Jacob et al. 2018; TFLite converter)."""

import numpy as np
import pytest

from celosia.sim.golden import dequantize, quantize
from celosia.sw.quant import (
    QParams,
    calibrate_ranges,
    choose_activation_qparams,
    quantize_bias,
    quantize_weights_per_channel,
    requant_params,
)


# --- choose_activation_qparams ---

@pytest.mark.parametrize("lo, hi", [(-1.0, 3.0), (0.0, 6.0), (-6.0, 0.0), (0.5, 2.0), (-3.0, -0.25),
                                    (-1e-3, 1e-3), (-100.0, 0.01), (-0.01, 100.0), (-5.0, 5.0)])
def test_activation_qparams_include_zero_exactly(lo, hi):
    qp = choose_activation_qparams(lo, hi)
    assert not qp.per_channel
    assert qp.scale.dtype == np.float32 and qp.zero_point.dtype == np.int32
    zp = int(qp.zero_point)
    assert -128 <= zp <= 127
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    assert float(qp.scale) == pytest.approx((hi0 - lo0) / 255, rel=1e-6)
    # real 0 is exactly representable
    assert quantize(np.float32(0.0), qp.scale, zp) == zp
    assert dequantize(np.int8(zp), qp.scale, zp) == 0.0
    # the range is covered to within one nudge of the zero point (half a step)
    s = float(qp.scale)
    assert s * (-128 - zp) <= lo0 + s / 2 + 1e-6
    assert s * (127 - zp) >= hi0 - s / 2 - 1e-6


def test_activation_qparams_hand_worked():
    qp = choose_activation_qparams(-1.0, 3.0)  # scale 4/255; zp = -128 + 63.75 -> -64
    assert float(qp.scale) == np.float32(np.float32(4.0) / np.float32(255.0))
    assert int(qp.zero_point) == -64
    assert int(choose_activation_qparams(0.0, 6.0).zero_point) == -128
    assert int(choose_activation_qparams(-6.0, 0.0).zero_point) == 127
    assert int(choose_activation_qparams(2.0, 5.0).zero_point) == -128      # widened to [0, 5]
    # exact ties (scale 1.0): the zero point rounds away from zero, not to even
    assert int(choose_activation_qparams(-0.5, 254.5, qmin=0, qmax=255).zero_point) == 1      # 0.5 -> 1
    assert int(choose_activation_qparams(-0.5, 254.5).zero_point) == -128                     # -127.5 -> -128
    # float32 arithmetic as in the converter: scale 2/255 rounds up, so 1/scale = 127.49999 -> 127
    assert int(choose_activation_qparams(-1.0, 1.0, qmin=0, qmax=255).zero_point) == 127


def test_activation_qparams_all_zero_and_errors():
    qp = choose_activation_qparams(0.0, 0.0)
    assert float(qp.scale) == 1.0 and int(qp.zero_point) == -128
    with pytest.raises(ValueError, match=r"activation range min must be <= max, not min=2\.0 > max=1\.0"):
        choose_activation_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="activation range max must be finite, not nan"):
        choose_activation_qparams(0.0, float("nan"))
    with pytest.raises(ValueError, match="qmin < qmax must be integers"):
        choose_activation_qparams(0.0, 1.0, qmin=5, qmax=5)


# --- QParams ---

def test_qparams_validation():
    qp = QParams(scale=np.array([0.1, 0.2]), zero_point=0, axis=1)
    assert qp.per_channel and qp.scale.dtype == np.float32 and qp.zero_point.dtype == np.int32
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        QParams(scale=0.0, zero_point=0)
    with pytest.raises(ValueError, match=r"per-tensor QParams \(axis None\) need scalar scale"):
        QParams(scale=[0.1, 0.2], zero_point=0)
    with pytest.raises(ValueError, match="zero_point must be integer"):
        QParams(scale=0.1, zero_point=0.5)
    with pytest.raises(ValueError, match=r"per-channel QParams \(axis 0\) need scale \[C\]"):
        QParams(scale=[0.1, 0.2], zero_point=[0, 0, 0], axis=0)


# --- calibrate_ranges ---

def test_calibrate_ranges_tracks_min_max():
    rng = np.random.default_rng(0)
    batches = [{"x": rng.normal(size=(4, 3)), "y": rng.uniform(0, 2, 5)} for _ in range(6)]
    r = calibrate_ranges(batches)
    allx = np.concatenate([b["x"].ravel() for b in batches])
    ally = np.concatenate([b["y"] for b in batches])
    assert r == {"x": (allx.min(), allx.max()), "y": (ally.min(), ally.max())}
    # continuing a calibration equals calibrating on everything at once
    assert calibrate_ranges(batches[3:], calibrate_ranges(batches[:3])) == r
    # feeds choose_activation_qparams
    qp = choose_activation_qparams(*r["y"])
    assert int(qp.zero_point) == -128


def test_calibrate_ranges_errors():
    with pytest.raises(ValueError, match="calibration needs at least one sample, got none"):
        calibrate_ranges([])
    with pytest.raises(ValueError, match=r"calibration sample 1: tensor 'x' contains NaN or infinity"):
        calibrate_ranges([{"x": [1.0]}, {"x": [np.nan]}])
    with pytest.raises(ValueError, match=r"calibration sample 0: tensor 'x' is empty"):
        calibrate_ranges([{"x": []}])
    with pytest.raises(ValueError, match="calibration sample 0 must be a mapping of tensor name to array, not ndarray"):
        calibrate_ranges([np.zeros(3)])


# --- weights ---

def test_weights_per_channel_scales_and_range():
    rng = np.random.default_rng(1)
    w = (rng.normal(size=(20, 6)) * np.array([0.01, 0.1, 1, 10, 100, 3])).astype(np.float32)
    w_q, s = quantize_weights_per_channel(w)
    assert w_q.dtype == np.int8 and w_q.shape == w.shape
    assert s.dtype == np.float32 and s.shape == (6,)
    np.testing.assert_allclose(s, np.abs(w).max(axis=0) / 127, rtol=1e-6)
    assert w_q.min() >= -127 and w_q.max() <= 127
    assert (np.abs(w_q).max(axis=0) == 127).all()  # each channel's largest weight uses the full range
    err = np.abs(w_q * s.astype(np.float64) - w)
    assert (err <= s / 2 * (1 + 1e-5)).all()


def test_weights_per_channel_hand_worked_and_axis():
    w = np.array([[1.0, -0.5, 0.0], [0.25, 0.5, 0.0], [-1.0, 0.1, 0.0]], dtype=np.float32)
    w_q, s = quantize_weights_per_channel(w)
    assert w_q.tolist() == [[127, -127, 0], [32, 127, 0], [-127, 25, 0]]  # 31.75 -> 32, 25.4 -> 25
    assert s.tolist() == [np.float32(1 / 127), np.float32(0.5 / 127), 1.0]  # all-zero channel: scale 1
    w_q0, s0 = quantize_weights_per_channel(w.T, axis=0)
    assert (w_q0 == w_q.T).all() and (s0 == s).all()
    w_qn, _ = quantize_weights_per_channel(w, axis=-1)
    assert (w_qn == w_q).all()
    with pytest.raises(ValueError, match=r"channel axis must be in -2\.\.1 for weights of shape \(3, 3\), not 2"):
        quantize_weights_per_channel(w, axis=2)
    with pytest.raises(ValueError, match="weights contain NaN or infinity"):
        quantize_weights_per_channel(np.array([[np.inf]]))


# --- bias ---

def test_bias_scale_is_input_times_weight_scale():
    rng = np.random.default_rng(2)
    b = rng.normal(0, 3, 8)
    s_in = np.float32(0.02)
    s_w = rng.uniform(1e-4, 1e-2, 8).astype(np.float32)
    b_q = quantize_bias(b, s_in, s_w)
    assert b_q.dtype == np.int32
    step = np.float64(s_in) * s_w.astype(np.float64)
    assert (np.abs(b_q * step - b) <= step / 2 * (1 + 1e-9)).all()


def test_bias_hand_worked_and_errors():
    # steps of 0.5 * 0.25 = 0.125: 0.0625 is exactly half a step -> away from zero
    assert quantize_bias([0.0625, -0.0625, 1.0, -0.2], 0.5, 0.25).tolist() == [1, -1, 8, -2]
    with pytest.raises(ValueError, match=r"bias\[1\] = 1e\+30 is .* outside int32"):
        quantize_bias([0.0, 1e30], 0.1, [0.1, 0.1])
    with pytest.raises(ValueError, match=r"weight scales must be a scalar or shape \(2,\), not \(3,\)"):
        quantize_bias([0.0, 1.0], 0.1, [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="input scale must be finite and > 0"):
        quantize_bias([0.0], -0.1, 0.1)


# --- requant params ---

def test_requant_params_reproduce_real_multiplier():
    rng = np.random.default_rng(3)
    s_in, s_out = np.float32(0.0173), np.float32(0.0917)
    s_w = rng.uniform(1e-5, 0.05, 16).astype(np.float32)
    m0, shift = requant_params(s_in, s_w, s_out)
    assert m0.dtype == np.int32 and shift.shape == (16,)
    assert ((m0 >= 1 << 30) & (m0.astype(np.int64) < 1 << 31)).all()
    real = np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)
    approx = m0.astype(np.float64) * 2.0 ** (shift.astype(np.float64) - 31)
    assert (np.abs(approx - real) <= real * 2.0 ** -31).all()


def test_requant_params_errors():
    with pytest.raises(ValueError, match="output scale must be finite and > 0"):
        requant_params(0.1, [0.1], 0.0)
    with pytest.raises(ValueError, match=r"requantization of channel 1 .*too large"):
        requant_params(1e10, [1e-30, 1e10], 1e-10)


# --- quantize_graph: MaxPool ceil_mode, degenerate calibration (issue 14) ---

def _conv_maxpool_graph(pool_only: bool, pads: int):
    """Float graph ``[conv 3x3 pad 1 ->] maxpool 3x3 stride 2 ceil_mode`` on 1x9x8 NCHW."""
    from celosia.sw.graph import Graph

    g = Graph("ceil")
    g.add_input("x", (None, 9, 8, 2))
    src = "x"
    if not pool_only:
        g.add_const("k", np.random.default_rng(4).standard_normal((4, 3, 3, 2)).astype(np.float32))
        g.add_node("conv", "conv", ["x", "k"], ["c"], pads=(1, 1, 1, 1))
        src = "c"
    g.add_node("maxpool", "pool", [src], ["y"], kernel=(3, 3), stride=(2, 2), pads=(pads,) * 4,
               ceil_mode=True)
    g.add_output("y")
    return g


@pytest.mark.parametrize("pads", [0, 1])
def test_maxpool_ceil_mode_quantized_matches_onnxruntime(pads):
    """A lone MaxPool keeps its input's scale: the int8 result dequantized is ONNX MaxPool
    (ceil_mode=1, onnxruntime) of the dequantized input, exactly."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from celosia.sw.driver import run
    from celosia.sw.quant import quantize_graph
    from celosia.rtl.config import AccelConfig

    x = np.random.default_rng(5).standard_normal((3, 9, 8, 2)).astype(np.float32)
    qmodel = quantize_graph(_conv_maxpool_graph(True, pads), x, on_degenerate="ignore")
    assert qmodel.layers[0].attrs["ceil_mode"] is True
    y = run(qmodel, x, AccelConfig(rows=4, cols=4)).y.reshape(3, *qmodel.layers[0].out_shape)
    # 9 rows: (9 + 2p - 3) / 2 rounded up -> 4 (+1 padded); 8 columns: 3 / 4 windows + 1 row/col
    assert y.shape == (3, 4 + pads, 4 + pads, 2)
    x_d = dequantize(quantize(x, qmodel.input_scale, qmodel.input_zp), qmodel.input_scale, qmodel.input_zp)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[pads] * 4,
                            ceil_mode=1)
    graph = helper.make_graph([node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x_d.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("pads", [0, 1])
@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_maxpool_ceil_mode_compiled_matches_golden(pads, dataflow):
    """The compiler's vector lowering covers the extra output row / column: the program
    on the ISA simulator gives the golden model's bytes."""
    from celosia.rtl.config import AccelConfig
    from celosia.sim.isa_sim import run_program
    from celosia.sw.compiler import compile_model
    from celosia.sw.driver import golden_forward
    from celosia.sw.quant import quantize_graph

    rng = np.random.default_rng(6)
    qmodel = quantize_graph(_conv_maxpool_graph(False, pads), rng.standard_normal((8, 9, 8, 2)).astype(np.float32),
                            on_degenerate="ignore")
    x_q = rng.integers(-128, 128, (2, 9 * 8 * 2)).astype(np.int8)
    want = golden_forward(qmodel, x_q)
    assert want.shape == (2, (4 + pads) ** 2 * 4) and len(np.unique(want)) > 10
    program = compile_model(qmodel, AccelConfig(rows=4, cols=4, dataflow=dataflow), batch=2)
    got, _ = run_program(program, x_q)
    np.testing.assert_array_equal(got, want)


def _fc_graph():
    from celosia.sw.graph import Graph

    g = Graph("fc")
    g.add_input("x", (None, 6))
    g.add_const("w", np.abs(np.random.default_rng(7).standard_normal((6, 3))).astype(np.float32))
    g.add_node("fc", "fc1", ["x", "w"], ["h"], activation="relu")
    g.add_output("h")
    return g


def test_degenerate_calibration_warns_and_errors():
    """Constant data, too few distinct samples and a collapsed tensor range each draw a
    CalibrationWarning naming the input or the tensor and its node; "error" raises."""
    import warnings

    from celosia.errors import InputError
    from celosia.sw.quant import MIN_CALIB_SAMPLES, CalibrationWarning, quantize_graph

    rng = np.random.default_rng(8)
    good = rng.random((MIN_CALIB_SAMPLES, 6), dtype=np.float32)
    cases = {  # calibration data -> words of each expected warning
        "good": (good, []),
        "few": (good[:MIN_CALIB_SAMPLES - 1], [f"{MIN_CALIB_SAMPLES - 1} sample(s)"]),
        "repeated": (np.repeat(good[:2], MIN_CALIB_SAMPLES, axis=0), ["200 sample(s), 2 distinct"]),
        "constant": (np.full((MIN_CALIB_SAMPLES, 6), 0.5, np.float32), ["constant (every value is 0.5)",
                                                                          "1 distinct"]),
        # all-negative inputs into positive weights: the ReLU output is always 0
        "collapsed": (-good - 0.1, ["tensor 'h' (output of node 'fc1') takes only the value 0"]),
    }
    for name, (calib, expected) in cases.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quantize_graph(_fc_graph(), calib)
        got = [str(w.message) for w in caught if w.category is CalibrationWarning]
        assert len(got) == len(expected), (name, got)
        for words, msg in zip(expected, got):
            assert words in msg, (name, msg)
            assert "'x'" in msg or "'h'" in msg
        if expected:
            with pytest.raises(InputError, match=expected[0].replace("(", r"\(").replace(")", r"\)")):
                quantize_graph(_fc_graph(), calib, on_degenerate="error")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            quantize_graph(_fc_graph(), calib, on_degenerate="ignore")
    with pytest.raises(ValueError, match="on_degenerate"):
        quantize_graph(_fc_graph(), good, on_degenerate="loud")


def test_quantize_graph_measures_input_zeros():
    """Each GEMM layer's ``in_zeros`` is the fraction of its calibration inputs that quantize
    to the zero point (``|v| < scale / 2``): 30% exact zeros in the model input (the rest at
    least 0.05, far above half a step), and for the second layer the ReLU outputs of the
    first computed here in float."""
    from celosia.sw.graph import Graph
    from celosia.sw.quant import MIN_CALIB_SAMPLES, quantize_graph

    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((6, 8)).astype(np.float32)
    g = Graph("mlp")
    g.add_input("x", (None, 6))
    g.add_const("w1", w1)
    g.add_const("w2", rng.standard_normal((8, 3)).astype(np.float32))
    g.add_node("fc", "fc1", ["x", "w1"], ["h"], activation="relu")
    g.add_node("fc", "fc2", ["h", "w2"], ["y"])
    g.add_output("y")
    calib = rng.uniform(0.05, 1.0, (MIN_CALIB_SAMPLES, 6)).astype(np.float32)
    calib.reshape(-1)[rng.permutation(calib.size)[:int(0.3 * calib.size)]] = 0.0
    layers = quantize_graph(g, calib).layers
    assert layers[0].in_zeros == pytest.approx(0.3, abs=1 / calib.size)
    h = np.maximum(calib.astype(np.float64) @ w1, 0.0)
    want = np.mean(h < layers[1].in_scale / 2)
    assert 0.2 < want < 0.8 and layers[1].in_zeros == pytest.approx(want)
