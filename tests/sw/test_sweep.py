"""``celosia sweep``: the grid (command line, TOML, SCALE-Sim .cfg), SCALE-Sim topology CSVs,
a golden sweep end to end with resume, one Verilator point against a direct run, and the
process-pool and Dask runs giving the local run's rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from celosia.errors import ConfigError, ModelError
from celosia.rtl.config import AccelConfig
from celosia.sw.cli import main
from celosia.sw.sweep import run_sweep
from celosia.sw.sweep_eval import ROW_FIELDS, energy, evaluate_point
from celosia.sw.sweep_grid import Grid, expand, grid_from_file, grid_from_toml, merge, parse_arrays, \
    parse_set
from celosia.sw.sweep_plots import pareto_front
from celosia.sw.sweep_topology import TopologyLayer, read_scalesim_cfg, read_topology, topology_graphs

# Two small layers in SCALE-Sim's convolution format (trailing commas, as its files have).
# Conv1: 8x8x3 by 4 filters of 3x3, stride 1 -> 6x6x4: 6*6*4 * 3*3*3 = 3888 MACs.
# Conv2: 7x7x4 by 6 filters of 3x3, stride 2 -> 3x3x6: 3*3*6 * 3*3*4 = 1944 MACs.
TOPOLOGY = """Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
Conv1, 8, 8, 3, 3, 3, 4, 1,
Conv2, 7, 7, 3, 3, 4, 6, 2,
"""
MACS = {"Conv1": 3888, "Conv2": 1944}


@pytest.fixture
def topo(tmp_path):
    path = tmp_path / "layers.csv"
    path.write_text(TOPOLOGY)
    return path


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("celosia sweep: error:"), err
    return err[0]


# -- grid ------------------------------------------------------------------------------

def test_cli_grid_values():
    assert parse_set("bus_bits=64,128") == ("bus_bits", [64, 128])
    assert parse_set("dram-latency=0x10") == ("dram_latency", [16])
    assert parse_arrays("8x8, 4X16") == [(8, 8), (4, 16)]
    with pytest.raises(ConfigError, match="'nosuch'"):
        parse_set("nosuch=1")
    with pytest.raises(ConfigError, match="bus_bits: expected integers, not '6x'"):
        parse_set("bus_bits=64,6x")
    with pytest.raises(ConfigError, match="array:.*'8y8'"):
        parse_arrays("8x8,8y8")


@pytest.mark.parametrize("argv, names", [
    (["--set", "nosuch=1"], "'nosuch'"),
    (["--set", "dram_latency=fast"], "dram_latency"),
    (["--array", "4by4"], "array"),
    (["--dataflow", "ws,xs"], "'xs'"),
])
def test_cli_bad_grid_is_one_line_naming_the_field(capsys, tmp_path, argv, names):
    line = one_line_error(capsys, ["sweep", "--model", "zoo:lenet5", "--out", str(tmp_path / "o"), *argv])
    assert names in line
    assert not (tmp_path / "o").exists()  # nothing ran


def test_toml_grid(tmp_path):
    (tmp_path / "grid.toml").write_text(
        'models = ["zoo:lenet5", "layers.csv"]\ndataflows = "ws,os"\narrays = ["4x4", "8x8"]\n'
        'backend = "golden"\n[set]\nbus_bits = [64, 128]\ndram_latency = 4\n')
    grid = grid_from_toml(tmp_path / "grid.toml")
    assert grid.models == ["zoo:lenet5", str(tmp_path / "layers.csv")]  # relative to the file
    assert grid.dataflows == ["ws", "os"] and grid.arrays == [(4, 4), (8, 8)]
    assert grid.sets == {"bus_bits": [64, 128], "dram_latency": [4]} and grid.backend == "golden"
    # the command line replaces an axis, --set one field
    merged = merge(Grid(arrays=[(2, 2)], sets={"bus_bits": [256]}), grid)
    assert merged.arrays == [(2, 2)] and merged.dataflows == ["ws", "os"]
    assert merged.sets == {"bus_bits": [256], "dram_latency": [4]}
    points = expand(merged)
    assert len(points) == 2 * 2 * 1 * 1 * 1
    assert [p.fields["dataflow"] for p in points[:2]] == ["ws", "os"]
    assert all(p.fields["bus_bits"] == 256 and p.fields["dram_latency"] == 4 for p in points)


@pytest.mark.parametrize("text, names", [
    ('models = ["zoo:lenet5"]\n[set]\ndram_latency = "x"\n', "dram_latency"),
    ('models = ["zoo:lenet5"]\narrays = ["4x"]\n', "array"),
    ('model = "zoo:lenet5"\ncolour = "red"\n', "'colour'"),
    ('models = [\n', "not a valid TOML"),
])
def test_toml_grid_errors_name_the_file_and_field(tmp_path, text, names):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=names) as e:
        grid_from_toml(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_impossible_config_is_a_failed_point_not_a_stop():
    points = expand(merge(Grid(models=["zoo:lenet5"], arrays=[(4, 4), (100, 4)])))
    assert [p.error for p in points][0] is None
    assert "rows" in points[1].error and "100" in points[1].error


def test_worker_batches_share_a_program():
    """The pool and Dask runs send the points that compile to the same program (here the
    three bus widths of one model, array and dataflow) to one worker, so it compiles once;
    rs reads ``bus_bits`` when it picks a mapping, so its bus widths stay apart, and an
    impossible config is a batch of its own."""
    from celosia.sw.sweep import _batches
    grid = Grid(models=["zoo:lenet5", "zoo:alexnet"], dataflows=["ws", "rs"], arrays=[(4, 4), (8, 8), (100, 4)],
                sets={"bus_bits": [64, 128, 256]}, backend="perf")
    points = expand(merge(grid))
    batches = _batches(points)
    assert sorted(p.key for b in batches for p in b) == sorted(p.key for p in points)
    sizes = {}
    for b in batches:
        f = b[0].fields
        assert len({(p.model, p.fields["dataflow"], p.fields["rows"], p.fields["cols"]) for p in b}) == 1
        sizes.setdefault((f["dataflow"], b[0].error is None), set()).add(len(b))
    # ws: 2 models x 2 possible arrays, each batch all three bus widths; rs: one point each
    assert sizes == {("ws", True): {3}, ("rs", True): {1}, ("ws", False): {1}, ("rs", False): {1}}
    assert len(batches) == 2 * 2 + 2 * 2 * 3 + 2 * 2 * 3


def test_no_model(capsys, tmp_path):
    assert "--model" in one_line_error(capsys, ["sweep", "--out", str(tmp_path)])


# -- SCALE-Sim files -----------------------------------------------------------------------

def test_topology_csv(topo):
    layers = read_topology(topo)
    assert layers == [TopologyLayer("Conv1", 8, 8, 3, 3, 3, 4, 1), TopologyLayer("Conv2", 7, 7, 3, 3, 4, 6, 2)]
    assert [layer.out_hw for layer in layers] == [(6, 6), (3, 3)]
    assert {layer.name: layer.macs for layer in layers} == MACS
    graphs = topology_graphs(topo)
    assert [g.name for g in graphs] == ["Conv1", "Conv2"]
    assert [g.total_macs(1) for g in graphs] == [3888, 1944]


def test_topology_gemm_format(tmp_path):
    # M x K by K x N: a 1x1 conv of a 1 x M ifmap of K channels into N filters, M*N*K MACs
    path = tmp_path / "gemm.csv"
    path.write_text("Layer, M, N, K,\nfc1, 5, 7, 9,\n")
    (layer,) = read_topology(path)
    assert layer == TopologyLayer("fc1", 1, 5, 1, 1, 9, 7, 1)
    assert layer.macs == 5 * 7 * 9


@pytest.mark.parametrize("line, names", [
    ("Conv3, 8, eight, 3, 3, 3, 4, 1,", "layers.csv:4: layer 'Conv3': IFMAP Width must be an integer"),
    ("Conv3, 8, 8, 3, 3, 3, 0, 1,", "Num Filter must be at least 1"),
    ("Conv3, 2, 8, 3, 3, 3, 4, 1,", "filter \\(3x3\\) is larger than the ifmap \\(2x8\\)"),
    ("Conv3, 8, 8, 3,", "expected 8 columns"),
    ("Conv1, 8, 8, 3, 3, 3, 4, 1,", "'Conv1' appears twice"),
])
def test_topology_errors_name_line_and_column(topo, line, names):
    topo.write_text(TOPOLOGY + line + "\n")
    with pytest.raises(ModelError, match=names):
        read_topology(topo)


def test_scalesim_cfg(tmp_path):
    path = tmp_path / "scale.cfg"
    path.write_text("[general]\nrun_name = test\n\n[architecture_presets]\nArrayHeight:    8\n"
                    "ArrayWidth:     16\nIfmapSramSzkB:    64\nFilterSramSzkB:   32\n"
                    "OfmapSramSzkB:    16\nIfmapOffset:    0\nDataflow : os\nBandwidth : 16\n"
                    "MemoryBanks: 1\n")
    # ifmap 64 kB / 8 B rows = 8192; weights 32 kB / 16 B = 2048; psum 16 kB / (16 * 4 B) = 256;
    # 16 B per cycle needs a 128-bit bus
    assert read_scalesim_cfg(path) == {"rows": 8, "cols": 16, "dataflow": "os", "ifmap_rows": 8192,
                                       "weight_rows": 2048, "psum_rows": 256,
                                       "dram_bytes_per_cycle": 16, "bus_bits": 128}
    grid = grid_from_file(path)
    assert grid.arrays == [(8, 16)] and grid.dataflows == ["os"] and grid.sets["bus_bits"] == [128]
    path.write_text(path.read_text().replace("Dataflow : os", "Dataflow : is"))
    with pytest.raises(ConfigError, match="'is' has no Celosia engine"):
        read_scalesim_cfg(path)


# -- sweeps ---------------------------------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def golden_points(topo, flows=("ws", "os")):
    return expand(merge(Grid(models=[str(topo)], dataflows=list(flows), arrays=[(4, 4)],
                             sets={"dram_bytes": [1 << 20]}, backend="golden")))


def test_golden_sweep_end_to_end_and_resume(topo, tmp_path):
    out = tmp_path / "out"
    points = golden_points(topo)
    res = run_sweep(points, out, jobs=1)
    assert sorted(res.evaluated) == sorted(p.key for p in points) and not res.failed
    rows = read_csv(out / "results.csv")
    cols = list(rows[0])
    assert cols[:6] == ["point", "model", "backend", "dataflow", "rows", "cols"]
    assert cols[6] == "config_dram_bytes"  # the swept DRAM size; dram_bytes is the traffic
    assert set(ROW_FIELDS) <= set(cols)
    assert [(r["dataflow"], r["layer"]) for r in rows] == [("ws", "Conv1"), ("ws", "Conv2"),
                                                            ("os", "Conv1"), ("os", "Conv2")]
    for r in rows:
        assert int(r["macs"]) == MACS[r["layer"]] and r["config_dram_bytes"] == str(1 << 20)
        assert r["cycles"] == "" and r["utilization"] == ""  # golden: no cycles
        dram = int(r["dram_bytes"])
        assert dram == int(r["dram_read_bytes"]) + int(r["dram_write_bytes"]) > 0
        assert float(r["energy"]) == 200 * dram + 6 * 2 * dram + 3 * MACS[r["layer"]]
    summary = read_csv(out / "summary.csv")
    assert len(summary) == 2 and all(float(s["wall_seconds"]) > 0 and s["error"] == "" for s in summary)
    assert int(summary[0]["macs"]) == 3888 + 1944 and summary[0]["cycles"] == ""
    assert (out / "results.parquet").exists()
    page = (out / "index.html").read_text()
    for name in ("dram_bytes", "energy", "pareto"):  # the plots that need no cycles
        assert (out / f"{name}.png").exists() and (out / f"{name}.svg").exists()
        assert f"{name}.png" in page
    assert not (out / "roofline.png").exists() and "have no cycles" in page
    stored = json.loads((out / "points" / f"{points[0].key}.json").read_text())
    assert stored["rows"] == [r for r in res.rows if r["point"] == points[0].key]

    again = run_sweep(points, out, jobs=1, plots=False)
    assert again.evaluated == [] and again.rows == res.rows  # resumed: nothing evaluated
    more = run_sweep(golden_points(topo, ("ws", "os", "rs")), out, jobs=1, plots=False)
    assert len(more.evaluated) == 1 and len(more.rows) == 6  # only the new point runs


def test_failed_points_are_reported_and_the_rest_runs(topo, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Layer name, IFMAP Height\nx, y\n")
    out = tmp_path / "out"
    rc = main(["sweep", "--model", str(topo), "--model", "zoo:nosuch", "--model", str(bad),
               "--array", "4x4,2x100", "--backend", "golden", "--set", "dram_bytes=1048576",
               "--jobs", "1", "--no-plots", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "point zoo:nosuch ws 4x4" in err and "no model 'nosuch'" in err
    assert f"point {bad} ws 4x4" in err and "bad.csv:2" in err
    assert "2x100" in err and "cols" in err
    summary = read_csv(out / "summary.csv")
    ok = [s for s in summary if not s["error"]]
    assert [(s["model"], s["rows"], s["cols"]) for s in ok] == [(str(topo), "4", "4")]
    assert len(read_csv(out / "results.csv")) == 2


def test_pareto_front_and_energy():
    # (area, latency): (1, 9) (2, 5) (3, 7) (4, 2) (5, 2): (3, 7) is beaten by (2, 5), (5, 2) ties (4, 2)
    assert pareto_front([(3, 7), (1, 9), (5, 2), (2, 5), (4, 2)]) == [(1, 9), (2, 5), (4, 2)]
    # 10 DRAM bytes: 10 * 200 + 20 buffer accesses * 6; 100 MACs: 100 * (2 + 1)
    assert energy(100, 10) == 2000 + 120 + 300


@pytest.mark.filterwarnings("ignore::celosia.sw.quant.CalibrationWarning")  # one sample, as the sweep
def test_verilator_point_equals_a_direct_run(tmp_path):
    """One tiny layer on the 4x4 ws config other Verilator tests build (cached): the sweep's
    cycles are those of `run` on the same model, sample and config."""
    from celosia.sw.driver import run
    from celosia.sw.quant import quantize_graph
    path = tmp_path / "one.csv"
    path.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                    "Num Filter, Strides\nc, 6, 6, 3, 3, 2, 4, 1\n")
    (point,) = expand(merge(Grid(models=[str(path)], arrays=[(4, 4)], backend="verilator")))
    (row,) = evaluate_point(point)
    (graph,) = topology_graphs(path)
    x = np.random.default_rng(0).random((1, 6, 6, 2), dtype=np.float32)  # as --random 1
    report = run(quantize_graph(graph, x), x, AccelConfig(rows=4, cols=4), backend="verilator").report
    assert row["cycles"] == report["cycles"] == report["layers"][0]["cycles"] > 0
    assert row["macs"] == 4 * 4 * 4 * 3 * 3 * 2
    assert row["utilization"] == pytest.approx(row["macs"] / (row["cycles"] * 16), rel=1e-5)
    assert row["compute_cycles"] == report["layers"][0]["compute_cycles"]


def test_process_pool_and_dask_give_the_local_rows(topo, tmp_path):
    from dask.distributed import LocalCluster
    points = golden_points(topo)
    local = run_sweep(points, tmp_path / "local", jobs=1, plots=False)
    pool = run_sweep(points, tmp_path / "pool", jobs=2, plots=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        dask = run_sweep(points, tmp_path / "dask", dask=cluster.scheduler_address, plots=False)
    assert len(local.rows) == 4
    assert pool.rows == local.rows and dask.rows == local.rows
    assert sorted(dask.evaluated) == sorted(p.key for p in points)


def test_onnx_tflite_and_scalesim_cfg_from_the_command_line(tmp_path, topo):
    """An ONNX and an int8 .tflite model next to a topology CSV, on the array and buffers of a
    SCALE-Sim .cfg, from the command line (golden: MACs per layer as the models count them)."""
    from pathlib import Path
    import celosia.sw.data as data
    from celosia.sw.importer import load_tflite
    from celosia.sw.zoo import resolve
    onnx, tflite = (Path(data.__file__).parent / n for n in ("digits_mlp.onnx", "digits_cnn_int8.tflite"))
    cfg = tmp_path / "scale.cfg"
    cfg.write_text("[architecture_presets]\nArrayHeight: 4\nArrayWidth: 4\nIfmapSramSzkB: 4\n"
                   "Dataflow: os\nBandwidth: 8\n")
    out = tmp_path / "out"
    assert main(["sweep", "--model", f"{onnx},{tflite}", "--model", str(topo), "--config", str(cfg),
                 "--backend", "golden", "--jobs", "1", "--no-plots", "--out", str(out)]) == 0
    summary = read_csv(out / "summary.csv")
    assert [(s["model"], s["dataflow"], s["rows"], s["cols"]) for s in summary] == \
        [(str(m), "os", "4", "4") for m in (onnx, tflite, topo)]
    assert [s["ifmap_rows"] for s in summary] == ["1024"] * 3  # 4 kB / 4-byte rows
    rows = read_csv(out / "results.csv")
    tfl = load_tflite(tflite)
    assert [(r["layer"], int(r["macs"])) for r in rows if r["model"] == str(tflite)] == \
        [(layer.name, layer.macs) for layer in tfl.layers]
    assert sum(int(r["macs"]) for r in rows if r["model"] == str(onnx)) == resolve(onnx).total_macs(1)
