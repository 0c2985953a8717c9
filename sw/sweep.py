"""``celosia sweep``: evaluate a grid of design points, in parallel, and report them.

:func:`run_sweep` takes the points of a grid (:func:`celosia.sw.sweep_grid.expand`),
skips those already stored in the output folder (resume,
:mod:`celosia.sw.sweep_out`), evaluates the rest with
:func:`celosia.sw.sweep_eval.timed_point` and writes the tables, the plots
(:mod:`celosia.sw.sweep_plots`) and ``index.html``.

Where the points run:

* ``jobs=1``: in this process, one after the other;
* ``jobs=N > 1`` (default: the CPU count): a process pool of ``N`` workers
  (``forkserver`` start method; each worker loads and quantizes a model once);
* ``dask=ADDRESS``: a running ``dask.distributed`` scheduler (``tcp://host:8786``, or a
  ``dask.distributed`` cluster object), for sweeps larger than one machine; needs the
  ``sweep`` extra (``pip install celosia[sweep]``). The workers need Celosia installed
  and the model files at the same paths.

A point that fails (an impossible configuration, a model that cannot be read, does not
compile or does not fit this configuration's DRAM) gets a one-line warning naming it and
an ``error`` in ``summary.csv``; the rest of the sweep runs and is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from celosia.errors import CelosiaError, ConfigError, InputError
from celosia.rtl.config import AccelConfig
from .sweep_eval import timed_point, timed_points
from .sweep_grid import BACKENDS, DEFAULT_BACKEND, Grid, Point, expand, grid_from_file, merge, \
    parse_arrays, parse_list, parse_set, parse_dataflows
from .sweep_out import (RESOURCE_FIELDS, SUMMARY_FIELDS, load_point, print_summary, result_fields, save_point,
                        summary_row, write_csv, write_index, write_parquet)
from .sweep_plots import plot_all

__all__ = ["SweepResult", "run_sweep", "add_parser", "cmd_sweep"]


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: ``rows`` (one per point and layer), ``summary`` (one per
    point), ``evaluated`` (keys of the points evaluated in this call, not resumed),
    ``failed`` (point label -> error), ``plots`` (names written), ``notes``."""

    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    evaluated: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _batches(todo: list[Point]) -> list[list[Point]]:
    """``todo`` in batches of the points that compile to the same program (same model, same
    :func:`~celosia.sw.compiler.program_key`; e.g. the bus widths of one array and dataflow),
    so each batch runs on one worker and compiles once (:func:`~celosia.sw.sweep_eval.programs_for`)."""
    from .compiler import program_key
    batches: dict = {}
    for p in todo:
        try:
            k = (p.model, p.digest, program_key(AccelConfig.from_dict(p.fields)))
        except CelosiaError:
            k = p.key   # an impossible config: a batch of its own, reported by timed_point
        batches.setdefault(k, []).append(p)
    return list(batches.values())


def _results(todo: list[Point], jobs: int, dask):
    """``(point, result)`` for each point of ``todo`` as it completes (on workers: by
    :func:`_batches`)."""
    if dask is not None:
        try:
            from dask.distributed import Client, as_completed
        except ImportError:
            raise ConfigError("--dask needs dask.distributed: pip install 'celosia[sweep]'") from None
        try:
            client = Client(dask, set_as_default=False, timeout="10s")
        except (OSError, TimeoutError, ValueError) as e:
            raise ConfigError(f"--dask {dask}: cannot reach the scheduler ({e})") from None
        with client:
            futures = {client.submit(timed_points, b, pure=False, key=f"celosia-sweep-{b[0].key}"): b
                       for b in _batches(todo)}
            for fut in as_completed(futures, loop=client.loop):
                yield from zip(futures[fut], fut.result())
        return
    if jobs <= 1 or len(todo) <= 1:
        for p in todo:
            yield p, timed_point(p)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    ctx = multiprocessing.get_context("forkserver")
    batches = _batches(todo)
    with ProcessPoolExecutor(max_workers=min(jobs, len(batches)), mp_context=ctx) as pool:
        futures = {pool.submit(timed_points, b): b for b in batches}
        for fut in as_completed(futures):
            yield from zip(futures[fut], fut.result())


def _progress(total: int, show: bool):
    """A rich progress bar on stderr (``None`` when not shown)."""
    if not show or total == 0:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=False)


def run_sweep(points: list[Point], out: str | Path, jobs: int | None = None, dask=None,
              progress: bool = False, plots: bool = True, log: bool = False,
              resources: dict | None = None) -> SweepResult:
    """Evaluate ``points`` (skipping those stored in ``out``), write ``out``'s tables, plots
    and ``index.html``; see the module docstring. ``jobs``: local worker processes
    (default the CPU count); ``dask``: a scheduler address or cluster; ``progress``: show a
    rich progress bar; ``plots``: write the plots (``False`` for the tables only); ``log``: a
    line on stderr per point done (where no progress bar shows); ``resources``: FPGA resources
    per ``(rows, cols, dataflow)``
    (:func:`celosia.boards.synth_sweep.resources_by_point`), added to ``summary.csv`` as
    :data:`RESOURCE_FIELDS` (empty for points it lacks) and used by the Pareto plot."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = SweepResult()
    results, todo = {}, []
    for p in points:
        if p.error:
            results[p.key] = {"key": p.key, "rows": [], "wall_seconds": 0.0, "error": p.error}
        elif (stored := load_point(out, p)) is not None:
            results[p.key] = stored
        elif p.key not in {q.key for q in todo}:
            todo.append(p)
    if len(results) and todo:
        _log(f"resuming: {len(points) - len(todo)} of {len(points)} point(s) already in {out}")
    bar = _progress(len(todo), progress)
    task = bar.add_task("sweep", total=len(todo)) if bar else None
    try:
        if bar:
            bar.start()
        for p, r in _results(todo, jobs or os.cpu_count() or 1, dask):
            results[p.key] = r
            res.evaluated.append(p.key)
            if r["error"] is None:
                save_point(out, p, r)
            if bar:
                bar.advance(task)
            if log:
                _log(f"[{len(res.evaluated)}/{len(todo)}] {p.label()}: "
                     f"{'failed' if r['error'] else 'done'} in {r['wall_seconds']:.1f} s")
    finally:
        if bar:
            bar.stop()
    swept = points[0].columns if points else ()
    for p in points:
        r = results[p.key]
        if r["error"]:
            res.failed[p.label()] = r["error"]
        res.rows += r["rows"]
        res.summary.append(summary_row(p, r))
    for label, error in res.failed.items():
        _log(f"warning: point {label}: {error}")
    fields = result_fields(swept)
    sfields = [*SUMMARY_FIELDS[:6], *swept, *SUMMARY_FIELDS[6:]]
    if resources is not None:
        sfields[sfields.index("wall_seconds"):sfields.index("wall_seconds")] = RESOURCE_FIELDS
        for s in res.summary:
            found = resources.get((s["rows"], s["cols"], s["dataflow"]), {})
            s.update({k: found.get(k) for k in RESOURCE_FIELDS})
        missing = sorted({f"{s['rows']}x{s['cols']} {s['dataflow']}" for s in res.summary if s["luts"] is None})
        if missing:
            res.notes.append(f"no FPGA resources for {', '.join(missing)} in the --resources table: "
                             f"the Pareto plot uses PEs + buffer bytes")
    write_csv(out / "results.csv", fields, res.rows)
    write_csv(out / "summary.csv", sfields, res.summary)
    if not write_parquet(out / "results.parquet", fields, res.rows):
        res.notes.append("results.parquet not written: pyarrow is not installed "
                         "(pip install 'celosia[sweep]').")
    if res.failed:
        res.notes.append(f"{len(res.failed)} of {len(points)} design point(s) failed; see the "
                         f"error column of summary.csv.")
    if plots:
        configs = {p.key: p.fields for p in points}
        res.plots, notes = plot_all(out, res.rows, res.summary, configs, swept)
        res.notes += notes
    backends = ", ".join(dict.fromkeys(p.backend for p in points))
    write_index(out, res.plots, [f"{len(points)} design point(s) on the {backends} back end."]
                + res.notes, sfields, res.summary, fields, res.rows)
    return res


def add_parser(sub, positive_int) -> argparse.ArgumentParser:
    """Register the ``sweep`` subcommand on ``sub`` (the CLI's subparsers); ``positive_int``:
    the CLI's argument type of an integer >= 1."""
    p = sub.add_parser("sweep", help="evaluate a grid of models x dataflows x arrays x config fields; "
                                     "write tables, plots and index.html (docs/sweep.md)")
    p.add_argument("--model", action="append", default=[], metavar="M",
                   help="zoo:NAME, an .onnx or int8 .tflite file, or a SCALE-Sim topology .csv; "
                        "repeat for several")
    p.add_argument("--dataflow", metavar="D1,D2", help="dataflows, comma-separated (default ws)")
    p.add_argument("--array", metavar="RxC,...", help="array shapes, comma-separated (default 8x8)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2",
                   help="sweep any other AccelConfig field over the values given (repeatable)")
    p.add_argument("--config", metavar="FILE",
                   help="a grid.toml with the same axes, or a SCALE-Sim .cfg; options given here "
                        "replace the file's")
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"back end (default {DEFAULT_BACKEND}): perf (the cycle model: the RTL's cycles), "
                        f"verilator (cycles from the RTL itself, for small points) or golden (MACs and "
                        f"DRAM bytes, no cycles)")
    p.add_argument("--jobs", type=positive_int, help="local worker processes (default: the CPU count)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the points on this dask.distributed scheduler instead")
    p.add_argument("--resources", metavar="SYNTH_CSV",
                   help="FPGA resources per array and dataflow from `celosia synth` (its synth.csv): "
                        "added to summary.csv; the Pareto plot then uses LUT4s as its cost")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="write the tables only")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes what is there)")
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args) -> int:
    """The ``sweep`` command: exit 0 when every point was evaluated, 1 when some failed
    (their rows are missing; everything else is written)."""
    cli = Grid(models=[m for spec in args.model for m in parse_list(spec, "model")] or None,
               dataflows=parse_dataflows(args.dataflow) if args.dataflow else None,
               arrays=parse_arrays(args.array) if args.array else None,
               sets=dict(parse_set(s) for s in args.set), backend=args.backend)
    grid = merge(cli, grid_from_file(args.config) if args.config else None)
    resources = None
    if args.resources:
        from celosia.boards.synth_sweep import resources_by_point
        resources = resources_by_point(args.resources)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    points = expand(grid)
    _log(f"sweep: {len(points)} design point(s) ({len(grid.models)} model(s) x {len(grid.dataflows)} "
         f"dataflow(s) x {len(grid.arrays)} array(s)"
         + "".join(f" x {len(v)} {k}" for k, v in grid.sets.items()) + f") on {grid.backend}")
    tty = sys.stderr.isatty()
    res = run_sweep(points, out, jobs=args.jobs, dask=args.dask, progress=tty, plots=args.plots,
                    log=not tty, resources=resources)
    print_summary(res.summary, points[0].columns if points else ())
    for note in res.notes:
        _log(note)
    _log(f"wrote {out / 'results.csv'}, {out / 'summary.csv'}, {len(res.plots)} plot(s) and "
         f"{out / 'index.html'} ({len(res.evaluated)} point(s) evaluated, "
         f"{len(points) - len(res.evaluated)} resumed or skipped)")
    return 1 if res.failed else 0
