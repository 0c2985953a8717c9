"""The ``celosia`` command line, run as a user would: a subprocess per command.

Outputs are checked against independent figures (labels, the golden back end,
K*N from the ONNX file's initializers, utilization recomputed from the report's
own counts); every error must be one ``celosia ...`` line on stderr, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from celosia.sw.data import MODELS

DIGITS = MODELS["digits_mlp"]
REPORT_KEYS = {"backend", "config", "cycles", "macs", "utilization", "dram_bytes_read",
               "dram_bytes_written", "layers"}
LAYER_KEYS = {"name", "op", "macs", "cycles", "compute_cycles"}
#: Traffic and roofline fields, per layer and in the report's ``roofline`` (one run each).
ROOF_KEYS = {"macs_per_run", "dram_read_bytes", "dram_write_bytes", "dram_bytes_per_mac", "reread",
             "bound", "bound_cycles", "roofline_efficiency"}


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celosia.sw.cli", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Calibration (training split), 100 held-out inputs with labels, and a 2-sample input."""
    pytest.importorskip("sklearn")
    from celosia.sw.data import digits_split
    x_train, x_test, _, y_test = digits_split()
    d = tmp_path_factory.mktemp("data")
    np.save(d / "calib.npy", x_train)
    np.save(d / "x.npy", x_test[:100])
    np.save(d / "x2.npy", x_test[:2])
    return {"dir": d, "calib": d / "calib.npy", "x": d / "x.npy", "x2": d / "x2.npy",
            "labels": y_test[:100]}


def onnx_layer_kn() -> list[int]:
    """K*N of every Gemm / MatMul of the bundled model, from its initializer shapes."""
    model = onnx.load(str(DIGITS))
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    kn = []
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul"):
            dims = inits[node.input[1]]
            assert len(dims) == 2
            kn.append(dims[0] * dims[1])
    return kn


# -- run ----------------------------------------------------------------------------------

def test_run_golden_outputs_and_report(data, tmp_path):
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", data["x"],
               "--out", "y.npy", "--report", "r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (100, 10) and y.dtype == np.float32
    assert (y.argmax(1) == data["labels"]).mean() >= 0.85
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["backend"] == "golden"
    assert report["config"]["rows"] == 8 and report["config"]["cols"] == 8
    assert report["macs"] == sum(onnx_layer_kn()) * 100
    assert len(report["layers"]) == 3
    for i, (layer, kn) in enumerate(zip(report["layers"], onnx_layer_kn())):
        assert LAYER_KEYS | ROOF_KEYS <= set(layer)
        assert layer["op"] == "fc"
        # static traffic of one run (golden: batch 1): the model input read once, the hidden
        # layers' inputs not at all (kept on chip by the layer before), no weight byte (every
        # weight fits the default weight buffer: loaded once, by the init graph), only the
        # last layer's output written; no measured cycles, so no latency bound
        assert layer["macs_per_run"] == kn
        assert layer["reread"] == {"ifmap": 1.0 if i == 0 else 0.0, "weights": 0.0}
        assert layer["dram_weight_bytes"] == 0
        assert layer["dram_bytes_per_mac"] == round(
            (layer["dram_read_bytes"] + layer["dram_write_bytes"]) / kn, 4)
        assert layer["bound"] in ("compute", "bandwidth") and layer["roofline_efficiency"] is None
        assert layer["cycles"] is None and layer["compute_cycles"] is None
    roof = report["roofline"]
    assert ROOF_KEYS | {"dram_bytes_per_inference", "peak_macs_per_cycle", "peak_bytes_per_cycle"} <= set(roof)
    assert (roof["peak_macs_per_cycle"], roof["peak_bytes_per_cycle"]) == (64, 8)
    assert roof["dram_read_bytes"] == sum(l["dram_read_bytes"] for l in report["layers"]) + 8
    assert roof["dram_write_bytes"] == sum(l["dram_write_bytes"] for l in report["layers"]) == 10
    kept = report["kept_outputs"]
    assert kept["layers"] == ["fc0", "fc1"]
    # through DRAM: fc0 / fc1 write 64 / 32 bytes and fc1 / fc2 read them, plus fc1's and fc2's
    # ifmap LOAD (32 bytes of instruction each)
    assert kept["dram_bytes_per_inference_through_dram"] == \
        roof["dram_bytes_per_inference"] + 2 * (64 + 32) + 2 * 32
    assert f"outputs kept on chip: fc0, fc1; DRAM bytes per inference {roof['dram_bytes_per_inference']:g}" \
        in proc.stdout
    assert roof["dram_bytes_per_inference"] == roof["dram_read_bytes"] + roof["dram_write_bytes"]
    # the printed roofline table: a row per layer and the totals
    out = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("layer") and "bound" in line)
    assert out[head].split() == ["layer", "MACs", "DRAM", "B", "B/MAC", "reread", "i/w", "bound",
                                 "bound", "cyc", "cycles", "eff"]
    for line, layer in zip(out[head + 1:], report["layers"] + [dict(name="total", **roof)]):
        cells = line.split()
        assert cells[0] == layer["name"] and int(cells[1]) == layer["macs_per_run"]
        assert cells[5] == layer["bound"] and int(cells[6]) == layer["bound_cycles"]
        assert cells[7:] == ["-", "-"]
    assert any(line.startswith(f"DRAM bytes per inference {roof['dram_bytes_per_inference']:.0f} ")
               for line in out)
    # resident weights: the init graph reads every weight once (plus 32 B per LOAD and its two
    # descriptors); streamed, each run would read them again, with a LOAD per GEMM
    res = report["resident_weights"]
    assert res["enabled"] and res["layers"] == [l["name"] for l in report["layers"]]
    weights = sum(onnx_layer_kn())
    assert res["init_dram_bytes"] > weights
    assert (res["init_dram_bytes"] - weights - 16) % 32 == 0
    assert res["dram_bytes_per_inference"] == roof["dram_bytes_per_inference"]
    assert res["dram_bytes_per_inference_streamed"] > res["dram_bytes_per_inference"] + weights
    assert f"{res['dram_bytes_per_inference_streamed']:g} with every weight streamed" in proc.stdout
    # the switch: every weight streamed, each byte once per run
    off = cli("run", DIGITS, "--calib", data["calib"], "--input", data["x"], "--report", "off.json",
              "--out", "off.npy", "--no-resident-weights", cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    off_report = json.loads((tmp_path / "off.json").read_text())
    assert not off_report["resident_weights"]["enabled"] and "weights on chip: none" in off.stdout
    assert all(l["reread"]["weights"] == 1.0 for l in off_report["layers"])
    assert off_report["roofline"]["dram_weight_bytes"] == weights
    assert off_report["roofline"]["dram_bytes_per_inference"] == res["dram_bytes_per_inference_streamed"]
    np.testing.assert_array_equal(np.load(tmp_path / "off.npy"), y)


@pytest.fixture(scope="module")
def pysim_run(data, tmp_path_factory):
    """The same 2 samples on golden and on pysim (4x4, both in one hardware run)."""
    d = tmp_path_factory.mktemp("pysim")
    common = ["--calib", data["calib"], "--input", data["x2"], "--array", "4x4"]
    golden = cli("run", DIGITS, *common, "--out", "yg.npy", "--report", "rg.json", cwd=d)
    assert golden.returncode == 0, golden.stderr
    pysim = cli("run", DIGITS, *common, "--backend", "pysim", "--batch", "2",
                "--out", "yp.npy", "--report", "rp.json", "--trace", "tp.json", cwd=d)
    assert pysim.returncode == 0, pysim.stderr
    return d, pysim


def test_run_pysim_matches_golden(pysim_run):
    d, proc = pysim_run
    assert "Traceback" not in proc.stderr
    yg, yp = np.load(d / "yg.npy"), np.load(d / "yp.npy")
    assert yp.shape == (2, 10) and yp.dtype == np.float32
    np.testing.assert_array_equal(yp, yg)


def test_run_pysim_report(pysim_run):
    d, _ = pysim_run
    report = json.loads((d / "rp.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["backend"] == "pysim"
    assert report["config"]["rows"] == 4 and report["config"]["cols"] == 4
    cycles = report["cycles"]
    assert isinstance(cycles, int) and cycles > 0
    assert report["utilization"] == pytest.approx(report["macs"] / (cycles * 4 * 4), rel=1e-12)
    assert 0 < report["utilization"] <= 1
    assert report["dram_bytes_read"] > 0
    assert report["dram_bytes_written"] >= 2 * 10  # at least the int8 outputs
    layers = report["layers"]
    assert sum(layer["macs"] for layer in layers) == report["macs"]
    assert [layer["macs"] for layer in layers] == [kn * 2 for kn in onnx_layer_kn()]
    for layer in layers:
        assert LAYER_KEYS <= set(layer)
        assert isinstance(layer["cycles"], int) and layer["cycles"] > 0
        assert 0 < layer["compute_cycles"] <= layer["cycles"]
        # measured cycles against the roofline bound: never faster than the bound
        assert ROOF_KEYS <= set(layer)
        assert layer["bound_cycles"] <= layer["cycles"]
        assert layer["roofline_efficiency"] == round(layer["bound_cycles"] / layer["cycles"], 4)
    # the static traffic is what the counters measured (one run of 2 samples here)
    roof = report["roofline"]
    assert report["runs"] == 1
    assert (roof["dram_read_bytes"], roof["dram_write_bytes"]) == (report["dram_bytes_read"],
                                                                   report["dram_bytes_written"])
    assert roof["cycles"] == report["cycles_per_run"]


def test_run_trace(pysim_run, data):
    """--trace: a Chrome / Perfetto trace of the first run, one track per engine, one slice
    per layer and busy engine, the layers back to back over the run's cycles; golden
    measures no cycles, so --trace with it is a one-line error."""
    d, _ = pysim_run
    report = json.loads((d / "rp.json").read_text())
    events = json.loads((d / "tp.json").read_text())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names == {1: "LOAD", 2: "COMPUTE", 3: "VECTOR", 4: "STORE"}
    slices = [e for e in events if e["ph"] == "X"]
    for k, layer in enumerate(report["layers"]):  # the MLP: fc layers, every engine busy
        mine = [e for e in slices if e["name"].startswith(f"L{k} {layer['name']} ")]
        assert sorted(e["tid"] for e in mine) == [1, 2, 4]
        assert all(e["dur"] == layer["cycles"] for e in mine)
    starts = sorted({e["ts"] for e in slices})
    assert starts[0] == 0 and len(starts) == len(report["layers"])
    assert max(e["ts"] + e["dur"] for e in slices) == report["cycles_per_run"]
    proc = cli("run", DIGITS, "--input", data["x2"], "--trace", "t.json", cwd=d)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert stderr_lines(proc) == ["celosia run: error: --trace t.json: needs a back end that "
                                  "measures cycles (--backend perf, pysim or verilator)"]


def test_run_without_calib_warns(data, tmp_path):
    proc = cli("run", DIGITS, "--input", data["x2"], "--out", "y.npy", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "--calib" in proc.stderr
    assert np.load(tmp_path / "y.npy").shape == (2, 10)


# -- errors -------------------------------------------------------------------------------

def save_unsupported(tmp_path: Path, op: str) -> Path:
    """A float model whose second node (named 'bad_<op>') is ``op``."""
    rng = np.random.default_rng(0)
    if op == "Sigmoid":
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc"),
                 helper.make_node("Sigmoid", ["h"], ["y"], name="bad_Sigmoid")]
        inits = [numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "w"),
                 numpy_helper.from_array(np.zeros(10, np.float32), "b")]
        in_shape, out_shape = [None, 64], [None, 10]
    else:  # imported fine, but no hardware mapping (a ReLU on the raw input): the quantizer names it
        nodes = [helper.make_node(op, ["x"], ["h"], name=f"bad_{op}"),
                 helper.make_node("Conv", ["h", "k"], ["y"], name="conv", kernel_shape=[3, 3])]
        inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "k")]
        in_shape, out_shape = [None, 1, 8, 8], [None, 4, 6, 6]
    graph = helper.make_graph(nodes, "unsupported",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / f"{op.lower()}.onnx"
    onnx.save(model, str(path))
    return path


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("celosia"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("op", ["Sigmoid", "Relu"])
def test_error_unsupported_op(data, tmp_path, op):
    model = save_unsupported(tmp_path, op)
    calib = data["calib"] if op == "Sigmoid" else "img.npy"
    np.save(tmp_path / "img.npy", np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32))
    x = data["x2"] if op == "Sigmoid" else "img.npy"
    proc = cli("run", model, "--calib", calib, "--input", x, cwd=tmp_path)
    assert_one_line_error(proc, f"bad_{op}", op)


def test_error_missing_model(data, tmp_path):
    proc = cli("run", "nowhere.onnx", "--calib", data["calib"], "--input", data["x2"], cwd=tmp_path)
    assert_one_line_error(proc, "nowhere.onnx")


def test_error_input_shape(data, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((5, 63), np.float32))
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", "short.npy", cwd=tmp_path)
    line = assert_one_line_error(proc, "short.npy", "64")
    assert "63" in line


def test_error_input_not_npy(data, tmp_path):
    (tmp_path / "x.csv").write_text("0,1,2,3\n")
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", "x.csv", cwd=tmp_path)
    assert_one_line_error(proc, "x.csv", ".npy")


def test_error_input_nan(data, tmp_path):
    x = np.load(data["x2"])
    x[1, 5] = np.nan
    np.save(tmp_path / "nan.npy", x)
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", "nan.npy", cwd=tmp_path)
    assert_one_line_error(proc, "nan.npy", "NaN")


def test_error_calib_nan(data, tmp_path):
    x = np.load(data["x2"])
    x[0, 0] = np.inf
    np.save(tmp_path / "calib_bad.npy", x)
    proc = cli("run", DIGITS, "--calib", "calib_bad.npy", "--input", data["x2"], cwd=tmp_path)
    assert_one_line_error(proc, "calib_bad.npy", "NaN or infinity")


def test_error_weights_not_quantizable(data, tmp_path):
    """A PTQ helper's ValueError becomes a one-line error naming the node."""
    w = np.ones((64, 10), np.float32)
    w[3, 3] = np.nan
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm_nan")], "nanw",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "nanw.onnx"))
    proc = cli("run", "nanw.onnx", "--calib", data["calib"], "--input", data["x2"], cwd=tmp_path)
    assert_one_line_error(proc, "mm_nan", "NaN")


def test_error_output_folder_missing(data, tmp_path):
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", data["x2"],
               "--out", "no/such/dir/y.npy", cwd=tmp_path)
    assert_one_line_error(proc, "no/such/dir")


@pytest.mark.parametrize("options, fragment", [
    (["--array", "0x8"], "rows"),
    (["--array", "65x8"], "rows"),
    (["--array", "8x0"], "cols"),
    (["--array", "8by8"], "8by8"),
    (["--set", "weight_rows=3"], "weight_rows"),
    (["--set", "weight_rows=abc"], "weight_rows"),
    (["--set", "nosuchfield=1"], "nosuchfield"),
    (["--set", "weight_rows"], "FIELD=VALUE"),
    (["--dataflow", "xyz"], "xyz"),
])
def test_error_config(data, tmp_path, options, fragment):
    proc = cli("run", DIGITS, "--calib", data["calib"], "--input", data["x2"], *options, cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_line_error(proc, fragment)


def test_error_config_verilog(tmp_path):
    proc = cli("verilog", "--array", "65x8", "-o", "accel.v", cwd=tmp_path)
    assert proc.returncode == 1
    assert_one_line_error(proc, "rows", "65")
    assert not (tmp_path / "accel.v").exists()


@pytest.mark.parametrize("options", [["--batch", "0"], ["--backend", "fpga"]])
def test_usage_error_exits_2(data, tmp_path, options):
    proc = cli("run", DIGITS, "--input", data["x2"], *options, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


# -- verilog, compile -----------------------------------------------------------------------

def test_verilog(tmp_path):
    proc = cli("verilog", "--array", "2x2", "-o", "accel.v", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "module celosia_accelerator" in (tmp_path / "accel.v").read_text()


def test_compile_disassembly(data, tmp_path):
    proc = cli("compile", DIGITS, "--calib", data["calib"], "--array", "8x8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    mnemonics = {line.split()[1] for line in proc.stdout.splitlines()
                 if len(line.split()) > 1 and line.split()[0].isdigit()}
    assert {"LOAD", "GEMM", "STORE"} <= mnemonics


def test_compile_summary_with_and_without_resident_weights(data, tmp_path):
    """The summary names the initialization graph; --no-resident-weights compiles without it
    (and the disassembly then has no graph titles, only the execution graph)."""
    common = ["--calib", data["calib"], "--array", "8x8"]
    on = cli("compile", DIGITS, *common, "--summary", cwd=tmp_path)
    off = cli("compile", DIGITS, *common, "--summary", "--no-resident-weights", cwd=tmp_path)
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    init = [line for line in on.stdout.splitlines() if line.startswith("initialization graph:")]
    assert len(init) == 1 and "weights of 3 layer(s)" in init[0]
    assert "initialization graph" not in off.stdout
    dis = cli("compile", DIGITS, *common, cwd=tmp_path).stdout.splitlines()
    assert dis[0] == "initialization graph:" and "execution graph:" in dis
    dis_off = cli("compile", DIGITS, *common, "--no-resident-weights", cwd=tmp_path).stdout
    assert "graph:" not in dis_off


# --- the malformed-input corpus (tests/malformed.py, issue 14) ----------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from malformed import build
    return build(tmp_path_factory.mktemp("corpus"))


def run_main(argv, capsys) -> tuple[int, list[str]]:
    """``celosia ARGV`` in this process: exit status and the non-empty stderr lines (an
    uncaught exception, i.e. a traceback, fails the test)."""
    from celosia.sw.cli import main
    rc = main(list(argv))
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _case_ids():
    from malformed import CASES
    return CASES


@pytest.mark.parametrize("case", _case_ids(), ids=lambda c: c.name)
def test_malformed_corpus(case, corpus, capsys, monkeypatch):
    """Every corpus case: an error is one line naming the culprit, exit 1; a warning is a
    ``warning:`` line naming it, and an error with ``--strict``; a valid model runs cleanly."""
    from celosia.sim import verilator

    def no_build(*args, **kwargs):
        raise AssertionError("a Verilator build started for a program that cannot run")

    monkeypatch.setattr(verilator, "build", no_build)
    monkeypatch.setattr(verilator, "run", no_build)
    monkeypatch.chdir(corpus)
    rc, lines = run_main(case.argv, capsys)
    if case.outcome == "error":  # (a run that fails writing its outputs has logged progress)
        assert rc == 1 and sum("error" in line for line in lines) == 1, lines
        assert lines[-1].startswith(f"celosia {case.argv[0]}: error: "), lines[-1]
        assert all(f in lines[-1] for f in case.fragments), (case.fragments, lines[-1])
        return
    warned = [line for line in lines if line.startswith("warning: ")]
    assert rc == 0
    if case.outcome == "ok":
        assert not warned, warned
        return
    assert any(all(f in line for f in case.fragments) for line in warned), (case.fragments, warned)
    if case.strict:
        rc, lines = run_main([*case.argv, "--strict"], capsys)
        assert rc == 1 and len(lines) == 1, lines
        assert all(f in lines[0] for f in case.fragments), (case.fragments, lines[0])


def test_out_is_written_exactly_where_given(corpus, tmp_path, capsys, monkeypatch):
    """``--out o`` writes ``o`` (np.save would append ``.npy``), a .npy file all the same."""
    monkeypatch.chdir(tmp_path)
    rc, _ = run_main(["run", str(corpus / "conv_relu.onnx"), "--input", str(corpus / "img.npy"),
                      "--calib", str(corpus / "calib.npy"), "--out", "o", "--report", "r"], capsys)
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "r"]
    assert np.load(tmp_path / "o").shape == (4, 4, 8, 8)
    assert json.loads((tmp_path / "r").read_text())["samples"] == 4


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_out_dev_full_subprocess(corpus):
    """The whole program, as a user runs it: a write error is one line naming the file."""
    def stamp(path=Path("/dev/full.npy")):  # (an older, buggy version may have left one)
        return path.stat().st_mtime_ns if path.exists() else None

    before = stamp()
    proc = cli("run", "conv_relu.onnx", "--input", "img.npy", "--calib", "calib.npy", "--out", "/dev/full",
               cwd=corpus)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = stderr_lines(proc)[-1]
    assert last.startswith("celosia run: error: /dev/full: ") and "No space left on device" in last
    assert stamp() == before  # no /dev/full.npy written instead
