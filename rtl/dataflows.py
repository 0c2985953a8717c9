"""The dataflow registry: one entry per PE-array dataflow, tying together its compute
engine, its executable per-instruction timing, its compiler lowering and its traits.

A leaf module: it imports nothing of ours at module level (the engine, timing and
lowering are ``"module:attr"`` / module references resolved on first use), so
``rtl/config.py`` validates ``AccelConfig.dataflow`` against :data:`DATAFLOWS`
without an import cycle.

Adding a dataflow (docs/dataflows.md): one engine file under ``rtl/arrays/`` with its
engine class and its ``cycles(insn, config, ifmap=None)``, one lowering module under
``sw/compiler/`` and one :class:`Dataflow` entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

__all__ = ["Dataflow", "REGISTRY", "DATAFLOWS", "dataflow", "ifmap_read_ports", "psum_write_ports"]


@functools.cache
def _resolve(ref: str):
    """The object a ``"module:attr"`` reference names (a module for ``"module"``)."""
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class Dataflow:
    """One dataflow of the compute engine.

    Attributes
    ----------
    name : str
        The ``AccelConfig.dataflow`` value (``"ws"``).
    title : str
        Its name in words (``"weight stationary"``).
    engine_ref : str
        ``"module:attr"`` of the engine class (a
        :class:`~celosia.rtl.arrays.engine.ComputeEngine`); :attr:`engine` resolves it.
    timing_ref : str
        ``"module:attr"`` of the engine's ``cycles(insn, config, ifmap=None)``;
        :meth:`cycles` calls it.
    lowering_ref : str
        The compiler module lowering GEMMs (conv / fully connected) for this engine;
        :attr:`lowering` imports it. Vector ops (pooling, add) are lowered by
        ``celosia.sw.compiler.lower_vec`` for every dataflow.
    gemm_window : str
        Which GEMMs the engine takes (:data:`~celosia.rtl.isa.GemmInsn`): ``"tap"``, plain
        GEMMs (``window = 0``) and windowed GEMMs of one kernel tap (``window = 1``,
        ``win_h = win_w = 1``: the window address generator on the ifmap read path,
        ``rtl/arrays/window.py``); ``"row"``, plain GEMMs and windowed GEMMs of one kernel
        row of up to ``FEIE_TAPS`` taps (``feie``); ``"full"``, windowed GEMMs of any
        window and only those (``rs``). Anything else fails the engine's range check
        (:func:`~celosia.rtl.arrays.engine.gemm_insn_in_range`).
    zero_point_in_gemm : bool
        The GEMM carries the input zero point ``in_zp`` and the engine subtracts it
        (and skips the inputs equal to it); elsewhere ``in_zp`` must be 0.
    macs_count_taps : bool
        The MACS counter multiplies ``m_len * k_len * n_len`` by a windowed GEMM's
        ``win_h * win_w`` taps.
    read_ports_field : str
        The ``AccelConfig`` field that sets how many ifmap buffer read ports the engine
        uses (``feie``: ``feie_read_ports``, 1 or 2; a second one is the engine's
        ``ifmap1`` port, on the buffer's read port 1); empty: one (``ifmap``, shared
        with the vector engine). :func:`ifmap_read_ports` reads it.
    write_ports_field : str
        The ``AccelConfig`` field that sets how many psum buffer write ports the engine
        uses (``feie``: ``feie_write_ports``, 1 or 2; a second one is the engine's
        ``psum_wr1`` port with its accumulate read ``psum_rd1``, on the buffer's write
        port 1 and read port 2); empty: one (``psum_wr``, shared with the vector
        engine). :func:`psum_write_ports` reads it.
    """

    name: str
    title: str
    engine_ref: str
    timing_ref: str
    lowering_ref: str
    gemm_window: str = "tap"
    zero_point_in_gemm: bool = False
    macs_count_taps: bool = False
    read_ports_field: str = ""
    write_ports_field: str = ""

    @property
    def engine(self):
        """The compute engine class (instantiate it with the ``AccelConfig``)."""
        return _resolve(self.engine_ref)

    def cycles(self, insn, config, ifmap=None) -> int:
        """Acceptance-to-``done`` cycles of one :data:`~celosia.rtl.isa.GemmInsn` issued to
        an idle engine (``done`` or ``error`` pulses that many cycles after the cycle the
        instruction was accepted). When the next one is accepted is the engine's own rule:
        feie takes the next while one runs and starts it the cycle before that one's
        ``done`` (``celosia.rtl.arrays.feie.sequence_timing``); ws overlaps the next GEMM's weight
        preload with the current stream (``celosia.rtl.arrays.ws.sequence_timing``), os its
        blocks with the current one's in the block pipeline
        (``celosia.rtl.arrays.os.sequence_timing``), rs takes it during the current one's
        last pass and fills its first step during the current one's last step
        (``celosia.rtl.arrays.rs.sequence_timing``).

        ``insn`` maps GemmInsn field names to Python ints (a missing field is 0);
        ``config`` is the ``AccelConfig``; ``ifmap`` (the ifmap buffer, one NumPy row per
        buffer row) is needed only where the timing depends on the data (``feie``).
        """
        return _resolve(self.timing_ref)(insn, config, ifmap)

    @property
    def lowering(self):
        """The compiler lowering module of this dataflow's GEMMs."""
        return _resolve(self.lowering_ref)


def _entry(name, title, module, cls, lowering, **traits):
    return Dataflow(name=name, title=title, engine_ref=f"celosia.rtl.arrays.{module}:{cls}",
                    timing_ref=f"celosia.rtl.arrays.{module}:cycles",
                    lowering_ref=f"celosia.sw.compiler.{lowering}", **traits)


#: name -> :class:`Dataflow`, in the documented order.
REGISTRY: dict[str, Dataflow] = {df.name: df for df in (
    _entry("ws", "weight stationary", "ws", "WSArray", "lower_gemm"),
    _entry("os", "output stationary", "os", "OSArray", "lower_gemm"),
    _entry("rs", "row stationary", "rs", "RSArray", "lower_rs",
           gemm_window="full", macs_count_taps=True),
    _entry("feie", "FEIE (input broadcast, zero skipping)", "feie", "FEIEArray", "lower_gemm",
           gemm_window="row", zero_point_in_gemm=True, macs_count_taps=True,
           read_ports_field="feie_read_ports", write_ports_field="feie_write_ports"),
)}

#: The dataflow names (``AccelConfig.dataflow``), in registry order.
DATAFLOWS = tuple(REGISTRY)


def dataflow(name: str) -> Dataflow:
    """The registry entry of ``name``; a :class:`KeyError` naming the known ones if none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataflow {name!r}; known: {', '.join(DATAFLOWS)}") from None


def ifmap_read_ports(config) -> int:
    """The ifmap buffer read ports the compute engine of ``config`` (an ``AccelConfig``)
    uses: its dataflow's :attr:`Dataflow.read_ports_field`, else 1. The accelerator builds
    the buffer with that many (docs/hardware.md, "Buffers")."""
    field = dataflow(config.dataflow).read_ports_field
    return getattr(config, field) if field else 1


def psum_write_ports(config) -> int:
    """The psum buffer write ports the compute engine of ``config`` (an ``AccelConfig``)
    uses: its dataflow's :attr:`Dataflow.write_ports_field`, else 1. The accelerator builds
    the buffer with that many, each with its own accumulate read port (docs/hardware.md,
    "Buffers")."""
    field = dataflow(config.dataflow).write_ports_field
    return getattr(config, field) if field else 1
