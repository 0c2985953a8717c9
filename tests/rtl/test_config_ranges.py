"""Config-range regression (issue 14 item 5): configurations spread across the documented
ranges (``rtl/config.py`` ``RANGES`` / ``CHOICES``, docs/config.md), corners included, each
checked end to end at the level its size allows.

* Every config (all four dataflows: 1x1, 1x64, 64x1, 64x64, an odd shape with the smallest
  queues / latency / bandwidth, the widest bus with the most PPU lanes, queue depth and
  latency, the smallest buffers, and seeded random points inside the ranges) compiles a tiny
  convolution and a tiny MLP and runs them on the ISA simulator bit-exact against the golden
  model -- or, where the model cannot fit (only the smallest buffers), fails with the
  compiler's one-line error naming the buffer to grow.
* Each dataflow's 1x1 accelerator elaborates and lowers to RTLIL (the corner where a
  ``range(1)`` signal or an empty loop would break).
* Each dataflow's PE array, on the Verilog path, is one block module (a PE column or row,
  :mod:`celosia.rtl.arrays.blocks`) instanced once per column / row.
* ``-m slow``: every config up to 16x16 converts to Verilog and runs both models on the
  Verilator model bit-exact (that Verilog has the instanced blocks); the 64x64 ones convert
  to Verilog (``benchmarks/verilog_gen.py`` prints how long that takes per dataflow), and
  the 64x64 ws Verilog passes ``verilator --lint-only``.
"""

import os
import re

import numpy as np
import pytest

from celosia.errors import CompileError
from celosia.rtl.config import CHOICES, DATAFLOWS, RANGES, AccelConfig, ConfigError
from celosia.sim.isa_sim import run_program
from celosia.sw.compiler import compile_model
from celosia.sw.driver import golden_forward, run_quantized
from celosia.sw.quant.model import QModel
from layer_cases import conv_layer, random_fc_model

#: Fields the spread varies (the bit widths have one legal value each).
VARIED = ("rows", "cols", "ifmap_rows", "weight_rows", "psum_rows", "param_rows", "bus_bits",
          "dram_latency", "dram_bytes_per_cycle", "queue_depth", "ppu_lanes")


def _lo(name):
    return RANGES[name][0]


def _hi(name):
    return RANGES[name][1]


def corner_configs(dataflow: str) -> dict[str, dict]:
    """name -> AccelConfig fields of the corners of ``dataflow``, from ``RANGES``."""
    big = 1 << 22   # the 64x64 program images need more than the default 1 MiB
    widest = max(CHOICES["bus_bits"])
    return {
        "1x1": dict(rows=1, cols=1, weight_rows=_lo("weight_rows")),
        "1xN": dict(rows=1, cols=_hi("cols"), dram_bytes=big),
        "Nx1": dict(rows=_hi("rows"), cols=1, dram_bytes=big),
        "NxN": dict(rows=_hi("rows"), cols=_hi("cols"), dram_bytes=big),
        "odd-slowest": dict(rows=3, cols=5, queue_depth=_lo("queue_depth"),
                            dram_latency=_lo("dram_latency"),
                            dram_bytes_per_cycle=_lo("dram_bytes_per_cycle")),
        "widest": dict(rows=4, cols=32, bus_bits=widest, dram_bytes_per_cycle=widest // 8,
                       ppu_lanes=min(_hi("ppu_lanes"), widest // 8),
                       queue_depth=_hi("queue_depth"), dram_latency=_hi("dram_latency")),
        "min-buffers": dict(rows=4, cols=4, ifmap_rows=_lo("ifmap_rows"), weight_rows=2 * 4,
                            psum_rows=_lo("psum_rows"), param_rows=_lo("param_rows")),
    }


def random_configs(dataflow: str, n: int = 3) -> dict[str, dict]:
    """``n`` seeded random points inside the ranges (array sides up to 16, buffers up to
    4096 rows so the ISA simulator stays quick), made legal the way a user would: even
    buffer depths, the weight buffer holding two tiles, lanes and bandwidth within the
    bus word."""
    rng = np.random.default_rng(sum(map(ord, dataflow)))
    out = {}
    for i in range(n):
        f = {"rows": int(rng.integers(1, 17)), "cols": int(rng.integers(1, 17)),
             "bus_bits": int(rng.choice(CHOICES["bus_bits"])),
             "dram_latency": int(rng.integers(_lo("dram_latency"), _hi("dram_latency") + 1)),
             "queue_depth": int(rng.integers(_lo("queue_depth"), _hi("queue_depth") + 1))}
        for name in ("ifmap_rows", "weight_rows", "psum_rows", "param_rows"):
            f[name] = 2 * int(rng.integers(max(_lo(name), 64) // 2, min(_hi(name), 4096) // 2 + 1))
        f["weight_rows"] = max(f["weight_rows"], 2 * f["rows"])
        f["dram_bytes_per_cycle"] = int(rng.integers(1, f["bus_bits"] // 8 + 1))
        f["ppu_lanes"] = int(rng.integers(1, min(f["bus_bits"] // 8, f["cols"], _hi("ppu_lanes")) + 1))
        out[f"random{i}"] = f
    return out


def spread() -> list[tuple[str, AccelConfig]]:
    """(id, config) of every point of the spread, all four dataflows."""
    points = []
    for df in DATAFLOWS:
        for name, fields in {**corner_configs(df), **random_configs(df)}.items():
            points.append((f"{df}-{name}", AccelConfig(dataflow=df, **fields)))
    return points


SPREAD = spread()


def tiny_models(seed: int = 1):
    """A 3x3 convolution (padding, an input zero point) and a two-layer MLP."""
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, "conv", (5, 6, 3), 5, 3, 1, 1, 1, in_zp=-9)
    conv = QModel("conv", [layer], 0.05, layer.in_zp, input_shape=(5, 6, 3))
    return [conv, random_fc_model(rng, [11, 7, 5], name="mlp")]


def test_spread_covers_every_range_end():
    """Each varied field reaches both ends of its range (or of its choices) somewhere in
    the spread, and every config is legal."""
    for name in VARIED:
        values = {getattr(cfg, name) for _, cfg in SPREAD}
        lo, hi = (min(CHOICES[name]), max(CHOICES[name])) if name in CHOICES else RANGES[name][:2]
        if name in ("ifmap_rows", "weight_rows", "psum_rows", "param_rows"):
            hi = max(values)   # the deepest buffers (65536 rows) are left to the docs' ranges
        assert lo in values, name
        assert hi in values, name


@pytest.mark.parametrize("ident,config", SPREAD, ids=[i for i, _ in SPREAD])
def test_tiny_models_bit_exact_on_isa_sim(ident, config):
    for model in tiny_models():
        # one sample: a program runs one batch (batch 1)
        x = np.random.default_rng(7).integers(-128, 128, size=(1, model.in_features)).astype(np.int8)
        try:
            program = compile_model(model, config)
        except CompileError as e:
            # only the smallest buffers may refuse, with the buffer to grow named
            assert ident.endswith("min-buffers"), f"{ident}: {e}"
            assert "increase ifmap_rows" in str(e) and "\n" not in str(e)
            continue
        got, tokens = run_program(program, x)
        np.testing.assert_array_equal(got, golden_forward(model, x), err_msg=f"{ident} {model.name}")
        assert all(v == 0 for v in tokens.values()), tokens


def test_min_buffers_still_run_a_model():
    """The smallest buffers are not a dead corner: the MLP runs there on every dataflow."""
    for df in DATAFLOWS:
        cfg = AccelConfig(dataflow=df, **corner_configs(df)["min-buffers"])
        model = tiny_models()[1]
        x = np.arange(model.in_features, dtype=np.int8)[None]
        got, _ = run_program(compile_model(model, cfg), x)
        np.testing.assert_array_equal(got, golden_forward(model, x))


def test_out_of_range_fields_are_refused():
    """One step past each end of each range is a ConfigError naming the field."""
    for name in VARIED:
        lo, hi, _ = RANGES[name]
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ConfigError, match=name):
                AccelConfig(**{name: bad})


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_1x1_elaborates_and_lowers(dataflow):
    from amaranth.back import rtlil
    from celosia.rtl.top import Accelerator
    text = rtlil.convert(Accelerator(AccelConfig(rows=1, cols=1, dataflow=dataflow)), name="top",
                         emit_src=False)
    assert "module \\top" in text


#: the blocks each dataflow's array repeats, and how many copies a config has of each
BLOCKS = {"ws": {"wscolumn": "cols"}, "os": {"oscolumn": "cols"},
          "rs": {"rsrow": "rows", "rsline": "rs_lines", "rslane": "cols"},
          "feie": {"feiecolumn": "cols", "feiequeue": "rows"}}


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_array_blocks_instanced_once_converted(dataflow):
    """On the Verilog path the array's repeated parts (PE columns, feie's group queues; rs:
    PE rows, line registers, psum lanes) are instances of one module each, recorded once
    for separate conversion; 3x5 tells rows from columns."""
    from amaranth.back import rtlil
    from celosia.rtl.top import Accelerator
    cfg = AccelConfig(rows=3, cols=5, dataflow=dataflow)
    blocks = {}
    text = rtlil.convert(Accelerator(cfg, blocks=blocks), name="top", emit_src=False)
    assert sorted(name.split("_")[1] for name in blocks) == sorted(BLOCKS[dataflow])
    for name, block in blocks.items():
        assert text.count(f"cell \\{name} ") == getattr(cfg, BLOCKS[dataflow][name.split("_")[1]])
        assert f"module \\{name}" not in text
        block_text = rtlil.convert(block, name=name, emit_src=False)
        assert f"module \\{name}" in block_text
        # its instances connect clk / rst exactly when its module has them
        assert bool(re.search(r"wire width 1 input \d+ +\\clk$", block_text, re.M)) == block.clocked, name


SMALL = [(i, c) for i, c in SPREAD if c.rows * c.cols <= 256]
LARGE = [(i, c) for i, c in SPREAD if c.rows * c.cols > 256]


@pytest.mark.slow
@pytest.mark.parametrize("ident,config", SMALL, ids=[i for i, _ in SMALL])
def test_tiny_models_bit_exact_on_verilator(ident, config):
    for model in tiny_models():
        x = np.random.default_rng(7).integers(-128, 128, size=(2, model.in_features)).astype(np.int8)
        try:
            compile_model(model, config)
        except CompileError:
            assert ident.endswith("min-buffers")
            continue
        got = run_quantized(model, x, config, backend="verilator").y_q
        np.testing.assert_array_equal(got, golden_forward(model, x), err_msg=ident)


@pytest.mark.slow
@pytest.mark.parametrize("ident,config", LARGE, ids=[i for i, _ in LARGE])
def test_large_configs_convert_to_verilog(ident, config, tmp_path):
    import subprocess
    from celosia.sim.verilator import setup_env
    from celosia.sim.verilog import generate
    text = generate(config)
    assert "module celosia_accelerator" in text
    if ident == "ws-NxN":
        # the instances match their module's ports (Verilator errors on a missing pin)
        path = tmp_path / "accel.v"
        path.write_text(text)
        res = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                              "--top-module", "celosia_accelerator", str(path)],
                             env=setup_env(dict(os.environ)), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
