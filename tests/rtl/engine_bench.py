"""A bench for the compute engines (tests/rtl/test_ws.py, test_rs.py): an engine with real
LaneBuffers, fed a list of GEMM instructions; events and the final psum buffer come back."""

import random

import numpy as np
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring

from celosia.rtl import isa
from celosia.rtl.buffers import BufferWriteSignature, LaneBuffer
from celosia.rtl.controller.signatures import gemm_pre_const
from celosia.rtl.dataflows import ifmap_read_ports, psum_write_ports
from helpers import (engine_monitor, issue_and_drain, pack, psum_write_mux, read_rows, simulate, unpack,
                     write_rows)


class Harness(Elaboratable):
    """A compute engine + ifmap / weight / psum LaneBuffers. The bench writes ifmap and
    weight through the buffers' own write ports, psum through ``tb_psum_w``
    (muxed with the array's writes; feie's second psum write port, if any, on ``w1`` with
    its accumulate read on ``r2``) and reads psum back through ``psum.r1``."""

    def __init__(self, cfg, engine):
        self.cfg = cfg
        self.ws = engine(cfg)
        self.ifmap = LaneBuffer(cfg.rows, 8, cfg.ifmap_rows, read_ports=ifmap_read_ports(cfg))
        self.weight = LaneBuffer(cfg.cols, 8, cfg.weight_rows)
        n_wr = psum_write_ports(cfg)
        self.psum = LaneBuffer(cfg.cols, 32, cfg.psum_rows, read_ports=1 + n_wr, write_ports=n_wr)
        self.tb_psum_w = BufferWriteSignature(cfg.psum_rows, cfg.cols, 32).create(path=("tb_psum_w",))

    def elaborate(self, platform):
        m = Module()
        m.submodules.ws = self.ws
        m.submodules.ifmap = self.ifmap
        m.submodules.weight = self.weight
        m.submodules.psum = self.psum
        wiring.connect(m, engine=self.ws.ifmap, buffer=self.ifmap.r0)
        if ifmap_read_ports(self.cfg) == 2:
            wiring.connect(m, engine=self.ws.ifmap1, buffer=self.ifmap.r1)
        wiring.connect(m, engine=self.ws.weight, buffer=self.weight.r0)
        wiring.connect(m, engine=self.ws.psum_rd, buffer=self.psum.r0)
        psum_write_mux(m, self.psum.w, self.tb_psum_w, self.ws.psum_wr)
        if psum_write_ports(self.cfg) == 2:
            wiring.connect(m, engine=self.ws.psum_wr1, buffer=self.psum.w1)
            wiring.connect(m, engine=self.ws.psum_rd1, buffer=self.psum.r2)
        return m


def run_program(cfg, ifmap, weight, psum0, insns, gaps, engine, seed=0, monitor=engine_monitor):
    """Simulate the GEMMs ``insns`` (field dicts) on ``engine(cfg)`` with fresh buffers
    holding ``ifmap`` / ``weight`` / ``psum0``, ``gaps[i]`` idle cycles (junk payload,
    valid low) before instruction ``i``; return (final psum, events, zero_skips summed).
    ``monitor(engine, events)`` is the protocol checker (:func:`engine_monitor`: one
    instruction at a time; it may return a list of background testbenches)."""
    dut = Harness(cfg, engine)
    ws = dut.ws
    rng = random.Random(seed)
    events = []          # (kind, cycle) for accept / done / error
    result = {}

    monitor = monitor(ws, events)
    result["zero_skips"] = 0

    async def skips(ctx):
        async for _, _, n in ctx.tick().sample(ws.zero_skips):
            result["zero_skips"] += n

    async def tb(ctx):
        await write_rows(ctx, dut.ifmap.w, [pack(row, 8) for row in ifmap])
        await write_rows(ctx, dut.weight.w, [pack(row, 8) for row in weight])
        await write_rows(ctx, dut.tb_psum_w, [pack(row, 32) for row in psum0])
        def gemm(**fields):
            return isa.GemmInsn.const({"op": isa.Opcode.GEMM, **fields})

        def offer(ctx, insn):
            # the instruction with its products, as the controller's compute queue hands it
            ctx.set(ws.insn.payload, gemm(**insn))
            ctx.set(ws.pre, gemm_pre_const(insn))

        def junk(ctx):
            ctx.set(ws.insn.payload, gemm(m_len=rng.getrandbits(16), k_len=0xFF))
            ctx.set(ws.pre, gemm_pre_const({"out_h": rng.getrandbits(8), "win_w": rng.getrandbits(8)}))

        await issue_and_drain(ctx, ws, insns, gaps, events, offer=offer, junk=junk)
        rows = await read_rows(ctx, dut.psum.r1, cfg.psum_rows)
        result["psum"] = np.array([unpack(v, cfg.cols, 32) for v in rows], dtype=np.int64)

    simulate(dut, tb, background=[*(monitor if isinstance(monitor, list) else [monitor]), skips])
    return result["psum"], events, result["zero_skips"]
