"""The compiler's tiled intermediate form and the builders every lowering family shares.

A lowering (:mod:`~celosia.sw.compiler.lower_gemm`, :mod:`~celosia.sw.compiler.lower_rs`,
:mod:`~celosia.sw.compiler.lower_vec`) turns one layer into a list of :class:`Unit`\\ s:

* a :class:`Unit` is a run of output tiles sharing one block of PPU parameters in the
  parameter buffer (units are separated by barriers, :mod:`~celosia.sw.compiler.emit`);
* an :class:`OutTile` is ``m_len`` rows x up to ``cols`` channels of output: compute
  instructions accumulating into one psum tile, then one :class:`Store`;
* a compute instruction is a :class:`GemmOp` (a GEMM, plain or with a :class:`Window`
  on the rs array, with the weight and ifmap :class:`Load`\\ s that feed it) or a
  :class:`VecOp` (a VEC instruction of the vector engine, with its ifmap LOADs).

Buffer halves, rows inside the double-buffered halves and dependency tokens are
chosen at emission; the objects here hold everything else, each with the fields of
its ISA instruction (:mod:`celosia.rtl.isa`) and an ``encode`` method. Every
instruction is encoded by :func:`encode`, which turns a field out of range into an
:class:`EncodeError`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from dataclasses import dataclass, field

from celosia.rtl import isa
from celosia.errors import CompileError, EncodeError, FieldError
from celosia.rtl.config import AccelConfig, ceil_div
from celosia.rtl.dataflows import dataflow
from celosia.rtl.isa import PARAM_BYTES, BaseReg, Buffer, Opcode
from celosia.sw.quant.model import QLayer

__all__ = ["Load", "Store", "Window", "GemmOp", "VecOp", "OutTile",
           "Unit", "encode", "dep_flags", "dep_bits", "load", "merge_loads", "window_load", "raw_rows_load", "store", "conv_attrs", "conv_blocks",
           "window_lines", "subtracts_zero_point", "param_chunks", "split_units"]


def encode(op: Opcode, **fields) -> int:
    """:func:`celosia.rtl.isa.encode`, with a field out of range as an :class:`EncodeError`."""
    try:
        return isa.encode(op, **fields)
    except FieldError as e:
        raise EncodeError(str(e)) from e


def dep_flags(pop_prev=False, pop_next=False, push_prev=False, push_next=False) -> dict:
    """The ``dep`` field (:data:`~celosia.rtl.isa.DepFlags`) of an instruction."""
    return {"pop_prev": int(pop_prev), "pop_next": int(pop_next),
            "push_prev": int(push_prev), "push_next": int(push_next)}


_DEP_BIT = {name: 1 << f.offset for name, f in isa.DepFlags}


def dep_bits(pop_prev=False, pop_next=False, push_prev=False, push_next=False) -> int:
    """:func:`dep_flags` as the packed ``dep`` field (what the ``encode`` methods take too)."""
    b = _DEP_BIT
    return ((b["pop_prev"] if pop_prev else 0) | (b["pop_next"] if pop_next else 0)
            | (b["push_prev"] if push_prev else 0) | (b["push_next"] if push_next else 0))


def _packer(op: Opcode, layout, *names: str):
    """``f(*values) -> int``: the instruction ``op`` (of ``layout``) with ``names`` set to
    ``values`` (the others 0): :func:`celosia.rtl.isa.packer` plus the opcode; a field out
    of range is an :class:`EncodeError` (as :func:`encode`). For the encoders the compiler
    calls per instruction."""
    pack, opcode = isa.packer(layout, names), isa.encode(op)

    def encoded(*values):
        try:
            return pack(*values) | opcode
        except FieldError as e:
            raise EncodeError(str(e)) from e
    return encoded


# -- instructions ---------------------------------------------------------------------------

@dataclass
class Load:
    """A LOAD (:data:`~celosia.rtl.isa.LoadInsn`) without its buffer, buffer half and ``dep``.

    ``buf_row`` is relative to the buffer half (or block) the emission puts it in.
    """
    base_reg: int
    dram_offset: int
    n0: int
    dram_stride0: int = 1
    lane0: int = 0
    n1: int = 1
    dram_stride1: int = 0
    buf_stride1: int = 0
    n2: int = 1
    dram_stride2: int = 0
    buf_stride2: int = 0
    buf_row: int = 0
    pad_en: int = 0
    pad_lo1: int = 0
    pad_hi1: int = 0
    pad_lo2: int = 0
    pad_hi2: int = 0
    pad_value: int = 0

    def split(self, pieces: int) -> list[Load]:
        """The same transfer as up to ``pieces`` LOADs of consecutive ranges of the outer
        index (``n2``), in order, each with its part of the padding; together they write
        what this LOAD writes (e.g. an ifmap tile loaded ahead a few input rows at a time
        between the weight LOADs, so the in-order LOAD queue never stalls on one long LOAD)."""
        pieces = max(1, min(pieces, self.n2))
        out = []
        for k in range(pieces):
            a, b = k * self.n2 // pieces, (k + 1) * self.n2 // pieces
            lo2, hi2 = (min(max(x - a, 0), b - a) for x in (self.pad_lo2, self.pad_hi2))
            pad = bool(self.pad_en) and (self.pad_lo1 > 0 or self.pad_hi1 < self.n1
                                         or lo2 > 0 or hi2 < b - a)
            out.append(dataclasses.replace(
                self, dram_offset=self.dram_offset + a * self.dram_stride2, n2=b - a,
                buf_row=self.buf_row + a * self.buf_stride2, pad_en=int(pad),
                pad_lo2=lo2 if pad else 0, pad_hi2=hi2 if pad else 0,
                pad_lo1=self.pad_lo1 if pad else 0, pad_hi1=self.pad_hi1 if pad else 0))
        return out

    def encode(self, buf: Buffer, row_base: int, dep: dict | int) -> int:
        """The instruction word: into ``buf`` at row ``row_base + buf_row``."""
        return _LOAD(buf, dep, self.base_reg, self.dram_offset, self.n0, self.dram_stride0, self.lane0,
                     self.n1, self.dram_stride1, self.buf_stride1, self.n2, self.dram_stride2,
                     self.buf_stride2, row_base + self.buf_row, self.pad_en, self.pad_lo1, self.pad_hi1,
                     self.pad_lo2, self.pad_hi2, self.pad_value)


_LOAD = _packer(Opcode.LOAD, isa.LoadInsn, "buf", "dep", *(f.name for f in dataclasses.fields(Load)))


@dataclass
class Store:
    """A STORE (:data:`~celosia.rtl.isa.StoreInsn`) without its psum / parameter rows,
    ``m_len`` and ``dep``: where the tile goes (DRAM, or with ``to_buf`` ifmap rows
    ``buf_row + m*buf_stride`` from lane ``lane0``) and the layer's output quantization.
    ``runs > 1``: the tile's rows go out in ``runs`` STOREs, run ``r`` from psum row
    ``r*run_pitch`` of the tile (``run_pitch`` 0: ``m_len / runs``), ``run_len`` rows
    (``None``: the pitch), to ``dram_offset + r*run_stride`` (a block of output rows
    narrower than the feature map) or with ``to_buf`` to ifmap row ``buf_row +
    r*run_stride`` (an output map written into a consumer's padded input rows, each
    output row's end skipping the padding columns, rows past what it reads left out:
    :mod:`~celosia.sw.compiler.keep`)."""
    base_reg: int
    dram_offset: int
    dram_stride: int
    n_len: int
    out_zp: int
    act_min: int
    act_max: int
    to_buf: int = 0              # 1: to the ifmap buffer (kept on chip), at the rows / lanes below
    single_round: int = 0        # 1: the layer's rounding is "single" (QLayer.rounding)
    buf_row: int = 0
    buf_stride: int = 0
    lane0: int = 0
    runs: int = 1
    run_stride: int = 0
    run_pitch: int = 0
    run_len: int | None = None

    def run_rows(self, m_len: int) -> tuple[int, int]:
        """``(pitch, rows)`` of the runs of a tile of ``m_len`` rows: run ``r`` stores psum
        rows ``r*pitch .. r*pitch + rows - 1`` of the tile."""
        pitch = self.run_pitch or m_len // self.runs
        return pitch, pitch if self.run_len is None else self.run_len

    def encode(self, psum_row: int, param_row: int, m_len: int, dep: dict | int, run: int = 0) -> int:
        """The STORE of run ``run`` (its ``psum_row`` / ``m_len``)."""
        step = run * self.run_stride
        return _STORE(psum_row, param_row, m_len, dep, self.base_reg,
                      self.dram_offset + (0 if self.to_buf else step), self.dram_stride, self.n_len,
                      self.out_zp, self.act_min, self.act_max, self.to_buf, self.single_round,
                      self.buf_row + (step if self.to_buf else 0), self.buf_stride, self.lane0)


_STORE = _packer(Opcode.STORE, isa.StoreInsn, "psum_row", "param_row", "m_len", "dep",
                 *(f.name for f in dataclasses.fields(Store) if not f.name.startswith("run")))


@dataclass
class Window:
    """The windowed-GEMM fields of a :class:`GemmOp` (``window = 1``): any window on the rs
    array, one kernel tap (``win_h = win_w = 1``) on ws, os and feie."""
    win_h: int
    win_w: int
    stride_h: int
    stride_w: int
    dil_h: int
    dil_w: int
    out_h: int
    out_w: int
    row_pitch: int = 0


@dataclass
class GemmOp:
    """One GEMM instruction (:data:`~celosia.rtl.isa.GemmInsn`) of an output tile with the
    LOADs that feed it: its weight tile and (streamed ifmap) its ifmap tile.

    In a unit that is not resident, consecutive GEMMs of one output tile with the same
    ``ifmap_group`` (not ``None``) share one ifmap tile: the first of them carries its LOADs
    (``ifmap``), the others none, and ``ifmap_row`` is each one's row inside it (emission puts
    the group in one buffer half); with ``ifmap_group = None`` every GEMM loads its own tile
    and ``ifmap_row`` is ignored.

    ``m_skip`` / ``m_rows``: the GEMM covers only psum rows ``m_skip .. m_skip + m_rows - 1``
    of its tile (``m_rows = None``: all from ``m_skip``; e.g. a conv's kernel-row GEMM
    leaving out the output rows whose input row is padding, :mod:`~celosia.sw.compiler.lower_gemm`).
    A tile's first GEMM (``accumulate = 0``) must cover the whole tile."""
    k_len: int
    n_len: int
    weight: list[Load]
    ifmap: list[Load] = field(default_factory=list)  # streamed mode: LOADs of its ifmap tile
    ifmap_row: int = 0           # resident mode / ifmap group: its first row in the block / group
    window: Window | None = None  # windowed GEMM
    ifmap_group: int | None = None  # streamed mode: GEMMs sharing one ifmap tile
    m_skip: int = 0              # its first psum row in the tile
    m_rows: int | None = None    # its psum rows (None: the tile's m_len - m_skip)

    def encode(self, *, accumulate: int, ifmap_row: int, weight_row: int, psum_row: int, m_len: int,
               dep: dict | int, in_zp: int) -> int:
        w = self.window
        if w is None:
            return _GEMM(accumulate, ifmap_row, weight_row, psum_row, m_len, self.k_len, self.n_len, dep,
                         in_zp)
        return _GEMM_WINDOW(accumulate, ifmap_row, weight_row, psum_row, m_len, self.k_len, self.n_len,
                            dep, in_zp, 1, w.win_h, w.win_w, w.stride_h, w.stride_w, w.dil_h, w.dil_w,
                            w.out_h, w.out_w, w.row_pitch)


_GEMM_FIELDS = ("accumulate", "ifmap_row", "weight_row", "psum_row", "m_len", "k_len", "n_len", "dep", "in_zp")
_GEMM = _packer(Opcode.GEMM, isa.GemmInsn, *_GEMM_FIELDS)
_GEMM_WINDOW = _packer(Opcode.GEMM, isa.GemmInsn, *_GEMM_FIELDS, "window",
                       *(f.name for f in dataclasses.fields(Window)))


@dataclass
class VecOp:
    """One VEC instruction (:data:`~celosia.rtl.isa.VecInsn`: pooling, residual add) with
    the LOADs of its ifmap rows; the ``add`` fields are 0 for the other modes."""
    mode: isa.VecMode
    win: int
    lanes: int
    in_zp: int
    ifmap: list[Load] = field(default_factory=list)
    b_zp: int = 0
    a_m0: int = 0
    a_shift: int = 0
    b_m0: int = 0
    b_shift: int = 0
    left_shift: int = 0

    def encode(self, *, ifmap_row: int, psum_row: int, m_len: int, dep: dict) -> int:
        fields = {k: v for k, v in self.__dict__.items() if v and k != "ifmap"}   # a field left out is 0
        return encode(Opcode.VEC, ifmap_row=ifmap_row, psum_row=psum_row, m_len=m_len, dep=dep, **fields)


@dataclass
class OutTile:
    """``m_len`` rows x ``n_len`` channels of output: compute instructions accumulating,
    then one STORE.

    Consecutive tiles of a unit with the same ``psum_block`` (not ``None``) are one *psum
    block*: they lie side by side in one psum buffer half (their ``m_len`` rows summed must
    fit it) and their GEMMs are emitted interleaved, ifmap group by ifmap group
    (``GemmOp.ifmap_group``): each group's GEMMs of every tile of the block, in tile order,
    read one ifmap tile, loaded once for the block (the LOADs of the group's first GEMM in
    the block's first tile; the other tiles' copies are ignored), :mod:`~celosia.sw.compiler.emit`."""
    m_len: int
    ops: list[GemmOp | VecOp]
    store: Store
    param_row: int               # its PPU parameters' row (of `cols` channels) in the unit's block
    block: int = 0               # ifmap block id (resident mode: loaded once per block)
    block_loads: list[Load] = field(default_factory=list)  # resident mode: LOADs of the whole block
    psum_block: int | None = None  # consecutive tiles with the same id share one psum half


@dataclass
class Unit:
    """Output tiles sharing one resident parameter block; units are separated by barriers."""
    params: Load                 # the parameter block
    tiles: list[OutTile]
    resident: bool               # ifmap loaded per block (True) or per GEMM (False)
    in_zp: int = 0               # the GEMMs' in_zp (feie: the layer's input zero point)
    half: int = 0                # the ifmap half of its first ifmap group (then alternating)
    group_loads: int | None = None   # at most this many (merged) LOADs per weight group


# -- builders -------------------------------------------------------------------------------

def load(base_reg, offset, n0, n1=1, s1=0, bs1=0, n2=1, s2=0, bs2=0, **extra) -> Load:
    """A LOAD of ``n2 x n1`` runs of ``n0`` bytes: DRAM strides ``s1``, ``s2``, buffer row
    strides ``bs1``, ``bs2`` (``extra``: further :class:`Load` fields)."""
    return Load(base_reg=base_reg, dram_offset=offset, n0=n0, n1=n1, dram_stride1=s1, buf_stride1=bs1,
                n2=n2, dram_stride2=s2, buf_stride2=bs2, **extra)


def merge_loads(loads: list[Load]) -> list[Load]:
    """The same transfers in fewer LOADs: each run of consecutive LOADs of one run of runs
    (``n2 = 1``, no padding) that differ only in ``dram_offset`` and ``buf_row``, both
    growing by the same positive steps, becomes one LOAD with ``n2`` = the run's length
    (``dram_stride2`` / ``buf_stride2`` = the steps, within their ISA fields). E.g. the
    weight tiles of a weight group (:mod:`~celosia.sw.compiler.emit`): a conv's kernel taps,
    an fc layer's k tiles of one output tile."""
    fits = _merge_fits()
    max_n2, max_s2, max_b2 = fits["n2"], fits["dram_stride2"], fits["buf_stride2"]
    out: list[Load] = []
    i, n = 0, len(loads)
    while i < n:   # a run from loads[i]: its step is its second LOAD's, all the others follow it
        first = loads[i]
        i += 1
        if first.n2 != 1 or first.pad_en:
            out.append(first)
            continue
        count = 1
        if i < n:
            ds = loads[i].dram_offset - first.dram_offset
            db = loads[i].buf_row - first.buf_row
            if 0 < ds <= max_s2 and 0 < db <= max_b2:
                shape = _LOAD_SHAPE(first.__dict__)   # every field but the two that progress
                while (i < n and count < max_n2 and loads[i].n2 == 1 and not loads[i].pad_en
                       and loads[i].dram_offset == first.dram_offset + count * ds
                       and loads[i].buf_row == first.buf_row + count * db
                       and _LOAD_SHAPE(loads[i].__dict__) == shape):
                    count += 1
                    i += 1
        if count == 1:
            out.append(first)
        else:   # dataclasses.replace, without its generic protocol
            merged = object.__new__(Load)
            merged.__dict__.update(first.__dict__, n2=count, dram_stride2=ds, buf_stride2=db)
            out.append(merged)
    return out


_LOAD_SHAPE = operator.itemgetter(*(f.name for f in dataclasses.fields(Load)
                                    if f.name not in ("dram_offset", "buf_row")))


@functools.cache
def _merge_fits() -> dict[str, int]:
    """The LOAD fields :func:`merge_loads` fills, and their largest values."""
    return {f: isa.field_max(isa.LoadInsn, f) for f in ("n2", "dram_stride2", "buf_stride2")}


def window_load(src, shape, img, c_off, lanes, y0, x0, ny, nx, sy=1, sx=1, bs1=1, bs2=None,
                buf_row=0, pad_value=0) -> Load:
    """The LOAD of an ``ny x nx`` grid of pixels of the NHWC map ``shape = (H, W, C)`` at
    ``src = (base_reg, offset)``: pixel ``(y0 + i*sy, x0 + j*sx)`` of image ``img``, ``lanes``
    channels from ``c_off``, into buffer row ``buf_row + j*bs1 + i*bs2`` (``bs2`` defaults to
    ``nx*bs1``). Pixels outside the map (padding) are written as ``pad_value``."""
    H, W, C = shape
    lo1, lo2 = max(0, ceil_div(-x0, sx)), max(0, ceil_div(-y0, sy))
    hi1, hi2 = min(nx, max(lo1, ceil_div(W - x0, sx))), min(ny, max(lo2, ceil_div(H - y0, sy)))
    padded = lo1 > 0 or hi1 < nx or lo2 > 0 or hi2 < ny
    offset = src[1] + img * H * W * C + (y0 * W + x0) * C + c_off
    return load(src[0], offset, lanes, n1=nx, s1=sx * C, bs1=bs1, n2=ny, s2=sy * W * C,
                bs2=nx * bs1 if bs2 is None else bs2, buf_row=buf_row, pad_en=int(padded),
                pad_lo1=lo1, pad_hi1=hi1, pad_lo2=lo2, pad_hi2=hi2, pad_value=pad_value)


def raw_rows_load(layer: QLayer, src, c_abs, lanes, img, y0, ny, x0, nx, buf_row=0) -> Load:
    """The LOAD of raw input rows of the conv (or pooling) ``layer`` for windowed GEMMs:
    ``ny`` input rows x ``nx`` columns from ``(y0, x0)`` (which may lie in the padding,
    written as the input zero point) of image ``img`` of the NHWC input at ``src =
    (base_reg, offset)``, ``lanes`` channels from ``c_abs``, one buffer row per pixel and
    ``nx`` rows per input row (the GEMMs' ``row_pitch``), from ``buf_row``."""
    return window_load(src, layer.in_shape, img, c_abs, lanes, y0, x0, ny, nx, buf_row=buf_row,
                       pad_value=int(layer.in_zp))


def store(layer: QLayer, dst, offset: int, stride: int, n_len: int) -> Store:
    """The STORE of an output tile of ``layer``: row ``m`` to ``dst + offset + m*stride``,
    ``n_len`` channels, the layer's requantization."""
    return Store(base_reg=dst[0], dram_offset=dst[1] + offset, dram_stride=stride, n_len=n_len,
                 out_zp=int(layer.out_zp), act_min=int(layer.act_min), act_max=int(layer.act_max),
                 single_round=int(layer.rounding == "single"))


def window_lines(out: int, taps: int, stride: int, dil: int) -> int:
    """Input rows (or columns) that ``out`` outputs of a ``taps``-tap window touch."""
    return (out - 1) * stride + (taps - 1) * dil + 1


def conv_attrs(layer: QLayer) -> tuple:
    """``(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups)`` of a conv layer."""
    a = layer.attrs
    sh, sw = a.get("stride", (1, 1))
    pt, pl, _, _ = a.get("pads", (0, 0, 0, 0))
    dh, dw = a.get("dilation", (1, 1))
    return sh, sw, pt, pl, dh, dw, int(a.get("groups", 1))


def conv_blocks(batch: int, groups: int, out_h: int, out_w: int, hb: int, wb: int):
    """The output blocks of a conv layer in lowering order: ``(image, group, first output
    row, rows, first output column, columns)``, at most ``hb`` output rows x ``wb`` columns
    each (the last ones in a row partial). Row blocks have ``hb`` rows and the last the
    rest, unless the rest is under ``hb / 2``: then the ``ceil(out_h / hb)`` blocks share
    the rows evenly (``hb`` and ``hb - 1``, the larger first: 28 rows at ``hb = 3`` are 8
    blocks of 3 and 2 of 2, not 9 of 3 and 1 of 1), so that no block is left with GEMMs
    too short to hide the loads of their weights (the layer's last block, whose loads
    nothing else overlaps). A larger rest stays one block (14 rows at ``hb = 8``: 8 + 6,
    not 7 + 7; os and feie deal a GEMM's ``hb * wb`` rows to the PE rows, and 8 * 14 =
    112 fills 16 PE rows 7 times). The same input lines and weights are read either way."""
    n, rest = -(-out_h // hb), out_h % hb
    if rest and 2 * rest < hb:
        q, r = divmod(out_h, n)
        starts = [i * q + min(i, r) for i in range(n + 1)]
    else:
        starts = [min(i * hb, out_h) for i in range(n + 1)]
    for img in range(batch):
        for g in range(groups):
            for ho0, ho1 in zip(starts, starts[1:]):
                for wo0 in range(0, out_w, wb):
                    yield img, g, ho0, ho1 - ho0, wo0, min(wb, out_w - wo0)


# -- PPU parameters and units -----------------------------------------------------------------

def subtracts_zero_point(config: AccelConfig) -> bool:
    """Whether the array takes the input zero point in the GEMM (``in_zp``; feie, so that
    it can skip real zeros) instead of it being folded into the bias: the dataflow's
    ``zero_point_in_gemm`` trait (:mod:`celosia.rtl.dataflows`)."""
    return dataflow(config.dataflow).zero_point_in_gemm


def param_chunks(layer: QLayer, config: AccelConfig) -> list[tuple[int, int]]:
    """Output channels ``(first, count)`` of each PPU-parameter row, in the order the
    lowering numbers its parameter rows: fc ``cols``-wide tiles; conv the same per
    group; vector ops ``min(rows, cols)``-wide lane chunks."""
    C = config.cols
    if layer.is_gemm:
        G = int(layer.attrs.get("groups", 1))
        ng = len(layer.bias) // G
        return [(g * ng + j, min(C, ng - j)) for g in range(G) for j in range(0, ng, C)]
    L = min(config.rows, C)
    n = layer.out_shape[-1]
    return [(c0, min(L, n - c0)) for c0 in range(0, n, L)]


def split_units(tiles: list[OutTile], params_at: int, resident: bool,
                config: AccelConfig, layer: QLayer) -> list[Unit]:
    """Cut a layer's output tiles into units whose parameter rows fit one buffer half.

    ``params_at``: the layer's parameter rows in DRAM (:attr:`Allocation.params
    <celosia.sw.compiler.alloc.Allocation>`). A unit loads its rows ``lo..hi`` as
    ``(hi - lo + 1) * cols`` buffer rows of one channel each; its tiles' ``param_row``
    become relative to ``lo`` (in rows of ``cols``)."""
    C = config.cols
    half = config.param_rows // 2
    units, current, rows = [], [], []
    for tile in tiles:
        r = tile.param_row
        if r not in rows and rows and max(rows + [r]) - min(rows + [r]) + 1 > half:
            units.append((current, rows))
            current, rows = [], []
        if r not in rows:
            rows.append(r)
        current.append(tile)
    units.append((current, rows))
    result = []
    for tiles_u, rows_u in units:
        lo, hi = min(rows_u), max(rows_u)
        assert hi - lo + 1 <= half, (lo, hi, half)  # units are cut so that their span fits
        for tile in tiles_u:
            tile.param_row -= lo
        params = load(BaseReg.STATIC, params_at + lo * C * PARAM_BYTES, PARAM_BYTES,
                      n1=(hi - lo + 1) * C, s1=PARAM_BYTES, bs1=1)
        in_zp = int(layer.in_zp) if layer.is_gemm and subtracts_zero_point(config) else 0
        result.append(Unit(params=params, tiles=tiles_u, resident=resident, in_zp=in_zp))
    return result
