"""What ``celosia sweep`` writes: per-point result files (resume), the tables, ``index.html``
and the terminal summary.

Output folder ``DIR``:

* ``points/KEY.json``: one file per evaluated point (:attr:`Point.key
  <celosia.sw.sweep_grid.Point.key>`), written atomically (a temporary file renamed into
  place), so an interrupted sweep leaves only whole files; a later sweep with the same
  ``DIR`` skips the points it finds there (resume). Failed points are not stored: they
  are tried again.
* ``results.csv``: one row per design point and layer (:data:`~celosia.sw.sweep_eval.ROW_FIELDS`,
  the swept fields after ``cols``); ``results.parquet`` too when ``pyarrow`` is installed
  (the ``sweep`` extra). Empty cells are missing values (``cycles`` on the golden back end).
* ``summary.csv``: one row per design point (:data:`SUMMARY_FIELDS`), with its
  ``wall_seconds`` (the time its evaluation took, model loading included) and ``error``.
* the plots (:mod:`celosia.sw.sweep_plots`) and ``index.html`` showing them and the tables.
"""

from __future__ import annotations

import csv
import html
import json
import os
import tempfile
from pathlib import Path

from celosia.boards.synth_sweep import RESOURCES
from celosia.rtl.config import AccelConfig
from .sweep_eval import ROW_FIELDS, buffer_bytes
from .sweep_grid import Point

__all__ = ["SUMMARY_FIELDS", "RESOURCE_FIELDS", "point_path", "load_point", "save_point", "result_fields", "summary_row",
           "write_csv", "write_parquet", "write_index", "print_summary"]

#: The columns of ``summary.csv`` (the swept fields follow ``cols``).
SUMMARY_FIELDS = ("point", "model", "backend", "dataflow", "rows", "cols", "layers", "macs", "cycles",
                  "utilization", "dram_bytes", "energy", "pes", "buffer_bytes", "wall_seconds",
                  "error")
#: The ``summary.csv`` columns ``celosia sweep --resources`` adds (before ``wall_seconds``):
#: FPGA resources and Fmax of the point's array and dataflow, from ``celosia synth``.
RESOURCE_FIELDS = (*RESOURCES, "fmax_mhz")


def point_path(out: Path, point: Point) -> Path:
    """Where the result of ``point`` is stored in the output folder ``out``."""
    return Path(out) / "points" / f"{point.key}.json"


def load_point(out: Path, point: Point) -> dict | None:
    """The stored result of ``point`` (``{"key", "rows", "wall_seconds", "error"}``), or
    ``None`` if it was not evaluated yet (or its file is unreadable)."""
    try:
        data = json.loads(point_path(out, point).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "rows" in data else None


def save_point(out: Path, point: Point, result: dict) -> None:
    """Store ``result`` of ``point`` atomically (write a temporary file, rename it)."""
    path = point_path(out, point)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**result, "model": point.model, "config": point.fields, "backend": point.backend}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _with_swept(fields: tuple, swept: tuple) -> list[str]:
    i = fields.index("cols") + 1
    return [*fields[:i], *swept, *fields[i:]]


def result_fields(swept: tuple) -> list[str]:
    """The columns of ``results.csv`` for a grid sweeping ``swept``."""
    return _with_swept(ROW_FIELDS, swept)


def summary_row(point: Point, result: dict) -> dict:
    """The ``summary.csv`` row of ``point`` from its ``result`` (:func:`~celosia.sw.sweep_eval.timed_point`).
    ``cycles`` / ``utilization`` are ``None`` unless every layer has cycles."""
    f = point.fields
    rows = result["rows"]
    cycles = [r["cycles"] for r in rows]
    total = sum(cycles) if rows and None not in cycles else None
    macs = sum(r["macs"] for r in rows)
    pes = f["rows"] * f["cols"]
    dram = [r["dram_bytes"] for r in rows]
    try:
        buf = buffer_bytes(AccelConfig.from_dict(f))
    except ValueError:
        buf = None
    return {"point": point.key, "model": point.model, "backend": point.backend,
            "dataflow": f["dataflow"], "rows": f["rows"], "cols": f["cols"],
            **point.swept_values, "layers": len(rows), "macs": macs, "cycles": total,
            "utilization": round(macs / (total * pes), 6) if total else None,
            "dram_bytes": sum(dram) if rows and None not in dram else None,
            "energy": sum(r["energy"] for r in rows) if rows and None not in dram else None,
            "pes": pes, "buffer_bytes": buf, "wall_seconds": result["wall_seconds"],
            "error": result["error"]}


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """``rows`` as CSV with the columns ``fields``; ``None`` is an empty cell."""
    tmp = Path(path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in fields} for r in rows)
    os.replace(tmp, path)


def write_parquet(path: Path, fields: list[str], rows: list[dict]) -> bool:
    """``rows`` as Parquet if ``pyarrow`` is installed; returns whether it wrote the file."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    table = pa.Table.from_pylist([{k: r.get(k) for k in fields} for r in rows])
    pq.write_table(table, path)
    return True


def _table_html(fields: list[str], rows: list[dict], limit: int) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in fields)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k)))}</td>" for k in fields)
                     + "</tr>" for r in rows[:limit])
    more = (f"<p>First {limit} of {len(rows)} rows; all in the CSV.</p>" if len(rows) > limit else "")
    return f"<table>\n<tr>{head}</tr>\n{body}\n</table>{more}"


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_index(out: Path, plots: list[str], notes: list[str], summary_fields: list[str],
                summary: list[dict], fields: list[str], rows: list[dict], limit: int = 2000) -> Path:
    """``out/index.html``: the notes, each plot (PNG, linking its SVG), the summary table and
    the first ``limit`` result rows."""
    figs = "\n".join(f'<figure><a href="{html.escape(p)}.svg"><img src="{html.escape(p)}.png" '
                     f'alt="{html.escape(p)}"></a><figcaption>{html.escape(p)}</figcaption></figure>'
                     for p in plots)
    note = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Celosia sweep</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} figure{{display:inline-block;margin:8px}}
img{{max-width:640px}}</style></head><body>
<h1>Celosia sweep</h1>
{note}
<p>Tables: <a href="summary.csv">summary.csv</a>, <a href="results.csv">results.csv</a>.</p>
{figs}
<h2>Design points</h2>
{_table_html(summary_fields, summary, limit)}
<h2>Layers</h2>
{_table_html(fields, rows, limit)}
</body></html>
"""
    path = Path(out) / "index.html"
    path.write_text(page)
    return path


def print_summary(summary: list[dict], swept: tuple, console=None) -> None:
    """The design points as a rich table on the terminal (``console``: a
    :class:`rich.console.Console`; default stdout)."""
    from rich.console import Console
    from rich.table import Table
    import sys
    console = console or Console(width=None if sys.stdout.isatty() else 132)
    table = Table(title="celosia sweep")
    cols = ["model", "dataflow", "array", *swept, "cycles", "util", "DRAM B", "energy", "wall s", "status"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "dataflow", "status") else "right")
    for s in summary:
        model = s["model"] if s["model"].startswith("zoo:") else Path(s["model"]).name
        table.add_row(model, s["dataflow"], f"{s['rows']}x{s['cols']}",
                      *(str(s[k]) for k in swept), _cell(s["cycles"]) or "-",
                      f"{s['utilization']:.1%}" if s["utilization"] is not None else "-",
                      _cell(s["dram_bytes"]) or "-",
                      f"{s['energy']:.3g}" if s["energy"] is not None else "-",
                      f"{s['wall_seconds']:.2f}", "failed" if s["error"] else "ok")
    console.print(table)
