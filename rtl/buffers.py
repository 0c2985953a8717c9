"""On-chip lane buffers and the wiring signatures engines use to reach them.

A :class:`LaneBuffer` is one ``lib.memory.Memory`` whose rows are split into
equal lanes. Engines (DMA, compute array, store) hold the *master* side of a
:class:`BufferReadSignature` / :class:`BufferWriteSignature` (``Out(...)``); the
buffer exposes the flipped ones (``In(...)``), so the two are joined with
``wiring.connect(m, engine=engine.ifmap, buffer=ifmap_buf.r0)``.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BufferReadSignature", "BufferWriteSignature", "LaneBuffer"]


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{what} must be a positive integer, not {value!r}")


class BufferReadSignature(wiring.Signature):
    """Synchronous read port of a buffer, from the reader's (master's) point of view.

    Members
    -------
    addr : Out(range(depth))
        Row to read.
    en : Out(1)
        Read enable.
    data : In(width)
        The row addressed in the previous cycle in which ``en`` was high
        (holds while ``en`` is low).
    """

    def __init__(self, depth, width):
        _check_positive("Buffer depth", depth)
        _check_positive("Buffer read width", width)
        self._depth = depth
        self._width = width
        super().__init__({
            "addr": Out(range(depth)),
            "en": Out(1),
            "data": In(width),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def width(self):
        return self._width

    def __eq__(self, other):
        return (isinstance(other, BufferReadSignature)
                and (self.depth, self.width) == (other.depth, other.width))

    def __hash__(self):
        return hash((BufferReadSignature, self.depth, self.width))

    def __repr__(self):
        return f"BufferReadSignature({self.depth}, {self.width})"


class BufferWriteSignature(wiring.Signature):
    """Write port of a buffer, from the writer's (master's) point of view.

    Members
    -------
    addr : Out(range(depth))
        Row to write.
    en : Out(lanes)
        One write enable per lane (bit ``l`` enables lane ``l``).
    data : Out(lanes * lane_bits)
        Row data; lane ``l`` is bits ``l*lane_bits .. (l+1)*lane_bits-1``.
    """

    def __init__(self, depth, lanes, lane_bits):
        _check_positive("Buffer depth", depth)
        _check_positive("Buffer lane count", lanes)
        _check_positive("Buffer lane width", lane_bits)
        self._depth = depth
        self._lanes = lanes
        self._lane_bits = lane_bits
        super().__init__({
            "addr": Out(range(depth)),
            "en": Out(lanes),
            "data": Out(lanes * lane_bits),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def lanes(self):
        return self._lanes

    @property
    def lane_bits(self):
        return self._lane_bits

    def __eq__(self, other):
        return (isinstance(other, BufferWriteSignature)
                and (self.depth, self.lanes, self.lane_bits)
                == (other.depth, other.lanes, other.lane_bits))

    def __hash__(self):
        return hash((BufferWriteSignature, self.depth, self.lanes, self.lane_bits))

    def __repr__(self):
        return f"BufferWriteSignature({self.depth}, {self.lanes}, {self.lane_bits})"


class LaneBuffer(wiring.Component):
    """``depth`` rows of ``lanes`` lanes of ``lane_bits`` bits, ``write_ports`` write ports,
    ``read_ports`` read ports.

    Parameters
    ----------
    lanes, lane_bits, depth : int
        Row geometry.
    read_ports : int
        Number of independent read ports ``r0``, ``r1``, ...
    write_ports : int
        Number of independent write ports ``w``, ``w1``, ... (the ifmap buffer has two:
        the load DMA's and the store DMA's, for a layer's output kept on chip).

    Members
    -------
    w : In(BufferWriteSignature(depth, lanes, lane_bits))
        Write port (``w.addr``, ``w.en`` per lane, ``w.data`` all inputs); the
        write takes effect at the clock edge.
    w{i} : In(BufferWriteSignature(depth, lanes, lane_bits)), i >= 1
        Further write ports, alike. Writes of two ports to the same lane of the same row
        in one cycle are undefined (the users never make them).
    r{i} : In(BufferReadSignature(depth, lanes * lane_bits))
        Read port ``i``: ``r{i}.addr``, ``r{i}.en`` inputs, ``r{i}.data`` output.

    Timing: synchronous read, one cycle: ``r{i}.data`` is the row addressed in
    the previous cycle in which ``r{i}.en`` was high, and holds while ``en`` is
    low. Read ports are transparent for the write ports: reading the row written
    in the same cycle returns the new data (per lane, for the enabled lanes).
    """

    def __init__(self, lanes, lane_bits, depth, read_ports=1, write_ports=1):
        _check_positive("Buffer lane count", lanes)
        _check_positive("Buffer lane width", lane_bits)
        _check_positive("Buffer depth", depth)
        _check_positive("Buffer read port count", read_ports)
        _check_positive("Buffer write port count", write_ports)
        self._lanes = lanes
        self._lane_bits = lane_bits
        self._depth = depth
        self._read_ports = read_ports
        self._write_ports = write_ports
        members = {("w" if i == 0 else f"w{i}"): In(BufferWriteSignature(depth, lanes, lane_bits))
                   for i in range(write_ports)}
        for i in range(read_ports):
            members[f"r{i}"] = In(BufferReadSignature(depth, lanes * lane_bits))
        super().__init__(members)

    @property
    def read_ports(self):
        """The read port interfaces, in order (``[self.r0, self.r1, ...]``)."""
        return [getattr(self, f"r{i}") for i in range(self._read_ports)]

    def elaborate(self, platform):
        m = Module()
        width = self._lanes * self._lane_bits
        m.submodules.storage = storage = Memory(shape=width, depth=self._depth, init=[])

        wps = []
        for i in range(self._write_ports):
            port = getattr(self, "w" if i == 0 else f"w{i}")
            wp = storage.write_port(granularity=self._lane_bits)
            m.d.comb += [
                wp.addr.eq(port.addr),
                wp.en.eq(port.en),
                wp.data.eq(port.data),
            ]
            wps.append(wp)
        for port in self.read_ports:
            rp = storage.read_port(transparent_for=tuple(wps))
            m.d.comb += [
                rp.addr.eq(port.addr),
                rp.en.eq(port.en),
                port.data.eq(rp.data),
            ]
        return m
