"""DRAM allocation: static data (GEMM weights, PPU parameters) and feature-map slots.

Layouts: GEMM weights int8 ``[K, N]`` row-major (conv: ``K = (fh, fw, cin)`` per
group); PPU parameters one row of ``cols`` x 9 bytes per parameter chunk
(:func:`~celosia.sw.compiler.tiling.param_chunks`): bias int32 LE with the input zero
point folded in -- except where the GEMMs subtract it (feie, ``in_zp``) -- M0 int32 LE,
shift int8. Each layer's weights and parameters start 8-byte aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import PARAM_BYTES, BaseReg
from celosia.sw.compiler.program import align
from celosia.sw.compiler.tiling import param_chunks, subtracts_zero_point
from celosia.sw.quant.model import QLayer, QModel

__all__ = ["Allocation", "allocate"]


@dataclass(frozen=True)
class Allocation:
    """Where one layer's data lives in DRAM: byte offsets in the static segment
    (``BaseReg.STATIC``) and ``(base register, offset)`` of its feature maps."""
    weights: int                 # its GEMM weights (static)
    params: int                  # its PPU parameter rows (static)
    srcs: tuple                  # its input feature maps, ``(BaseReg, offset)`` each
    dst: tuple                   # its output feature map

    @property
    def src(self) -> tuple:
        """The first (for most layers the only) input feature map."""
        return self.srcs[0]


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


def allocate(model: QModel, config: AccelConfig, batch: int) -> tuple[bytes, list[Allocation], int]:
    """Static data and the DRAM slot of every tensor; returns (static, per-layer allocations,
    scratch bytes).

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
        srcs = tuple(where[name] for name in model.layer_inputs(i))
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
        allocs.append(Allocation(weights=w_off, params=p_off, srcs=srcs, dst=dst))
        where[layer.output] = dst
        # Free the slots of tensors whose last reader was this layer (after choosing dst:
        # a layer never writes over its own input).
        for name in model.layer_inputs(i):
            if last_use.get(name) == i and name in live:
                free.append(live.pop(name))
    return bytes(static), allocs, scratch_end
