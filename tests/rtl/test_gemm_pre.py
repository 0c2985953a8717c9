"""The GEMM range check from the compute queue's precomputed products (``GemmPre``,
rtl/controller/signatures.py) against the check of the ISA simulator and the cycle model
(``legal_gemm``, Python ints, nothing truncated), on every dataflow.

The hardware computes the products as dispatch does when a GEMM enters the compute queue
(``gemm_pre`` into a ``GemmPre`` register, its fields truncated to their widths) and the
engines check with them (``gemm_insn_in_range(..., pre=)``); a product field too narrow, or
a rule that reads a product where it should read a field, makes the two disagree."""

import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from celosia.rtl import isa
from celosia.rtl.arrays.engine import gemm_insn_in_range, legal_gemm
from celosia.rtl.config import AccelConfig
from celosia.rtl.controller.signatures import GemmPre, gemm_pre, gemm_pre_const

#: Per field: the values drawn (edges of the field and of the configs' buffers, small ones).
FIELDS = ["ifmap_row", "weight_row", "psum_row", "m_len", "k_len", "n_len", "win_h", "win_w",
          "stride_h", "stride_w", "dil_h", "dil_w", "row_pitch", "out_w", "out_h"]


class Check(Elaboratable):
    """``ok_pre``: the check with the products registered as dispatch keeps them;
    ``ok``: the check multiplying the fields itself."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.insn = Signal(isa.GemmInsn)
        self.pre = Signal(GemmPre)
        self.ok_pre = Signal()
        self.ok = Signal()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.pre[k].eq(v) for k, v in gemm_pre(self.insn).items()]
        m.d.comb += [self.ok_pre.eq(gemm_insn_in_range(self.insn, self.cfg, pre=self.pre)),
                     self.ok.eq(gemm_insn_in_range(self.insn, self.cfg))]
        return m


def draw(rng: random.Random, cfg: AccelConfig) -> dict:
    """A small GEMM, mostly legal (rs: windowed, feie: one kernel row), then with
    probability 0.6 one or two fields set to an edge (0, 1, their largest values, around a
    buffer's end) or a random value."""
    rs = cfg.dataflow == "rs"
    fields = {"window": int(rs or rng.random() < 0.7), "k_len": rng.randint(1, cfg.rows),
              "n_len": rng.randint(1, cfg.cols), "win_h": rng.randint(1, 3) if rs else 1,
              "win_w": rng.randint(1, 3) if cfg.dataflow in ("rs", "feie") else 1,
              "stride_h": rng.randint(1, 2), "stride_w": rng.randint(1, 2), "dil_h": 1,
              "dil_w": 1, "out_h": rng.randint(1, 3), "out_w": rng.randint(1, 6),
              "row_pitch": rng.randint(1, 12), "ifmap_row": rng.randint(0, 40),
              "weight_row": rng.randint(0, 20), "psum_row": rng.randint(0, 20)}
    fields["m_len"] = fields["out_h"] * fields["out_w"]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        name = rng.choice(FIELDS)
        width = isa.GemmInsn.members[name].width
        limit = {"ifmap_row": cfg.ifmap_rows, "weight_row": cfg.weight_rows,
                 "psum_row": cfg.psum_rows}.get(name, 8)
        fields[name] = rng.choice([0, 1, (1 << width) - 1, (1 << width) - 2, rng.getrandbits(width),
                                   min(limit + rng.randint(-3, 3), (1 << width) - 1)])
    if cfg.dataflow == "feie" and rng.random() < 0.3:
        fields["in_zp"] = rng.randint(-128, 127)
    return fields


@pytest.mark.parametrize("dataflow", ["ws", "os", "rs", "feie"])
def test_check_with_precomputed_products_equals_the_models(dataflow):
    cfg = AccelConfig(rows=4, cols=4, dataflow=dataflow, ifmap_rows=256, weight_rows=64, psum_rows=64)
    dut = Check(cfg)
    rng = random.Random(15)
    cases = [draw(rng, cfg) for _ in range(3000)]
    seen = {True: 0, False: 0}

    async def tb(ctx):
        for fields in cases:
            ctx.set(dut.insn, isa.GemmInsn.const({"op": isa.Opcode.GEMM, **fields}))
            want = legal_gemm(fields, cfg) is not None
            assert ctx.get(dut.ok_pre) == want, (dataflow, fields)
            assert ctx.get(dut.ok) == want, (dataflow, fields)
            # what a bench driving an engine directly hands it (tests/rtl/engine_bench.py)
            assert ctx.get(dut.pre).as_value().value == gemm_pre_const(fields).as_value().value
            seen[want] += 1

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    # both outcomes were exercised, legal ones in numbers
    assert seen[True] >= 100 and seen[False] >= 100, seen
