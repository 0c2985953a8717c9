"""Post-processing unit: int32 accumulator -> int8, one output channel per cycle per lane.

:class:`PPU` is one lane; :class:`PpuLanes` is ``L`` lanes in lockstep (the STORE
engine's ``ppu_lanes``), ``L`` channels per cycle, with a metadata delay line.

Bit-exact with :func:`celosia.sim.golden.requant.requantize` (TFLite
``MultiplyByQuantizedMultiplier``, double rounding):

``clamp(MBQM(wrap32(acc + bias), m0, shift) + out_zp, act_min, act_max)``.

Pipeline (``LATENCY`` = 6 register stages): a sample accepted on ``i`` in cycle
``t`` is presented on ``o`` from cycle ``t + 6`` (earlier outputs first). The
whole pipeline advances when its last stage is empty or ``o.ready`` is high
(``i.ready`` = that condition), so the throughput is one sample per cycle while
``o.ready`` stays high.

1. ``x = wrap32(acc + bias)``
2. ``x = wrap32(x << shift)`` for ``shift > 0`` (0 for shifts >= 32, as the
   golden model's int64 shift then truncation gives); right exponent
   ``min(-shift, 33)`` for ``shift < 0`` (any exponent >= 33 rounds an int32 to 0).
3. ``ab = x * m0`` (64 bit), overflow flag for ``INT32_MIN * INT32_MIN``
4. saturating rounding doubling high mul: ``(ab + nudge) / 2^31`` truncating
   toward zero (C division), ``INT32_MAX`` on overflow
5. rounding divide by ``2^exponent`` (round half away from zero)
6. ``+ out_zp``, clamp to ``[act_min, act_max]``
"""


from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PpuIn", "PPU", "PpuLanes", "LATENCY", "MBQM_STAGES", "mbqm_stages", "register_stage"]

#: Cycles from a transfer on ``i`` to the result's appearance on ``o`` (with ``o.ready`` high).
LATENCY = 6

PpuIn = data.StructLayout({
    "acc": signed(32),
    "bias": signed(32),
    "m0": signed(32),
    "shift": signed(8),
    "out_zp": signed(8),
    "act_min": signed(8),
    "act_max": signed(8),
    "single": unsigned(1),   # TFLite's single rounding (STORE single_round)
})

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
#: Right-shift exponents above this all give 0 for an int32 input (|x| / 2^33 <= 1/4).
_MAX_RIGHT = 33


#: The single rounding's right shift ``t = 31 - shift`` is clamped to this range: the golden
#: model's :data:`celosia.sim.golden.requant.SINGLE_SHIFT_RANGE` (which cannot import rtl;
#: tests/rtl/test_ppu.py checks they agree).
SINGLE_SHIFT_RANGE = (1, 62)

#: Register stages of :func:`mbqm_stages`.
MBQM_STAGES = 4


def register_stage(m, advance, name, **fields):
    """Registers ``fields`` (name -> (shape, value)) when ``advance`` is high;
    returns name -> register."""
    regs = {}
    for fname, (shape, value) in fields.items():
        reg = Signal(shape, name=f"{name}_{fname}")
        with m.If(advance):
            m.d.sync += reg.eq(value)
        regs[fname] = reg
    return regs


def mbqm_stages(m, advance, x, m0, shift, *, prefix="", first=2, single=None, **carry):
    """MultiplyByQuantizedMultiplier(int32 ``x``, int32 ``m0``, int8 ``shift``) as
    :data:`MBQM_STAGES` register stages (PPU stages 2..5 in the module docstring),
    each loaded when ``advance`` is high.

    ``single`` (a 1-bit value, optional): where high, TFLite's single-rounding form
    instead (:func:`celosia.sim.golden.requant.multiply_by_quantized_multiplier_single`):
    stage 2 leaves ``x`` unshifted and registers ``t = 31 - shift`` clamped to 1..62,
    stage 3 the full 64-bit product, stage 4 ``(ab + 2^(t-1)) >> t`` wrapped to int32,
    stage 5 passes it on (exponent 0). Without ``single`` only the double rounding is
    built (the vector engine's ADD).

    ``carry`` (name -> (shape, value)) is registered alongside, stage by stage.
    Returns the last stage's registers: ``"x"`` (``signed(33)``, the result, always
    in int32 range) and the carried fields. Stage registers are named
    ``{prefix}s{first}_...`` .. ``{prefix}s{first+3}_...``.
    """
    def stage(k, **fields):
        return register_stage(m, advance, f"{prefix}s{first + k}", **fields)

    def tail(regs):
        return {name: (shape, regs[name]) for name, (shape, _) in carry.items()}

    # left shift (wraps in int32) / right exponent.
    left = Signal(unsigned(7))
    right = Signal(range(_MAX_RIGHT + 1))
    shifted = Signal(signed(32))
    single_on = Const(0, 1) if single is None else single
    m.d.comb += left.eq(Mux((shift > 0) & ~single_on, shift[:7], 0))
    neg_shift = Signal(unsigned(8))
    m.d.comb += neg_shift.eq(-shift)  # 128 for shift = -128: fits unsigned(8)
    m.d.comb += right.eq(Mux((shift >= 0) | single_on, 0,
                             Mux(neg_shift > _MAX_RIGHT, _MAX_RIGHT, neg_shift)))
    m.d.comb += shifted.eq(Mux(left >= 32, 0, (x << left[:5])[:32]))
    extra = {}   # the single-rounding fields, carried stage by stage when built
    if single is not None:
        lo, hi = SINGLE_SHIFT_RANGE
        t_raw = Signal(signed(10))
        m.d.comb += t_raw.eq(31 - shift)
        extra = {"single": (1, single),
                 "t": (range(hi + 1), Mux(t_raw < lo, lo, Mux(t_raw > hi, hi, t_raw)))}
    s2 = stage(0, x=(signed(32), shifted), m0=(signed(32), m0),
               right=(range(_MAX_RIGHT + 1), right), **extra, **carry)

    def extra_of(regs):
        return {name: (shape, regs[name]) for name, (shape, _) in extra.items()}

    # The product; the only overflowing case of the doubling high mul (INT32_MIN^2 = 2^62)
    # is flagged and replaced below, so |ab| <= 2^62 - 2^31 otherwise and 63 bits hold it
    # (64 with the single rounding, which takes 2^62 as it is). Every width below stays
    # within 64 bits (a wider sum costs Verilator a multi-word operation per lane per
    # cycle, the bulk of the simulation time).
    s3 = stage(1, ab=(signed(63 if single is None else 64), s2["x"] * s2["m0"]),
               ovf=(1, (s2["x"] == _INT32_MIN) & (s2["m0"] == _INT32_MIN)),
               right=(range(_MAX_RIGHT + 1), s2["right"]), **extra_of(s2), **tail(s2))

    # (ab + nudge) / 2^31, truncating toward zero as C does; |num| < 2^62.
    num = Signal(signed(63))
    m.d.comb += num.eq(s3["ab"] + Mux(s3["ab"] >= 0, 1 << 30, 1 - (1 << 30)))
    biased = Signal(signed(64))
    m.d.comb += biased.eq(num + Mux(num < 0, (1 << 31) - 1, 0))
    high = Signal(signed(32))
    m.d.comb += high.eq(Mux(s3["ovf"], _INT32_MAX, (biased >> 31)[:32]))
    if single is not None:   # (ab + 2^(t-1)) >> t; |ab| + 2^61 < 2^63: no overflow
        rounded_once = Signal(signed(64))
        m.d.comb += rounded_once.eq(s3["ab"] + (Const(1, 64) << (s3["t"] - 1)[:6]))
        high_single = Signal(signed(32))
        m.d.comb += high_single.eq((rounded_once >> s3["t"])[:32])
        high = Mux(s3["single"], high_single, high)
    s4 = stage(2, x=(signed(32), high),
               right=(range(_MAX_RIGHT + 1), s3["right"]), **tail(s3))

    # rounding divide by 2^right, half away from zero (gemmlowp RoundingDivideByPOT).
    mask = Signal(unsigned(_MAX_RIGHT + 1))
    m.d.comb += mask.eq((1 << s4["right"]) - 1)
    remainder = Signal(unsigned(_MAX_RIGHT + 1))
    m.d.comb += remainder.eq(s4["x"] & mask)  # x sign-extended: two's complement residue
    threshold = Signal(unsigned(_MAX_RIGHT + 1))
    m.d.comb += threshold.eq((mask >> 1) + (s4["x"] < 0))
    rounded = Signal(signed(33))
    m.d.comb += rounded.eq((s4["x"] >> s4["right"]) + (remainder > threshold))
    return stage(3, x=(signed(33), rounded), **tail(s4))


def _pipeline(m, i, o, lanes, meta=None):
    """The PPU pipeline between streams ``i`` and ``o``: ``lanes`` (a list of
    :data:`PpuIn` values, one per lane) go through copies of the six stages that share
    one valid chain and one stall (``advance``); returns the lanes' stage-6 registers
    (int8) and, when ``meta`` is given, ``meta`` delayed by the same ``LATENCY`` stages.
    """
    # Global stall: every stage moves when the output register is free or drained.
    advance = Signal()
    m.d.comb += advance.eq(~o.valid | o.ready)
    m.d.comb += i.ready.eq(advance)

    valid = [Signal(name=f"v{k}") for k in range(LATENCY)]
    with m.If(advance):
        m.d.sync += valid[0].eq(i.valid)
        for k in range(1, LATENCY):
            m.d.sync += valid[k].eq(valid[k - 1])
    m.d.comb += o.valid.eq(valid[-1])

    def tail(s):
        return dict(out_zp=(signed(8), s["out_zp"]), act_min=(signed(8), s["act_min"]),
                    act_max=(signed(8), s["act_max"]))

    ys = []
    for j, p in enumerate(lanes):
        pre = f"l{j}_" if len(lanes) > 1 else ""
        # 1: bias add, wrapping in int32.
        s1 = register_stage(m, advance, f"{pre}s1", x=(signed(32), (p.acc + p.bias)[:32]),
                            m0=(signed(32), p.m0), shift=(signed(8), p.shift),
                            single=(1, p.single), **tail(p))
        # 2..5: MultiplyByQuantizedMultiplier (single or double rounding).
        s5 = mbqm_stages(m, advance, s1["x"], s1["m0"], s1["shift"], prefix=pre,
                         single=s1["single"], **tail(s1))
        # 6: zero point and activation clamp.
        with_zp = Signal(signed(34), name=f"{pre}with_zp")
        m.d.comb += with_zp.eq(s5["x"] + s5["out_zp"])
        # min(max(x, act_min), act_max), as np.clip (act_max wins if act_min > act_max).
        floored = Signal(signed(34), name=f"{pre}floored")
        m.d.comb += floored.eq(Mux(with_zp < s5["act_min"], s5["act_min"], with_zp))
        clamped = Signal(signed(8), name=f"{pre}clamped")
        m.d.comb += clamped.eq(Mux(floored > s5["act_max"], s5["act_max"], floored[:8]))
        ys.append(register_stage(m, advance, f"{pre}s6", y=(signed(8), clamped))["y"])

    if meta is None:
        return ys, None
    for k in range(LATENCY):
        meta = register_stage(m, advance, f"meta{k + 1}", v=(meta.shape(), meta))["v"]
    return ys, meta


class PPU(wiring.Component):
    """Requantization pipeline, one lane.

    Members
    -------
    i : In(stream.Signature(PpuIn))
        One output channel's accumulator and parameters per transfer.
    o : Out(stream.Signature(signed(8)))
        The int8 result, in order, ``LATENCY`` cycles later.
    """

    i: In(stream.Signature(PpuIn))
    o: Out(stream.Signature(signed(8)))

    def elaborate(self, platform):
        m = Module()
        (y,), _ = _pipeline(m, self.i, self.o, [self.i.payload])
        m.d.comb += self.o.payload.eq(y)
        return m


class PpuLanes(wiring.Component):
    """``lanes`` requantization pipelines in lockstep, with a metadata delay line.

    The lanes share one valid and one stall (the stages of :class:`PPU` are a shift
    register that advances as a whole, so ``lanes`` copies advance together): a transfer
    on ``i`` takes ``lanes`` channels and a ``meta`` value; ``LATENCY`` cycles later (with
    ``o.ready`` high) ``o`` offers their int8 results and the same ``meta``. Timing and
    stalls as for :class:`PPU`. Each lane costs a PPU's multiplier (and its registers);
    the lanes a transfer does not use carry don't-care values.

    Parameters
    ----------
    lanes : int
        Channels per transfer (>= 1).
    meta_shape : shape-like
        What travels with each transfer (for the STORE engine: the chunk's channel count).

    Members
    -------
    i : In(stream.Signature(StructLayout({"lanes": ArrayLayout(PpuIn, lanes), "meta": meta_shape})))
    o : Out(stream.Signature(StructLayout({"y": ArrayLayout(signed(8), lanes), "meta": meta_shape})))
    """

    def __init__(self, lanes, meta_shape):
        self.lanes = lanes
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "lanes": data.ArrayLayout(PpuIn, lanes), "meta": meta_shape}))),
            "o": Out(stream.Signature(data.StructLayout({
                "y": data.ArrayLayout(signed(8), lanes), "meta": meta_shape}))),
        })

    def elaborate(self, platform):
        m = Module()
        ys, meta = _pipeline(m, self.i, self.o, [self.i.payload.lanes[j] for j in range(self.lanes)],
                             self.i.payload.meta)
        m.d.comb += [self.o.payload.y[j].eq(y) for j, y in enumerate(ys)]
        m.d.comb += self.o.payload.meta.eq(meta)
        return m
