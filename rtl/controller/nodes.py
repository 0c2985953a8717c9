"""Node boundaries: when every instruction of the nodes fetched so far has completed."""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from celosia.rtl.config import AccelConfig, check_config
from celosia.rtl.controller.signatures import GEMMS_IN_FLIGHT, INDEX_BITS, NodeBound, RunSignature

__all__ = ["NodeTracker", "bound_depth"]


def bound_depth(config: AccelConfig) -> int:
    """Entries of :class:`NodeTracker`'s boundary FIFO: ``3 * queue_depth +
    GEMMS_IN_FLIGHT + 8``. A node waits in it from the push of its last instruction
    until all its instructions have completed, so the nodes in it have an instruction
    in a queue or in an engine (at most ``3 * queue_depth`` queued, ``GEMMS_IN_FLIGHT``
    GEMMs, a VEC / NOP, a LOAD and a STORE executing), except nodes that completed
    together with their predecessor and wait their turn (one boundary per cycle). Fetch
    holds a node's last instruction back while the FIFO is full, which no compiled
    program comes near."""
    return 3 * config.queue_depth + GEMMS_IN_FLIGHT + 8


class NodeTracker(wiring.Component):
    """Finds node boundaries: the cycle after the one in which the last instruction of
    the nodes fetched so far completed.

    Fetch sends, with the last instruction of each node, the instructions it had pushed
    into each queue by then (:data:`NodeBound`); the tracker counts the instructions
    completed per queue (``fin``). Queues complete in order, so once every queue's
    completions reach the oldest waiting node's counts, every instruction of that node
    and of the nodes before it has completed: ``done`` pulses and the node leaves the
    FIFO. One node per cycle: a node whose instructions had all completed by its
    predecessor's boundary is reported the next cycle.

    Parameters
    ----------
    config : AccelConfig
        ``queue_depth`` sizes the FIFO (:func:`bound_depth`).

    Ports
    -----
    run : In(RunSignature)
        ``start`` empties the FIFO and clears the counts.
    bound : In(stream.Signature(NodeBound))
        From fetch; ``ready`` = room in the FIFO.
    fin : In(3)
        Instructions completing this cycle (bit 0 LOAD, 1 COMPUTE, 2 STORE queue).
    done : Out(1)
        A node boundary (combinational; the counters' values this cycle count through
        the cycle of the node's last completion).

    Timing: ``done`` the cycle after the last ``fin`` of the node (the counts are
    registered); nothing here feeds back into issue or fetch except ``bound.ready``.
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "run": In(RunSignature),
            "bound": In(stream.Signature(NodeBound)),
            "fin": In(3),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        start = self.run.start
        fifo = SyncFIFO(width=NodeBound.size, depth=bound_depth(self._config))
        m.submodules.bounds = ResetInserter(start)(fifo)
        m.d.comb += [fifo.w_en.eq(self.bound.valid), fifo.w_data.eq(self.bound.payload),
                     self.bound.ready.eq(fifo.w_rdy)]
        head = data.View(NodeBound, fifo.r_data)
        reached = fifo.r_rdy
        for q in range(3):
            count = Signal(INDEX_BITS, name=f"completed{q}")
            with m.If(start):
                m.d.sync += count.eq(0)
            with m.Elif(self.fin[q]):
                m.d.sync += count.eq(count + 1)
            reached = reached & (count >= head[q])
        m.d.comb += [self.done.eq(self.run.running & reached), fifo.r_en.eq(self.done)]
        return m
