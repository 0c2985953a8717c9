"""Celosia instruction set: the single definition of every host-visible format.

Instructions, node descriptors, the PPU parameter record, the STATUS register, the
error codes and the CSR / counter map. Fields holding two's complement values have
signed shapes. The RTL reads these layouts as views; everything else converts
with the one generic :func:`pack` / :func:`unpack` (``encode`` / ``decode`` for
instructions); the C++ Verilator harness includes :func:`c_header`, and
``docs/isa.md`` is generated from them (``python -m celosia.rtl.isa``).

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

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data
from amaranth.lib import enum as hdl_enum

from celosia.errors import FieldError

__all__ = [
    "Opcode", "Buffer", "VecMode", "VecInsn", "BaseReg", "ErrorCode", "Csr", "DepFlags", "Header",
    "LoadInsn", "GemmInsn", "StoreInsn", "Insn", "NodeDescriptor", "Status", "ParamRecord", "PARAM_BYTES",
    "COUNTERS", "SNAPSHOTS", "INSN_BITS", "INSN_BYTES", "INSN_WORDS", "DESC_BYTES", "NUM_BASE_REGS",
    "pack", "packer", "unpack", "pack_bytes", "unpack_bytes", "encode", "decode", "encode_words", "decode_words",
    "encode_descriptor", "field_max", "markdown", "c_header",
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
    STORE = 3  #: store queue: psum -> PPU -> DRAM or the ifmap buffer (int8)
    VEC = 4    #: compute queue: lane-wise max / sum / add of ifmap rows into psum (pooling, residual add)


class Buffer(hdl_enum.Enum, shape=2):
    """On-chip buffers a LOAD can target."""
    IFMAP = 0   #: rows of `rows` int8 lanes
    WEIGHT = 1  #: rows of `cols` int8 lanes
    PARAM = 2   #: `param_rows * cols` rows of 9 byte lanes, one output channel's :data:`ParamRecord` each


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
    #: a LOAD or fetch would read DRAM outside the read window, or a STORE write outside the
    #: write window; nothing is written, FAULT_ADDR holds the faulting byte address
    DMA_OUT_OF_WINDOW = 2
    BUFFER_OUT_OF_RANGE = 3  #: an instruction addresses past the end of an on-chip buffer
    TOKEN_DEADLOCK = 4      #: every queue waits for a token nobody will give (token underflow)
    TOKEN_OVERFLOW = 5      #: a token counter would exceed its maximum
    BAD_DESCRIPTOR = 6      #: a node descriptor or instruction lies outside the read window or is misaligned
    #: no instruction was pushed into a queue or completed for WATCHDOG cycles (a hang);
    #: ERROR_INFO holds the oldest queue head's index (the next instruction's if none)
    WATCHDOG = 7


class Csr(enum.IntEnum):
    """CSR word addresses (32-bit registers)."""
    CTRL = 0         #: write 1: start (counters reset); reads 0
    STATUS = 1       #: bit0 busy, bit1 done, bits 8..15 error code
    PROG_BASE = 2    #: byte address of the node descriptor table
    WINDOW_BASE = 3  #: read window: first DRAM byte LOADs and instruction fetch may read
    WINDOW_SIZE = 4  #: bytes in the read window (0: whole DRAM)
    WR_BASE = 5      #: write window: first DRAM byte STOREs may write
    WR_SIZE = 6      #: bytes in the write window (0: whole DRAM)
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
    MAC_CYCLES = 27  #: cycles in which the feie array multiplied an input (0 on the other arrays)
    #: DMA_OUT_OF_WINDOW / BAD_DESCRIPTOR: a DRAM byte address outside the window (the
    #: access's first byte when it starts below the window, else its last byte; fetch:
    #: the refused descriptor or instruction address); 0 after other stops
    FAULT_ADDR = 28
    #: progress watchdog (cycles, 0 = off; kept across runs): the machine stops with error
    #: WATCHDOG when no instruction is pushed into a queue or completes for this many cycles
    WATCHDOG = 29
    #: node boundaries passed since the start: the SNAP_* CSRs hold the counters at the
    #: boundary of node NODES_DONE - 1 (node = a run of descriptors of one ``kind``)
    NODES_DONE = 30
    SNAP_CYCLES = 32   #: CYCLES at the latest node boundary (SNAP_*: see NODES_DONE)
    SNAP_LOAD_BUSY = 33  #: LOAD_BUSY at the latest node boundary
    SNAP_COMPUTE_BUSY = 34  #: COMPUTE_BUSY at the latest node boundary
    SNAP_STORE_BUSY = 35  #: STORE_BUSY at the latest node boundary
    SNAP_MACS = 36     #: MACS at the latest node boundary
    SNAP_DRAM_RD = 37  #: DRAM_RD at the latest node boundary
    SNAP_DRAM_WR = 38  #: DRAM_WR at the latest node boundary
    SNAP_LOAD_COMPUTE_OVERLAP = 39  #: LOAD_COMPUTE_OVERLAP at the latest node boundary
    SNAP_INSNS = 40    #: INSNS at the latest node boundary
    SNAP_ZERO_SKIPS = 41  #: ZERO_SKIPS at the latest node boundary
    SNAP_MAC_CYCLES = 42  #: MAC_CYCLES at the latest node boundary


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
    "dram_offset": signed(32),
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
    "pad_value": signed(8),
})

#: Plain GEMM (``window = 0``; the ws, os and feie arrays):
#: psum[psum_row + m][n] = (accumulate ? psum[psum_row + m][n] : 0)
#:     + sum_{k < k_len} (ifmap[ifmap_row + m][k] - in_zp) * weight[weight_row + k][n]
#: for m < m_len, n < n_len (lanes n >= n_len are left unchanged). ``in_zp`` (the input
#: zero point, so that a real zero is skipped) is for feie only: 0 for the others.
#: Windowed GEMM (``window = 1``), a convolution over raw ifmap rows: any window on the rs
#: array; one kernel tap (``win_h = win_w = 1``) on ws and os, whose ifmap read path
#: walks the rows with a window address generator (the compiler folds the tap offset
#: ``fh*dil_h*row_pitch + fw*dil_w`` into ``ifmap_row``; a larger window is an error there);
#: one kernel row of up to ``FEIE_TAPS`` taps on feie (``win_h = 1``, ``win_w <= 3``; with
#: several taps ``dil_w = 1`` and ``stride_w <= win_w``, or ``dil_w = stride_w``:
#: rtl/arrays/engine.py):
#: for e < out_h, x < out_w (``m_len = out_h * out_w``), n < n_len:
#: psum[psum_row + e*out_w + x][n] = (accumulate ? old : 0) + sum_{fh < win_h, fw < win_w, c < k_len}
#:     ifmap[ifmap_row + (e*stride_h + fh*dil_h)*row_pitch + x*stride_w + fw*dil_w][c]
#:     * weight[weight_row + (fh*win_w + fw)*k_len + c][n].
#: With a 1x1 window, unit strides and ``row_pitch = out_w`` it is the plain GEMM. Which
#: forms an engine takes is the dataflow's ``gemm_window`` trait (rtl/dataflows.py); the
#: plain GEMM is for ws, os and feie only.
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
    "in_zp": signed(8),            # feie only
})

#: For m < m_len, n < n_len: PPU(psum[psum_row + m][n], param[param_row + n]) = int8 of
#: clamp(MBQM(acc + bias, M0, shift) + out_zp, act_min, act_max) (MBQM: TFLite's
#: MultiplyByQuantizedMultiplier, double rounding; with ``single_round = 1`` its single-rounding
#: form ``(x*M0 + 2^(t-1)) >> t``, ``t = 31 - shift`` clamped to 1..62, wrapped to int32:
#: celosia.sim.golden.requant) goes, with ``to_buf = 0``,
#: to the byte at DRAM ``base[base_reg] + dram_offset + m*dram_stride + n`` (``dram_offset``
#: signed), or, with ``to_buf = 1`` (a layer's output kept on chip as the next layer's input),
#: to ifmap buffer row ``buf_row + m*buf_stride``, lane ``lane0 + n`` (the DRAM fields are
#: then ignored and nothing is written to DRAM).
StoreInsn = data.StructLayout({
    "op": Opcode,
    "dep": DepFlags,
    "base_reg": unsigned(3),
    "to_buf": unsigned(1),
    "single_round": unsigned(1),
    "_pad0": unsigned(3),
    "dram_offset": signed(32),
    "dram_stride": unsigned(24),
    "psum_row": unsigned(16),
    "param_row": unsigned(16),
    "m_len": unsigned(16),
    "n_len": unsigned(8),
    "out_zp": signed(8),
    "act_min": signed(8),
    "act_max": signed(8),
    "buf_row": unsigned(16),
    "buf_stride": unsigned(16),
    "lane0": unsigned(8),
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
    "in_zp": signed(8),       # ADD: a's zero point
    "b_zp": signed(8),
    "a_shift": signed(8),
    "b_shift": signed(8),
    "a_m0": signed(32),
    "b_m0": signed(32),
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

_BY_OP = {Opcode.LOAD: LoadInsn, Opcode.GEMM: GemmInsn, Opcode.STORE: StoreInsn,
          Opcode.VEC: VecInsn, Opcode.NOP: Header}

#: The counter CSRs, in the order the driver reports them: START resets them, the host
#: reads them back after every run.
COUNTERS = (Csr.CYCLES, Csr.LOAD_BUSY, Csr.COMPUTE_BUSY, Csr.STORE_BUSY, Csr.MACS, Csr.DRAM_RD,
            Csr.DRAM_WR, Csr.LOAD_COMPUTE_OVERLAP, Csr.INSNS, Csr.ZERO_SKIPS, Csr.MAC_CYCLES)

#: The snapshot CSR of each counter (:data:`COUNTERS` order): its value at the latest
#: node boundary (rtl/controller/nodes.py).
SNAPSHOTS = tuple(Csr[f"SNAP_{c.name}"] for c in COUNTERS)

for _layout in (LoadInsn, GemmInsn, StoreInsn, VecInsn, Header):
    assert _layout.size <= INSN_BITS, _layout
assert NodeDescriptor.size == DESC_BYTES * 8
assert Status.size <= 32


def field_max(layout, name: str) -> int:
    """The largest value the unsigned field ``name`` of ``layout`` holds (``2**width - 1``):
    what the compiler checks its fields against."""
    return (1 << dict(layout)[name].width) - 1


_FIELD_TABLES: dict = {}
_UINT, _SINT, _ENUM, _STRUCT = range(4)


def _fields(layout) -> dict:
    """``name -> (offset, width, kind, arg)`` of a layout, computed once (encoding is hot:
    the compiler encodes up to millions of instructions per model). ``kind`` follows the
    field's shape: plain unsigned, signed (two's complement), an enum (``arg``: its class)
    or a nested struct (``arg``: its layout)."""
    table = _FIELD_TABLES.get(id(layout))
    if table is None:
        table = {}
        for name, f in layout:
            shape = f.shape
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                table[name] = (f.offset, f.width, _ENUM, shape)
            elif isinstance(shape, data.StructLayout):
                table[name] = (f.offset, f.width, _STRUCT, shape)
            elif Shape.cast(shape).signed:
                table[name] = (f.offset, f.width, _SINT, None)
            else:
                table[name] = (f.offset, f.width, _UINT, None)
        _FIELD_TABLES[id(layout)] = table
    return table


def _field_bits(name, width, kind, arg, value) -> int:
    """The ``width`` bits of field ``name`` holding ``value``; ValueError when it does not fit."""
    if kind == _UINT:
        value = int(value)
        if not 0 <= value < (1 << width):
            raise FieldError(f"field {name} must be 0..{(1 << width) - 1}, not {value}")
        return value
    if kind == _SINT:
        value = int(value)
        if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
            raise FieldError(f"field {name} must be {-(1 << (width - 1))}..{(1 << (width - 1)) - 1}, "
                             f"not {value}")
        return value & ((1 << width) - 1)
    if kind == _ENUM:
        if isinstance(value, arg):
            return value.value
        try:
            return arg(int(value)).value
        except ValueError:
            raise FieldError(f"field {name} must be one of "
                             f"{', '.join(f'{m.name}={m.value}' for m in arg)}, not {value!r}") from None
    if type(value) is int:   # a nested struct (DepFlags) as its packed bits
        if not 0 <= value < (1 << width):
            raise FieldError(f"field {name} must be 0..{(1 << width) - 1}, not {value}")
        return value
    return pack(arg, **(value or {}))  # a nested struct as a dict of its fields


def pack(layout: data.Layout, **fields) -> int:
    """The integer whose bits hold ``fields`` as ``layout`` places them (bit 0 = bit 0 of
    the first byte in memory, little endian).

    Missing fields are 0. Plain fields take ints ``0 .. 2**width - 1``, signed fields
    (``signed(n)`` shapes) ints ``-2**(n-1) .. 2**(n-1) - 1``, enum fields a member or its
    value, nested structs a dict of their fields or their packed int. A value that does
    not fit, or a field ``layout`` does not have, is a :class:`ValueError` naming the field.

    Runs the layout's :func:`packer` (every field's offset, width and range compiled into
    one function); what it does not take (an unknown field) goes through the field-by-field
    loop, which names the field.
    """
    try:
        return packer(layout)(**fields)
    except TypeError:   # an unknown field (or a value of no integer type): the loop says which
        return _pack_loop(layout, fields)


def _pack_loop(layout: data.Layout, fields: dict) -> int:
    """:func:`pack`, field by field (the reference the compiled :func:`packer` equals)."""
    table = _fields(layout)
    word = 0
    for name, value in fields.items():
        try:
            offset, width, kind, arg = table[name]
        except KeyError:
            raise FieldError(f"unknown field {name!r}; fields: "
                             f"{', '.join(n for n in table if not n.startswith('_'))}") from None
        word |= _field_bits(name, width, kind, arg, value) << offset
    return word


_PACKERS: dict = {}
_ABSENT = object()   # a packer's default for an enum or struct field left out (0 bits)


def packer(layout: data.Layout, names: tuple[str, ...] | None = None):
    """A function equal to :func:`pack` of ``layout``, generated once per layout and
    ``names`` with every field's offset, width and range as constants (the compiler packs
    up to millions of instructions per model).

    Without ``names``: ``f(**fields) -> int``, every field a keyword argument defaulting
    to 0 (an unknown one is a ``TypeError``, which :func:`pack` turns into the
    :class:`FieldError` naming it). With ``names`` (fields of ``layout``): ``f(*values) ->
    int``, the values of those fields in that order, the others 0. A plain int in range
    costs one comparison and a shift; anything else (an enum member's value, a nested
    struct's dict, a value out of range: the :class:`FieldError` naming the field) goes
    through :func:`pack`'s per-field rules."""
    key = (id(layout), names)   # (the cache holds the layout: its id stays its own)
    fn = _PACKERS.get(key, (None, None))[1]
    if fn is None:
        table = _fields(layout)
        assert "w_" not in table
        if names is None:
            head = "*, " + ", ".join(f"{name}={'0' if kind <= _SINT else '_absent'}"
                                     for name, (_, _, kind, _) in table.items())
        else:
            unknown = [name for name in names if name not in table]
            if unknown:
                raise FieldError(f"unknown field {unknown[0]!r}; fields: "
                                 f"{', '.join(n for n in table if not n.startswith('_'))}")
            head = ", ".join(names)
        body = [f"def _pack({head}):", "    w_ = 0"]   # (no field is named w_)
        for name in table if names is None else names:
            offset, width, kind, arg = table[name]
            slow = f"        w_ |= _bits({name!r}, {width}, {kind}, _arg_{name}, {name}) << {offset}"
            if kind == _UINT:
                body += [f"    if {name}.__class__ is int and 0 <= {name} < {1 << width}:",
                         f"        w_ |= {name} << {offset}", "    else:", slow]
            elif kind == _SINT:
                half = 1 << (width - 1)
                body += [f"    if {name}.__class__ is int and {-half} <= {name} < {half}:",
                         f"        w_ |= ({name} & {(1 << width) - 1}) << {offset}", "    else:", slow]
            elif kind == _ENUM:
                body += [f"    if {name}.__class__ is _arg_{name}:",
                         f"        w_ |= {name}.value << {offset}",
                         f"    elif {name} is not _absent:", slow]
            else:   # a nested struct: its packed int, or its dict
                body += [f"    if {name}.__class__ is int and 0 <= {name} < {1 << width}:",
                         f"        w_ |= {name} << {offset}",
                         f"    elif {name} is not _absent and {name}:", slow]
        body.append("    return w_")
        scope = {"_bits": _field_bits, "_absent": _ABSENT,
                 **{f"_arg_{name}": f[3] for name, f in table.items()}}
        exec("\n".join(body), scope)   # noqa: S102 - code generated from the layout's own table
        fn = scope["_pack"]
        _PACKERS[key] = (layout, fn)
    return fn


def unpack(layout: data.Layout, value: int) -> dict:
    """The fields of ``layout`` in the integer ``value`` (the inverse of :func:`pack`):
    ``name -> int`` (signed fields as negative ints where their top bit is set), enum
    fields as members (a value that names no member, e.g. a LOAD's ``buf = 3``, as the
    plain int: the hardware decodes it and rejects the instruction), nested structs as
    dicts. Fields named ``_...`` (padding) are left out; bits of ``value`` beyond
    ``layout.size`` are ignored."""
    value = int(value)
    out = {}
    for name, (offset, width, kind, arg) in _fields(layout).items():
        if name.startswith("_"):
            continue
        raw = (value >> offset) & ((1 << width) - 1)
        if kind == _UINT:
            out[name] = raw
        elif kind == _SINT:
            out[name] = raw - (1 << width) if raw >> (width - 1) else raw
        elif kind == _ENUM:
            out[name] = arg._value2member_map_.get(raw, raw)
        else:
            out[name] = unpack(arg, raw)
    return out


def pack_bytes(layout: data.Layout, **fields) -> bytes:
    """:func:`pack` as the ``layout.size // 8`` bytes it occupies in memory (little endian)."""
    return pack(layout, **fields).to_bytes(layout.size // 8, "little")


def unpack_bytes(layout: data.Layout, blob) -> dict:
    """:func:`unpack` of the first ``layout.size // 8`` bytes of ``blob`` (little endian)."""
    return unpack(layout, int.from_bytes(bytes(blob[:layout.size // 8]), "little"))


def encode(op: Opcode, **fields) -> int:
    """Encode one instruction to a 256-bit integer: :func:`pack` of the opcode's layout.

    ``dep`` is a dict of the DepFlags bits (``{"push_next": 1}``); signed fields
    (``out_zp``, ``dram_offset``, ...) take Python ints in their two's complement range.
    """
    return pack(_BY_OP[op], op=op, **fields)


def decode(word: int) -> dict:
    """Decode a 256-bit instruction to a dict of fields (the inverse of :func:`encode`);
    ``{"op": bits, "illegal": True}`` for an unknown opcode."""
    op_bits = word & 0xF
    try:
        op = Opcode(op_bits)
    except ValueError:
        return {"op": op_bits, "illegal": True}
    return unpack(_BY_OP[op], word)


def encode_words(word: int, nwords: int = INSN_WORDS) -> list[int]:
    return [(word >> (64 * i)) & ((1 << 64) - 1) for i in range(nwords)]


def decode_words(words) -> int:
    return sum(int(w) << (64 * i) for i, w in enumerate(words))


def encode_descriptor(insn_offset: int, n_insn: int, kind: int = 0) -> int:
    """One 64-bit :data:`NodeDescriptor`: :func:`pack` with its three fields."""
    return pack(NodeDescriptor, insn_offset=insn_offset, n_insn=n_insn, kind=kind)


def _type(layout, name) -> str:
    """How :func:`markdown` names a field's type: ``u8``, ``s32``, an enum or struct name."""
    offset, width, kind, arg = _fields(layout)[name]
    if kind == _ENUM:
        return f"`{arg.__name__}`"
    if kind == _STRUCT:
        return next(f"`{n}`" for n, v in globals().items() if v is arg and not n.startswith("_"))
    return f"{'s' if kind == _SINT else 'u'}{width}"


def markdown() -> str:
    """The ISA reference (docs/isa.md), generated from the layouts above."""
    lines = ["# Celosia ISA", "",
             "Generated by `python -m celosia.rtl.isa` from `rtl/isa.py`; do not edit.", "",
             __doc__.strip(), "",
             "Field types: `uN` unsigned, `sN` signed (two's complement) N-bit integers; "
             "`rtl/isa.py`'s `pack` / `unpack` convert between fields and bits.", ""]

    def table(title, layout, doc=""):
        lines.extend([f"## {title}", ""])
        if doc:
            lines.extend([doc, ""])
        lines.extend(["| bits | field | type |", "| --- | --- | --- |"])
        for name, field in layout:
            if name.startswith("_"):
                continue
            hi = field.offset + field.width - 1
            lines.append(f"| {hi}:{field.offset} | `{name}` | {_type(layout, name)} |")
        lines.append("")

    def enum_table(title, cls, doc=""):
        lines.extend([f"## {title}", ""])
        if doc:
            lines.extend([doc, ""])
        lines.extend(["| value | name |", "| --- | --- |"])
        for member in cls:
            lines.append(f"| {member.value} | `{member.name}` |")
        lines.append("")

    enum_table("Opcodes", Opcode)
    enum_table("LOAD target buffers", Buffer)
    table("Dependency flags (`dep`)", DepFlags)
    table("LOAD", LoadInsn, "DRAM -> on-chip buffer, three nested loops of one-byte elements (the DMA moves up to a bus word of a contiguous run per cycle: rtl/dma.py).")
    table("GEMM", GemmInsn, "Compute queue: one weight tile times `m_len` input rows (`window = 0`; "
          "ws, os, feie), or a convolution window over raw ifmap rows (`window = 1`; any window "
          "on rs, one kernel tap, `win_h = win_w = 1`, on ws and os, one kernel row of up to 3 "
          "taps, `win_h = 1`, on feie, with `dil_w = 1` and `stride_w <= win_w`, or "
          "`dil_w = stride_w`, when `win_w > 1`): "
          "for `e < out_h`, `x < out_w`, `n < n_len`, psum row `psum_row + e*out_w + x` gets "
          "the sum over `fh < win_h`, `fw < win_w`, `c < k_len` of ifmap row "
          "`ifmap_row + (e*stride_h + fh*dil_h)*row_pitch + x*stride_w + fw*dil_w` lane `c` "
          "times weight row `weight_row + (fh*win_w + fw)*k_len + c` lane `n`; "
          "`m_len = out_h*out_w`. The `win_*` .. `out_h` fields are ignored when `window = 0`. "
          "`in_zp` (feie only, 0 otherwise) is subtracted from every ifmap value: the feie array "
          "skips inputs equal to it (real zeros). "
          "On ws and os a window address generator on the ifmap read path walks the "
          "windowed rows (the compiler folds a tap's offset `fh*dil_h*row_pitch + fw*dil_w` "
          "into `ifmap_row`; on feie the first tap's, rtl/arrays/feie.py); which forms an "
          "engine takes is fixed by the dataflow (any other is an error, like an out-of-range "
          "GEMM).")
    table("STORE", StoreInsn, "psum buffer -> PPU (bias, requantize, zero point, clamp) -> DRAM, "
          "or (`to_buf = 1`) -> the ifmap buffer: byte `(m, n)` to row `buf_row + m*buf_stride`, "
          "lane `lane0 + n`, with no DRAM access (rtl/dma.py). `single_round = 1`: the PPU "
          "rounds once, `(x*M0 + 2^(t-1)) >> t` with `t = 31 - shift` clamped to 1..62 (TFLite's "
          "single-rounding MultiplyByQuantizedMultiplier, LiteRT's FULLY_CONNECTED), instead of "
          "gemmlowp's double rounding.")
    enum_table("VEC modes", VecMode)
    table("VEC", VecInsn, "Compute queue, vector engine: pooling and residual add, lane-wise over ifmap rows.")
    table(f"Node descriptor ({NodeDescriptor.size} bit)", NodeDescriptor,
          "One per node, at `PROG_BASE + 8*i`; `n_insn = 0` ends the table.")
    table(f"PPU parameter record ({PARAM_BYTES} bytes)", ParamRecord,
          "One output channel's STORE parameters: packed, little endian, in DRAM (a LOAD to the "
          "`PARAM` buffer copies them byte by byte) and in one row of the parameter buffer.")
    table("STATUS (CSR 1, read only)", Status,
          "`busy` while a program runs, `done` once it has stopped, `error` why (an error code below).")
    enum_table("CSRs (32-bit word addresses)", Csr)
    lines.extend(["## Counters", "",
                  "Counter CSRs, reset by a start, in the order the driver reports them: "
                  + ", ".join(f"`{c.name}` ({c.value})" for c in COUNTERS) + ". "
                  "At every node boundary (the cycle by which every instruction of the "
                  "nodes so far has completed; docs/hardware.md, \"Per-node counters\") "
                  "the controller copies them into the `SNAP_*` CSRs and increments "
                  "`NODES_DONE`.", ""])
    enum_table("Base registers (compiler convention)", BaseReg)
    error = Status["error"]
    enum_table(f"Error codes (STATUS bits {error.offset + error.width - 1}:{error.offset})", ErrorCode)
    return "\n".join(lines)


def c_header(**extra: int) -> str:
    """A C++ header with the host-visible numbers, for programs outside Python (the
    Verilator harness): ``CSR_<name>`` (word addresses), ``STATUS_<field>_SHIFT`` /
    ``_MASK``, ``ERROR_<name>``, ``COUNTERS[N_COUNTERS]`` and ``extra`` (name -> value),
    all ``constexpr uint64_t`` in namespace ``celosia_isa``."""
    consts = [(f"CSR_{c.name}", c.value) for c in Csr]
    for name, field in Status:
        if not name.startswith("_"):
            consts += [(f"STATUS_{name.upper()}_SHIFT", field.offset),
                       (f"STATUS_{name.upper()}_MASK", ((1 << field.width) - 1) << field.offset)]
    consts += [(f"ERROR_{e.name}", e.value) for e in ErrorCode]
    consts += [("N_COUNTERS", len(COUNTERS)), *extra.items()]
    lines = ["// Generated by celosia.rtl.isa.c_header() from rtl/isa.py; do not edit.",
             "#pragma once", "#include <cstdint>", "", "namespace celosia_isa {", ""]
    lines += [f"constexpr uint64_t {name} = {value if value < 256 else hex(value)}ULL;" for name, value in consts]
    lines += [f"constexpr uint64_t COUNTERS[N_COUNTERS] = {{{', '.join(str(c.value) for c in COUNTERS)}}};",
              "", "}  // namespace celosia_isa", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    sys.stdout.write(markdown())
