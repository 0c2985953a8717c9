"""Celosia's ``perf`` back end and SCALE-Sim 3.0.0 side by side on one topology (issue 12).

    pip install -e ".[scalesim]"        # SCALE-Sim 3.0.0, an optional extra
    python benchmarks/scalesim_compare.py [--layers Conv3,Conv4,Conv5] [--array 16x16]
                                          [--bandwidth-mode calc|user] [--out FILE.md]

AlexNet CONV1-5 (SCALE-Sim's own ``topologies/conv_nets/alexnet.csv``: Conv1 224x224 11x11
3->96 stride 4; Conv2 27x27 5x5 96->256; Conv3 13x13 3x3 256->384; Conv4 13x13 3x3
384->384; Conv5 13x13 3x3 384->256; stride 1) on a weight-stationary array. The script
writes the topology CSV and one SCALE-Sim ``.cfg`` into a temporary folder, and both tools
read those same two files, each in its own subprocess, one after the other:

* **SCALE-Sim**: its Python API (``scalesim.scale_sim.scalesim(save_disk_space=True,
  verbose=False, config=, topology=, layout=)``, ``run_scale(top_path=tmp)``); cycles per
  layer from its ``COMPUTE_REPORT.csv``. Its wall time per design point is the time of
  those two calls (reading the files, simulating every layer, writing the reports), taken
  inside the child; the child process's time (interpreter start and imports included) is
  printed too.
* **Celosia**: ``celosia sweep --model topo.csv --config the.cfg --dataflow ws --array RxC
  --backend perf --jobs 1 --no-plots --set dram_bytes=N --out DIR``; cycles per layer from
  its ``results.csv``, wall time per design point from its ``summary.csv``
  (``wall_seconds``: building each layer's graph with random weights, quantizing it,
  compiling it for the configuration and running the cycle model; the CLI's start, imports
  and writing the tables are outside it, and in the process time printed next to it).

Peak memory is each child's own maximum resident set (``ru_maxrss`` of the rusage
``os.wait4`` returns for that child's pid), so one tool's peak is never the other's.

What each side reads from the ``.cfg``:

==========================  ======================================  ========================
key                         SCALE-Sim                               Celosia (read_scalesim_cfg)
==========================  ======================================  ========================
ArrayHeight, ArrayWidth     the systolic array                      ``rows``, ``cols`` (also
                                                                    given as ``--array``)
Dataflow = ws               weight stationary                       the ``ws`` engine
IfmapSramSzkB, Filter...,   SRAM sizes (double-buffered             ``ifmap_rows``,
OfmapSramSzkB               scratchpads)                            ``weight_rows``,
                                                                    ``psum_rows`` (same bytes;
                                                                    Celosia's psum buffer holds
                                                                    int32, SCALE-Sim counts words)
Bandwidth = 8               DRAM words per cycle, only with         ``dram_bytes_per_cycle``
                            ``InterfaceBandwidth: USER``            = 8 (int8: bytes), a
                                                                    64-bit bus
InterfaceBandwidth          CALC (default here) or USER             ignored
offsets, request buffers,   SCALE-Sim's memory model and traces     ignored
[layout], [sparsity]        (no custom layout, no sparsity)         ignored
==========================  ======================================  ========================

The SRAM sizes are Celosia's default buffers for the array (16 kB ifmap, 16 kB weights,
32 kB psums on 16x16), so Celosia runs its default configuration. With
``InterfaceBandwidth: CALC`` (the default here, as in SCALE-Sim's own ``scale.cfg``) SCALE-Sim
assumes whatever DRAM bandwidth avoids every stall and reports compute cycles only, while
Celosia's cycles include its DRAM traffic at 8 bytes per cycle (the whole machine: DMA,
queues, PPU and store). ``--bandwidth-mode user`` makes SCALE-Sim stall on the same 8 words
per cycle (about twice its simulation time). The SCALE-Sim columns: ``Total Cycles`` (compute,
stalls included) and ``Total Cycles (incl. prefetch)`` (from the first DRAM read to the last
DRAM write). The ``formula`` column is :func:`celosia.sw.scalesim.reported_cycles`, SCALE-Sim's
analytical ws count; the script checks it against SCALE-Sim's compute cycles.

SCALE-Sim 3.0.0 on NumPy >= 2.4: two of its memory modules call ``int(max(x))`` where the
builtin ``max`` returns a one-element array, which NumPy 2.4 no longer converts; the child
gives those two modules a ``max`` that returns that element (:func:`_patch_scalesim`), the
same value, so SCALE-Sim runs unchanged otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: SCALE-Sim's AlexNet convolutions: name, ifmap H, W, filter H, W, channels, filters, stride.
ALEXNET = (
    ("Conv1", 224, 224, 11, 11, 3, 96, 4),
    ("Conv2", 27, 27, 5, 5, 96, 256, 1),
    ("Conv3", 13, 13, 3, 3, 256, 384, 1),
    ("Conv4", 13, 13, 3, 3, 384, 384, 1),
    ("Conv5", 13, 13, 3, 3, 384, 256, 1),
)

TOPOLOGY_HEADER = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width",
                   "Channels", "Num Filter", "Strides")
#: SCALE-Sim 3.0.0 opens a layout file even without a custom layout (``[layout]`` off): one
#: row per layer, factors 1 and the identity orders.
LAYOUT_HEADER = ("Layer name", "IFMAP Height Intraline Factor", "IFMAP Width Intraline Factor",
                 "Filter Height Intraline Factor", "Filter Width Intraline Factor",
                 "Channel Intraline Factor", "Num Filter Intraline Factor",
                 "IFMAP Height Intraline Order", "IFMAP Width Intraline Order",
                 "Channel Intraline Order", "IFMAP Height Interline Order",
                 "IFMAP Width Interline Order", "Channel Interline Order",
                 "Num Filter Intraline Order", "Channel Intraline Order",
                 "Filter Height Intraline Order", "Filter Width Intraline Order",
                 "Num Filter Interline Order", "Channel Interline Order",
                 "Filter Height Interline Order", "Filter Width Interline Order")
LAYOUT_ROW = (1, 1, 1, 1, 1, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3)

TARGET_SPEEDUP = 1000     # SCALE-Sim wall / Celosia wall per design point, at least
TARGET_MEMORY = 0.05      # Celosia peak memory / SCALE-Sim peak memory, at most
EXTRA_HINT = 'SCALE-Sim is not installed: pip install -e ".[scalesim]" (the optional extra)'


def _csv_rows(path: Path, rows) -> None:
    path.write_text("".join(", ".join(str(c) for c in row) + ",\n" for row in rows))


def write_inputs(folder: Path, layers, rows: int, cols: int, bandwidth_mode: str = "calc",
                 bandwidth: int = 8, dataflow: str = "ws") -> dict:
    """Write ``topology.csv``, ``layout.csv`` and ``ws.cfg`` for ``layers`` (tuples as
    :data:`ALEXNET`) on a ``rows x cols`` array of ``dataflow`` (``ws`` or ``os``) into
    ``folder``; their paths by kind."""
    from celosia.rtl.config import AccelConfig
    d = AccelConfig()
    kb = {key: n * width // 1024 for key, n, width in (
        ("IfmapSramSzkB", d.ifmap_rows, rows), ("FilterSramSzkB", d.weight_rows, cols),
        ("OfmapSramSzkB", d.psum_rows, 4 * cols))}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"topology": folder / "topology.csv", "layout": folder / "layout.csv",
             "cfg": folder / "ws.cfg"}
    _csv_rows(paths["topology"], [TOPOLOGY_HEADER, *layers])
    _csv_rows(paths["layout"], [LAYOUT_HEADER, *((layer[0], *LAYOUT_ROW) for layer in layers)])
    arch = {"ArrayHeight": rows, "ArrayWidth": cols, **{k: max(1, v) for k, v in kb.items()},
            "IfmapOffset": 0, "FilterOffset": 10000000, "OfmapOffset": 20000000,
            "Bandwidth": bandwidth, "Dataflow": dataflow, "MemoryBanks": 1,
            "ReadRequestBuffer": 512, "WriteRequestBuffer": 512}
    sections = {
        "general": {"run_name": "compare"},
        "architecture_presets": arch,
        "layout": {"IfmapCustomLayout": False, "IfmapSRAMBankBandwidth": 10,
                   "IfmapSRAMBankNum": 10, "IfmapSRAMBankPort": 2, "FilterCustomLayout": False,
                   "FilterSRAMBankBandwidth": 10, "FilterSRAMBankNum": 10,
                   "FilterSRAMBankPort": 2},
        "sparsity": {"SparsitySupport": "false"},
        "run_presets": {"InterfaceBandwidth": bandwidth_mode.upper(), "UseRamulatorTrace": False},
    }
    paths["cfg"].write_text("\n".join(f"[{name}]\n" + "".join(f"{k}: {v}\n" for k, v in body.items())
                                      for name, body in sections.items()))
    return paths


def _patch_scalesim() -> None:
    """Make SCALE-Sim 3.0.0 run on NumPy >= 2.4 (see the module docstring)."""
    import builtins

    import numpy as np
    from scalesim.memory import double_buffered_scratchpad_mem, read_buffer

    def _max(*args, **kwargs):
        result = builtins.max(*args, **kwargs)
        return result.item() if isinstance(result, np.ndarray) and result.size == 1 else result

    double_buffered_scratchpad_mem.max = read_buffer.max = _max


def _scalesim_child(cfg: str, topology: str, layout: str, out: str) -> None:
    """The SCALE-Sim subprocess: run it, print the seconds the design point took."""
    _patch_scalesim()
    from scalesim.scale_sim import scalesim
    t0 = time.perf_counter()
    sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topology, layout=layout)
    sim.run_scale(top_path=out)
    print(f"point_seconds={time.perf_counter() - t0:.3f}")


def scalesim_installed() -> bool:
    """Whether SCALE-Sim can be imported (its package only: the simulator's modules load in
    the child)."""
    try:
        import scalesim  # noqa: F401
    except ImportError:
        return False
    return True


def _child(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Run ``cmd``; ``(wall seconds, peak resident MB of that process, its stdout)``.
    Raises ``RuntimeError`` with the end of its output if it fails."""
    t0 = time.perf_counter()
    with open(log, "w+") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        f.seek(0)
        text = f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... exited with {proc.returncode}:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text   # ru_maxrss is in KiB on Linux


def run_scalesim(paths: dict, work: Path) -> dict:
    """SCALE-Sim on ``paths`` (from :func:`write_inputs`) in a subprocess; ``{"cycles":
    {layer: Total Cycles}, "prefetch_cycles": {...}, "stall_cycles": {...}, "point_seconds",
    "process_seconds", "peak_mb"}``."""
    out = work / "scalesim"
    wall, peak, text = _child([sys.executable, __file__, "--scalesim-child", str(paths["cfg"]),
                               str(paths["topology"]), str(paths["layout"]), str(out)],
                              work / "scalesim.log")
    point = next(float(line.split("=", 1)[1]) for line in text.splitlines()
                 if line.startswith("point_seconds="))
    names = [row[0] for row in read_csv(paths["topology"])[1:]]
    report = read_csv(next(out.glob("*/COMPUTE_REPORT.csv")))
    header, body = report[0], report[1:]
    col = {h: i for i, h in enumerate(header)}
    result = {"cycles": {}, "prefetch_cycles": {}, "stall_cycles": {}, "point_seconds": point,
              "process_seconds": wall, "peak_mb": peak}
    for row in body:
        name = names[int(row[col["LayerID"]])]
        result["cycles"][name] = int(float(row[col["Total Cycles"]]))
        result["prefetch_cycles"][name] = int(float(row[col["Total Cycles (incl. prefetch)"]]))
        result["stall_cycles"][name] = int(float(row[col["Stall Cycles"]]))
    return result


def read_csv(path: Path) -> list[list[str]]:
    """The cells of a CSV file, stripped, without the empty cell of a trailing comma."""
    with open(path, newline="") as f:
        rows = [[c.strip() for c in row] for row in csv.reader(f) if row]
    return [row[:-1] if row[-1] == "" else row for row in rows]


def read_sweep(out: Path) -> dict:
    """A one-point ``celosia sweep`` folder's ``{"cycles": {layer: cycles}, "point_seconds"}``
    (its ``results.csv`` and ``summary.csv``; a layer's cycles are ``None`` where the sweep
    reports none). Raises ``RuntimeError`` with the point's error."""
    with open(out / "summary.csv", newline="") as f:
        (summary,) = list(csv.DictReader(f))
    if summary.get("error"):
        raise RuntimeError(f"celosia sweep: the point failed: {summary['error']}")
    with open(out / "results.csv", newline="") as f:
        cycles = {r["layer"]: int(r["cycles"]) if r["cycles"] else None for r in csv.DictReader(f)}
    return {"cycles": cycles, "point_seconds": float(summary["wall_seconds"])}


def run_celosia(paths: dict, work: Path, array: str, dram_bytes: int) -> dict:
    """``celosia sweep`` (perf back end) on the same files in a subprocess; :func:`read_sweep`
    plus ``"process_seconds"`` and ``"peak_mb"``."""
    out = work / "celosia"
    cmd = [sys.executable, "-m", "celosia.sw.cli", "sweep", "--model", str(paths["topology"]),
           "--config", str(paths["cfg"]), "--dataflow", "ws", "--array", array,
           "--backend", "perf", "--jobs", "1", "--no-plots", "--set", f"dram_bytes={dram_bytes}",
           "--out", str(out)]
    wall, peak, _ = _child(cmd, work / "celosia.log")
    return {**read_sweep(out), "process_seconds": wall, "peak_mb": peak}


def formula_cycles(layer, rows: int, cols: int, dataflow: str = "ws") -> int:
    """SCALE-Sim's reported compute cycles of a topology layer (tuple as :data:`ALEXNET`)
    by :func:`celosia.sw.scalesim.reported_cycles`."""
    from celosia.sw.scalesim import reported_cycles
    _, h, w, fh, fw, c, n, s = layer
    m = ((h - fh) // s + 1) * ((w - fw) // s + 1)
    return reported_cycles(dataflow, m, fh * fw * c, n, rows, cols)


def _ratio(a, b) -> str:
    return f"{a / b:.3f}" if a is not None and b else "-"


def table(layers, celosia: dict, scalesim: dict | None, rows: int, cols: int) -> str:
    """The markdown table of one run: a row per layer and a total row (``scalesim`` may be
    ``None``: its columns then show ``-``)."""
    head = ("layer", "MACs", "SCALE-Sim cycles", "SCALE-Sim incl. prefetch", "SCALE-Sim formula",
            "Celosia cycles", "Celosia / SCALE-Sim")
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    sums, missing = [0, 0, 0, 0, 0], False
    for layer in layers:
        name, h, w, fh, fw, c, n, s = layer
        macs = ((h - fh) // s + 1) * ((w - fw) // s + 1) * fh * fw * c * n
        ss = scalesim["cycles"][name] if scalesim else None
        pre = scalesim["prefetch_cycles"][name] if scalesim else None
        vals = [macs, ss, pre, formula_cycles(layer, rows, cols), celosia["cycles"][name]]
        sums = [t + (v or 0) for t, v in zip(sums, vals)]
        missing |= vals[4] is None
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:,}" for v in vals)
                     + f" | {_ratio(vals[4], ss)} |")
    total = [sums[0], sums[1] if scalesim else None, sums[2] if scalesim else None, sums[3],
             None if missing else sums[4]]
    lines.append("| total | " + " | ".join("-" if v is None else f"{v:,}" for v in total)
                 + f" | {_ratio(total[4], total[1])} |")
    return "\n".join(lines) + "\n"


def summary(celosia: dict, scalesim: dict | None) -> str:
    """The lines under the table: wall time per design point, process time, peak memory and
    the issue's two targets, met or not."""
    def row(name, d):
        return (f"| {name} | {d['point_seconds']:.2f} | {d['process_seconds']:.2f} | "
                f"{d['peak_mb']:,.0f} |")
    lines = ["| tool | wall s per design point | process wall s | peak MB |",
             "| --- | ---: | ---: | ---: |"]
    if scalesim:
        lines.append(row("SCALE-Sim 3.0.0", scalesim))
    lines.append(row("Celosia perf", celosia))
    lines.append("")
    if scalesim:
        speed = scalesim["point_seconds"] / celosia["point_seconds"]
        mem = celosia["peak_mb"] / scalesim["peak_mb"]
        lines.append(f"* SCALE-Sim wall / Celosia wall per design point: {speed:,.2f}x "
                     f"(target >= {TARGET_SPEEDUP}x: {'met' if speed >= TARGET_SPEEDUP else 'not met'})")
        lines.append(f"* Celosia peak memory / SCALE-Sim peak memory: {100 * mem:.1f}% "
                     f"(target <= {100 * TARGET_MEMORY:.0f}%: {'met' if mem <= TARGET_MEMORY else 'not met'})")
    return "\n".join(lines) + "\n"


def check_formula(layers, scalesim: dict, rows: int, cols: int, dataflow: str = "ws") -> list[str]:
    """The layers whose SCALE-Sim compute cycles (``Total Cycles - Stall Cycles``) differ from
    :func:`formula_cycles`, as messages (empty when all agree)."""
    bad = []
    for layer in layers:
        name = layer[0]
        got = scalesim["cycles"][name] - scalesim["stall_cycles"][name]
        want = formula_cycles(layer, rows, cols, dataflow)
        if got != want:
            bad.append(f"{name}: SCALE-Sim computed {got:,} cycles, sw/scalesim.py's formula {want:,}")
    return bad


def select(layers, names: str | None):
    """The ``layers`` named in the comma-separated ``names`` (all when ``None``)."""
    if not names:
        return list(layers)
    want = [n.strip() for n in names.split(",") if n.strip()]
    known = {layer[0]: layer for layer in layers}
    unknown = [n for n in want if n not in known]
    if unknown:
        raise SystemExit(f"scalesim_compare: error: --layers: unknown layer(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(known)})")
    return [known[n] for n in want]


def compare(layers, array: str = "16x16", bandwidth_mode: str = "calc", dram_bytes: int = 1 << 24,
            with_scalesim: bool = True, work: Path | None = None) -> tuple[str, dict]:
    """Run both tools (or Celosia only) on ``layers``, in ``work`` (kept) or a temporary folder;
    the printed report and the raw results ``{"celosia", "scalesim", "formula_mismatches"}``."""
    from celosia.rtl.config import parse_array
    rows, cols = parse_array(array)
    with tempfile.TemporaryDirectory(prefix="scalesim-compare-") as tmp:
        work = Path(work or tmp)
        paths = write_inputs(work, layers, rows, cols, bandwidth_mode)
        scalesim = run_scalesim(paths, work) if with_scalesim else None
        celosia = run_celosia(paths, work, array, dram_bytes)
    mismatches = check_formula(layers, scalesim, rows, cols) if scalesim else []
    text = (f"{', '.join(layer[0] for layer in layers)} on a {array} weight-stationary array; "
            f"SCALE-Sim InterfaceBandwidth {bandwidth_mode.upper()}\n\n"
            + table(layers, celosia, scalesim, rows, cols) + "\n" + summary(celosia, scalesim))
    if scalesim:
        text += ("* SCALE-Sim's compute cycles equal sw/scalesim.py's formula on every layer\n"
                 if not mismatches else
                 "* SCALE-Sim and sw/scalesim.py's formula disagree: " + "; ".join(mismatches) + "\n")
    return text, {"celosia": celosia, "scalesim": scalesim, "formula_mismatches": mismatches}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--scalesim-child"]:
        _scalesim_child(*argv[1:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", help="comma-separated AlexNet layers (default Conv1,...,Conv5)")
    ap.add_argument("--array", default="16x16", help="RxC (default 16x16)")
    ap.add_argument("--bandwidth-mode", choices=("calc", "user"), default="calc",
                    help="SCALE-Sim's InterfaceBandwidth (default calc: no stalls)")
    ap.add_argument("--dram-bytes", type=int, default=1 << 24,
                    help="Celosia's simulated DRAM size (default 16 MiB)")
    ap.add_argument("--out", help="also write the report (markdown) to this file")
    ap.add_argument("--work", help="keep the inputs, both tools' outputs and logs in this folder")
    args = ap.parse_args(argv)
    if not scalesim_installed():
        print(EXTRA_HINT, file=sys.stderr)
        return 1
    layers = select(ALEXNET, args.layers)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    text, _ = compare(layers, args.array, args.bandwidth_mode, args.dram_bytes,
                      work=Path(args.work) if args.work else None)
    text += f"* load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
