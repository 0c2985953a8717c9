"""SCALE-Sim's input files as Celosia models and configs: topology CSVs and ``.cfg`` files.

SCALE-Sim (github.com/scalesim-project/scale-sim-v2) describes a network as a topology
CSV, one layer per line, and an accelerator as a ``.cfg`` file. ``celosia sweep
--model layers.csv`` and ``--config scale.cfg`` read them, so its users can point
Celosia at the files they have.

Topology CSV, convolution format (a header line, then one line per layer; a trailing
comma is allowed, as SCALE-Sim's own files have)::

    Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
    Conv1,      227,          227,         11,            11,           3,        96,         4,

Each line is one convolution with no padding (SCALE-Sim's IFMAP sizes include any
padding; output ``(H - Fh) // S + 1`` by ``(W - Fw) // S + 1``) and no bias of note;
a fully connected layer is the conv whose filter covers the whole ifmap. Columns after
the eighth (SCALE-Sim 3's sparsity fields) are ignored. GEMM format (``Layer, M, N, K``):
an ``M x K`` by ``K x N`` product, built as a 1x1 convolution of an ``1 x M`` ifmap of
``K`` channels into ``N`` filters (``M * N * K`` MACs).

SCALE-Sim's layers are independent shapes, not a chained network (one layer's output
need not be the next one's input), so :func:`topology_graphs` gives one single-layer
:class:`~celosia.sw.graph.Graph` per line, named after the layer, with random lazy
weights like the model zoo's (:mod:`celosia.sw.zoo`); the sweep runs each and reports
it as a layer of the model.

``.cfg`` (:func:`read_scalesim_cfg`), ``[architecture_presets]``:

================  ==================================================================
SCALE-Sim key     AccelConfig field
================  ==================================================================
ArrayHeight       ``rows``
ArrayWidth        ``cols``
Dataflow          ``dataflow`` (``ws``, ``os``; ``is`` has no Celosia engine: error)
IfmapSramSzkB     ``ifmap_rows = kB * 1024 / rows`` (rows of ``rows`` bytes)
FilterSramSzkB    ``weight_rows = kB * 1024 / cols`` (rows of ``cols`` bytes)
OfmapSramSzkB     ``psum_rows = kB * 1024 / (4 * cols)`` (rows of ``cols`` int32)
Bandwidth         ``dram_bytes_per_cycle`` (int8 words per cycle), and ``bus_bits`` the
                  narrowest of 64 / 128 / 256 that carries it
================  ==================================================================

Buffer depths are rounded down to an even number (two halves). Other keys (offsets,
``MemoryBanks``, ``[run_presets]``) have no Celosia counterpart and are ignored. Values
out of a field's range are reported by the points that use them, like any other
impossible configuration.
"""

from __future__ import annotations

import configparser
import csv
from pathlib import Path

from celosia.errors import ConfigError, ModelError
from celosia.rtl.config import BUS_WIDTHS
from .graph import Graph, LazyInit

__all__ = ["TopologyLayer", "read_topology", "topology_graphs", "read_scalesim_cfg"]


class TopologyLayer:
    """One line of a topology CSV: a convolution of an ``ifmap_h x ifmap_w x channels``
    input by ``filters`` filters of ``filter_h x filter_w``, ``stride`` in both directions."""

    __slots__ = ("name", "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "filters", "stride")

    def __init__(self, name, ifmap_h, ifmap_w, filter_h, filter_w, channels, filters, stride):
        self.name, self.ifmap_h, self.ifmap_w = name, ifmap_h, ifmap_w
        self.filter_h, self.filter_w, self.channels = filter_h, filter_w, channels
        self.filters, self.stride = filters, stride

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width (no padding)."""
        return ((self.ifmap_h - self.filter_h) // self.stride + 1,
                (self.ifmap_w - self.filter_w) // self.stride + 1)

    @property
    def macs(self) -> int:
        ho, wo = self.out_hw
        return ho * wo * self.filters * self.filter_h * self.filter_w * self.channels

    def __eq__(self, other):
        return isinstance(other, TopologyLayer) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return "TopologyLayer(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


_CONV_COLUMNS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
                 "Num Filter", "Strides")


def _ints(path, lineno: int, name: str, cells: list[str], columns) -> list[int]:
    values = []
    for column, cell in zip(columns, cells):
        try:
            v = int(cell)
        except ValueError:
            raise ModelError(f"{path}:{lineno}: layer {name!r}: {column} must be an integer, "
                             f"not {cell!r}") from None
        if v < 1:
            raise ModelError(f"{path}:{lineno}: layer {name!r}: {column} must be at least 1, not {v}")
        values.append(v)
    return values


def read_topology(path: str | Path) -> list[TopologyLayer]:
    """The layers of a SCALE-Sim topology CSV (convolution or GEMM format, see the module
    docstring). A :class:`ModelError` naming the file, the line and the column for anything
    unreadable."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the topology file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a text (CSV) topology file") from None
    lines = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(text.splitlines()), 1)]
    lines = [(i, [c for c in row if c != ""] if row and row[-1] == "" else row)
             for i, row in lines if any(row)]
    if not lines:
        raise ModelError(f"{path}: empty topology file")
    lineno, header = lines[0]
    gemm = [h.upper() for h in header[1:4]] == ["M", "N", "K"]
    want = 4 if gemm else 8
    layers = []
    for lineno, row in lines[1:]:
        name = row[0]
        if len(row) < want:
            raise ModelError(f"{path}:{lineno}: layer {name!r}: expected {want} columns "
                             f"({'Layer, M, N, K' if gemm else 'Layer name, ' + ', '.join(_CONV_COLUMNS)}),"
                             f" got {len(row)}")
        if gemm:
            m, n, k = _ints(path, lineno, name, row[1:4], ("M", "N", "K"))
            layer = TopologyLayer(name, 1, m, 1, 1, k, n, 1)
        else:
            layer = TopologyLayer(name, *_ints(path, lineno, name, row[1:8], _CONV_COLUMNS))
            if layer.filter_h > layer.ifmap_h or layer.filter_w > layer.ifmap_w:
                raise ModelError(f"{path}:{lineno}: layer {name!r}: the filter "
                                 f"({layer.filter_h}x{layer.filter_w}) is larger than the ifmap "
                                 f"({layer.ifmap_h}x{layer.ifmap_w})")
        layers.append(layer)
    if not layers:
        raise ModelError(f"{path}: no layers (a header line and then one line per layer)")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ModelError(f"{path}: layer name {dup!r} appears twice")
    return layers


def topology_graphs(path: str | Path, seed: int = 0) -> list[Graph]:
    """One single-layer graph per line of the topology CSV ``path``: NHWC input
    ``[N, H, W, C]``, a convolution named after the layer with He-normal lazy weights from
    ``seed`` (as :mod:`celosia.sw.zoo`), no padding, no activation."""
    graphs = []
    for i, layer in enumerate(read_topology(path)):
        g = Graph(layer.name)
        g.add_input("input", (None, layer.ifmap_h, layer.ifmap_w, layer.channels))
        g.meta.update(layout="NHWC", topology=str(path))
        fan_in = layer.filter_h * layer.filter_w * layer.channels
        w = g.add_const(f"{layer.name}.weight",
                        shape=(layer.filters, layer.filter_h, layer.filter_w, layer.channels),
                        init=LazyInit((seed, i, 1), (2.0 / fan_in) ** 0.5)).name
        b = g.add_const(f"{layer.name}.bias", shape=(layer.filters,),
                        init=LazyInit((seed, i, 2), 0.01)).name
        g.add_node("conv", layer.name, ["input", w, b], [f"{layer.name}.out"],
                   stride=(layer.stride, layer.stride), pads=(0, 0, 0, 0), groups=1,
                   dilation=(1, 1), activation=None)
        g.add_output(f"{layer.name}.out")
        g.validate()
        graphs.append(g)
    return graphs


def _even(n: int) -> int:
    return max(2, n - n % 2)


def read_scalesim_cfg(path: str | Path) -> dict:
    """The AccelConfig fields (``rows``, ``cols``, ``dataflow`` and the buffer and bus
    fields it sets) of a SCALE-Sim ``.cfg`` file; the mapping is in the module docstring.
    A :class:`ConfigError` naming the file and the key for anything unreadable."""
    parser = configparser.ConfigParser(delimiters=(":", "="), inline_comment_prefixes=("#", ";"))
    parser.optionxform = str.lower
    try:
        parser.read_string(Path(path).read_text(), source=str(path))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the SCALE-Sim config ({e.strerror})") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a SCALE-Sim config file ({' '.join(str(e).split())})") from None
    if not parser.has_section("architecture_presets"):
        raise ConfigError(f"{path}: no [architecture_presets] section (SCALE-Sim's config format)")
    arch = parser["architecture_presets"]

    def number(key: str) -> int | None:
        if key.lower() not in arch:
            return None
        text = arch[key.lower()].strip()
        try:
            value = int(float(text))
        except ValueError:
            raise ConfigError(f"{path}: {key} must be a number, not {text!r}") from None
        if value < 1:
            raise ConfigError(f"{path}: {key} must be at least 1, not {text!r}")
        return value

    rows, cols = number("ArrayHeight"), number("ArrayWidth")
    if rows is None or cols is None:
        raise ConfigError(f"{path}: ArrayHeight and ArrayWidth are required")
    flow = arch.get("dataflow", "ws").strip().lower()
    if flow not in ("ws", "os"):
        raise ConfigError(f"{path}: Dataflow {flow!r} has no Celosia engine; use ws or os "
                          f"(Celosia also has rs and feie: --dataflow)")
    fields = {"rows": rows, "cols": cols, "dataflow": flow}
    for key, name, row_bytes in (("IfmapSramSzkB", "ifmap_rows", rows),
                                 ("FilterSramSzkB", "weight_rows", cols),
                                 ("OfmapSramSzkB", "psum_rows", 4 * cols)):
        kb = number(key)
        if kb is not None:
            fields[name] = _even(kb * 1024 // row_bytes)
    bandwidth = number("Bandwidth")
    if bandwidth is not None:
        fields["dram_bytes_per_cycle"] = bandwidth
        fields["bus_bits"] = next((b for b in BUS_WIDTHS if b // 8 >= bandwidth), max(BUS_WIDTHS))
    return fields
