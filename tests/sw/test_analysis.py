"""Static DRAM traffic and roofline (celosia.sw.analysis) on hand-worked programs, and its
per-run totals against the hardware's DRAM_RD / DRAM_WR counters (pysim)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from celosia.rtl import isa
from celosia.rtl.config import AccelConfig
from celosia.rtl.isa import BaseReg, Buffer, Opcode
from celosia.sw.analysis import (LATENCY_FACTOR, TensorSizes, layer_report, load_bytes,
                                 nonzero_macs, peaks, program_traffic, roofline, store_bytes,
                                 tensor_sizes, total_report)
from celosia.sw.compiler import compile_model
from celosia.sw.compiler.program import NodeCode, Program
from test_compiler import make_model


def load(buf, n0, n1=1, n2=1, **kw):
    return isa.encode(Opcode.LOAD, buf=buf, base_reg=BaseReg.STATIC, n0=n0, n1=n1, n2=n2,
                      dram_stride0=1, dram_stride1=n0, dram_stride2=n0 * n1, buf_stride1=1,
                      buf_stride2=n1, **kw)


def store(m_len, n_len):
    return isa.encode(Opcode.STORE, base_reg=BaseReg.OUTPUT, m_len=m_len, n_len=n_len, dram_stride=n_len)


GEMM = isa.encode(Opcode.GEMM, m_len=1, k_len=1, n_len=1)


# -- single instructions --------------------------------------------------------------------

def test_load_bytes_unpadded():
    # 8 lanes x 3 rows x 2 planes, every element from DRAM: 48 bytes
    assert load_bytes(isa.decode(load(Buffer.IFMAP, 8, 3, 2))) == 48


def test_load_bytes_padded():
    # n0=4, n1=5 with i1 in [1, 4): 3 rows read; n2=3 with i2 in [0, 2): 2 planes read.
    # 4 * 3 * 2 = 24 bytes read; the other 4*5*3 - 24 = 36 elements are pad_value.
    f = isa.decode(load(Buffer.IFMAP, 4, 5, 3, pad_en=1, pad_lo1=1, pad_hi1=4, pad_lo2=0, pad_hi2=2))
    assert load_bytes(f) == 24
    # pad_hi beyond n: i1 in [1, 10) of n1=3 is rows 1, 2; i2 in [2, 3) of n2=3 is plane 2: 6*2*1
    f = isa.decode(load(Buffer.IFMAP, 6, 3, 3, pad_en=1, pad_lo1=1, pad_hi1=10, pad_lo2=2, pad_hi2=3))
    assert load_bytes(f) == 12
    # every row padded (pad_lo1 >= n1): nothing read
    f = isa.decode(load(Buffer.IFMAP, 6, 3, 1, pad_en=1, pad_lo1=3, pad_hi1=5, pad_lo2=0, pad_hi2=1))
    assert load_bytes(f) == 0
    # pad ranges are ignored without pad_en: 6*3
    f = isa.decode(load(Buffer.IFMAP, 6, 3, 1, pad_lo1=3, pad_hi1=5))
    assert load_bytes(f) == 18


def test_store_bytes():
    assert store_bytes(isa.decode(store(5, 7))) == 35


# -- a hand-worked program ----------------------------------------------------------------

def hand_program():
    """Two layers on a 4x4 array.

    fc1 (5 instructions): weights 16x4 = 64 B loaded twice (re-read x2): 128 B; ifmap 16 B;
    params one row of 4 channels x 9 B = 36 B; a STORE of 1 x 4 = 4 B.
    Fetch: 1 descriptor (8 B) + 5 x 32 B = 168 B. Read 128 + 16 + 36 + 168 = 348 B.
    conv (4 instructions): a padded ifmap LOAD n0=2, n1=4 (rows [1, 3) read), n2=4 (planes
    [1, 3)): 2*2*2 = 8 B of the 2x2x2 = 8 B map; weights 3 B (one load of the 3 B tensor);
    a GEMM; a STORE of 2 x 2 = 4 B. Fetch 8 + 4 x 32 = 136 B. Read 8 + 3 + 136 = 147 B.
    empty: no instructions, no descriptor: 0 B.
    Program: 348 + 147 + 8 (the table's end descriptor) = 503 B read, 8 B written.
    """
    config = AccelConfig(rows=4, cols=4)
    fc = [load(Buffer.WEIGHT, 4, 16), load(Buffer.WEIGHT, 4, 16), load(Buffer.IFMAP, 4, 4),
          load(Buffer.PARAM, 36), store(1, 4)]
    conv = [load(Buffer.IFMAP, 2, 4, 4, pad_en=1, pad_lo1=1, pad_hi1=3, pad_lo2=1, pad_hi2=3),
            load(Buffer.WEIGHT, 3), GEMM, store(2, 2)]
    nodes = [NodeCode("fc1", "fc", fc, macs=64), NodeCode("conv", "conv", conv, macs=72),
             NodeCode("empty", "maxpool", [], macs=0)]
    return Program(config=config, batch=1, nodes=nodes, static=b"", input_bytes=16, output_bytes=4,
                   scratch_bytes=8, in_features=16, out_features=4)


def test_hand_program_traffic():
    t = program_traffic(hand_program())
    fc, conv, empty = t.layers
    assert (fc.weight_read, fc.ifmap_read, fc.param_read, fc.fetch_read, fc.written) == (128, 16, 36, 168, 4)
    assert fc.read == 348
    assert (conv.weight_read, conv.ifmap_read, conv.param_read, conv.fetch_read, conv.written) == (3, 8, 0, 136, 4)
    assert conv.read == 147
    assert (empty.read, empty.written) == (0, 0)
    assert t.read == 348 + 147 + 8 and t.written == 8
    assert t.per_inference == 511
    # no model: no tensor sizes, no re-read factors
    assert fc.reread_weights is None and fc.reread_ifmap is None


def test_reread_factors():
    t = program_traffic(hand_program())
    fc, conv, _ = t.layers
    fc.sizes = TensorSizes(weights=64, ifmap=16, output=4)
    conv.sizes = TensorSizes(weights=3, ifmap=8, output=4)
    assert fc.reread_weights == 2.0 and fc.reread_ifmap == 1.0
    assert conv.reread_weights == 1.0 and conv.reread_ifmap == 1.0
    t.layers[2].sizes = TensorSizes(weights=0, ifmap=4, output=1)
    total = total_report(t, hand_program().config)
    # weights: (128 + 3) / (64 + 3); ifmap: (16 + 8) / (16 + 8 + 4)
    assert total["reread"] == {"weights": round(131 / 67, 4), "ifmap": round(24 / 28, 4)}
    assert t.layers[2].reread_weights is None


# -- roofline -----------------------------------------------------------------------------

def test_peaks():
    assert peaks(AccelConfig(rows=8, cols=8)) == (64, 8)
    assert peaks(AccelConfig(rows=4, cols=2, dram_bytes_per_cycle=3)) == (8, 3)


def test_roofline_compute_bound():
    # 6400 MACs on 64 PEs: >= 100 cycles; 400 B at 8 B/cycle: >= 50 cycles -> compute, 100
    r = roofline(6400, 400, 64, 8)
    assert r == {"effective_macs": None, "compute_bound_cycles": 100, "bandwidth_bound_cycles": 50,
                 "bound": "compute", "bound_cycles": 100, "roofline_efficiency": None}
    assert roofline(6400, 400, 64, 8, measured=160)["roofline_efficiency"] == 100 / 160
    # below the compute bound (the array skipped MACs the layer counts: a conv's padding
    # rows): an efficiency above 1, still compute bound
    r = roofline(6400, 400, 64, 8, measured=80)
    assert (r["bound"], r["roofline_efficiency"]) == ("compute", 100 / 80)
    # up to LATENCY_FACTOR x the bound it stays compute bound; beyond it is latency bound
    assert LATENCY_FACTOR == 2.0
    assert roofline(6400, 400, 64, 8, measured=200)["bound"] == "compute"
    r = roofline(6400, 400, 64, 8, measured=201)
    assert r["bound"] == "latency" and r["bound_cycles"] == 100


def test_roofline_bandwidth_bound():
    # 64 MACs: 1 cycle; 81 B at 8 B/cycle: ceil(10.125) = 11 cycles -> bandwidth
    r = roofline(64, 81, 64, 8)
    assert (r["compute_bound_cycles"], r["bandwidth_bound_cycles"]) == (1, 11)
    assert (r["bound"], r["bound_cycles"]) == ("bandwidth", 11)
    # no MACs at all (pooling): bandwidth
    assert roofline(0, 10, 64, 8)["bound"] == "bandwidth"
    # a tie counts as compute bound: 640 MACs / 64 = 10 = 80 B / 8
    assert roofline(640, 80, 64, 8)["bound"] == "compute"
    # a slower bus moves the same layer from compute to bandwidth bound: 400 B / 2 = 200 > 100
    assert roofline(6400, 400, 64, 2)["bound"] == "bandwidth"


def test_roofline_of_the_nonzero_macs():
    # the same layer on an engine that skips zero inputs, 3/4 of its MACs on zeros: 1600
    # MACs / 64 = 25 cycles of compute, so the 50 cycles of the bus bind
    r = roofline(6400, 400, 64, 8, measured=60, effective_macs=1600)
    assert (r["effective_macs"], r["compute_bound_cycles"], r["bound"], r["bound_cycles"]) == \
        (1600, 25, "bandwidth", 50)
    assert r["roofline_efficiency"] == 50 / 60
    assert roofline(6400, 400, 64, 8, effective_macs=6400) == {**roofline(6400, 400, 64, 8),
                                                               "effective_macs": 6400}


def _brute_nonzero_macs(layer, x):
    """Loops over every output, output channel, tap and input channel of ``layer``."""
    (sh, sw), (dh, dw) = layer.attrs["stride"], layer.attrs["dilation"]
    top, left, _, _ = layer.attrs["pads"]
    groups = layer.attrs["groups"]
    cout, fh, fw, cin_g = layer.w.shape
    ho, wo, _ = layer.out_shape
    h, w, _ = layer.in_shape
    count = 0
    for sample in x.reshape(len(x), *layer.in_shape):
        for oy in range(ho):
            for ox in range(wo):
                for co in range(cout):
                    g = co // (cout // groups)
                    for i in range(fh):
                        for j in range(fw):
                            y, xx = oy * sh + i * dh - top, ox * sw + j * dw - left
                            if 0 <= y < h and 0 <= xx < w:
                                chans = sample[y, xx, g * cin_g:(g + 1) * cin_g]
                                count += int(np.count_nonzero(chans != layer.in_zp))
    return count


@pytest.mark.parametrize("in_shape, cout, k, stride, pad, groups, dilation", [
    ((7, 6, 3), 4, 3, 1, 1, 1, 1),
    ((9, 8, 4), 6, 3, 2, (0, 1, 2, 1), 2, 1),     # grouped, asymmetric padding, stride 2
    ((8, 8, 4), 8, 3, 1, 2, 4, 2),                # depthwise x2, dilation 2
    ((6, 7, 2), 3, (1, 3), 1, (0, 1, 0, 1), 1, 1),  # a 1x3 kernel
    ((7, 7, 3), 2, 3, 2, 0, 1, 1),                # no padding
])
def test_nonzero_macs_of_a_conv_by_brute_force(in_shape, cout, k, stride, pad, groups, dilation):
    from layer_cases import conv_layer

    rng = np.random.default_rng(7)
    layer = conv_layer(rng, "c", in_shape, cout, k, stride, pad, groups, dilation, in_zp=-128)
    x = rng.integers(-128, 128, (2, *in_shape)).astype(np.int8)
    x[rng.random(x.shape) < 0.5] = -128
    got = nonzero_macs(layer, x.reshape(2, -1))
    assert got == _brute_nonzero_macs(layer, x) > 0
    # every input the zero point: no MAC left; none of them: every MAC but the padding's
    assert nonzero_macs(layer, np.full_like(x, -128)) == 0
    assert nonzero_macs(layer, np.full_like(x, 5)) == _brute_nonzero_macs(layer, np.full_like(x, 5))
    # without padding that is every MAC the layer counts
    if pad == 0:
        assert nonzero_macs(layer, np.full_like(x, 5)) == layer.macs * 2


def test_nonzero_macs_of_fc_and_vector_ops():
    model = small_model()
    fc = model.layers[0]
    x = np.zeros((3, fc.w.shape[0]), np.int8) + fc.in_zp
    x[0, :5] = fc.in_zp + 1
    x[2, 7] = fc.in_zp - 1
    assert nonzero_macs(fc, x) == 6 * fc.w.shape[1]
    pool = dataclasses.replace(fc, op="maxpool")
    assert nonzero_macs(pool, x) == 0


def test_layer_report_fields():
    t = program_traffic(hand_program()).layers[0]
    r = layer_report(t, AccelConfig(rows=4, cols=4), measured=100)
    # 352 B for 64 MACs: 5.5 B/MAC; bandwidth ceil(352 / 8) = 44 > compute 64 / 16 = 4
    assert r["dram_read_bytes"] == 348 and r["dram_write_bytes"] == 4
    assert r["dram_bytes_per_mac"] == 5.5
    assert (r["bound"], r["bound_cycles"], r["roofline_efficiency"]) == ("latency", 44, 0.44)


# -- against the compiler and the hardware ------------------------------------------------

def small_model():
    return make_model(np.random.default_rng(3), [20, 12, 6], activations=["relu", "none"])


def test_tensor_sizes_of_a_model():
    model = small_model()
    assert tensor_sizes(model, 2) == [TensorSizes(weights=240, ifmap=40, output=24),
                                      TensorSizes(weights=72, ifmap=24, output=12)]


@pytest.mark.parametrize("batch", [1, 3])
def test_fc_reads_each_weight_once_when_it_fits(batch):
    model = small_model()
    # streamed weights (resident ones are read once per job, by the init graph: 0.0 per run),
    # every output through DRAM (a kept one is written to the ifmap buffer: 0 bytes)
    t = program_traffic(compile_model(model, AccelConfig(rows=4, cols=4), batch=batch,
                                      resident_weights=False, keep_outputs=False), model)
    for layer, q in zip(t.layers, model.layers):
        assert layer.reread_weights == 1.0
        assert layer.written == batch * q.out_features == layer.sizes.output
    assert t.written == batch * (12 + 6)


def test_totals_equal_hardware_counters():
    """One pysim run of a two-layer model: the static totals are DRAM_RD / DRAM_WR; at the
    first layer's boundary (its node snapshot) it has written exactly its own outputs (the
    second layer's STORE waits for them) and read at least its own bytes (fetch and
    LOADs may run ahead into the second)."""
    from celosia.sim import pysim
    from celosia.sw.driver import build_job

    model = small_model()
    config = AccelConfig(rows=4, cols=4)
    program = compile_model(model, config, batch=1, resident_weights=False)  # no init run
    t = program_traffic(program, model)
    x_q = np.random.default_rng(0).integers(-128, 128, size=(1, 20), dtype=np.int8)
    job, _, lead = build_job(program, x_q)
    (result,) = pysim.run(config, job)
    assert not lead and not result.error and not result.timed_out
    main = result.counters
    assert (main["dram_bytes_read"], main["dram_bytes_written"]) == (t.read, t.written)
    first, _ = result.nodes
    assert first["dram_bytes_written"] == t.layers[0].written
    assert t.layers[0].read <= first["dram_bytes_read"] <= t.read


@pytest.mark.parametrize("dataflow", ["ws", "rs"])
def test_padded_conv_totals_equal_hardware_counters(dataflow):
    """A padded 3x3 convolution (its raw-row LOADs skip the padding) on both lowering
    families: the static totals are the counters of a pysim run."""
    from layer_cases import conv_layer

    from celosia.sim import pysim
    from celosia.sw.driver import build_job
    from celosia.sw.quant.model import QModel

    layer = conv_layer(np.random.default_rng(1), "conv", (5, 5, 3), 4, 3, 1, 1, in_zp=-7)
    model = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=(5, 5, 3))
    config = AccelConfig(rows=4, cols=4, dataflow=dataflow)
    program = compile_model(model, config, resident_weights=False)  # no init run
    t = program_traffic(program, model)
    assert any(isa.decode(w).get("pad_en") for w in program.nodes[0].insns)
    x_q = np.random.default_rng(0).integers(-128, 128, size=(1, 75), dtype=np.int8)
    job, _, _ = build_job(program, x_q)
    (result,) = pysim.run(config, job)
    assert not result.error and not result.timed_out
    assert (result.counters["dram_bytes_read"], result.counters["dram_bytes_written"]) == (t.read, t.written)
    assert t.written == 5 * 5 * 4 and t.layers[0].reread_weights >= 1.0


def test_golden_rejects_a_model_that_does_not_compile(monkeypatch):
    """The golden back end maps the model onto the config first, like the RTL ones: where
    it does not compile, the compiler's error stops the run (issue 14)."""
    from celosia.errors import CompileError
    from celosia.sw.driver import driver

    def fail(*args, **kwargs):
        raise CompileError("weights do not fit")

    monkeypatch.setattr(driver, "compile_model", fail)
    with pytest.raises(CompileError, match="weights do not fit"):
        driver.run_quantized(small_model(), np.zeros((2, 20), np.int8), AccelConfig(rows=4, cols=4))


def test_report_roofline_counts_the_nonzero_macs_on_feie():
    """A conv then an fc on sparse inputs: on ``feie`` the report's compute bounds are those
    of the MACs whose input is not the zero point (counted here by brute force on the
    golden model's activations); on ``ws``, which multiplies every input, of every MAC."""
    from layer_cases import conv_layer

    from celosia.sim.golden import golden_tensors
    from celosia.sw.driver.driver import run_quantized
    from celosia.sw.quant.model import QLayer, QModel

    rng = np.random.default_rng(5)
    conv = conv_layer(rng, "conv", (6, 6, 4), 4, 3, 1, 1, in_zp=-128)
    fc_w = rng.integers(-127, 128, (144, 5)).astype(np.int8)
    fc = QLayer(name="fc", op="fc", w=fc_w, bias=np.zeros(5, np.int32), m0=np.full(5, 1 << 30, np.int32),
                shift=np.full(5, -8, np.int32), in_scale=0.05, in_zp=conv.out_zp, out_scale=0.05,
                out_zp=0, act_min=-128, act_max=127, activation="none", attrs={},
                in_shape=(144,), out_shape=(5,))
    model = QModel("sparse", [conv, fc], 0.05, conv.in_zp, input_shape=(6, 6, 4))
    x_q = rng.integers(-128, 128, (1, 144)).astype(np.int8)
    x_q[rng.random(x_q.shape) < 0.6] = -128
    acts = golden_tensors(model, x_q)
    want = [_brute_nonzero_macs(conv, x_q), int(np.count_nonzero(acts[conv.output] != fc.in_zp)) * 5]
    assert 0 < want[0] < conv.macs
    for flow in ("feie", "ws"):
        config = AccelConfig(rows=4, cols=4, dataflow=flow)
        rep = run_quantized(model, x_q, config, backend="perf").report
        eff = [layer["effective_macs"] for layer in rep["layers"]]
        roof = rep["roofline"]
        if flow == "feie":
            assert eff == want and roof["effective_macs"] == sum(want)
            assert roof["compute_bound_cycles"] == -(-sum(want) // 16)
        else:
            assert eff == [None, None] and roof["effective_macs"] is None
            assert roof["compute_bound_cycles"] == -(-roof["macs_per_run"] // 16)
