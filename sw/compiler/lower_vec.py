"""Lowering of the vector ops (pooling, global average pooling, residual add), shared
by every dataflow: one VEC instruction per output tile on the vector engine.

Entry points: :func:`lower_vec` (every op of :data:`LOWERINGS`) and :func:`mapping`.
"""

from __future__ import annotations

from celosia.errors import CompileError
from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.sw.compiler.alloc import Allocation
from celosia.sw.compiler.tiling import (OutTile, Unit, VecOp, load, split_units, store,
                                        window_load)
from celosia.sw.quant.model import QLayer

__all__ = ["lower_vec", "mapping", "LOWERINGS"]


def lower_vec(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
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
    srcs = alloc.srcs
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
        return window_load(src, layer.in_shape, img, c0, lanes, ho0 * sh + fy - pt, fx - pl, hb, Wo,
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
                loads = [load(src_reg, src_off + img * H * W * C + c0, lanes, n1=W, s1=C,
                              bs1=1, n2=H, s2=W * C, bs2=W, buf_row=0)]
                blocks = [(0, 1, loads)]
            elif layer.op == "add":
                P = H * W
                pb = min(i_half // 2, p_half)
                blocks = []
                for p0 in range(0, P, pb):
                    n = min(pb, P - p0)
                    loads = [load(src[0], src[1] + (img * P + p0) * C + c0, lanes, n1=n,
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
                out = store(layer, alloc.dst, (img * Ho * Wo + p0) * Co + c0, Co, lanes)
                tiles.append(OutTile(m_len=m_len, ops=[VecOp(ifmap=loads, **vec)], store=out, param_row=r))

    return split_units(tiles, alloc.params, False, config, layer)


def mapping(layer: QLayer, units: list[Unit], config: AccelConfig) -> dict:
    """The report's extra tiling facts of a vector op: none."""
    return {}


#: op -> lowering of the layers this family maps.
LOWERINGS = {op: lower_vec for op in ("maxpool", "avgpool", "gap", "add")}
