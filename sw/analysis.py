"""Static DRAM-traffic analysis and roofline of a compiled :class:`~celosia.sw.compiler.Program`.

Everything here is computed from the instructions themselves (decoded with
:mod:`celosia.rtl.isa`), so it counts exactly what the hardware's DRAM_RD / DRAM_WR
counters count (``rtl/dma.py``, ``rtl/controller``) for one run of the program:

* a LOAD reads ``n0 * n1 * n2`` bytes minus its padded elements (with ``pad_en``, the
  ``(i1, i2)`` outside ``[pad_lo1, pad_hi1) x [pad_lo2, pad_hi2)`` come from
  ``pad_value`` without touching DRAM); it is charged to the buffer it fills
  (ifmap, weights, PPU parameters);
* a STORE writes ``m_len * n_len`` bytes;
* instruction fetch reads 8 bytes per node descriptor (a node of more than 65535
  instructions has several) and 32 per instruction, plus the 8-byte descriptor that
  ends the table (charged to the program, not to a layer).

With the model, each layer also gets the sizes of its unique tensors (its GEMM
weights, its input feature map(s), its output, for the ``batch`` samples of a run),
so :attr:`LayerTraffic.reread_ifmap` / :attr:`~LayerTraffic.reread_weights` say how many
times each byte was read: 1.0 is the minimum, a conv block's input re-read per psum block of
output-channel tiles (when the block is not resident), the halo rows two blocks share, or a weight tile
loaded once per output tile give more.

Roofline (:func:`roofline`): peak MACs per cycle ``rows * cols``, peak DRAM bytes per
cycle ``min(bus_bits / 8, dram_bytes_per_cycle)`` (a bus word); a layer takes about no
fewer than ``ceil(MACs / peak_macs)`` (compute) nor ``ceil(bytes / peak_bytes)`` (bandwidth)
cycles. The larger is its ``bound``; where measured cycles exceed :data:`LATENCY_FACTOR`
times it, the layer is ``latency`` bound: neither resource is near its peak, the time goes to
DRAM latency, pipeline fill and dependency waits (docs/cli.md, "Roofline"). ``MACs`` are
the layer's (every kernel tap of every output, padding included, as SCALE-Sim counts
them), not the ones the array runs: a padded conv's GEMMs leave out the output rows whose
input row is padding (docs/compiler.md, "Padding rows"), so a layer may run in fewer
cycles than its compute bound (``roofline_efficiency`` and the utilization ``MACs / (PEs *
cycles)`` above 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.sim.golden.conv import conv2d_float

__all__ = ["TensorSizes", "LayerTraffic", "ProgramTraffic", "load_bytes", "store_bytes",
           "node_traffic", "tensor_sizes", "program_traffic", "peaks", "roofline",
           "layer_report", "total_report", "nonzero_macs", "LATENCY_FACTOR"]

#: Measured cycles above this many times the roofline bound make a layer ``latency`` bound.
LATENCY_FACTOR = 2.0

#: The :class:`LayerTraffic` field a LOAD into each buffer adds to.
_READ_FIELD = {isa.Buffer.IFMAP: "ifmap_read", isa.Buffer.WEIGHT: "weight_read",
               isa.Buffer.PARAM: "param_read"}


def _in_range(n: int, lo: int, hi: int) -> int:
    """How many ``i < n`` lie in ``[lo, hi)``."""
    return max(0, min(hi, n) - lo)


def load_bytes(f: dict) -> int:
    """DRAM bytes one decoded LOAD reads: ``n0 * n1 * n2`` less the padded elements."""
    n0, n1, n2 = f["n0"], f["n1"], f["n2"]
    if f["pad_en"]:
        n1 = _in_range(n1, f["pad_lo1"], f["pad_hi1"])
        n2 = _in_range(n2, f["pad_lo2"], f["pad_hi2"])
    return n0 * n1 * n2


def store_bytes(f: dict) -> int:
    """DRAM bytes one decoded STORE writes (none when it writes the ifmap buffer, ``to_buf``)."""
    return 0 if f.get("to_buf") else f["m_len"] * f["n_len"]


@dataclass(frozen=True)
class TensorSizes:
    """Unique bytes of a layer's tensors for one run: GEMM weights, input feature map(s), output."""
    weights: int
    ifmap: int
    output: int


@dataclass
class LayerTraffic:
    """DRAM bytes one node of the program moves in one run."""
    name: str
    op: str
    macs: int                       # per run
    ifmap_read: int = 0             # LOADs into the ifmap buffer
    weight_read: int = 0            # LOADs into the weight buffer
    param_read: int = 0             # LOADs into the PPU parameter buffer
    fetch_read: int = 0             # its descriptors and instructions
    written: int = 0                # STOREs
    sizes: TensorSizes | None = None

    @property
    def read(self) -> int:
        return self.ifmap_read + self.weight_read + self.param_read + self.fetch_read

    @property
    def total(self) -> int:
        return self.read + self.written

    @property
    def bytes_per_mac(self) -> float | None:
        return self.total / self.macs if self.macs else None

    @property
    def reread_ifmap(self) -> float | None:
        """Ifmap bytes read / unique ifmap bytes (1.0: each byte once)."""
        return self.ifmap_read / self.sizes.ifmap if self.sizes and self.sizes.ifmap else None

    @property
    def reread_weights(self) -> float | None:
        """Weight bytes read / unique weight bytes (``None`` for a layer without weights)."""
        return self.weight_read / self.sizes.weights if self.sizes and self.sizes.weights else None


@dataclass
class ProgramTraffic:
    """Per-node traffic of one run, and the program's totals (what DRAM_RD / DRAM_WR count)."""
    layers: list[LayerTraffic]
    batch: int = 1
    end_fetch: int = isa.DESC_BYTES   # the empty descriptor that ends the table

    @property
    def read(self) -> int:
        return sum(t.read for t in self.layers) + self.end_fetch

    @property
    def written(self) -> int:
        return sum(t.written for t in self.layers)

    @property
    def macs(self) -> int:
        return sum(t.macs for t in self.layers)

    @property
    def per_inference(self) -> float:
        """DRAM bytes (read + written) per sample."""
        return (self.read + self.written) / self.batch


def node_traffic(name: str, op: str, macs: int, insns, descriptors: int,
                 sizes: TensorSizes | None = None) -> LayerTraffic:
    """Traffic of one node: ``insns`` (256-bit words) fetched through ``descriptors`` descriptors."""
    t = LayerTraffic(name=name, op=op, macs=macs, sizes=sizes,
                     fetch_read=descriptors * isa.DESC_BYTES + len(insns) * isa.INSN_BYTES)
    for word in insns:
        op_code = word & _OP_MASK
        if op_code == isa.Opcode.LOAD.value:
            f = _fields(word, _LOAD_FIELDS)
            attr = _READ_FIELD[isa.Buffer(f["buf"])]
            setattr(t, attr, getattr(t, attr) + load_bytes(f))
        elif op_code == isa.Opcode.STORE.value:
            t.written += store_bytes(_fields(word, _STORE_FIELDS))
    return t


def _slices(layout, names) -> dict:
    """``name -> (offset, mask)`` of the (unsigned) fields ``names`` of ``layout``."""
    return {n: (dict(layout)[n].offset, isa.field_max(layout, n)) for n in names}


# Only the fields the byte counts need, straight from the layouts (``isa.decode`` of every
# field takes most of the time on programs of 10^5 instructions).
_OP_MASK = isa.field_max(isa.Header, "op")
assert dict(isa.Header)["op"].offset == 0
_LOAD_FIELDS = _slices(isa.LoadInsn, ("buf", "pad_en", "n0", "n1", "n2", "pad_lo1", "pad_hi1",
                                      "pad_lo2", "pad_hi2"))
_STORE_FIELDS = _slices(isa.StoreInsn, ("m_len", "n_len", "to_buf"))


def _fields(word: int, slices: dict) -> dict:
    return {n: (word >> off) & mask for n, (off, mask) in slices.items()}


def tensor_sizes(model, batch: int) -> list[TensorSizes]:
    """Unique tensor bytes of each layer of a :class:`~celosia.sw.quant.QModel` for ``batch``
    samples: int8 GEMM weights, the input feature map(s) it reads, its output."""
    features = {model.INPUT: model.in_features}
    out = []
    for i, layer in enumerate(model.layers):
        ifmap = sum(features[name] for name in model.layer_inputs(i))
        out.append(TensorSizes(weights=int(layer.gemm_weights().size), ifmap=batch * ifmap,
                               output=batch * layer.out_features))
        features[layer.output] = layer.out_features
    return out


def program_traffic(program, model=None) -> ProgramTraffic:
    """Traffic of one run of ``program``; with its ``model`` (the QModel it was compiled
    from) the layers also get their tensor sizes (for the re-read factors)."""
    sizes = tensor_sizes(model, program.batch) if model is not None else [None] * len(program.nodes)
    layers = []
    for node, size in zip(program.nodes, sizes):
        descriptors = len(program.descriptor_counts(node))
        layers.append(node_traffic(node.name, node.op, node.macs, node.insns, descriptors, size))
    return ProgramTraffic(layers=layers, batch=program.batch)


def peaks(config: AccelConfig) -> tuple[int, int]:
    """``(peak MACs per cycle, peak DRAM bytes per cycle)`` of ``config``."""
    return config.rows * config.cols, min(config.bus_bytes, config.dram_bytes_per_cycle)



def nonzero_macs(layer, x: np.ndarray) -> int:
    """The MACs of GEMM layer ``layer`` (``fc`` / ``conv``, a
    :class:`~celosia.sw.quant.QLayer`) on its int8 input ``x`` (``[samples, ...]``) whose
    input operand is not the layer's input zero point ``in_zp``: what an engine that skips
    zero inputs must still multiply. A conv's padding is the zero point (it contributes
    nothing); each non-zero input of a conv counts once per kernel tap that reads it into
    an output and per output channel of its group. 0 for the other ops (they have no MACs)."""
    n = len(x)
    if layer.op == "fc":
        return int(np.count_nonzero(x.reshape(n, -1) != layer.in_zp)) * int(layer.w.shape[1])
    if layer.op != "conv":
        return 0
    a = layer.attrs
    groups = a.get("groups", 1)
    cout, fh, fw, cin_g = layer.w.shape
    mask = (x.reshape(n, *layer.in_shape) != layer.in_zp).astype(np.float64)
    # one output channel per group, every weight 1: each output counts its group's
    # non-zero taps x channels
    count = conv2d_float(mask, np.ones((groups, fh, fw, cin_g)), stride=a.get("stride", (1, 1)),
                         padding=a.get("pads", (0, 0, 0, 0)), groups=groups,
                         dilation=a.get("dilation", (1, 1)))
    return int(round(count.sum())) * (cout // groups)


def roofline(macs: int, nbytes: int, peak_macs: int, peak_bytes: int,
             measured: int | None = None, effective_macs: int | None = None) -> dict:
    """The roofline of ``macs`` MACs moving ``nbytes`` DRAM bytes.

    ``compute_bound_cycles = ceil(macs / peak_macs)`` (``ceil(effective_macs / peak_macs)``
    where the engine skips zero inputs and the data's non-zero MACs are given:
    :func:`nonzero_macs`), ``bandwidth_bound_cycles = ceil(nbytes / peak_bytes)``; ``bound_cycles`` is the larger and ``bound`` its name (``compute`` on a
    tie), or ``latency`` where ``measured`` cycles exceed :data:`LATENCY_FACTOR` x
    ``bound_cycles``. ``roofline_efficiency = bound_cycles / measured`` (``None`` without a
    measurement; above 1 where the array skips MACs that ``macs`` counts, e.g. a conv's
    padding rows)."""
    compute = ceil_div(macs if effective_macs is None else effective_macs, peak_macs)
    bandwidth = ceil_div(nbytes, peak_bytes)
    bound_cycles = max(compute, bandwidth)
    bound = "compute" if compute >= bandwidth else "bandwidth"
    if measured is not None and measured > LATENCY_FACTOR * bound_cycles:
        bound = "latency"
    return {"effective_macs": effective_macs,
            "compute_bound_cycles": compute, "bandwidth_bound_cycles": bandwidth, "bound": bound,
            "bound_cycles": bound_cycles,
            "roofline_efficiency": bound_cycles / measured if measured else None}


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _rounded(roof: dict) -> dict:
    return {**roof, "roofline_efficiency": _ratio(roof["roofline_efficiency"])}


def layer_report(t: LayerTraffic, config: AccelConfig, measured: int | None = None,
                 effective_macs: int | None = None) -> dict:
    """The report fields of one layer (one run): traffic, re-read factors and roofline
    (``effective_macs``: :func:`roofline`'s)."""
    pm, pb = peaks(config)
    return {"macs_per_run": t.macs, "dram_read_bytes": t.read, "dram_write_bytes": t.written,
            "dram_ifmap_bytes": t.ifmap_read, "dram_weight_bytes": t.weight_read,
            "dram_param_bytes": t.param_read, "dram_fetch_bytes": t.fetch_read,
            "dram_bytes_per_mac": _ratio(t.bytes_per_mac),
            "reread": {"ifmap": _ratio(t.reread_ifmap), "weights": _ratio(t.reread_weights)},
            **_rounded(roofline(t.macs, t.total, pm, pb, measured, effective_macs))}


def total_report(traffic: ProgramTraffic, config: AccelConfig, measured: int | None = None,
                 effective_macs: int | None = None) -> dict:
    """The report's ``roofline`` object: the program's traffic for one run, per inference,
    the peaks and the whole run's roofline (``effective_macs``: :func:`roofline`'s). The re-read factors are over all layers:
    ifmap (weight) bytes read / the sum of the layers' unique ifmap (weight) bytes."""
    pm, pb = peaks(config)
    layers = traffic.layers
    sized = all(t.sizes is not None for t in layers)
    ifmap = sum(t.sizes.ifmap for t in layers) if sized else 0
    weights = sum(t.sizes.weights for t in layers) if sized else 0
    ifmap_read = sum(t.ifmap_read for t in layers)
    weight_read = sum(t.weight_read for t in layers)
    total = traffic.read + traffic.written
    return {"peak_macs_per_cycle": pm, "peak_bytes_per_cycle": pb, "batch": traffic.batch,
            "macs_per_run": traffic.macs,
            "dram_read_bytes": traffic.read, "dram_write_bytes": traffic.written,
            "dram_ifmap_bytes": ifmap_read, "dram_weight_bytes": weight_read,
            "dram_param_bytes": sum(t.param_read for t in layers),
            "dram_fetch_bytes": sum(t.fetch_read for t in layers) + traffic.end_fetch,
            "dram_bytes_per_inference": _ratio(traffic.per_inference),
            "dram_bytes_per_mac": _ratio(total / traffic.macs) if traffic.macs else None,
            "reread": {"ifmap": _ratio(ifmap_read / ifmap) if ifmap else None,
                       "weights": _ratio(weight_read / weights) if weights else None},
            **_rounded(roofline(traffic.macs, total, pm, pb, measured, effective_macs)),
            "cycles": measured}
