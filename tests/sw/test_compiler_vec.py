"""Pooling, global average pooling and residual add on the vector engine, at ISA level vs golden."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sim.golden import add_params, conv_output_size, global_avg_pool_params, quantize_multiplier
from celosia.sim.isa_sim import run_program
from celosia.sw.compiler import compile_model
from celosia.sw.driver import golden_forward
from celosia.sw.quant.model import QLayer, QModel

from test_compiler_conv import conv_layer


def vec_layer(name, op, in_shape, out_shape, m0, shift, in_zp, out_zp, attrs=None, inputs=()):
    C = out_shape[-1]
    return QLayer(name=name, op=op, w=np.zeros(0, np.int8), bias=np.zeros(C, np.int32),
                  m0=np.full(C, m0, np.int32), shift=np.full(C, shift, np.int32), in_scale=0.05,
                  in_zp=in_zp, out_scale=0.05, out_zp=out_zp, attrs=dict(attrs or {}),
                  in_shape=in_shape, out_shape=out_shape, inputs=list(inputs))


def pool_layer(op, in_shape, k, s, pad, in_zp, out_zp=None):
    H, W, C = in_shape
    ho = conv_output_size(H, k, s, pad, pad)
    wo = conv_output_size(W, k, s, pad, pad)
    attrs = {"kernel": (k, k), "stride": (s, s), "pads": (pad,) * 4}
    if op == "maxpool":  # keeps the input's qparams; identity multiplier in the PPU
        return vec_layer("pool", op, in_shape, (ho, wo, C), 1 << 30, 1, in_zp, in_zp, attrs)
    m0, shift = global_avg_pool_params(0.05, 0.04, k * k)
    return vec_layer("pool", op, in_shape, (ho, wo, C), m0, shift, in_zp, out_zp, attrs)


def check(model, config, batch=1, seeds=(None, 0, 1)):
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(batch, model.in_features)).astype(np.int8)
    want = golden_forward(model, x)
    assert len(np.unique(want)) > 3
    program = compile_model(model, config, batch=batch)
    for seed in seeds:
        got, tokens = run_program(program, x, seed)
        np.testing.assert_array_equal(got, want)
        assert all(v == 0 for v in tokens.values())
    return program


# Padded average pooling is count_include_pad=1 (padding adds zero, the divisor is the
# window size), so the padded cases here are max pooling only.
POOLS = [("maxpool", 2, 2, 0), ("maxpool", 3, 2, 1), ("maxpool", 3, 1, 1), ("maxpool", 5, 3, 0),
         ("avgpool", 2, 2, 0), ("avgpool", 3, 2, 0), ("avgpool", 5, 3, 0), ("avgpool", 3, 1, 1)]


@pytest.mark.parametrize("op,k,s,pad", POOLS, ids=[f"{p[0]}{p[1]}s{p[2]}p{p[3]}" for p in POOLS])
@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5), (8, 8)])
def test_pooling(op, k, s, pad, rows, cols):
    layer = pool_layer(op, (9, 11, 7), k, s, pad, in_zp=-9, out_zp=4)
    model = QModel("pool", [layer], 0.05, -9, input_shape=(9, 11, 7))
    check(model, AccelConfig(rows=rows, cols=cols))


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 4), (8, 8)])
def test_global_average_pool(rows, cols):
    m0, shift = global_avg_pool_params(0.05, 0.02, 6 * 5)
    layer = vec_layer("gap", "gap", (6, 5, 10), (1, 1, 10), m0, shift, 3, -5)
    check(QModel("gap", [layer], 0.05, 3, input_shape=(6, 5, 10)), AccelConfig(rows=rows, cols=cols),
          batch=2)


def test_residual_block():
    """conv -> conv (+ skip from the block input) -> add -> gap -> fc: a DAG, not a chain."""
    rng = np.random.default_rng(11)
    c0 = conv_layer(rng, "c0", (8, 8, 3), 6, 3, 2, 1, in_zp=-20)
    c1 = conv_layer(rng, "c1", c0.out_shape, 6, 3, 1, 1, in_zp=c0.out_zp)
    c2 = conv_layer(rng, "c2", c1.out_shape, 6, 3, 1, 1, in_zp=c1.out_zp, activation="none")
    p = add_params(0.05, 0.05, 0.08)
    add = vec_layer("add", "add", c2.out_shape, c2.out_shape, p["out_m0"], p["out_shift"],
                    c2.out_zp, 7, inputs=["c2", "c0"],
                    attrs={"a_m0": p["a_m0"], "a_shift": p["a_shift"], "b_m0": p["b_m0"],
                           "b_shift": p["b_shift"], "b_zp": c0.out_zp, "left_shift": p["left_shift"]})
    add.act_min = 7  # fused relu
    H, W, C = add.out_shape
    m0, shift = global_avg_pool_params(0.08, 0.03, H * W)
    gap = vec_layer("gap", "gap", add.out_shape, (1, 1, C), m0, shift, 7, 2)
    m0s, shifts = zip(*(quantize_multiplier(0.01) for _ in range(10)))
    fc = QLayer("fc", "fc", rng.integers(-127, 128, (C, 10)).astype(np.int8),
                rng.integers(-300, 300, 10).astype(np.int32), np.array(m0s, np.int32),
                np.array(shifts, np.int32), 0.03, 2, 0.05, 0)
    model = QModel("res", [c0, c1, c2, add, gap, fc], 0.05, -20, input_shape=(8, 8, 3))
    for rows, cols in [(4, 4), (4, 8), (8, 8)]:
        check(model, AccelConfig(rows=rows, cols=cols), batch=2, seeds=(None, 0))
