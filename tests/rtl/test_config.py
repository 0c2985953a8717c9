# amaranth: UnusedElaboratable=no
import re
from pathlib import Path

import pytest
from amaranth.back import verilog

from celosia.rtl import config as config_mod
from celosia.rtl.config import RANGES, AccelConfig, ConfigError, parse_array
from celosia.rtl.top import Accelerator

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_defaults_are_valid_and_hash_stable():
    assert AccelConfig().digest() == AccelConfig().digest()
    assert AccelConfig(rows=4).digest() != AccelConfig().digest()
    assert AccelConfig.from_dict(AccelConfig(rows=3, cols=5).to_dict()) == AccelConfig(rows=3, cols=5)


@pytest.mark.parametrize("field", sorted(RANGES))
def test_every_field_rejects_values_outside_its_range(field):
    lo, hi, _ = RANGES[field]
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ConfigError, match=rf"^{field} \(.*\) must be {lo}\.\.{hi}, not {bad}$"):
            AccelConfig(**{field: bad})


def test_other_rules():
    with pytest.raises(ConfigError, match=r"^rows \(.*\) must be an integer, not '8'$"):
        AccelConfig(rows="8")
    with pytest.raises(ConfigError, match=r"^dataflow must be one of ws, os, rs, feie, not 'xyz'$"):
        AccelConfig(dataflow="xyz")
    with pytest.raises(ConfigError, match=r"^dram_bytes must be a multiple of the bus word "
                                          r"\(8 bytes at bus_bits = 64\), not 1028$"):
        AccelConfig(dram_bytes=1028)
    with pytest.raises(ConfigError, match=r"^psum_rows must be even"):
        AccelConfig(psum_rows=33)
    with pytest.raises(ConfigError, match=r"weight_rows must hold two weight tiles \(>= 2 \* rows = 16\)"):
        AccelConfig(rows=8, weight_rows=8)
    with pytest.raises(ConfigError, match="unknown config fields: bogus"):
        AccelConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("bad", [0, 32, 96, 100, 192, 255])
def test_bus_bits_takes_only_its_widths(bad):
    with pytest.raises(ConfigError, match=rf"^bus_bits \(.*\) must be (64\.\.256|one of 64, 128, "
                                          rf"256), not {bad}$"):
        AccelConfig(bus_bits=bad)


@pytest.mark.parametrize("bits", [64, 128, 256])
def test_bus_bits_rules_and_derived_sizes(bits):
    word = bits // 8
    config = AccelConfig(bus_bits=bits, dram_bytes=4096, dram_bytes_per_cycle=word)
    assert (config.bus_bytes, config.dram_words, config.host_words) == (word, 4096 // word, 512)
    # dram_bytes: a multiple of the word (1024 + 8 is one only at 64 bits).
    for size in (1024 + 8, 1024 + 16):
        if size % word:
            with pytest.raises(ConfigError, match=rf"^dram_bytes must be a multiple of the bus "
                                                  rf"word \({word} bytes at bus_bits = {bits}\), "
                                                  rf"not {size}$"):
                AccelConfig(bus_bits=bits, dram_bytes=size)
        else:
            assert AccelConfig(bus_bits=bits, dram_bytes=size).dram_words == size // word
    # dram_bytes_per_cycle: at most a word per cycle (past 32 the range check says so).
    with pytest.raises(ConfigError, match=r"^dram_bytes_per_cycle \(.*\) must be 1\.\.32, not 33$"):
        AccelConfig(bus_bits=bits, dram_bytes_per_cycle=33)
    if word == 32:
        return
    with pytest.raises(ConfigError, match=rf"^dram_bytes_per_cycle must be at most a bus word per "
                                          rf"cycle \({word} at bus_bits = {bits}\), not {word + 1}$"):
        AccelConfig(bus_bits=bits, dram_bytes_per_cycle=word + 1)
    assert AccelConfig(bus_bits=bits, dram_bytes_per_cycle=1).bus_bits == bits


def test_ppu_lanes_rules():
    assert AccelConfig().ppu_lanes == 1
    assert AccelConfig(ppu_lanes=8).ppu_lanes == 8  # 8 columns, 8-byte word
    assert AccelConfig(ppu_lanes=3, cols=3).ppu_lanes == 3  # no power of two needed
    assert AccelConfig(ppu_lanes=32, cols=32, bus_bits=256).ppu_lanes == 32
    with pytest.raises(ConfigError, match=r"^ppu_lanes must be at most the bus word \(8 bytes at "
                                          r"bus_bits = 64\) and at most cols \(16\), not 9$"):
        AccelConfig(ppu_lanes=9, cols=16)
    with pytest.raises(ConfigError, match=r"^ppu_lanes must be at most .* cols \(4\), not 5$"):
        AccelConfig(ppu_lanes=5, cols=4, bus_bits=128)


def test_bus_bits_default_and_set():
    assert AccelConfig().bus_bits == 64
    assert AccelConfig.from_dict(dict(bus_bits=256)).bus_bytes == 32
    assert AccelConfig(bus_bits=128).digest() != AccelConfig().digest()


@pytest.mark.parametrize("text,expected", [("8x8", (8, 8)), ("4X8", (4, 8)), (" 3 x 5 ", (3, 5))])
def test_parse_array(text, expected):
    assert parse_array(text) == expected


@pytest.mark.parametrize("text", ["8", "8by8", "x8", "-1x8", ""])
def test_parse_array_rejects(text):
    with pytest.raises(ConfigError, match="array must look like ROWSxCOLS"):
        parse_array(text)


@pytest.mark.parametrize("rows,cols,bus_bits", [(1, 1, 64), (3, 5, 64), (1, 16, 64), (16, 1, 64),
                                               (3, 5, 128), (1, 1, 256), (16, 1, 256)])
def test_odd_configs_convert_to_verilog(rows, cols, bus_bits):
    config = AccelConfig(rows=rows, cols=cols, weight_rows=max(2, 2 * rows), dram_bytes=4096,
                         ifmap_rows=16, psum_rows=16, param_rows=4, bus_bits=bus_bits)
    text = verilog.convert(Accelerator(config), name="celosia_accelerator", emit_src=False)
    assert re.search(r"^module celosia_accelerator\(", text, re.M)


def test_docs_config_is_generated():
    assert (DOCS / "config.md").read_text() == config_mod.markdown(), \
        "docs/config.md is stale: run `python -m celosia.rtl.config > docs/config.md`"
