"""benchmarks/scalesim_compare.py: its Celosia side on a tiny topology in the normal suite; both
tools (SCALE-Sim 3.0.0 from the optional ``scalesim`` extra) in the slow one."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from celosia.sw.sweep_topology import read_scalesim_cfg, read_topology

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scalesim_compare.py"
_spec = importlib.util.spec_from_file_location("scalesim_compare", SCRIPT)
sc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sc)

#: Two small layers: (name, H, W, Fh, Fw, C, N, stride).
TINY = (("T1", 8, 8, 3, 3, 4, 8, 1), ("T2", 7, 7, 1, 1, 8, 6, 2))
#: Worked by hand on a 4x4 ws array (sw/scalesim.py's formula, minus the one SCALE-Sim's
#: report drops): T1 is 6x6 outputs, M = 36, K = 3*3*4 = 36, N = 8: ceil(36/4) * ceil(8/4) = 18
#: folds of 2*4 + 4 + 36 - 2 = 46 cycles, 828 - 1; T2 is 4x4 outputs (stride 2), M = 16,
#: K = 8, N = 6: 2 * 2 = 4 folds of 8 + 4 + 16 - 2 = 26, 104 - 1.
TINY_SCALESIM = {"T1": 827, "T2": 103}
TINY_MACS = {"T1": 36 * 36 * 8, "T2": 16 * 8 * 6}


def _md_rows(text: str) -> dict[str, dict]:
    """The first markdown table in ``text``, one dict per row keyed by its first column."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {r["layer"]: r for r in rows if "layer" in r and r["layer"]}


def _num(cell: str) -> int:
    return int(cell.replace(",", ""))


def test_inputs_read_by_both_sides(tmp_path):
    paths = sc.write_inputs(tmp_path, TINY, 4, 4)
    layers = read_topology(paths["topology"])   # Celosia's reader of SCALE-Sim topologies
    assert [(x.name, x.ifmap_h, x.ifmap_w, x.filter_h, x.filter_w, x.channels, x.filters, x.stride)
            for x in layers] == list(TINY)
    # the .cfg gives Celosia its default buffers and bus on the 4x4 array
    assert read_scalesim_cfg(paths["cfg"]) == {
        "rows": 4, "cols": 4, "dataflow": "ws", "ifmap_rows": 1024, "weight_rows": 1024,
        "psum_rows": 512, "dram_bytes_per_cycle": 8, "bus_bits": 64}
    # SCALE-Sim's topology reader drops the cell after the last comma: every row ends in one
    assert all(line.endswith(",") for line in paths["topology"].read_text().splitlines())
    assert len(paths["layout"].read_text().splitlines()) == 1 + len(TINY)


def test_celosia_side_table(tmp_path):
    text, raw = sc.compare(TINY, "4x4", with_scalesim=False, work=tmp_path)
    # the sweep's own files, read here independently of the script's reader
    with open(tmp_path / "celosia" / "results.csv", newline="") as f:
        results = {r["layer"]: r for r in csv.DictReader(f)}
    with open(tmp_path / "celosia" / "summary.csv", newline="") as f:
        (summary,) = list(csv.DictReader(f))
    assert set(results) == {"T1", "T2"} and not summary["error"]
    assert {k: int(r["macs"]) for k, r in results.items()} == TINY_MACS
    rows = _md_rows(text)
    for name in ("T1", "T2"):
        r = rows[name]
        assert _num(r["Celosia cycles"]) == int(results[name]["cycles"])
        assert _num(r["MACs"]) == TINY_MACS[name]
        assert _num(r["SCALE-Sim formula"]) == TINY_SCALESIM[name]
        assert r["SCALE-Sim cycles"] == r["Celosia / SCALE-Sim"] == "-"
    assert _num(rows["total"]["Celosia cycles"]) == sum(int(r["cycles"]) for r in results.values())
    assert _num(rows["total"]["MACs"]) == sum(TINY_MACS.values())
    assert raw["celosia"]["point_seconds"] == float(summary["wall_seconds"])
    assert raw["celosia"]["peak_mb"] > 0 and raw["scalesim"] is None
    assert f"| Celosia perf | {float(summary['wall_seconds']):.2f} |" in text
    assert "target" not in text   # no ratios without SCALE-Sim


def test_ratios_and_targets():
    celosia = {"cycles": {"T1": 1000, "T2": 300}, "point_seconds": 0.5, "process_seconds": 2.0,
               "peak_mb": 100.0}
    scalesim = {"cycles": {"T1": 800, "T2": 100}, "prefetch_cycles": {"T1": 900, "T2": 150},
                "stall_cycles": {"T1": 0, "T2": 0}, "point_seconds": 1000.0,
                "process_seconds": 1010.0, "peak_mb": 4000.0}
    rows = _md_rows(sc.table(TINY, celosia, scalesim, 4, 4))
    assert rows["T1"]["Celosia / SCALE-Sim"] == "1.250" and rows["T2"]["Celosia / SCALE-Sim"] == "3.000"
    assert _num(rows["total"]["SCALE-Sim cycles"]) == 900
    assert _num(rows["total"]["SCALE-Sim incl. prefetch"]) == 1050
    assert rows["total"]["Celosia / SCALE-Sim"] == f"{1300 / 900:.3f}"
    # a layer the sweep gives no cycles for: "-" in its row and in the total
    rows = _md_rows(sc.table(TINY, {**celosia, "cycles": {"T1": None, "T2": 300}}, scalesim, 4, 4))
    assert rows["T1"]["Celosia cycles"] == rows["T1"]["Celosia / SCALE-Sim"] == "-"
    assert rows["total"]["Celosia cycles"] == rows["total"]["Celosia / SCALE-Sim"] == "-"
    assert rows["T2"]["Celosia / SCALE-Sim"] == "3.000"
    text = sc.summary(celosia, scalesim)
    assert "2,000.00x (target >= 1000x: met)" in text        # 1000 s / 0.5 s
    assert "2.5% (target <= 5%: met)" in text                # 100 MB / 4000 MB
    text = sc.summary({**celosia, "point_seconds": 2.0, "peak_mb": 400.0}, scalesim)
    assert "500.00x (target >= 1000x: not met)" in text and "10.0% (target <= 5%: not met)" in text
    # the formula check: SCALE-Sim's compute cycles are Total - Stall
    assert sc.check_formula(TINY, {**scalesim, "cycles": {"T1": 830, "T2": 103},
                                   "stall_cycles": {"T1": 3, "T2": 0}}, 4, 4) == []
    assert sc.check_formula(TINY, scalesim, 4, 4) == [
        "T1: SCALE-Sim computed 800 cycles, sw/scalesim.py's formula 827",
        "T2: SCALE-Sim computed 100 cycles, sw/scalesim.py's formula 103"]


def test_without_scalesim_one_line_and_exit_1():
    # run as if SCALE-Sim were not installed (a None in sys.modules makes its import fail)
    run = (f"import runpy, sys; sys.modules['scalesim'] = None; sys.argv = [{str(SCRIPT)!r}]; "
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [sc.EXTRA_HINT]
    assert 'pip install -e ".[scalesim]"' in sc.EXTRA_HINT


@pytest.mark.slow
def test_both_tools_on_tiny_topology(tmp_path):
    if not sc.scalesim_installed():
        pytest.skip('SCALE-Sim 3.0.0 is an optional extra: pip install -e ".[scalesim]"')
    text, raw = sc.compare(TINY, "4x4", work=tmp_path)
    ss = raw["scalesim"]
    # SCALE-Sim's report agrees with the hand-worked formula values (no stalls in CALC mode)
    assert ss["cycles"] == TINY_SCALESIM and ss["stall_cycles"] == {"T1": 0, "T2": 0}
    assert raw["formula_mismatches"] == []
    assert "equal sw/scalesim.py's formula on every layer" in text
    assert all(ss["prefetch_cycles"][k] >= ss["cycles"][k] for k in ss["cycles"])
    rows = _md_rows(text)
    for name in ("T1", "T2"):
        assert _num(rows[name]["SCALE-Sim cycles"]) == TINY_SCALESIM[name]
        assert rows[name]["Celosia / SCALE-Sim"] == (
            f"{raw['celosia']['cycles'][name] / TINY_SCALESIM[name]:.3f}")
    assert ss["peak_mb"] > 0 and ss["point_seconds"] > 0
    assert "SCALE-Sim wall / Celosia wall per design point" in text


@pytest.mark.slow
def test_scalesim_user_bandwidth_stalls(tmp_path):
    """With ``InterfaceBandwidth: USER`` SCALE-Sim stalls on 8 words per cycle: its compute
    cycles without the stalls are still the formula's."""
    if not sc.scalesim_installed():
        pytest.skip('SCALE-Sim 3.0.0 is an optional extra: pip install -e ".[scalesim]"')
    _, raw = sc.compare(TINY, "4x4", bandwidth_mode="user", work=tmp_path)
    assert raw["formula_mismatches"] == []


@pytest.mark.slow
def test_scalesim_os_formula(tmp_path):
    """sw/scalesim.py's os formula (less the one cycle SCALE-Sim's report drops) against SCALE-Sim
    itself: T1 ceil(36/4) * ceil(8/4) = 18 folds of 4 + 4 + 36 - 2 = 42 cycles, 756 - 1; T2
    ceil(16/4) * ceil(6/4) = 8 folds of 4 + 4 + 8 - 2 = 14, 112 - 1."""
    if not sc.scalesim_installed():
        pytest.skip('SCALE-Sim 3.0.0 is an optional extra: pip install -e ".[scalesim]"')
    paths = sc.write_inputs(tmp_path, TINY, 4, 4, dataflow="os")
    ss = sc.run_scalesim(paths, tmp_path)
    assert ss["cycles"] == {"T1": 755, "T2": 111} and ss["stall_cycles"] == {"T1": 0, "T2": 0}
    assert sc.check_formula(TINY, ss, 4, 4, "os") == []
