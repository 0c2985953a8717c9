"""Grouped convolutions merged into block-diagonal groups (sw/compiler/groups.py)."""

import numpy as np
import pytest

from celosia.rtl.config import AccelConfig
from celosia.sim.isa_sim import run_program
from celosia.sw.compiler import compile_model
from celosia.sw.compiler.groups import merge_groups
from celosia.sw.driver import golden_forward
from celosia.sw.quant.model import QModel
from layer_cases import conv_layer, hw_macs


def dense_weights(layer):
    """The layer's weights as one dense ``[Cout, Fh, Fw, Cin]`` tensor (zeros outside each
    output channel's group), built channel by channel."""
    groups = layer.attrs["groups"]
    cout, fh, fw, cin_g = layer.w.shape
    dense = np.zeros((cout, fh, fw, cin_g * groups), np.int8)
    for c in range(cout):
        g = c // (cout // groups)
        dense[c, :, :, g * cin_g:(g + 1) * cin_g] = layer.w[c]
    return dense


@pytest.mark.parametrize("in_shape, cout, groups, rows, cols, merged", [
    ((6, 6, 16), 16, 16, 8, 8, 2),     # depthwise: 8 channels per merged group
    ((6, 6, 16), 32, 16, 8, 8, 4),     # channel multiplier 2: 4 groups of 4 in, 8 out
    ((6, 6, 12), 12, 6, 4, 4, 3),      # 2 channels per group: 2 per tile of 4
    ((6, 6, 5), 5, 5, 4, 4, 5),        # 5 groups (prime): no divisor <= 4 but 1
    ((6, 6, 16), 16, 2, 8, 8, 2),      # 8 channels per group already fill the tile
])
def test_merged_groups_are_the_same_convolution(in_shape, cout, groups, rows, cols, merged):
    """The merged layer has ``merged`` groups and the same dense weight tensor (so the same
    sums for any input), and the compiled program equals the golden model bit for bit on
    the ISA simulator (the hardware's MAC count: ``hw_macs``, the zero weights included)."""
    rng = np.random.default_rng(groups * rows + cout)
    layer = conv_layer(rng, "dw", in_shape, cout, 3, 1, 1, groups, in_zp=-13)
    config = AccelConfig(rows=rows, cols=cols)
    new = merge_groups(layer, config)
    assert new.attrs["groups"] == merged
    np.testing.assert_array_equal(dense_weights(new), dense_weights(layer))
    assert (new is layer) == (merged == groups)
    assert new.macs == hw_macs(layer, rows, cols)
    for df in ("ws", "rs"):
        model = QModel("t", [layer], 0.05, -13, input_shape=in_shape)
        program = compile_model(model, AccelConfig(rows=rows, cols=cols, dataflow=df), batch=2)
        assert program.nodes[0].macs == 2 * layer.macs   # the report's MACs are the model's
        x = rng.integers(-128, 128, size=(2, model.in_features)).astype(np.int8)
        want = golden_forward(model, x)
        assert len(np.unique(want)) > 8, "degenerate test: output nearly constant"
        got, _ = run_program(program, x, 0)
        np.testing.assert_array_equal(got, want)
