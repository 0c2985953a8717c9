"""The controller's interfaces: the CSR bus (:data:`CsrSignature`), the one signature
every engine sits behind (:class:`EngineSignature`) and the signatures joining the
controller's parts (fetch, dispatch, CSRs)."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.config import BUS_WIDTHS

__all__ = ["GEMMS_IN_FLIGHT", "GemmPre", "gemm_pre", "gemm_pre_const", "LoadPre", "load_pre",
           "load_pre_const", "CsrSignature", "NodeSignature", "NodeBound", "EventSignature", "EngineSignature", "engine_view", "INDEX_BITS", "QueueEntry",
           "RunSignature", "FetchStatusSignature", "RunEndSignature", "DRAM_BYTES_BITS"]

#: GEMMs the compute engine may hold at once (accepted, not yet ``done``): the ``ws``
#: engine takes the next GEMM while earlier ones stream, ``os`` / ``feie`` while earlier
#: ones are in the block pipeline, ``rs`` during the current GEMM's last pass; the
#: controller's dispatch tracks this many (rtl/controller/dispatch.py),
#: ``WSArray.MAX_IN_FLIGHT`` and ``OSArray.MAX_IN_FLIGHT`` are it (``RSArray.MAX_IN_FLIGHT``
#: is 3).
GEMMS_IN_FLIGHT = 4

#: Width of a DMA engine's ``bytes`` port (DRAM bytes moved in a cycle, 0 .. one bus
#: word): wide enough for the widest bus (:data:`~celosia.rtl.config.BUS_WIDTHS`), so
#: the controller's signatures do not depend on the config.
DRAM_BYTES_BITS = (max(BUS_WIDTHS) // 8).bit_length()


#: Products of a GEMM's fields that its range check
#: (:func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`) needs, each one multiply of two
#: fields (:func:`gemm_pre`). Dispatch computes them as the GEMM enters the compute queue
#: and keeps them with it; the engine gets them with the instruction (``pre``), so that its
#: check in the acceptance cycle has one multiply left instead of two in a row (issue 15:
#: the compute queue's output to the check register was the accelerator's critical path).
#: A field's width holds the product of any field values the check does not refuse anyway
#: (an ``out_h``, ``out_w``, ``win_w`` or ``win_h`` of 0 fails the check by itself).
GemmPre = data.StructLayout({
    "m_prod": unsigned(24),     # out_h * out_w
    "h_step": unsigned(16),     # (out_h - 1) * stride_h
    "x_span": unsigned(24),     # (out_w - 1) * stride_w
    "taps_k": unsigned(16),     # win_w * k_len
    "w_span": unsigned(16),     # (win_w - 1) * dil_w
    "v_step": unsigned(16),     # (win_h - 1) * dil_h
    "taps_hw": unsigned(16),    # win_h * win_w
})


def gemm_pre(g) -> dict:
    """The :data:`GemmPre` products of the GEMM ``g`` (a ``GemmInsn`` view, or any object
    with its fields as Python int attributes): name -> expression or int."""
    return {"m_prod": g.out_h * g.out_w, "h_step": (g.out_h - 1) * g.stride_h,
            "x_span": (g.out_w - 1) * g.stride_w, "taps_k": g.win_w * g.k_len,
            "w_span": (g.win_w - 1) * g.dil_w, "v_step": (g.win_h - 1) * g.dil_h,
            "taps_hw": g.win_h * g.win_w}


def gemm_pre_const(fields: dict):
    """:data:`GemmPre` of the GEMM ``fields`` (name -> int, a missing field 0) as a constant,
    what the compute queue hands an engine with that GEMM (for benches that drive an engine
    directly)."""
    g = SimpleNamespace(**{**dict.fromkeys(isa.GemmInsn.members, 0), **fields})
    return GemmPre.const({k: v % (1 << GemmPre.members[k].width) for k, v in gemm_pre(g).items()})


#: A LOAD's element ranges that its DRAM range check reads (:func:`load_pre`): the rows
#: ``i1`` in ``[lo1, hi1)`` and planes ``i2`` in ``[lo2, hi2)`` it actually reads from DRAM
#: (the pad ranges clamped to the loops, or the whole loops without ``pad_en``) and whether
#: it reads any element at all. Dispatch computes them as the LOAD enters the load queue and
#: keeps them with it; the load DMA gets them with the instruction (``pre``), so that the
#: cycle it takes a LOAD starts from registers with the multiplies of its span (issue 15:
#: the clamps in front of those multiplies were the 8x8 board's critical path).
LoadPre = data.StructLayout({
    "lo1": unsigned(16),
    "hi1": unsigned(16),
    "lo2": unsigned(16),
    "hi2": unsigned(16),
    "reads": unsigned(1),
})


def load_pre(ld, mux=Mux) -> dict:
    """The :data:`LoadPre` fields of the LOAD ``ld`` (a ``LoadInsn`` view, or any object
    with its fields as Python int attributes with ``mux=lambda c, a, b: a if c else b``):
    name -> expression or int."""
    lo1 = mux(ld.pad_en, mux(ld.pad_lo1 < ld.n1, ld.pad_lo1, ld.n1), 0)
    hi1 = mux(ld.pad_en, mux(ld.pad_hi1 < ld.n1, ld.pad_hi1, ld.n1), ld.n1)
    lo2 = mux(ld.pad_en, mux(ld.pad_lo2 < ld.n2, ld.pad_lo2, ld.n2), 0)
    hi2 = mux(ld.pad_en, mux(ld.pad_hi2 < ld.n2, ld.pad_hi2, ld.n2), ld.n2)
    return {"lo1": lo1, "hi1": hi1, "lo2": lo2, "hi2": hi2, "reads": (lo1 < hi1) & (lo2 < hi2)}


def load_pre_const(fields: dict):
    """:data:`LoadPre` of the LOAD ``fields`` (name -> int, a missing field 0) as a constant,
    what the load queue hands the load DMA with that LOAD (for benches that drive the DMA
    directly)."""
    ld = SimpleNamespace(**{**dict.fromkeys(isa.LoadInsn.members, 0), **fields})
    return LoadPre.const({k: int(v) for k, v in load_pre(ld, lambda c, a, b: a if c else b).items()})


#: CSR bus, host (master) view. Components take it as ``In(CsrSignature)``: there
#: ``addr``, ``w_en``, ``w_data`` are inputs and ``r_data`` (combinational read of
#: the register at ``addr``) is an output.
CsrSignature = wiring.Signature({
    "addr": Out(8),
    "w_en": Out(1),
    "w_data": Out(32),
    "r_data": In(32),
})


class EngineSignature(wiring.Signature):
    """What passes between the controller and one engine, from the controller's side
    (an engine has it as ``In(EngineSignature(...))``; join the two with
    ``wiring.connect(m, controller=..., engine=...)``).

    Parameters
    ----------
    layout : amaranth.lib.data.Layout
        The instruction the engine executes (``isa.LoadInsn``, ``GemmInsn``, ...).
    error_code : bool
        The engine gives an error code with its error pulse (the DMA engines).
    dram_bytes : bool
        The engine reports DRAM bytes it moves (the DMA engines).
    zero_skips : bool
        The engine reports skipped MAC cycles and the cycles it multiplies (the compute
        engine).
    pre : amaranth.lib.data.Layout or None
        The instruction comes with what its queue computed as it was pushed: :data:`GemmPre`
        (the compute engine), :data:`LoadPre` (the load DMA).

    Members
    -------
    insn : Out(stream.Signature(layout))
        One instruction; the engine's ``ready`` is high exactly when it is idle,
        except the ``ws``, ``os`` and ``feie`` compute engines, which also take a GEMM
        while earlier ones are in flight (up to :data:`GEMMS_IN_FLIGHT`, which the
        controller tracks).
    done : In(1)
        One-cycle pulse when an accepted instruction has completed (one ``done`` or
        ``error`` per instruction, in acceptance order).
    error : In(1)
        One-cycle pulse instead of ``done`` when it failed.
    busy : In(1)
        High while the engine executes an instruction, from the cycle after acceptance
        through the ``done`` / ``error`` cycle (counters, deadlock detection).
    error_code : In(8), only with ``error_code``
        Valid with ``error`` (``isa.ErrorCode``).
    fault_addr : In(32), only with ``error_code``
        Valid with a DMA_OUT_OF_WINDOW ``error``: the DRAM byte address outside the
        window (FAULT_ADDR).
    bytes : In(DRAM_BYTES_BITS), only with ``dram_bytes``
        DRAM bytes moved this cycle, 0 .. ``bus_bits / 8`` (DRAM_RD for a loading,
        DRAM_WR for a storing engine).
    zero_skips : In(16), only with ``zero_skips``
        MAC cycles skipped for zero inputs, added to ZERO_SKIPS each cycle.
    mac_cycles : In(1), only with ``zero_skips``
        The engine multiplies an input this cycle (feie; 0 on the dense arrays), counted
        in MAC_CYCLES.
    pre : Out(pre), only with ``pre`` (a layout)
        The instruction's products or ranges computed as it entered its queue, valid with
        ``insn.payload``: :func:`gemm_pre` (:data:`GemmPre`, the compute engine),
        :func:`load_pre` (:data:`LoadPre`, the load DMA).
    """

    def __init__(self, layout, *, error_code=False, dram_bytes=False, zero_skips=False, pre=None):
        self._params = (layout, error_code, dram_bytes, zero_skips, pre)
        members = {
            "insn": Out(stream.Signature(layout)),
            "done": In(1),
            "error": In(1),
            "busy": In(1),
        }
        if error_code:
            members["error_code"] = In(8)
            members["fault_addr"] = In(32)
        if dram_bytes:
            members["bytes"] = In(DRAM_BYTES_BITS)
        if zero_skips:
            members["zero_skips"] = In(16)
            members["mac_cycles"] = In(1)
        if pre is not None:
            members["pre"] = Out(pre)
        super().__init__(members)

    def __eq__(self, other):
        return isinstance(other, EngineSignature) and self._params == other._params

    def __hash__(self):
        return hash((EngineSignature, self._params))

    def __repr__(self):
        layout, error_code, dram_bytes, zero_skips, pre = self._params
        return (f"EngineSignature({layout!r}, error_code={error_code}, dram_bytes={dram_bytes}, "
                f"zero_skips={zero_skips}, pre={pre})")


def engine_view(engine, signature: EngineSignature):
    """``engine``'s own ports named like the members of ``signature`` (``insn``, ``done``,
    ...), as one interface of ``signature.flip()`` that ``wiring.connect`` joins with the
    controller's port: for engines whose signature lists these ports one by one instead
    of grouping them in one ``In(EngineSignature(...))`` member (the DMA engines)."""
    return SimpleNamespace(signature=signature.flip(),
                           **{name: getattr(engine, name) for name in signature.members})


# -- between the controller's parts (rtl/controller/__init__.py) ----------------------

#: Bits of an instruction's fetch-order index (ERROR_INFO).
INDEX_BITS = 32

#: A queue entry: the 256-bit instruction and its fetch-order index.
QueueEntry = data.StructLayout({
    "insn": isa.Insn,
    "index": unsigned(INDEX_BITS),
})

#: A node boundary, from fetch to the node tracker (rtl/controller/nodes.py): how many
#: instructions fetch had pushed into the LOAD (0), COMPUTE (1) and STORE (2) queues
#: since the start when it pushed the node's last one.
NodeBound = data.ArrayLayout(unsigned(INDEX_BITS), 3)

#: Per-node snapshots, from the controller's side (the top's ``node`` port): ``done``
#: is high for one cycle after each node boundary, when ``index`` (NODES_DONE: the
#: boundaries passed since the start) and ``counters`` (the SNAP_* CSRs, in
#: :data:`celosia.rtl.isa.COUNTERS` order) hold that node's snapshot; high in consecutive
#: cycles when boundaries follow back to back, one snapshot per cycle.
NodeSignature = wiring.Signature({
    "done": Out(1),
    "index": Out(32),
    "counters": Out(data.ArrayLayout(32, len(isa.COUNTERS))),
})

#: Instruction events, from the controller's side (the top's ``events`` port, for traces):
#: ``issue`` bit ``q`` is high in a cycle in which the head of queue ``q`` (0 LOAD, 1
#: COMPUTE, 2 STORE) starts, ``fin`` bit ``q`` in one in which queue ``q``'s oldest
#: instruction in flight completes without error (a NOP the cycle after it starts).
#: Queues start and complete in order, so the ``i``-th of each is the queue's ``i``-th
#: instruction in fetch order.
EventSignature = wiring.Signature({
    "issue": Out(3),
    "fin": Out(3),
})

#: Run control, from the CSRs' side: ``start`` (a CTRL write with bit 0 set, one cycle)
#: and ``running`` (STATUS.busy).
RunSignature = wiring.Signature({
    "start": Out(1),
    "running": Out(1),
})

#: What fetch tells dispatch, from fetch's side: ``error`` (one cycle) with its
#: ``error_code`` (BAD_DESCRIPTOR, ILLEGAL_OPCODE) and ``addr`` (BAD_DESCRIPTOR: the refused
#: descriptor or instruction byte address, FAULT_ADDR); ``index``, the fetch-order index of
#: the next instruction (ERROR_INFO of a fetch error); ``ended`` (the descriptor table
#: ended) and ``blocked`` (an instruction waits for room in its queue), for the
#: deadlock detector.
FetchStatusSignature = wiring.Signature({
    "error": Out(1),
    "error_code": Out(8),
    "addr": Out(32),
    "index": Out(INDEX_BITS),
    "ended": Out(1),
    "blocked": Out(1),
})

#: How a run ends, from dispatch's side: ``stop`` (an error, this cycle) with ``code``
#: (``isa.ErrorCode``), ``info`` (ERROR_INFO) and ``addr`` (FAULT_ADDR: the faulting DRAM
#: byte address of DMA_OUT_OF_WINDOW / BAD_DESCRIPTOR, else 0); ``finished`` (everything fetched and
#: executed, no error).
RunEndSignature = wiring.Signature({
    "stop": Out(1),
    "code": Out(8),
    "info": Out(INDEX_BITS),
    "addr": Out(32),
    "finished": Out(1),
})
