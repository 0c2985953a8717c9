"""Repeated sub-circuits of the PE arrays (a PE column or row), inline or instanced.

Amaranth flattens a design into one netlist before it writes RTLIL, and its cost grows
with every bit of every cell: an array of ``rows x cols`` PEs written inline costs
``rows * cols`` times one PE, which made the Verilog of a 64x64 array take minutes. A
:class:`Block` is the part of an array that repeats (one PE column or one PE row, the
same circuit each time); :func:`place` adds one copy of it to an array, in one of two
forms:

* inline (``blocks is None``, the default): the block is an ordinary submodule. This is
  the form the Amaranth simulator (pysim) runs (it cannot simulate an ``Instance``) and
  the board flow synthesises;
* instanced (``blocks`` a dict, given by :func:`celosia.sim.verilog.generate`): the copy
  is an ``amaranth.hdl.Instance`` of the module :attr:`Block.module_name`, and the block
  is recorded in ``blocks`` under that name, once. The caller converts each recorded
  block to Verilog once and appends it, so the conversion costs one block plus one
  instance per copy, whatever the array size.

Both forms are the same circuit, port for port and cycle for cycle: the array drives
and reads the ports of what :func:`place` returns the same way in both.
"""

from __future__ import annotations

import hashlib

from amaranth.hdl import ClockSignal, Instance, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["Block", "place"]


class Block(wiring.Component):
    """A repeated sub-circuit of an array: a component whose circuit depends only on
    ``params`` (a tuple of Python values, the arguments it was built from). A block that
    uses the ``sync`` domain has :attr:`clocked` true (its module then has ``clk`` and
    ``rst`` ports); a purely combinational one sets it false.

    Parameters
    ----------
    members : dict
        The signature members (flat ``In`` / ``Out`` ports).
    params : tuple
        What the circuit is built from; it names the module (:attr:`module_name`).
    """

    #: The block uses the ``sync`` domain (its instances get ``clk`` and ``rst``).
    clocked = True

    def __init__(self, members: dict, params: tuple):
        self._params = params
        super().__init__(members)

    @property
    def module_name(self) -> str:
        """``celosia_<class>_<hash of the class and params>``: a module name unique per
        circuit, so several configurations' blocks can share one Verilog build."""
        key = repr((type(self).__module__, type(self).__qualname__, self._params))
        return f"celosia_{type(self).__name__.lower()}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def place(m, name: str, block: Block, blocks: dict | None):
    """Add ``block`` to the module ``m`` as the submodule ``name`` and return the object
    whose ports the caller drives and reads: ``block`` itself (inline, ``blocks is
    None``), or the ports of an ``Instance`` of :attr:`Block.module_name` (``blocks`` a
    dict: ``block`` is recorded there for separate conversion; see the module docstring).
    """
    if blocks is None:
        m.submodules[name] = block
        return block
    if blocks.setdefault(block.module_name, block) is not block:
        block._MustUse__silence = True   # an equal block is converted instead: not a leak
    ports = block.signature.create(path=(name,))
    kwargs = {}
    for path, member, value in block.signature.flatten(ports):
        prefix = "i_" if member.flow == In else "o_"
        kwargs[prefix + "__".join(map(str, path))] = value
    if block.clocked:
        kwargs.update(i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"))
    m.submodules[name] = Instance(block.module_name, **kwargs)
    return ports
