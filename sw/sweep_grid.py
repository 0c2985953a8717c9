"""The design-space grid of ``celosia sweep``: axes, parsing (command line and TOML) and points.

A grid has the axes *models* x *dataflows* x *arrays* x one axis per swept
:class:`~celosia.rtl.config.AccelConfig` field (``--set FIELD=V1,V2``); its points are
their Cartesian product, in that order (models outermost). Each :class:`Point` is one
model on one configuration with one back end; :func:`~celosia.sw.sweep_eval.evaluate_point`
turns it into result rows.

The same axes come from the command line or from a TOML file (``--config grid.toml``)::

    models = ["zoo:lenet5", "layers.csv"]   # relative paths: from the TOML file's folder
    dataflows = ["ws", "os"]                # or "ws,os"
    arrays = ["8x8", "16x16"]               # or "8x8,16x16"
    backend = "golden"

    [set]                                   # any AccelConfig field, one value or a list
    bus_bits = [64, 128]
    dram_bytes = 67108864

or from a SCALE-Sim ``.cfg`` file (``--config scale.cfg``,
:func:`celosia.sw.sweep_topology.read_scalesim_cfg`), which gives one value per axis it
names. An axis given on the command line replaces the file's; ``--set`` replaces the
file's values of that field only.

Syntax errors (an array that is not ``RxC``, an unknown field, a value that is not an
integer, an unknown dataflow or back end) stop the sweep before it starts, with a
one-line :class:`~celosia.errors.ConfigError` naming the field or entry. A value outside a
field's range is a property of the points that use it: those points are reported as
failed (``Point.error``, from :class:`~celosia.rtl.config.AccelConfig`'s own check) and the
rest of the sweep runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from celosia.errors import CelosiaError, ConfigError
from celosia.rtl.config import DATAFLOWS, RANGES, AccelConfig, parse_array

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "Grid", "Point", "parse_list", "parse_set", "parse_arrays",
           "parse_dataflows", "grid_from_toml", "grid_from_file", "merge", "expand", "column", "TAKEN"]

#: Back ends of the sweep: ``perf`` (the cycle model, :mod:`celosia.sim.perf`), ``verilator``
#: (the RTL) and ``golden`` (no cycles).
BACKENDS = ("perf", "verilator", "golden")

#: The back end when none is given: the cycle model (the RTL's cycles, without simulating it).
DEFAULT_BACKEND = "perf"

#: Swept config fields whose name is taken by a measured column of the results: their column
#: is ``config_NAME`` (``dram_bytes``, the DRAM size, against ``dram_bytes``, the traffic).
TAKEN = ("dram_bytes",)

#: Config fields that are axes of their own (``--dataflow``, ``--array``), not ``--set``.
_OWN_AXES = ("rows", "cols", "dataflow")


def column(field: str) -> str:
    """The results / summary column of the swept config field ``field``: its name, or
    ``config_NAME`` for a name in :data:`TAKEN`."""
    return f"config_{field}" if field in TAKEN else field


@dataclass(frozen=True)
class Point:
    """One design point: ``model`` (its spec as given, e.g. ``"zoo:resnet18"`` or a file path)
    on the :class:`~celosia.rtl.config.AccelConfig` with the fields ``config`` (a plain dict,
    so a point pickles and ships to any worker), run on ``backend``.

    ``swept``: the names of the ``--set`` fields of the grid (their values become columns);
    ``digest``: a hash of the model file's content (``""`` for a zoo model), so a changed
    file is a new point; ``error``: why the point cannot be evaluated (an impossible
    configuration), or ``None``."""

    model: str
    config: tuple[tuple[str, int | str], ...]
    backend: str
    swept: tuple[str, ...] = ()
    digest: str = ""
    error: str | None = None

    @property
    def fields(self) -> dict:
        """The configuration fields as a dict."""
        return dict(self.config)

    @property
    def columns(self) -> tuple[str, ...]:
        """The result columns of the swept fields (:func:`column` of each)."""
        return tuple(column(k) for k in self.swept)

    @property
    def swept_values(self) -> dict:
        """Column -> value of the swept fields, as the result rows hold them."""
        f = self.fields
        return {column(k): f[k] for k in self.swept}

    @property
    def key(self) -> str:
        """A stable 16-hex-digit name of the point (model, its content, config, back end):
        the file name of its result in the output folder."""
        text = json.dumps([self.model, self.digest, self.config, self.backend])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """A short human-readable name: ``model dataflow RxC field=value ...``."""
        f = self.fields
        extra = "".join(f" {k}={f[k]}" for k in self.swept)
        return f"{self.model} {f['dataflow']} {f['rows']}x{f['cols']}{extra}"


@dataclass
class Grid:
    """The axes of a sweep. ``sets``: swept config field -> its values, in order.
    ``None`` for an axis means "not given" (:func:`merge` fills it from a file, else the
    default: ``ws``, ``8x8``, :data:`DEFAULT_BACKEND`)."""

    models: list[str] | None = None
    dataflows: list[str] | None = None
    arrays: list[tuple[int, int]] | None = None
    sets: dict[str, list[int]] = field(default_factory=dict)
    backend: str | None = None


def parse_list(text, what: str) -> list[str]:
    """A comma-separated string (or a list of them, as TOML or repeated options give) as a
    list of non-empty, stripped items; a :class:`ConfigError` naming ``what`` if none."""
    parts = text if isinstance(text, list) else [text]
    items = []
    for part in parts:
        if not isinstance(part, (str, int)) or isinstance(part, bool):
            raise ConfigError(f"{what}: expected a string or a list of strings, not {part!r}")
        items += [s.strip() for s in str(part).split(",") if s.strip()]
    if not items:
        raise ConfigError(f"{what}: no values given")
    return items


def parse_arrays(text) -> list[tuple[int, int]]:
    """``"8x8,16x16"`` (or a list) as ``[(8, 8), (16, 16)]``."""
    out = []
    for item in parse_list(text, "array"):
        try:
            out.append(parse_array(item))
        except ConfigError as e:
            raise ConfigError(f"array: {e}") from None
    return out


def parse_dataflows(text) -> list[str]:
    """``"ws,os"`` (or a list) as ``["ws", "os"]``; a :class:`ConfigError` for an unknown one."""
    flows = parse_list(text, "dataflow")
    for d in flows:
        if d not in DATAFLOWS:
            raise ConfigError(f"dataflow: unknown dataflow {d!r}; choose from {', '.join(DATAFLOWS)}")
    return flows


def _backend(text) -> str:
    if text not in BACKENDS:
        raise ConfigError(f"backend: unknown back end {text!r}; choose from {', '.join(BACKENDS)}")
    return text


def _field_name(key: str) -> str:
    name = key.strip().replace("-", "_")
    if name in _OWN_AXES:
        raise ConfigError(f"--set {name}: use --array ROWSxCOLS / --dataflow for this axis")
    if name not in RANGES:
        raise ConfigError(f"--set: unknown config field {name!r}; fields: "
                          f"{', '.join(k for k in RANGES if k not in _OWN_AXES)}")
    return name


def _int_values(name: str, values) -> list[int]:
    out = []
    for v in parse_list(values if isinstance(values, list) else [values], name):
        try:
            out.append(int(v, 0))
        except ValueError:
            raise ConfigError(f"--set {name}: expected integers, not {v!r}") from None
    return out


def parse_set(item: str) -> tuple[str, list[int]]:
    """``"FIELD=V1,V2"`` as ``(field, [V1, V2])``; integers in any base Python reads
    (``0x100``). A :class:`ConfigError` naming the field for an unknown field or a value
    that is not an integer."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--set expects FIELD=V1,V2,..., not {item!r}")
    name = _field_name(key)
    return name, _int_values(name, value)


def grid_from_toml(path: str | Path) -> Grid:
    """The :class:`Grid` a TOML file describes (see the module docstring). Relative model
    paths are taken from the file's folder; ``zoo:`` names are kept."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the grid file ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a valid TOML grid file ({e})") from None
    known = {"models", "model", "dataflows", "dataflow", "arrays", "array", "backend", "set"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}; keys: models, dataflows, arrays, "
                              f"backend and a [set] table of config fields")

    def get(*names):
        return next((data[n] for n in names if n in data), None)

    try:
        grid = Grid()
        if (models := get("models", "model")) is not None:
            grid.models = [m if m.startswith("zoo:") or Path(m).is_absolute() else str(p.parent / m)
                           for m in parse_list(models, "models")]
        if (flows := get("dataflows", "dataflow")) is not None:
            grid.dataflows = parse_dataflows(flows)
        if (arrays := get("arrays", "array")) is not None:
            grid.arrays = parse_arrays(arrays)
        if (backend := data.get("backend")) is not None:
            grid.backend = _backend(backend)
        sets = data.get("set", {})
        if not isinstance(sets, dict):
            raise ConfigError("set: expected a table of FIELD = value(s)")
        for key, values in sets.items():
            name = _field_name(key)
            grid.sets[name] = _int_values(name, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return grid


def grid_from_file(path: str | Path) -> Grid:
    """A grid file: a TOML grid, or a SCALE-Sim ``.cfg`` architecture file (one value per
    axis it sets; :func:`celosia.sw.sweep_topology.read_scalesim_cfg`)."""
    if str(path).lower().endswith(".cfg"):
        from .sweep_topology import read_scalesim_cfg
        fields = read_scalesim_cfg(path)
        rows, cols, flow = fields.pop("rows"), fields.pop("cols"), fields.pop("dataflow")
        return Grid(dataflows=[flow], arrays=[(rows, cols)], sets={k: [v] for k, v in fields.items()})
    return grid_from_toml(path)


def merge(cli: Grid, base: Grid | None = None) -> Grid:
    """``cli``'s axes over ``base``'s (a grid file), then the defaults; a :class:`ConfigError`
    if no model is given."""
    base = base or Grid()
    grid = Grid(models=cli.models or base.models,
                dataflows=cli.dataflows or base.dataflows or ["ws"],
                arrays=cli.arrays or base.arrays or [(8, 8)],
                sets={**base.sets, **cli.sets},
                backend=cli.backend or base.backend or DEFAULT_BACKEND)
    if not grid.models:
        raise ConfigError("model: give at least one --model (zoo:NAME, .onnx, .tflite or a "
                          "SCALE-Sim topology .csv) or `models = [...]` in the grid file")
    return grid


def _digest(model: str) -> str:
    """A hash of a model file's content (``""`` for ``zoo:`` names and missing files: the
    evaluation reports those)."""
    p = Path(model)
    if model.startswith("zoo:") or not p.is_file():
        return ""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def expand(grid: Grid) -> list[Point]:
    """The points of ``grid`` (models x dataflows x arrays x swept fields). A combination
    :class:`~celosia.rtl.config.AccelConfig` rejects becomes a point with ``error`` set."""
    swept = tuple(grid.sets)
    digests = {m: _digest(m) for m in grid.models}
    points = []
    for model, flow, (rows, cols), *values in itertools.product(
            grid.models, grid.dataflows, grid.arrays, *grid.sets.values()):
        fields = {"rows": rows, "cols": cols, "dataflow": flow, **dict(zip(swept, values))}
        error = None
        try:
            fields = AccelConfig(**fields).to_dict()
        except CelosiaError as e:
            error = " ".join(str(e).split())
        points.append(Point(model=model, config=tuple(fields.items()), backend=grid.backend,
                            swept=swept, digest=digests[model], error=error))
    return points
