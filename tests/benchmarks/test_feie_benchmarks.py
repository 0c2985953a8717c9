"""benchmarks/feie_density.py and benchmarks/feie_phase_sets.py on their small layers
(``--quick``, perf back end: seconds): they run, check every output against the golden
model, and print figures consistent with their own definitions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script, *args) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every output equals the golden model's" in proc.stdout or script == "feie_density.py"
    return proc.stdout


def test_feie_density_quick():
    """feie's cycles fall with the zeros (each sparsity's layer calibrated on inputs of that
    sparsity), and the speed-up and ideal columns are what their names say."""
    out = run("feie_density.py", "--quick", "--backend", "perf", "--no-digits", "--sparsities", "0,0.5")
    rows = [line.split() for line in out.splitlines() if line.startswith("small.") and "%" in line.split()[1]]
    assert len(rows) == 4
    by_layer = {}
    for *_, taps in rows:         # the GEMMs' taps per kernel-row cut of a 3x3 kernel
        assert taps.split("+") and set(taps.split("+")) <= {"1", "2", "3"}, taps
    for name, zeros, cycles, _util, speedup, ideal, of_ideal, *_ in rows:
        by_layer.setdefault(name, []).append((float(zeros.rstrip("%")) / 100, int(cycles), float(speedup),
                                              float(ideal), float(of_ideal)))
    for name, runs in by_layer.items():
        dense = runs[0][1]
        for z, cycles, speedup, ideal, of_ideal in runs:
            assert abs(speedup - dense / cycles) < 0.006 and abs(ideal - 1 / (1 - z)) < 0.006
            assert abs(of_ideal - speedup / ideal) < 0.011
        assert runs[1][1] < runs[0][1], name          # half the inputs zero: fewer cycles


def test_feie_phase_sets_quick():
    """Every fixed mapping of a stride-2 kernel row and the compiler's choice: the choice is
    one of them and takes exactly its cycles (the same program), ``/best`` is its cycles over
    the fastest fixed mapping's, and 70% zeros take fewer cycles than none."""
    out = run("feie_phase_sets.py", "--quick", "--array", "4x4", "--sparsities", "0,0.7")
    lines = out.splitlines()
    head = lines[0]
    assert head.split()[:8] == ["array", "layer", "zeros", "run", "3", "2", "+", "1"]
    rows = []
    for line in lines[1:]:
        if not line.startswith("4x4"):
            continue
        f = line.split()
        fixed = dict(zip(["run 3", "2 + 1", "1 + 2", "sets"], map(int, f[3:7])))
        kind = " ".join(f[7:-3])
        cycles, best = int(f[-3]), float(f[-1])
        assert kind in fixed and cycles == fixed[kind], line
        assert f"{cycles / min(fixed.values()):.3f}" == f[-1] and best >= 1.0
        rows.append(cycles)
    assert len(rows) == 2 and rows[1] < rows[0]
