"""``celosia synth``: resources (and, with place and route, Fmax) of a board build across
array shapes and dataflows, as a table and a plot.

Each design point is one :func:`~celosia.boards.build.build` of the board top
(``synth_only`` unless ``pnr``) in its own folder ``DIR/points/RxC-DATAFLOW``; the
point's outcome is kept there as ``point.json`` (the build report plus ``fits`` and
``error``; not for a point whose tools failed before counting anything), so a later sweep into the same ``DIR`` skips the points it finds (resume; a
point is taken again when its config changed, or when Fmax is now asked for and the
stored point has none). A point that does not fit the device keeps its synthesized
resource counts, with ``fits`` false and the fit check's message as ``error``; the other
points still run.

Outputs in ``DIR``:

* ``synth.csv``: one row per point, :data:`FIELDS`;
* ``synth.png`` / ``synth.svg``: LUT4s, flip-flops, DSP multipliers and block RAMs against
  PEs (``rows * cols``), a line per dataflow, the device's capacity as a dashed line; with
  place and route a fifth panel, Fmax against PEs, with the board clock.

``celosia sweep --resources DIR/synth.csv`` joins these counts to its design points
(:func:`resources_by_point`): ``summary.csv`` gains ``luts`` .. ``fmax_mhz`` and the Pareto
plot then uses LUT4s as its cost axis.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from celosia.errors import BoardError, InputError
from celosia.rtl.config import AccelConfig

from .build import board, build

__all__ = ["FIELDS", "RESOURCES", "point_dir", "synth_sweep", "write_table", "plot", "print_table",
           "resources_by_point"]

#: The resources of a point, in the names :func:`~celosia.boards.build.check_fit` uses.
RESOURCES = ("luts", "ffs", "dsps", "brams")

#: The columns of ``synth.csv``.
FIELDS = ("board", "device", "dataflow", "rows", "cols", "pes", *RESOURCES, "fmax_mhz", "target_mhz",
          "fits", "synth_seconds", "pnr_seconds", "synth_fallback", "error")


def point_dir(out: Path, config: AccelConfig) -> Path:
    """The build folder of ``config``'s point in the sweep folder ``out``."""
    return Path(out) / "points" / f"{config.rows}x{config.cols}-{config.dataflow}"


def _stored(path: Path, config: AccelConfig, pnr: bool) -> dict | None:
    """The stored outcome of a point, if it was built with ``config`` (and placed and routed,
    when ``pnr``); else ``None``."""
    try:
        data = json.loads((path / "point.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("config") != config.to_dict():
        return None
    if pnr and data.get("fits") and data.get("fmax_mhz") is None:
        return None
    return data


def _save(path: Path, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path / "point.json")


def _row(data: dict) -> dict:
    config = AccelConfig.from_dict(data["config"])
    return {"board": data["board"], "device": data["device"], "dataflow": config.dataflow,
            "rows": config.rows, "cols": config.cols, "pes": config.rows * config.cols,
            **{k: data.get(k) for k in (*RESOURCES, "fmax_mhz", "target_mhz", "fits", "synth_seconds",
                                        "pnr_seconds", "synth_fallback", "error")}}


def synth_sweep(board_name: str, configs: list[AccelConfig], out: str | Path, pnr: bool = False,
                log=print) -> list[dict]:
    """Build every config of ``configs`` for ``board_name`` into ``out`` (synthesis only,
    or with place and route when ``pnr``); return the rows of ``synth.csv`` (:data:`FIELDS`)
    in the order of ``configs``. Stored points are reused (see the module docstring); a
    point that does not fit, or whose tools fail, is a row with its ``error``."""
    b = board(board_name)
    out = Path(out)
    rows = []
    for i, config in enumerate(configs, 1):
        path = point_dir(out, config)
        what = f"[{i}/{len(configs)}] {config.array} {config.dataflow}"
        data = _stored(path, config, pnr)
        if data is not None:
            log(f"{what}: stored in {path}")
        else:
            log(f"{what}: {'synthesis, place and route' if pnr else 'synthesis'} ...")
            (path / "report.json").unlink(missing_ok=True)   # a report left by an earlier build
            try:
                report = build(b.name, config, path, synth_only=not pnr, log=lambda msg: log(f"    {msg.strip()}"))
                data = {**report, "fits": True, "error": None}
            except BoardError as e:
                try:   # synthesis ran: its counts are in the report written before the fit check
                    report = json.loads((path / "report.json").read_text())
                except (OSError, ValueError):
                    report = {"board": b.name, "device": b.device, "target_mhz": b.clk_hz / 1e6}
                data = {**report, "config": config.to_dict(), "fits": False, "error": str(e)}
            if data.get("luts") is not None:   # a result; a failed tool is tried again next time
                _save(path, data)
            log(f"{what}: " + (", ".join(f"{k} {data.get(k):,}" for k in RESOURCES if data.get(k) is not None)
                               + (f", Fmax {data['fmax_mhz']} MHz" if data.get("fmax_mhz") else "")
                               + ("" if data["fits"] else f"; {data['error']}")))
        rows.append(_row(data))
    return rows


def write_table(path: str | Path, rows: list[dict]) -> None:
    """``rows`` as ``synth.csv`` (:data:`FIELDS`; ``None`` is an empty cell)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r[k]) for k in FIELDS} for r in rows)


def plot(out: str | Path, rows: list[dict], capacity: dict, name: str = "synth") -> list[str]:
    """The resource plot (and Fmax, when a row has it) of ``rows`` as ``out/NAME.png`` and
    ``.svg``; ``capacity``: the device's resources (dashed lines). Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fmax = any(r.get("fmax_mhz") for r in rows)
    panels = [*RESOURCES, *(["fmax_mhz"] if fmax else [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    titles = {"luts": "LUT4", "ffs": "flip-flops", "dsps": "DSP multipliers", "brams": "block RAMs",
              "fmax_mhz": "Fmax (MHz)"}
    for ax, key in zip(axes, panels):
        for flow in dict.fromkeys(r["dataflow"] for r in rows):
            pts = sorted((r["pes"], r[key]) for r in rows if r["dataflow"] == flow and r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), "o-", label=flow, ms=4)
        if key in capacity:
            ax.axhline(capacity[key], ls="--", color="grey", lw=1, label="device")
        elif key == "fmax_mhz" and rows:
            ax.axhline(rows[0]["target_mhz"], ls="--", color="grey", lw=1, label="board clock")
        ax.set(xscale="log", xlabel="PEs (rows x cols)", title=titles[key])
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    files = []
    for ext in ("png", "svg"):
        fig.savefig(Path(out) / f"{name}.{ext}", dpi=80)
        files.append(f"{name}.{ext}")
    plt.close(fig)
    return files


def resources_by_point(path: str | Path) -> dict[tuple[int, int, str], dict]:
    """``synth.csv`` (from ``celosia synth``) as ``{(rows, cols, dataflow): {luts, ffs, dsps,
    brams, fmax_mhz, fits}}`` (numbers as int / float, missing ones ``None``); an
    :class:`~celosia.errors.InputError` naming the file for an unreadable one."""
    try:
        with open(path, newline="") as f:
            table = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"{path}: cannot read the resource table ({e.strerror})") from None
    out = {}
    for i, r in enumerate(table, 2):
        try:
            key = (int(r["rows"]), int(r["cols"]), r["dataflow"])
            out[key] = {k: (None if r.get(k) in (None, "") else (float if k == "fmax_mhz" else int)(r[k]))
                        for k in (*RESOURCES, "fmax_mhz")}
            out[key]["fits"] = r.get("fits") == "True"
        except (KeyError, ValueError, TypeError):
            raise InputError(f"{path}, line {i}: not a row of celosia synth's synth.csv (columns "
                             f"{', '.join(FIELDS)})") from None
    return out


def print_table(rows: list[dict], capacity: dict, console=None) -> None:
    """The points as a rich table: each resource used and its share of the device, Fmax."""
    import sys

    from rich.console import Console
    from rich.table import Table
    console = console or Console(width=None if sys.stdout.isatty() else 132)
    table = Table(title=f"celosia synth: {rows[0]['board']} ({rows[0]['device']})" if rows else "celosia synth")
    for c in ("dataflow", "array", "LUT4", "FF", "DSP", "BRAM", "Fmax MHz", "synth s", "status"):
        table.add_column(c, justify="left" if c in ("dataflow", "status") else "right")
    for r in rows:
        cells = [f"{r[k]:,} ({r[k] / capacity[k]:.0%})" if r.get(k) is not None else "-" for k in RESOURCES]
        table.add_row(r["dataflow"], f"{r['rows']}x{r['cols']}", *cells,
                      f"{r['fmax_mhz']:g}" if r.get("fmax_mhz") else "-",
                      f"{r['synth_seconds']:g}" if r.get("synth_seconds") is not None else "-",
                      ("fits" if r["fits"] else "does not fit" if r.get("luts") is not None else "failed")
                      + (" (classic ABC)" if r.get("synth_fallback") else ""))
    console.print(table)
