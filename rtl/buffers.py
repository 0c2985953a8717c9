"""On-chip lane buffers and the wiring signatures engines use to reach them.

A :class:`LaneBuffer` is one ``lib.memory.Memory`` whose rows are split into
equal lanes. Engines (DMA, compute array, store) hold the *master* side of a
:class:`BufferReadSignature` / :class:`BufferWriteSignature` (``Out(...)``); the
buffer exposes the flipped ones (``In(...)``), so the two are joined with
``wiring.connect(m, engine=engine.ifmap, buffer=ifmap_buf.r0)``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module
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

    Structure: with one write port, one ``Memory``. With ``write_ports`` > 1, one
    ``Memory`` bank per write port (each with one write port, so FPGA tools map it to
    block RAM) and a *live value table*: per row and lane, which port wrote it last (a
    narrow memory of ``lanes`` small fields, in flip-flops); a read takes each lane from
    the bank the table names. Same behaviour either way; a multi-write-port memory of
    the whole width would be built from flip-flops and a ``depth``-way read multiplexer
    (issue 15: the board's ifmap buffer, on the clock's critical path).
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

    def _write_port_ifaces(self):
        return [getattr(self, "w" if i == 0 else f"w{i}") for i in range(self._write_ports)]

    @staticmethod
    def _connect_read(m, rp, port):
        m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en)]
        return rp.data

    def elaborate(self, platform):
        m = Module()
        width = self._lanes * self._lane_bits
        lanes, lane_bits = self._lanes, self._lane_bits
        banks = []                  # (memory, its write port), one per write port
        for i, port in enumerate(self._write_port_ifaces()):
            mem = Memory(shape=width, depth=self._depth, init=[])
            m.submodules["storage" if self._write_ports == 1 else f"bank{i}"] = mem
            wp = mem.write_port(granularity=lane_bits)
            m.d.comb += [wp.addr.eq(port.addr), wp.en.eq(port.en), wp.data.eq(port.data)]
            banks.append((mem, wp))
        if len(banks) == 1:
            mem, wp = banks[0]
            for port in self.read_ports:
                m.d.comb += port.data.eq(self._connect_read(m, mem.read_port(transparent_for=(wp,)), port))
            return m

        # live value table: per row, per lane, the index of the write port that wrote it last
        sel_bits = (self._write_ports - 1).bit_length()
        m.submodules.lvt = lvt = Memory(shape=lanes * sel_bits, depth=self._depth, init=[])
        lvt_wps = []
        for i, port in enumerate(self._write_port_ifaces()):
            wp = lvt.write_port(granularity=sel_bits)
            m.d.comb += [wp.addr.eq(port.addr), wp.en.eq(port.en),
                         wp.data.eq(Cat(Const(i, sel_bits) for _ in range(lanes)))]
            lvt_wps.append(wp)
        for port in self.read_ports:
            sel = self._connect_read(m, lvt.read_port(transparent_for=tuple(lvt_wps)), port)
            rows = [self._connect_read(m, mem.read_port(transparent_for=(wp,)), port) for mem, wp in banks]
            for ln in range(lanes):
                lane = Array(r[ln * lane_bits:(ln + 1) * lane_bits] for r in rows)
                m.d.comb += port.data[ln * lane_bits:(ln + 1) * lane_bits].eq(
                    lane[sel[ln * sel_bits:(ln + 1) * sel_bits]])
        return m
