"""rtl/isa.py: the host-visible formats and the one generic pack / unpack.

Expected encodings are worked out by hand from the layouts' field order (bit offsets
and little-endian bytes written out below), not taken from running the code.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amaranth.hdl import Shape

from celosia.errors import FieldError

from celosia.rtl import isa
from celosia.rtl.isa import Buffer, Csr, ErrorCode, Opcode

REPO = Path(__file__).resolve().parents[2]

_LAYOUTS = {Opcode.LOAD: isa.LoadInsn, Opcode.GEMM: isa.GemmInsn, Opcode.STORE: isa.StoreInsn,
            Opcode.VEC: isa.VecInsn, Opcode.NOP: isa.Header}


def _is_signed(field):
    shape = field.shape
    return not isinstance(shape, (type, isa.data.Layout)) and Shape.cast(shape).signed


def _signed_range(width):
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


# --- which fields are signed -----------------------------------------------------------------

def test_signed_fields_are_signed_shapes():
    """The two's complement fields (the old side table, written out again here) are exactly
    the fields with signed shapes, at the widths the hardware reads."""
    expected = {
        isa.LoadInsn: {"dram_offset": 32, "pad_value": 8},
        isa.GemmInsn: {"in_zp": 8},
        isa.StoreInsn: {"dram_offset": 32, "out_zp": 8, "act_min": 8, "act_max": 8},
        isa.VecInsn: {"in_zp": 8, "b_zp": 8, "a_shift": 8, "b_shift": 8, "a_m0": 32, "b_m0": 32},
        isa.ParamRecord: {"bias": 32, "m0": 32, "shift": 8},
        isa.NodeDescriptor: {}, isa.Status: {}, isa.Header: {}, isa.DepFlags: {},
    }
    for layout, fields in expected.items():
        assert {n: f.width for n, f in layout if _is_signed(f)} == fields, layout


# --- hand-worked encodings -------------------------------------------------------------------

def test_param_record_bytes():
    # bias -2 = FE FF FF FF, m0 0x40000000 = 00 00 00 40, shift -3 = FD: 9 bytes, little endian
    blob = isa.pack_bytes(isa.ParamRecord, bias=-2, m0=0x40000000, shift=-3)
    assert blob == bytes([0xFE, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x40, 0xFD])
    assert isa.PARAM_BYTES == 9
    assert isa.unpack_bytes(isa.ParamRecord, blob + b"\x55") == {"bias": -2, "m0": 0x40000000, "shift": -3}
    extremes = isa.pack_bytes(isa.ParamRecord, bias=-(1 << 31), m0=(1 << 31) - 1, shift=127)
    assert extremes == bytes([0, 0, 0, 0x80, 0xFF, 0xFF, 0xFF, 0x7F, 0x7F])


def test_status_bits():
    # bit 0 busy, bit 1 done, bits 15:8 error
    assert isa.pack(isa.Status, busy=1) == 0x0001
    assert isa.pack(isa.Status, done=1, error=ErrorCode.DMA_OUT_OF_WINDOW) == 0x0202
    assert isa.unpack(isa.Status, 0x0602) == {"busy": 0, "done": 1, "error": 6}
    assert isa.unpack(isa.Status, 0xFFFF00FD) == {"busy": 1, "done": 0, "error": 0}  # pad, high bits ignored


def test_node_descriptor_bits():
    # insn_offset bits 31:0, n_insn 47:32, kind 55:48; 1234 = 0x4D2
    assert isa.encode_descriptor(96, 1234, kind=7) == 0x0007_04D2_0000_0060
    blob = isa.pack_bytes(isa.NodeDescriptor, insn_offset=96, n_insn=1234, kind=7)
    assert blob == bytes([0x60, 0, 0, 0, 0xD2, 0x04, 0x07, 0x00])
    assert isa.unpack_bytes(isa.NodeDescriptor, blob) == {"insn_offset": 96, "n_insn": 1234, "kind": 7}
    assert isa.pack_bytes(isa.NodeDescriptor) == bytes(8)  # the end of a table
    with pytest.raises(FieldError, match="n_insn"):
        isa.encode_descriptor(0, 1 << 16)


def test_store_signed_fields_bits():
    # op 3:0, dep 7:4, base_reg 10:8, to_buf 11, single_round 12, pad 15:13, dram_offset 47:16, ... n_len 127:120,
    # out_zp 135:128, act_min 143:136, act_max 151:144, buf_row 167:152, buf_stride 183:168,
    # lane0 191:184
    word = isa.encode(Opcode.STORE, dram_offset=-8, out_zp=-1, act_min=-128, act_max=127,
                      dep={"push_prev": 1})
    assert word == (3 | 0b0100 << 4 | 0xFFFF_FFF8 << 16 | 0xFF << 128 | 0x80 << 136 | 0x7F << 144)
    assert isa.decode(word) == {"op": Opcode.STORE, "dep": {"pop_prev": 0, "pop_next": 0, "push_prev": 1,
                                                          "push_next": 0},
                                "base_reg": 0, "to_buf": 0, "single_round": 0, "dram_offset": -8,
                                "dram_stride": 0,
                                "psum_row": 0, "param_row": 0, "m_len": 0, "n_len": 0, "out_zp": -1,
                                "act_min": -128, "act_max": 127, "buf_row": 0, "buf_stride": 0, "lane0": 0}
    word = isa.encode(Opcode.STORE, to_buf=1, buf_row=0x1234, buf_stride=3, lane0=0xAB)
    assert word == 3 | 1 << 11 | 0x1234 << 152 | 3 << 168 | 0xAB << 184
    assert isa.encode(Opcode.STORE, single_round=1) == 3 | 1 << 12   # single_round 12, pad 15:13


def test_load_signed_fields_bits():
    # op 3:0, dep 7:4, buf 9:8, base_reg 12:10, pad_en 13, dram_offset 45:14; the loop fields
    # take 10+8+10+16+20+16+16+20+16+16+4*12 = 196 bits, so pad_value is 249:242
    word = isa.encode(Opcode.LOAD, buf=Buffer.PARAM, dram_offset=-(1 << 31), pad_value=-128)
    assert word == 1 | 2 << 8 | 0x8000_0000 << 14 | 0x80 << 242
    d = isa.decode(word)
    assert (d["buf"], d["dram_offset"], d["pad_value"]) == (Buffer.PARAM, -(1 << 31), -128)


# --- round trips and errors ------------------------------------------------------------------

def _random_fields(rng, layout, extreme=None):
    fields = {}
    for name, f in layout:
        if name.startswith("_") or name == "op":
            continue
        if name == "dep":
            fields[name] = {k: int(rng.integers(2)) for k, _ in isa.DepFlags}
        elif name == "buf":
            fields[name] = list(Buffer)[rng.integers(len(Buffer))]
        elif name == "mode":
            fields[name] = list(isa.VecMode)[rng.integers(len(isa.VecMode))]
        else:
            lo, hi = _signed_range(f.width) if _is_signed(f) else (0, (1 << f.width) - 1)
            fields[name] = {"min": lo, "max": hi}.get(extreme, int(rng.integers(lo, hi + 1)))
    return fields


@pytest.mark.parametrize("op", list(Opcode))
def test_encode_decode_round_trip(op):
    rng = np.random.default_rng(int(op.value))
    layout = _LAYOUTS[op]
    for i in range(200):
        fields = _random_fields(rng, layout, extreme={0: "min", 1: "max"}.get(i))
        word = isa.encode(op, **fields)
        assert 0 <= word < 1 << isa.INSN_BITS
        assert word & 0xF == op.value
        assert isa.decode(word) == {"op": op, **fields}
        assert isa.unpack(layout, word) == {"op": op, **fields}
        words = isa.encode_words(word)
        assert len(words) == isa.INSN_WORDS and all(0 <= w < 1 << 64 for w in words)
        assert isa.decode_words(words) == word
    # fields do not overlap: each field alone at all ones decodes to itself only
    for name, f in layout:
        if name.startswith("_") or name in ("op", "dep", "buf", "mode"):
            continue
        value = -1 if _is_signed(f) else (1 << f.width) - 1
        d = isa.decode(isa.encode(op, **{name: value}))
        assert d[name] == value
        assert all(v == 0 for k, v in d.items() if k not in (name, "op", "dep", "buf", "mode"))


@pytest.mark.parametrize("layout", [isa.ParamRecord, isa.Status, isa.NodeDescriptor])
def test_pack_unpack_round_trip(layout):
    rng = np.random.default_rng(layout.size)
    for i in range(100):
        fields = _random_fields(rng, layout, extreme={0: "min", 1: "max"}.get(i))
        value = isa.pack(layout, **fields)
        assert 0 <= value < 1 << layout.size
        assert isa.unpack(layout, value) == fields
        assert isa.unpack(layout, value | (int(rng.integers(1, 1 << 16)) << layout.size)) == fields
        blob = isa.pack_bytes(layout, **fields)
        assert len(blob) == layout.size // 8 and isa.unpack_bytes(layout, blob) == fields


def test_decode_illegal_opcode():
    for bits in range(len(Opcode), 16):
        assert isa.decode(bits) == {"op": bits, "illegal": True}


@pytest.mark.parametrize("layout", [isa.LoadInsn, isa.GemmInsn, isa.StoreInsn, isa.VecInsn,
                                    isa.ParamRecord, isa.Status, isa.NodeDescriptor])
def test_out_of_range_field_names_the_field(layout):
    for name, f in layout:
        if name.startswith("_") or name in ("op", "dep", "buf", "mode"):
            continue
        if _is_signed(f):
            lo, hi = _signed_range(f.width)
            bad = [lo - 1, hi + 1]
        else:
            bad = [-1, 1 << f.width]
        for value in bad:
            with pytest.raises(FieldError, match=rf"\b{name}\b"):
                isa.pack(layout, **{name: value})
    with pytest.raises(FieldError, match="unknown field 'bogus'"):
        isa.pack(layout, bogus=1)


@pytest.mark.parametrize("op", [Opcode.LOAD, Opcode.GEMM, Opcode.STORE])
def test_dep_flags_out_of_range(op):
    for flag, _ in isa.DepFlags:
        with pytest.raises(FieldError, match=flag):
            isa.encode(op, dep={flag: 2})
    with pytest.raises(FieldError, match="unknown field 'bogus'"):
        isa.encode(op, bogus=1)


@pytest.mark.parametrize("value", [3, 5, -1])
def test_out_of_range_buffer_field_raises(value):
    with pytest.raises(FieldError, match="field buf must be one of IFMAP=0"):
        isa.encode(Opcode.LOAD, buf=value)


# --- CSR / counter map, generated documents --------------------------------------------------

def test_counters_are_the_counter_csrs():
    assert isa.COUNTERS == (Csr.CYCLES, Csr.LOAD_BUSY, Csr.COMPUTE_BUSY, Csr.STORE_BUSY, Csr.MACS,
                            Csr.DRAM_RD, Csr.DRAM_WR, Csr.LOAD_COMPUTE_OVERLAP, Csr.INSNS, Csr.ZERO_SKIPS,
                            Csr.MAC_CYCLES)
    assert [c.value for c in isa.COUNTERS] == [16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27]


def _header_values(text):
    values = {m[1]: int(m[2], 0) for m in re.finditer(r"constexpr uint64_t (\w+) = (\w+?)ULL;", text)}
    m = re.search(r"COUNTERS\[N_COUNTERS\] = \{([\d, ]*)\};", text)
    return values, [int(v) for v in m[1].split(",")]


def test_c_header_values():
    values, counters = _header_values(isa.c_header(EXTRA=0x1234_5678_9ABC))
    for csr in Csr:
        assert values[f"CSR_{csr.name}"] == csr.value
    for err in ErrorCode:
        assert values[f"ERROR_{err.name}"] == err.value
    assert (values["STATUS_BUSY_MASK"], values["STATUS_DONE_MASK"], values["STATUS_ERROR_MASK"]) == (1, 2, 0xFF00)
    assert (values["STATUS_BUSY_SHIFT"], values["STATUS_DONE_SHIFT"], values["STATUS_ERROR_SHIFT"]) == (0, 1, 8)
    assert counters == [c.value for c in isa.COUNTERS] and values["N_COUNTERS"] == len(counters)
    assert values["EXTRA"] == 0x1234_5678_9ABC


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_c_header_compiles(tmp_path):
    (tmp_path / "celosia_isa.h").write_text(isa.c_header(MAGIC=7))
    (tmp_path / "t.cpp").write_text(
        '#include "celosia_isa.h"\n'
        "static_assert(celosia_isa::CSR_STATUS == 1 && celosia_isa::STATUS_DONE_MASK == 2);\n"
        "static_assert(celosia_isa::COUNTERS[9] == 26 && celosia_isa::MAGIC == 7);\n")
    subprocess.run(["c++", "-std=c++17", "-fsyntax-only", "t.cpp"], cwd=tmp_path, check=True)


def test_docs_isa_md_is_generated():
    out = subprocess.run([sys.executable, "-m", "celosia.rtl.isa"], check=True, capture_output=True,
                         text=True).stdout
    assert out == isa.markdown()
    for title in ("PPU parameter record (9 bytes)", "STATUS (CSR 1, read only)", "Node descriptor (64 bit)",
                  "Counters", "CSRs (32-bit word addresses)", "Error codes (STATUS bits 15:8)"):
        assert f"## {title}\n" in out, title
    assert "| 71:64 | `shift` | s8 |" in out and "| 15:8 | `error` | u8 |" in out
    doc = REPO / "docs" / "isa.md"
    assert doc.read_text() == out, "docs/isa.md is stale: run `python -m celosia.rtl.isa > docs/isa.md`"
