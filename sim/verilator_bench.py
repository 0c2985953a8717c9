"""cocotb bench for ``celosia_tb``: performs the job named by ``$CELOSIA_JOB``.

Started by :func:`celosia.sim.verilator.run`; writes the list of
:class:`~celosia.sim.job.RunResult` (as dicts) to ``$CELOSIA_RESULT``. The clock is
made inside the Verilog; every host primitive starts and ends at a falling clock
edge, so inputs set here are stable at the next rising edge and outputs read here
are settled.

Per-node snapshots: a background task wakes when ``node_index`` changes (each snapshot
increments it, so no per-cycle Python) and records ``node_index`` and ``node_counters``
(:meth:`CocotbTransport.take_nodes`), as the C++ harness does.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, Timer, ValueChange

from celosia.sim.job import COUNTERS, Job, node_snapshot, run_job
from celosia.sim.verilator import CLOCK_PERIOD_NS


class CocotbTransport:
    def __init__(self, dut):
        self.dut = dut
        self._nodes = []
        cocotb.start_soon(self._watch_nodes())

    async def _watch_nodes(self):
        while True:
            await ValueChange(self.dut.node_index)
            await ReadOnly()
            index = int(self.dut.node_index.value)
            if index:  # a start clears it to 0
                packed = int(self.dut.node_counters.value)
                self._nodes.append(node_snapshot(
                    index, [(packed >> (32 * i)) & 0xFFFF_FFFF for i in range(len(COUNTERS))]))

    def take_nodes(self):
        """The snapshots recorded since the last call."""
        nodes, self._nodes = self._nodes, []
        return nodes

    async def _edge(self):
        await FallingEdge(self.dut.clk)

    async def host_write(self, addr, value):
        self.dut.host_addr.value = addr
        self.dut.host_wdata.value = value
        self.dut.host_we.value = 1
        await self._edge()
        self.dut.host_we.value = 0

    async def host_read(self, addr):
        self.dut.host_addr.value = addr
        await self._edge()
        return int(self.dut.host_rdata.value)

    async def csr_write(self, addr, value):
        self.dut.csr_addr.value = int(addr)
        self.dut.csr_w_data.value = value & 0xFFFFFFFF
        self.dut.csr_w_en.value = 1
        await self._edge()
        self.dut.csr_w_en.value = 0

    async def csr_read(self, addr):
        self.dut.csr_addr.value = int(addr)
        await self._edge()
        return int(self.dut.csr_r_data.value)

    async def wait(self, cycles):
        if cycles > 1:
            await Timer((cycles - 1) * CLOCK_PERIOD_NS, unit="ns")
        await self._edge()


@cocotb.test()
async def run_celosia_job(dut):
    job = Job.from_dict(pickle.loads(open(os.environ["CELOSIA_JOB"], "rb").read()))
    dut.host_we.value = 0
    dut.csr_w_en.value = 0
    dut.csr_addr.value = 0
    dut.host_addr.value = 0
    # Reset is held for three cycles by the wrapper.
    await Timer(CLOCK_PERIOD_NS * 4, unit="ns")
    await FallingEdge(dut.clk)
    results = await run_job(CocotbTransport(dut), job)
    with open(os.environ["CELOSIA_RESULT"], "wb") as f:
        f.write(pickle.dumps([dataclasses.asdict(r) for r in results]))
