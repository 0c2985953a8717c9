"""benchmarks/layers.py: ``--quick`` in the normal suite, the full set of full-size layers in
the slow one (``pytest -m slow -k layers_full``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from celosia.rtl.config import DATAFLOWS

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "layers.py"


def run_table(tmp_path, *args, timeout) -> list[dict]:
    """Run the script; its markdown table (``--out``) as one dict per row."""
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    lines = out.read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= set("|-:")
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert rows and all(len(r) == len(header) for r in rows)
    # what every row must satisfy, whatever the layer: bit-exact, utilization as defined,
    # the roofline at least the compute bound ceil(MACs / PEs) (the cycles may fall below
    # it: MACs count a padded conv's padding rows, which the array skips); on feie, which
    # skips zero inputs, the compute bound counts only the MACs on non-zero inputs, so at
    # most that
    for r in rows:
        rows_, cols = map(int, r["array"].split("x"))
        macs, cycles = int(r["MACs"]), int(r["cycles"])
        assert r["check"] == "ok"
        assert r["util"] == f"{macs / (rows_ * cols * cycles):.1%}"
        dense = -(-macs // (rows_ * cols))
        if r["dataflow"] == "feie":
            assert 0 < int(r["roofline"]) and (r["bound"] != "compute" or int(r["roofline"]) <= dense)
        else:
            assert int(r["roofline"]) >= dense
        assert r["/ws"] == f"{cycles / int(r['SCALE-Sim ws']):.2f}"
    return rows


def test_quick(tmp_path):
    rows = run_table(tmp_path, "--quick", timeout=1800)
    # --backend perf --execute: the cycle model gives the RTL's cycles, and with every
    # instruction executed the same checked outputs
    perf = run_table(tmp_path, "--quick", "--backend", "perf", "--execute", timeout=600)
    key = lambda r: (r["layer"], r["array"], r["dataflow"])   # noqa: E731
    assert {key(r): r["cycles"] for r in perf} == {key(r): r["cycles"] for r in rows}
    assert sorted((r["layer"], r["array"], r["dataflow"]) for r in rows) == sorted(
        (layer, "8x8", df) for layer in ("lenet5.c3", "lenet5.f6") for df in DATAFLOWS)
    for r in rows:
        if r["layer"] == "lenet5.c3":
            # 14x14x6 -> 10x10x16, 5x5: M = 100, K = 5*5*6 = 150, N = 16; 240,000 MACs.
            # ws: ceil(150/8) * ceil(16/8) = 19 * 2 = 38 folds of 2*8 + 8 + 100 - 2 = 122: 4636
            # os: ceil(100/8) * 2 = 13 * 2 = 26 folds of 8 + 8 + 150 - 2 = 164: 4264
            assert (int(r["MACs"]), int(r["SCALE-Sim ws"]), int(r["SCALE-Sim os"])) == \
                (240_000, 4636, 4264)
        else:
            # fc 120 -> 84, batch 1: M = 1, K = 120, N = 84; 10,080 MACs.
            # ws: ceil(120/8) * ceil(84/8) = 15 * 11 = 165 folds of 16 + 8 + 1 - 2 = 23: 3795
            # os: 1 * 11 = 11 folds of 8 + 8 + 120 - 2 = 134: 1474
            assert (int(r["MACs"]), int(r["SCALE-Sim ws"]), int(r["SCALE-Sim os"])) == \
                (10_080, 3795, 1474)


@pytest.mark.parametrize("setting,message", [
    ("ppu_lanes=9", "--set: ppu_lanes must be at most the bus word (8 bytes at bus_bits = 64) "
                    "and at most cols (16), not 9"),
    ("bogus=1", "--set: unknown config field 'bogus'; fields: rows, cols,"),
])
def test_set_rejects_bad_fields(setting, message):
    """``--set FIELD=VALUE`` is checked as ``celosia --set`` checks it, before any build:
    one line naming the field, exit status 1."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--arrays", "16x16", "--dataflows", "ws",
                           "--layers", "resnet18.conv2_x", "--set", setting],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


FULL = ("resnet18.conv2_x", "resnet18.conv3_x", "resnet18.conv4_x", "resnet18.conv5_x",
        "resnet18.conv3_x.ds", "vgg16.conv3_1", "alexnet.conv3", "mobilenet_v1.conv2.dw",
        "mobilenet_v1.conv2.pw", "alexnet.fc6.b1", "alexnet.fc6.b16")


@pytest.mark.slow
def test_layers_full(tmp_path):
    """Every full-size layer on 8x8 and 16x16, every dataflow, bit-exact (hours on 2 cores)."""
    rows = run_table(tmp_path, timeout=24 * 3600)
    assert sorted((r["layer"], r["array"], r["dataflow"]) for r in rows) == sorted(
        (layer, a, df) for layer in FULL for a in ("8x8", "16x16") for df in DATAFLOWS)
    by = {(r["layer"], r["array"], r["dataflow"]): r for r in rows}
    # ResNet-18 conv2_x: 56x56x64 -> 56x56x64, 3x3: 3136 * 576 * 64 = 115,605,504 MACs;
    # SCALE-Sim ws on 8x8: 576 folds of 3158 cycles = 1,819,008 (tests/sw/test_scalesim.py)
    r = by["resnet18.conv2_x", "8x8", "ws"]
    assert (int(r["MACs"]), int(r["SCALE-Sim ws"])) == (115_605_504, 1_819_008)
    # AlexNet fc6 at batch 16: 16 * 9216 * 4096 = 603,979,776 MACs
    assert int(by["alexnet.fc6.b16", "16x16", "rs"]["MACs"]) == 603_979_776
