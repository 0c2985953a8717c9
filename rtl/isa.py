"""Celosia instruction set: the single definition of every binary format.

The RTL decodes these layouts, the compiler encodes with them (``encode``), the
disassembler decodes with them (``decode``) and ``docs/isa.md`` is generated from
them (``python -m celosia.rtl.isa``).

Program in DRAM (all little endian, 64-bit words):

* a **node descriptor table** at CSR ``PROG_BASE`` (byte address, 8-aligned):
  one 64-bit :data:`NodeDescriptor` per node of the low-level graph, ended by a
  descriptor with ``n_insn == 0``;
* each descriptor points (``insn_offset``, bytes from ``PROG_BASE``, 32-aligned)
  at a block of ``n_insn`` 256-bit instructions (4 words each, word 0 holds
  bits 0..63).

Every instruction starts with a :data:`Header`: the opcode selects the queue
(LOAD -> load queue, GEMM -> compute queue, STORE -> store queue) and four VTA-
style dependency flags. Queues are ordered LOAD(0) - COMPUTE(1) - STORE(2);
"prev"/"next" are the neighbours in that order. Before it starts, an instruction
waits for (and consumes) one token from each neighbour it ``pop``s; when it has
finished, it gives one token to each neighbour it ``push``es.

Addresses in DRAM are ``base_reg`` + ``dram_offset``: the driver links static
data (weights, parameters) and dynamic data (input, output, scratch) by writing
the base registers, so one program runs for every input.
"""

from __future__ import annotations

import enum

from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.lib import enum as hdl_enum

__all__ = [
    "Opcode", "Buffer", "VecMode", "VecInsn", "BaseReg", "ErrorCode", "Csr", "DepFlags", "Header",
    "LoadInsn", "GemmInsn", "StoreInsn", "Insn", "NodeDescriptor", "Status", "ParamRecord", "PARAM_BYTES",
    "INSN_BITS", "INSN_BYTES", "INSN_WORDS", "DESC_BYTES", "NUM_BASE_REGS",
    "encode", "decode", "encode_words", "decode_words", "markdown",
]

INSN_BITS = 256
INSN_WORDS = INSN_BITS // 64
INSN_BYTES = INSN_BITS // 8
DESC_BYTES = 8
NUM_BASE_REGS = 8


class Opcode(hdl_enum.Enum, shape=4):
    """Instruction opcodes. The opcode alone selects the queue."""
    NOP = 0    #: compute queue; only moves tokens
    LOAD = 1   #: load queue: DRAM -> ifmap / weight / param buffer
    GEMM = 2   #: compute queue: psum[m] (+)= ifmap[m] x weights
    STORE = 3  #: store queue: psum -> PPU -> DRAM (int8)
    VEC = 4    #: compute queue: lane-wise max / sum / add of ifmap rows into psum (pooling, residual add)


class Buffer(hdl_enum.Enum, shape=2):
    """On-chip buffers a LOAD can target."""
    IFMAP = 0   #: rows of `rows` int8 lanes
    WEIGHT = 1  #: rows of `cols` int8 lanes
    PARAM = 2   #: `param_rows * cols` rows of 9 byte lanes, one output channel's bias int32 LE, M0 int32 LE, shift int8


class BaseReg(enum.IntEnum):
    """Conventional use of the base registers by the compiler and driver."""
    PROGRAM = 0
    STATIC = 1   #: weights and PPU parameters (linked once)
    INPUT = 2    #: network input (linked per inference)
    OUTPUT = 3   #: network output (linked per inference)
    SCRATCH = 4  #: intermediate feature maps


class ErrorCode(enum.IntEnum):
    """STATUS.error: why the machine stopped. 0 = no error."""
    NONE = 0
    ILLEGAL_OPCODE = 1      #: an instruction with an unknown opcode was fetched
    DMA_OUT_OF_WINDOW = 2   #: a LOAD/STORE/fetch would touch DRAM outside the window; nothing written
    BUFFER_OUT_OF_RANGE = 3  #: an instruction addresses past the end of an on-chip buffer
    TOKEN_DEADLOCK = 4      #: every queue waits for a token nobody will give (token underflow)
    TOKEN_OVERFLOW = 5      #: a token counter would exceed its maximum
    BAD_DESCRIPTOR = 6      #: a node descriptor points outside the window or is misaligned


class Csr(enum.IntEnum):
    """CSR word addresses (32-bit registers)."""
    CTRL = 0         #: write 1: start (counters reset); reads 0
    STATUS = 1       #: bit0 busy, bit1 done, bits 8..15 error code
    PROG_BASE = 2    #: byte address of the node descriptor table
    WINDOW_BASE = 3  #: first DRAM byte the machine may touch
    WINDOW_SIZE = 4  #: bytes in the window (0: whole DRAM)
    BASE0 = 8        #: base registers BASE0 .. BASE0+7
    CYCLES = 16      #: cycles from start to done
    LOAD_BUSY = 17   #: cycles the load engine was executing an instruction
    COMPUTE_BUSY = 18  #: cycles the PE array was busy (weight preload + streaming)
    STORE_BUSY = 19  #: cycles the store engine was executing an instruction
    MACS = 20        #: useful multiply-accumulates issued (k_len * n_len per input row)
    DRAM_RD = 21     #: DRAM bytes read by load DMA + instruction fetch
    DRAM_WR = 22     #: DRAM bytes written
    LOAD_COMPUTE_OVERLAP = 23  #: cycles where load and compute were both busy
    INSNS = 24       #: instructions executed
    ERROR_INFO = 25  #: index of the instruction (fetch order) that raised the error
    ZERO_SKIPS = 26  #: MAC cycles the compute engine skipped for zero inputs (feie)


DepFlags = data.StructLayout({
    "pop_prev": unsigned(1),
    "pop_next": unsigned(1),
    "push_prev": unsigned(1),
    "push_next": unsigned(1),
})


Header = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
})

#: DRAM -> buffer. For i2 < n2, i1 < n1, i0 < n0: buffer row
#: ``buf_row + i2*buf_stride2 + i1*buf_stride1``, lane ``lane0 + i0`` gets the byte at DRAM
#: ``base[base_reg] + dram_offset + i2*dram_stride2 + i1*dram_stride1 + i0*dram_stride0``
#: (``dram_offset`` is signed) -- or, when ``pad_en`` is set and ``i1`` is outside
#: ``[pad_lo1, pad_hi1)`` or ``i2`` outside ``[pad_lo2, pad_hi2)``, the byte ``pad_value``,
#: without touching DRAM. This is how convolution padding is inserted on load (the
#: compiler sets ``pad_value`` to the input zero point). Only the addresses of the
#: elements actually read are checked against the DRAM window.
LoadInsn = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
    "buf": Buffer,
    "base_reg": unsigned(3),
    "pad_en": unsigned(1),
    "dram_offset": unsigned(32),   # two's complement
    "n0": unsigned(10),
    "dram_stride0": unsigned(8),
    "lane0": unsigned(10),
    "n1": unsigned(16),
    "dram_stride1": unsigned(20),
    "buf_stride1": unsigned(16),
    "n2": unsigned(16),
    "dram_stride2": unsigned(20),
    "buf_stride2": unsigned(16),
    "buf_row": unsigned(16),
    "pad_lo1": unsigned(12),
    "pad_hi1": unsigned(12),
    "pad_lo2": unsigned(12),
    "pad_hi2": unsigned(12),
    "pad_value": unsigned(8),      # two's complement int8
})

#: Plain GEMM (``window = 0``; the ws, os and feie arrays):
#: psum[psum_row + m][n] = (accumulate ? psum[psum_row + m][n] : 0)
#:     + sum_{k < k_len} (ifmap[ifmap_row + m][k] - in_zp) * weight[weight_row + k][n]
#: for m < m_len, n < n_len (lanes n >= n_len are left unchanged). ``in_zp`` (the input
#: zero point, so that a real zero is skipped) is for feie only: 0 for the others.
#: Windowed GEMM (``window = 1``; the rs array only), a convolution over raw ifmap rows:
#: for e < out_h, x < out_w (``m_len = out_h * out_w``), n < n_len:
#: psum[psum_row + e*out_w + x][n] = (accumulate ? old : 0) + sum_{fh < win_h, fw < win_w, c < k_len}
#:     ifmap[ifmap_row + (e*stride_h + fh*dil_h)*row_pitch + x*stride_w + fw*dil_w][c]
#:     * weight[weight_row + (fh*win_w + fw)*k_len + c][n].
#: With a 1x1 window, unit strides and ``row_pitch = out_w`` it is the plain GEMM.
GemmInsn = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
    "accumulate": unsigned(1),
    "window": unsigned(1),
    "_pad0": unsigned(6),
    "ifmap_row": unsigned(16),
    "weight_row": unsigned(16),
    "psum_row": unsigned(16),
    "m_len": unsigned(16),
    "k_len": unsigned(8),
    "n_len": unsigned(8),
    "win_h": unsigned(8),
    "win_w": unsigned(8),
    "stride_h": unsigned(8),
    "stride_w": unsigned(8),
    "dil_h": unsigned(8),
    "dil_w": unsigned(8),
    "row_pitch": unsigned(16),
    "out_w": unsigned(16),
    "out_h": unsigned(8),
    "in_zp": unsigned(8),          # two's complement int8; feie only
})

#: For m < m_len, n < n_len: byte at DRAM
#: ``base[base_reg] + dram_offset + m*dram_stride + n`` (``dram_offset`` signed) = PPU(psum[psum_row + m][n],
#: param[param_row + n]): int8 of clamp(MBQM(acc + bias, M0, shift) + out_zp, act_min, act_max).
StoreInsn = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
    "base_reg": unsigned(3),
    "_pad0": unsigned(5),
    "dram_offset": unsigned(32),   # two's complement
    "dram_stride": unsigned(24),
    "psum_row": unsigned(16),
    "param_row": unsigned(16),
    "m_len": unsigned(16),
    "n_len": unsigned(8),
    "out_zp": unsigned(8),   # two's complement int8
    "act_min": unsigned(8),  # two's complement int8
    "act_max": unsigned(8),  # two's complement int8
})

class VecMode(hdl_enum.Enum, shape=2):
    """What the vector engine computes per lane (see :data:`VecInsn`)."""
    MAX = 0  #: max pooling
    SUM = 1  #: average / global average pooling (the STORE's requantization divides)
    ADD = 2  #: residual add with scale alignment (TFLite's int8 Add, first stage)


#: For m < m_len and lane l < lanes, with x_j = int8(ifmap[ifmap_row + m*win + j][l]), j < win:
#:   MAX: psum[psum_row + m][l] = max_j x_j - in_zp
#:   SUM: psum[psum_row + m][l] = sum_j (x_j - in_zp)
#:   ADD (win = 2): psum[psum_row + m][l] =
#:        MBQM((x_0 - in_zp) << left_shift, a_m0, a_shift) + MBQM((x_1 - b_zp) << left_shift, b_m0, b_shift)
#: (int32 wrapping; MBQM as the PPU). Lanes >= lanes are not written. The STORE that
#: follows applies bias, the output multiplier, the zero point and the clamp.
VecInsn = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
    "mode": VecMode,
    "left_shift": unsigned(5),
    "_pad0": unsigned(1),
    "ifmap_row": unsigned(16),
    "psum_row": unsigned(16),
    "m_len": unsigned(16),
    "win": unsigned(16),
    "lanes": unsigned(8),
    "in_zp": unsigned(8),     # two's complement int8 (ADD: a's zero point)
    "b_zp": unsigned(8),      # two's complement int8
    "a_shift": unsigned(8),   # two's complement
    "b_shift": unsigned(8),   # two's complement
    "a_m0": unsigned(32),
    "b_m0": unsigned(32),
})

#: View of any instruction; ``hdr`` is valid for all.
Insn = data.UnionLayout({
    "hdr": Header,
    "load": LoadInsn,
    "gemm": GemmInsn,
    "store": StoreInsn,
    "vec": VecInsn,
    "raw": unsigned(INSN_BITS),
})

#: The STATUS CSR (read only): ``busy`` while a program runs, ``done`` once it stopped,
#: ``error`` the :class:`ErrorCode` it stopped with (0: none).
Status = data.StructLayout({
    "busy": unsigned(1),
    "done": unsigned(1),
    "_pad0": unsigned(6),
    "error": unsigned(8),
})

#: One output channel's PPU parameters, in DRAM (little endian, packed) and in one row of
#: the parameter buffer: ``int8(clamp(MBQM(acc + bias, m0, shift) + out_zp, ...))``.
ParamRecord = data.StructLayout({
    "bias": signed(32),
    "m0": signed(32),
    "shift": signed(8),
})

#: Bytes of one :data:`ParamRecord`.
PARAM_BYTES = ParamRecord.size // 8

NodeDescriptor = data.StructLayout({
    "insn_offset": unsigned(32),  # bytes from PROG_BASE, multiple of 32
    "n_insn": unsigned(16),       # 0 ends the table
    "kind": unsigned(8),          # informational: compiler's node kind
    "_pad0": unsigned(8),
})

#: Fields holding two's complement values: encode takes Python ints, decode returns them.
_SIGNED = {"out_zp": 8, "act_min": 8, "act_max": 8, "pad_value": 8, "dram_offset": 32,
           "in_zp": 8, "b_zp": 8, "a_shift": 8, "b_shift": 8}
_BY_OP = {Opcode.LOAD: LoadInsn, Opcode.GEMM: GemmInsn, Opcode.STORE: StoreInsn,
          Opcode.VEC: VecInsn, Opcode.NOP: Header}

for _layout in (LoadInsn, GemmInsn, StoreInsn, VecInsn, Header):
    assert _layout.size <= INSN_BITS, _layout
assert NodeDescriptor.size == 64


_FIELD_TABLES: dict = {}
_PLAIN, _SIGNED_FIELD, _ENUM, _STRUCT = range(4)


def _fields(layout) -> dict:
    """``name -> (offset, kind, arg)`` of a layout, computed once (encoding is hot: the
    compiler encodes up to millions of instructions per model). ``arg``: the width
    (plain), the two's complement width (signed), the enum class or the struct layout."""
    table = _FIELD_TABLES.get(id(layout))
    if table is None:
        table = {}
        for name, f in layout:
            shape = f.shape
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                table[name] = (f.offset, _ENUM, shape)
            elif isinstance(shape, data.StructLayout):
                table[name] = (f.offset, _STRUCT, shape)
            elif name in _SIGNED:
                table[name] = (f.offset, _SIGNED_FIELD, _SIGNED[name])
            else:
                table[name] = (f.offset, _PLAIN, f.width)
        _FIELD_TABLES[id(layout)] = table
    return table


def _field_value(name, kind, arg, value):
    if kind == _PLAIN:
        value = int(value)
        if not 0 <= value < (1 << arg):
            raise ValueError(f"instruction field {name} must be 0..{(1 << arg) - 1}, not {value}")
        return value
    if kind == _SIGNED_FIELD:
        value = int(value)
        if not -(1 << (arg - 1)) <= value < (1 << (arg - 1)):
            raise ValueError(f"{name} must be {-(1 << (arg - 1))}..{(1 << (arg - 1)) - 1}, not {value}")
        return value & ((1 << arg) - 1)
    if kind == _ENUM:
        if isinstance(value, arg):
            return value.value
        try:
            return arg(int(value)).value
        except ValueError:
            raise ValueError(f"instruction field {name} must be one of "
                             f"{', '.join(f'{m.name}={m.value}' for m in arg)}, not {value!r}") from None
    return _pack(arg, value or {})  # DepFlags given as a dict


def _pack(layout, fields: dict) -> int:
    table = _fields(layout)
    word = 0
    for name, value in fields.items():
        try:
            offset, kind, arg = table[name]
        except KeyError:
            raise ValueError(f"unknown field {name!r}; fields: "
                             f"{', '.join(n for n in table if not n.startswith('_'))}") from None
        if kind == _PLAIN and type(value) is int and 0 <= value < (1 << arg):  # the usual case
            word |= value << offset
        else:
            word |= _field_value(name, kind, arg, value) << offset
    return word


def encode(op: Opcode, **fields) -> int:
    """Encode one instruction to a 256-bit integer.

    ``dep`` is a dict of the DepFlags bits (``{"push_next": 1}``); signed fields
    (``out_zp``, ``act_min``, ``act_max``) take Python ints in -128..127.
    """
    layout = _BY_OP[op]
    return _pack(layout, {"op": op, **fields})


def decode(word: int) -> dict:
    """Decode a 256-bit instruction to a dict of fields (the inverse of :func:`encode`)."""
    op_bits = word & 0xF
    try:
        op = Opcode(op_bits)
    except ValueError:
        return {"op": op_bits, "illegal": True}
    layout = _BY_OP[op]
    out = {}
    for name, field in layout:
        if name.startswith("_"):
            continue
        raw = (word >> field.offset) & ((1 << field.width) - 1)
        if name == "op":
            out[name] = op
        elif name == "dep":
            out[name] = {n: (raw >> f.offset) & 1 for n, f in DepFlags}
        elif name == "buf":
            out[name] = Buffer(raw)
        elif name == "mode":
            out[name] = VecMode(raw)
        elif name in _SIGNED:
            bits = _SIGNED[name]
            out[name] = raw - (1 << bits) if raw >> (bits - 1) else raw
        else:
            out[name] = raw
    return out


def encode_words(word: int, nwords: int = INSN_WORDS) -> list[int]:
    return [(word >> (64 * i)) & ((1 << 64) - 1) for i in range(nwords)]


def decode_words(words) -> int:
    return sum(int(w) << (64 * i) for i, w in enumerate(words))


def encode_descriptor(insn_offset: int, n_insn: int, kind: int = 0) -> int:
    return _pack(NodeDescriptor, {"insn_offset": insn_offset, "n_insn": n_insn, "kind": kind})


def markdown() -> str:
    """The ISA reference (docs/isa.md), generated from the layouts above."""
    lines = ["# Celosia ISA", "",
             "Generated by `python -m celosia.rtl.isa` from `rtl/isa.py`; do not edit.", "",
             __doc__.strip(), ""]

    def table(title, layout, doc=""):
        lines.extend([f"## {title}", ""])
        if doc:
            lines.extend([doc, ""])
        lines.extend(["| bits | field | width |", "| --- | --- | --- |"])
        for name, field in layout:
            if name.startswith("_"):
                continue
            hi = field.offset + field.width - 1
            lines.append(f"| {hi}:{field.offset} | `{name}` | {field.width} |")
        lines.append("")

    def enum_table(title, cls):
        lines.extend([f"## {title}", "", "| value | name |", "| --- | --- |"])
        for member in cls:
            lines.append(f"| {member.value} | `{member.name}` |")
        lines.append("")

    enum_table("Opcodes", Opcode)
    enum_table("LOAD target buffers", Buffer)
    table("Dependency flags (`dep`)", DepFlags)
    table("LOAD", LoadInsn, "DRAM -> on-chip buffer, three nested loops, one byte per step.")
    table("GEMM", GemmInsn, "Compute queue: one weight tile times `m_len` input rows (`window = 0`; "
          "ws, os, feie), or a convolution window over raw ifmap rows (`window = 1`; rs): "
          "for `e < out_h`, `x < out_w`, `n < n_len`, psum row `psum_row + e*out_w + x` gets "
          "the sum over `fh < win_h`, `fw < win_w`, `c < k_len` of ifmap row "
          "`ifmap_row + (e*stride_h + fh*dil_h)*row_pitch + x*stride_w + fw*dil_w` lane `c` "
          "times weight row `weight_row + (fh*win_w + fw)*k_len + c` lane `n`; "
          "`m_len = out_h*out_w`. The `win_*` .. `out_h` fields are ignored when `window = 0`. "
          "`in_zp` (feie only, 0 otherwise) is subtracted from every ifmap value: the feie array "
          "skips inputs equal to it (real zeros). "
          "Which form an engine takes is fixed by the dataflow (the other is an error).")
    table("STORE", StoreInsn, "psum buffer -> PPU (bias, requantize, zero point, clamp) -> DRAM.")
    enum_table("VEC modes", VecMode)
    table("VEC", VecInsn, "Compute queue, vector engine: pooling and residual add, lane-wise over ifmap rows.")
    table("Node descriptor (64 bit)", NodeDescriptor)
    enum_table("CSRs (32-bit word addresses)", Csr)
    enum_table("Base registers (compiler convention)", BaseReg)
    enum_table("Error codes (STATUS bits 15:8)", ErrorCode)
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    sys.stdout.write(markdown())
