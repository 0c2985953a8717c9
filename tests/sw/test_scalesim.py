"""SCALE-Sim's analytical formulas (celosia.sw.scalesim) on hand-worked shapes."""

from __future__ import annotations

import numpy as np
import pytest

from celosia.sw.quant.model import QLayer
from celosia.sw.scalesim import (GemmShape, fold_cycles, folds, gemm_cycles, layer_cycles,
                                 layer_gemm)


def qlayer(op, w_shape, out_shape=(), **attrs):
    """A layer with only the fields the formulas read (shapes and groups)."""
    n = w_shape[0] if op == "conv" else w_shape[1]
    zeros = np.zeros(n, dtype=np.int32)
    return QLayer(name=op, op=op, w=np.zeros(w_shape, dtype=np.int8), bias=zeros, m0=zeros,
                  shift=zeros, in_scale=1.0, in_zp=0, out_scale=1.0, out_zp=0, attrs=attrs,
                  out_shape=out_shape)


def test_ws_one_fold():
    # 8x8 array, M=10, K=8, N=8: one fold of 2*8 + 8 + 10 - 2 = 32 cycles
    assert folds("ws", 10, 8, 8, 8, 8) == 1
    assert fold_cycles("ws", 10, 8, 8, 8) == 32
    assert gemm_cycles("ws", 10, 8, 8, 8, 8) == 32


def test_ws_partial_folds_on_a_rectangular_array():
    # 4 rows x 6 cols, M=5, K=9, N=7: ceil(9/4)=3 row folds x ceil(7/6)=2 column folds = 6
    # folds of 2*4 + 6 + 5 - 2 = 17 cycles (a partial fold costs a full one): 102
    assert folds("ws", 5, 9, 7, 4, 6) == 6
    assert gemm_cycles("ws", 5, 9, 7, 4, 6) == 6 * 17 == 102


def test_os_folds_over_outputs():
    # 4 rows x 6 cols, M=5, K=9, N=7: ceil(5/4)=2 x ceil(7/6)=2 = 4 folds of
    # 4 + 6 + 9 - 2 = 17 cycles: 68 (T = K streamed, no weight preload)
    assert folds("os", 5, 9, 7, 4, 6) == 4
    assert fold_cycles("os", 5, 9, 4, 6) == 17
    assert gemm_cycles("os", 5, 9, 7, 4, 6) == 68


def test_unknown_dataflow():
    with pytest.raises(ValueError, match="rs"):
        gemm_cycles("rs", 1, 1, 1, 8, 8)


def test_resnet18_conv2_x_on_8x8():
    # The slow test's layer (tests/cocotb, -k resnet18): 56x56x64 -> 56x56x64, 3x3, pad 1.
    # M = 56*56 = 3136, K = 3*3*64 = 576, N = 64. ws: ceil(576/8) * ceil(64/8) = 72 * 8 = 576
    # folds of 2*8 + 8 + 3136 - 2 = 3158 cycles: 1,819,008 (the 1.819 M).
    layer = qlayer("conv", (64, 3, 3, 64), (56, 56, 64), stride=(1, 1), pads=(1, 1, 1, 1))
    assert layer_gemm(layer) == GemmShape(3136, 576, 64)
    assert layer_cycles("ws", layer, 8, 8) == 1_819_008
    # os: ceil(3136/8) * 8 = 392 * 8 = 3136 folds of 8 + 8 + 576 - 2 = 590: 1,850,240
    assert layer_cycles("os", layer, 8, 8) == 1_850_240
    # the MAC-limit 3136*576*64 / 64 = 1,806,336 lies below both
    assert layer_gemm(layer).macs // 64 == 1_806_336


def test_depthwise_is_groups_gemms():
    # 3x3 depthwise on 56x56 outputs of 64 channels: 64 GEMMs of M=3136, K=9, N=1.
    # ws on 8x8: each ceil(9/8)=2 x ceil(1/8)=1 folds of 16 + 8 + 3136 - 2 = 3158: 64*2*3158
    layer = qlayer("conv", (64, 3, 3, 1), (56, 56, 64), groups=64)
    assert layer_gemm(layer) == GemmShape(3136, 9, 1, count=64)
    assert layer_cycles("ws", layer, 8, 8) == 64 * 2 * 3158 == 404_224


def test_fc_batch_is_m():
    # fc 9216 -> 4096 at batch 16 on 16x16: M=16, K=9216, N=4096.
    # ws: ceil(9216/16)=576 x ceil(4096/16)=256 = 147,456 folds of 32 + 16 + 16 - 2 = 62
    layer = qlayer("fc", (9216, 4096))
    assert layer_gemm(layer, batch=16) == GemmShape(16, 9216, 4096)
    assert layer_cycles("ws", layer, 16, 16, batch=16) == 147_456 * 62
    # os: ceil(16/16)=1 x 256 = 256 folds of 16 + 16 + 9216 - 2 = 9246
    assert layer_cycles("os", layer, 16, 16, batch=16) == 256 * 9246
