"""Lowering of the plain-GEMM family (``ws``, ``os``, ``feie``): fc and conv layers as GEMMs.

A fully connected layer is ``[batch, K] x [K, N]``; a convolution is output pixels x
``(fh, fw, cin)`` by im2col addressing in the DMA (padding inserted by the LOAD).
``K`` is cut into tiles of ``rows`` (conv: up to ``rows`` input channels at one kernel
position), ``N`` into tiles of ``cols``; each (output tile, k tile) is one
:class:`~celosia.sw.compiler.tiling.GemmOp`. The layer input stays resident in an
ifmap buffer half when it fits (loaded once per block), else each GEMM streams its
own ifmap tile. Entry points, the same in every lowering family: :func:`lower_fc`,
:func:`lower_conv` and :func:`mapping`.
"""

from __future__ import annotations

import math

from celosia.errors import CompileError
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg
from celosia.sw.compiler.alloc import Allocation
from celosia.sw.compiler.tiling import (GemmOp, OutTile, Unit, conv_attrs, conv_blocks, load,
                                        split_units, store, window_load)
from celosia.sw.quant.model import QLayer

__all__ = ["lower_fc", "lower_conv", "mapping", "LOWERINGS"]


def lower_fc(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
    """A fully connected layer: ``[batch, K] x [K, N]``; the input stays resident when it fits."""
    R, C = config.rows, config.cols
    K, N = layer.w.shape
    kt, nt = math.ceil(K / R), math.ceil(N / C)
    src_reg, src_off = alloc.src
    _check_rows(layer, "psum_rows", batch, config, f"one output tile (batch={batch} rows)")
    resident = batch * kt <= config.ifmap_rows // 2
    if not resident:
        _check_rows(layer, "ifmap_rows", batch, config, f"one input tile (batch={batch} rows)")
    block_loads = []
    full = K // R
    if full:
        block_loads.append(load(src_reg, src_off, R, n1=batch, s1=K, bs1=1,
                                n2=full, s2=R, bs2=batch, buf_row=0))
    if K - full * R:
        block_loads.append(load(src_reg, src_off + full * R, K - full * R, n1=batch, s1=K,
                                bs1=1, buf_row=full * batch))
    tiles = []
    for j in range(nt):
        n_len = min(C, N - j * C)
        gemms = []
        for k in range(kt):
            k_len = min(R, K - k * R)
            weight = load(BaseReg.STATIC, alloc.weights + k * R * N + j * C, n_len,
                          n1=k_len, s1=N, bs1=1)
            ifmap = [load(src_reg, src_off + k * R, k_len, n1=batch, s1=K, bs1=1, buf_row=0)]
            gemms.append(GemmOp(k_len=k_len, n_len=n_len, weight=[weight], ifmap=ifmap,
                              ifmap_row=k * batch))
        tiles.append(OutTile(m_len=batch, ops=gemms, store=store(layer, alloc.dst, j * C, N, n_len),
                             param_row=j, block=0,
                             block_loads=block_loads))

    return split_units(tiles, alloc.params, resident, config, layer)


def lower_conv(layer: QLayer, config: AccelConfig, batch: int, alloc: Allocation) -> list[Unit]:
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
        return window_load(alloc.src, layer.in_shape, img, g * cin_g + c0, k_len,
                           ho0 * sh + fh * dh - pt, fw * dw - pl, hb, Wo, sh, sw, buf_row=buf_row,
                            pad_value=int(layer.in_zp))

    tiles = []
    for block_id, (img, g, ho0, hb, _, _) in enumerate(conv_blocks(batch, G, Ho, Wo, Hb, Wo)):
        block_loads = [ifmap_load(fh, fw, c0, kl, img, g, ho0, hb, i * hb * Wo)
                       for i, (fh, fw, c0, kl) in enumerate(ktiles)] if resident else []
        for j in range(nt):
            n_len = min(C, cout_g - j * C)
            gemms = []
            for i, (fh, fw, c0, k_len) in enumerate(ktiles):
                krow = (fh * Fw + fw) * cin_g + c0
                weight = load(BaseReg.STATIC, alloc.weights + g * K_g * cout_g + krow * cout_g + j * C,
                              n_len, n1=k_len, s1=cout_g, bs1=1)
                ifmap = [] if resident else [ifmap_load(fh, fw, c0, k_len, img, g, ho0, hb, 0)]
                gemms.append(GemmOp(k_len=k_len, n_len=n_len, weight=[weight], ifmap=ifmap,
                                    ifmap_row=i * hb * Wo))
            out = store(layer, alloc.dst, (img * Ho + ho0) * Wo * Cout + g * cout_g + j * C, Cout, n_len)
            tiles.append(OutTile(m_len=hb * Wo, ops=gemms, store=out, param_row=g * nt + j, block=block_id,
                                 block_loads=block_loads))

    return split_units(tiles, alloc.params, resident, config, layer)


def mapping(layer: QLayer, units: list[Unit], config: AccelConfig) -> dict:
    """The report's extra tiling facts of a layer: none for the plain GEMM (the report
    names the dataflow)."""
    return {}


#: op -> lowering of the layers this family maps.
LOWERINGS = {"fc": lower_fc, "conv": lower_conv}


def _check_rows(layer, name, rows_needed, config, what):
    half = getattr(config, name) // 2
    if rows_needed > half:
        raise CompileError(
            f"layer {layer.name!r} needs {rows_needed} rows of the {name.split('_')[0]} buffer half "
            f"for {what}, but {name}={getattr(config, name)} gives {half} per half; increase "
            f"{name} or reduce the batch")
