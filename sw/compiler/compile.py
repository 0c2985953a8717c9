"""Compile a :class:`~celosia.sw.quant.QModel` into a :class:`Program` for one config.

Passes, each a named function:

1. :func:`allocate` — static data (GEMM weights, PPU parameters) and DRAM slots
   for every feature map (liveness: a slot is reused once its last reader ran).
2. :func:`lower_fc` / :func:`lower_conv` — map a layer onto the plain-GEMM arrays
   (ws, os, feie) as a list of :class:`Unit`\\ s of output tiles, each a sequence of
   GEMMs with the LOADs that feed them (convolution by im2col addressing in the DMA,
   padding inserted on load); the row-stationary array has its own lowering,
   :mod:`celosia.sw.compiler.lower_rs`.
3. :func:`emit_unit` — instructions with dependency tokens (double buffering).

Data layouts in DRAM: activations int8 NHWC (a fully connected layer's
``[features]`` is a 1x1xC map); GEMM weights int8 ``[K, N]`` row-major (conv:
``K = (fh, fw, cin)`` per group); PPU parameters 9 bytes per output channel
(bias int32 LE with the input zero point folded in -- except for feie, whose GEMMs
subtract it, ``in_zp`` -- M0 int32 LE, shift int8).

Token protocol (VTA-style; counts balance and every pop refers to an earlier
push in program order, so an in-order fetch never deadlocks), per unit:

* load group ``t`` (the LOADs feeding GEMM ``t``) pushes ``l2c``; GEMM ``t`` pops it;
* GEMM ``t`` pushes ``c2l`` when group ``t+2`` exists (it overwrites the weight
  and ifmap halves GEMM ``t`` read); that group pops it;
* the last GEMM of output tile ``u`` pushes ``c2s``; STORE ``u`` pops it;
* STORE ``u`` pushes ``s2c`` when tile ``u+2`` exists (same psum half); the first
  GEMM of tile ``u+2`` pops it;
* between units (layers, or parts of a layer whose PPU parameters do not fit one
  parameter-buffer half), a NOP on the compute queue pops ``s2c`` from the last
  STORE and pushes ``c2l``, which the next unit's first LOAD pops: a barrier,
  since the next unit may read what the stores wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from celosia.errors import CompileError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import PARAM_BYTES
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sw.compiler.program import NodeCode, Program, align
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["compile_model", "CompileError", "Unit", "OutTile", "Gemm", "lower_fc", "lower_conv", "lower_vec",
           "emit_unit", "allocate", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("fc", "conv", "maxpool", "avgpool", "gap", "add")


# -- the tiled-GEMM intermediate form -----------------------------------------------------

@dataclass
class Gemm:
    """One compute instruction: a GEMM (weight tile x ``m_len`` ifmap rows into a psum tile)
    or, with ``vec`` set, a VEC instruction of the vector engine (pooling, add)."""
    k_len: int
    n_len: int
    weight: dict | None          # LOAD fields (without buf, buf_row, dep); None for VEC
    ifmap: list = field(default_factory=list)  # LOADs of its ifmap tile (non-resident mode)
    ifmap_row: int = 0           # row of its ifmap tile inside the block (resident mode)
    vec: dict | None = None      # VEC fields (without ifmap_row, psum_row, m_len, dep)
    window: dict | None = None   # windowed-GEMM fields (rs): win_h .. out_h; ``weight`` a list of LOADs


@dataclass
class OutTile:
    """``m_len`` rows x ``n_len`` channels of output: GEMMs accumulating, then one STORE."""
    m_len: int
    gemms: list[Gemm]
    store: dict                  # STORE fields (without psum_row, param_row, dep)
    param_row: int               # its PPU parameters' row (of `cols` channels) in the unit's block
    block: int = 0               # ifmap block id (resident mode: loaded once per block)
    block_loads: list = field(default_factory=list)  # resident mode: LOADs of the whole block


@dataclass
class Unit:
    """Output tiles sharing one resident parameter block; units are separated by barriers."""
    params: dict                 # LOAD fields of the parameter block
    tiles: list[OutTile]
    resident: bool               # ifmap loaded per block (True) or per GEMM (False)
    in_zp: int = 0               # the GEMMs' in_zp (feie: the layer's input zero point)


def _dep(pop_prev=False, pop_next=False, push_prev=False, push_next=False) -> dict:
    return {"pop_prev": int(pop_prev), "pop_next": int(pop_next),
            "push_prev": int(push_prev), "push_next": int(push_next)}


def _load(buf, base_reg, offset, n0, n1=1, s1=0, bs1=0, n2=1, s2=0, bs2=0, s0=1, **extra) -> dict:
    return dict(buf=buf, base_reg=base_reg, dram_offset=offset, n0=n0, dram_stride0=s0, lane0=0,
                n1=n1, dram_stride1=s1, buf_stride1=bs1, n2=n2, dram_stride2=s2, buf_stride2=bs2,
                **extra)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _window_load(src, shape, img, c_off, lanes, y0, x0, ny, nx, sy=1, sx=1, bs1=1, bs2=None,
                 buf_row=0, pad_value=0) -> dict:
    """LOAD fields of an ``ny x nx`` grid of pixels of the NHWC map ``shape = (H, W, C)`` at
    ``src = (base_reg, offset)``: pixel ``(y0 + i*sy, x0 + j*sx)`` of image ``img``, ``lanes``
    channels from ``c_off``, into buffer row ``buf_row + j*bs1 + i*bs2`` (``bs2`` defaults to
    ``nx*bs1``). Pixels outside the map (padding) are written as ``pad_value``."""
    H, W, C = shape
    lo1, lo2 = max(0, _ceil_div(-x0, sx)), max(0, _ceil_div(-y0, sy))
    hi1, hi2 = min(nx, max(lo1, _ceil_div(W - x0, sx))), min(ny, max(lo2, _ceil_div(H - y0, sy)))
    padded = lo1 > 0 or hi1 < nx or lo2 > 0 or hi2 < ny
    offset = src[1] + img * H * W * C + (y0 * W + x0) * C + c_off
    return _load(None, src[0], offset, lanes, n1=nx, s1=sx * C, bs1=bs1, n2=ny, s2=sy * W * C,
                 bs2=nx * bs1 if bs2 is None else bs2, buf_row=buf_row, pad_en=int(padded),
                 pad_lo1=lo1, pad_hi1=hi1, pad_lo2=lo2, pad_hi2=hi2, pad_value=pad_value)


def _store(layer: QLayer, dst, offset: int, stride: int, n_len: int) -> dict:
    """STORE fields (without psum_row, param_row, m_len, dep) of an output tile of ``layer``:
    row ``m`` to ``dst + offset + m*stride``, ``n_len`` channels, the layer's requantization."""
    return dict(base_reg=dst[0], dram_offset=dst[1] + offset, dram_stride=stride, n_len=n_len,
                out_zp=int(layer.out_zp), act_min=int(layer.act_min), act_max=int(layer.act_max))


def conv_attrs(layer: QLayer) -> tuple:
    """``(stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups)`` of a conv layer."""
    a = layer.attrs
    sh, sw = a.get("stride", (1, 1))
    pt, pl, _, _ = a.get("pads", (0, 0, 0, 0))
    dh, dw = a.get("dilation", (1, 1))
    return sh, sw, pt, pl, dh, dw, int(a.get("groups", 1))


def emit_unit(unit: Unit, config: AccelConfig, first: bool, last: bool) -> list[int]:
    """Instructions of one unit (see the module docstring for the tokens)."""
    w_half, i_half = config.weight_rows // 2, config.ifmap_rows // 2
    p_half = config.psum_rows // 2
    gemms = [(u, g) for u, tile in enumerate(unit.tiles) for g in range(len(tile.gemms))]
    T = len(gemms)
    blocks = sorted({tile.block for tile in unit.tiles})
    block_half = {b: i % 2 for i, b in enumerate(blocks)}
    out: list[int] = []

    def load_group(t):
        u, g = gemms[t]
        tile, gemm = unit.tiles[u], unit.tiles[u].gemms[g]
        group = []
        if t == 0:
            group.append(dict(unit.params, buf=Buffer.PARAM, buf_row=0))
        if unit.resident and g == 0 and (u == 0 or unit.tiles[u - 1].block != tile.block):
            base = block_half[tile.block] * i_half
            group.extend(dict(ld, buf=Buffer.IFMAP, buf_row=base + ld["buf_row"])
                         for ld in tile.block_loads)
        if not unit.resident:
            group.extend(dict(ld, buf=Buffer.IFMAP, buf_row=(t % 2) * i_half + ld["buf_row"])
                         for ld in gemm.ifmap)
        if gemm.weight is not None:
            group.extend(dict(ld, buf=Buffer.WEIGHT, buf_row=(t % 2) * w_half + ld.get("buf_row", 0))
                         for ld in (gemm.weight if isinstance(gemm.weight, list) else [gemm.weight]))
        assert group, "every compute instruction is fed by at least one LOAD"
        for i, ld in enumerate(group):
            ld["dep"] = _dep(pop_next=(i == 0 and (t >= 2 or (t == 0 and not first))),
                             push_next=(i == len(group) - 1))
        return [isa.encode(Opcode.LOAD, **ld) for ld in group]

    def gemm(t):
        u, g = gemms[t]
        tile, gm = unit.tiles[u], unit.tiles[u].gemms[g]
        if unit.resident:
            ifmap_row = block_half[tile.block] * i_half + gm.ifmap_row
        else:
            ifmap_row = (t % 2) * i_half
        window = dict(window=1, **gm.window) if gm.window is not None else {}
        dep = _dep(pop_prev=True, pop_next=(g == 0 and u >= 2),
                   push_prev=t + 2 < T, push_next=g == len(tile.gemms) - 1)
        if gm.vec is not None:
            return isa.encode(Opcode.VEC, ifmap_row=ifmap_row, psum_row=(u % 2) * p_half,
                              m_len=tile.m_len, dep=dep, **gm.vec)
        return isa.encode(
            Opcode.GEMM, accumulate=int(g > 0), ifmap_row=ifmap_row, weight_row=(t % 2) * w_half,
            psum_row=(u % 2) * p_half, m_len=tile.m_len, k_len=gm.k_len, n_len=gm.n_len, dep=dep,
            in_zp=unit.in_zp, **window)

    def store(u):
        n_tiles = len(unit.tiles)
        return isa.encode(
            Opcode.STORE, psum_row=(u % 2) * p_half, param_row=unit.tiles[u].param_row * config.cols,
            m_len=unit.tiles[u].m_len,
            dep=_dep(pop_prev=True, push_prev=(u + 2 < n_tiles) or (u == n_tiles - 1 and not last)),
            **unit.tiles[u].store)

    out.extend(load_group(0))
    for t in range(T):
        if t + 1 < T:
            out.extend(load_group(t + 1))
        out.append(gemm(t))
        u, g = gemms[t]
        if g == len(unit.tiles[u].gemms) - 1:
            out.append(store(u))
    if not last:
        out.append(isa.encode(Opcode.NOP, dep=_dep(pop_next=True, push_prev=True)))
    return out


# -- lowering -------------------------------------------------------------------------------

def subtracts_zero_point(config: AccelConfig) -> bool:
    """Whether the array takes the input zero point in the GEMM (``in_zp``; feie, so that
    it can skip real zeros) instead of it being folded into the bias."""
    return config.dataflow == "feie"


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


def _params_blob(layer: QLayer, config: AccelConfig) -> bytes:
    """One row of ``cols`` :data:`~celosia.rtl.isa.ParamRecord`\\ s per chunk (zeros past the
    chunk's channels): bias (the input zero point folded in, except for feie:
    :func:`subtracts_zero_point`), M0, shift."""
    C = config.cols
    bias = np.asarray(layer.bias if subtracts_zero_point(config) else layer.folded_bias()).astype("<i4")
    m0 = np.asarray(layer.m0, dtype="<i4")
    shift = np.asarray(layer.shift, dtype=np.int8)
    empty = bytes(PARAM_BYTES)
    return b"".join(isa.pack_bytes(isa.ParamRecord, bias=int(bias[c0 + j]), m0=int(m0[c0 + j]),
                                   shift=int(shift[c0 + j])) if j < n else empty
                    for c0, n in param_chunks(layer, config) for j in range(C))


def _split_units(tiles: list[OutTile], params_at: int, resident: bool,
                 config: AccelConfig, layer: QLayer) -> list[Unit]:
    """Cut a layer's output tiles into units whose parameter rows fit one buffer half.

    ``params_at``: the layer's parameter rows in DRAM (:func:`_params_blob`). A unit
    loads its rows ``lo..hi`` as ``(hi - lo + 1) * cols`` buffer rows of one channel
    each; its tiles' ``param_row`` become relative to ``lo`` (in rows of ``cols``)."""
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
        params = _load(None, BaseReg.STATIC, params_at + lo * C * PARAM_BYTES, PARAM_BYTES,
                       n1=(hi - lo + 1) * C, s1=PARAM_BYTES, bs1=1)
        in_zp = int(layer.in_zp) if layer.is_gemm and subtracts_zero_point(config) else 0
        result.append(Unit(params=params, tiles=tiles_u, resident=resident, in_zp=in_zp))
    return result


def lower_fc(layer: QLayer, config: AccelConfig, batch: int, alloc: dict) -> list[Unit]:
    """A fully connected layer: ``[batch, K] x [K, N]``; the input stays resident when it fits."""
    R, C = config.rows, config.cols
    K, N = layer.w.shape
    kt, nt = math.ceil(K / R), math.ceil(N / C)
    src_reg, src_off = alloc["src"]
    _check_rows(layer, "psum_rows", batch, config, f"one output tile (batch={batch} rows)")
    resident = batch * kt <= config.ifmap_rows // 2
    if not resident:
        _check_rows(layer, "ifmap_rows", batch, config, f"one input tile (batch={batch} rows)")
    block_loads = []
    full = K // R
    if full:
        block_loads.append(_load(None, src_reg, src_off, R, n1=batch, s1=K, bs1=1,
                                 n2=full, s2=R, bs2=batch, buf_row=0))
    if K - full * R:
        block_loads.append(_load(None, src_reg, src_off + full * R, K - full * R, n1=batch, s1=K,
                                 bs1=1, buf_row=full * batch))
    tiles = []
    for j in range(nt):
        n_len = min(C, N - j * C)
        gemms = []
        for k in range(kt):
            k_len = min(R, K - k * R)
            weight = _load(None, BaseReg.STATIC, alloc["weights"] + k * R * N + j * C, n_len,
                           n1=k_len, s1=N, bs1=1)
            ifmap = [_load(None, src_reg, src_off + k * R, k_len, n1=batch, s1=K, bs1=1, buf_row=0)]
            gemms.append(Gemm(k_len=k_len, n_len=n_len, weight=weight, ifmap=ifmap,
                              ifmap_row=k * batch))
        tiles.append(OutTile(m_len=batch, gemms=gemms, store=_store(layer, alloc["dst"], j * C, N, n_len),
                             param_row=j, block=0,
                             block_loads=block_loads))

    return _split_units(tiles, alloc["params"], resident, config, layer)


def lower_conv(layer: QLayer, config: AccelConfig, batch: int, alloc: dict) -> list[Unit]:
    """A convolution as GEMMs: output pixels x (fh, fw, cin) by im2col addressing in the DMA.

    One k-tile is up to ``rows`` input channels at one kernel position; an output
    tile is ``Hb`` whole output rows of one image (``Hb * Wo`` pixels) by up to
    ``cols`` output channels of one group. Padding is inserted by the LOAD
    (``pad_value`` = input zero point, which the folded bias turns into 0).
    """
    R, C = config.rows, config.cols
    Ho, Wo, Cout = layer.out_shape
    _, Fh, Fw, cin_g = layer.w.shape
    sh, sw, pt, pl, dh, dw, G = conv_attrs(layer)
    cout_g = Cout // G
    ktiles = [(fh, fw, c0, min(R, cin_g - c0)) for fh in range(Fh) for fw in range(Fw)
              for c0 in range(0, cin_g, R)]
    nt = math.ceil(cout_g / C)
    i_half, p_half = config.ifmap_rows // 2, config.psum_rows // 2
    if Wo > min(i_half, p_half):
        raise CompileError(f"layer {layer.name!r}: an output row of {Wo} pixels does not fit a "
                           f"buffer half (ifmap_rows={config.ifmap_rows}, psum_rows="
                           f"{config.psum_rows}); increase them")
    hb_res = min(i_half // (len(ktiles) * Wo), p_half // Wo, Ho)
    resident = hb_res >= 1
    Hb = hb_res if resident else min(i_half // Wo, p_half // Wo, Ho)
    K_g = Fh * Fw * cin_g

    def ifmap_load(fh, fw, c0, k_len, img, g, ho0, hb, buf_row):
        """The im2col tile of kernel tap (fh, fw): one buffer row per output pixel."""
        return _window_load(alloc["src"], layer.in_shape, img, g * cin_g + c0, k_len,
                            ho0 * sh + fh * dh - pt, fw * dw - pl, hb, Wo, sh, sw, buf_row=buf_row,
                            pad_value=int(layer.in_zp))

    tiles = []
    block_id = 0
    for img in range(batch):
        for g in range(G):
            for ho0 in range(0, Ho, Hb):
                hb = min(Hb, Ho - ho0)
                block_loads = [ifmap_load(fh, fw, c0, kl, img, g, ho0, hb, i * hb * Wo)
                               for i, (fh, fw, c0, kl) in enumerate(ktiles)] if resident else []
                for j in range(nt):
                    n_len = min(C, cout_g - j * C)
                    gemms = []
                    for i, (fh, fw, c0, k_len) in enumerate(ktiles):
                        krow = (fh * Fw + fw) * cin_g + c0
                        weight = _load(None, BaseReg.STATIC,
                                       alloc["weights"] + g * K_g * cout_g + krow * cout_g + j * C,
                                       n_len, n1=k_len, s1=cout_g, bs1=1)
                        ifmap = [] if resident else [ifmap_load(fh, fw, c0, k_len, img, g, ho0, hb, 0)]
                        gemms.append(Gemm(k_len=k_len, n_len=n_len, weight=weight, ifmap=ifmap,
                                          ifmap_row=i * hb * Wo))
                    store = _store(layer, alloc["dst"], (img * Ho + ho0) * Wo * Cout + g * cout_g + j * C,
                                   Cout, n_len)
                    tiles.append(OutTile(m_len=hb * Wo, gemms=gemms, store=store,
                                         param_row=g * nt + j, block=block_id,
                                         block_loads=block_loads))
                block_id += 1

    return _split_units(tiles, alloc["params"], resident, config, layer)


def lower_vec(layer: QLayer, config: AccelConfig, batch: int, alloc: dict) -> list[Unit]:
    """Pooling, global average pooling and the residual add on the vector engine.

    Channels go in chunks of ``min(rows, cols)`` lanes. A pooling window's taps
    are gathered by one LOAD per tap into consecutive ifmap rows (``win`` rows per
    output pixel; padding inserted as -128 for max, as the zero point for sums);
    an add interleaves its two inputs (``win = 2``). The STORE's PPU applies the
    output multiplier per channel (identity for max pooling, ``S_in / (S_out * taps)``
    for average pooling, TFLite's output multiplier for add).
    """
    L = min(config.rows, config.cols)
    i_half, p_half = config.ifmap_rows // 2, config.psum_rows // 2
    H, W, C = layer.in_shape
    Ho, Wo, Co = layer.out_shape
    a = layer.attrs
    srcs = alloc["srcs"]
    if layer.op == "add":
        kh = kw = 1
        sh = sw = 1
        pt = pl = 0
        win = 2
    elif layer.op == "gap":
        kh, kw, sh, sw, pt, pl = H, W, 1, 1, 0, 0
        win = H * W
    else:
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl = a.get("pads", (0, 0, 0, 0))[:2]
        win = kh * kw
    if layer.op == "gap":
        rows_per_out = win
        if win > i_half:
            raise CompileError(f"layer {layer.name!r}: global pooling over {H}x{W} needs {win} ifmap "
                               f"rows per half; ifmap_rows={config.ifmap_rows}")
        hb_max = 1
    else:
        rows_per_out = win * Wo
        hb_max = min(i_half // rows_per_out if rows_per_out <= i_half else 0, p_half // Wo, Ho)
        if hb_max < 1:
            raise CompileError(f"layer {layer.name!r}: one output row ({Wo} pixels x {win} taps) "
                               f"does not fit a buffer half (ifmap_rows={config.ifmap_rows}, "
                               f"psum_rows={config.psum_rows})")
    mode = {"maxpool": isa.VecMode.MAX, "add": isa.VecMode.ADD}.get(layer.op, isa.VecMode.SUM)
    pad_value = -128 if layer.op == "maxpool" else int(layer.in_zp)

    def tap_load(src, img, c0, lanes, ho0, hb, fy, fx, j):
        """Tap (fy, fx) of every output pixel of rows ho0.. into row j of its window."""
        return _window_load(src, layer.in_shape, img, c0, lanes, ho0 * sh + fy - pt, fx - pl, hb, Wo,
                            sh, sw, bs1=win, buf_row=j, pad_value=pad_value)

    tiles = []
    for img in range(batch):
        for r, c0 in enumerate(range(0, C, L)):
            lanes = min(L, C - c0)
            vec = dict(mode=mode, win=win, lanes=lanes, in_zp=int(layer.in_zp))
            if layer.op == "add":
                vec.update(b_zp=int(a["b_zp"]), a_m0=int(a["a_m0"]), a_shift=int(a["a_shift"]),
                           b_m0=int(a["b_m0"]), b_shift=int(a["b_shift"]),
                           left_shift=int(a.get("left_shift", 20)))
            if layer.op == "gap":
                src_reg, src_off = srcs[0]
                loads = [_load(None, src_reg, src_off + img * H * W * C + c0, lanes, n1=W, s1=C,
                               bs1=1, n2=H, s2=W * C, bs2=W, buf_row=0)]
                blocks = [(0, 1, loads)]
            elif layer.op == "add":
                P = H * W
                pb = min(i_half // 2, p_half)
                blocks = []
                for p0 in range(0, P, pb):
                    n = min(pb, P - p0)
                    loads = [_load(None, src[0], src[1] + (img * P + p0) * C + c0, lanes, n1=n,
                                   s1=C, bs1=2, buf_row=j) for j, src in enumerate(srcs)]
                    blocks.append((p0, n, loads))
            else:
                blocks = []
                for ho0 in range(0, Ho, hb_max):
                    hb = min(hb_max, Ho - ho0)
                    loads = [tap_load(srcs[0], img, c0, lanes, ho0, hb, fy, fx, fy * kw + fx)
                             for fy in range(kh) for fx in range(kw)]
                    blocks.append((ho0 * Wo, hb * Wo, loads))
            for p0, m_len, loads in blocks:
                store = _store(layer, alloc["dst"], (img * Ho * Wo + p0) * Co + c0, Co, lanes)
                gemm = Gemm(k_len=0, n_len=lanes, weight=None, ifmap=loads, vec=vec)
                tiles.append(OutTile(m_len=m_len, gemms=[gemm], store=store, param_row=r))

    return _split_units(tiles, alloc["params"], False, config, layer)


def _check_rows(layer, name, rows_needed, config, what):
    half = getattr(config, name) // 2
    if rows_needed > half:
        raise CompileError(
            f"layer {layer.name!r} needs {rows_needed} rows of the {name.split('_')[0]} buffer half "
            f"for {what}, but {name}={getattr(config, name)} gives {half} per half; increase "
            f"{name} or reduce the batch")


# -- allocation -------------------------------------------------------------------------------

def allocate(model: QModel, config: AccelConfig, batch: int) -> tuple[bytes, list[dict], int]:
    """Static data and the DRAM slot of every tensor; returns (static, per-layer allocs, scratch bytes).

    Feature maps live in SCRATCH slots reused after their last reader (first
    fit); the model input is at INPUT and the last layer writes to OUTPUT.
    """
    static = bytearray()
    last_use = {}
    for i in range(len(model.layers)):
        for name in model.layer_inputs(i):
            last_use[name] = i
    where = {QModel.INPUT: (BaseReg.INPUT, 0)}
    free: list[tuple[int, int]] = []   # (offset, size) of free scratch slots
    live: dict[str, tuple[int, int]] = {}
    scratch_end = 0
    allocs = []
    for i, layer in enumerate(model.layers):
        w_off = len(static)
        gw = layer.gemm_weights()
        static += np.ascontiguousarray(gw, dtype=np.int8).tobytes()
        static += bytes(align(len(static), 8) - len(static))
        p_off = len(static)
        static += _params_blob(layer, config)
        static += bytes(align(len(static), 8) - len(static))
        srcs = [where[name] for name in model.layer_inputs(i)]
        if i == len(model.layers) - 1:
            dst = (BaseReg.OUTPUT, 0)
        else:
            size = align(batch * layer.out_features, 8)
            slot = next((f for f in free if f[1] >= size), None)
            if slot:
                free.remove(slot)
                off = slot[0]
            else:
                off, scratch_end = scratch_end, scratch_end + size
            live[layer.output] = (off, size)
            dst = (BaseReg.SCRATCH, off)
        allocs.append({"weights": w_off, "params": p_off, "src": srcs[0], "srcs": srcs, "dst": dst})
        where[layer.output] = dst
        # Free the slots of tensors whose last reader was this layer (after choosing dst:
        # a layer never writes over its own input).
        for name in model.layer_inputs(i):
            if last_use.get(name) == i and name in live:
                free.append(live.pop(name))
    return bytes(static), allocs, scratch_end


# -- driver of the passes -------------------------------------------------------------------

def _lowerings(dataflow: str) -> dict:
    """op -> lowering of the GEMM layers for ``dataflow`` (vector ops: :func:`lower_vec`)."""
    if dataflow == "rs":
        from celosia.sw.compiler.lower_rs import lower_conv_rs, lower_fc_rs
        return {"fc": lower_fc_rs, "conv": lower_conv_rs}
    return {"fc": lower_fc, "conv": lower_conv}


def _rs_mapping(layer: QLayer, units: list[Unit], config: AccelConfig) -> dict:
    """The report's ``mapping`` of a GEMM layer on the rs array: its logical PE set and
    what one GEMM of it runs on the physical array."""
    win = units[0].tiles[0].gemms[0].window
    if win is None:
        return {}
    if layer.op == "conv":
        logical = f"{layer.w.shape[1]}x{layer.out_shape[0]} filter rows x output rows"
    else:
        logical = f"{math.ceil(layer.w.shape[0] / config.rows)} lines of {config.rows} features x samples"
    sets = config.rows // win["win_h"]
    return {"mapping": f"rs: logical set {logical}, per GEMM {win['win_h']}x{win['out_h']} "
                       f"({win['win_w']} filter columns), {sets} channel set{'s' * (sets > 1)}"}


def compile_model(model: QModel, config: AccelConfig, batch: int = 1) -> Program:
    """Compile ``model`` for ``config``, ``batch`` samples per run."""
    if batch < 1:
        raise CompileError(f"batch must be at least 1, not {batch}")
    if batch > 0xFFFF:
        raise CompileError(f"batch must be at most 65535, not {batch}")
    for layer in model.layers:
        if layer.op not in SUPPORTED_OPS:
            raise CompileError(f"layer {layer.name!r}: op {layer.op!r} has no hardware mapping yet; "
                               f"supported: {', '.join(SUPPORTED_OPS)}")
    static, allocs, scratch = allocate(model, config, batch)
    nodes = []
    n_layers = len(model.layers)
    for i, (layer, alloc) in enumerate(zip(model.layers, allocs)):
        lower = _lowerings(config.dataflow).get(layer.op, lower_vec)
        units = lower(layer, config, batch, alloc)
        extra = _rs_mapping(layer, units, config) if config.dataflow == "rs" else {}
        insns = []
        try:
            for j, unit in enumerate(units):
                insns.extend(emit_unit(unit, config, first=(i == 0 and j == 0),
                                       last=(i == n_layers - 1 and j == len(units) - 1)))
        except ValueError as e:  # an instruction field out of range (isa.encode)
            raise CompileError(f"layer {layer.name!r} ({layer.op}) cannot be encoded for "
                               f"{config.array} {config.dataflow}: {e}") from e

        gemms = sum(len(t.gemms) for u in units for t in u.tiles)
        nodes.append(NodeCode(name=layer.name, op=layer.op, insns=insns, macs=layer.macs * batch,
                              tiles={"units": len(units), "out_tiles": sum(len(u.tiles) for u in units),
                                     "gemms": gemms, "ifmap_resident": units[0].resident,
                                     "batch": batch, **extra}))
    return Program(config=config, batch=batch, nodes=nodes, static=static,
                   input_bytes=batch * model.in_features, output_bytes=batch * model.out_features,
                   scratch_bytes=scratch, in_features=model.in_features,
                   out_features=model.out_features)
