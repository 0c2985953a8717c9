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
    with pytest.raises(ConfigError, match=r"^dram_bytes must be a multiple of 8, not 1028$"):
        AccelConfig(dram_bytes=1028)
    with pytest.raises(ConfigError, match=r"^psum_rows must be even"):
        AccelConfig(psum_rows=33)
    with pytest.raises(ConfigError, match=r"weight_rows must hold two weight tiles \(>= 2 \* rows = 16\)"):
        AccelConfig(rows=8, weight_rows=8)
    with pytest.raises(ConfigError, match="unknown config fields: bogus"):
        AccelConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("text,expected", [("8x8", (8, 8)), ("4X8", (4, 8)), (" 3 x 5 ", (3, 5))])
def test_parse_array(text, expected):
    assert parse_array(text) == expected


@pytest.mark.parametrize("text", ["8", "8by8", "x8", "-1x8", ""])
def test_parse_array_rejects(text):
    with pytest.raises(ConfigError, match="array must look like ROWSxCOLS"):
        parse_array(text)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (1, 16), (16, 1)])
def test_odd_configs_convert_to_verilog(rows, cols):
    config = AccelConfig(rows=rows, cols=cols, weight_rows=max(2, 2 * rows), dram_bytes=4096,
                         ifmap_rows=16, psum_rows=16, param_rows=4)
    text = verilog.convert(Accelerator(config), name="celosia_accelerator", emit_src=False)
    assert re.search(r"^module celosia_accelerator\(", text, re.M)


def test_docs_config_is_generated():
    assert (DOCS / "config.md").read_text() == config_mod.markdown(), \
        "docs/config.md is stale: run `python -m celosia.rtl.config > docs/config.md`"
