"""Compute engines (PE arrays), one module per dataflow; all implement
:class:`celosia.rtl.arrays.engine.ComputeEngineSignature`. The dataflow registry
(:mod:`celosia.rtl.dataflows`) names each one's engine class and timing; ``window.py``
is the window address generator ws and os share on their ifmap read path (feie walks
its groups' pixels itself); ``blocks.py`` makes each array's repeated part (a PE column or
row, ...) one module instanced per copy on the Verilog path (docs/reliability.md, "Verilog
generation time")."""

from celosia.rtl.config import AccelConfig
from celosia.rtl.dataflows import dataflow

__all__ = ["make_engine"]


def make_engine(config: AccelConfig):
    """The compute engine class for ``config.dataflow`` (instantiate with ``config``)."""
    return dataflow(config.dataflow).engine
