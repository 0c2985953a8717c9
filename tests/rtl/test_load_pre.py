"""A LOAD's ranges as the load queue computes them (``load_pre`` into a ``LoadPre``,
rtl/controller/signatures.py; the load DMA's range check reads them, rtl/dma.py) against
the ranges worked out element by element: the rows ``i1`` and planes ``i2`` the LOAD reads
from DRAM are those inside the pad window (all of them without ``pad_en``); ``lo``/``hi``
are the first and one past the last of them, and ``reads`` says whether any element is
read at all. Also what a bench driving the DMA directly hands it (``load_pre_const``)."""

import random

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from celosia.rtl import isa
from celosia.rtl.controller.signatures import LoadPre, load_pre, load_pre_const


class Pre(Elaboratable):
    def __init__(self):
        self.insn = Signal(isa.LoadInsn)
        self.pre = Signal(LoadPre)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.pre[k].eq(v) for k, v in load_pre(self.insn).items()]
        return m


def expected(f: dict) -> dict:
    """The ranges from the elements themselves (None: that loop reads nothing)."""
    def read(n, lo, hi):
        idx = [i for i in range(n) if not f["pad_en"] or lo <= i < hi]
        return (idx[0], idx[-1] + 1) if idx else None
    r1 = read(f["n1"], f["pad_lo1"], f["pad_hi1"])
    r2 = read(f["n2"], f["pad_lo2"], f["pad_hi2"])
    return {"r1": r1, "r2": r2, "reads": r1 is not None and r2 is not None}


def draw(rng: random.Random) -> dict:
    """Small loops (so the elements can be listed) with pad windows around, inside and past
    them, or at the fields' edges."""
    f = {"n0": rng.randint(0, 4), "n1": rng.randint(0, 40), "n2": rng.randint(0, 40),
         "pad_en": int(rng.random() < 0.8)}
    for k in ("1", "2"):
        n = f[f"n{k}"]
        width = isa.LoadInsn.members[f"pad_lo{k}"].width
        lo = rng.choice([0, 1, rng.randint(0, n + 3), (1 << width) - 1])
        hi = rng.choice([n, n + 1, rng.randint(0, n + 3), lo, (1 << width) - 1])
        f[f"pad_lo{k}"], f[f"pad_hi{k}"] = lo, hi
    return f


def test_load_ranges_equal_the_elements_read():
    dut = Pre()
    rng = random.Random(15)
    cases = [draw(rng) for _ in range(3000)]
    seen = {True: 0, False: 0}

    async def tb(ctx):
        for f in cases:
            ctx.set(dut.insn, isa.LoadInsn.const({"op": isa.Opcode.LOAD, **f}))
            got = ctx.get(dut.pre)
            want = expected(f)
            assert bool(got.reads) == want["reads"], f
            if want["reads"]:
                assert (got.lo1, got.hi1) == want["r1"], f
                assert (got.lo2, got.hi2) == want["r2"], f
            assert ctx.get(dut.pre).as_value().value == load_pre_const(f).as_value().value, f
            seen[want["reads"]] += 1

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert seen[True] >= 500 and seen[False] >= 200, seen
