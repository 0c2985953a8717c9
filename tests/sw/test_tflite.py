"""int8 .tflite import against LiteRT's reference kernels (ai-edge-litert, BUILTIN_REF).

Every model here is written by the repository's own flatbuffer writer
(``tests/sw/tflite_cases.py``, ``celosia.examples.make_tflite``); LiteRT is the
independent reference: it loads and runs each file, and Celosia's golden model must
produce the same int8 outputs from the same int8 inputs.
"""

import io
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest

from celosia.sim.golden import golden_forward, multiply_by_quantized_multiplier
from celosia.sw.data import DATA_DIR, MODELS, digits_split
from celosia.sw.importer import load_onnx, load_tflite
from celosia.sw.importer.tflite_builder import TFLiteBuilder, export_tflite
from celosia.sw.importer.tflite_import import avgpool_multiplier, mean_multiplier
from celosia.sw.quant import quantize_graph
from tflite_cases import OPS, assert_cli_one_line_error, build, litert, mixed

pytest.importorskip("ai_edge_litert")

FC_CASES = ("fc", "fc_per_tensor", "reshape_fc")


def _load(data: bytes, tmp_path: Path, name: str = "m.tflite"):
    path = tmp_path / name
    path.write_bytes(data)
    return load_tflite(path)


def _inputs(rng, shape, n=6) -> np.ndarray:
    """Random int8 samples; the first two saturate every input at -128 and 127."""
    x = rng.integers(-128, 128, (n, *shape)).astype(np.int8)
    x[0], x[1] = -128, 127
    return x


def _compare(case, seed, tmp_path):
    rng = np.random.default_rng(seed)
    data, shape = build(case, rng, corner=seed % 2 == 1)
    x = _inputs(rng, shape)
    ref = litert(data, x).reshape(len(x), -1)
    model = _load(data, tmp_path)
    return model, x, ref, golden_forward(model, x.reshape(len(x), -1))


@pytest.mark.parametrize("case", OPS)
def test_single_op_bit_exact_against_litert(case, tmp_path):
    """Random quantization incl. the corners (zero points at -128 / 127, scales 2^-12..2^4,
    per-channel weight scales 2^-20..2^0) and saturating inputs: 0 mismatching elements."""
    for seed in range(8):
        model, _, ref, got = _compare(case, seed, tmp_path)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, ref, err_msg=f"{case} seed {seed}")
        # the output is dequantized with the file's parameters (the zero-point-free average
        # pool runs with zero points 0 but keeps them)
        assert model.output_zp in range(-128, 128) and model.meta["output_qparams"] == (
            model.output_scale, model.output_zp)
        if case == "avgpool":
            assert (model.layers[0].in_zp, model.layers[0].out_zp) == (0, 0)


def test_corner_multipliers_conv_bit_exact(tmp_path):
    """Per-channel scales 2^-20..2^0 with S_in = 1 and S_out = 2^-6: multipliers from 2^-14 to
    2^6, i.e. both left (positive) and right (negative) shifts, on saturating inputs."""
    b = TFLiteBuilder()
    C = 21
    ws = (2.0 ** np.linspace(-20, 0, C)).astype(np.float32)
    rng = np.random.default_rng(3)
    x = b.tensor("x", (1, 3, 3, 2), scale=1.0, zero_point=-128)
    w = b.tensor("w", (C, 1, 1, 2), scale=ws, zero_point=[0] * C,
                 data=rng.integers(-127, 128, (C, 1, 1, 2)))
    bias = b.tensor("b", (C,), "int32", scale=ws, zero_point=[0] * C, data=rng.integers(-50, 50, C))
    y = b.tensor("y", (1, 3, 3, C), scale=2.0 ** -6, zero_point=5)
    b.op("CONV_2D", [x, w, bias], [y], Conv2DOptions=dict(padding=1, stride_h=1, stride_w=1))
    data = b.finish([x], [y])
    model = _load(data, tmp_path)
    shifts = model.layers[0].shift
    assert shifts.min() <= -13 and shifts.max() >= 6
    xs = _inputs(rng, (3, 3, 2), 8)
    ref = litert(data, xs).reshape(len(xs), -1)
    got = golden_forward(model, xs.reshape(len(xs), -1))
    np.testing.assert_array_equal(got, ref)
    assert (ref == 127).any() and (ref == -128).any()  # the outputs saturate both ways


def _single_rounding(acc, m0, shift):
    """``(acc * M0 + 2^(t-1)) >> t`` with ``t = 31 - shift``: one rounding, ties up."""
    t = 31 - np.asarray(shift, np.int64)
    return (np.asarray(acc, np.int64) * np.asarray(m0, np.int64) + (np.int64(1) << (t - 1))) >> t


@pytest.mark.parametrize("case", FC_CASES)
def test_fully_connected_litert_rounds_once(case, tmp_path):
    """LiteRT's FULLY_CONNECTED equals the single-rounding formula (written here) on the same
    accumulators and multipliers, not the double rounding of its CONV_2D; the importer gives
    the layer ``rounding = "single"`` and the golden model equals LiteRT exactly."""
    differ = 0
    for seed in range(8):
        model, x, ref, got = _compare(case, seed, tmp_path)
        layer = model.layers[0]
        assert layer.rounding == "single"
        acc = (x.reshape(len(x), -1).astype(np.int64) - layer.in_zp) @ layer.w.astype(np.int64)
        acc = acc + layer.bias
        once = np.clip(_single_rounding(acc, layer.m0, layer.shift) + layer.out_zp,
                       layer.act_min, layer.act_max)
        np.testing.assert_array_equal(once, ref, err_msg=f"{case} seed {seed}")
        twice = np.clip(multiply_by_quantized_multiplier(acc, layer.m0, layer.shift) + layer.out_zp,
                        layer.act_min, layer.act_max)
        differ += int((twice != ref).sum())
        np.testing.assert_array_equal(got, ref)
    print(f"{case}: the double rounding would differ from LiteRT in {differ} elements")


def test_avgpool_multiplier_divides_exactly():
    """TFLite's AveragePool division ``(acc +- n/2) / n`` (C division), hand-written here, equals
    the PPU's MBQM with the chosen multiplier for every int8 window sum, n = 1..100."""
    for n in range(1, 101):
        m0, shift = avgpool_multiplier(n)
        acc = np.arange(-128 * n, 127 * n + 1)
        want = [int((a + n // 2) / n) if a > 0 else -int((-a + n // 2) / n) for a in acc[::7]]
        np.testing.assert_array_equal(multiply_by_quantized_multiplier(acc[::7], m0, shift), want)
    assert avgpool_multiplier(1) == (1 << 30, 1)
    assert avgpool_multiplier(4) == ((1 << 29) + 1, 0)


def test_mean_multiplier_hand_worked():
    # S_in / S_out = 1 -> QuantizeMultiplier = (2^30, 1); n = 4: s = 2, M0' = 2^32 // 4, shift' = -1.
    assert mean_multiplier(0.5, 0.5, 4) == (1 << 30, -1)
    # n = 6: s = 2, M0' = 2^32 // 6 = 715827882.
    assert mean_multiplier(0.25, 0.5, 6) == (715827882, -2)


def test_mixed_model_bit_exact(tmp_path):
    """conv -> depthwise -> add -> average pool -> mean -> requantize -> classifier (as CONV_2D)."""
    rng = np.random.default_rng(11)
    data, shape = mixed(rng)
    model = _load(data, tmp_path)
    assert [l.op for l in model.layers] == ["conv", "conv", "add", "avgpool", "gap", "avgpool",
                                            "conv"]
    x = _inputs(rng, shape, 16)
    np.testing.assert_array_equal(golden_forward(model, x.reshape(len(x), -1)),
                                  litert(data, x).reshape(len(x), -1))


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def test_ptq_model_round_trips_through_tflite(digits, tmp_path):
    """Celosia's PTQ model written as .tflite and read back runs the same integers."""
    x_train, x_test, _, _ = digits
    graph = load_onnx(MODELS["digits_cnn"])
    shape = graph.tensors[graph.inputs[0]].shape[1:]
    qmodel = quantize_graph(graph, x_train.reshape(-1, *shape))
    back = _load(export_tflite(qmodel), tmp_path)
    for a, b in zip(qmodel.layers, back.layers):
        assert (a.op, a.in_zp, a.out_zp, a.act_min, a.act_max) == (b.op, b.in_zp, b.out_zp,
                                                                   b.act_min, b.act_max)
        np.testing.assert_array_equal(a.m0, b.m0)
        np.testing.assert_array_equal(a.shift, b.shift)
        np.testing.assert_array_equal(a.bias, b.bias)
    x_q = qmodel.quantize_input(x_test.reshape(-1, *shape)[:50])
    np.testing.assert_array_equal(golden_forward(back, x_q), golden_forward(qmodel, x_q))


def same_but_float_ulps(a: bytes, b: bytes, rel: float = 1e-6) -> list[str]:
    """Where flatbuffers ``a`` and ``b`` differ by more than a float32 rounding: ``[]`` when
    they have the same length and every differing 4-byte-aligned word reads, in both, as a
    float32 within ``rel`` of the other (the quantization scales, which come from float
    calibration whose last bit depends on the CPU's BLAS kernels; every integer, offset
    and string must be equal)."""
    if len(a) != len(b):
        return [f"lengths {len(a)} != {len(b)}"]
    fa, fb = np.frombuffer(a[:len(a) // 4 * 4], "<f4"), np.frombuffer(b[:len(b) // 4 * 4], "<f4")
    bad = []
    for w in sorted({i // 4 for i in range(len(a)) if a[i] != b[i]}):
        x, y = (float(fa[w]), float(fb[w])) if w < len(fa) else (np.nan, 0.0)
        if not (np.isfinite(x) and np.isfinite(y) and x != 0 and abs(x - y) <= rel * abs(x)):
            bad.append(f"word at byte {4 * w}: {a[4 * w:4 * w + 4].hex()} != {b[4 * w:4 * w + 4].hex()}")
    return bad


def test_same_but_float_ulps_tells_a_rounding_from_a_change():
    """The comparison below lets a float32 scale differ in its last bits and nothing else."""
    a = np.array([1, 2, 3], "<i4").tobytes() + np.array([0.24498623609542847], "<f4").tobytes()
    b = a[:12] + np.array([0.24498626589775085], "<f4").tobytes()
    assert same_but_float_ulps(a, a) == [] and same_but_float_ulps(a, b) == []
    assert same_but_float_ulps(a, a[:12] + np.array([0.25], "<f4").tobytes())
    assert same_but_float_ulps(a, np.array([1, 2, 4], "<i4").tobytes() + a[12:])
    assert same_but_float_ulps(a, a[:8])


def test_bundled_tflite_files_are_what_the_script_writes():
    """The committed files are what ``examples/make_tflite.py`` writes, byte for byte up to
    the last bits of float32 scales (calibration runs float inference, whose rounding
    differs between CPUs: an AVX-512 host gives scales one or two ulps apart)."""
    from celosia.examples.make_tflite import FILES, build as build_file
    for name in FILES:
        assert same_but_float_ulps((DATA_DIR / name).read_bytes(), build_file(name)) == [], name


@pytest.mark.parametrize("name", ["digits_cnn_int8_conv.tflite", "digits_mlp_int8.tflite",
                                  "digits_cnn_int8.tflite", "digits_resnet_int8.tflite",
                                  "digits_resnet_int8_conv.tflite"])
def test_bundled_digits_tflite_against_litert_and_float(digits, name):
    """Float input through the file's QUANTIZE, float output through DEQUANTIZE: LiteRT and
    Celosia agree exactly (the classifier as FULLY_CONNECTED or as CONV_2D); int8 accuracy
    within 1 point of the float model's."""
    from celosia.sw.graph import run_float
    _, x_test, _, y_test = digits
    model = load_tflite(DATA_DIR / name)
    x = x_test.reshape(len(x_test), *model.input_shape)
    ref = litert((DATA_DIR / name).read_bytes(), x)
    ours = model.dequantize_output(golden_forward(model, model.quantize_input(x)))
    np.testing.assert_array_equal(ours, ref)
    graph = load_onnx(MODELS[name.split("_int8")[0]])
    fshape = graph.tensors[graph.inputs[0]].shape[1:]
    float_acc = (run_float(graph, x_test.reshape(-1, *fshape)).argmax(1) == y_test).mean()
    for y in (ref, ours):
        assert (y.argmax(1) == y_test).mean() >= float_acc - 0.01


# -- one-line errors, exit 1 -----------------------------------------------------------------

def _bad_model(kind: str) -> bytes:
    b = TFLiteBuilder()
    if kind == "float":
        x = b.tensor("x_float", (1, 4), "float32")
        w = b.tensor("w", (2, 4), "float32", data=np.ones((2, 4)))
        y = b.tensor("y", (1, 2), "float32")
        b.op("FULLY_CONNECTED", [x, w, -1], [y], FullyConnectedOptions={})
        return b.finish([x], [y])
    if kind == "int16":
        x = b.tensor("x16", (1, 4, 4, 2), "int16", scale=0.01, zero_point=0)
        y = b.tensor("y16", (1, 2, 2, 2), "int16", scale=0.01, zero_point=0)
        b.op("MAX_POOL_2D", [x], [y], Pool2DOptions=dict(padding=1, stride_h=2, stride_w=2,
                                                         filter_height=2, filter_width=2))
        return b.finish([x], [y])
    if kind == "pad_pool":
        x = b.tensor("x", (1, 4, 4, 2), scale=0.1, zero_point=0)
        xp = b.tensor("x_padded", (1, 6, 6, 2), scale=0.1, zero_point=0)
        y = b.tensor("y", (1, 3, 3, 2), scale=0.1, zero_point=0)
        b.op("PAD", [x, b.tensor("p", (4, 2), "int32", data=[[0, 0], [1, 1], [1, 1], [0, 0]])], [xp])
        b.op("MAX_POOL_2D", [xp], [y], Pool2DOptions=dict(padding=1, stride_h=2, stride_w=2,
                                                          filter_height=2, filter_width=2))
        return b.finish([x], [y])
    x = b.tensor("x", (1, 4), scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 2), scale=0.1, zero_point=0)
    if kind == "unknown":
        t = b.tensor("t", (1, 4), scale=0.1, zero_point=0)
        b.op("TANH", [x], [t])
        w = b.tensor("w", (2, 4), scale=0.01, zero_point=0, data=np.ones((2, 4)))
        b.op("FULLY_CONNECTED", [t, w, -1], [y], FullyConnectedOptions={})
    else:  # asymmetric weights
        w = b.tensor("w_asym", (2, 4), scale=0.01, zero_point=3, data=np.ones((2, 4)))
        b.op("FULLY_CONNECTED", [x, w, -1], [y], FullyConnectedOptions={})
    return b.finish([x], [y])


@pytest.mark.parametrize("kind,words", [
    ("float", ["tensor 'x_float'", "float32", "FULLY_CONNECTED"]),
    ("int16", ["tensor 'x16'", "int16", "MAX_POOL_2D"]),
    ("unknown", ["op #0 TANH", "not supported"]),
    ("asymmetric", ["filter tensor 'w_asym'", "zero point 3", "symmetric"]),
    ("pad_pool", ["op #0 PAD", "only as the input of CONV_2D", "MAX_POOL_2D"]),
])
def test_unsupported_models_give_one_line_errors(kind, words, tmp_path):
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(_bad_model(kind))
    assert_cli_one_line_error(path, words)


def test_not_a_tflite_file_is_a_one_line_error(tmp_path):
    from celosia.sw.cli import main
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["compile", str(path), "--summary"]) == 1
    assert "not a TFLite flatbuffer" in err.getvalue() and len(err.getvalue().splitlines()) == 1


# -- the CLI ---------------------------------------------------------------------------------

def test_cli_run_float_and_raw(digits, tmp_path, capsys):
    from celosia.sw.cli import main
    path = DATA_DIR / "digits_cnn_int8_conv.tflite"
    model = load_tflite(path)
    x = digits[1][:3].reshape(3, 8, 8, 1)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), litert(path.read_bytes(), x))
    assert "quantization from tflite" in capsys.readouterr().out
    x_q = model.quantize_input(x)
    np.save(tmp_path / "xq.npy", x_q.reshape(3, 8, 8, 1))
    assert main(["run", str(path), "--input", str(tmp_path / "xq.npy"), "--raw", "--out",
                 str(tmp_path / "yq.npy")]) == 0
    y_q = np.load(tmp_path / "yq.npy")
    assert y_q.dtype == np.int8
    np.testing.assert_array_equal(y_q, golden_forward(model, x_q))
    np.save(tmp_path / "bad.npy", x.astype(np.float32))
    assert main(["run", str(path), "--input", str(tmp_path / "bad.npy"), "--raw"]) == 1


def test_cli_compile_summary_names_source_and_quantization(tmp_path, capsys):
    from celosia.sw.cli import main
    path = DATA_DIR / "digits_cnn_int8.tflite"
    assert main(["compile", str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert f"quantization from tflite ({path})" in out
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("quantization from tflite"))
    rows = lines[start + 2:]
    model = load_tflite(path)
    assert len(rows) == len(model.layers)
    for q, row in zip(model.quant_summary(), rows):
        assert row.startswith(q["name"][:23])
        assert f"{q['in_scale']:.4g}/{q['in_zp']}" in row and f"{q['out_scale']:.4g}/{q['out_zp']}" in row
        assert row.endswith(f"{q['clamp'][0]}..{q['clamp'][1]}")
    assert rows[0].split()[3].endswith("/ch") or "/ch" in rows[0]  # per-channel weight scales


def test_demo_tflite_step_bit_exact_against_litert():
    from celosia.rtl.config import AccelConfig
    from celosia.sw.demo import demo
    out = io.StringIO()
    assert demo(AccelConfig(), backend="golden", samples=6, out=out,
                models=("digits_cnn_tflite",)) == 0
    text = out.getvalue()
    assert "digits_cnn_int8_conv.tflite (int8 TFLite, quantization from the file)" in text
    assert "bit-exact against LiteRT (reference kernels): yes (6/6 images)" in text


def test_float_input_quantized_as_litert(tmp_path):
    """A float-input model (QUANTIZE first): values on and next to ties of x / S quantize as
    LiteRT's QUANTIZE does (float32 division, ties away from zero)."""
    rng = np.random.default_rng(2)
    for _ in range(6):
        s, z = float(np.float32(2.0 ** rng.uniform(-10, 2))), int(rng.integers(-128, 128))
        b = TFLiteBuilder()
        xf = b.tensor("x", (1, 1, 1, 256), "float32")
        xq = b.tensor("xq", (1, 1, 1, 256), scale=s, zero_point=z)
        y = b.tensor("y", (1, 1, 1, 256), scale=s, zero_point=z)
        b.op("QUANTIZE", [xf], [xq])
        b.op("MAX_POOL_2D", [xq], [y], Pool2DOptions=dict(padding=1, stride_h=1, stride_w=1,
                                                          filter_height=1, filter_width=1))
        data = b.finish([xf], [y])
        k = rng.integers(-200, 200, 128)
        x = np.concatenate([(k + 0.5) * s, rng.standard_normal(128) * 100 * s]).astype(np.float32)
        x = x.reshape(1, 1, 1, 256)
        model = _load(data, tmp_path)
        assert model.meta["float_input"]
        np.testing.assert_array_equal(golden_forward(model, model.quantize_input(x)),
                                      litert(data, x).reshape(1, -1))


def test_report_names_source_and_quantization():
    from celosia.rtl.config import AccelConfig
    from celosia.sw.driver import run_quantized
    model = load_tflite(DATA_DIR / "digits_cnn_int8.tflite")
    x_q = np.zeros((1, model.in_features), np.int8)
    report = run_quantized(model, x_q, AccelConfig(), backend="golden").report
    assert report["source"] == "tflite"
    q = report["quantization"]
    assert [e["name"] for e in q] == [l.name for l in model.layers]
    first = model.layers[0]
    assert q[0]["in_scale"] == first.in_scale and q[0]["in_zp"] == first.in_zp
    assert q[0]["w_scale"] == [float(first.w_scale.min()), float(first.w_scale.max())]
    assert q[0]["per_channel"] and q[2]["w_scale"] is None  # conv, conv, maxpool, fc


@pytest.mark.parametrize("name", ["digits_mlp_int8.tflite", "digits_resnet_int8.tflite"])
def test_bundled_tflite_on_the_isa_simulator(name):
    """The compiled program on the ISA simulator (every instruction's semantics, the STORE's
    single rounding included) equals LiteRT's reference kernels on a few held-out images."""
    from celosia.rtl.config import AccelConfig
    from celosia.sim.isa_sim import run_program
    from celosia.sw.compiler import compile_model

    path = DATA_DIR / name
    model = load_tflite(path)
    x = digits_split()[1][:4].reshape(4, *model.input_shape)
    x_q = model.quantize_input(x)
    program = compile_model(model, AccelConfig(rows=4, cols=4))
    y_q = np.concatenate([run_program(program, x_q[i:i + 1])[0] for i in range(len(x_q))])
    np.testing.assert_array_equal(model.dequantize_output(y_q), litert(path.read_bytes(), x))
