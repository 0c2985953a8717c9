"""The interface every compute engine (dataflow) implements, and what they share.

``ComputeEngineSignature(config)`` is the contract between the controller, the
buffers and a PE array (``ws`` today; ``os``, ``rs`` and ``feie`` later): see
docs/hardware.md, "Compute engine". :func:`gemm_insn_in_range` is the bounds
check every engine applies to an accepted :data:`GemmInsn` before touching a
buffer.
"""

from __future__ import annotations

from contextlib import contextmanager

from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.rtl import isa
from celosia.rtl.buffers import BufferReadSignature, BufferWriteSignature
from celosia.rtl.config import AccelConfig, check_config

__all__ = ["ComputeEngineSignature", "ComputeEngine", "gemm_insn_in_range", "insn_check_state"]


class ComputeEngineSignature(wiring.Signature):
    """Ports of a compute engine (the engine's point of view).

    Members
    -------
    insn : In(stream.Signature(GemmInsn))
        One GEMM; ``ready`` is high exactly when the engine is idle.
    done : Out(1)
        One-cycle pulse one cycle after the last psum row of the accepted
        instruction was written (a following reader sees every write).
    error : Out(1)
        One-cycle pulse instead of ``done`` when the instruction fails
        :func:`gemm_insn_in_range`; nothing is read or written then.
    busy : Out(1)
        High from the cycle after acceptance up to and including the
        ``done`` / ``error`` cycle.
    ifmap : Out(BufferReadSignature(ifmap_rows, rows*8))
    weight : Out(BufferReadSignature(weight_rows, cols*8))
    psum_rd : Out(BufferReadSignature(psum_rows, cols*32))
        Psum buffer read port 0 (accumulate reads).
    psum_wr : Out(BufferWriteSignature(psum_rows, cols, 32))
    zero_skips : Out(16)
        MAC cycles skipped for zero inputs, reported in one cycle per block (feie;
        always 0 for the dense arrays); the controller sums it into ZERO_SKIPS.
    """

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__({
            "insn": In(stream.Signature(isa.GemmInsn)),
            "done": Out(1),
            "error": Out(1),
            "busy": Out(1),
            "ifmap": Out(BufferReadSignature(config.ifmap_rows, config.rows * config.act_bits)),
            "weight": Out(BufferReadSignature(config.weight_rows, config.cols * config.weight_bits)),
            "psum_rd": Out(BufferReadSignature(config.psum_rows, config.cols * config.acc_bits)),
            "psum_wr": Out(BufferWriteSignature(config.psum_rows, config.cols, config.acc_bits)),
            "zero_skips": Out(16),
        })

    @property
    def config(self):
        return self._config

    def __eq__(self, other):
        return isinstance(other, ComputeEngineSignature) and self.config == other.config

    def __hash__(self):
        return hash((ComputeEngineSignature, self.config))

    def __repr__(self):
        return f"ComputeEngineSignature({self.config!r})"


def gemm_insn_in_range(insn, config: AccelConfig):
    """1-bit expression: the GEMM ``insn`` (a ``GemmInsn`` view) stays inside every buffer.

    ``ifmap_row + m_len <= ifmap_rows``, ``weight_row + k_len <= weight_rows``,
    ``psum_row + m_len <= psum_rows``, ``k_len <= rows`` and ``n_len <= cols``
    (sums computed without overflow). Applied regardless of ``m_len``: an
    instruction with ``m_len = 0`` but a start row past the end is an error too.
    """
    return ((insn.ifmap_row + insn.m_len <= config.ifmap_rows)
            & (insn.weight_row + insn.k_len <= config.weight_rows)
            & (insn.psum_row + insn.m_len <= config.psum_rows)
            & (insn.k_len <= config.rows)
            & (insn.n_len <= config.cols))


class ComputeEngine(wiring.Component):
    """Base of the PE arrays: a component with :class:`ComputeEngineSignature` for ``config``."""

    def __init__(self, config: AccelConfig):
        self._config = check_config(config)
        super().__init__(ComputeEngineSignature(config))

    @property
    def config(self):
        return self._config


@contextmanager
def insn_check_state(m, engine, ok, empty):
    """The CHECK state of a compute-queue engine (the cycle after acceptance): ``error``
    if ``ok`` is low, ``done`` if ``empty``, both back to IDLE; otherwise the body of the
    ``with`` runs (it chooses the next state). ``busy`` is high."""
    with m.State("CHECK"):
        m.d.comb += engine.busy.eq(1)
        with m.If(~ok):
            m.d.comb += engine.error.eq(1)
            m.next = "IDLE"
        with m.Elif(empty):
            m.d.comb += engine.done.eq(1)
            m.next = "IDLE"
        with m.Else():
            yield
