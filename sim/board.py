"""The board back end's host side: the UART bridge protocol and a pyserial transport.

A Celosia board bitstream (:mod:`celosia.boards`) holds the accelerator, on-chip
memory in place of the DRAM model and a UART host bridge
(:class:`celosia.boards.bridge.UartBridge`). This module speaks the bridge's
protocol over a serial port and runs a :class:`~celosia.sim.job.Job` through the
same host routine as the simulators (:func:`celosia.sim.job.run_job`): load
memory, write CSRs, start, poll ``STATUS``, read the counters and the readback
regions. It is the single source of the protocol's numbers: the bridge's RTL
imports them from here.

Protocol (every multi-byte field little endian)::

    request: SYNC CMD A0 A1 A2 A3 N0 N1 PAYLOAD... CHK
    reply:   STATUS PAYLOAD... CHK            (PAYLOAD only when STATUS is OK)

* ``SYNC`` = ``0xA5``; the bridge drops any other byte while it waits for a frame, so
  a host resynchronises by sending the next frame.
* ``CMD`` (:class:`Cmd`): ``CSR_WRITE`` (1), ``CSR_READ`` (2), ``MEM_WRITE`` (3),
  ``MEM_READ`` (4), ``MEM_CLEAR`` (5), ``INFO`` (6).
* ``A``: the CSR number (CSR commands; :class:`celosia.rtl.isa.Csr`) or the first
  64-bit memory word (memory commands: word ``w`` is memory bytes ``8w .. 8w + 7``,
  as the DRAM model's host port); 0 for ``INFO``.
* ``N``: words - 1 for the memory commands (1 .. 65536 words a frame), else 0.
* ``PAYLOAD`` of a request: ``CSR_WRITE`` the 4-byte value; ``MEM_WRITE`` ``(N + 1) * 8``
  bytes; none for the others (and for an unknown command).
* ``CHK``: the sum modulo 256 of every byte from ``CMD`` to the end of the payload
  (request), from ``STATUS`` to the end of the payload (reply).
* ``STATUS`` (:class:`Reply`): ``OK`` (0), ``BAD_CHECKSUM`` (1), ``BAD_COMMAND`` (2),
  ``OUT_OF_RANGE`` (3: a memory block past the end of the memory; nothing is written).
* Reply ``PAYLOAD``: ``CSR_READ`` the 4-byte value; ``MEM_READ`` ``(N + 1) * 8`` bytes;
  ``INFO`` :data:`INFO_BYTES` bytes (:func:`info_payload`): ``b"CLB1"``, the memory size
  in 64-bit words, the config id (:func:`config_id`) and the clock frequency in Hz,
  then every :class:`~celosia.rtl.config.AccelConfig` field in declaration order
  (:data:`CONFIG_FIELDS`; ``dataflow`` as its index in
  :data:`~celosia.rtl.config.DATAFLOWS`), 4 bytes each.

A CSR write takes effect only after a good checksum; the words of a ``MEM_WRITE`` are
written as they arrive, so a ``BAD_CHECKSUM`` reply asks the host to send the frame
again. ``MEM_CLEAR`` writes zeros over the block (one word per cycle). If a frame stops
for 64 byte times before its ``CHK``, the bridge drops it and waits for ``SYNC`` again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
import time

from celosia.errors import DriverError
from celosia.rtl.config import DATAFLOWS, AccelConfig
from celosia.sim.job import POLL_CYCLES, Job, RunResult, run_job

__all__ = ["SYNC", "Cmd", "Reply", "INFO_MAGIC", "INFO_BYTES", "CONFIG_FIELDS", "MAX_BLOCK_WORDS",
           "DEFAULT_BAUD", "config_id", "info_payload", "decode_info", "checksum", "request",
           "BoardTransport", "board_info", "run"]

SYNC = 0xA5
#: First 4 bytes of the ``INFO`` reply's payload (protocol version 1).
INFO_MAGIC = b"CLB1"
#: The configuration fields ``INFO`` carries, in order.
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(AccelConfig))
#: Bytes of the ``INFO`` reply's payload.
INFO_BYTES = 16 + 4 * len(CONFIG_FIELDS)
#: Words a memory frame may carry (``N`` is 16 bits).
MAX_BLOCK_WORDS = 1 << 16
#: The baud rate of the board bitstreams unless built with another (``celosia build --baud``).
DEFAULT_BAUD = 115200


class Cmd(enum.IntEnum):
    """A request's command byte."""
    CSR_WRITE = 1
    CSR_READ = 2
    MEM_WRITE = 3
    MEM_READ = 4
    MEM_CLEAR = 5
    INFO = 6


class Reply(enum.IntEnum):
    """A reply's status byte."""
    OK = 0
    BAD_CHECKSUM = 1
    BAD_COMMAND = 2
    OUT_OF_RANGE = 3


def config_id(config: AccelConfig) -> int:
    """The 32-bit id of ``config`` a bitstream reports in ``INFO``: the first 8 hex digits of
    :meth:`AccelConfig.digest`, so the host can tell a bitstream of another config."""
    return int(config.digest()[:8], 16)


def info_payload(config: AccelConfig, clk_hz: int) -> bytes:
    """The ``INFO`` reply's payload of a bitstream of ``config`` clocked at ``clk_hz``."""
    fields = [DATAFLOWS.index(v) if k == "dataflow" else v for k, v in config.to_dict().items()]
    return struct.pack(f"<4sIII{len(fields)}I", INFO_MAGIC, config.host_words, config_id(config),
                       int(clk_hz), *fields)


def decode_info(payload: bytes) -> dict:
    """``{"host_words", "config_id", "clk_hz", "config"}`` of an ``INFO`` payload
    (``config``: the :class:`AccelConfig`, ``None`` if the fields do not make one), or a
    ``ValueError`` if it is not a Celosia board's."""
    magic, host_words, cid, clk_hz, *fields = struct.unpack(f"<4sIII{len(CONFIG_FIELDS)}I", payload)
    if magic != INFO_MAGIC:
        raise ValueError(f"INFO magic {magic!r}, expected {INFO_MAGIC!r}")
    values = dict(zip(CONFIG_FIELDS, fields))
    try:
        values["dataflow"] = DATAFLOWS[values["dataflow"]]
        config = AccelConfig(**values)
    except (IndexError, ValueError):
        config = None
    return {"host_words": host_words, "config_id": cid, "clk_hz": clk_hz, "config": config}


def checksum(data: bytes) -> int:
    """The protocol's ``CHK`` of ``data``: the sum of its bytes modulo 256."""
    return sum(data) & 0xFF


def request(cmd: int, addr: int = 0, words: int = 1, payload: bytes = b"") -> bytes:
    """The bytes of one request frame (``words``: the block size of a memory command)."""
    if not 1 <= words <= MAX_BLOCK_WORDS:
        raise ValueError(f"a frame carries 1 .. {MAX_BLOCK_WORDS} words, not {words}")
    body = struct.pack("<BIH", cmd, addr, words - 1 if cmd in _MEM_CMDS else 0) + payload
    return bytes([SYNC]) + body + bytes([checksum(body)])


_MEM_CMDS = (Cmd.MEM_WRITE, Cmd.MEM_READ, Cmd.MEM_CLEAR)


class BoardTransport:
    """:func:`~celosia.sim.job.run_job`'s transport over a serial port to a board's bridge.

    Parameters
    ----------
    port : str
        A pyserial port name or URL (``/dev/ttyUSB0``, ``COM3``, a pty's slave ``/dev/pts/N``).
    config : AccelConfig
        The accelerator the job was compiled for; :meth:`open` checks the bitstream's
        ``INFO`` against it (memory size and config id).
    baud : int
        The bitstream's baud rate (:data:`DEFAULT_BAUD` unless built with another).
    timeout : float
        Seconds to wait for a reply before giving up with a :class:`DriverError`.

    Memory writes are collected into blocks of consecutive words (a frame each, up to
    :attr:`WRITE_BLOCK` words, sent before the next other request); reads fetch a block
    ahead (up to :attr:`READ_AHEAD` words) and serve the following words from it until
    the next write or CSR write. ``wait(cycles)`` sleeps the time
    those cycles take at the board's clock.
    """

    #: Words one ``MEM_READ`` fetches ahead for the next ``host_read`` calls.
    READ_AHEAD = 64
    #: Words a ``MEM_WRITE`` frame carries at most (smaller frames resend less on an error).
    WRITE_BLOCK = 256
    #: Times a frame is sent again after a ``BAD_CHECKSUM`` reply.
    RETRIES = 3

    def __init__(self, port: str, config: AccelConfig, baud: int = DEFAULT_BAUD, timeout: float = 5.0,
                 serial=None):
        self.port, self.config, self.baud, self.timeout = port, config, baud, timeout
        self._serial = serial
        self._pending_first = 0                     # the first word of the block being collected
        self._pending_words: list[int] = []         # its values, not yet sent
        self._cache: tuple[int, list[int]] | None = None
        self.clk_hz = 0
        self.host_words = 0

    # -- connection ------------------------------------------------------------------------
    def open(self, check: bool = True) -> "BoardTransport":
        """Open the port (unless a serial object was given) and, with ``check``, check that
        the bitstream is ``config``'s (:meth:`info`)."""
        if self._serial is None:
            try:
                import serial
            except ImportError:
                raise DriverError("the board back end needs pyserial: pip install 'celosia[boards]'") \
                    from None
            try:
                self._serial = serial.serial_for_url(self.port, baudrate=self.baud, timeout=self.timeout)
            except (serial.SerialException, ValueError, OSError) as e:
                raise DriverError(f"{self.port}: cannot open the serial port ({e})") from None
        self._serial.reset_input_buffer()
        if check:
            self._check_info()
        return self

    def close(self):
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def info(self) -> dict:
        """The board's ``INFO`` (:func:`decode_info`: ``host_words``, ``config_id``,
        ``clk_hz``, ``config``); ``host_words`` and ``clk_hz`` are also kept as attributes."""
        try:
            info = decode_info(self._call(Cmd.INFO, reply_bytes=INFO_BYTES))
        except ValueError as e:
            raise DriverError(f"{self.port}: the device did not answer as a Celosia board ({e})") \
                from None
        self.host_words, self.clk_hz = info["host_words"], info["clk_hz"]
        return info

    def _check_info(self):
        cid = self.info()["config_id"]
        want = config_id(self.config)
        if cid != want or self.host_words != self.config.host_words:
            raise DriverError(
                f"{self.port}: the board runs another accelerator configuration (config id "
                f"{cid:#010x}, {self.host_words * 8} B memory) than the one requested ({want:#010x}, "
                f"{self.config.dram_bytes} B: {self.config.array} {self.config.dataflow}); build and "
                f"flash its bitstream with `celosia build --board ... --program` and the same options")

    # -- frames ----------------------------------------------------------------------------
    def _read_exact(self, n: int) -> bytes:
        data = self._serial.read(n)
        if len(data) != n:
            raise DriverError(f"{self.port}: no reply from the board within {self.timeout:g} s "
                              f"(got {len(data)} of {n} bytes); check the port, the baud rate "
                              f"({self.baud}) and that the Celosia bitstream is loaded")
        return data

    def _reply(self, reply_bytes: int) -> tuple[int, bytes]:
        """Read a reply: (status, payload of ``reply_bytes`` if the status is OK)."""
        status = self._read_exact(1)[0]
        payload = self._read_exact(reply_bytes) if status == Reply.OK else b""
        chk = self._read_exact(1)[0]
        if chk != checksum(bytes([status]) + payload):
            raise DriverError(f"{self.port}: corrupted reply from the board (checksum); check the "
                              f"baud rate ({self.baud}) and the cable")
        return status, payload

    def _check_status(self, frame: bytes, status: int):
        if status == Reply.OK:
            return
        try:
            name = Reply(status).name
        except ValueError:
            name = f"status {status}"
        raise DriverError(f"{self.port}: the board refused {Cmd(frame[1]).name} at "
                          f"{struct.unpack_from('<I', frame, 2)[0]:#x}: {name}")

    def _call(self, cmd: int, addr: int = 0, words: int = 1, payload: bytes = b"",
              reply_bytes: int = 0) -> bytes:
        """Send one request and return its reply's payload (resent after a bad checksum)."""
        if cmd != Cmd.MEM_WRITE:
            self._send_block()
        frame = request(cmd, addr, words, payload)
        for _ in range(self.RETRIES + 1):
            self._serial.write(frame)
            status, data = self._reply(reply_bytes)
            if status != Reply.BAD_CHECKSUM:
                break
        self._check_status(frame, status)
        return data

    def _send_block(self):
        """Send the words collected by :meth:`host_write` as one ``MEM_WRITE``."""
        if self._pending_words:
            words, self._pending_words = self._pending_words, []
            self._call(Cmd.MEM_WRITE, self._pending_first, len(words),
                       struct.pack(f"<{len(words)}Q", *words))

    # -- memory ----------------------------------------------------------------------------
    def clear(self, first: int = 0, words: int | None = None):
        """Zero ``words`` 64-bit words from ``first`` (default: the whole memory)."""
        words = self.host_words - first if words is None else words
        while words > 0:
            n = min(words, MAX_BLOCK_WORDS)
            self._call(Cmd.MEM_CLEAR, first, n)
            first, words = first + n, words - n
        self._cache = None

    async def host_write(self, addr: int, value: int):
        self._cache = None
        if self._pending_words and (addr != self._pending_first + len(self._pending_words)
                                    or len(self._pending_words) >= self.WRITE_BLOCK):
            self._send_block()
        if not self._pending_words:
            self._pending_first = addr
        self._pending_words.append(value & (1 << 64) - 1)

    async def host_read(self, addr: int) -> int:
        if self._cache is not None:
            first, values = self._cache
            if first <= addr < first + len(values):
                return values[addr - first]
        n = max(1, min(self.READ_AHEAD, self.host_words - addr))
        data = self._call(Cmd.MEM_READ, addr, n, reply_bytes=8 * n)
        self._cache = (addr, list(struct.unpack(f"<{n}Q", data)))
        return self._cache[1][0]

    # -- CSRs and time ---------------------------------------------------------------------
    async def csr_write(self, addr: int, value: int):
        self._cache = None  # a start may change the memory
        self._call(Cmd.CSR_WRITE, int(addr), payload=struct.pack("<I", value & 0xFFFFFFFF))

    async def csr_read(self, addr: int) -> int:
        return struct.unpack("<I", self._call(Cmd.CSR_READ, int(addr), reply_bytes=4))[0]

    async def wait(self, cycles: int):
        if self.clk_hz:
            time.sleep(cycles / self.clk_hz)


def run(config: AccelConfig, job: Job, port: str, baud: int = DEFAULT_BAUD, timeout: float = 5.0,
        poll_cycles: int = POLL_CYCLES, progress=None) -> list[RunResult]:
    """Run ``job`` on the board at ``port``: check its bitstream (``INFO``), clear the
    memory (the simulators' DRAM starts zeroed; :func:`~celosia.sim.job.run_job` skips
    zero words of the image), then :func:`~celosia.sim.job.run_job`."""
    if job.dram_bytes > config.dram_bytes:
        raise DriverError(f"the job needs {job.dram_bytes} B of memory; the board config has "
                          f"{config.dram_bytes} B")
    with BoardTransport(port, config, baud=baud, timeout=timeout) as transport:
        transport.clear()
        return asyncio.run(run_job(transport, job, poll_cycles=poll_cycles, progress=progress))


def board_info(port: str, baud: int = DEFAULT_BAUD, timeout: float = 5.0) -> dict:
    """The ``INFO`` of the board at ``port`` (:meth:`BoardTransport.info`): its memory size
    in 64-bit words, config id, clock and configuration, e.g. to compile for it."""
    transport = BoardTransport(port, AccelConfig(), baud=baud, timeout=timeout)
    try:
        transport.open(check=False)
        return transport.info()
    finally:
        transport.close()
