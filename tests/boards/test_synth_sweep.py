"""``celosia synth``: the resource sweep over array shapes and dataflows (its table, plot,
resume and errors), and ``celosia sweep --resources`` joining its counts; (slow target) a
real synthesis sweep through Yosys."""

import csv
import json

import pytest

from celosia.boards.build import BOARDS
from celosia.boards.synth_sweep import (FIELDS, plot, point_dir, resources_by_point, synth_sweep,
                                        write_table)
from celosia.errors import InputError
from celosia.rtl.config import AccelConfig
from celosia.sw import cli
from celosia.sw.sweep import run_sweep
from celosia.sw.sweep_grid import Grid, expand, merge

ULX3S = BOARDS["ulx3s-85f"]


def board_config(rows, cols, dataflow, **fields):
    return AccelConfig(rows=rows, cols=cols, dataflow=dataflow, **{**ULX3S.defaults, **fields})


def stored_point(out, config, luts, fits=True, fmax=None):
    """A point as an earlier ``celosia synth`` left it in ``out`` (its ``point.json``)."""
    path = point_dir(out, config)
    path.mkdir(parents=True)
    data = {"board": ULX3S.name, "device": ULX3S.device, "config": config.to_dict(),
            "luts": luts, "ffs": luts // 2, "dsps": 3, "brams": 7, "fmax_mhz": fmax,
            "target_mhz": 25.0, "synth_seconds": 40.0, "pnr_seconds": None, "fits": fits,
            "error": None if fits else "does not fit"}
    (path / "point.json").write_text(json.dumps(data))
    return data


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stored_points_are_resumed_not_rebuilt(tmp_path):
    configs = [board_config(1, 1, "ws"), board_config(2, 2, "rs")]
    stored_point(tmp_path, configs[0], 1000)
    stored_point(tmp_path, configs[1], 90_000, fits=False)
    lines = []
    rows = synth_sweep("ulx3s-85f", configs, tmp_path, log=lines.append)
    assert lines == [f"[1/2] 1x1 ws: stored in {point_dir(tmp_path, configs[0])}",
                     f"[2/2] 2x2 rs: stored in {point_dir(tmp_path, configs[1])}"]
    assert [(r["dataflow"], r["rows"], r["cols"], r["pes"], r["luts"], r["fits"]) for r in rows] == \
        [("ws", 1, 1, 1, 1000, True), ("rs", 2, 2, 4, 90_000, False)]
    assert rows[1]["error"] == "does not fit"


def test_a_changed_config_or_a_missing_fmax_is_not_resumed(tmp_path):
    from celosia.boards.synth_sweep import _stored
    config = board_config(1, 1, "ws")
    stored_point(tmp_path, config, 1000)
    path = point_dir(tmp_path, config)
    assert _stored(path, config, pnr=False)["luts"] == 1000
    assert _stored(path, board_config(1, 1, "ws", weight_rows=64), pnr=False) is None
    assert _stored(path, config, pnr=True) is None      # synthesized only: no Fmax yet


def test_table_round_trip_and_plot(tmp_path):
    configs = [board_config(r, r, d) for r in (1, 2) for d in ("ws", "os")]
    for i, c in enumerate(configs):
        stored_point(tmp_path, c, 1000 * (i + 1), fmax=30.0 + i)
    rows = synth_sweep("ulx3s-85f", configs, tmp_path, log=lambda _: None)
    write_table(tmp_path / "synth.csv", rows)
    table = read_csv(tmp_path / "synth.csv")
    assert list(table[0]) == list(FIELDS) and len(table) == 4
    found = resources_by_point(tmp_path / "synth.csv")
    assert found[(2, 2, "os")] == {"luts": 4000, "ffs": 2000, "dsps": 3, "brams": 7, "fmax_mhz": 33.0,
                                   "fits": True}
    assert plot(tmp_path, rows, ULX3S.capacity) == ["synth.png", "synth.svg"]
    assert (tmp_path / "synth.png").stat().st_size > 0 and (tmp_path / "synth.svg").exists()


def test_a_bad_resource_table_names_the_file_and_line(tmp_path):
    with pytest.raises(InputError, match="nope.csv: cannot read"):
        resources_by_point(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("rows,cols,dataflow,luts\n2,2,ws,100\nx,2,ws,5\n")
    with pytest.raises(InputError, match=r"bad.csv, line 3: not a row of celosia synth's synth.csv"):
        resources_by_point(bad)


def test_sweep_joins_the_resources_and_plots_luts(tmp_path):
    topo = tmp_path / "layers.csv"
    topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                    "Num Filter, Strides,\nConv1, 8, 8, 3, 3, 3, 4, 1,\n")
    table = tmp_path / "synth.csv"
    table.write_text("rows,cols,dataflow,luts,ffs,dsps,brams,fmax_mhz\n4,4,ws,12000,6000,20,30,41.5\n")
    points = expand(merge(Grid(models=[str(topo)], dataflows=["ws", "os"], arrays=[(4, 4)],
                               sets={"dram_bytes": [1 << 20]}, backend="golden")))
    res = run_sweep(points, tmp_path / "out", jobs=1, resources=resources_by_point(table))
    summary = read_csv(tmp_path / "out" / "summary.csv")
    by_flow = {s["dataflow"]: s for s in summary}
    assert (by_flow["ws"]["luts"], by_flow["ws"]["dsps"], by_flow["ws"]["fmax_mhz"]) == ("12000", "20", "41.5")
    assert by_flow["os"]["luts"] == ""          # not in the table
    assert any("no FPGA resources for 4x4 os" in n for n in res.notes)


def test_cli_errors_are_one_line(tmp_path, cli_error):
    assert cli_error(["synth", "--board", "zed", "-o", str(tmp_path)]) == \
        "celosia synth: error: unknown board 'zed'; supported: ulx3s-85f, icebreaker"
    line = cli_error(["synth", "--board", "ulx3s-85f", "--array", "1x1,99x1", "-o", str(tmp_path)])
    assert "rows" in line and "1..64" in line and "99" in line
    line = cli_error(["synth", "--board", "ulx3s-85f", "--dataflow", "ws,xy", "-o", str(tmp_path)])
    assert "unknown dataflow 'xy'" in line
    afile = tmp_path / "f"
    afile.write_text("")
    assert "not a folder" in cli_error(["synth", "--board", "ulx3s-85f", "-o", str(afile)])


@pytest.mark.slow
def test_synthesis_sweep_through_yosys(capsys, tmp_path):
    """A real ``celosia synth`` of 1x1 ws and os on the ULX3S-85F (Yosys, minutes), then the
    same command again: resumed from the stored points."""
    argv = ["synth", "--board", "ulx3s-85f", "--array", "1x1", "--dataflow", "ws,os", "-o", str(tmp_path)]
    assert cli.main(argv) == 0
    table = read_csv(tmp_path / "synth.csv")
    assert [(r["dataflow"], r["rows"], r["fits"]) for r in table] == [("ws", "1", "True"), ("os", "1", "True")]
    for r in table:   # the counts are Yosys's, as the point's build report has them
        report = json.loads((tmp_path / "points" / f"1x1-{r['dataflow']}" / "report.json").read_text())
        assert [int(r[k]) for k in ("luts", "ffs", "dsps", "brams")] == \
            [report["synth"][k] for k in ("luts", "ffs", "dsps", "brams")]
        assert 0 < int(r["luts"]) < ULX3S.capacity["luts"] and int(r["dsps"]) > 0
    assert (tmp_path / "synth.png").exists()
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().err.count("stored in") == 2
