"""PPU and PpuLanes against the golden requantization, with random valid/ready gaps on both sides."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from amaranth.hdl import unsigned

from celosia.rtl.ppu import LATENCY, PPU, SINGLE_SHIFT_RANGE, PpuLanes
from celosia.sim.golden import requant
from celosia.sim.golden.requant import INT32_MAX, INT32_MIN, requantize

FIELDS = ("acc", "bias", "m0", "shift", "out_zp", "act_min", "act_max", "single")


def golden(v):
    return int(requantize(v["acc"], v["bias"], v["m0"], v["shift"], v["out_zp"],
                          v["act_min"], v["act_max"], single_round=v["single"]))


def test_single_shift_range_is_the_golden_models():
    assert SINGLE_SHIFT_RANGE == requant.SINGLE_SHIFT_RANGE


def corner_vectors():
    vecs = []

    def add(acc, bias=0, m0=1 << 30, shift=0, out_zp=0, act_min=-128, act_max=127):
        for single in (0, 1):   # each case with both roundings
            vecs.append(dict(acc=acc, bias=bias, m0=m0, shift=shift, out_zp=out_zp,
                             act_min=act_min, act_max=act_max, single=single))

    # .5 ties (positive and negative) in the doubling high mul (m0 = 0.5) and the right shift.
    for acc in range(-20, 21):
        for shift in (0, -1, -2, -3):
            add(acc, shift=shift)
            add(acc, m0=(1 << 31) - 1, shift=shift)
    # INT32_MIN * INT32_MIN saturates; neighbours of it.
    for acc in (INT32_MIN, INT32_MIN + 1, INT32_MAX):
        for m0 in (INT32_MIN, INT32_MIN + 1, INT32_MAX, 1 << 30, -1, 1, 0):
            for shift in (0, -1, -31, -32, -33, -40, -62, 1, 31, 32, 62):
                add(acc, m0=m0, shift=shift, act_min=-128, act_max=127)
                add(acc, m0=m0, shift=shift, out_zp=-128, act_min=-5, act_max=5)
    # acc + bias wraps in int32.
    add(INT32_MAX, bias=1, m0=INT32_MAX)
    add(INT32_MIN, bias=-1, m0=INT32_MAX, shift=-24)
    add(INT32_MAX, bias=INT32_MAX, m0=INT32_MAX, shift=-30)
    # Left shifts that wrap.
    for shift in range(1, 34):
        add(0x12345678, m0=INT32_MAX, shift=shift)
        add(-0x12345678, m0=1 << 30, shift=shift, out_zp=7)
    # Right shifts up to 31 and beyond, around the tie points.
    for right in range(0, 34):
        for acc in (1 << right, (1 << right) - 1, -(1 << right), 3 << max(right - 1, 0),
                    -(3 << max(right - 1, 0)), INT32_MIN, INT32_MAX):
            add(acc, m0=INT32_MAX, shift=-right)
    # The single rounding's ties ((x*M0) mod 2^t = 2^(t-1), rounding up) and its clamped
    # shifts (t = 31 - shift outside 1..62: shift -128..-32 and 31..127).
    for t in (1, 2, 13, 31, 32, 40, 59):   # x*M0 = x * 2^(t-1), x odd: acc x*2^a, M0 2^b
        a = min(t - 1, 28)
        for x in (1, -1, 3, -3, 5, -5):
            add(x << a, m0=1 << (t - 1 - a), shift=31 - t)
    for shift in (-128, -40, -33, -32, -31, 30, 31, 32, 100, 127):
        add(0x7654321, m0=INT32_MAX, shift=shift)
        add(-0x7654321, m0=INT32_MIN, shift=shift)
    # Zero points and clamps (incl. act_min > act_max: np.clip gives act_max).
    for zp in (-128, -1, 0, 1, 127):
        for lo, hi in ((-128, 127), (0, 6), (-10, -10), (5, -5), (127, 127), (-128, -128)):
            add(1000, m0=1 << 28, shift=-4, out_zp=zp, act_min=lo, act_max=hi)
            add(-1000, m0=1 << 28, shift=-2, out_zp=zp, act_min=lo, act_max=hi)
    return vecs


def random_vectors(rng, n):
    vecs = []
    for _ in range(n):
        kind = rng.integers(4)
        acc = int(rng.integers(INT32_MIN, INT32_MAX + 1)) if kind == 0 else \
            int(rng.integers(-(1 << 20), 1 << 20))
        bias = int(rng.integers(INT32_MIN, INT32_MAX + 1)) if kind == 1 else \
            int(rng.integers(-(1 << 16), 1 << 16))
        m0 = int(rng.integers(INT32_MIN, INT32_MAX + 1)) if kind == 2 else \
            int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-62, 63)) if kind == 3 else int(rng.integers(-31, 31))
        lo, hi = sorted(int(x) for x in rng.integers(-128, 128, size=2))
        if rng.integers(8) == 0:
            lo, hi = -128, 127
        vecs.append(dict(acc=acc, bias=bias, m0=m0, shift=shift,
                         out_zp=int(rng.integers(-128, 128)), act_min=lo, act_max=hi,
                         single=int(rng.integers(2))))
    return vecs


def run_ppu(vectors, in_pattern, out_pattern, dut=None):
    """``vectors`` through ``dut`` (default a :class:`PPU`; for a :class:`PpuLanes`, one
    transfer's payload per item), ``in_pattern`` / ``out_pattern`` the producer's valid and
    the consumer's ready, repeated; returns the payloads taken from ``o`` in order."""
    dut = PPU() if dut is None else dut
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def producer(ctx):
        gaps = itertools.cycle(in_pattern)
        for v in vectors:
            while not next(gaps):
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, v)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        gaps = itertools.cycle(out_pattern)
        while len(got) < len(vectors):
            ctx.set(dut.o.ready, next(gaps))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got.append(payload)

    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return got


def check(vectors, got):
    assert len(got) == len(vectors)
    for k, (v, y) in enumerate(zip(vectors, got)):
        assert y == golden(v), f"vector {k}: {v}: PPU {y}, golden {golden(v)}"


def test_corner_cases():
    vecs = corner_vectors()
    check(vecs, run_ppu(vecs, [1], [1]))


@pytest.mark.parametrize("in_pattern,out_pattern", [
    ([1], [1]),
    ([1, 1, 0, 1, 0, 0, 1], [1, 0, 1, 1, 1, 0]),
    ([0, 1], [0, 0, 1]),
])
def test_random(in_pattern, out_pattern):
    vecs = random_vectors(np.random.default_rng(len(in_pattern) * 7 + len(out_pattern)), 1500)
    check(vecs, run_ppu(vecs, in_pattern, out_pattern))


def test_latency_and_throughput():
    """One result per cycle, LATENCY cycles after the transfer into ``i``."""
    dut = PPU()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for cycle in range(20):
            ctx.set(dut.i.payload, dict(acc=cycle * 2, bias=0, m0=1 << 30, shift=0,
                                        out_zp=0, act_min=-128, act_max=127, single=0))
            if cycle == 5:
                ctx.set(dut.i.valid, 0)
            _, _, ovalid, y = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ovalid:
                seen.append((cycle, y))

    sim.add_testbench(bench)
    sim.run()
    # acc = 2c, m0 = 0.5: result c; accepted in cycle c, out in cycle c + LATENCY.
    assert seen == [(c + LATENCY, c) for c in range(5)]


@pytest.mark.parametrize("lanes,in_pattern,out_pattern", [
    (3, [1], [1]),
    (4, [1, 1, 0, 1, 0, 0, 1], [1, 0, 1, 1, 1, 0]),
])
def test_lanes_lockstep(lanes, in_pattern, out_pattern):
    """PpuLanes: every lane of every transfer against the golden model, and each transfer's
    ``meta`` comes out with its results (lanes share one valid / ready, so the stalls
    must keep them together)."""
    vecs = random_vectors(np.random.default_rng(lanes), 200 * lanes)
    groups = [vecs[k:k + lanes] for k in range(0, len(vecs), lanes)]
    got = run_ppu([dict(lanes=g, meta=k) for k, g in enumerate(groups)], in_pattern, out_pattern,
                  PpuLanes(lanes, unsigned(16)))
    assert [out.meta for out in got] == list(range(len(groups)))
    check(vecs, [y for out in got for y in out.y])
