"""The Amaranth-simulator back end: the same job and host routine as Verilator, in Python.

Slow (the whole design is simulated by Amaranth's Python simulator) but needs no
C++ tool chain; use it for small layers and for debugging with a VCD
(``vcd=path``).
"""

from __future__ import annotations

from amaranth.sim import Simulator

from celosia.rtl.config import AccelConfig
from celosia.sim.job import Job, RunResult, node_snapshot, run_job

__all__ = ["run"]


class PysimTransport:
    def __init__(self, ctx, top):
        self.ctx, self.top = ctx, top
        self.nodes = []  # per-node snapshots, appended by run()'s watcher

    def take_nodes(self):
        """The snapshots recorded since the last call."""
        nodes, self.nodes = self.nodes, []
        return nodes

    async def host_write(self, addr, value):
        self.ctx.set(self.top.host_addr, addr)
        self.ctx.set(self.top.host_wdata, value)
        self.ctx.set(self.top.host_we, 1)
        await self.ctx.tick()
        self.ctx.set(self.top.host_we, 0)

    async def host_read(self, addr):
        self.ctx.set(self.top.host_addr, addr)
        await self.ctx.tick()
        return self.ctx.get(self.top.host_rdata)

    async def csr_write(self, addr, value):
        self.ctx.set(self.top.csr.addr, int(addr))
        self.ctx.set(self.top.csr.w_data, value & 0xFFFFFFFF)
        self.ctx.set(self.top.csr.w_en, 1)
        await self.ctx.tick()
        self.ctx.set(self.top.csr.w_en, 0)

    async def csr_read(self, addr):
        self.ctx.set(self.top.csr.addr, int(addr))
        return self.ctx.get(self.top.csr.r_data)

    async def wait(self, cycles):
        await self.ctx.tick().repeat(cycles)


def run(config: AccelConfig, job: Job, vcd: str | None = None, poll_cycles: int = 64,
        progress=None) -> list[RunResult]:
    """Run ``job`` on ``SimTop(config)`` in the Amaranth simulator."""
    from celosia.rtl.top import SimTop

    top = SimTop(config)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    results: list[RunResult] = []
    transports = []

    async def watch_nodes(ctx):
        # wakes when NODES_DONE changes: once per snapshot (a start clears it to 0)
        async for index, counters in ctx.changed(top.node.index).sample(top.node.counters):
            if index and transports:
                transports[0].nodes.append(node_snapshot(index, list(counters)))

    async def bench(ctx):
        transports.append(PysimTransport(ctx, top))
        results.extend(await run_job(transports[0], job, poll_cycles=poll_cycles,
                                     progress=progress))

    sim.add_process(watch_nodes)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return results
